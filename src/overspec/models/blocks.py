"""The visual transformer blocks of a CLIP image tower, and the class token each block outputs.

LoRA adapts these blocks; CKA compares what they output between a base and its fine-tune. open_clip keeps them in
``visual.transformer.resblocks`` (sequence-first or batch-first, as its ``batch_first`` says), Hugging Face CLIP in
``vision_model.encoder.layers`` (batch-first, output a tuple).
"""

from __future__ import annotations

import torch
from torch import nn

from overspec.errors import InputError
from overspec.models.base import Encoder

__all__ = ["block_class_tokens", "visual_blocks", "visual_root"]


def visual_root(model: nn.Module) -> nn.Module:
    """The visual tower of an open_clip CLIP (``visual``), an HF CLIP (``vision_model``) or the tower itself."""
    for attr in ("visual", "vision_model"):
        if isinstance(getattr(model, attr, None), nn.Module):
            return getattr(model, attr)
    return model


def visual_blocks(model: nn.Module) -> list[tuple[nn.Module, nn.Module, dict[str, nn.Linear]]]:
    """(block, attention, {mlp part: Linear}) for every transformer block of the visual tower."""
    root = visual_root(model)
    transformer = getattr(root, "transformer", None)
    if transformer is not None and hasattr(transformer, "resblocks"):
        return [(b, b.attn, {"fc": b.mlp.c_fc, "proj": b.mlp.c_proj}) for b in transformer.resblocks]
    encoder = getattr(root, "encoder", None)
    if encoder is not None and hasattr(encoder, "layers"):
        return [(b, b.self_attn, {"fc": b.mlp.fc1, "proj": b.mlp.fc2}) for b in encoder.layers]
    raise InputError(f"cannot find the visual transformer blocks of a {type(model).__name__} "
                     "(expected open_clip visual.transformer.resblocks or HF vision_model.encoder.layers)")


def _sequence_first(model: nn.Module) -> bool:
    """Whether the visual blocks take (tokens, batch, width) rather than (batch, tokens, width)."""
    transformer = getattr(visual_root(model), "transformer", None)
    return transformer is not None and hasattr(transformer, "resblocks") and not getattr(
        transformer, "batch_first", False)


def block_class_tokens(encoder: Encoder, images: torch.Tensor) -> torch.Tensor:
    """Return the class token each visual block outputs for a preprocessed batch: ``(N, blocks, width)``, float32."""
    blocks = [block for block, _, _ in visual_blocks(encoder.module)]
    sequence_first = _sequence_first(encoder.module)
    tokens: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs, output) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        tokens.append((hidden[0] if sequence_first else hidden[:, 0]).float())

    handles = [block.register_forward_hook(keep) for block in blocks]
    try:
        encoder.encode_image(images)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(tokens, dim=1)
