"""The import graph (issue 15): no production module imports the dev tools (bridge/devtools/), and the
CLI imports them only inside the command functions that need them, so `serve` against a cloud
upstream never loads them. Checked by parsing the source (ast), not by importing it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVTOOLS = "bridge.devtools"
CLI = ROOT / "bridge" / "cli.py"


def module_name(path: Path) -> str:
    """The dotted name a file is imported as (the `codecs/` folder is installed as `voice_codecs`)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "codecs":
        parts[0] = "voice_codecs"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    """The absolute names an import statement loads (`from . import x` names `package.x` too)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def imports(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line, imported module, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    importer, is_package = module_name(path), path.name == "__init__.py"
    top_level = {id(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for name in imported_modules(node, importer, is_package):
                yield node.lineno, name, id(node) in top_level


def is_devtools(name: str) -> bool:
    return name == DEVTOOLS or name.startswith(DEVTOOLS + ".")


def production_files() -> list[Path]:
    files = [p for folder in ("bridge", "codecs", "twiml") for p in (ROOT / folder).rglob("*.py")]
    return sorted(p for p in files if "devtools" not in p.relative_to(ROOT).parts[:2] and p != CLI)


def test_the_import_parser_sees_absolute_and_relative_devtools_imports() -> None:
    source = "from ..devtools import agent\nfrom .. import devtools\nimport bridge.devtools.phone\nfrom .devtools.x import y\n"
    probe = ROOT / "bridge" / "tools" / "probe.py"  # not written: only its name is used
    found = [
        (node.lineno, name)
        for node in ast.parse(source).body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in imported_modules(node, module_name(probe), is_package=False)
    ]
    # Line 4 is bridge.tools.devtools, which is not the dev tools.
    assert sorted({line for line, name in found if is_devtools(name)}) == [1, 2, 3]
    assert not is_devtools("bridge.devtoolsx") and not is_devtools("bridge.dev")


def test_no_production_module_imports_the_dev_tools() -> None:
    files = production_files()
    assert len(files) > 30 and ROOT / "bridge" / "app.py" in files and ROOT / "bridge" / "services.py" in files
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name, _ in imports(path)
        if is_devtools(name)
    ]
    assert not offending, "production code must not import bridge/devtools/:\n" + "\n".join(offending)


def test_the_cli_imports_the_dev_tools_only_inside_its_commands() -> None:
    found = [(line, name, top) for line, name, top in imports(CLI) if is_devtools(name)]
    assert found, "the CLI's agent/call/demo/replay commands use the dev tools"
    at_top = [f"bridge/cli.py:{line} imports {name} at module level" for line, name, top in found if top]
    assert not at_top, "\n".join(at_top)


def test_nothing_imports_upwards_into_the_cli_or_the_app_from_below() -> None:
    """The CLI is the top of the graph; the app and the composition root sit under it, and no
    production module below them (nor the services) reaches back up into the routes."""
    offending = []
    for path in production_files():
        for line, name, _ in imports(path):
            if name == "bridge.cli" or (name == "bridge.app" and path.name != "app.py"):
                offending.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not offending, "\n".join(offending)
