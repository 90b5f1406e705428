"""Protocol messages and their canonical CBOR encoding (RFC 8949 section 4.2.1).

A :class:`Message` is what one protocol object hands to another: the protocol name, the
session id that binds every proof and hash, the round, the sender, the recipient (``None``
for a broadcast) and a payload map. Encryption and signatures are added by the node's
envelope layer (``signer_nodes``); this module is pure data.

Decoding is strict: the envelope must be exactly ``[version, protocol, session_id, round,
sender, recipient, payload]`` with the right types, and :func:`decode` raises only
:class:`~mpc.errors.DecodeError`, naming the field and (when known) the sending party.

Round payloads: one codec
    Each protocol round's payload is a frozen dataclass whose fields are declared with
    :func:`raw`, :func:`scalar`, :func:`point`, :func:`points`, :func:`scalars` or
    :func:`digests`. :func:`encode_payload` turns one into the payload map (CBOR values:
    byte strings and arrays of them); :func:`decode_payload` is the only way back and is
    strict: the map must have exactly the declared fields (a missing one is named first,
    then an unexpected one, each in sorted order), each of the declared type and length,
    scalars canonical (and non-zero unless declared otherwise), points on the curve, in the
    subgroup and not the identity. Every error is a :class:`DecodeError` naming the field
    (``name[k]`` for an element of an array) and the sending party. Counts that depend on
    the session (``t`` commitments, ``n`` echo digests) are declared by name and given to
    :func:`decode_payload` in ``sizes``.

The field helpers (:func:`take_bytes`, :func:`take_scalar`, :func:`take_point`) give
code outside round payloads (storage formats) the same strictness.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

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
    "take_scalar",
    "take_point",
    "SecretBytes",
    "raw",
    "scalar",
    "point",
    "points",
    "scalars",
    "digests",
    "encode_payload",
    "decode_payload",
    "exact_fields",
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

    def no_tags(*args: Any) -> Any:
        # cbor2 5 calls tag_hook(decoder, tag), cbor2 6 tag_hook(tag, immutable)
        tag = next((a for a in args if isinstance(a, cbor2.CBORTag)), None)
        number = tag.tag if tag is not None else "?"
        raise DecodeError(f"CBOR tag {number} not allowed", field=what, party=party)

    try:
        obj = cbor2.loads(bytes(data), tag_hook=no_tags)
    except DecodeError:
        raise
    except Exception as exc:  # cbor2 raises several types (and RecursionError) on bad input
        # cbor2 wraps an error raised by the tag hook in its own CBORDecodeError: report ours
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, DecodeError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, DecodeError):
            raise cause from None
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


def take_bytes(
    payload: Mapping[str, Any], name: str, party: int | None, *, length: int | None = None
) -> bytes:
    value = payload.get(name) if isinstance(payload, Mapping) else None
    if not isinstance(value, bytes):
        raise DecodeError("expected a byte string", field=name, party=party)
    if length is not None and len(value) != length:
        raise DecodeError(f"expected {length} bytes, got {len(value)}", field=name, party=party)
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


# -- round payloads: declared fields, one strict codec -----------------------------------

_SPEC = "mpc.wire"
Count = int | str | None
P = TypeVar("P")


class SecretBytes(bytes):
    """Bytes of a secret (a share) in an outgoing payload: CBOR-encodes as bytes, never repr'd."""

    def __repr__(self) -> str:
        return f"<secret {len(self)} bytes>"


@dataclass(frozen=True)
class _Spec:
    kind: Literal["bytes", "scalar", "point", "points", "scalars", "digests"]
    count: Count = None  # byte length ("bytes"), element count (arrays); str: from sizes
    size: int | None = None  # byte length of each digest
    allow_zero: bool = False
    secret: bool = False


def _declare(spec: _Spec) -> Any:
    return field(metadata={_SPEC: spec}, repr=not spec.secret)


def raw(length: Count = None, *, secret: bool = False) -> Any:
    """A byte string of exactly ``length`` bytes (any length if ``None``)."""
    return _declare(_Spec("bytes", length, secret=secret))


def scalar(*, allow_zero: bool = False, secret: bool = False) -> Any:
    """A canonical scalar of the payload's group, decoded to ``int``."""
    return _declare(_Spec("scalar", allow_zero=allow_zero, secret=secret))


def point() -> Any:
    """A group element (strict: on the curve, in the subgroup, not the identity)."""
    return _declare(_Spec("point"))


