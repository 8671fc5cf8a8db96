"""LoRA adapters for the visual transformer of open_clip and Hugging Face CLIP models.

The update of a frozen weight ``W`` (out × in) is ``s · λ · B @ A`` with ``A`` (rank × in, Kaiming-uniform) and
``B`` (out × rank, zeros), so a fresh adapter changes nothing (Hu et al. 2021; rsLoRA ``s = α/√r``: Kalajdzievski
2023). ``λ`` (:func:`set_lora_strength`) interpolates between the base (0) and the fine-tune (1).

open_clip fuses q, k and v into one ``in_proj_weight`` (3W × W) of an ``nn.MultiheadAttention``. Adapters on q / k / v
act on row slices of that matrix: the module keeps its class lineage, its parameters and its state-dict keys, and
its forward runs torch's own multi-head attention on ``in_proj_weight + delta``. Dropout on the LoRA input
(FRoundation / MADation / FoundPAD use it) cannot be folded into a weight, so while it is active the attention
runs an explicit split q/k/v path. Merging is explicit (never tied to ``.eval()``, the trap of study.md §2.3) and
guarded: merging twice is a no-op, and unmerging after the adapter changed is an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import nn

from overspec.files import atomic_write_bytes
from overspec.models.base import Encoder, ModelLoadError
from overspec.models.blocks import visual_blocks
from overspec.models.fingerprint import tensors_fingerprint
from overspec.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "LORA_TARGETS",
    "LoraConfig",
    "LoraError",
    "LoraDelta",
    "inject_lora",
    "set_lora_strength",
    "merge_lora",
    "unmerge_lora",
    "lora_parameters",
    "lora_state_dict",
    "load_lora_state_dict",
    "lora_base_fingerprint",
    "save_lora_adapter",
    "apply_lora_adapter",
]

LORA_TARGETS = ("q", "k", "v", "out", "mlp")


class LoraError(InputError):
    """A LoRA operation that cannot be done as asked; the message names the module or key at fault."""


@dataclass(frozen=True)
class LoraConfig:
    """Rank, alpha, dropout on the LoRA input, which projections get adapters, and the scaling rule."""

    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "v")
    rslora: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise LoraError(f"lora rank must be a positive integer, got {self.rank!r}")
        if not math.isfinite(float(self.alpha)) or float(self.alpha) <= 0:
            raise LoraError(f"lora alpha must be a positive number, got {self.alpha!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise LoraError(f"lora dropout must be in [0, 1), got {self.dropout!r}")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets or len(set(self.targets)) != len(self.targets):
            raise LoraError(f"lora targets must be distinct names among {LORA_TARGETS}, got {list(self.targets)}")

    @property
    def scaling(self) -> float:
        """``alpha / rank``, or ``alpha / sqrt(rank)`` with rsLoRA."""
        return float(self.alpha) / (math.sqrt(self.rank) if self.rslora else self.rank)

    def to_json(self) -> str:
        """The config as a JSON object (what adapter files store)."""
        return json.dumps({**asdict(self), "targets": list(self.targets)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoraConfig:
        """Rebuild a config written by :meth:`to_json`; unknown fields are an error."""
        data = json.loads(text)
        unknown = sorted(set(data) - {"rank", "alpha", "dropout", "targets", "rslora"})
        if unknown:
            raise LoraError(f"lora config has unknown fields {unknown}")
        return cls(**data)


class LoraDelta(nn.Module):
    """The trainable low-rank pair of one weight: ``A`` (rank, in), ``B`` (out, rank), scale ``s`` and strength λ."""

    def __init__(self, in_features: int, out_features: int, config: LoraConfig, like: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(config.rank, in_features, device=like.device, dtype=like.dtype))
        self.B = nn.Parameter(torch.zeros(out_features, config.rank, device=like.device, dtype=like.dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.scaling = config.scaling
        self.strength = 1.0
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    @property
    def dropout_active(self) -> bool:
        """Whether the LoRA input dropout changes the forward (training mode with p > 0)."""
        return self.training and isinstance(self.dropout, nn.Dropout)

    def weight_delta(self) -> torch.Tensor:
        """``s · λ · B @ A``, the change this adapter makes to its weight."""
        return (self.B @ self.A) * (self.scaling * self.strength)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """``s · λ · (dropout(x) Aᵀ) Bᵀ``, the additive output of the LoRA path."""
        return F.linear(F.linear(self.dropout(x), self.A), self.B) * (self.scaling * self.strength)

    def extra_repr(self) -> str:
        return f"rank={self.A.shape[0]}, in={self.A.shape[1]}, out={self.B.shape[0]}, scaling={self.scaling:.4g}"


class _LoraHost:
    """Merge bookkeeping shared by adapted modules.

    Each subclass defines ``_lora_slots() -> Iterator[(name, LoraDelta, weight tensor it edits)]``.
    """

    lora: nn.ModuleDict
    merged: bool
    _merge_record: dict

    def _init_lora(self) -> None:
        self.merged = False
        self._merge_record = {}

    def merge(self, keep_base: bool = True) -> bool:
        """Add every delta into its weight; returns False (and changes nothing) when already merged.

        ``keep_base`` keeps a copy of the unmerged weights so :meth:`unmerge` restores them bit for bit (base
        fingerprints stay valid); without it, unmerging subtracts the delta again (float residue).
        """
        if self.merged:
            return False
        record = {}
        with torch.no_grad():
            for name, delta, weight in self._lora_slots():
                base = weight.detach().clone() if keep_base else None
                weight.add_(delta.weight_delta().to(weight.dtype))
                record[name] = (delta.strength, delta.A._version, delta.B._version, base)
        self._merge_record = record
        self.merged = True
        return True

    def unmerge(self) -> bool:
        """Restore the unmerged weights; an error if an adapter changed since it was merged."""
        if not self.merged:
            return False
        for name, delta, _ in self._lora_slots():
            strength, version_a, version_b, _ = self._merge_record[name]
            if (delta.A._version, delta.B._version) != (version_a, version_b) or delta.strength != strength:
                raise LoraError(f"LoRA adapter {name!r} of {type(self).__name__} changed after merging; "
                                "the merged delta can no longer be removed exactly")
        with torch.no_grad():
            for name, delta, weight in self._lora_slots():
                base = self._merge_record[name][3]
                if base is not None:
                    weight.copy_(base)
                else:
                    weight.sub_(delta.weight_delta().to(weight.dtype))
        self.merged = False
        self._merge_record = {}
        return True


class LoraLinear(nn.Linear, _LoraHost):
    """An ``nn.Linear`` with a LoRA branch; same parameters and state-dict keys plus ``lora.main.{A,B}``."""

    def _lora_slots(self) -> Iterator[tuple[str, LoraDelta, torch.Tensor]]:
        yield "main", self.lora["main"], self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        return out if self.merged else out + self.lora["main"].branch(x)


class LoraMultiheadAttention(nn.MultiheadAttention, _LoraHost):
    """``nn.MultiheadAttention`` with LoRA on q / k / v row slices of ``in_proj_weight`` and/or on ``out_proj``."""

    def _lora_slots(self) -> Iterator[tuple[str, LoraDelta, torch.Tensor]]:
        width = self.embed_dim
        rows = {"q": slice(0, width), "k": slice(width, 2 * width), "v": slice(2 * width, 3 * width)}
        for name, delta in self.lora.items():
            yield name, delta, self.out_proj.weight if name == "out" else self.in_proj_weight[rows[name]]

    def _effective_in_proj(self) -> torch.Tensor:
        parts = [self.lora[n].weight_delta() if n in self.lora else None for n in ("q", "k", "v")]
        if all(p is None for p in parts):
            return self.in_proj_weight
        zeros = self.in_proj_weight.new_zeros(self.embed_dim, self.embed_dim)
        return self.in_proj_weight + torch.cat([zeros if p is None else p for p in parts])

    def _effective_out_proj(self) -> torch.Tensor:
        if "out" not in self.lora:
            return self.out_proj.weight
        return self.out_proj.weight + self.lora["out"].weight_delta()

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.merged:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        if any(delta.dropout_active for delta in self.lora.values()):
            return self._forward_split(query, key, value, key_padding_mask, attn_mask, is_causal), None
        batched = query.dim() == 3
        if self.batch_first and batched:
            query, key, value = _to_sequence_first(query, key, value)
        out, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, self._effective_in_proj(), self.in_proj_bias,
            self.bias_k, self.bias_v, self.add_zero_attn, self.dropout, self._effective_out_proj(),
            self.out_proj.bias, training=self.training, key_padding_mask=key_padding_mask,
            need_weights=need_weights, attn_mask=attn_mask, average_attn_weights=average_attn_weights,
            is_causal=is_causal,
        )
        return (out.transpose(1, 0) if self.batch_first and batched else out), weights

    def _forward_split(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None,
                       is_causal: bool) -> torch.Tensor:
        """Separate q/k/v projections with the LoRA branch added to each output (dropout on the LoRA input)."""
        if key_padding_mask is not None or self.bias_k is not None or self.add_zero_attn or query.dim() != 3:
            raise LoraError("LoRA dropout supports batched attention without key padding masks or bias_k/v only")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        weights = self.in_proj_weight.chunk(3)
        biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        heads = []
        for name, x, w, b in zip(("q", "k", "v"), (query, key, value), weights, biases):
            y = F.linear(x, w, b)
            if name in self.lora:
                y = y + self.lora[name].branch(x)
            heads.append(y.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2))
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = ~attn_mask  # nn.MultiheadAttention: True = masked; SDPA: True = attend
        out = F.scaled_dot_product_attention(*heads, attn_mask=attn_mask, is_causal=is_causal and attn_mask is None,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).flatten(-2)
        result = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        if "out" in self.lora:
            result = result + self.lora["out"].branch(out)
        return result if self.batch_first else result.transpose(0, 1)


def _to_sequence_first(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Transpose batch-first inputs keeping the q-is-k-is-v identity torch uses to pick the packed projection."""
    if key is value:
        if query is key:
            query = key = value = query.transpose(1, 0)
        else:
            query, key = query.transpose(1, 0), key.transpose(1, 0)
            value = key
        return query, key, value
    return tuple(t.transpose(1, 0) for t in (query, key, value))


