"""Typed request specs and the field parsers of request bodies.

:meth:`SessionSpec.parse` checks the shape of a session spec (docs/NODE_API.md ``POST
/v1/sessions``) and returns a frozen :class:`SessionSpec`; which protocol it runs is
decided in :mod:`signer_nodes.protocols`. :func:`dkg_context` is the value bound into every
DKG proof. :func:`hex_field` and :func:`sign_request` parse the fields every signing body
(and every batch item) shares; the sign items themselves are
:class:`signer_nodes.pipeline.SignItem`.

Imports: :mod:`signer_nodes.errors`, :mod:`signer_nodes.shares` (the key-id rule).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from custody.domain import NETWORKS
from custody.signing import PATH_MEMBER, SignRequestError, request_path
from mpc.dkls23.batch import MAX_BATCH
from signer_nodes.errors import Kind, NodeError
from signer_nodes.shares import check_key_id

__all__ = ["SESSION_ID_RE", "SessionSpec", "dkg_context", "hex_field", "sign_request"]

SESSION_ID_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_PRESIGN_COUNT = MAX_BATCH  # instances per ecdsa-presign batch session


def hex_field(body: Mapping[str, Any], name: str) -> bytes:
    """A hex string field of a request body as bytes (NodeError bad-request otherwise)."""
    value = body.get(name)
    if not isinstance(value, str):
        raise NodeError(Kind.BAD_REQUEST, f"field {name!r} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise NodeError(Kind.BAD_REQUEST, f"field {name!r} is not hex") from None


def sign_request(raw: Any) -> dict[str, Any]:
    """The ``request`` object of a sign call's body or of one sign-batch item (NodeError
    bad-request otherwise; in a batch it becomes that item's problem)."""
    if not isinstance(raw, dict):
        raise NodeError(Kind.BAD_REQUEST, "each item must be an object")
    req = raw.get("request")
    if not isinstance(req, dict):
        raise NodeError(Kind.BAD_REQUEST, "request must be an object")
    return req


def dkg_context(scheme: str, key_id: str, network: str | None = None) -> bytes:
    """Bound into every DKG proof: a transcript cannot be reused for another key or scheme;
    with a BIP-340 key's ``network``, nodes told different networks cannot agree on a key."""
    ctx = b"tpwc-dkg-v1\x00" + scheme.encode() + b"\x00" + key_id.encode()
    return ctx if network is None else ctx + b"\x00network=" + network.encode()


@dataclass(frozen=True)
class SessionSpec:
    """One protocol session (``kind`` and ``scheme`` are checked by :mod:`.protocols`)."""

    session_id: str
    kind: Any
    key_id: str
    scheme: Any
    threshold: Any
    participants: tuple[int, ...]
    network: str | None = None  # a bip340 DKG: the key's Bitcoin network (custody.domain)
    # an ecdsa-presign for the key's BIP-32 child at this path (issue 13): the node presigns
    # with its share derived for it (custody.signing.request_path checked the spelling)
    derivation_path: str | None = None
    # an ecdsa-presign batch (issue 13): this many independent presignatures in one session
    # (mpc.dkls23.batch); 1 runs the single PresignSession as before
    presign_count: int = 1

    # key ceremonies (signer_nodes.ceremonies): the officers' signed authorization (hex),
    # and for a resharing the key's old verifying shares (party -> hex), which a new member
    # holding no share yet checks against the authorized public key
    authorization: str | None = None
    old_verifying_shares: Mapping[str, str] | None = None

    @property
    def path(self) -> tuple[int, ...]:
        """The derivation path's indices (``()``: the root key)."""
        return request_path({PATH_MEMBER: self.derivation_path})

    @property
    def sid(self) -> bytes:
        return bytes.fromhex(self.session_id)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], me: int) -> SessionSpec:
        """The spec of a request body; ``me`` must be among the participants."""
        sid = raw.get("session_id")
        if not isinstance(sid, str) or not SESSION_ID_RE.fullmatch(sid):
            raise NodeError(Kind.BAD_REQUEST, "session_id must be 64 lower-case hex digits")
        key_id = check_key_id(raw.get("key_id"))
        participants = raw.get("participants")
        if (
            not isinstance(participants, list)
            or not all(type(p) is int for p in participants)
            or me not in participants
        ):
            raise NodeError(
                Kind.BAD_REQUEST, "participants must be a list of party ids including this node"
            )
        network = raw.get("network")
        if network is not None and network not in NETWORKS:
            raise NodeError(Kind.BAD_REQUEST, f"network must be one of {list(NETWORKS)}")
        path = raw.get(PATH_MEMBER)
        if path is not None:
            if raw.get("kind") != "ecdsa-presign":
                raise NodeError(
                    Kind.BAD_REQUEST, "derivation_path applies to an ecdsa-presign session only"
                )
            try:
                request_path({PATH_MEMBER: path})
            except SignRequestError as exc:
                raise NodeError(Kind.BAD_REQUEST, str(exc)) from None
        count = raw.get("presign_count", 1)
        if count != 1 and raw.get("kind") != "ecdsa-presign":
            raise NodeError(
                Kind.BAD_REQUEST, "presign_count applies to an ecdsa-presign session only"
            )
        if type(count) is not int or not 1 <= count <= MAX_PRESIGN_COUNT:
            raise NodeError(
                Kind.BAD_REQUEST, f"presign_count must be an integer 1..{MAX_PRESIGN_COUNT}"
            )
        authorization = raw.get("authorization")
        if authorization is not None and not isinstance(authorization, str):
            raise NodeError(Kind.BAD_REQUEST, "authorization must be a hex string")
        old_vs = raw.get("old_verifying_shares")
        if old_vs is not None and (
            not isinstance(old_vs, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in old_vs.items())
        ):
            raise NodeError(Kind.BAD_REQUEST, "old_verifying_shares must be an object party -> hex")
        return cls(
            derivation_path=path,
            presign_count=count,
            authorization=authorization,
            old_verifying_shares=old_vs,
            network=network,
            session_id=sid,
            kind=raw.get("kind"),
            key_id=key_id,
            scheme=raw.get("scheme"),
            threshold=raw.get("threshold"),
            participants=tuple(sorted(participants)),
        )

    def as_record(self) -> dict[str, Any]:
        """The spec as the store keeps it (and as session results echo it)."""
        return {
            "session_id": self.session_id,
            "kind": self.kind,
            "key_id": self.key_id,
            "scheme": self.scheme,
            "threshold": self.threshold,
            "participants": list(self.participants),
            **({PATH_MEMBER: self.derivation_path} if self.derivation_path else {}),
            **({"presign_count": self.presign_count} if self.presign_count != 1 else {}),
        }
