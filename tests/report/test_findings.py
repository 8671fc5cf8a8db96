"""The three findings on constructed runs where each holds, fails, or cannot be decided."""

from __future__ import annotations

import numpy as np
import pytest

from overspec.report.findings import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, evaluate_findings, verdict_of
from overspec.report.rundata import load_run
from overspec.report.stats import general_bootstrap
from overspec.report.tables import general_table

from .synthetic import make_run, study_like_accuracy, study_models

VARIANTS = ["small-fr", "small-mad", "small-pad", "large-fr", "large-mad", "large-pad"]


def _findings(run_dir, *, n_boot: int = 300, size_order=None, with_intervals: bool = True):
    run = load_run(run_dir)
    tables = {p: general_table(run, p) for p in ("zero_shot", "linear_probe")}
    tables = {p: t for p, t in tables.items() if t is not None}
    boots = {p: general_bootstrap(run, p, n_boot=n_boot, seed=1) if with_intervals else None for p in tables}
    return {f.key: f for f in evaluate_findings(run, tables, boots, size_order=size_order)}


def test_verdict_rule():
    assert verdict_of([(0.1, 0.2), (0.01, 0.3)]) == HOLDS
    assert verdict_of([(0.1, 0.2), (-0.3, -0.01)]) == DOES_NOT_HOLD
    assert verdict_of([(0.1, 0.2), (-0.01, 0.3)]) == INCONCLUSIVE
    assert verdict_of([(0.0, 0.0)]) == DOES_NOT_HOLD
    assert verdict_of([]) == INCONCLUSIVE


def test_all_three_findings_hold_on_a_study_like_run(tmp_path):
    gelos = {"small-fr": 0.70, "small-mad": 0.95, "small-pad": 0.96, "large-fr": 0.82, "large-mad": 0.98,
             "large-pad": 0.99}
    run_dir = make_run(tmp_path, "r", study_models(VARIANTS), study_like_accuracy(gelos), n=1500,
                       protocols=("zero_shot", "linear_probe"))
    findings = _findings(run_dir)
    assert {k: f.verdict for k, f in findings.items()} == {
        "gelo_below_one": HOLDS, "fr_loses_most": HOLDS, "larger_base_keeps_more": HOLDS}
    below = findings["gelo_below_one"]
    assert len(below.comparisons) == 12  # 6 fine-tunes × 2 protocols
    zs_fr = next(c for c in below.comparisons if c.protocol == "zero_shot" and c.label == "GELO(small-fr)")
    assert zs_fr.estimate == pytest.approx(0.70, abs=2e-3)
    assert zs_fr.interval[0] < zs_fr.estimate < zs_fr.interval[1]
    assert "[0.6" in zs_fr.text() or "[0.7" in zs_fr.text()
    assert len(findings["fr_loses_most"].comparisons) == 8  # 2 bases × 2 binary × 2 protocols
    assert len(findings["larger_base_keeps_more"].comparisons) == 6
    assert "parameter count" in findings["larger_base_keeps_more"].notes[0]


def test_each_finding_fails_when_the_numbers_say_otherwise(tmp_path):
    gelos = {"small-fr": 0.97, "small-pad": 0.80, "large-fr": 0.85, "large-pad": 1.0}
    accuracy = study_like_accuracy(gelos)
    accuracy["large-pad"] = {d: min(1.0, a + 0.04) for d, a in accuracy["large"].items()}  # GELO > 1
    run_dir = make_run(tmp_path, "r", study_models(list(gelos)), accuracy, n=1500)
    findings = _findings(run_dir)
    assert findings["gelo_below_one"].verdict == DOES_NOT_HOLD
    assert findings["fr_loses_most"].verdict == DOES_NOT_HOLD  # small-fr keeps more than small-pad
    assert findings["larger_base_keeps_more"].verdict == DOES_NOT_HOLD  # large-fr 0.85 < small-fr 0.97


def test_a_fine_tune_equal_to_its_base_is_inconclusive(tmp_path):
    accuracy = study_like_accuracy({"small-mad": 1.0}, bases={"small": 1.0})
    rng = np.random.default_rng(0)
    base_correct = rng.random(800) < 0.7
    variant = base_correct.copy()
    right, wrong = np.flatnonzero(base_correct)[:15], np.flatnonzero(~base_correct)[:15]
    variant[right], variant[wrong] = False, True
    overrides = {("small", d, "zero_shot"): base_correct for d in accuracy["small"]}
    overrides |= {("small-mad", d, "zero_shot"): variant for d in accuracy["small"]}
    run_dir = make_run(tmp_path, "r", study_models(["small-mad"], {"small": 1}), accuracy, n=800,
                       overrides=overrides)
    findings = _findings(run_dir)
    below = findings["gelo_below_one"]
    assert below.comparisons[0].estimate == pytest.approx(1.0)
    assert below.verdict == INCONCLUSIVE
    assert findings["fr_loses_most"].verdict == INCONCLUSIVE
    assert "no base with both" in findings["fr_loses_most"].notes[0]


def test_size_comes_from_an_explicit_order_when_provenance_has_none(tmp_path):
    gelos = {"small-mad": 0.90, "large-mad": 0.97}
    models = study_models(list(gelos))
    for base in ("small", "large"):
        models[base] = {}
    run_dir = make_run(tmp_path, "r", models, study_like_accuracy(gelos), n=1500)
    unknown = _findings(run_dir)["larger_base_keeps_more"]
    assert unknown.verdict == INCONCLUSIVE and "size-order" in unknown.notes[0]
    ordered = _findings(run_dir, size_order={"small": 0, "large": 1})["larger_base_keeps_more"]
    assert ordered.verdict == HOLDS and "explicit size order" in ordered.notes[0]
    reversed_order = _findings(run_dir, size_order={"large": 0, "small": 1})["larger_base_keeps_more"]
    assert reversed_order.verdict == DOES_NOT_HOLD


def test_without_predictions_the_verdict_rests_on_point_estimates(tmp_path):
    gelos = {"small-fr": 0.70, "small-mad": 0.95}
    run_dir = make_run(tmp_path, "r", study_models(gelos), study_like_accuracy(gelos, bases={"small": 1.0}),
                       predictions=False)
    findings = _findings(run_dir, with_intervals=False)
    assert findings["gelo_below_one"].verdict == HOLDS
    assert all(c.interval is None and "point estimate only" in c.text()
               for c in findings["gelo_below_one"].comparisons)
    assert findings["fr_loses_most"].verdict == HOLDS
    assert findings["larger_base_keeps_more"].verdict == INCONCLUSIVE
