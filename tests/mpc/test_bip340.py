"""BIP-340 verification: the 19 official vectors, tagged hashes, differential vs libsecp256k1."""

from __future__ import annotations

import csv
import hashlib

import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc import bip340
from tests.mpc.conftest import VECTORS

ROWS = list(csv.DictReader((VECTORS / "bip340/test-vectors.csv").open()))


def test_there_are_19_vectors() -> None:
    assert len(ROWS) == 19


@pytest.mark.parametrize("row", ROWS, ids=[r["index"] for r in ROWS])
def test_official_vector(row: dict[str, str]) -> None:
    pk = bytes.fromhex(row["public key"])
    msg = bytes.fromhex(row["message"])
    sig = bytes.fromhex(row["signature"])
    expected = row["verification result"] == "TRUE"
    assert bip340.verify(pk, msg, sig) is expected


def test_tagged_hash_definition() -> None:
    tag = hashlib.sha256(b"BIP0340/challenge").digest()
    assert (
        bip340.tagged_hash("BIP0340/challenge", b"abc")
        == hashlib.sha256(tag + tag + b"abc").digest()
    )
    assert bip340.tagged_hash("TapTweak", b"") != bip340.tagged_hash("TapLeaf", b"")


@pytest.mark.parametrize(
    ("pk", "sig"),
    [
        (b"\x02" * 33, bytes(64)),
        (bytes(32), bytes(63)),
        (bytes(31), bytes(64)),
        (bytes(32), bytes(65)),
    ],
)
def test_wrong_lengths_rejected(pk: bytes, sig: bytes) -> None:
    assert bip340.verify(pk, b"m", sig) is False


def test_non_bytes_rejected() -> None:
    row = ROWS[0]
    pk, msg, sig = (bytes.fromhex(row[k]) for k in ("public key", "message", "signature"))
    assert bip340.verify(pk, msg, sig)
    assert bip340.verify(pk.hex(), msg, sig) is False  # type: ignore[arg-type]
    assert bip340.verify(pk, msg, list(sig)) is False  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(msg=st.binary(min_size=32, max_size=32), flip=st.integers(min_value=0, max_value=64 * 8 - 1))
def test_agrees_with_libsecp256k1(msg: bytes, flip: int) -> None:
    # A single-key signer exists only here, to exercise the verifier (no keys in mpc/).
    key = coincurve.PrivateKey()
    sig = key.sign_schnorr(msg)
    pk = key.public_key_xonly.format()
    assert bip340.verify(pk, msg, sig)
    bad = bytearray(sig)
    bad[flip // 8] ^= 1 << (flip % 8)
    theirs = coincurve.PublicKeyXOnly(pk).verify(bytes(bad), msg)
    assert bip340.verify(pk, msg, bytes(bad)) is theirs is False
