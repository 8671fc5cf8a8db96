"""Finished units on disk: ``units/<slug>.json`` (key, records, checksums) and ``predictions/<slug>.npz``.

A unit file holds the key it was computed under, its records, the sha256 of its predictions file and a checksum
over all three, so a resumed run reuses a unit only when its key still matches and nothing was altered; anything
else is reported and recomputed. ``timings/<slug>.json`` keeps the seconds the unit took to compute, apart from its
results (a rerun computes the same bytes in other seconds), so the report's cost table survives reuse.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from overspec.files import atomic_write_bytes, atomic_write_text, bytes_sha256, file_sha256

__all__ = ["save_predictions", "save_unit_seconds", "stored_records", "stored_unit_seconds", "unit_file_text"]

logger = logging.getLogger(__name__)


def _checksum(key: str, records: list[dict], predictions_sha: str) -> str:
    payload = json.dumps({"unit_key": key, "records": records, "predictions_sha256": predictions_sha}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def unit_file_text(key: str, records: list[dict], predictions_sha: str) -> str:
    """A finished unit: its key, records, the checksum of its predictions file, and a checksum over all three."""
    return json.dumps({"unit_key": key, "records": records, "predictions_sha256": predictions_sha,
                       "sha256": _checksum(key, records, predictions_sha)}, sort_keys=True)


def stored_records(path: Path, key: str, predictions_path: Path) -> list[dict] | None:
    """Records of a finished unit stored under ``key``; None when absent, stale, or corrupt (reported, recomputed)."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        records, predictions_sha = stored["records"], stored["predictions_sha256"]
        intact = stored["sha256"] == _checksum(stored["unit_key"], records, predictions_sha)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        logger.warning("%s: unreadable unit file (%s); recomputing the unit", path, exc)
        return None
    if not intact:
        logger.warning("%s: checksum mismatch (file altered); recomputing the unit", path)
        return None
    if stored["unit_key"] != key:
        return None
    if predictions_sha and (not predictions_path.is_file() or file_sha256(predictions_path) != predictions_sha):
        logger.warning("%s: missing or altered predictions file; recomputing the unit", predictions_path)
        return None
    return records


def save_predictions(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` as an ``.npz`` atomically and byte-reproducibly (fixed zip dates); return its sha256.

    ``np.savez`` stamps each member with the current time, so two identical runs would differ; members are written
    here with a constant date, in sorted order, without pickles.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arrays[name]), allow_pickle=False)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return bytes_sha256(data)


def save_unit_seconds(path: Path, seconds: float) -> None:
    """Record (atomically) how many seconds a unit took to compute."""
    atomic_write_text(path, json.dumps({"seconds": round(float(seconds), 3)}))


def stored_unit_seconds(path: Path) -> float | None:
    """Seconds a unit took when it was computed; None when not recorded or unreadable."""
    try:
        value = json.loads(path.read_text()).get("seconds")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None