def points(count: Count) -> Any:
    """An array of exactly ``count`` group elements, decoded to a tuple of points."""
    return _declare(_Spec("points", count))


def scalars(count: Count, *, allow_zero: bool = False) -> Any:
    """An array of exactly ``count`` canonical scalars, decoded to a tuple of ints."""
    return _declare(_Spec("scalars", count, allow_zero=allow_zero))


def digests(count: Count, size: int) -> Any:
    """An array of exactly ``count`` byte strings of ``size`` bytes each."""
    return _declare(_Spec("digests", count, size=size))


def _specs(cls: type) -> list[tuple[str, _Spec]]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a payload dataclass")
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_SPEC)
        if not isinstance(spec, _Spec):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with mpc.wire")
        out.append((f.name, spec))
    return out


def encode_payload(obj: Any, group: Group) -> dict[str, Any]:
    """The payload map of a round-payload dataclass (its wire form inside a Message)."""
    out: dict[str, Any] = {}
    for name, spec in _specs(type(obj)):
        v = getattr(obj, name)
        if spec.kind == "bytes":
            enc: Any = bytes(v)
        elif spec.kind == "scalar":
            enc = group.encode_scalar(v)
        elif spec.kind == "point":
            enc = v.encode()
        elif spec.kind == "points":
            enc = [p.encode() for p in v]
        elif spec.kind == "scalars":
            enc = [group.encode_scalar(x) for x in v]
        else:
            enc = [bytes(d) for d in v]
        out[name] = SecretBytes(enc) if spec.secret else enc
    return out


def exact_fields(
    obj: Any,
    expected: set[str] | frozenset[str],
    *,
    party: int | None,
    what: str = "payload",
    prefix: str = "",
) -> Mapping[str, Any]:
    """The field-set rule of every map we decode: exactly ``expected``, named when not.

    A non-map is refused as ``what``; otherwise the first missing field (sorted), then the
    first unexpected one, is named (``prefix + name``) in the :class:`DecodeError`.
    """
    if not isinstance(obj, Mapping):
        raise DecodeError(f"{what} must be a map", field=what, party=party)
    keys = set(obj)
    missing = sorted(expected - keys)
    if missing:
        raise DecodeError("missing field", field=prefix + missing[0], party=party)
    extra = sorted(str(k) for k in keys - expected)
    if extra:
        raise DecodeError("unexpected field", field=prefix + extra[0], party=party)
    return obj


def _count(spec: _Spec, sizes: Mapping[str, int]) -> int | None:
    if isinstance(spec.count, str):
        return sizes[spec.count]
    return spec.count


def _array(value: Any, name: str, party: int | None, count: int | None) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError("expected an array", field=name, party=party)
    if count is not None and len(value) != count:
        raise DecodeError(
            f"expected exactly {count} elements, got {len(value)}", field=name, party=party
        )
    return value


def decode_payload(
    cls: type[P],
    payload: Any,
    *,
    group: Group,
    party: int | None,
    sizes: Mapping[str, int] | None = None,
) -> P:
    """Strictly decode ``payload`` (a Message's map) into ``cls``; see the module docstring."""
    specs = _specs(cls)
    sizes = sizes or {}
    exact_fields(payload, {name for name, _ in specs}, party=party)
    values: dict[str, Any] = {}
    for name, spec in specs:
        v = payload[name]
        n = _count(spec, sizes)
        if spec.kind == "bytes":
            values[name] = take_bytes(payload, name, party, length=n)
        elif spec.kind == "scalar":
            values[name] = scalar_from(group, v, name, party, allow_zero=spec.allow_zero)
        elif spec.kind == "point":
            values[name] = point_from(group, v, name, party)
        elif spec.kind == "points":
            items = _array(v, name, party, n)
            values[name] = tuple(
                point_from(group, e, f"{name}[{k}]", party) for k, e in enumerate(items)
            )
        elif spec.kind == "scalars":
            items = _array(v, name, party, n)
            values[name] = tuple(
                scalar_from(group, e, f"{name}[{k}]", party, allow_zero=spec.allow_zero)
                for k, e in enumerate(items)
            )
        else:
            items = _array(v, name, party, n)
            for k, d in enumerate(items):
                if not isinstance(d, bytes) or len(d) != spec.size:
                    raise DecodeError(
                        f"expected a {spec.size}-byte digest", field=f"{name}[{k}]", party=party
                    )
            values[name] = tuple(bytes(d) for d in items)
    return cls(**values)
