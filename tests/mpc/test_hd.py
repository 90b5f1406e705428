"""HD derivation (mpc.hd): BIP-32 CKDpub on shared secp256k1 keys, Ed25519 additive tweak.

Checked against the BIP-32 test vectors where public derivation applies (vendored excerpt,
public keys only), against embit (an independent BIP-32 implementation), and by signing
with derived shares: FROST BIP-340 (coincurve), FROST secp256k1 (py-ecc), FROST Ed25519
(pynacl/cryptography), DKLs23 ECDSA (coincurve). No whole key: child keys are compared
as public keys only.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import cache

import pytest
from embit import bip32 as embit_bip32
from embit import ec as embit_ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc import frost
from mpc.dkls23 import PresignSession, sign_with_presignature
from mpc.errors import DecodeError, UsageError
from mpc.groups import ED25519, SECP256K1, Group, Secp256k1Point
from mpc.hd import (
    HARDENED,
    ExtendedPublicKey,
    HardenedDerivationError,
    base58check_decode,
    base58check_encode,
    chain_code_from_dkg,
    ckd_pub,
    derive,
    derive_ecdsa_share,
    derive_key_package,
    derive_public_package,
    parse_path,
    parse_xpub,
)
from mpc.refresh import RefreshSession
from mpc.reshare import ReshareSession
from mpc.shamir import KeyPackage
from mpc.testing import MemoryLedger, run_dkg_local, run_keygen_local, run_local
from tests.mpc.ceremony_util import ecdsa_sign, every_subset_gives_group_key
from tests.mpc.conftest import VECTORS, sign_with

# -- BIP-32 test vectors (public part) ------------------------------------------------------


def bip32_vectors() -> tuple[dict[int, list[tuple[str, str]]], list[tuple[str, str]]]:
    """Vectors 1-4 as ``[(path, xpub)]`` and vector 5 as ``[(xpub, reason)]``."""
    chains: dict[int, list[tuple[str, str]]] = {}
    invalid: list[tuple[str, str]] = []
    vector, path = 0, ""
    for line in (VECTORS / "bip32" / "test-vectors-public.txt").read_text().splitlines():
        if m := re.match(r"===Test vector (\d)===", line):
            vector = int(m[1])
        elif line.startswith("* Chain "):
            path = line[len("* Chain ") :].replace("<sub>H</sub>", "H")
        elif line.startswith("** ext pub: "):
            chains.setdefault(vector, []).append((path, line[len("** ext pub: ") :]))
        elif vector == 5 and (m := re.match(r"\* (\S+) \((.*)\)$", line)):
            invalid.append((m[1], m[2]))
    return chains, invalid


CHAINS, INVALID = bip32_vectors()
STEPS = [
    (v, a, b)
    for v, chain in CHAINS.items()
    for (pa, a), (pb, b) in zip(chain, chain[1:], strict=False)
]


def test_vector_excerpt_is_complete() -> None:
    assert sorted(CHAINS) == [1, 2, 3, 4] and len(INVALID) == 8
    assert sum(1 for *_, b in STEPS if not b.endswith("H")) > 0


@pytest.mark.parametrize(("vector", "parent", "child"), STEPS)
def test_bip32_vectors_public_steps(vector: int, parent: str, child: str) -> None:
    """Each step of vectors 1-4: a non-hardened one matches, a hardened one is refused."""
    chain = dict((x, p) for p, x in CHAINS[vector])
    step = chain[child].rsplit("/", 1)[1]
    node, net = parse_xpub(parent)
    assert net == "mainnet" and node.to_xpub() == parent  # parse/serialize round trip
    if step.endswith("H"):
        with pytest.raises(HardenedDerivationError, match="hardened"):
            derive(node, f"m/{step}")
        return
    d = derive(node, [int(step)])
    assert d.node.to_xpub() == child
    assert d.node.parent_fingerprint == node.fingerprint


@pytest.mark.parametrize(("xpub", "reason"), INVALID, ids=[r for _, r in INVALID])
def test_bip32_vector_5_invalid_keys_refused(xpub: str, reason: str) -> None:
    with pytest.raises(DecodeError):
        parse_xpub(xpub)


# -- independent cross-check with embit ------------------------------------------------------


@cache
def root_key(group_name: str) -> dict[int, KeyPackage]:
    group = ED25519 if group_name == "ed25519" else SECP256K1
    return {k.identifier: k for k in run_dkg_local(group, 2, 3, context=b"hd-root")}


def embit_root(node: ExtendedPublicKey) -> embit_bip32.HDKey:
    """The same root built in embit from the raw key and chain code (not from our string)."""
    return embit_bip32.HDKey(embit_ec.PublicKey.parse(node.key.encode()), node.chain_code)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, HARDENED - 1), max_size=5))
def test_property_matches_embit(path: list[int]) -> None:
    keys = root_key("secp256k1")
    root = ExtendedPublicKey(keys[1].group_public_key, chain_code_from_dkg(keys[1].public))
    ours = derive(root, path)
    theirs = embit_root(root).derive(path)
    assert ours.node.to_xpub() == theirs.to_base58()
    assert ours.node.to_xpub("testnet") == theirs.to_base58(version=bytes.fromhex("043587cf"))
    assert SECP256K1.base_mul(ours.tweak) + root.key == ours.public_key


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(["secp256k1", "ed25519"]),
    st.lists(st.integers(0, HARDENED - 1), max_size=3),
    st.lists(st.integers(0, HARDENED - 1), max_size=3),
)
def test_property_tweaks_add_up_along_a_path(group_name: str, a: list[int], b: list[int]) -> None:
    keys = root_key(group_name)
    root = ExtendedPublicKey(keys[1].group_public_key, chain_code_from_dkg(keys[1].public))
    whole = derive(root, a + b)
    first = derive(root, a)
    second = derive(first.node, b)
    assert whole.node == second.node
    assert whole.tweak == (first.tweak + second.tweak) % root.group.order


# -- signing with derived shares -------------------------------------------------------------


@pytest.mark.parametrize("suite_name", ["bip340", "secp256k1"])
def test_frost_signs_with_derived_secp256k1_shares(suite_name: str) -> None:
    suite = frost.ciphersuite(suite_name)
    keys = root_key("secp256k1")
    cc = chain_code_from_dkg(keys[1].public)
    path = "m/0/7/42"
    child = {i: derive_key_package(k, cc, path) for i, k in keys.items()}
    pub = derive_public_package(keys[1].public, cc, path)  # the coordinator's side
    assert all(k.public == pub for k in child.values())
    assert every_subset_gives_group_key(pub)
    assert (
        pub.group_public_key.encode()
        == embit_root(ExtendedPublicKey(keys[1].group_public_key, cc)).derive([0, 7, 42]).key.sec()
    )
    for k in child.values():
        assert k.group.base_mul(k.signing_share) == k.verifying_share
    sign_with(suite, child, [1, 3], b"derived child")  # verified by coincurve / py-ecc


def test_bip340_child_with_odd_and_even_y_both_sign() -> None:
    """BIP-32 works on full points; the BIP-340 suite negates an odd-Y child at signing."""
    suite = frost.ciphersuite("bip340")
    keys = root_key("secp256k1")
    cc = chain_code_from_dkg(keys[1].public)
    seen: dict[bool, int] = {}
    for i in range(64):
        y = derive_public_package(keys[1].public, cc, [i]).group_public_key
        assert isinstance(y, Secp256k1Point)
        seen.setdefault(y.has_even_y(), i)
        if len(seen) == 2:
            break
    assert set(seen) == {True, False}
    for index in seen.values():
        child = {i: derive_key_package(k, cc, [index]) for i, k in keys.items()}
        sign_with(suite, child, [2, 3], b"parity")


def test_ed25519_additive_derivation_signs() -> None:
    suite = frost.ciphersuite("ed25519")
    keys = root_key("ed25519")
    cc = chain_code_from_dkg(keys[1].public)
    child = {i: derive_key_package(k, cc, "m/3/1") for i, k in keys.items()}
    other = derive_public_package(keys[1].public, cc, "m/3/2")
    assert child[1].group_public_key not in (keys[1].group_public_key, other.group_public_key)
    assert every_subset_gives_group_key(child[1].public)
    sign_with(suite, child, [1, 2], b"ed25519 child")  # pynacl + cryptography
    with pytest.raises(UsageError, match="secp256k1"):
        derive(ExtendedPublicKey(keys[1].group_public_key, cc), [1]).node.to_xpub()


def test_dkls23_signs_with_a_derived_share_and_refuses_a_root_presignature() -> None:
    """ECDSA: the share is derived before presigning (Groth-Shoup 2022); OT seeds kept."""
    root = run_keygen_local(2, 3)
    cc = chain_code_from_dkg(root[1].public)
    child = {i: derive_ecdsa_share(s, cc, "m/44/0/5") for i, s in root.items()}
    assert child[1].bob is root[1].bob and child[1].key_id != root[1].key_id
    node = ExtendedPublicKey(root[1].group_public_key, cc)
    want = embit_root(node).derive([44, 0, 5]).key.sec()
    assert child[2].group_public_key.encode() == want
    msg = hashlib.sha256(b"ecdsa under a derived key").digest()
    ecdsa_sign(child, [1, 3], msg)  # coincurve: verify + recovery against the child key
    sid = os.urandom(32)
    pres = run_local({i: PresignSession(root[i], sid, (1, 3)) for i in (1, 3)})
    with pytest.raises(UsageError, match="another key"):  # a root presignature for a child
        sign_with_presignature(pres[1], child[1], msg, ledger=MemoryLedger())


# -- the chain code survives ceremonies -----------------------------------------------------


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
def test_chain_code_and_children_unchanged_by_refresh_and_reshare(group: Group) -> None:
    keys = {k.identifier: k for k in run_dkg_local(group, 2, 3)}
    cc = chain_code_from_dkg(keys[1].public, b"key-1")
    assert all(chain_code_from_dkg(k.public, b"key-1") == cc for k in keys.values())
    assert chain_code_from_dkg(keys[1].public, b"key-2") != cc
    before = derive_public_package(keys[1].public, cc, "m/9").group_public_key

    sid = os.urandom(32)
    refreshed = run_local({i: RefreshSession(k, sid) for i, k in keys.items()})
    sid = os.urandom(32)
    old = keys[1].public
    dealt = {p: keys[p] for p in (1, 3)}
    res = run_local(
        {
            p: ReshareSession(sid, p, old, [1, 3], [1, 2, 4], 2, key=dealt.get(p))
            for p in (1, 2, 3, 4)
        }
    )
    reshared = {p: r.key for p, r in res.items() if r.key is not None}
    suite = frost.ciphersuite("ed25519" if group is ED25519 else "bip340")
    for epoch, signers in ((refreshed, [1, 2]), (reshared, [2, 4])):
        assert chain_code_from_dkg(epoch[signers[0]].public, b"key-1") == cc
        child = {i: derive_key_package(epoch[i], cc, "m/9") for i in signers}
        assert child[signers[0]].group_public_key == before
        sign_with(suite, child, signers, b"same address after the ceremony")


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["m/0'", "m/1/2h", "0H", [HARDENED], [1, HARDENED + 5], "m/2147483648"]
)
def test_hardened_steps_refused(path: str | list[int]) -> None:
    with pytest.raises(HardenedDerivationError, match="hardened derivation needs the whole") as e:
        parse_path(path)
    assert e.value.index >= HARDENED and e.value.position >= 1
    keys = root_key("secp256k1")
    with pytest.raises(HardenedDerivationError):
        derive_key_package(keys[1], bytes(32), path)
    with pytest.raises(HardenedDerivationError):
        ckd_pub(keys[1].group_public_key, bytes(32), HARDENED)


@pytest.mark.parametrize(
    "path", ["m/01", "m//1", "m/x", "m/-1", "m/1/", "n/1", [-1], [2**32], ["1"], "m/１"]
)
def test_malformed_paths_refused(path: object) -> None:
    with pytest.raises(UsageError):
        parse_path(path)  # type: ignore[arg-type]


def test_paths_parse() -> None:
    assert parse_path("m") == () and parse_path("m/0/1") == (0, 1) and parse_path("5") == (5,)
    assert parse_path((2**31 - 1,)) == (2**31 - 1,)
    with pytest.raises(UsageError, match="at most 255"):
        parse_path([0] * 256)


def test_malformed_chain_code_and_keys_refused() -> None:
    keys = root_key("secp256k1")
    for cc in (b"", bytes(31), bytes(33)):
        with pytest.raises(UsageError, match="chain code"):
            derive_key_package(keys[1], cc, "m/0")
    with pytest.raises(UsageError, match="secp256k1"):
        ckd_pub(root_key("ed25519")[1].group_public_key, bytes(32), 0)
    with pytest.raises(UsageError, match="identity"):
        ExtendedPublicKey(SECP256K1.identity, bytes(32))
    with pytest.raises(UsageError, match="depth-0"):
        ExtendedPublicKey(keys[1].group_public_key, bytes(32), 0, b"abcd", 0)


def _raw_xpub(version: int, depth: int = 0, key: bytes | None = None) -> str:
    k = key if key is not None else root_key("secp256k1")[1].group_public_key.encode()
    body = version.to_bytes(4, "big") + bytes([depth]) + bytes(8) + bytes(range(32)) + k
    return base58check_encode(body)


def test_xpub_parsing_refusals_name_the_field() -> None:
    with pytest.raises(DecodeError, match="private keys are refused") as ei:
        _ = parse_xpub(_raw_xpub(0x0488ADE4, key=bytes(1) + bytes(range(1, 33))))
    assert ei.value.field == "version"
    with pytest.raises(DecodeError, match="unknown extended key version"):
        parse_xpub(_raw_xpub(0x01020304))
    with pytest.raises(DecodeError) as ei:
        parse_xpub(_raw_xpub(0x0488B21E, key=b"\x04" + bytes(32)))
    assert ei.value.field == "key"
    good = _raw_xpub(0x043587CF)
    node, net = parse_xpub(good)
    assert net == "testnet" and good.startswith("tpub") and node.to_xpub("testnet") == good
    broken = good[:-1] + ("1" if good[-1] != "1" else "2")
    with pytest.raises(DecodeError) as ei:
        parse_xpub(broken)
    assert ei.value.field == "checksum"
    with pytest.raises(DecodeError) as ei:
        parse_xpub(base58check_encode(bytes(77)))
    assert ei.value.field == "length"
    with pytest.raises(DecodeError, match="Base58 character"):
        parse_xpub("xpub0OIl")
    assert base58check_decode(base58check_encode(b"\x00\x00abc")) == b"\x00\x00abc"


# -- garbage only ever raises DecodeError ------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=120),
        st.binary(max_size=90).map(base58check_encode),
        st.sampled_from([v for v, _ in INVALID] + [x for c in CHAINS.values() for _, x in c]).map(
            lambda s: s[:-3] + "zzz"
        ),
    )
)
def test_parse_xpub_garbage_raises_only_decode_error(text: str) -> None:
    try:
        parse_xpub(text)
    except DecodeError as exc:
        assert exc.field


def test_derived_key_then_taproot_tweak_signs_for_the_output_key() -> None:
    """Per-path P2TR: derive the internal key by BIP-32, then the BIP-341 tweak on top."""
    from mpc.frost import taproot_tweak

    suite = frost.ciphersuite("bip340")
    keys = root_key("secp256k1")
    cc = chain_code_from_dkg(keys[1].public)
    out = {i: taproot_tweak(derive_key_package(k, cc, "m/0/3")) for i, k in keys.items()}
    pub = taproot_tweak(derive_public_package(keys[1].public, cc, "m/0/3"))
    assert out[1].public == pub
    sign_with(suite, out, [1, 2], b"key-path spend")  # coincurve under x(Q)
