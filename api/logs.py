"""The coordinator's logs: a thin wrapper over :mod:`custody.obs` (the one schema both
services write; see its docstring and docs/OPERATIONS.md).

Never logged: tokens, request bodies, messages to sign. Logged: method, path, route,
status, duration, ``http_request_id``, ``credential_id``, ``sign_request_id``, trace ids,
and domain events with ids. ``logging.getLogger(...)`` callers with ``extra={...}`` keep
working: their extras become fields of the JSON line.
"""

from __future__ import annotations

from typing import Any

from custody import obs
from custody.obs import HttpObserve

__all__ = ["configure", "RequestLog", "HttpObserve", "event", "info", "warn"]

_log = obs.get_logger("api")


def configure(level: str = "INFO") -> None:
    """JSON lines on stderr for every logger of the coordinator process; tracing on."""
    obs.configure_logging("coordinator", level)
    obs.configure_tracing("coordinator")


#: The request-log middleware (kept under its old name).
RequestLog = HttpObserve


def event(name: str, *, level: int = 20, **fields: Any) -> None:
    """Log one structured event (secret-looking field names are dropped)."""
    _log.log(level, name, **fields)


def info(name: str, **fields: Any) -> None:
    event(name, **fields)


def warn(name: str, **fields: Any) -> None:
    event(name, level=30, **fields)
