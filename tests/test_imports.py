"""Layering rule: no overspec module imports another package's private helpers (``_module`` or ``_name``)."""

import ast
from collections.abc import Iterator
from pathlib import Path

import overspec

SOURCE = Path(overspec.__file__).parent


def _package_of(path: Path) -> str:
    """Dotted package that the module at ``path`` belongs to (a package's ``__init__`` belongs to itself)."""
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1])


def _owner(module: str, is_package: bool) -> str:
    """Package that owns what ``from module import ...`` reaches: the one above the first private part."""
    parts = module.split(".")
    private = next((i for i, part in enumerate(parts) if part.startswith("_")), None)
    if private is not None:
        return ".".join(parts[:private])
    return module if is_package else ".".join(parts[:-1])


def _inside(package: str, owner: str) -> bool:
    return package == owner or package.startswith(owner + ".")


def _private_imports(path: Path) -> Iterator[str]:
    """``line: statement`` for each import in ``path`` of a private module or name owned by another package."""
    package = _package_of(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("overspec"):
            continue
        names = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
        private_module = any(part.startswith("_") for part in node.module.split("."))
        is_package = (SOURCE.parent / node.module.replace(".", "/") / "__init__.py").is_file()
        if (names or private_module) and not _inside(package, _owner(node.module, is_package)):
            yield f"{path.relative_to(SOURCE)}:{node.lineno}: from {node.module} import {', '.join(names) or '...'}"


def test_no_module_imports_another_packages_private_helpers():
    offenders = [line for path in sorted(SOURCE.rglob("*.py")) for line in _private_imports(path)]
    assert offenders == [], "make the helper public where it lives, or move it:\n" + "\n".join(offenders)
