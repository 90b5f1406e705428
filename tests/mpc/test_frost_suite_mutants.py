"""mpc.frost.ciphersuite and mpc.frost.taproot: checks that mutation testing found untested.

Pure functions over the recorded signatures of RFC 9591 and ZcashFoundation
``frost-secp256k1-tr`` (no key is formed, none is dealt), each also checked by an
independent verifier (pynacl, coincurve). Runs first in ``mutation.toml``'s selections.
"""

from __future__ import annotations

import hashlib
from typing import Any

import coincurve
import nacl.signing
import pytest
from py_ecc.bls.hash import expand_message_xmd as ref_expand

from mpc import frost
from mpc.errors import EncodingError, UsageError
from mpc.frost.ciphersuite import (
    ED25519_SHA512,
    SECP256K1_SHA256,
    SECP256K1_TR,
    Ciphersuite,
    ciphersuite,
    expand_message_xmd,
)
from mpc.frost.taproot import tap_tweak_scalar, taproot_tweak
from mpc.groups import ED25519, SECP256K1, Secp256k1Point
from mpc.shamir import KeyPackage, PublicKeyPackage
from tests.mpc.conftest import load_json

DST = b"QUUX-V01-CS02-with-expander-SHA256-128"


def _recorded(rel: str) -> tuple[bytes, bytes, bytes]:
    v: dict[str, Any] = load_json(rel)
    return (
        bytes.fromhex(v["inputs"]["message"]),
        bytes.fromhex(v["final_output"]["sig"]),
        bytes.fromhex(v["inputs"].get("group_public_key") or v["inputs"]["verifying_key_key"]),
    )


ED_MSG, ED_SIG, ED_PK = _recorded("rfc9591/frost-ed25519-sha512.json")
K1_MSG, K1_SIG, K1_PK = _recorded("rfc9591/frost-secp256k1-sha256.json")
TR_MSG, TR_SIG, TR_PK = _recorded("zcash-frost/frost-secp256k1-tr-vectors.json")
RECORDED = [
    (ED25519_SHA512, ED_MSG, ED_SIG, ED_PK),
    (SECP256K1_SHA256, K1_MSG, K1_SIG, K1_PK),
    (SECP256K1_TR, TR_MSG, TR_SIG, TR_PK[1:]),
]
BY_SUITE = pytest.mark.parametrize(
    ("suite", "msg", "sig", "pk"), RECORDED, ids=[s.name for s, *_ in RECORDED]
)


def test_recorded_signatures_verify_independently() -> None:
    """The fixtures this file edits are valid to libsodium and libsecp256k1 first."""
    nacl.signing.VerifyKey(ED_PK).verify(ED_MSG, ED_SIG)
    assert coincurve.PublicKeyXOnly(TR_PK[1:]).verify(TR_SIG, TR_MSG)


# -- expand_message_xmd (RFC 9380 section 5.3.1) -----------------------------------------------


@pytest.mark.parametrize("length", [8160, 33, 31, 2])
def test_expand_message_xmd_longest_output_and_block_edges(length: int) -> None:
    """ell = 255 blocks (8160 bytes) is the most RFC 9380 allows; lengths across a block edge."""
    got = expand_message_xmd(b"abc", DST, length)
    assert got == ref_expand(b"abc", DST, length, hashlib.sha256)  # type: ignore[arg-type]
    assert len(got) == length


def test_expand_message_xmd_refuses_one_byte_past_255_blocks() -> None:
    with pytest.raises(UsageError, match="too long"):
        expand_message_xmd(b"abc", DST, 8161)
    with pytest.raises(UsageError, match="too long"):
        expand_message_xmd(b"abc", DST, 65536)


def test_expand_message_xmd_takes_a_255_byte_dst_and_refuses_256() -> None:
    dst = bytes(range(255))
    assert expand_message_xmd(b"m", dst, 48) == ref_expand(b"m", dst, 48, hashlib.sha256)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="DST too long"):
        expand_message_xmd(b"m", dst + b"\x00", 48)


# -- verification: the attacks -----------------------------------------------------------------


@BY_SUITE
def test_signature_with_a_message_byte_appended_is_refused(
    suite: Ciphersuite, msg: bytes, sig: bytes, pk: bytes
) -> None:
    """Length confusion: ``sig || m[0]`` over ``m[1:]`` is the same bytes libsodium's
    ``crypto_sign_open`` reads as a valid signature of ``m``; it must be refused."""
    assert suite.verify(msg, sig, pk)
    assert not suite.verify(msg[1:], sig + msg[:1], pk)
    assert not suite.verify(msg, sig[:-1], pk)
    assert not suite.verify(msg, sig + b"\x00", pk)


