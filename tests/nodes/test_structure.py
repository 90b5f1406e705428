"""The node's structure rules (issue 8): no import hidden in a function (the CLI's lazy
import of the web stack excepted, commented), no fault injection read from the environment
or exiting the process, no reach into another object's private members, and every signing
route through the one pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "signer-nodes"
LOW = {"errors", "faults", "config", "logs", "metrics", "policy", "envelope", "store"}
MAY_IMPORT = {
    **{m: set() for m in LOW},
    "vault": {"config"},
    "rotation": {"faults", "logs", "store", "vault"},
    "pool": {"errors"},
    "identity": {"envelope", "store", "vault"},
    "anchor": {"envelope", "errors", "logs", "store"},
    "checkpoint": {"anchor", "errors", "logs", "store"},
    "velocity": {"store"},
    "shares": {"errors", "logs", "pool", "store", "vault"},
    "specs": {"errors", "shares"},
    "ecdsa": {"errors", "shares", "specs"},
    "protocols": {"ecdsa", "errors", "shares", "specs"},
    "ceremonies": {
        "anchor",
        "ecdsa",
        "errors",
        "faults",
        "logs",
        "protocols",
        "shares",
        "specs",
        "vault",
    },
    "sessions": {
        "anchor",
        "envelope",
        "errors",
        "identity",
        "logs",
        "protocols",
        "specs",
        "store",
    },
    "taproot": {"errors"},
    "pipeline": {
        "anchor",
        "pool",
        "ecdsa",
        "errors",
        "faults",
        "logs",
        "policy",
        "protocols",
        "shares",
        "specs",
        "store",
        "taproot",
        "velocity",
    },
    "service": {"envelope", "errors", "logs", "metrics", "node", "pipeline", "specs"},
    "backup": {"errors", "logs", "node", "protocols"},
    "cli": {"backup", "config", "errors", "logs", "node", "store", "service"},
    "__main__": {"cli"},
    "__init__": set(),
}
LAZY_OK = {("cli.py", "run")}  # starts the web stack only for `run` (commented there)


def _modules() -> list[Path]:
    files = sorted(ROOT.glob("*.py"))
    assert files
    return files


def _own_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "signer_nodes":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".")[1] for a in node.names if a.name.startswith("signer_nodes.")
            )
    return found


def test_each_module_imports_only_what_its_row_allows() -> None:
    """The table in signer-nodes/__init__.py; ``node`` may import all but service/cli."""
    bad = {}
    for f in _modules():
        mod = f.stem
        allowed = (
            {m.stem for m in _modules()} - {"node", "service", "cli", "__main__", "__init__"}
            if mod == "node"
            else MAY_IMPORT[mod]
        )
        extra = _own_imports(f) - allowed - {mod}
        if extra:
            bad[mod] = sorted(extra)
    assert bad == {}


def test_no_import_inside_a_function() -> None:
    found = []
    for f in _modules():
        for fn in ast.walk(ast.parse(f.read_text())):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if (
                    isinstance(node, ast.Import | ast.ImportFrom)
                    and (f.name, fn.name) not in LAZY_OK
                ):
                    found.append(f"{f.name}:{node.lineno} in {fn.name}()")
    assert found == []
    cli = (ROOT / "cli.py").read_text()
    assert "Lazy on purpose" in cli


def test_no_crash_point_in_production_code() -> None:
    for f in _modules():
        src = f.read_text()
        assert "os._exit" not in src, f.name
        assert "CRASH" not in src, f.name
        assert "crash_point" not in src, f.name


def test_no_reach_into_private_members() -> None:
    """``x._name`` only on ``self``/``cls`` (a module's own objects)."""
    found = []
    for f in _modules():
        for node in ast.walk(ast.parse(f.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{f.name} .{node.attr}")
    assert found == [], found


def test_one_signing_pipeline() -> None:
    """The release log is appended in exactly one place, and only the pipeline calls it."""
    callers = [
        f.name
        for f in _modules()
        if "release_many(" in f.read_text() and f.name not in ("store.py",)
    ]
    assert callers == ["pipeline.py"], callers
    assert "authorize(" in (ROOT / "pipeline.py").read_text()
    others = [f.name for f in _modules() if "authorize(" in f.read_text()]
    assert sorted(others) == ["pipeline.py", "policy.py"], others
