"""Derivation as a sign request uses it (issue 13), in one process: the coordinator derives
the child's PUBLIC package and each node derives its own SHARE from the same path and root
chain code; they must agree for every scheme (a BIP-340 root with odd Y included), a
presignature made for one path must be useless under another, and a client deriving from
the key's public values as the API shows them (x-only BIP-340 key plus verifying shares)
must get the same child."""

from __future__ import annotations

import hashlib
import os

import coincurve
import nacl.signing
import pytest
from embit.bip32 import HDKey

from custody.signing import (
    child_public_key,
    derive_public,
    encode_public_key,
    request_path,
    root_chain_code,
)
from mpc import frost, hd
from mpc.dkls23 import PresignSession, sign_with_presignature
from mpc.errors import UsageError
from mpc.groups import ED25519, SECP256K1
from mpc.shamir import KeyPackage
from mpc.testing import MemoryLedger, run_dkg_local, run_keygen_local, run_local
from tests.mpc.ceremony_util import ecdsa_sign
from tests.mpc.conftest import sign_with

PATHS = ("m/0/0", "m/0/7", "m/1/3")


def _dkg(group: object) -> dict[int, KeyPackage]:
    return {k.identifier: k for k in run_dkg_local(group, 2, 3)}  # type: ignore[arg-type]


def _api_shares(pub: object, scheme: str) -> dict[str, str]:
    return {str(i): p.encode().hex() for i, p in pub.verifying_shares.items()}  # type: ignore[attr-defined]


@pytest.mark.parametrize("scheme", ["bip340", "ed25519"])
def test_node_shares_and_coordinator_public_package_agree(scheme: str) -> None:
    group = ED25519 if scheme == "ed25519" else SECP256K1
    suite = frost.ciphersuite(scheme)
    seen: set[int] = set()
    for _ in range(24 if scheme == "bip340" else 1):  # BIP-340: odd- and even-Y roots both
        if seen == {2, 3}:
            break
        keys = _dkg(group)
        root = keys[1].public
        seen.add(root.group_public_key.encode()[0])
        for path in PATHS:
            steps = request_path({"derivation_path": path})
            public = derive_public(root, "kid", steps)  # the coordinator's side
            cc = root_chain_code(root, "kid")
            shares = {i: hd.derive_key_package(k, cc, steps) for i, k in keys.items()}  # nodes
            assert all(s.public == public for s in shares.values())
            msg = f"{scheme} {path}".encode()
            sig = sign_with(suite, shares, [1, 3], msg)
            pk = encode_public_key(scheme, public.group_public_key)
            if scheme == "bip340":
                assert coincurve.PublicKeyXOnly(pk).verify(sig, msg)
                xpub = hd.ExtendedPublicKey(root.group_public_key, cc).to_xpub()
                assert HDKey.from_base58(xpub).derive(path).key.sec()[1:] == pk  # embit
            else:
                nacl.signing.VerifyKey(pk).verify(msg, sig)
            # what a client derives from the API's view (x-only / RFC 8032 key + shares)
            api_pk = encode_public_key(scheme, root.group_public_key)
            assert (
                child_public_key(
                    scheme, "kid", api_pk, _api_shares(root, scheme), 2, {"derivation_path": path}
                )
                == pk
            )
    assert scheme != "bip340" or seen == {2, 3}  # odd and even Y (fails with p = 2^-23)


def test_bip340_child_then_bip86_tweak_is_the_order_wallets_use() -> None:
    """BIP-86 wallets derive the child first and taproot-tweak the child's key; the node's
    share pipeline (derive, then :func:`mpc.frost.taproot_tweak`) gives that output key."""
    from custody.kinds.addresses import taproot_output_key

    keys = _dkg(SECP256K1)
    root = keys[1].public
    steps = request_path({"derivation_path": "m/0/7"})
    cc = root_chain_code(root, "kid")
    tweaked = {i: frost.taproot_tweak(hd.derive_key_package(k, cc, steps)) for i, k in keys.items()}
    child_x = encode_public_key("bip340", derive_public(root, "kid", steps).group_public_key)
    q = frost.ciphersuite("bip340").encode_public_key(tweaked[1].public.group_public_key)
    assert q == taproot_output_key(child_x)
    msg = hashlib.sha256(b"sighash").digest()
    sig = sign_with(frost.ciphersuite("bip340"), tweaked, [2, 3], msg)
    assert coincurve.PublicKeyXOnly(q).verify(sig, msg)


def test_a_presignature_for_one_path_is_refused_under_another() -> None:
    root = run_keygen_local(2, 3)
    cc = root_chain_code(root[1].public, "kid")
    a = {i: hd.derive_ecdsa_share(s, cc, (0, 1)) for i, s in root.items()}
    b = {i: hd.derive_ecdsa_share(s, cc, (0, 7)) for i, s in root.items()}
    sid = os.urandom(32)
    pres = run_local({i: PresignSession(a[i], sid, (1, 2)) for i in (1, 2)})
    msg = hashlib.sha256(b"m").digest()
    for other in (b, root):
        with pytest.raises(UsageError, match="another key"):
            sign_with_presignature(pres[1], other[1], msg, ledger=MemoryLedger())
    ecdsa_sign(a, [2, 3], msg)  # the path's own shares sign (coincurve verifies)


def test_child_public_key_refuses_inconsistent_public_values() -> None:
    from custody.signing import SignRequestError

    keys = _dkg(SECP256K1)
    root = keys[1].public
    pk = encode_public_key("bip340", root.group_public_key)
    shares = _api_shares(root, "bip340")
    req = {"derivation_path": "m/1"}
    other = encode_public_key("bip340", _dkg(SECP256K1)[1].public.group_public_key)
    with pytest.raises(SignRequestError, match="do not interpolate"):
        child_public_key("bip340", "kid", other, shares, 2, req)
    with pytest.raises(SignRequestError, match="fewer verifying shares"):
        child_public_key("bip340", "kid", pk, dict(list(shares.items())[:1]), 2, req)
    assert child_public_key("bip340", "kid", pk, shares, 2, {}) == pk  # no path: the root