def _adopt(module: nn.Module, cls: type) -> nn.Module:
    """Turn ``module`` into an instance of the LoRA subclass ``cls`` in place (same parameters, keys and hooks)."""
    module.__class__ = cls
    module._init_lora()
    module.lora = nn.ModuleDict()
    return module


def _add_delta(host: nn.Module, name: str, weight: torch.Tensor, config: LoraConfig) -> None:
    delta = LoraDelta(weight.shape[1], weight.shape[0], config, weight)
    delta.train(host.training)
    host.lora[name] = delta


def _adapt_linear(linear: nn.Module, config: LoraConfig, where: str) -> nn.Module:
    if not isinstance(linear, nn.Linear) or isinstance(linear, LoraLinear):
        raise LoraError(f"{where}: expected a plain nn.Linear without LoRA, got {type(linear).__name__}")
    _adopt(linear, LoraLinear)
    _add_delta(linear, "main", linear.weight, config)
    return linear


def _adapt_fused_attention(attn: nn.MultiheadAttention, config: LoraConfig, where: str) -> nn.Module:
    if isinstance(attn, LoraMultiheadAttention):
        raise LoraError(f"{where}: already has LoRA adapters")
    if not attn._qkv_same_embed_dim or attn.in_proj_weight is None:
        raise LoraError(f"{where}: LoRA needs a fused in_proj_weight (self-attention with equal q/k/v widths)")
    _adopt(attn, LoraMultiheadAttention)
    width = attn.embed_dim
    rows = {"q": 0, "k": 1, "v": 2}
    for name in config.targets:
        if name in rows:
            _add_delta(attn, name, attn.in_proj_weight[rows[name] * width:(rows[name] + 1) * width], config)
        elif name == "out":
            _add_delta(attn, name, attn.out_proj.weight, config)
    return attn


