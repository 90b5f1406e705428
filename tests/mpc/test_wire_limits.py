"""mpc/wire.py envelope limits on both sides, each refusal naming the field and the sender.

Every protocol message a node accepts passes :func:`mpc.wire.decode` first; a limit moved
by one (a round of 256, a protocol name of 65 characters, a 4 MiB message plus one byte)
or a check dropped would let a peer send what the other nodes read differently.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cbor2
import pytest

from mpc.errors import DecodeError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.wire import (
    MAX_MESSAGE_BYTES,
    Message,
    cbor_loads,
    decode,
    decode_payload,
    encode,
    encode_payload,
    point,
    raw,
    scalar,
    scalars,
    take_bytes,
    take_point,
    take_scalar,
)

SID = bytes(range(32))


def envelope(**over: Any) -> list[Any]:
    fields = {
        "version": 1,
        "protocol": "frost-dkg",
        "sid": SID,
        "round": 1,
        "sender": 2,
        "recipient": None,
        "payload": {"a": b"x"},
    }
    fields.update(over)
    return list(fields.values())


def refused(obj: Any, field: str, match: str, party: int | None = 2, **kw: Any) -> None:
    with pytest.raises(DecodeError, match=match) as exc:
        decode(cbor2.dumps(obj, canonical=True), **kw)
    assert exc.value.field == field and exc.value.party == party, str(exc.value)


def test_an_honest_envelope_round_trips() -> None:
    m = Message("frost-dkg", SID, 1, 2, None, {"a": b"x"})
    assert decode(encode(m)) == m
    assert decode(encode(m), protocol="frost-dkg", session_id=SID) == m
    assert encode(m) == cbor2.dumps([1, "frost-dkg", SID, 1, 2, None, {"a": b"x"}], canonical=True)


def test_envelope_shape_and_version() -> None:
    refused(envelope()[:6], "envelope", "7-element array", None)
    refused({"a": 1}, "envelope", "7-element array", None)
    for v in (2, 0, True, "1"):
        refused(envelope(version=v), "version", "unsupported wire version")


def test_protocol_name_is_one_to_64_characters_and_the_expected_one() -> None:
    assert decode(cbor2.dumps(envelope(protocol="p" * 64), canonical=True)).protocol == "p" * 64
    for bad in ("", "p" * 65, b"frost-dkg", 7):
        refused(envelope(protocol=bad), "protocol", "protocol must be a non-empty string")
    refused(envelope(), "protocol", "expected protocol 'frost-refresh'", protocol="frost-refresh")


def test_session_id_is_32_bytes_and_the_expected_one() -> None:
    for bad in (SID[:31], SID + b"\x00", SID.hex()):
        refused(envelope(sid=bad), "session_id", "session id must be 32 bytes")
    refused(envelope(), "session_id", "another session", session_id=bytes(32))


def test_round_is_0_to_255() -> None:
    for ok in (0, 255):
        assert decode(cbor2.dumps(envelope(round=ok), canonical=True)).round == ok
    for bad in (256, -1, True, "1"):
        refused(envelope(round=bad), "round", r"round must be an integer in \[0, 255\]")


def test_sender_and_recipient_are_identifiers() -> None:
    for ok in (1, 65535):
        m = decode(cbor2.dumps(envelope(sender=ok, recipient=ok), canonical=True))
        assert m.sender == ok and m.recipient == ok
    for bad in (0, 65536, -3):
        refused(envelope(sender=bad), "sender", "participant identifier", bad)
        refused(envelope(recipient=bad), "recipient", "participant identifier")
    refused(envelope(sender="2"), "sender", "participant identifier", None)
    refused(envelope(sender=True), "sender", "participant identifier", None)


def test_payload_is_a_map_with_string_keys() -> None:
    for bad in ([1], {1: b"x"}, {"a": 1, 2: b"x"}, b"x"):
        refused(envelope(payload=bad), "payload", "payload must be a map with string keys")


def test_message_size_limit_sits_at_4_mib() -> None:
    assert MAX_MESSAGE_BYTES == 4 * 1024 * 1024
    at_limit = cbor2.dumps(b"\x00" * (MAX_MESSAGE_BYTES - 5))  # 0x5a + 4-byte length
    assert len(at_limit) == MAX_MESSAGE_BYTES
    assert len(cbor_loads(at_limit)) == MAX_MESSAGE_BYTES - 5
    over = cbor2.dumps(b"\x00" * (MAX_MESSAGE_BYTES - 4))
    with pytest.raises(DecodeError, match="message too large") as exc:
        cbor_loads(over, what="env", party=4)
    assert exc.value.field == "env" and exc.value.party == 4


def test_cbor_tags_non_canonical_and_garbage_are_refused_by_name() -> None:
    for tag_number in (24, 1000):
        with pytest.raises(DecodeError, match=f"CBOR tag {tag_number} not allowed") as tag:
            cbor_loads(cbor2.dumps(cbor2.CBORTag(tag_number, b"x")), what="m", party=3)
        assert tag.value.party == 3 and tag.value.field == "m"
    with pytest.raises(DecodeError, match="not in canonical form"):
        cbor_loads(b"\x18\x01")  # 1 encoded in two bytes
    with pytest.raises(DecodeError, match="invalid CBOR"):
        cbor_loads(b"\xff\xff")
    with pytest.raises(DecodeError, match="expected bytes"):
        cbor_loads("text")  # type: ignore[arg-type]


def test_take_bytes_checks_type_and_length() -> None:
    assert take_bytes({"k": b"abc"}, "k", 1, length=3) == b"abc"
    assert take_bytes({"k": b""}, "k", 1) == b""
    with pytest.raises(DecodeError, match="expected 4 bytes, got 3") as exc:
        take_bytes({"k": b"abc"}, "k", 5, length=4)
    assert exc.value.field == "k" and exc.value.party == 5
    for bad in ({"k": "abc"}, {}, [b"abc"]):
        with pytest.raises(DecodeError, match="expected a byte string"):
            take_bytes(bad, "k", 5)  # type: ignore[arg-type]


def test_a_message_never_shows_its_payload_and_cannot_be_altered() -> None:
    # Direct payloads carry secret shares: a repr (a log line, a traceback) must not show them.
    secret = bytes(range(100, 132))
    m = Message("frost-dkg", SID, 2, 1, 3, {"share": secret})
    assert secret.hex() not in repr(m) and repr(secret) not in repr(m) and "share" not in repr(m)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.round = 3  # type: ignore[misc]


# -- round payloads: the declared defaults are the strict ones -------------------------------


@dataclasses.dataclass(frozen=True)
class _Example:
    """A round payload declared with the helpers' defaults only."""

    tag: bytes = raw(4)
    s: int = scalar()
    many: tuple[int, ...] = scalars(2)
    p: object = point()


