"""Weight-space arithmetic: a model whose image tower is its base's plus scaled changes made by other models.

A LoRA adapter at strength λ, a full fine-tune interpolated towards its base (WiSE-FT, Wortsman et al., CVPR 2022)
and several adapters of one base summed into one multi-task model are all ``base + Σ scale_i (W_i - base)`` on the
image tower. Each term is loaded as its own model, so whatever kind of fine-tune it is (an adapter file, a merged
checkpoint), its change is measured on the weights themselves. The text tower stays the base's: a term that changed
it is refused, since mixing towers would be another model than the one named.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from overspec.config.model import CombineTerm, ModelSpec
from overspec.models.base import Encoder, ModelLoadError
from overspec.models.fingerprint import combine, tensors_fingerprint

__all__ = ["apply_combination"]


def apply_combination(encoder: Encoder, spec: ModelSpec, load: Callable[[CombineTerm], Encoder]) -> Encoder:
    """Add ``scale * (term weights - encoder weights)`` of every term of ``spec.combine`` to ``encoder``'s image tower.

    ``load`` builds a term's model; LoRA factors are compared through the weights they were merged into. Every term must have the image tower's keys and shapes and the base's text
    tower; the result gets a fingerprint of its own weights, so its features and units are cached under it.
    """
    base = {key: value.detach().clone() for key, value in encoder.image_state().items()}
    total = {key: torch.zeros_like(value, dtype=torch.float32)
             for key, value in base.items() if value.is_floating_point() and not _is_lora_factor(key)}
    for term in spec.combine:
        term_encoder = load(term)
        _check_compatible(spec, term, encoder, term_encoder, base)
        for key, value in term_encoder.image_state().items():
            if key in total:
                total[key] += term.scale * (value.to(base[key].device, torch.float32) - base[key].float())
        del term_encoder
    params = dict(encoder.module.state_dict(keep_vars=True))
    with torch.no_grad():
        for key, change in total.items():
            params[key].copy_((base[key].float() + change).to(params[key].dtype))
    weights = tensors_fingerprint(encoder.image_state().items())  # the sources' order: unchanged weights, same print
    encoder.fingerprint = combine(weights, (encoder.info or {}).get("preprocess_fingerprint", ""))
    encoder.info = {**(encoder.info or {}), "combination": [[term.name, term.scale] for term in spec.combine]}
    return encoder


def _is_lora_factor(key: str) -> bool:
    """Whether a state key is a LoRA ``A``/``B`` factor: merged into its weight on load, so not a weight of its own."""
    return ".lora." in key


def _check_compatible(spec: ModelSpec, term: CombineTerm, encoder: Encoder, term_encoder: Encoder,
                      base: dict[str, torch.Tensor]) -> None:
    """Refuse a term whose image tower has other keys or shapes, or whose text tower differs from the base's."""
    where = f"model {spec.name!r}: combine term {term.name!r}"
    state = term_encoder.image_state()
    missing = sorted(set(base) - set(state))
    extra = sorted(key for key in set(state) - set(base) if not _is_lora_factor(key))
    if missing or extra:
        raise ModelLoadError(f"{where} has another image tower: keys missing {missing[:5]}, extra {extra[:5]}")
    for key, value in state.items():
        if key in base and value.shape != base[key].shape:
            raise ModelLoadError(f"{where}: {key!r} has shape {tuple(value.shape)}, the base's is "
                                 f"{tuple(base[key].shape)}")
    if term_encoder.text_fingerprint != encoder.text_fingerprint:
        raise ModelLoadError(f"{where} changed the text tower ({term_encoder.text_fingerprint} vs the base's "
                             f"{encoder.text_fingerprint}); combinations interpolate image towers only")