def inject_lora(model: nn.Module, config: LoraConfig) -> list[nn.Module]:
    """Add adapters to every visual transformer block of ``model``; return the adapted modules.

    Every existing parameter of ``model`` is frozen; only the new ``A``/``B`` pairs train. Base state-dict keys are
    unchanged (adapters add ``….lora.<target>.A/B``). Text towers are never touched.
    """
    if any(isinstance(m, LoraDelta) for m in model.modules()):
        raise LoraError(f"{type(model).__name__} already has LoRA adapters; inject_lora runs once per model")
    blocks = visual_blocks(model)
    for param in model.parameters():
        param.requires_grad_(False)
    adapted: list[nn.Module] = []
    for index, (_, attn, mlp) in enumerate(blocks):
        where = f"visual block {index}"
        if isinstance(attn, nn.MultiheadAttention):
            if any(t in config.targets for t in ("q", "k", "v", "out")):
                adapted.append(_adapt_fused_attention(attn, config, where))
        elif all(isinstance(getattr(attn, p, None), nn.Linear) for p in ("q_proj", "k_proj", "v_proj", "out_proj")):
            names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj"}
            adapted += [_adapt_linear(getattr(attn, names[t]), config, f"{where} {names[t]}")
                        for t in config.targets if t in names]
        else:
            raise LoraError(f"{where}: unsupported attention module {type(attn).__name__}")
        if "mlp" in config.targets:
            adapted += [_adapt_linear(linear, config, f"{where} mlp.{part}") for part, linear in mlp.items()]
    logger.debug("injected LoRA (rank %d, scaling %.4g, targets %s) into %d modules",
                 config.rank, config.scaling, config.targets, len(adapted))
    return adapted


