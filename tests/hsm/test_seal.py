"""Seal/unseal: round trips, blob format, AAD binding, tampering (every bit), truncation."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm import Hsm, UnsealError, parse_sealed_header, seal_aad, sealed_key_version
from hsm.blob import HEADER_LEN, MAGIC, MIN_BLOB_LEN, NONCE_LEN, TAG_LEN

AAD = seal_aad("key-1", "node-1", 3)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 100, 4096, 100_000])
def test_round_trip_sizes(hsm: Hsm, size: int) -> None:
    plaintext = os.urandom(size)
    blob = hsm.seal(plaintext, AAD)
    assert len(blob) == HEADER_LEN + size + TAG_LEN
    assert hsm.unseal(blob, AAD) == plaintext


def test_blob_layout(hsm: Hsm) -> None:
    blob = hsm.seal(b"share bytes", AAD)
    assert blob[:4] == MAGIC == b"TPS1"
    assert int.from_bytes(blob[4:8], "big") == 1 == sealed_key_version(blob)
    header = parse_sealed_header(blob)
    assert header.key_version == 1
    assert header.nonce == blob[8:20] and len(header.nonce) == NONCE_LEN
    assert b"share bytes" not in blob


def test_fresh_nonce_every_seal(hsm: Hsm) -> None:
    blobs = [hsm.seal(b"same plaintext", AAD) for _ in range(200)]
    assert len({parse_sealed_header(b).nonce for b in blobs}) == 200
    assert len({b[HEADER_LEN:] for b in blobs}) == 200
    assert all(hsm.unseal(b, AAD) == b"same plaintext" for b in blobs)


def test_bytes_like_inputs(hsm: Hsm) -> None:
    blob = hsm.seal(bytearray(b"abc"), memoryview(AAD))
    assert hsm.unseal(bytearray(blob), bytearray(AAD)) == b"abc"


@pytest.mark.parametrize("bad", ["text", 5, None])
def test_non_bytes_rejected(hsm: Hsm, bad: object) -> None:
    with pytest.raises(TypeError):
        hsm.seal(bad, AAD)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hsm.seal(b"x", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "other",
    [
        seal_aad("key-2", "node-1", 3),  # other key id
        seal_aad("key-1", "node-2", 3),  # other node id
        seal_aad("key-1", "node-1", 4),  # other share version
        seal_aad("key-1", "node-1", 2),
        seal_aad("key-1", "node-1", 3, purpose="sqlcipher-key"),  # other purpose
        b"",
        AAD + b"\x00",
        AAD[:-1],
    ],
    ids=["key_id", "node_id", "version+1", "version-1", "purpose", "empty", "longer", "shorter"],
)
def test_wrong_aad_is_authentication_failure(hsm: Hsm, other: bytes) -> None:
    blob = hsm.seal(b"secret share", AAD)
    with pytest.raises(UnsealError) as info:
        hsm.unseal(blob, other)
    assert info.value.reason == "authentication_failed"
    assert info.value.code == "hsm.unseal.authentication_failed"
    assert info.value.exit_code == 24
    assert "AAD" in info.value.message


def _expected_reason(bit: int) -> str:
    """Reason to expect when flipping ``bit`` of a blob sealed under version 1."""
    byte = bit // 8
    if byte < 4:
        return "bad_header"  # magic
    if byte < 8:
        return "unknown_key_version"  # version 1 -> some version that is not on the token
    return "authentication_failed"  # nonce, ciphertext, tag


def test_every_single_bit_flip_is_rejected_with_precise_reason(hsm: Hsm) -> None:
    plaintext = os.urandom(24)
    blob = hsm.seal(plaintext, AAD)
    assert hsm.seal_key_versions() == [1]
    for bit in range(len(blob) * 8):
        tampered = bytearray(blob)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(UnsealError) as info:
            hsm.unseal(bytes(tampered), AAD)
        assert info.value.reason == _expected_reason(bit), bit
    assert hsm.unseal(blob, AAD) == plaintext  # the original is still fine


@pytest.mark.parametrize("cut", [0, 1, 4, 8, 19, 20, 35])
def test_short_blobs_are_bad_header(hsm: Hsm, cut: int) -> None:
    blob = hsm.seal(b"", AAD)
    assert len(blob) == MIN_BLOB_LEN == 36
    with pytest.raises(UnsealError) as info:
        hsm.unseal(blob[:cut], AAD)
    assert info.value.reason == "bad_header"
    assert "shorter than the minimum" in info.value.message


def test_truncated_or_extended_body_is_authentication_failure(hsm: Hsm) -> None:
    blob = hsm.seal(os.urandom(40), AAD)
    for candidate in (blob[:-1], blob[:-16], blob + b"\x00", blob[:20] + blob[21:]):
        with pytest.raises(UnsealError) as info:
            hsm.unseal(candidate, AAD)
        assert info.value.reason == "authentication_failed"


def test_wrong_magic_message(hsm: Hsm) -> None:
    blob = hsm.seal(b"x", AAD)
    with pytest.raises(UnsealError) as info:
        hsm.unseal(b"TPS2" + blob[4:], AAD)
    assert info.value.reason == "bad_header"
    assert "TPS1" in info.value.message


def test_non_bytes_blob_is_bad_header(hsm: Hsm) -> None:
    with pytest.raises(UnsealError) as info:
        hsm.unseal("TPS1...", AAD)  # type: ignore[arg-type]
    assert info.value.reason == "bad_header"


def test_blob_from_other_token_does_not_open(hsm: Hsm, module_hsm: Hsm) -> None:
    """Same label, same version, same AAD -- but another token's key: tag fails."""
    blob = module_hsm.seal(b"node A share", AAD)
    hsm.current_seal_version()
    with pytest.raises(UnsealError) as info:
        hsm.unseal(blob, AAD)
    assert info.value.reason == "authentication_failed"


@settings(max_examples=150, deadline=None)
@given(
    plaintext=st.binary(max_size=64),
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(1, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_random_byte_edits_never_unseal(
    module_hsm: Hsm, plaintext: bytes, edits: list[tuple[int, int]]
) -> None:
    blob = module_hsm.seal(plaintext, AAD)
    tampered = bytearray(blob)
    for position, mask in edits:
        tampered[position % len(blob)] ^= mask
    if bytes(tampered) == blob:  # edits cancelled out
        return
    with pytest.raises(UnsealError) as info:
        module_hsm.unseal(bytes(tampered), AAD)
    assert info.value.reason in ("bad_header", "unknown_key_version", "authentication_failed")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_never_unseal(module_hsm: Hsm, junk: bytes) -> None:
    with pytest.raises(UnsealError):
        module_hsm.unseal(junk, AAD)
    with pytest.raises(UnsealError):
        module_hsm.unseal(b"TPS1" + (1).to_bytes(4, "big") + junk, AAD)