@BY_SUITE
def test_signature_and_key_must_be_bytes_of_the_suite(
    suite: Ciphersuite, msg: bytes, sig: bytes, pk: bytes
) -> None:
    assert suite.verify(msg, bytearray(sig), pk)  # type: ignore[arg-type]
    assert suite.verify(bytearray(msg), sig, bytearray(pk))  # type: ignore[arg-type]
    if suite is not SECP256K1_TR:  # bip340 raises TypeError for a str (fails closed too)
        assert not suite.verify(msg, sig.hex(), pk)  # type: ignore[arg-type]
    assert not suite.verify(msg, sig, pk.hex())  # type: ignore[arg-type]
    assert not suite.verify(msg, sig, pk[:-1])
    other = ED25519 if suite.group is SECP256K1 else SECP256K1
    assert not suite.verify(msg, sig, other.generator)  # a Point of the other group
    assert not suite.verify(msg, sig, suite.group.identity)
    bad = bytearray(sig)
    bad[-1] ^= 1
    assert not suite.verify(msg, bytes(bad), pk)


@BY_SUITE
def test_decoded_signature_round_trips_and_names_the_length(
    suite: Ciphersuite, msg: bytes, sig: bytes, pk: bytes
) -> None:
    r, z = suite.decode_signature(bytearray(sig))  # type: ignore[arg-type]
    assert suite.encode_signature(r, z) == sig
    for bad in (sig[:-1], sig + b"\x00", sig.hex()):
        with pytest.raises(EncodingError, match=f"signature must be {suite.signature_len} bytes"):
            suite.decode_signature(bad)  # type: ignore[arg-type]
    key = suite.decode_public_key(pk)
    assert suite.encode_public_key(key) == pk
    assert suite.decode_public_key(key) is key
    with pytest.raises(EncodingError, match="not a non-identity"):
        suite.decode_public_key(suite.group.identity)


@BY_SUITE
def test_a_zero_response_decodes_and_then_fails_verification(
    suite: Ciphersuite, msg: bytes, sig: bytes, pk: bytes
) -> None:
    """RFC 9591 DeserializeScalar admits z = 0 (and BIP-340 any z < n): the signature is
    decoded and refused by the verification equation, never by a decoding error."""
    zero = sig[: len(sig) - 32] + bytes(32)
    r, z = suite.decode_signature(zero)
    assert z == 0 and suite.encode_signature(r, z) == zero
    assert not suite.verify(msg, zero, pk)


def test_secp256k1_tr_key_is_x_only_or_compressed() -> None:
    """frost-secp256k1-tr: 32 bytes lift to even Y; 33 bytes keep their parity."""
    odd = next(SECP256K1.base_mul(s) for s in range(1, 50) if not _even(SECP256K1.base_mul(s)))
    assert isinstance(odd, Secp256k1Point)
    assert SECP256K1_TR.decode_public_key(odd.x_only()) == -odd
    assert SECP256K1_TR.decode_public_key(bytearray(odd.x_only())) == -odd  # type: ignore[arg-type]
    assert SECP256K1_TR.decode_public_key(odd.encode()) == odd
    assert SECP256K1_TR.needs_negation(odd) and not SECP256K1_TR.needs_negation(-odd)
    assert not SECP256K1_SHA256.needs_negation(odd)
    assert SECP256K1_TR.encode_public_key(odd) == odd.x_only()
    # BIP-340 verifies the same signature under x(PK) whichever parity the Point has.
    assert SECP256K1_TR.verify(TR_MSG, TR_SIG, TR_PK) and SECP256K1_TR.verify(
        TR_MSG, TR_SIG, TR_PK[1:]
    )


def test_suites_are_found_by_name_and_alias_only() -> None:
    assert ciphersuite("ed25519") is ED25519_SHA512 is frost.ciphersuite("ed25519")
    assert ciphersuite("secp256k1") is SECP256K1_SHA256
    assert ciphersuite("bip340") is SECP256K1_TR is ciphersuite("secp256k1-tr")
    for bad in ("p256", "", "ED25519", None, ["ed25519"]):
        with pytest.raises(UsageError, match="unknown FROST ciphersuite"):
            ciphersuite(bad)  # type: ignore[arg-type]


def test_suite_repr_names_the_context_string() -> None:
    assert repr(ED25519_SHA512) == "<FROST ciphersuite ed25519 (FROST-ED25519-SHA512-v1)>"
    assert repr(SECP256K1_TR) == "<FROST ciphersuite bip340 (FROST-secp256k1-SHA256-TR-v1)>"


def test_the_base_suite_has_no_hash_functions() -> None:
    base = Ciphersuite()
    for h in (base.H1, base.H2, base.H3, base.H4, base.H5):
        with pytest.raises(NotImplementedError):
            h(b"")
    assert base.needs_negation(SECP256K1.generator) is False


# -- taproot.py (BIP-341 taproot_tweak_pubkey) --------------------------------------------------


def _tagged(tag: str, msg: bytes) -> bytes:
    th = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(th + th + msg).digest()


def test_tap_tweak_is_the_bip341_tagged_hash_of_the_x_only_key() -> None:
    p = SECP256K1.base_mul(7)
    assert isinstance(p, Secp256k1Point)
    for root in (b"", bytes(range(32))):
        want = int.from_bytes(_tagged("TapTweak", p.x_only() + root), "big")
        assert tap_tweak_scalar(p, root) == want


