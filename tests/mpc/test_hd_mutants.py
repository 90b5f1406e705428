"""mpc.hd: every bound, refusal and encoding of the derivation code (issue 16, mutation testing).

Fast and pure: public keys from the vendored BIP-32 vectors and from the test-only dealer
(no whole key is formed); the few unreachable branches (``I_L >= n``, a child at infinity,
a zero Ed25519 tweak) are reached by replacing the module's HMAC with one that returns a
chosen ``I``, over parents that are small public multiples of G (test points, not keys of
the service). The Ed25519 step and the chain code are recomputed independently (libsodium
through pynacl, hashlib) from the formulas of the module docstring. First in
``mutation.toml``'s selection for ``mpc/hd.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import types
from collections.abc import Callable

import nacl.bindings as sodium
import pytest
from embit import base58 as embit_base58

from mpc.dkls23 import EcdsaKeyShare
from mpc.errors import DecodeError, UsageError
from mpc.groups import ED25519, SECP256K1, Point
from mpc.hd import (
    HARDENED,
    MAX_DEPTH,
    Derivation,
    ExtendedPublicKey,
    HardenedDerivationError,
    _hash160,
    base58check_decode,
    base58check_encode,
    chain_code_from_dkg,
    ckd_pub,
    ckd_pub_ed25519,
    derive,
    derive_ecdsa_share,
    derive_key_package,
    derive_public_package,
    format_path,
    parse_path,
    parse_xpub,
    tweak_key_package,
    tweak_public_package,
)
from mpc.shamir import KeyPackage, PublicKeyPackage
from tests.mpc.conftest import dealer_split_for_tests

N = SECP256K1.order
L = ED25519.order
# BIP-32 test vector 1, chain m (the public half only)
XPUB_M = (
    "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8"
    "YtGqsefD265TMg7usUDFdp6W1EGMcet8"
)
CC = bytes(range(32))
Step = Callable[[Point, bytes, int], tuple[int, Point, bytes]]


@pytest.fixture(scope="module")
def secp_keys() -> dict[int, KeyPackage]:
    return dealer_split_for_tests(SECP256K1, 2, 3)


@pytest.fixture(scope="module")
def ed_keys() -> dict[int, KeyPackage]:
    return dealer_split_for_tests(ED25519, 2, 3)


def fixed_hmac(monkeypatch: pytest.MonkeyPatch, digest: bytes) -> None:
    """Make every HMAC of mpc.hd return ``digest`` (to reach the probability-2^-127 branches)."""

    class _Mac:
        def digest(self) -> bytes:
            return digest

    monkeypatch.setattr("mpc.hd.hmac", types.SimpleNamespace(new=lambda *a, **k: _Mac()))


# -- paths -----------------------------------------------------------------------------------


def test_hardened_markers_name_the_step_and_the_index() -> None:
    for text, index, pos in (
        ("m/1'", HARDENED + 1, 1),
        ("m/0/7h", HARDENED + 7, 2),
        ("5H", HARDENED + 5, 1),
        ("m/44'/0", HARDENED + 44, 1),
        ("m/0/2147483647h", 2**32 - 1, 2),
    ):
        with pytest.raises(HardenedDerivationError) as e:
            parse_path(text)
        assert (e.value.index, e.value.position) == (index, pos)
        assert f"path step {pos} is hardened ({index - HARDENED}')" in str(e.value)
    with pytest.raises(HardenedDerivationError, match=r"path step 2 is hardened \(0'\)") as e:
        parse_path([3, HARDENED])
    assert (e.value.index, e.value.position) == (HARDENED, 2)


@pytest.mark.parametrize("text", ["m/x'", "m/'", "m/１'", "m/-1h"])
def test_a_hardened_marker_on_a_non_index_is_not_an_index(text: str) -> None:
    with pytest.raises(UsageError, match="is not an index") as e:
        parse_path(text)
    assert not isinstance(e.value, HardenedDerivationError)


def test_index_bounds_and_positions() -> None:
    assert parse_path([HARDENED - 1]) == (HARDENED - 1,)
    assert parse_path((0,)) == (0,) and parse_path([]) == ()
    assert parse_path("m/0/10/2147483647") == (0, 10, HARDENED - 1)
    assert parse_path("0/1") == (0, 1)
    with pytest.raises(HardenedDerivationError):
        parse_path([2**32 - 1])
    for bad, pos in (([2**32], 1), ([0, -1], 2), ([True], 1), ([0, 0, 1.0], 3)):
        with pytest.raises(UsageError, match=f"path step {pos} .* is not a 32-bit index"):
            parse_path(bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"path step 2 '00' is not a canonical"):
        parse_path("m/1/00")
    with pytest.raises(UsageError, match="a path is a string"):
        parse_path({1, 2})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="a path is a string"):
        parse_path(b"m/1")


def test_depth_of_a_path_is_at_most_255() -> None:
    assert len(parse_path([1] * MAX_DEPTH)) == 255
    assert len(parse_path("m" + "/1" * 255)) == 255
    with pytest.raises(UsageError, match="path has 256 steps; at most 255"):
        parse_path("m" + "/1" * 256)


def test_format_path() -> None:
    assert format_path([]) == "m" and format_path((0, 17)) == "m/0/17"


# -- chain code --------------------------------------------------------------------------------


def _tagged(tag: str, msg: bytes) -> bytes:
    t = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(t + t + msg).digest()


def test_chain_code_is_the_documented_tagged_hash(secp_keys: dict[int, KeyPackage]) -> None:
    pub = secp_keys[1].public
    for ctx in (b"", b"key-7", bytes(1024)):
        data = b"secp256k1" + len(ctx).to_bytes(4, "big") + ctx + pub.group_public_key.encode()
        assert chain_code_from_dkg(pub, ctx) == _tagged("TPWC-v1/hd/chain-code", data)
    assert pub.group.name == "secp256k1"
    with pytest.raises(UsageError, match="at most 1024"):
        chain_code_from_dkg(pub, bytes(1025))
    with pytest.raises(UsageError, match="at most 1024"):
        chain_code_from_dkg(pub, "key-7")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="PublicKeyPackage"):
        chain_code_from_dkg(secp_keys[1])  # type: ignore[arg-type]


# -- one step ----------------------------------------------------------------------------------


def test_chain_code_length_and_type(secp_keys: dict[int, KeyPackage]) -> None:
    key = secp_keys[1]
    a = derive_key_package(key, bytearray(CC), "m/4")  # type: ignore[arg-type]
    assert a == derive_key_package(key, CC, "m/4")
    for cc in (bytes(31), bytes(33), "0" * 32, list(CC)):
        with pytest.raises(UsageError, match="chain code must be 32 bytes"):
            ckd_pub(key.group_public_key, cc, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("step", [ckd_pub, ckd_pub_ed25519])
def test_child_index_bounds(
    step: Step, secp_keys: dict[int, KeyPackage], ed_keys: dict[int, KeyPackage]
) -> None:
    fn = step
    parent = (secp_keys if fn is ckd_pub else ed_keys)[1].group_public_key
    fn(parent, CC, HARDENED - 1)
    fn(parent, CC, 0)
    for bad in (-1, 2**32, True, 1.0):
        with pytest.raises(UsageError, match="is not a 32-bit index"):
            fn(parent, CC, bad)  # type: ignore[arg-type]
    for hard in (HARDENED, 2**32 - 1):
        with pytest.raises(HardenedDerivationError) as e:
            fn(parent, CC, hard)
        assert e.value.position == 1 and e.value.index == hard


def test_steps_refuse_the_other_group_and_the_identity(
    secp_keys: dict[int, KeyPackage], ed_keys: dict[int, KeyPackage]
) -> None:
    with pytest.raises(UsageError, match="needs a secp256k1 public key"):
        ckd_pub(SECP256K1.identity, CC, 0)
    with pytest.raises(UsageError, match="needs a secp256k1 public key"):
        ckd_pub(ed_keys[1].group_public_key, CC, 0)
    with pytest.raises(UsageError, match="needs an ed25519 public key"):
        ckd_pub_ed25519(ED25519.identity, CC, 0)
    with pytest.raises(UsageError, match="needs an ed25519 public key"):
        ckd_pub_ed25519(secp_keys[1].group_public_key, CC, 0)


def test_bip32_i_l_at_or_above_n_is_refused_below_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """BIP-32 CKDpub: "In case parse256(I_L) >= n ... the resulting key is invalid"."""
    parent = SECP256K1.base_mul(5)
    fixed_hmac(monkeypatch, N.to_bytes(32, "big") + bytes(range(32)))
    with pytest.raises(UsageError, match=r"child 3 is invalid \(I_L >= n\)"):
        ckd_pub(parent, CC, 3)
    fixed_hmac(monkeypatch, (N - 1).to_bytes(32, "big") + bytes(range(32, 64)))
    il, child, cc = ckd_pub(parent, CC, 3)
    assert il == N - 1 and child == SECP256K1.base_mul(4) and cc == bytes(range(32, 64))


def test_bip32_child_at_infinity_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = SECP256K1.base_mul(5)
    fixed_hmac(monkeypatch, (N - 5).to_bytes(32, "big") + bytes(32))
    with pytest.raises(UsageError, match="child 9 is the point at infinity"):
        ckd_pub(parent, CC, 9)


def test_ed25519_zero_tweak_or_identity_child_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = ED25519.base_mul(5)
    fixed_hmac(monkeypatch, bytes(64))
    with pytest.raises(UsageError, match="child 2 is degenerate"):
        ckd_pub_ed25519(parent, CC, 2)
    fixed_hmac(monkeypatch, L.to_bytes(64, "little"))  # t = L mod L = 0
    with pytest.raises(UsageError, match="child 2 is degenerate"):
        ckd_pub_ed25519(parent, CC, 2)
    fixed_hmac(monkeypatch, (L - 5).to_bytes(64, "little"))  # A + tG at infinity
    with pytest.raises(UsageError, match="child 2 is degenerate"):
        ckd_pub_ed25519(parent, CC, 2)
    fixed_hmac(monkeypatch, (L - 4).to_bytes(64, "little"))
    t, child, _ = ckd_pub_ed25519(parent, CC, 2)
    assert t == L - 4 and child == ED25519.base_mul(1)


def test_ed25519_step_is_the_documented_formula(ed_keys: dict[int, KeyPackage]) -> None:
    """Recomputed with hashlib's HMAC and libsodium's point arithmetic (the docstring's scheme)."""
    parent = ed_keys[1].group_public_key
    for index in (0, 1, 258, HARDENED - 1):
        data = parent.encode() + index.to_bytes(4, "big")
        i = hmac.new(CC, b"TPWC-v1/hd/ed25519" + data, hashlib.sha512).digest()
        want_t = int.from_bytes(i, "little") % L
        tg = sodium.crypto_scalarmult_ed25519_base_noclamp(want_t.to_bytes(32, "little"))
        want_child = sodium.crypto_core_ed25519_add(parent.encode(), tg)
        want_cc = hmac.new(CC, b"TPWC-v1/hd/ed25519-chain" + data, hashlib.sha512).digest()[:32]
        t, child, cc = ckd_pub_ed25519(parent, CC, index)
        assert (t, child.encode(), cc) == (want_t, want_child, want_cc)


# -- extended public keys --------------------------------------------------------------------


def test_fingerprint_is_hash160_and_the_fallback_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    node, _ = parse_xpub(XPUB_M)
    assert node.fingerprint == bytes.fromhex("3442193e")  # BIP-32 vector 1: m's identifier
    data = node.key.encode()
    want = _hash160(data)

    def no_ripemd(name: str, *a: object) -> object:
        raise ValueError(f"unsupported hash type {name}")

    monkeypatch.setattr(hashlib, "new", no_ripemd)
    assert _hash160(data) == want and len(want) == 20


def test_extended_key_field_bounds(secp_keys: dict[int, KeyPackage]) -> None:
    k = secp_keys[1].group_public_key
    ExtendedPublicKey(k, CC, MAX_DEPTH, b"abcd", 2**32 - 1)
    ExtendedPublicKey(k, CC, 1, bytes(4), 0)
    for depth in (-1, 256, True):
        with pytest.raises(UsageError, match=r"depth must be in \[0, 255\]"):
            ExtendedPublicKey(k, CC, depth, b"abcd", 1)
    for fp, child in ((b"abc", 1), (b"abcde", 1), (b"abcd", -1), (b"abcd", 2**32)):
        with pytest.raises(UsageError, match="bad parent fingerprint or child number"):
            ExtendedPublicKey(k, CC, 1, fp, child)
    with pytest.raises(UsageError, match="depth-0 key has no parent"):
        ExtendedPublicKey(k, CC, 0, bytes(4), 1)
    with pytest.raises(UsageError, match="chain code"):
        ExtendedPublicKey(k, bytes(31))


def test_extended_keys_and_derivations_are_frozen() -> None:
    node, _ = parse_xpub(XPUB_M)
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.depth = 3  # type: ignore[misc]
    d = derive(node, "m/1")
    assert isinstance(d, Derivation) and d.public_key == d.node.key
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.tweak = 0  # type: ignore[misc]


def test_child_metadata_and_the_depth_limit(ed_keys: dict[int, KeyPackage]) -> None:
    node, _ = parse_xpub(XPUB_M)
    _, c = node.child(7)
    assert (c.depth, c.parent_fingerprint, c.child_number) == (1, node.fingerprint, 7)
    deep = ExtendedPublicKey(node.key, node.chain_code, MAX_DEPTH - 1, b"abcd", 1)
    _, last = deep.child(0)
    assert last.depth == MAX_DEPTH
    with pytest.raises(UsageError, match="depth 255 reached"):
        last.child(0)
    ed = ExtendedPublicKey(ed_keys[1].group_public_key, CC)
    t, e1 = ed.child(5)
    assert (e1.depth, e1.parent_fingerprint, e1.child_number) == (1, bytes(4), 5)
    assert e1.key == ED25519.base_mul(t) + ed.key
    with pytest.raises(UsageError, match="fingerprints are defined for secp256k1 keys only"):
        _ = ed.fingerprint
    with pytest.raises(UsageError, match="serialization is defined for secp256k1 keys only"):
        ed.serialize()


def test_serialization_layout_and_networks() -> None:
    node, _ = parse_xpub(XPUB_M)
    _, c = node.child(3)
    raw = c.serialize("testnet")
    assert len(raw) == 78
    assert raw[:4] == bytes.fromhex("043587cf") and raw[4] == 1
    assert raw[5:9] == node.fingerprint and raw[9:13] == (3).to_bytes(4, "big")
    assert raw[13:45] == c.chain_code and raw[45:] == c.key.encode()
    assert c.serialize()[:4] == bytes.fromhex("0488b21e")
    with pytest.raises(UsageError, match="network must be one of"):
        c.serialize("regtest")  # type: ignore[arg-type]
    assert parse_xpub(c.to_xpub("testnet")) == (c, "testnet")
    assert parse_xpub(c.to_xpub()) == (c, "mainnet")


def _xpub(version: int, depth: int, fp: bytes, child: int, key: bytes) -> str:
    return base58check_encode(
        version.to_bytes(4, "big") + bytes([depth]) + fp + child.to_bytes(4, "big") + CC + key
    )


def test_xpub_refusals_name_their_field() -> None:
    node, _ = parse_xpub(XPUB_M)
    key = node.key.encode()
    cases = [
        (base58check_encode(node.serialize() + b"\x00"), "length", "must be 78 bytes, got 79"),
        (base58check_encode(node.serialize()[:-1]), "length", "must be 78 bytes, got 77"),
        (_xpub(0x04358394, 0, bytes(4), 0, key), "version", "tprv: extended private keys"),
        (_xpub(0x0488ADE4, 0, bytes(4), 0, key), "version", "xprv: extended private keys"),
        (
            _xpub(0x0488B21F, 0, bytes(4), 0, key),
            "version",
            "unknown extended key version 0x0488b21f",
        ),
        (
            _xpub(0x0488B21E, 0, b"\x00\x00\x00\x01", 0, key),
            "fingerprint",
            "depth 0 with a non-zero",
        ),
        (_xpub(0x0488B21E, 0, bytes(4), 1, key), "child_number", "depth 0 with a non-zero child"),
        (_xpub(0x0488B21E, 1, bytes(4), 0, b"\x05" + key[1:]), "key", ""),
    ]
    for text, fld, msg in cases:
        with pytest.raises(DecodeError, match=msg or None) as e:
            parse_xpub(text)
        assert e.value.field == fld, (fld, str(e.value))
    got, net = parse_xpub(_xpub(0x0488B21E, 1, b"wxyz", 0, key))
    assert net == "mainnet" and (got.depth, got.parent_fingerprint, got.child_number) == (
        1,
        b"wxyz",
        0,
    )
    got, net = parse_xpub(_xpub(0x043587CF, 2, bytes(4), 9, key))
    assert (
        net == "testnet" and got.child_number == 9 and got.chain_code == CC and got.key == node.key
    )


# -- paths of several steps and tweaks ----------------------------------------------------------


def test_derive_depth_limit_and_type() -> None:
    node, _ = parse_xpub(XPUB_M)
    deep = ExtendedPublicKey(node.key, node.chain_code, 250, b"abcd", 1)
    assert derive(deep, [1] * 5).node.depth == 255
    with pytest.raises(UsageError, match="derived depth would exceed 255"):
        derive(deep, [1] * 6)
    with pytest.raises(UsageError, match="expected an ExtendedPublicKey"):
        derive(XPUB_M, "m/1")  # type: ignore[arg-type]
    d = derive(node, ())
    assert d.tweak == 0 and d.node is node and d.path == ()


def test_tweak_sums_modulo_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    node = ExtendedPublicKey(SECP256K1.base_mul(7), CC)
    fixed_hmac(monkeypatch, (N - 1).to_bytes(32, "big") + CC)
    d = derive(node, [0, 0])  # two steps of I_L = n - 1: tweak 2(n - 1) mod n = n - 2
    assert d.tweak == N - 2 and d.public_key == SECP256K1.base_mul(5)


def test_tweak_bounds_and_identity_refused(secp_keys: dict[int, KeyPackage]) -> None:
    pub = secp_keys[1].public
    assert tweak_public_package(pub, 0) == pub
    top = tweak_public_package(pub, N - 1)
    assert top.group_public_key == pub.group_public_key - SECP256K1.generator
    assert top.min_signers == pub.min_signers
    for i in (1, 2, 3):
        assert top.verifying_shares[i] == pub.verifying_shares[i] - SECP256K1.generator
    for bad in (N, -1, True, 1.5):
        with pytest.raises(UsageError, match="tweak must be a scalar"):
            tweak_public_package(pub, bad)  # type: ignore[arg-type]
    g5 = SECP256K1.base_mul(5)
    on_key = PublicKeyPackage(SECP256K1, 2, g5, dict(pub.verifying_shares))
    on_share = PublicKeyPackage(SECP256K1, 2, pub.group_public_key, {**pub.verifying_shares, 2: g5})
    for p in (on_key, on_share):
        with pytest.raises(UsageError, match="is the identity"):
            tweak_public_package(p, N - 5)


def test_tweaked_share_wraps_modulo_the_order(secp_keys: dict[int, KeyPackage]) -> None:
    for key in secp_keys.values():
        child = tweak_key_package(key, N - 1)
        assert 0 <= child.signing_share < N and child.identifier == key.identifier
        assert SECP256K1.base_mul(child.signing_share) == child.verifying_share
        assert child.verifying_share == key.verifying_share - SECP256K1.generator


def test_derivation_entry_points_refuse_other_types(secp_keys: dict[int, KeyPackage]) -> None:
    key = secp_keys[1]
    with pytest.raises(UsageError, match="expected a mpc.shamir.PublicKeyPackage"):
        derive_public_package(key, CC, "m/1")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="expected a mpc.shamir.KeyPackage"):
        derive_key_package(key.public, CC, "m/1")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="expected a mpc.dkls23.EcdsaKeyShare"):
        derive_ecdsa_share(key, CC, "m/1")  # type: ignore[arg-type]
    share = EcdsaKeyShare(key, {}, {})
    child = derive_ecdsa_share(share, CC, "m/1")
    assert child.key == derive_key_package(key, CC, "m/1")
    assert child.key.public == derive_public_package(key.public, CC, "m/1")


