"""Layering rule: no overspec module imports another package's private helpers (``_module`` or ``_name``); and the
heavy packages load only when a command needs them (the command line starts without them, stored units never load
torchvision, scikit-learn, scipy or matplotlib)."""

import ast
import subprocess
import sys
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


def _loaded_after(code: str, packages: tuple[str, ...]) -> list[str]:
    """The ``packages`` a fresh interpreter has imported after running ``code``."""
    probe = f"import sys\n{code}\nprint(' '.join(p for p in {packages!r} if p in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return out.split()


HEAVY = ("torch", "torchvision", "sklearn", "scipy", "matplotlib", "open_clip", "transformers", "timm")


def test_the_command_line_starts_without_the_heavy_packages():
    assert _loaded_after("import overspec.cli.main; overspec.cli.main.build_parser()", HEAVY) == []


def test_a_run_of_stored_units_needs_no_torchvision_scikit_learn_scipy_or_matplotlib():
    code = ("import overspec.runner, overspec.report.build\n"
            "from overspec.protocols.base import resolve_settings, planned_units\n"
            "settings = resolve_settings({})\n"
            "[planned_units(settings, kind) for kind in ('general', 'verification', 'mad', 'pad', 'ijb')]\n"
            "import overspec.world.layout, overspec.models.preprocess, overspec.features.loading")
    assert _loaded_after(code, ("torchvision", "sklearn", "scipy", "matplotlib")) == []
