"""hsm/blob.py byte for byte: the sealed-blob header, the GCM AAD and the share AAD.

Every sealed share on every node is read back through this format, so it is pinned here
by the layout in the module docstring written out with ``struct``-free byte literals,
and every limit is tested on both sides. No token needed (pure encoding); sealing itself
is tests/hsm/test_seal.py against SoftHSM2.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hsm.blob import (
    HEADER_LEN,
    MIN_BLOB_LEN,
    encode_header,
    gcm_aad,
    parse_sealed_header,
    seal_aad,
    sealed_key_version,
)
from hsm.errors import UnsealError

NONCE = bytes(range(12))


def test_header_layout_is_magic_version_nonce() -> None:
    assert HEADER_LEN == 20 and MIN_BLOB_LEN == 36
    assert encode_header(7, NONCE) == b"TPS1" + b"\x00\x00\x00\x07" + NONCE
    assert encode_header(1, NONCE)[4:8] == b"\x00\x00\x00\x01"
    assert encode_header(0xFFFFFFFF, NONCE)[4:8] == b"\xff\xff\xff\xff"


@pytest.mark.parametrize("version", [0, -1, 2**32])
def test_header_refuses_versions_outside_u32_from_one(version: int) -> None:
    with pytest.raises(ValueError, match="seal key version must be in 1..2"):
        encode_header(version, NONCE)


@pytest.mark.parametrize("nonce", [b"", bytes(11), bytes(13)])
def test_header_refuses_a_nonce_that_is_not_96_bits(nonce: bytes) -> None:
    with pytest.raises(ValueError, match="GCM nonce must be 12 bytes"):
        encode_header(3, nonce)


def test_parse_takes_the_shortest_blob_and_refuses_one_byte_less() -> None:
    shortest = encode_header(9, NONCE) + bytes(16)  # empty plaintext: header and tag
    forms: list[Any] = [shortest, bytearray(shortest), memoryview(shortest)]
    for form in forms:
        header = parse_sealed_header(form)
        assert header.key_version == 9 and header.nonce == NONCE
    assert sealed_key_version(shortest + b"ciphertext") == 9
    with pytest.raises(UnsealError, match="35 bytes, shorter than the minimum 36") as exc:
        parse_sealed_header(shortest[:-1])
    assert exc.value.reason == "bad_header" and exc.value.code == "hsm.unseal.bad_header"


def test_parse_refuses_another_magic_and_non_bytes() -> None:
    blob = encode_header(2, NONCE) + bytes(16)
    with pytest.raises(UnsealError, match="magic is b'TPS2'") as exc:
        parse_sealed_header(b"TPS2" + blob[4:])
    assert exc.value.reason == "bad_header"
    with pytest.raises(UnsealError, match="must be bytes, got str") as bad:
        parse_sealed_header(blob.hex())  # type: ignore[arg-type]
    assert bad.value.reason == "bad_header"
    # version 0 parses (reported later as a version the token does not have)
    assert parse_sealed_header(b"TPS1" + bytes(4) + NONCE + bytes(16)).key_version == 0


def test_gcm_aad_authenticates_the_format_and_the_version() -> None:
    assert gcm_aad(5, b"ctx") == b"TPS1\x00\x00\x00\x05ctx"
    assert gcm_aad(5, bytearray(b"")) == b"TPS1\x00\x00\x00\x05"  # type: ignore[arg-type]


def _lp(b: bytes) -> bytes:
    return len(b).to_bytes(4, "big") + b


def test_share_aad_is_the_documented_length_prefixed_encoding() -> None:
    expected = (
        _lp(b"tp-custody/seal-aad/v1")
        + _lp(b"share")
        + _lp(b"key-1")
        + _lp("n\u00f6de".encode())
        + (3).to_bytes(8, "big")
    )
    assert seal_aad("key-1", "n\u00f6de", 3) == expected
    assert seal_aad("key-1", "n\u00f6de", 3, "share") == expected
    assert seal_aad("key-1", "node", 3, "base-ot") != seal_aad("key-1", "node", 3)
    # injective: moving a character between fields changes the bytes
    assert seal_aad("ab", "c", 1) != seal_aad("a", "bc", 1)
    assert seal_aad("k", "n", 0)[-8:] == bytes(8)
    assert seal_aad("k", "n", 2**64 - 1)[-8:] == b"\xff" * 8


def test_share_aad_refuses_what_has_no_single_encoding() -> None:
    for version in (-1, 2**64):
        with pytest.raises(ValueError, match="share_version must be in 0..2"):
            seal_aad("k", "n", version)
    wrong_types: list[Any] = [True, 1.0, "1"]
    for wrong in wrong_types:
        with pytest.raises(TypeError, match="share_version must be int"):
            seal_aad("k", "n", wrong)
    with pytest.raises(TypeError, match="key_id must be str, got bytes"):
        seal_aad(b"k", "n", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="node_id must not be empty"):
        seal_aad("k", "", 1)
    with pytest.raises(ValueError, match="purpose is not valid Unicode"):
        seal_aad("k", "n", 1, "\udc80")


def test_a_parsed_header_cannot_be_altered() -> None:
    header = parse_sealed_header(encode_header(4, NONCE) + bytes(16))
    with pytest.raises(dataclasses.FrozenInstanceError):
        header.key_version = 5  # type: ignore[misc]
