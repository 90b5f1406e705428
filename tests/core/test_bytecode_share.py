"""tests/bytecode.py: the session's children share one bytecode cache where the environment
forbids writing bytecode, and nothing changes where it does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import bytecode

ROOT = Path(__file__).resolve().parents[2]


def _child_import(module: str) -> None:
    subprocess.run(  # noqa: S603 - our interpreter, constant code
        [sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT, env=dict(os.environ)
    )


def test_children_write_then_read_one_private_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    prefix = bytecode.share_with_children()
    assert prefix is not None
    assert os.environ["PYTHONPYCACHEPREFIX"] == prefix
    assert "PYTHONDONTWRITEBYTECODE" not in os.environ
    assert Path(prefix).stat().st_mode & 0o777 == 0o700
    _child_import("mpc.dkls23._zq")
    cached = list(Path(prefix).rglob("_zq.cpython-*.pyc"))
    assert len(cached) == 1, cached
    mtime = cached[0].stat().st_mtime_ns
    _child_import("mpc.dkls23._zq")  # read, not written again
    assert cached[0].stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    ("dont_write", "prefix"), [(None, None), ("1", "/somewhere/else"), (None, "/elsewhere")]
)
def test_nothing_changes_where_bytecode_is_kept_or_placed(
    monkeypatch: pytest.MonkeyPatch, dont_write: str | None, prefix: str | None
) -> None:
    for name, value in (("PYTHONDONTWRITEBYTECODE", dont_write), ("PYTHONPYCACHEPREFIX", prefix)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert bytecode.share_with_children() is None
    assert os.environ.get("PYTHONDONTWRITEBYTECODE") == dont_write
    assert os.environ.get("PYTHONPYCACHEPREFIX") == prefix