def test_tap_tweak_refuses_other_keys_and_roots() -> None:
    p = SECP256K1.base_mul(7)
    with pytest.raises(UsageError, match="needs a secp256k1 key"):
        tap_tweak_scalar(ED25519.generator)
    for root in (bytes(31), bytes(33), bytes(1), bytearray(32), ""):
        with pytest.raises(UsageError, match="merkle_root must be empty"):
            tap_tweak_scalar(p, root)  # type: ignore[arg-type]


def _public_package(group_key_scalar: int) -> PublicKeyPackage:
    """A 2-of-2 public package from the public polynomial f(x) = a + x (no secret held)."""
    g = SECP256K1
    a = group_key_scalar
    return PublicKeyPackage(g, 2, g.base_mul(a), {1: g.base_mul(a + 1), 2: g.base_mul(a + 2)})


@pytest.mark.parametrize("negate", [False, True])
def test_tweaked_public_package_matches_libsecp256k1(negate: bool) -> None:
    """Q = P + t*G with P the even-Y internal key: coincurve's x-only tweak computes it."""
    a = next(s for s in range(2, 60) if _even(SECP256K1.base_mul(s)) != negate)
    public = _public_package(a)
    pk = public.group_public_key
    assert isinstance(pk, Secp256k1Point)
    out = taproot_tweak(public)
    q = coincurve.PublicKeyXOnly(pk.x_only())
    q.tweak_add(_tagged("TapTweak", pk.x_only()))
    qx = out.group_public_key
    assert isinstance(qx, Secp256k1Point)
    assert qx.x_only() == q.format()
    t = tap_tweak_scalar(-pk if negate else pk)
    sign = -1 if negate else 1
    for i, y in out.verifying_shares.items():
        assert y == SECP256K1.base_mul(sign * (a + i) + t)
    assert out.min_signers == 2


def test_tweak_of_a_secret_share_reduces_modulo_the_order() -> None:
    """s + t wraps past n for a share near n; the tweaked share is canonical and matches
    its verifying share (BIP-341 arithmetic is mod n)."""
    n = SECP256K1.order
    a = next(n - k for k in range(3, 60) if _even(SECP256K1.base_mul(n - k)))
    public = _public_package(a)
    # f(x) = a + x is public here, so share 1 = a + 1 is known: a test value, not a key.
    key = KeyPackage(1, a + 1, public)
    tweaked = taproot_tweak(key)
    t = tap_tweak_scalar(public.group_public_key)
    assert a + 1 + t >= n  # the case under test: the sum wraps
    assert tweaked.signing_share == a + 1 + t - n
    assert SECP256K1.base_mul(tweaked.signing_share) == tweaked.public.verifying_shares[1]
    assert tweaked.identifier == 1


def test_a_tweak_hash_that_is_not_a_scalar_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """BIP-341 ``if t >= SECP256K1_ORDER: raise``: unreachable with SHA-256 (it would need a
    preimage), so the hash is replaced here to reach the check on both sides of n."""
    from mpc.frost import taproot

    p = SECP256K1.base_mul(7)
    n = SECP256K1.order
    for t, ok in ((n - 1, True), (n, False), (2**256 - 1, False)):
        monkeypatch.setattr(taproot, "tagged_hash", lambda tag, m, t=t: t.to_bytes(32, "big"))
        if ok:
            assert tap_tweak_scalar(p) == t
        else:
            with pytest.raises(UsageError, match="not a valid scalar"):
                tap_tweak_scalar(p)


def test_a_tweak_that_cancels_the_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Q = P + t*G is the point at infinity when t = -p: BIP-341 fails there too."""
    from mpc.frost import taproot

    n = SECP256K1.order
    a = next(s for s in range(2, 60) if _even(SECP256K1.base_mul(s)))
    monkeypatch.setattr(taproot, "tagged_hash", lambda tag, m: (n - a).to_bytes(32, "big"))
    with pytest.raises(UsageError, match="point at infinity"):
        taproot_tweak(_public_package(a))


def test_tweak_declares_and_keeps_secret_in_secret_out_public_in_public_out() -> None:
    """The two ``@overload`` signatures (what type checkers hold callers to) say a key
    package gives a key package and a public package a public one; so does the code."""
    import typing

    sigs = [typing.get_type_hints(f) for f in typing.get_overloads(taproot_tweak)]
    assert [(h["key"], h["return"]) for h in sigs] == [
        (KeyPackage, KeyPackage),
        (PublicKeyPackage, PublicKeyPackage),
    ]
    n = SECP256K1.order
    a = next(n - k for k in range(3, 60) if _even(SECP256K1.base_mul(n - k)))
    public = _public_package(a)
    assert type(taproot_tweak(public)) is PublicKeyPackage
    assert type(taproot_tweak(KeyPackage(2, a + 2, public))) is KeyPackage


def test_tweak_refuses_a_package_of_another_group() -> None:
    g = ED25519
    public = PublicKeyPackage(g, 2, g.base_mul(3), {1: g.base_mul(4), 2: g.base_mul(5)})
    with pytest.raises(UsageError, match="needs a secp256k1 key package"):
        taproot_tweak(public)


def _even(p: object) -> bool:
    assert isinstance(p, Secp256k1Point)
    return p.has_even_y()
