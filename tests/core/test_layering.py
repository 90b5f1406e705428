"""Imports flow one way (DESIGN.md, Layout): each package imports only what its row allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"mpc", "hsm", "custody", "signer_nodes", "api", "payments", "simulations"}
ALLOWED = {
    "mpc": set(),
    "hsm": set(),
    "custody": {"mpc"},
    "signer_nodes": {"mpc", "hsm", "custody"},
    "api": {"mpc", "hsm", "custody"},
    "payments": {"custody"},
}
FOLDER = {"signer_nodes": "signer-nodes"}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    folder = ROOT / FOLDER.get(package, package)
    files = sorted(folder.rglob("*.py"))
    assert files, f"{folder} has no Python files"
    offending = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) - ALLOWED[package] - {package})
        for f in files
    }
    assert {f: bad for f, bad in offending.items() if bad} == {}


def test_mpc_does_no_io() -> None:
    """Protocol code is sans-IO: no sockets, threads, clocks, files or subprocesses in mpc/."""
    banned = {"socket", "threading", "asyncio", "time", "subprocess", "os", "httpx", "io"}
    banned |= {"pathlib", "shutil"}
    for f in sorted((ROOT / "mpc").rglob("*.py")):
        tree = ast.parse(f.read_text())
        mods: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
                pytest.fail(f"{f.relative_to(ROOT)} calls open()")
        assert not (mods & banned), f"{f.relative_to(ROOT)} imports {sorted(mods & banned)}"
