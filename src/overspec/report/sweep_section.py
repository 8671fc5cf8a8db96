"""The sweep's section in a study's own report: what ``overspec sweep`` stored beside the study, read back as blocks.

``overspec sweep`` runs a study's sweep as the run ``<name>-sweep`` beside it and stores its document
(:func:`overspec.sweep.sweep_blocks`: λ tables, chosen λ, merged models, regularised points, the frontier figure)
in that run's ``sweep/section.json``, figures as files beside it. The study's report includes it when it is there:
no sweep code runs, and the report's inputs include the section's files, so a new sweep redraws the report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from overspec.files import atomic_write_bytes, atomic_write_text, combine, file_sha256
from overspec.report.render import Block, Bullets, Figure, Heading, Paragraph, Table

__all__ = ["SECTION_FILE", "SWEEP_SUFFIX", "section_blocks", "section_digest", "sweep_folder", "write_section"]

#: The sweep run of study ``<name>`` is ``<name>-sweep`` in the same output folder.
SWEEP_SUFFIX = "-sweep"
SECTION_FILE = "section.json"
_VERSION = 1


def sweep_folder(run_dir: Path) -> Path:
    """The ``sweep/`` folder of the study run in ``run_dir``'s sweep (it may not exist)."""
    run_dir = Path(run_dir)
    return run_dir.parent / f"{run_dir.name}{SWEEP_SUFFIX}" / "sweep"


def _block_dict(block: Block) -> dict:
    """A block as plain data; a figure by its file (relative to the sweep folder), not its bytes."""
    if isinstance(block, Heading):
        return {"kind": "heading", "text": block.text, "level": block.level}
    if isinstance(block, Paragraph):
        return {"kind": "paragraph", "text": block.text}
    if isinstance(block, Bullets):
        return {"kind": "bullets", "items": list(block.items)}
    if isinstance(block, Table):
        return {"kind": "table", "name": block.name, "caption": block.caption, "header": list(block.header),
                "rows": [list(row) for row in block.rows], "notes": list(block.notes)}
    return {"kind": "figure", "name": block.name, "caption": block.caption, "file": block.file}


def write_section(folder: Path, blocks: Sequence[Block], study_config_hash: str = "") -> Path:
    """Store ``blocks`` as ``<folder>/section.json`` (atomically), noting the study's config hash it was made from."""
    data = {"version": _VERSION, "study_config_hash": study_config_hash, "blocks": [_block_dict(b) for b in blocks]}
    path = Path(folder) / SECTION_FILE
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


def section_digest(run_dir: Path) -> str:
    """Digest of the sweep section's files for ``run_dir`` (``absent`` without one): part of the report's inputs."""
    folder = sweep_folder(run_dir)
    path = folder / SECTION_FILE
    if not path.is_file():
        return "absent"
    figures = sorted((folder / "figures").glob("*.png")) if (folder / "figures").is_dir() else []
    return combine(file_sha256(path), *(f"{p.name}={file_sha256(p)}" for p in figures))


def section_blocks(run_dir: Path, config_hash: str, out: Path | None = None) -> list[Block]:
    """The sweep's section for the study in ``run_dir`` (empty without a sweep): headings one level down, a line
    saying where it comes from (and whether the study changed since), figures copied under ``out/figures``."""
    folder = sweep_folder(run_dir)
    try:
        data = json.loads((folder / SECTION_FILE).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        return []
    origin = (f"From `overspec sweep` of this study ({folder}: sweep.md and sweep.csv hold the same points, "
              "sweep.md the figure too).")
    if data.get("study_config_hash") not in ("", config_hash):
        origin += (" The study's config changed after that sweep (config hash "
                   f"{data['study_config_hash']} then, {config_hash} now): run `overspec sweep` again to update it.")
    blocks: list[Block] = []
    for item in data.get("blocks", ()):
        block = _block(item, folder, out)
        if block is not None:
            blocks.append(block)
    if blocks and isinstance(blocks[0], Heading):
        blocks.insert(1, Paragraph(origin))
    return blocks


def _block(item: dict, folder: Path, out: Path | None) -> Block | None:
    """One stored block, headings one level down; a figure copied to ``out/figures/sweep_<file>`` (None without
    ``out`` or its file)."""
    kind = item.get("kind")
    if kind == "heading":
        return Heading(item["text"], min(int(item["level"]) + 1, 6))
    if kind == "paragraph":
        return Paragraph(item["text"])
    if kind == "bullets":
        return Bullets(tuple(item["items"]))
    if kind == "table":
        return Table(item["name"], item["caption"], item["header"], item["rows"], notes=item.get("notes", []))
    source = folder / item.get("file", "")
    if kind != "figure" or out is None or not source.is_file():
        return None
    target = Path("figures") / f"sweep_{source.name}"
    png = source.read_bytes()
    atomic_write_bytes(Path(out) / target, png)
    return Figure(f"sweep_{item['name']}", item["caption"], png, str(target))
