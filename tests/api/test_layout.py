"""The coordinator's layout rules: no import inside a function, no untyped tuples on the
signing path, no ``Depends`` default argument (typed ``Annotated`` aliases instead), no
SQL in routes."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
API = sorted((ROOT / "api").rglob("*.py"))


def _imports_in_functions(path: Path) -> list[int]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    found.append(inner.lineno)
    return found


def test_no_import_inside_a_function() -> None:
    bad = {str(f.relative_to(ROOT)): lines for f in API if (lines := _imports_in_functions(f))}
    assert bad == {}


def test_no_untyped_tuples_nor_depends_defaults() -> None:
    for f in API:
        text = f.read_text()
        assert "tuple[Any, ...]" not in text, f
        assert "noqa: B008" not in text, f


def test_routes_hold_no_sql() -> None:
    for f in sorted((ROOT / "api" / "routes").glob("*.py")):
        mods = {
            n.module
            for n in ast.walk(ast.parse(f.read_text()))
            if isinstance(n, ast.ImportFrom) and n.module
        }
        assert not {m for m in mods if m.startswith("sqlalchemy") and m != "sqlalchemy.exc"}, f
