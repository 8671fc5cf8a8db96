"""The report's cost table: per model, parameters trained, training time and evaluation time (``provenance.costs``)."""

from __future__ import annotations

from overspec.report.render import Block, Heading, Paragraph, Table
from overspec.report.rundata import RunData

__all__ = ["cost_blocks", "duration_text", "parameter_text"]

COST_EXPLANATION = (
    "What each model cost. Trained parameters are what its fine-tune updated (the LoRA adapter plus the training "
    "head, as a share of the image tower); training time is the fine-tune's own clock on the device named; evaluation "
    "time is the compute time of the model's units in this run folder, feature extraction included (counted once, in "
    "the first unit that needed the features). A weight-space combination trains nothing: its cost is evaluation "
    "only.")


_DATA_KEYS = ("kind", "image_parameters", "trainable_parameters", "train_seconds", "train_steps", "train_device",
              "eval_seconds", "eval_units")


def duration_text(seconds: float | None) -> str:
    """``"–"`` when unknown, else seconds below a minute (``"42.0 s"``) and minutes + seconds above."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def parameter_text(count: int | None, of: int | None) -> str:
    """``"1.2 M (3.4 %)"``-style count with its share of ``of``; ``"–"`` when unknown."""
    if count is None:
        return "–"
    scaled = next((f"{count / unit:.3g} {suffix}" for unit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k"))
                   if count >= unit), str(count))
    return f"{scaled} ({100 * count / of:.2f} %)" if of else scaled


def _row(name: str, cost: dict) -> list[str]:
    trained = parameter_text(cost.get("trainable_parameters"), cost.get("image_parameters"))
    steps = cost.get("train_steps")
    training = duration_text(cost.get("train_seconds"))
    if steps is not None and cost.get("train_seconds") is not None:
        training += f" ({steps} steps"
        training += f", {cost['train_device']})" if cost.get("train_device") else ")"
    return [name, cost.get("kind", ""), parameter_text(cost.get("image_parameters"), None), trained, training,
            f"{duration_text(cost.get('eval_seconds'))} ({cost.get('eval_units', 0)} units)"]


def cost_blocks(run: RunData) -> list[Block]:
    """The cost section, or nothing when the run's provenance has no costs (runs written before overspec kept
    them)."""
    costs = run.provenance.get("costs") or {}
    names = [name for name in run.model_names() if name in costs]
    if not names:
        return []
    header = ["model", "kind", "image tower", "trained parameters", "training time", "evaluation time"]
    data = [[name, *(costs[name].get(key) for key in _DATA_KEYS)] for name in names]
    return [Heading("Cost"), Paragraph(COST_EXPLANATION),
            Table("cost", "Parameters trained, training and evaluation time per model", header,
                  [_row(name, costs[name]) for name in names], data=data, data_header=["model", *_DATA_KEYS])]
