"""Bytecode for the test session's child processes (docs/PERFORMANCE.md "CPU hot spots").

Where the environment sets ``PYTHONDONTWRITEBYTECODE`` (this machine does), no process writes
``__pycache__`` and the checkout has none: every process the suite starts (each signer node,
coordinator, ``api init``, CLI run) compiles every module of ours it
imports from source again. Measured: a node's imports take 1.39 s of CPU without bytecode
and 0.85 s with it; the coordinator's 3.23 s and 2.39 s.

:func:`let_children_keep_bytecode` drops ``PYTHONDONTWRITEBYTECODE`` from the environment the
session's children (and xdist workers) inherit, so they do what Python does by default: the
first to import a module of ours writes its ``__pycache__`` (git-ignored) and the others,
in this run and the next, read it. The site-packages already hold theirs (pip compiles on
install). A private ``PYTHONPYCACHEPREFIX`` instead was measured and rejected: it moves the
site-packages' bytecode too, so every run compiled ~1,500 installed modules again and a
one-cluster module cost more CPU, not less. The pytest process itself is unchanged (its
flags were read at start-up); bytecode is invalidated by the source's mtime and size as
usual, so an edited module is compiled again.
"""

from __future__ import annotations

import os


def let_children_keep_bytecode() -> bool:
    """Let this process's future children write and read ``__pycache__``; True if the
    environment had forbidden it (see the module docstring)."""
    return os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None
