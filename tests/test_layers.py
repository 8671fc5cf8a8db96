"""The pipeline's direction holds: a module imports only its own layer and the layers below it.

metrics / config (and the process pool of ``workers``) → data → models → features → protocols → results → report →
evaluation (a run's units) → runner and its ``unit_workers`` → sweep → cli, on a ground floor (registry, errors,
files, progress, safeload, torchscript, distributed) that imports none of them, under the
package's lazy notebook facade (``overspec/__init__``). The producers beside the pipeline (``world``, ``finetune``) use the layers up to
protocols (a fine-tune validates with the verification protocol); of the pipeline, only the runner and the CLI may
call them. Every import counts, including the ones inside functions.
"""

import ast
from pathlib import Path

import pytest

import overspec

PACKAGE = Path(overspec.__file__).parent
GROUND = 0
LAYERS = {"registry": GROUND, "errors": GROUND, "files": GROUND, "progress": GROUND, "safeload": GROUND,
          "torchscript": GROUND, "distributed": GROUND, "__init__": 10, "metrics": 1, "config": 1, "data": 2,
          "models": 3, "features": 4, "protocols": 5, "results": 6, "report": 7, "evaluation": 7.5, "runner": 8, "unit_workers": 8, "workers": 1, "sweep": 8.5, "cli": 9}
PRODUCERS = {"world": 5.5, "finetune": 5.5}
MAY_CALL_PRODUCERS = {"runner", "unit_workers", "sweep", "cli", "world", "finetune"}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "overspec" or name.startswith("overspec.")]


def _level(part: str) -> float:
    return PRODUCERS.get(part, LAYERS.get(part))


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        mine = _part(".".join(relative.parts))
        for line, name in _imports(path):
            theirs = _part(name) if name != "overspec" else "__init__"
            if mine == theirs or theirs == "__init__":
                continue
            if theirs in PRODUCERS and mine not in MAY_CALL_PRODUCERS:
                problems.append(f"{relative}:{line} imports the producer {name}")
            elif theirs not in PRODUCERS and _level(theirs) > _level(mine):
                problems.append(f"{relative}:{line} ({mine}) imports higher layer {name}")
    return problems


def test_every_package_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert parts <= set(LAYERS) | set(PRODUCERS), parts - set(LAYERS) - set(PRODUCERS)


def test_no_layer_imports_a_higher_one():
    assert _violations() == []


@pytest.mark.parametrize(("source", "expected"), [
    ("from overspec.report.tables import gelo\n", "imports higher layer overspec.report.tables"),
    ("def f():\n    import overspec.runner\n", "imports higher layer overspec.runner"),
    ("from overspec.finetune.run import finetune\n", "imports the producer overspec.finetune.run"),
])
def test_the_check_sees_module_and_function_level_imports(tmp_path, monkeypatch, source, expected):
    fake = tmp_path / "overspec"
    (fake / "features").mkdir(parents=True)
    (fake / "features" / "bad.py").write_text(source)
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    assert [p for p in _violations() if expected in p]
