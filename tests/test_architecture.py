"""The package tree is the pipeline: each package imports only the ones before it.

ingest -> spool -> (format); ship -> store; read -> format, store; app wires them all.
docs/architecture.md draws the same picture; this test keeps it true.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "archiver"
ALLOWED = {
    "common": set(),
    "format": {"common"},
    "store": {"common"},
    "spool": {"common", "format"},
    "ingest": {"common", "format", "spool"},
    "ship": {"common", "format", "store"},
    "read": {"common", "format", "store"},
    "web": {"common", "format", "store", "read"},
    "client": {"common"},
    "app": {"common", "format", "store", "spool", "ingest", "ship", "read", "web", "client"},
}


def _imports(path: Path) -> set[str]:
    """The archiver packages a module imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "archiver" and len(parts) > 1 and parts[1] in ALLOWED:
                found.add(parts[1])
    return found


def test_every_module_belongs_to_a_known_package() -> None:
    top = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir() if not path.name.startswith("__")}
    assert top <= set(ALLOWED), f"place {sorted(top - set(ALLOWED))} in the pipeline (and in ALLOWED)"


def test_imports_point_one_way_along_the_pipeline() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) == 1 and relative.stem != "client":
            continue  # archiver/__init__.py and __main__.py: the public entry points
        package = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        for imported in _imports(path) - ALLOWED[package] - {package}:
            wrong.append(f"{relative} imports archiver.{imported}")
    assert not wrong, "\n".join(wrong)
