"""``make bench``'s driver: goal lines are parsed, failed scripts are listed, the exit status follows the verdicts."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / f"bench_{name}.py"
    path.write_text(body)
    return path


def test_goal_lines_are_parsed_into_row_measure_and_verdict(run_all):
    match = run_all.GOAL_LINE.match("goal: IJB-C 1:1 peak memory: 1.42 GiB < 2 GiB: met")
    assert (match["row"], match["measured"], match["verdict"]) == ("IJB-C 1:1 peak memory", "1.42 GiB < 2 GiB", "met")
    match = run_all.GOAL_LINE.match("goal: linear probe / warm-started scikit-learn sweep, time: 0.31 <= 0.1: NOT met")
    assert match["verdict"] == "NOT met" and match["measured"] == "0.31 <= 0.1"
    assert run_all.GOAL_LINE.match("throughput ratio 0.97 (goal >= 0.95)") is None


def test_a_run_lists_every_goal_and_every_failed_script(run_all, tmp_path, monkeypatch, capsys):
    _script(tmp_path, "a", "print('goal: a fast: 0.01 <= 0.02: met')\nprint('goal: a small: 3 GiB < 2 GiB: NOT met')\n")
    _script(tmp_path, "b", "import sys\nprint('peer missing')\nsys.exit(2)\n")
    _script(tmp_path, "c", "# bench: peers\nprint('goal: c: 1 <= 2: met')\n")
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--peers-python", str(tmp_path / "missing-python")])
    assert run_all.main() == 1
    out = capsys.readouterr().out
    assert "| bench_a | a fast | 0.01 <= 0.02 | met |" in out and "| bench_a | a small | 3 GiB < 2 GiB | NOT met |" in out
    assert "| bench_b | (no result) | exit status 2" in out
    assert "| bench_c | (no result) | exit status 2" in out and "make bench-peers" in out


def test_all_goals_met_exits_0(run_all, tmp_path, monkeypatch):
    _script(tmp_path, "a", "print('goal: a: 0.01 <= 0.02: met')\n")
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_all.py"])
    assert run_all.main() == 0