def _example(group: Group) -> dict[str, Any]:
    e = _Example(b"abcd", 5, (6, 7), group.base_mul(8))
    return dict(encode_payload(e, group))


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
def test_default_scalars_refuse_zero_and_defaults_are_public(group: Group) -> None:
    payload = _example(group)
    back = decode_payload(_Example, payload, group=group, party=4)
    assert back.many == (6, 7) and back.s == 5 and back.p == group.base_mul(8)
    assert "abcd" in repr(back) or "b'abcd'" in repr(back)  # not declared secret: shown
    assert type(payload["tag"]) is bytes and type(payload["s"]) is bytes  # not SecretBytes
    zero = group.encode_scalar(0)
    with_zero = {**payload, "many": [payload["many"][0], zero]}
    with pytest.raises(DecodeError) as many:
        decode_payload(_Example, with_zero, group=group, party=4)
    assert many.value.field == "many[1]" and many.value.party == 4
    with pytest.raises(DecodeError) as one:
        decode_payload(_Example, {**payload, "s": zero}, group=group, party=4)
    assert one.value.field == "s"


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
def test_take_point_and_take_scalar_read_the_named_field(group: Group) -> None:
    g = group
    enc_p, enc_s = g.base_mul(9).encode(), g.encode_scalar(9)
    assert take_point(g, {"p": enc_p}, "p", 1) == g.base_mul(9)
    assert take_scalar(g, {"s": enc_s}, "s", 1) == 9
    assert take_scalar(g, {"s": g.encode_scalar(0)}, "s", 1, allow_zero=True) == 0
    for bad in ([enc_p], {"q": enc_p}, {"p": enc_p.hex()}):
        with pytest.raises(DecodeError, match="expected an element byte string") as exc:
            take_point(g, bad, "p", 2)  # type: ignore[arg-type]
        assert exc.value.field == "p" and exc.value.party == 2
    with pytest.raises(DecodeError, match="expected a scalar byte string"):
        take_scalar(g, [enc_s], "s", 2)  # type: ignore[arg-type]
    with pytest.raises(DecodeError) as zero:
        take_scalar(g, {"s": g.encode_scalar(0)}, "s", 2)
    assert zero.value.field == "s"