def _hosts(model: nn.Module) -> list[_LoraHost]:
    return [m for m in model.modules() if isinstance(m, _LoraHost)]


def _require_hosts(model: nn.Module) -> list[_LoraHost]:
    hosts = _hosts(model)
    if not hosts:
        raise LoraError(f"{type(model).__name__} has no LoRA adapters (call inject_lora first)")
    return hosts


def set_lora_strength(model: nn.Module, lam: float) -> None:
    """Scale every adapter's delta by ``lam`` (0 = base model, 1 = fine-tune); an error while merged."""
    hosts = _require_hosts(model)
    if any(h.merged for h in hosts):
        raise LoraError("cannot change the LoRA strength of a merged model; call unmerge_lora first")
    for host in hosts:
        for delta in host.lora.values():
            delta.strength = float(lam)


def merge_lora(model: nn.Module, *, keep_base: bool = True) -> int:
    """Fold every adapter into its base weight (no-op for layers already merged); return how many were merged.

    With ``keep_base`` (default) a copy of the base weights is kept so :func:`unmerge_lora` is bit-exact;
    inference-only callers pass False to save the memory.
    """
    return sum(host.merge(keep_base) for host in _require_hosts(model))


def unmerge_lora(model: nn.Module) -> int:
    """Subtract merged adapters from their base weights (no-op when unmerged); return how many were unmerged."""
    return sum(host.unmerge() for host in _require_hosts(model))


