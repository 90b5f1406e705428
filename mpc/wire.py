"""Protocol messages and their canonical CBOR encoding (RFC 8949 section 4.2.1).

A :class:`Message` is what one protocol object hands to another: the protocol name, the
session id that binds every proof and hash, the round, the sender, the recipient (``None``
for a broadcast) and a payload map. Encryption and signatures are added by the node's
envelope layer (``signer_nodes``); this module is pure data.

Decoding is strict: the envelope must be exactly ``[version, protocol, session_id, round,
sender, recipient, payload]`` with the right types, and :func:`decode` raises only
:class:`~mpc.errors.DecodeError`, naming the field and (when known) the sending party. The
payload helpers (:func:`take_bytes`, :func:`take_scalar`, :func:`take_point`, ...) give
protocol code the same strictness for payload fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from mpc.errors import DecodeError, EncodingError
from mpc.groups import Group, Point

__all__ = [
    "WIRE_VERSION",
    "SESSION_ID_LEN",
    "Message",
    "encode",
    "decode",
    "cbor_dumps",
    "cbor_loads",
    "take_bytes",
    "take_int",
    "take_scalar",
    "take_point",
    "take_list",
    "take_map",
]

WIRE_VERSION = 1
SESSION_ID_LEN = 32
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Message:
    """One protocol message. ``recipient is None`` means broadcast to every other party."""

    protocol: str
    session_id: bytes
    round: int
    sender: int
    recipient: int | None
    # Payloads of direct messages carry secret shares: never in repr or logs.
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False)


def cbor_dumps(obj: Any) -> bytes:
    """Canonical CBOR (deterministic map order, shortest integer forms)."""
    return cbor2.dumps(obj, canonical=True)


def cbor_loads(data: bytes, *, what: str = "message", party: int | None = None) -> Any:
    """Decode CBOR, turning every library error into :class:`DecodeError`; tags are refused."""
    if not isinstance(data, bytes | bytearray):
        raise DecodeError("expected bytes", field=what, party=party)
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError("message too large", field=what, party=party)

    def no_tags(decoder: Any, tag: Any) -> Any:
        raise DecodeError(f"CBOR tag {tag.tag} not allowed", field=what, party=party)

    try:
        obj = cbor2.loads(bytes(data), tag_hook=no_tags)
    except DecodeError:
        raise
    except Exception as exc:  # cbor2 raises several types (and RecursionError) on bad input
        raise DecodeError(f"invalid CBOR ({type(exc).__name__})", field=what, party=party) from None
    # Only the canonical encoding of a value is accepted (RFC 8949 section 4.2.1): this
    # refuses indefinite lengths, non-shortest integers, unsorted or duplicate map keys and
    # every semantic tag that cbor2 decodes natively (bignums, dates, self-describe), so one
    # value has exactly one accepted byte string.
    try:
        canonical = cbor_dumps(obj)
    except Exception:
        canonical = b""
    if canonical != bytes(data):
        raise DecodeError("CBOR is not in canonical form", field=what, party=party)
    return obj


def _ident(value: Any, name: str, party: int | None) -> int:
    if type(value) is not int or not (1 <= value < 2**16):
        raise DecodeError(
            "participant identifier must be an integer in [1, 65535]", field=name, party=party
        )
    return value


def encode(msg: Message) -> bytes:
    """Encode a message as canonical CBOR."""
    return cbor_dumps(
        [
            WIRE_VERSION,
            msg.protocol,
            msg.session_id,
            msg.round,
            msg.sender,
            msg.recipient,
            dict(msg.payload),
        ]
    )


def decode(
    data: bytes,
    *,
    protocol: str | None = None,
    session_id: bytes | None = None,
) -> Message:
    """Strictly decode a message; optionally require its protocol and session id."""
    obj = cbor_loads(data)
    if not isinstance(obj, list) or len(obj) != 7:
        raise DecodeError("envelope must be a 7-element array", field="envelope")
    version, proto, sid, rnd, sender, recipient, payload = obj
    party = sender if type(sender) is int else None
    if version != WIRE_VERSION or type(version) is not int:
        raise DecodeError(f"unsupported wire version {version!r}", field="version", party=party)
    if not isinstance(proto, str) or not proto or len(proto) > 64:
        raise DecodeError("protocol must be a non-empty string", field="protocol", party=party)
    if protocol is not None and proto != protocol:
        raise DecodeError(
            f"expected protocol {protocol!r}, got {proto!r}", field="protocol", party=party
        )
    if not isinstance(sid, bytes) or len(sid) != SESSION_ID_LEN:
        raise DecodeError(
            f"session id must be {SESSION_ID_LEN} bytes", field="session_id", party=party
        )
    if session_id is not None and sid != session_id:
        raise DecodeError("message belongs to another session", field="session_id", party=party)
    if type(rnd) is not int or not (0 <= rnd < 256):
        raise DecodeError("round must be an integer in [0, 255]", field="round", party=party)
    _ident(sender, "sender", party)
    if recipient is not None:
        _ident(recipient, "recipient", party)
    if not isinstance(payload, dict) or not all(isinstance(k, str) for k in payload):
        raise DecodeError("payload must be a map with string keys", field="payload", party=party)
    return Message(proto, sid, rnd, sender, recipient, payload)


# -- payload field helpers ---------------------------------------------------------------


def take_map(payload: Mapping[str, Any], name: str, party: int | None) -> Mapping[str, Any]:
    value = payload.get(name) if isinstance(payload, Mapping) else None
    if not isinstance(value, dict):
        raise DecodeError("expected a map", field=name, party=party)
    return value


def take_bytes(
    payload: Mapping[str, Any], name: str, party: int | None, *, length: int | None = None
) -> bytes:
    value = payload.get(name) if isinstance(payload, Mapping) else None
    if not isinstance(value, bytes):
        raise DecodeError("expected a byte string", field=name, party=party)
    if length is not None and len(value) != length:
        raise DecodeError(f"expected {length} bytes, got {len(value)}", field=name, party=party)
    return value


def take_int(
    payload: Mapping[str, Any], name: str, party: int | None, *, lo: int = 0, hi: int = 2**32
) -> int:
    value = payload.get(name) if isinstance(payload, Mapping) else None
    if type(value) is not int or not (lo <= value <= hi):
        raise DecodeError(f"expected an integer in [{lo}, {hi}]", field=name, party=party)
    return value


def take_list(
    payload: Mapping[str, Any], name: str, party: int | None, *, length: int | None = None
) -> list[Any]:
    value = payload.get(name) if isinstance(payload, Mapping) else None
    if not isinstance(value, list):
        raise DecodeError("expected an array", field=name, party=party)
    if length is not None and len(value) != length:
        raise DecodeError(f"expected {length} elements, got {len(value)}", field=name, party=party)
    return value


def scalar_from(
    group: Group, value: Any, name: str, party: int | None, *, allow_zero: bool = False
) -> int:
    """Strictly decode a scalar value already taken from a payload."""
    if not isinstance(value, bytes):
        raise DecodeError("expected a scalar byte string", field=name, party=party)
    try:
        return group.decode_scalar(value, allow_zero=allow_zero)
    except EncodingError as exc:
        raise DecodeError(str(exc), field=name, party=party) from None


def point_from(group: Group, value: Any, name: str, party: int | None) -> Point:
    """Strictly decode a group element already taken from a payload (identity refused)."""
    if not isinstance(value, bytes):
        raise DecodeError("expected an element byte string", field=name, party=party)
    try:
        return group.decode_point(value)
    except EncodingError as exc:
        raise DecodeError(str(exc), field=name, party=party) from None


def take_scalar(
    group: Group,
    payload: Mapping[str, Any],
    name: str,
    party: int | None,
    *,
    allow_zero: bool = False,
) -> int:
    return scalar_from(
        group,
        payload.get(name) if isinstance(payload, Mapping) else None,
        name,
        party,
        allow_zero=allow_zero,
    )


def take_point(group: Group, payload: Mapping[str, Any], name: str, party: int | None) -> Point:
    return point_from(
        group, payload.get(name) if isinstance(payload, Mapping) else None, name, party
    )
