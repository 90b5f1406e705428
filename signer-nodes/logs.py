"""Structured JSON logs for the node: one object per line on stderr.

Callers pass only public values (ids, party numbers, reason codes, counts). Nothing in the
node ever logs a share, nonce, key, PIN or plaintext payload; :func:`event` additionally
drops any field whose name suggests a secret, as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_LOGGER = logging.getLogger("signer_nodes")
_SECRET_WORDS = ("secret", "share_value", "seed", "pin", "private", "nonces", "db_key", "password")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        return json.dumps(
            {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "event": record.getMessage(),
                **fields,
            },
            default=str,
            sort_keys=True,
        )


def setup(level: int = logging.INFO) -> None:
    """Send node logs as JSON lines to stderr (idempotent)."""
    if any(getattr(h, "_tpwc", False) for h in _LOGGER.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    handler._tpwc = True  # type: ignore[attr-defined]
    _LOGGER.addHandler(handler)
    _LOGGER.setLevel(level)
    _LOGGER.propagate = False


def event(name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event; secret-looking field names are dropped."""
    clean = {k: v for k, v in fields.items() if not any(w in k.lower() for w in _SECRET_WORDS)}
    _LOGGER.log(level, name, extra={"fields": clean})


def warn(name: str, **fields: Any) -> None:
    event(name, level=logging.WARNING, **fields)
