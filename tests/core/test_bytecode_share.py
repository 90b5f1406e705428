"""tests/bytecode.py: the session's children keep bytecode where the environment forbade it,
and nothing changes where it did not."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import bytecode


def test_children_write_then_read_bytecode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    assert bytecode.let_children_keep_bytecode() is True
    assert "PYTHONDONTWRITEBYTECODE" not in os.environ
    (tmp_path / "probe_mod.py").write_text("VALUE = 7\n")
    pyc = Path(importlib.util.cache_from_source(str(tmp_path / "probe_mod.py")))
    code = "import probe_mod; assert probe_mod.VALUE == 7"
    run = [sys.executable, "-c", code]
    subprocess.run(run, check=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})  # noqa: S603
    assert pyc.is_file()
    mtime = pyc.stat().st_mtime_ns
    subprocess.run(run, check=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})  # noqa: S603
    assert pyc.stat().st_mtime_ns == mtime  # read, not written again


def test_a_child_of_the_old_environment_wrote_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The control: with the variable kept, the same child leaves no bytecode."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    (tmp_path / "probe_mod.py").write_text("VALUE = 7\n")
    pyc = Path(importlib.util.cache_from_source(str(tmp_path / "probe_mod.py")))
    subprocess.run(  # noqa: S603
        [sys.executable, "-c", "import probe_mod"],
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert not pyc.exists()


def test_nothing_changes_where_bytecode_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    assert bytecode.let_children_keep_bytecode() is False
    assert "PYTHONDONTWRITEBYTECODE" not in os.environ
