"""What every kind shares: the typed error, the decoded intent, strict payload accessors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["KindError", "Intent", "field", "hex_bytes", "only_fields"]

_HEX: Final = re.compile(r"^0x(?:[0-9a-fA-F]{2})*$")


class KindError(ValueError):
    """A payload of ``kind`` is refused; ``field`` names the offending field (a dotted path
    into the payload such as ``tx.to`` or ``psbt.inputs[1].witness_utxo``), ``detail`` says
    why. The only exception a decoder raises."""

    def __init__(self, kind: str, field: str, detail: str) -> None:
        self.kind = kind
        self.field = field
        self.detail = detail
        super().__init__(f"{kind}: field {field!r}: {detail}")


@dataclass(frozen=True)
class Intent:
    """A decoded request: what it does (``summary``, plain JSON for policies and approvers)
    and the exact messages the key signs for it (``messages``, one per signature, in order).
    Each kind's subclass adds typed fields."""

    kind: str
    messages: tuple[bytes, ...]

    def summary(self) -> dict[str, Any]:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


def only_fields(
    kind: str, payload: object, allowed: set[str], required: set[str]
) -> Mapping[str, Any]:
    """``payload`` as a mapping holding every ``required`` and no field outside ``allowed``."""
    if not isinstance(payload, Mapping):
        raise KindError(kind, "payload", "must be an object")
    for key in payload:
        if not isinstance(key, str) or key not in allowed:
            raise KindError(kind, str(key)[:40] or "payload", "unknown field")
    for key in sorted(required):
        if key not in payload:
            raise KindError(kind, key, "missing")
    return payload


def field(kind: str, payload: Mapping[str, Any], name: str, typ: type, max_len: int) -> Any:
    value = payload.get(name)
    if not isinstance(value, typ) or isinstance(value, bool):
        raise KindError(kind, name, f"must be a {typ.__name__}")
    if isinstance(value, str | bytes) and len(value) > max_len:
        raise KindError(kind, name, f"longer than {max_len} characters")
    return value


def hex_bytes(kind: str, name: str, value: object, max_bytes: int) -> bytes:
    """``0x``-prefixed hex (either case) of at most ``max_bytes`` bytes."""
    if not isinstance(value, str):
        raise KindError(kind, name, "must be a 0x-prefixed hex string")
    if len(value) > 2 + 2 * max_bytes:
        raise KindError(kind, name, f"longer than {max_bytes} bytes")
    if not _HEX.fullmatch(value):  # fullmatch: "$" alone also matches before a final "\n"
        raise KindError(kind, name, "must be 0x-prefixed hex with an even number of digits")
    return bytes.fromhex(value[2:])
