"""HD derivation of an active key's public side (:mod:`mpc.hd`): child keys, addresses, xpub.

Public values only: the root is the key's group key (interpolated from its verifying
shares, so a BIP-340 key's point has its true Y parity) with the chain code
:func:`mpc.hd.chain_code_from_dkg` under :func:`custody.ceremonies.hd_context`. Non-hardened
steps only (a hardened one needs the whole parent private key, which never exists): such a
path is refused with 422 ``hardened-derivation``. secp256k1 keys (ECDSA, BIP-340) derive by
BIP-32 CKDpub and export a BIP-32 ``xpub`` (``tpub`` for a BIP-340 key on a test network);
Ed25519 keys by the additive-tweak scheme of :mod:`mpc.hd` (documented there with its
limits; no standard serialization, so no xpub).

:func:`signing_key` is the child :class:`KeyInfo` a sign request with a
``derivation_path`` signs under (issue 13): the same key id, nodes and threshold, the child's
public key and verifying shares (public values only; each node derives its own share tweak
from the path, the coordinator never sends one). Aggregation, the BIP-86 tweak of a
``btc-psbt`` request, ECDSA combination, the checks of ``evm-tx`` recovery, receipts and the
stored signature all use it, so everything is checked under the child key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from api import crypto
from api.coordinator.types import KeyInfo
from api.problems import Problem
from custody.ceremonies import hd_context
from custody.kinds import KindError
from custody.kinds.addresses import bitcoin_p2tr_address, ethereum_address
from custody.signing import PATH_MEMBER
from mpc import frost, hd
from mpc.errors import MpcError
from mpc.groups import SECP256K1
from mpc.shamir import PublicKeyPackage

__all__ = ["derive", "xpub", "signing_key"]


def _public(key: KeyInfo) -> PublicKeyPackage:
    return crypto.public_key_package(
        key.scheme, key.public_key, key.verifying_shares, key.threshold
    )


def _root(key: KeyInfo) -> hd.ExtendedPublicKey:
    pub = _public(key)
    return hd.ExtendedPublicKey(
        pub.group_public_key, hd.chain_code_from_dkg(pub, hd_context(key.id))
    )


def _network(key: KeyInfo) -> hd.Network:
    return "mainnet" if key.network in (None, "mainnet") else "testnet"


def _encode(key: KeyInfo, node: hd.ExtendedPublicKey) -> str:
    if key.scheme == "ecdsa-secp256k1":
        return node.key.encode().hex()
    return frost.ciphersuite(key.scheme).encode_public_key(node.key).hex()


def _addresses(key: KeyInfo, public_key: str) -> dict[str, str]:
    try:
        if key.scheme == "ecdsa-secp256k1":
            return {"ethereum": ethereum_address(bytes.fromhex(public_key))}
        if key.scheme == "bip340":
            return {
                "bitcoin": bitcoin_p2tr_address(bytes.fromhex(public_key), key.network or "mainnet")
            }
    except (KindError, ValueError):
        pass
    return {}


def derive(key: KeyInfo, path: str) -> dict[str, Any]:
    """The child at ``path``: public key, addresses, and for secp256k1 its xpub."""
    try:
        d = hd.derive(_root(key), path)
    except hd.HardenedDerivationError as exc:
        raise Problem(
            422, "hardened-derivation", "Hardened derivation refused", str(exc), field="path"
        ) from None
    except MpcError as exc:
        raise Problem(
            422, "invalid-path", "Invalid derivation path", str(exc), field="path"
        ) from None
    pk = _encode(key, d.node)
    out: dict[str, Any] = {
        "key_id": key.id,
        "scheme": key.scheme,
        "path": hd.format_path(d.path),
        "public_key": pk,
        "addresses": _addresses(key, pk),
    }
    if d.node.group is SECP256K1:
        out["xpub"] = d.node.to_xpub(_network(key))
    return out


def xpub(key: KeyInfo) -> dict[str, Any]:
    """The key's root extended public key (BIP-32 serialization; secp256k1 keys only)."""
    root = _root(key)
    if root.group is not SECP256K1:
        raise Problem(
            422,
            "no-xpub",
            "No extended public key",
            "BIP-32 serialization is defined for secp256k1 keys only; an ed25519 key derives "
            "by the additive-tweak scheme (GET /v1/keys/{id}/derive) and has no xpub",
        )
    return {
        "key_id": key.id,
        "scheme": key.scheme,
        "xpub": root.to_xpub(_network(key)),
        "chain_code": root.chain_code.hex(),
    }


def signing_key(key: KeyInfo, body: Mapping[str, Any]) -> KeyInfo:
    """The key ``body`` signs under: ``key`` itself, or its child at the body's
    ``derivation_path`` (module docstring). Idempotent (a child key for the same path is
    returned as is). Raises :class:`custody.signing.SignRequestError` for a bad path."""
    path = body.get(PATH_MEMBER)
    if key.derivation_path is not None:
        if path != key.derivation_path:
            raise ValueError(f"key is the child at {key.derivation_path}, not at {path}")
        return key
    if path is None:
        return key
    pk, shares = crypto.public_key_at(
        key.id, key.scheme, key.public_key, key.verifying_shares, key.threshold, body
    )
    return dataclasses.replace(
        key, public_key=pk, verifying_shares=shares, derivation_path=str(path)
    )
