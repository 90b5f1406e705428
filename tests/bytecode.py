"""Bytecode the test session's child processes share (docs/PERFORMANCE.md "CPU hot spots").

Where the environment sets ``PYTHONDONTWRITEBYTECODE`` (this machine does), no process writes
``__pycache__``, and the repository has none: every process the suite starts (each signer
node, coordinator, ``api init``, CLI run: hundreds per run) compiles every module of ours it
imports from source again. Measured: a node's imports take 1.39 s of CPU without bytecode
and 0.85 s with it; the coordinator's 3.23 s and 2.39 s.

:func:`share_with_children` gives the children (and xdist workers) of this session one
private bytecode cache instead: ``PYTHONPYCACHEPREFIX`` names a fresh 0700 temp directory
(removed when the session ends) and ``PYTHONDONTWRITEBYTECODE`` is dropped from their
environment, so the first process to import a module compiles it and the others read it.
Nothing is written to the checkout or the virtualenv, and the pytest process itself is
unchanged (its flags were read at start-up). Bytecode is invalidated by the source's
mtime and size as usual, so an edited module is compiled again. Where bytecode is already
written (the variable unset) or a prefix is already chosen, nothing changes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def share_with_children() -> str | None:
    """Point this process's future children at one shared bytecode cache; its path, or
    None when the environment already lets them keep bytecode (see the module docstring)."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return None
    prefix = tempfile.mkdtemp(prefix="custody-pycache-")  # mode 0700, ours alone
    atexit.register(shutil.rmtree, prefix, ignore_errors=True)
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    return prefix
