"""The code map holds: one job per module, layers that only import downward, no private imports.

Layers (DESIGN.md): cli -> pipeline -> {media, engine, checkpoints -> weights -> registry} -> archs,
with the small base modules (errors, settings, fs, progress, tiling, presets, metrics) under all.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightsr_cli"
MAX_LINES = 500

BASE = {"errors", "settings", "fs", "progress", "tiling", "presets", "metrics"}
# What each layer may import (besides the standard library and third-party packages).
ALLOWED = {
    "base": {"base"},
    "archs": {"base", "archs"},
    "registry": {"base", "archs", "registry"},
    "checkpoints": {"base", "archs", "registry", "weights", "checkpoints"},  # hashes a file to find its card
    "weights": {"base", "registry", "weights"},
    "media": {"base", "media"},
    "engine": {"base", "archs", "engine"},
    "pipeline": {"base", "archs", "registry", "checkpoints", "weights", "media", "engine", "pipeline"},
    "api": {"base", "archs", "registry", "checkpoints", "weights", "media", "engine", "pipeline", "api"},
    "cli": {"base", "archs", "registry", "checkpoints", "weights", "media", "engine", "pipeline", "api", "cli"},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(dotted: str) -> str:
    parts = dotted.split(".")
    if len(parts) == 1:  # the package root only re-exports the API lazily
        return "api"
    top = parts[1]
    if top in BASE:
        return "base"
    if top == "__main__":
        return "cli"
    return top


def _imports(tree: ast.Module, package: str) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) for every import of a lightsr_cli module in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "lightsr_cli":
                found.append((node.lineno, module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names
                         if alias.name.split(".")[0] == "lightsr_cli")
    return found


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _target(module: str, name: str) -> str:
    """The module an import really reaches: ``from lightsr_cli import weights`` reaches lightsr_cli.weights."""
    candidate = PACKAGE.parent.joinpath(*f"{module}.{name}".split("."))
    return f"{module}.{name}" if candidate.with_suffix(".py").is_file() or candidate.is_dir() else module


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small_and_says_its_job(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES, f"{path.name} has grown past {MAX_LINES} lines: split it"
    if path.name != "__main__.py":
        assert ast.get_docstring(ast.parse(text)), f"{path.name} needs a docstring that says its one job"


def _private_attributes(tree: ast.Module, imported: set[str]) -> list[str]:
    """``module._name`` where ``module`` is a lightsr_cli module this file imported."""
    return [f"line {node.lineno}: uses the private name {node.value.id}.{node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in imported and _is_private(node.attr)]


def _problems(source: str, here: str, package: str) -> list[str]:
    tree = ast.parse(source)
    allowed = ALLOWED[_layer(here)]
    problems = []
    imported_modules = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported_modules.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    for line, module, names in _imports(tree, package):
        targets = [_target(module, name) for name in names] or [module]
        for target in targets:
            if _layer(target) not in allowed:
                problems.append(f"line {line}: {here} ({_layer(here)}) imports {target} ({_layer(target)})")
        if any(_is_private(part) for part in module.split(".")):
            problems.append(f"line {line}: imports from the private module {module}")
        problems.extend(f"line {line}: imports the private name {name} from {module}"
                        for name in names if _is_private(name))
    lightsr_names = {name for name in imported_modules if not name.startswith(("os", "sys"))}
    return problems + _private_attributes(tree, lightsr_names & _lightsr_bindings(tree, package))


def _lightsr_bindings(tree: ast.Module, package: str) -> set[str]:
    """Local names bound to lightsr_cli modules by this file's imports."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _imports(ast.Module(body=[node], type_ignores=[]), package):
            bound.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names
                         if alias.name.startswith("lightsr_cli"))
    return bound


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_and_never_reach_private_names(path):
    here = _dotted(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    problems = _problems(path.read_text(encoding="utf-8"), here, package)
    assert not problems, "\n".join(problems)


def test_the_checker_sees_each_kind_of_violation():
    """The rules above can fail: upward, private-name, private-module and private-attribute imports."""
    source = (
        "from ..engine import Engine\n"            # media -> engine: upward
        "from ..errors import _SETTING\n"          # a private name
        "from ..archs._spec import ArchSpec\n"     # a private module (and upward)
        "from .. import fs\n"
        "def f():\n    return fs._keep_mode_of\n"  # a private attribute of an imported module
    )
    problems = _problems(source, "lightsr_cli.media.images", "lightsr_cli.media")
    assert any("imports lightsr_cli.engine (engine)" in p for p in problems)
    assert any("private name _SETTING" in p for p in problems)
    assert any("private module lightsr_cli.archs._spec" in p for p in problems)
    assert any("private name fs._keep_mode_of" in p for p in problems)
    clean = "from ..errors import InputError\nfrom .. import fs\nfs.write_bytes\n"
    assert _problems(clean, "lightsr_cli.media.images", "lightsr_cli.media") == []


def test_every_package_folder_is_installed():
    """pyproject lists packages explicitly (the embedded weights/ folder is mapped into the package):
    a new package folder missing from the list would be left out of every install."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {_dotted(init) for init in PACKAGE.rglob("__init__.py")}
    assert on_disk | {"lightsr_cli._weights"} == listed
