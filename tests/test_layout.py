"""The architecture's import rules (docs/architecture.md), read from the source: each
third-party library is imported by one module (or one small package) only, and the pipeline's
stages import neither each other nor the store."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aggregator"
STAGES = ("config", "fetch", "parse", "extract", "clean", "dedup", "store", "filters",
          "publish")


def _unit(path: Path) -> str:
    """The module or subpackage of aggregator/ a file belongs to."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, dotted name) of every import in a file; for ``from X import a, b`` with no X
    (``from . import fetch``), each imported name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.module:
                found.append((node.level, node.module))
            else:
                found += [(node.level, a.name) for a in node.names]
    return found


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_each_library_is_imported_in_one_place() -> None:
    importers: dict[str, set[str]] = defaultdict(set)
    for path in _sources():
        for level, name in _imports(path):
            top = name.split(".")[0]
            if level == 0 and top not in sys.stdlib_module_names and top != "aggregator":
                importers[top].add(_unit(path))
    assert importers, "no third-party import found: the scan is broken"
    assert "psycopg" in importers and "feedparser" in importers
    spread = {lib: sorted(units) for lib, units in importers.items() if len(units) > 1}
    assert not spread, f"libraries imported by more than one module or package: {spread}"


def test_stages_import_neither_each_other_nor_the_store() -> None:
    crossings: list[str] = []
    for path in _sources():
        unit = _unit(path)
        if unit not in STAGES:
            continue
        in_subpackage = path.parent != PACKAGE
        for level, name in _imports(path):
            if level == 0:
                parts = name.split(".")
                target = parts[1] if parts[0] == "aggregator" and len(parts) > 1 else None
            elif level == 1 and in_subpackage:
                continue  # a sibling inside the same package
            else:
                target = name.split(".")[0]
            if target in STAGES and target != unit:
                crossings.append(f"{path.relative_to(PACKAGE.parent)} imports {target}")
    assert not crossings, crossings
