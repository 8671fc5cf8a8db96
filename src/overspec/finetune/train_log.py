"""``train_log.jsonl`` and TensorBoard event files of a fine-tune, written by rank 0 only.

One JSON record per line: losses and learning rates every ``log_every`` steps, ``validation`` (and the forgetting
monitor's ``monitor``) at validation steps, the base's ``monitor`` record at step 0. Resuming truncates what the
interrupted run wrote after the checkpoint it resumes from, so no step is recorded twice.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from overspec.files import atomic_write_text

__all__ = ["TrainLog", "LOG_FILE"]

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"


def _scalars(record: dict, prefix: str = "") -> list[tuple[str, float]]:
    """The numbers of a log record as TensorBoard tags, nested sections as ``section/key`` (the step excluded)."""
    out = []
    for key, value in record.items():
        if isinstance(value, dict):
            out.extend(_scalars(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
            out.append((prefix + key, value))
    return out


class TrainLog:
    """JSONL log and TensorBoard event files (``<out>/tensorboard``), written by rank 0 only."""

    def __init__(self, out_dir: Path, resume_step: int, final_step: int, enabled: bool) -> None:
        self.path = out_dir / LOG_FILE
        self.enabled = enabled
        self.board = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step, final_step)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            logger.info("TensorBoard logging off: %s (install tensorboard to get event files)", exc)
            return
        self.board = SummaryWriter(str(out_dir / "tensorboard"))

    def _truncate_after(self, step: int, final_step: int) -> None:
        """Drop entries after ``step`` (written by an interrupted run after the checkpoint it now resumes from), the
        final validation when resuming at the last step (it runs again), the base's step-0 monitor record when
        starting afresh (it is measured again) and a line cut short by a kill."""
        if not self.path.is_file():
            return
        kept = []
        for line in filter(None, self.path.read_text().splitlines()):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s: dropping an unreadable line (cut short by an interruption?)", self.path)
                continue
            rerun = record["step"] == final_step and "validation" in record
            if record["step"] < step or (record["step"] == step and step > 0 and not rerun):
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        """Append ``record`` to the JSONL log and its numbers to TensorBoard."""
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if self.board is not None:
            for key, value in _scalars(record):
                self.board.add_scalar(key, value, record["step"])

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.board is not None:
            self.board.close()
