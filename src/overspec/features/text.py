"""The zero-shot text classifier of a CLIP-like model, following CLIP (Radford et al. 2021) and CLIP_benchmark.

Each class embedding is the mean of the L2-normalised embeddings of its filled templates, normalised again. It is
built from the text tower once per (text weights, prompt set) and cached beside the image features; the zero-shot
protocol and attack scoring by prompts only read it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence

import torch
from overspec.errors import InputError

__all__ = ["build_classifier", "fill_templates", "prompt_set_fingerprint", "PLACEHOLDER"]

logger = logging.getLogger(__name__)

PLACEHOLDER = "{c}"


def prompt_set_fingerprint(classnames: Sequence[str], templates: Sequence[str]) -> str:
    """Return the sha256 hex digest of the ordered class names and templates, to store with every result."""
    payload = json.dumps({"classnames": list(classnames), "templates": list(templates)}, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _check_prompt_set(classnames: Sequence[str], templates: Sequence[str]) -> None:
    """Raise ValueError for an empty prompt set or a template without the ``{c}`` placeholder."""
    if len(classnames) == 0 or len(templates) == 0:
        raise InputError(f"need at least one class name and one template, got {len(classnames)} and {len(templates)}")
    missing = [t for t in templates if PLACEHOLDER not in t]
    if missing:
        raise InputError(f"template {missing[0]!r} has no {PLACEHOLDER} placeholder for the class name")


def fill_templates(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Return the class-major list of prompts: every template filled with class 0, then class 1, ..."""
    return [template.replace(PLACEHOLDER, name) for name in classnames for template in templates]


def build_classifier(
    encode_text: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """Return the (D, C) zero-shot classifier: per class, the re-normalised mean of normalised prompt embeddings.

    Args:
        encode_text: maps a list of prompts to their (len, D) embeddings (e.g. ``Encoder.encode_text``).
        classnames: one name per class, in label order.
        templates: prompt templates with a ``{c}`` placeholder.
        batch_size: prompts per ``encode_text`` call; batches may span several classes.
    """
    _check_prompt_set(classnames, templates)
    if batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}")
    prompts = fill_templates(classnames, templates)
    owner = torch.arange(len(classnames)).repeat_interleave(len(templates))
    sums: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = torch.nn.functional.normalize(encode_text(prompts[start : start + batch_size]).float(), dim=-1)
            if sums is None:
                sums = torch.zeros(len(classnames), batch.shape[1], device=batch.device)
            sums.index_add_(0, owner[start : start + batch_size].to(batch.device), batch)
    logger.debug("encoded %d prompts for %d classes", len(prompts), len(classnames))
    return torch.nn.functional.normalize(sums, dim=-1).T.contiguous()
