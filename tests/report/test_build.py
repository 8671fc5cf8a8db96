"""The report on disk (Markdown, HTML, LaTeX, CSV, findings.json), run comparison, the CLI, and HTML in a browser."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from overspec.cli.main import main
from overspec.report.build import MADE_FROM, UNREAD_PROVENANCE, build_report, compare_runs
from overspec.report.render import Figure, Heading, Paragraph, Table, to_csv, to_html, to_latex, to_markdown
from overspec.results.records import Record

from .synthetic import make_run, study_like_accuracy, study_models

GELOS = {"small-fr": 0.70, "small-mad": 0.95}


def _run(tmp_path, name="r", **kwargs):
    return make_run(tmp_path, name, study_models(list(GELOS)), study_like_accuracy(GELOS, bases={"small": 1.0}),
                    n=400, protocols=("zero_shot", "linear_probe"), **kwargs)


def test_renderers_write_booktabs_latex_markdown_and_unrounded_csv():
    table = Table("t_1", "acc 50% & more", ["model", "a_b ↑", "Avg"], [["m_1", "12.35", "–"]],
                  [["m_1", 0.123456789, None]], ["note: x_y"])
    latex = to_latex(table)
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    assert "\\begin{tabular}{lrr}" in latex
    assert "m\\_1 & 12.35 & -- \\\\" in latex
    assert "a\\_b $\\uparrow$" in latex and "acc 50\\% \\& more" in latex and "\\label{tab:t_1}" in latex
    markdown = to_markdown([Heading("T", 1), table])
    assert "# T" in markdown and "| m_1 | 12.35 | – |" in markdown and "|---|---|---|" in markdown
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert rows == [["model", "a_b ↑", "Avg"], ["m_1", "0.123456789", ""]]
    page = to_html([Heading("T<1>", 1), Paragraph("a & b"), Figure("f", "cap", b"\x89PNG", "figures/f.png")], "x")
    assert "<h1>T&lt;1&gt;</h1>" in page and "a &amp; b" in page and 'src="data:image/png;base64,iVBORw==' in page


def test_build_report_writes_every_format_from_stored_results(tmp_path):
    run_dir = _run(tmp_path, extra_records=[Record(
        run="r", model="small-mad", model_fingerprint="fp", dataset="smdd", split="test", protocol="mad/own_head",
        metric="d_eer", value=0.1189, n=50, config_hash="cafe")])
    out = build_report(run_dir, n_boot=200)
    assert out == run_dir / "report"
    markdown = (out / "report.md").read_text()
    assert "gelo_below_one" not in markdown and "HOLDS" in markdown
    assert "GELO(small-fr) = 0.700" in markdown
    assert "11.89 [own head]" in markdown
    summary = list(csv.DictReader(io.StringIO((out / "tables" / "zero_shot_acc1_summary.csv").read_text())))
    fr = next(r for r in summary if r["model"] == "small-fr")
    assert float(fr["gelo"]) == pytest.approx(0.70, abs=1e-3)
    assert float(fr["gelo_low"]) < float(fr["gelo"]) < float(fr["gelo_high"])
    accuracy_csv = list(csv.reader(io.StringIO((out / "tables" / "zero_shot_acc1.csv").read_text())))
    assert accuracy_csv[0][-2:] == ["Avg", "GELO"]
    assert float(accuracy_csv[1][-2]) == pytest.approx(0.7, abs=1e-9)  # unrounded mean of 0.8, 0.7, 0.6
    deltas = list(csv.DictReader(io.StringIO((out / "tables" / "zero_shot_acc1_deltas.csv").read_text())))
    assert len(deltas) == 6 and all(int(r["c"]) > 0 and int(r["b"]) == 0 for r in deltas)
    assert "\\toprule" in (out / "tables" / "biometric.tex").read_text()
    findings = json.loads((out / "findings.json").read_text())
    assert [f["verdict"] for f in findings] == ["holds", "holds", "inconclusive"]
    assert "data:image/png;base64," in (out / "report.html").read_text() or not (out / "figures").exists()
    again = build_report(run_dir, n_boot=200)
    assert (again / "report.md").read_text() == markdown  # seeded: rebuilding gives the same report


def test_build_report_draws_figures_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed: figures are skipped by design")
    run_dir = _run(tmp_path, extra_records=[
        Record(run="r", model=m, model_fingerprint="fp", dataset="lfw", split="test", protocol="verification",
               metric="accuracy", value=v, n=50, config_hash="cafe") for m, v in (("small", 0.9), ("small-fr", 0.99))])
    out = build_report(run_dir, n_boot=100)
    for name in ("gelo_bars", "gain_vs_loss", "delta_zero_shot", "delta_linear_probe"):
        with Image.open(out / "figures" / f"{name}.png") as image:
            assert image.size[0] > 200 and np.asarray(image.convert("L")).std() > 5
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 4


def test_compare_runs_lists_added_removed_and_changed_records_and_settings(tmp_path):
    run_a = _run(tmp_path, "a")
    extra = [Record(run="b", model="small", model_fingerprint="fp", dataset="lfw", split="test",
                    protocol="verification", metric="accuracy", value=0.9, n=10, config_hash="x")]
    run_b = _run(tmp_path, "b", extra_records=extra, versions={"numpy": "2.1", "torch": "2.4"},
                 config={"name": "b", "seed": 1})
    lines = (run_b / "results.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["value"] += 0.01
    dropped = json.loads(lines[1])
    (run_b / "results.jsonl").write_text("\n".join([json.dumps(first), *lines[2:]]) + "\n")
    text = compare_runs(run_a, run_b)
    assert "1 added, 1 removed, 1 changed" in text
    assert "- small / lfw:test / verification / accuracy" in text
    assert f"- {dropped['model']} / {dropped['dataset']}:test / {dropped['protocol']} / {dropped['metric']}" in text
    assert "(Δ +0.01)" in text
    assert "- `seed`: 0 → 1" in text and "- `numpy`: '2.0' → '2.1'" in text
    assert "0 changed" in compare_runs(run_a, run_b, tolerance=0.05).split("\n")[2]
    assert "0 added, 0 removed, 0 changed" in compare_runs(run_a, run_a)


def test_cli_report_and_compare(tmp_path, capsys):
    run_dir = _run(tmp_path)
    assert main(["report", str(run_dir), "--n-boot", "50", "--size-order", "small"]) == 0
    assert "report written to" in capsys.readouterr().out
    assert (run_dir / "report" / "report.html").is_file()
    assert main(["compare", str(run_dir), str(run_dir)]) == 0
    assert "0 added, 0 removed, 0 changed" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no results.jsonl" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--size-order", "small,small"]) == 2
    assert "lists a model twice" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_report_renders_in_headless_chromium(tmp_path):
    out = build_report(_run(tmp_path), n_boot=50)
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900", f"--screenshot={shot}",
                    (out / "report.html").as_uri()], check=True, capture_output=True, timeout=60)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.shape == (900, 1200)
    dark = (pixels < 128).mean()
    assert 0.005 < dark < 0.5, f"screenshot looks blank or broken: {dark:.4f} of pixels are dark"


def test_the_report_and_the_command_line_lead_with_the_answer(tmp_path):
    run_dir = _run(tmp_path)
    out = build_report(run_dir, n_boot=200)
    answer = (out / "answer.md").read_text()
    assert answer.startswith("## The answer: what each specialisation cost")
    line = next(l for l in answer.splitlines() if l.startswith("- small-fr "))
    assert "GELO zero-shot 0.700 [" in line and "own task not measured" in line
    markdown = (out / "report.md").read_text()
    assert markdown.index("The answer") < markdown.index("Findings of the study")
    assert "percentile bootstrap over test images" in markdown


def test_the_header_claims_no_intervals_when_none_could_be_computed(tmp_path):
    run_dir = make_run(tmp_path, "plain", study_models(["small-fr"]),
                       study_like_accuracy({"small-fr": 0.7}), predictions=False)
    markdown = (build_report(run_dir, n_boot=50) / "report.md").read_text()
    assert "Intervals: none" in markdown and "percentile bootstrap" not in markdown
    assert "GELO zero-shot 0.700" in (run_dir / "report" / "answer.md").read_text()


def _sentinel(out):
    """Overwrite the report's Markdown with a marker, so a rebuild shows by the marker being gone."""
    (out / "report.md").write_text("sentinel")


