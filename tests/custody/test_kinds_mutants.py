"""custody.kinds: the shared payload accessors (_common) and the ``message`` kind, each bound
on both sides (issue 16, mutation testing). Pure functions; the EIP-191 digest is checked
against eth-account's ``defunct_hash_message``, not our own hashing.
"""

from __future__ import annotations

import dataclasses

import pytest
from eth_account.messages import defunct_hash_message

from custody.domain import MAX_MESSAGE as DOMAIN_MAX
from custody.kinds import message
from custody.kinds._common import Intent, KindError, field, hex_bytes, only_fields


def refused(fn: object, *args: object, **kw: object) -> KindError:
    with pytest.raises(KindError) as exc:
        fn(*args, **kw)  # type: ignore[operator]
    return exc.value


# -- _common ------------------------------------------------------------------------------------


def test_kind_error_names_kind_field_and_detail() -> None:
    e = KindError("evm-tx", "tx.to", "must be an address")
    assert (e.kind, e.field, e.detail) == ("evm-tx", "tx.to", "must be an address")
    assert str(e) == "evm-tx: field 'tx.to': must be an address"
    assert isinstance(e, ValueError)


def test_intents_are_frozen() -> None:
    i = Intent("k", (b"m",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        i.kind = "other"  # type: ignore[misc]


def test_only_fields_names_the_unknown_and_the_first_missing_field() -> None:
    assert only_fields("k", {"a": 1}, {"a", "b"}, {"a"}) == {"a": 1}
    assert refused(only_fields, "k", ["a"], {"a"}, set()).field == "payload"
    e = refused(only_fields, "k", {"a": 1, "zz": 2}, {"a"}, set())
    assert (e.field, e.detail) == ("zz", "unknown field")
    assert refused(only_fields, "k", {5: 1}, {"5"}, set()).field == "5"  # not a string key
    assert refused(only_fields, "k", {"": 1}, {"a"}, set()).field == "payload"
    assert refused(only_fields, "k", {"x" * 50: 1}, {"a"}, set()).field == "x" * 40
    e = refused(only_fields, "k", {}, {"a", "b", "c"}, {"c", "b"})
    assert (e.field, e.detail) == ("b", "missing")  # in sorted order


def test_field_checks_type_bool_and_length_on_both_sides() -> None:
    assert field("k", {"n": 3}, "n", int, 10) == 3
    assert refused(field, "k", {"n": True}, "n", int, 10).detail == "must be a int"
    assert refused(field, "k", {"n": "3"}, "n", int, 10).detail == "must be a int"
    assert refused(field, "k", {}, "n", str, 10).field == "n"
    assert field("k", {"s": "x" * 10}, "s", str, 10) == "x" * 10
    e = refused(field, "k", {"s": "x" * 11}, "s", str, 10)
    assert e.detail == "longer than 10 characters"
    assert field("k", {"b": b"x" * 4}, "b", bytes, 4) == b"xxxx"
    assert refused(field, "k", {"b": b"x" * 5}, "b", bytes, 4).field == "b"
    assert field("k", {"n": 10**30}, "n", int, 1) == 10**30  # length bounds str/bytes only


def test_hex_bytes_bounds_prefix_case_and_parity() -> None:
    assert hex_bytes("k", "h", "0x", 4) == b""
    assert hex_bytes("k", "h", "0xAbCd0102", 4) == bytes.fromhex("abcd0102")
    e = refused(hex_bytes, "k", "h", "0x" + "00" * 5, 4)
    assert (e.field, e.detail) == ("h", "longer than 4 bytes")
    assert refused(hex_bytes, "k", "h", "0x" + "0" * 9, 4).detail == "longer than 4 bytes"
    for bad in ("0x0", "00", "0xzz", "0X00", " 0x00", "0x00\n"):
        e = refused(hex_bytes, "k", "h", bad, 4)
        assert e.detail == "must be 0x-prefixed hex with an even number of digits", bad
    for other in (b"0x00", 0, None):
        assert refused(hex_bytes, "k", "h", other, 4).detail == "must be a 0x-prefixed hex string"


# -- message ------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"hello", bytes(range(256))])
def test_ecdsa_messages_sign_the_eip191_digest_as_eth_account_computes_it(data: bytes) -> None:
    m = message.decode({"message": "0x" + data.hex()}, scheme="ecdsa-secp256k1")
    assert m.messages == (bytes(defunct_hash_message(primitive=data)),)
    assert m.standard == "eip-191" and m.message == data and m.kind == "message"
    assert message.eip191_digest(data) == bytes(defunct_hash_message(primitive=data))


@pytest.mark.parametrize("scheme", ["ed25519", "bip340"])
def test_schnorr_messages_sign_the_bytes_themselves(scheme: str) -> None:
    m = message.decode({"message": "0x00ff"}, scheme=scheme)
    assert m.messages == (b"\x00\xff",) and m.standard == "raw" and m.scheme == scheme
    assert m.summary() == {
        "scheme": scheme,
        "standard": "raw",
        "message": "0x00ff",
        "text": None,
        "length": 2,
    }


def test_message_length_is_the_domains_bound_on_both_sides() -> None:
    assert message.MAX_MESSAGE == DOMAIN_MAX
    full = message.decode({"message": "0x" + "61" * DOMAIN_MAX}, scheme="ed25519")
    assert len(full.message) == DOMAIN_MAX
    e = refused(message.decode, {"message": "0x" + "61" * (DOMAIN_MAX + 1)}, scheme="ed25519")
    assert e.field == "message"


def test_message_text_only_when_printable_utf8() -> None:
    def text(b: bytes) -> str | None:
        return message.decode({"message": "0x" + b.hex()}, scheme="bip340").text

    assert text("Grüße\n\tok".encode()) == "Grüße\n\tok"
    assert text(b"") == ""
    assert text(b"a\rb") is None and text(b"a\x00") is None and text(b"\xff\xfe") is None


def test_message_refuses_unknown_schemes_and_fields() -> None:
    assert refused(message.decode, {"message": "0x"}, scheme="rsa").field == "scheme"
    assert refused(message.decode, {"message": "0x", "x": 1}, scheme="ed25519").field == "x"
    assert refused(message.decode, {}, scheme="ed25519").field == "message"
