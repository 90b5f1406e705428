"""Structured JSON logs for the node: a thin wrapper over :mod:`custody.obs`, the one
schema the coordinator writes too (one object per line on stderr; docs/OPERATIONS.md).

Callers pass only public values (ids, party numbers, reason codes, counts). Nothing in the
node ever logs a share, nonce, key, PIN or plaintext payload; the schema additionally
drops any field whose name suggests a secret, as a second line of defence. A
``request_id`` field (the sign request's id) is written as ``sign_request_id``.
"""

from __future__ import annotations

import logging
from typing import Any

from custody import obs

_LOGGER = obs.get_logger("signer_nodes")


def setup(level: int | str | None = None) -> None:
    """Send every log of this process as JSON lines to stderr (idempotent)."""
    obs.configure_logging("node", level)


def bind_node(node_id: str) -> None:
    """Write ``node_id`` on every line of this process from now on; start tracing (its
    spans name the node)."""
    obs.bind_static(node_id=node_id)
    obs.configure_tracing("node", node_id=node_id)


def event(name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event; secret-looking field names are dropped."""
    _LOGGER.log(level, name, **fields)


def info(name: str, **fields: Any) -> None:
    event(name, **fields)


def warn(name: str, **fields: Any) -> None:
    event(name, level=logging.WARNING, **fields)