def test_an_unchanged_run_keeps_its_report_and_a_changed_record_redraws_it(tmp_path):
    run_dir = _run(tmp_path, extra_records=[Record(
        run="r", model="small-mad", model_fingerprint="fp", dataset="smdd", split="test", protocol="mad/own_head",
        metric="d_eer", value=0.1189, n=50, config_hash="cafe")])
    out = build_report(run_dir, n_boot=50)
    _sentinel(out)
    provenance = json.loads((run_dir / "provenance.json").read_text())
    provenance.update(timings={"seconds": 9.9}, units={"computed": [], "reused": ["a"]})
    (run_dir / "provenance.json").write_text(json.dumps(provenance))
    assert (build_report(run_dir, n_boot=50) / "report.md").read_text() == "sentinel"
    results = run_dir / "results.jsonl"
    results.write_text(results.read_text().replace('"value": 0.1189', '"value": 0.2234'))
    assert "22.34 [own head]" in (build_report(run_dir, n_boot=50) / "report.md").read_text()


@pytest.mark.parametrize("change", ["settings", "prediction", "provenance", "deleted figure", "deleted table"])
def test_the_report_is_redrawn_when_an_input_or_an_output_file_changes(tmp_path, change):
    run_dir = _run(tmp_path)
    out = build_report(run_dir, n_boot=50)
    made = json.loads((out / MADE_FROM).read_text())
    assert "report.html" in made["files"] and any(f.startswith("tables/") for f in made["files"])
    _sentinel(out)
    n_boot = 60 if change == "settings" else 50
    if change == "prediction":
        path = sorted((run_dir / "predictions").glob("*.npz"))[0]
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        np.savez(path, **{**arrays, "correct5": ~arrays["correct5"]})
    elif change == "provenance":
        provenance = json.loads((run_dir / "provenance.json").read_text())
        provenance["models"]["small-fr"]["specialisation"] = "pad"
        (run_dir / "provenance.json").write_text(json.dumps(provenance))
    elif change.startswith("deleted"):
        kind = "figures/" if change == "deleted figure" else "tables/"
        removed = next((f for f in made["files"] if f.startswith(kind)), None)
        if removed is None:
            pytest.skip("matplotlib is not installed: no figures")
        (out / removed).unlink()
    assert (build_report(run_dir, n_boot=n_boot) / "report.md").read_text() != "sentinel"


