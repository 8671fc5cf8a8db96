"""Which validated step of a fine-tune to export: ``last``, ``best`` or ``keep:F`` (issue 15, the forgetting monitor).

Rules (read from ``train_log.jsonl`` records, see :mod:`overspec.finetune.monitor`):

- ``last``: the final step (what fine-tuning exported before the monitor existed).
- ``best``: the validated step with the best biometric validation metric (``accuracy`` higher, ``eer`` lower).
- ``keep:F`` (0 < F <= 1): the best biometric metric among validated steps whose general zero-shot top-1 is at
  least F × the base's (step 0). Step 0 itself is never a candidate although it qualifies by definition: its head is
  the untrained initial one, so exporting it would not be a fine-tune. When no validated step qualifies, the step
  with the highest general zero-shot accuracy is taken (the least forgetting; ties: the better biometric metric, then
the earlier step), and the reason says so.

Ties: on the biometric metric, the higher general accuracy wins (for ``best`` and ``keep``), then the earlier
step (fewer updates away from the base).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from overspec.errors import InputError

__all__ = ["SelectionRule", "Choice", "parse_rule", "choose_step", "validation_records", "RULES", "BIOMETRIC_KEYS"]

logger = logging.getLogger(__name__)

RULES = ("last", "best", "keep:F")
#: Biometric validation metrics and whether higher is better.
BIOMETRIC_KEYS = {"accuracy": True, "eer": False}


@dataclass(frozen=True)
class SelectionRule:
    """A parsed ``select`` value: ``kind`` is last / best / keep, ``keep`` the kept fraction of the base's accuracy."""

    kind: str
    keep: float = 0.0

    def __str__(self) -> str:
        return f"keep:{self.keep:g}" if self.kind == "keep" else self.kind


@dataclass(frozen=True)
class Choice:
    """The step a rule picked and, in words, why (recorded in ``finetune.json`` and the model preset)."""

    step: int
    rule: str
    reason: str
    biometric: float | None = None
    general: float | None = None
    base_general: float | None = None


def parse_rule(text: str, where: str = "select") -> SelectionRule:
    """The :class:`SelectionRule` of ``last``, ``best`` or ``keep:F`` with 0 < F <= 1; InputError naming ``where``."""
    value = str(text).strip()
    if value in ("last", "best"):
        return SelectionRule(value)
    kind, sep, raw = value.partition(":")
    if kind != "keep" or not sep:
        raise InputError(f"{where}: unknown rule {value!r}; expected one of {', '.join(RULES)} (e.g. keep:0.99)")
    try:
        fraction = float(raw)
    except ValueError:
        raise InputError(f"{where}: {value!r}: the kept fraction {raw!r} is not a number (e.g. keep:0.99)") from None
    if not 0.0 < fraction <= 1.0 or math.isnan(fraction):
        raise InputError(f"{where}: {value!r}: the kept fraction must lie in (0, 1], got {fraction:g}")
    return SelectionRule("keep", fraction)


def validation_records(log_path: Path) -> dict[int, dict]:
    """Step -> its validation/monitor record in a ``train_log.jsonl`` (the last one per step wins)."""
    records: dict[int, dict] = {}
    for line in filter(None, Path(log_path).read_text().splitlines()):
        record = json.loads(line)
        if "validation" in record or "monitor" in record:
            records[int(record["step"])] = {**records.get(int(record["step"]), {}), **record}
    return records


def _biometric(record: dict) -> tuple[str, float] | None:
    """The record's biometric metric name and value, or None when it has none."""
    validation = record.get("validation") or {}
    for key in BIOMETRIC_KEYS:
        if isinstance(validation.get(key), (int, float)) and not math.isnan(validation[key]):
            return key, float(validation[key])
    return None


def _general(record: dict) -> float | None:
    monitor = record.get("monitor") or {}
    return float(monitor["acc1"]) if isinstance(monitor.get("acc1"), (int, float)) else None


def _biometric_loss(record: dict) -> float:
    """The record's biometric metric oriented so that lower is better."""
    name, value = _biometric(record)
    return -value if BIOMETRIC_KEYS[name] else value


def _general_loss(record: dict) -> float:
    """Minus the record's general accuracy (lower is better; a record without one ranks last)."""
    general = _general(record)
    return -general if general is not None else 1.0


def _ranked_best(candidates: list[tuple[int, dict]]) -> tuple[int, dict]:
    """The candidate with the best biometric metric; ties: higher general accuracy, then the earlier step."""
    return min(candidates, key=lambda item: (_biometric_loss(item[1]), _general_loss(item[1]), item[0]))


def choose_step(records: dict[int, dict], rule: SelectionRule, final_step: int) -> Choice:
    """The step ``rule`` picks among ``records`` (from :func:`validation_records`) of a run of ``final_step`` steps."""
    base = _general(records.get(0, {}))
    if rule.kind == "last":
        final = records.get(final_step, {})
        value = _biometric(final)
        return Choice(final_step, str(rule), "the last step (select: last)", value[1] if value else None,
                      _general(final), base)
    validated = sorted((step, r) for step, r in records.items() if step > 0 and _biometric(r) is not None)
    if not validated:
        raise InputError(f"select {rule}: no validated step has a biometric metric ({', '.join(BIOMETRIC_KEYS)}); "
                         "give the fine-tune a validation set or use select: last")
    if rule.kind == "best":
        step, record = _ranked_best(validated)
        name, value = _biometric(record)
        return Choice(step, str(rule), f"best validation {name} {value:.4f} of {len(validated)} validated steps",
                      value, _general(record), base)
    return _choose_keep(base, validated, rule)


def _choose_keep(base: float | None, validated: list[tuple[int, dict]], rule: SelectionRule) -> Choice:
    if base is None or any(_general(r) is None for _, r in validated):
        raise InputError(f"select {rule}: the forgetting monitor did not measure step 0 and every validated step; "
                         "set monitor.dataset (a catalog dataset) or use select: best")
    floor = rule.keep * base
    kept = [(step, r) for step, r in validated if _general(r) >= floor]
    if kept:
        step, record = _ranked_best(kept)
        name, value = _biometric(record)
        reason = (f"best validation {name} {value:.4f} among {len(kept)} of {len(validated)} validated steps keeping "
                  f"general zero-shot >= {rule.keep:g} x base {base:.4f} (>= {floor:.4f})")
        return Choice(step, str(rule), reason, value, _general(record), base)
    step, record = min(validated, key=lambda item: (_general_loss(item[1]), _biometric_loss(item[1]), item[0]))
    general = _general(record)
    reason = (f"no validated step keeps general zero-shot >= {rule.keep:g} x base {base:.4f}; fell back to the step "
              f"forgetting least (general {general:.4f})")
    logger.warning("select %s: %s", rule, reason)
    return Choice(step, str(rule), reason, _biometric(record)[1], general, base)
