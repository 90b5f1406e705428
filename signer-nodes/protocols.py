"""Which protocol object a session runs, and what the node keeps from its result.

Glue between the HTTP-level session spec (docs/NODE_API.md ``POST /v1/sessions``) and the
sans-IO protocol objects of :mod:`mpc`. Secret results (a :class:`~mpc.shamir.KeyPackage`,
an ECDSA key share, a presignature) go straight to sealed storage; only public values are
returned in the session result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mpc import frost, keyio
from mpc.dkg import DkgSession
from mpc.groups import ED25519, SECP256K1
from mpc.session import RoundSession
from mpc.shamir import KeyPackage, PublicKeyPackage

if TYPE_CHECKING:
    from signer_nodes.node import Node

__all__ = [
    "SetupError",
    "new_session",
    "finish",
    "frost_suite",
    "load_key_package",
    "dump_key_package",
    "dump_public_package",
]

FROST_SCHEMES = {"ed25519": ED25519, "bip340": SECP256K1}


class SetupError(Exception):
    def __init__(self, status: int, kind: str, detail: str) -> None:
        self.status, self.kind, self.detail = status, kind, detail
        super().__init__(detail)


def frost_suite(scheme: str) -> frost.Ciphersuite:
    if scheme not in FROST_SCHEMES:
        raise SetupError(422, "wrong-scheme", f"key scheme {scheme!r} is not a FROST scheme")
    return frost.ciphersuite(scheme)


def dkg_context(scheme: str, key_id: str) -> bytes:
    """Bound into every DKG proof: a transcript cannot be reused for another key or scheme."""
    return b"tpwc-dkg-v1\x00" + scheme.encode() + b"\x00" + key_id.encode()


def new_session(node: Node, info: dict[str, Any]) -> RoundSession[Any]:
    """Build the protocol object for a session spec (validated here, typed errors)."""
    kind, scheme, t = info["kind"], info["scheme"], info["threshold"]
    sid = bytes.fromhex(info["session_id"])
    if kind == "dkg":
        if node.store.get_key(info["key_id"]) is not None:
            raise SetupError(
                409, "key-exists", f"key {info['key_id']!r} already exists on this node"
            )
        if scheme in FROST_SCHEMES:
            return DkgSession(
                FROST_SCHEMES[scheme],
                sid,
                node.party_id,
                info["participants"],
                t,
                dkg_context(scheme, info["key_id"]),
            )
        if scheme == "ecdsa-secp256k1":
            from signer_nodes import ecdsa

            chain: RoundSession[Any] = ecdsa.keygen_session(node, info)
            return chain
        raise SetupError(422, "bad-request", f"unknown scheme {scheme!r}")
    if kind == "ecdsa-presign":
        from signer_nodes import ecdsa

        return ecdsa.presign_session(node, info)
    raise SetupError(422, "bad-request", f"unknown session kind {kind!r}")


def finish(node: Node, info: dict[str, Any], rs: RoundSession[Any]) -> dict[str, Any]:
    """Persist a finished session's secret result (sealed) and return its public result."""
    if info["kind"] == "dkg" and info["scheme"] in FROST_SCHEMES:
        kp: KeyPackage = rs.result
        pub = kp.public
        suite = frost.ciphersuite(info["scheme"])
        node.store_share(
            info["key_id"],
            info["scheme"],
            dump_key_package(kp),
            suite.encode_public_key(pub.group_public_key),
            dump_public_package(pub),
        )
        return public_result(info["key_id"], info["scheme"], pub)
    from signer_nodes import ecdsa

    return ecdsa.finish(node, info, rs)


def public_result(key_id: str, scheme: str, pub: PublicKeyPackage) -> dict[str, Any]:
    suite = frost.ciphersuite(scheme)
    return {
        "key_id": key_id,
        "scheme": scheme,
        "public_key": suite.encode_public_key(pub.group_public_key).hex(),
        "group_public_key": pub.group_public_key.encode().hex(),
        "min_signers": pub.min_signers,
        "verifying_shares": {
            str(i): p.encode().hex() for i, p in sorted(pub.verifying_shares.items())
        },
    }


# -- key package storage encoding (mpc.keyio) ---------------------------------------------


def dump_public_package(pub: PublicKeyPackage) -> bytes:
    return keyio.encode_public_key_package(pub)


def dump_key_package(kp: KeyPackage) -> bytes:
    return keyio.encode_key_package(kp)


def load_key_package(data: bytes) -> KeyPackage:
    """Decode a share this node sealed itself (GCM-authenticated, checked when stored)."""
    return keyio.decode_key_package(data, check=False)
