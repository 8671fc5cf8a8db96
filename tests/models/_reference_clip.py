"""Independent reference for the LoRA and published-checkpoint tests.

``reference_image_embedding`` computes an OpenAI-CLIP ViT image embedding from a state dict in the released split
layout (``attn.{q,k,v}_proj`` / ``attn.proj``) in float64 with hand-written attention (no torch MHA, no SDPA), the
LoRA branch added to each projection output; ``split_state`` turns a fused open_clip state dict into that layout.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

FUSED = re.compile(r"^(visual\.transformer\.resblocks\.\d+\.attn)\.(in_proj_weight|in_proj_bias|out_proj\.weight|"
                   r"out_proj\.bias)$")


def split_state(fused: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released FRoundation layout of an open_clip state dict (visual attention as q/k/v/proj Linears)."""
    out = {}
    for key, value in fused.items():
        match = FUSED.match(key)
        if not match:
            out[key] = value.clone()
            continue
        prefix, part = match.groups()
        if part in ("in_proj_weight", "in_proj_bias"):
            kind = "weight" if part == "in_proj_weight" else "bias"
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3)):
                out[f"{prefix}.{name}.{kind}"] = chunk.clone()
        else:
            out[f"{prefix}.proj.{part.split('.')[1]}"] = value.clone()
    return out


def _layer_norm(x: torch.Tensor, state: dict, name: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], state[f"{name}.weight"].double(), state[f"{name}.bias"].double(), 1e-5)


def _project(x: torch.Tensor, state: dict, base: str, lora: dict, scaling: float) -> torch.Tensor:
    y = x @ state[f"{base}.weight"].double().T + state[f"{base}.bias"].double()
    if base in lora:
        a, b = (t.double() for t in lora[base])
        y = y + scaling * (x @ a.T) @ b.T
    return y


def reference_image_embedding(state: dict[str, torch.Tensor], images: torch.Tensor, *, heads: int,
                              lora: dict | None = None, scaling: float = 0.0, quick_gelu: bool = True) -> torch.Tensor:
    """Projected image embedding of an OpenAI-layout ViT; ``lora`` maps ``…attn.q_proj`` to (A, B)."""
    lora = lora or {}
    v = {k[len("visual."):]: t for k, t in state.items() if k.startswith("visual.")}
    conv = v["conv1.weight"].double()
    x = F.conv2d(images.double(), conv, stride=conv.shape[-1]).flatten(2).transpose(1, 2)
    cls = v["class_embedding"].double().expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + v["positional_embedding"].double()
    x = _layer_norm(x, v, "ln_pre")
    blocks = sorted({int(k.split(".")[2]) for k in v if k.startswith("transformer.resblocks.")})
    for i in blocks:
        p = f"transformer.resblocks.{i}"
        h = _layer_norm(x, v, f"{p}.ln_1")
        q, k, val = (_project(h, v, f"{p}.attn.{n}", {kk[len('visual.'):]: t for kk, t in lora.items()}, scaling)
                     for n in ("q_proj", "k_proj", "v_proj"))
        n, length, width = q.shape
        q, k, val = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, val))
        weights = torch.softmax(q @ k.transpose(-1, -2) / (width // heads) ** 0.5, dim=-1)
        attended = (weights @ val).transpose(1, 2).reshape(n, length, width)
        x = x + _project(attended, v, f"{p}.attn.proj", {kk[len('visual.'):]: t for kk, t in lora.items()}, scaling)
        h = _layer_norm(x, v, f"{p}.ln_2")
        h = h @ v[f"{p}.mlp.c_fc.weight"].double().T + v[f"{p}.mlp.c_fc.bias"].double()
        h = h * torch.sigmoid(1.702 * h) if quick_gelu else F.gelu(h)
        x = x + h @ v[f"{p}.mlp.c_proj.weight"].double().T + v[f"{p}.mlp.c_proj.bias"].double()
    return _layer_norm(x[:, 0], v, "ln_post") @ v["proj"].double()


TINY_OPENAI_CFG = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 16, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_HEADS = 2


def register_tiny_openai(folder) -> str:
    """Write and register ``tiny-openai-clip`` (QuickGELU, two visual blocks of two heads); return its name."""
    import json

    import open_clip

    path = folder / "tiny-openai-clip.json"
    path.write_text(json.dumps(TINY_OPENAI_CFG))
    open_clip.add_model_config(path)
    return "tiny-openai-clip"