@contextlib.contextmanager
def _unmerged(model: nn.Module) -> Iterator[None]:
    """Temporarily unmerge a model, restoring the merge afterwards."""
    was_merged = [h for h in _hosts(model) if h.merged]
    kept = {id(h): all(r[3] is not None for r in h._merge_record.values()) for h in was_merged}
    for host in was_merged:
        host.unmerge()
    try:
        yield
    finally:
        for host in was_merged:
            host.merge(kept[id(host)])


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every LoRA ``A`` and ``B`` parameter of ``model`` (what an optimiser of a LoRA fine-tune trains)."""
    return [p for m in model.modules() if isinstance(m, LoraDelta) for p in (m.A, m.B)]


def _delta_modules(model: nn.Module) -> dict[str, LoraDelta]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraDelta)}


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA tensors only, keyed as in ``model.state_dict()`` (e.g. ``visual.….attn.lora.q.A``)."""
    return {f"{name}.{p}": getattr(m, p).detach() for name, m in _delta_modules(model).items() for p in ("A", "B")}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy LoRA tensors into the injected adapters, strictly: missing, unexpected and mis-shaped keys are errors."""
    deltas = _delta_modules(model)
    if any(h.merged for h in _hosts(model)):
        raise LoraError("cannot load LoRA tensors into a merged model; call unmerge_lora first")
    expected = {f"{name}.{p}" for name in deltas for p in ("A", "B")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise LoraError(f"LoRA state does not match the model: missing {missing[:8]}"
                        f"{' …' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                        f"{' …' if len(unexpected) > 8 else ''}")
    for name, delta in deltas.items():
        a, b = state[f"{name}.A"], state[f"{name}.B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise LoraError(f"{name}: A {tuple(a.shape)} and B {tuple(b.shape)} do not form a low-rank pair")
        if a.shape != delta.A.shape or b.shape != delta.B.shape:
            raise LoraError(f"{name}: A {tuple(a.shape)} / B {tuple(b.shape)} do not fit the base weight and rank, "
                            f"which need A {tuple(delta.A.shape)} / B {tuple(delta.B.shape)}")
    with torch.no_grad():
        for name, delta in deltas.items():
            delta.A.copy_(state[f"{name}.A"])
            delta.B.copy_(state[f"{name}.B"])


def lora_base_fingerprint(encoder: Encoder) -> str:
    """Image-weight fingerprint of the base under the adapters (unmerged, LoRA tensors left out).

    Equals :func:`overspec.models.adapters.image_weights_fingerprint` of the encoder before ``inject_lora``,
    provided the base weights stayed frozen.
    """
    lora_keys = set(lora_state_dict(encoder.module))
    with _unmerged(encoder.module):
        state = {k: v for k, v in encoder.image_state().items() if k not in lora_keys}
        return tensors_fingerprint(sorted(state.items()))


def _prefix_in(encoder: Encoder, model: nn.Module) -> str:
    """Key prefix of ``model`` inside ``encoder.module`` ("" when it is the module itself)."""
    for name, module in encoder.module.named_modules():
        if module is model:
            return f"{name}." if name else ""
    raise LoraError(f"the model passed to save_lora_adapter is not part of encoder {encoder.name!r}")


def save_lora_adapter(path: Path, encoder: Encoder, model: nn.Module, config: LoraConfig) -> Path:
    """Write the LoRA tensors of ``model`` (part of ``encoder``) as a ``lora`` adapter file, atomically.

    The metadata holds the base image-weight fingerprint (see :func:`lora_base_fingerprint`) and the config, so
    ``ModelSpec(adapter=path)`` rebuilds the fine-tune on that base only.
    """
    prefix = _prefix_in(encoder, model)
    tensors = {prefix + k: v.detach().contiguous().cpu() for k, v in lora_state_dict(model).items()}
    if not tensors:
        raise LoraError(f"encoder {encoder.name!r} has no LoRA adapters to save")
    path = Path(path)
    metadata = {"kind": "lora", "base_fingerprint": lora_base_fingerprint(encoder), "lora_config": config.to_json()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def apply_lora_adapter(encoder: Encoder, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Inject the stored config into ``encoder``, load the tensors and merge (the ``lora`` adapter kind)."""
    try:
        config = LoraConfig.from_json(metadata.get("lora_config", ""))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelLoadError(f"lora adapter for {encoder.name!r}: unreadable lora_config metadata ({exc})") from exc
    inject_lora(encoder.module, config)
    load_lora_state_dict(encoder.module, tensors)
    merged = merge_lora(encoder.module, keep_base=False)
    logger.debug("applied LoRA adapter (%d modules, scaling %.4g) to %s", merged, config.scaling, encoder.name)
