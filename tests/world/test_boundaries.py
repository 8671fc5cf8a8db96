"""The world is a producer: models and data never import it (they see its catalog entries and weights scheme)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import overspec

PACKAGE = Path(overspec.__file__).resolve().parent


def imported_modules(source: str, package: str) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``source`` names; ``package`` resolves relative ones."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
    return names


def _package_of(path: Path) -> str:
    """The dotted package a module file belongs to (relative imports start there)."""
    return ".".join(path.parent.relative_to(PACKAGE.parent).parts)


def _is_world(module: str) -> bool:
    return module == "overspec.world" or module.startswith("overspec.world.")


@pytest.mark.parametrize("consumer", ["models", "data"])
def test_consumers_never_import_the_world(consumer: str) -> None:
    files = sorted((PACKAGE / consumer).rglob("*.py"))
    assert len(files) > 5
    offenders = {f"{path.relative_to(PACKAGE)}: {module}" for path in files
                 for module in imported_modules(path.read_text(encoding="utf-8"), _package_of(path))
                 if _is_world(module)}
    assert offenders == set()


@pytest.mark.parametrize("source", ["import overspec.world\n", "import overspec.world.models as m\n",
                                    "from overspec.world.models import folder_of\n", "from overspec import world\n",
                                    "from ...world import layout\n", "from ... import world\n"])
def test_the_check_sees_every_spelling_of_the_import(source: str) -> None:
    assert any(_is_world(m) for m in imported_modules(source, "overspec.models.sources"))


def test_the_check_names_only_the_world() -> None:
    source = "from overspec import worldly\nfrom .. import world\nimport overspec.models.world\n"
    assert not any(_is_world(m) for m in imported_modules(source, "overspec.models.sources"))