def test_what_every_run_rewrites_in_provenance_does_not_change_the_report(tmp_path):
    run_dir = _run(tmp_path)
    out = build_report(run_dir, n_boot=50)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.suffix in (".md", ".csv", ".json")}
    provenance = json.loads((run_dir / "provenance.json").read_text())
    provenance.update({key: {"changed": [1, 2, 3]} for key in UNREAD_PROVENANCE})
    (run_dir / "provenance.json").write_text(json.dumps(provenance))
    (out / MADE_FROM).unlink()
    build_report(run_dir, n_boot=50)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.suffix in (".md", ".csv", ".json")}
    assert {k: v for k, v in after.items() if k.name != MADE_FROM} == \
           {k: v for k, v in before.items() if k.name != MADE_FROM}


def test_the_cost_table_shows_what_each_model_trained_and_took(tmp_path):
    run_dir = _run(tmp_path)
    provenance = json.loads((run_dir / "provenance.json").read_text())
    provenance["costs"] = {
        "small": {"kind": "base", "image_parameters": 2_000_000, "trainable_parameters": None,
                  "train_seconds": None, "train_steps": None, "train_device": "", "eval_seconds": 75.0,
                  "eval_units": 4},
        "small-fr": {"kind": "fine-tune", "image_parameters": 2_000_000, "trainable_parameters": 50_000,
                     "train_seconds": 12.25, "train_steps": 100, "train_device": "cpu", "eval_seconds": 3.5,
                     "eval_units": 4}}
    (run_dir / "provenance.json").write_text(json.dumps(provenance))
    out = build_report(run_dir, n_boot=50)
    markdown = (out / "report.md").read_text()
    assert "## Cost" in markdown and "trains nothing" in markdown
    rows = list(csv.DictReader(io.StringIO((out / "tables" / "cost.csv").read_text())))
    assert [r["model"] for r in rows] == ["small", "small-fr"]  # models without a cost entry are left out
    assert float(rows[1]["trainable_parameters"]) == 50_000 and float(rows[1]["train_seconds"]) == 12.25
    section = markdown[markdown.index("## Cost"):].splitlines()
    line = next(line for line in section if line.startswith("| small-fr"))
    assert "50 k (2.50 %)" in line and "12.2 s (100 steps, cpu)" in line and "3.5 s (4 units)" in line
    base_line = next(line for line in section if line.startswith("| small "))
    assert "1 min 15 s (4 units)" in base_line


def test_a_run_without_costs_has_no_cost_section(tmp_path):
    out = build_report(_run(tmp_path), n_boot=50)
    assert "## Cost" not in (out / "report.md").read_text()
