"""Which protocol object a session runs, and what the node keeps from its result.

Glue between a typed session spec (:class:`signer_nodes.specs.SessionSpec`, from
docs/NODE_API.md ``POST /v1/sessions``) and the sans-IO protocol objects of :mod:`mpc`.
FROST DKGs are handled here; ECDSA key setup and presigning in :mod:`signer_nodes.ecdsa`.
Secret results (a :class:`~mpc.shamir.KeyPackage`, an ECDSA key share, a presignature) go
straight to sealed storage (:mod:`signer_nodes.shares`); only public values are returned.

Imports: :mod:`signer_nodes.ecdsa`, ``.errors``, ``.shares``, ``.specs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from custody.domain import FROST_SCHEMES as DOMAIN_FROST
from custody.domain import spec
from mpc import frost, keyio
from mpc.dkg import DkgSession
from mpc.dkls23.keysetup import KeygenChain
from mpc.errors import MpcError
from mpc.groups import ED25519, SECP256K1
from mpc.shamir import KeyPackage, PublicKeyPackage
from mpc.wire import Message
from signer_nodes import ecdsa
from signer_nodes.errors import Kind, NodeError
from signer_nodes.shares import ShareStore
from signer_nodes.specs import SessionSpec, dkg_context

__all__ = [
    "FROST_SCHEMES",
    "ProtocolSession",
    "SessionFactory",
    "Protocols",
    "frost_suite",
    "load_key_package",
    "dump_key_package",
    "dump_public_package",
    "public_result",
]

# the group of each FROST scheme of the domain (custody.domain.FROST_SCHEMES)
FROST_SCHEMES = {
    s: {"ed25519": ED25519, "secp256k1": SECP256K1}[spec(s).curve] for s in DOMAIN_FROST
}


class ProtocolSession(Protocol):
    """What the session host drives: a :class:`mpc.session.RoundSession` or a composite
    session such as :class:`mpc.dkls23.keysetup.KeygenChain`."""

    @property
    def protocol(self) -> str: ...

    @property
    def done(self) -> bool: ...

    @property
    def result(self) -> Any: ...

    def waiting_for(self) -> tuple[int, ...]: ...

    def start(self) -> list[Message]: ...

    def receive(self, msg: Message) -> list[Message]: ...


class SessionFactory(Protocol):
    """What the session host asks for a new session and a finished or failed one."""

    def new_session(self, spec: SessionSpec) -> ProtocolSession: ...

    def accepts(self, spec: SessionSpec, rs: ProtocolSession) -> Mapping[str, bytes]: ...

    def finish(self, spec: SessionSpec, rs: ProtocolSession) -> dict[str, Any]: ...

    def on_failure(self, spec: SessionSpec, exc: MpcError) -> None: ...


def frost_suite(scheme: str) -> frost.Ciphersuite:
    if scheme not in FROST_SCHEMES:
        raise NodeError(Kind.WRONG_SCHEME, f"key scheme {scheme!r} is not a FROST scheme")
    return frost.ciphersuite(scheme)


class Protocols:
    """The node's :class:`SessionFactory`: party ``me`` over its share store."""

    def __init__(self, me: int, shares: ShareStore) -> None:
        self.me = me
        self.shares = shares

    def new_session(self, spec: SessionSpec) -> ProtocolSession:
        """The protocol object for ``spec`` (NodeError, or MpcError for bad parameters)."""
        if spec.kind == "dkg":
            if self.shares.exists(spec.key_id):
                raise NodeError(Kind.KEY_EXISTS, f"key {spec.key_id!r} already exists on this node")
            if spec.network is not None and spec.scheme != "bip340":
                raise NodeError(Kind.BAD_REQUEST, "network applies to the DKG of a bip340 key")
            if spec.scheme in FROST_SCHEMES:
                return DkgSession(
                    FROST_SCHEMES[spec.scheme],
                    spec.sid,
                    self.me,
                    list(spec.participants),
                    spec.threshold,
                    dkg_context(spec.scheme, spec.key_id, spec.network),
                )
            if spec.scheme == ecdsa.SCHEME:
                return ecdsa.keygen_session(spec, self.me)
            raise NodeError(Kind.BAD_REQUEST, f"unknown scheme {spec.scheme!r}")
        if spec.kind == "ecdsa-presign":
            return ecdsa.presign_session(spec, self.shares)
        raise NodeError(Kind.BAD_REQUEST, f"unknown session kind {spec.kind!r}")

    def accepts(self, spec: SessionSpec, rs: ProtocolSession) -> Mapping[str, bytes]:
        """Protocol name -> session id of every protocol ``rs`` runs (for envelopes)."""
        if isinstance(rs, KeygenChain):
            return rs.accepts
        return {rs.protocol: spec.sid}

    def finish(self, spec: SessionSpec, rs: ProtocolSession) -> dict[str, Any]:
        """Persist a finished session's secret result (sealed); return its public result."""
        if spec.kind == "dkg" and spec.scheme in FROST_SCHEMES:
            kp: KeyPackage = rs.result
            pub = kp.public
            suite = frost.ciphersuite(spec.scheme)
            if spec.scheme == "bip340":  # recorded first: a share never lacks its network
                self.shares.set_network(spec.key_id, spec.network or "mainnet")
            self.shares.store_share(
                spec.key_id,
                spec.scheme,
                dump_key_package(kp),
                suite.encode_public_key(pub.group_public_key),
                dump_public_package(pub),
            )
            out = public_result(spec.key_id, spec.scheme, pub)
            if spec.scheme == "bip340":
                out["network"] = spec.network or "mainnet"
            return out
        return ecdsa.finish(spec, rs.result, self.shares)

    def on_failure(self, spec: SessionSpec, exc: MpcError) -> None:
        ecdsa.on_failure(spec, exc, self.me, self.shares)


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
