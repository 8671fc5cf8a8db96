"""The sweep's section in a study's report: stored by the sweep, read back as blocks, figures re-homed."""

import json

from overspec.report.render import Bullets, Figure, Heading, Paragraph, Table
from overspec.report.sweep_section import SECTION_FILE, section_blocks, section_digest, sweep_folder, write_section


def _store(tmp_path, config_hash="abc"):
    folder = sweep_folder(tmp_path / "runs" / "study")
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "frontier.png").write_bytes(b"\x89PNG fake")
    blocks = [Heading("Moving along the trade-off", 1), Paragraph("text"), Heading("fr"),
              Table("sweep_fr", "fr per λ", ["λ", "gain"], [["0", "+0.00"], ["1", "+2.00"]], notes=["a note"]),
              Bullets(("one", "two")), Figure("frontier", "the frontier", b"\x89PNG fake", "figures/frontier.png")]
    write_section(folder, blocks, config_hash)
    return folder


def test_the_section_comes_back_one_level_down_with_its_origin_and_figure(tmp_path):
    folder = _store(tmp_path)
    assert folder == tmp_path / "runs" / "study-sweep" / "sweep"
    out = tmp_path / "runs" / "study" / "report"
    blocks = section_blocks(tmp_path / "runs" / "study", "abc", out)
    assert blocks[0] == Heading("Moving along the trade-off", 2)
    assert isinstance(blocks[1], Paragraph) and blocks[1].text.startswith("From `overspec sweep` of this study")
    assert "changed" not in blocks[1].text
    assert blocks[2:6] == [Paragraph("text"), Heading("fr", 3),
                           Table("sweep_fr", "fr per λ", ["λ", "gain"], [["0", "+0.00"], ["1", "+2.00"]],
                                 notes=["a note"]), Bullets(("one", "two"))]
    assert blocks[6] == Figure("sweep_frontier", "the frontier", b"\x89PNG fake", "figures/sweep_frontier.png")
    assert (out / "figures" / "sweep_frontier.png").read_bytes() == b"\x89PNG fake"
    assert all(not isinstance(b, Figure) for b in section_blocks(tmp_path / "runs" / "study", "abc"))


def test_a_stale_or_missing_section_is_said_or_absent(tmp_path):
    assert section_blocks(tmp_path / "runs" / "study", "abc") == []
    assert section_digest(tmp_path / "runs" / "study") == "absent"
    folder = _store(tmp_path, config_hash="old")
    note = section_blocks(tmp_path / "runs" / "study", "new")[1].text
    assert "config hash old then, new now" in note and "overspec sweep" in note
    first = section_digest(tmp_path / "runs" / "study")
    (folder / "figures" / "frontier.png").write_bytes(b"\x89PNG other")
    assert section_digest(tmp_path / "runs" / "study") not in (first, "absent")
    (folder / SECTION_FILE).write_text(json.dumps({"version": 99, "blocks": []}))
    assert section_blocks(tmp_path / "runs" / "study", "new") == []
