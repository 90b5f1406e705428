"""message: EIP-191 checked against eth-account; the bytes for the Schnorr schemes."""

from __future__ import annotations

import pytest
from eth_account.messages import _hash_eip191_message, encode_defunct
from hypothesis import given, settings
from hypothesis import strategies as st

from custody.kinds import KindError, decode
from custody.kinds import message as msg


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(["ed25519", "bip340", "ecdsa-secp256k1"]))
def test_round_trip_and_digest(data: bytes, scheme: str) -> None:
    intent = decode("message", {"message": "0x" + data.hex()}, scheme=scheme)
    assert isinstance(intent, msg.Message)
    assert intent.message == data
    if scheme == "ecdsa-secp256k1":
        expected = _hash_eip191_message(encode_defunct(primitive=data))
        assert intent.messages == (expected,)
        assert intent.standard == "eip-191"
    else:
        assert intent.messages == (data,)
        assert intent.standard == "raw"


@given(st.text(max_size=100))
def test_text_is_shown_when_printable(text: str) -> None:
    data = text.encode()
    intent = msg.decode({"message": "0x" + data.hex()}, scheme="ed25519")
    printable = all(c.isprintable() or c in "\n\t" for c in text)
    assert intent.text == (text if printable else None)


def test_bounds_and_refusals() -> None:
    ok = msg.decode({"message": "0x" + "ab" * msg.MAX_MESSAGE}, scheme="bip340")
    assert len(ok.message) == msg.MAX_MESSAGE
    for payload, field in [
        ({"message": "0x" + "ab" * (msg.MAX_MESSAGE + 1)}, "message"),
        ({"message": "abcd"}, "message"),
        ({"message": "0xabc"}, "message"),
        ({"message": "0xzz"}, "message"),
        ({"message": 12}, "message"),
        ({}, "message"),
        ({"message": "0x", "text": "hi"}, "text"),
        ("0x00", "payload"),
    ]:
        with pytest.raises(KindError) as err:
            msg.decode(payload, scheme="ed25519")  # type: ignore[arg-type]
        assert (err.value.kind, err.value.field) == ("message", field)
    with pytest.raises(KindError) as err:
        msg.decode({"message": "0x"}, scheme="rsa")
    assert err.value.field == "scheme"