# -- Base58Check ---------------------------------------------------------------------------------


def test_base58check_known_answers_and_leading_zeros() -> None:
    # Bitcoin's P2PKH address of HASH160 = 20 zero bytes, version 0 (a widely published value)
    assert base58check_encode(bytes(21)) == "1111111111111111111114oLvT2"
    assert base58check_decode("1111111111111111111114oLvT2") == bytes(21)
    assert base58check_encode(b"") == "3QJmnh"
    assert base58check_decode("3QJmnh") == b""
    for payload in (b"\x00", b"\x00\x00abc", b"\xff" * 5, b"\x01" + bytes(3)):
        text = base58check_encode(payload)
        assert text == embit_base58.encode_check(payload)  # an independent implementation
        assert base58check_decode(text) == payload
        assert text.startswith("1" * (len(payload) - len(payload.lstrip(b"\x00"))))


def test_base58check_refusals_name_the_field() -> None:
    for text, fld in (
        ("", "base58"),
        ("1" * 201, "base58"),
        (b"3QJmnh", "base58"),
        ("1" * 200, "checksum"),  # 200 zero bytes: the length is allowed, the checksum is not
        ("1", "checksum"),
        ("111", "checksum"),
        ("3QJmni", "checksum"),
        ("3QJmn0", "base58"),
    ):
        with pytest.raises(DecodeError) as e:
            base58check_decode(text)  # type: ignore[arg-type]
        assert e.value.field == fld, (text, fld)
    with pytest.raises(DecodeError, match="too short for a checksum"):
        base58check_decode("111")
    with pytest.raises(DecodeError, match="invalid Base58 character '0'"):
        base58check_decode("3QJmn0")
