"""Key ceremonies on an existing key: proactive refresh, with commit-when-all-done.

A refresh runs as a protocol session of kind ``refresh`` (docs/NODE_API.md ``POST
/v1/sessions``), hosted like a DKG by :class:`~signer_nodes.sessions.SessionHost`;
:class:`CeremonyFactory` is the session factory that adds it in front of
:class:`~signer_nodes.protocols.Protocols`:

* FROST keys (bip340, ed25519) run :class:`mpc.refresh.RefreshSession`;
* ECDSA keys run :class:`mpc.dkls23.resetup.OtResetupChain` (the refresh, then a fresh
  base-OT setup for every pair), whose result is the new :class:`~mpc.dkls23.EcdsaKeyShare`.

Authorization (docs/SECURITY.md, "Key ceremonies"): the request carries the coordinator
signature (every node route, :mod:`signer_nodes.service`); the node refuses unless the
participants are exactly the key's committee as pinned at its DKG, every member is still
in the active governance roster with the pinned identity key
(:meth:`~signer_nodes.anchor.Anchor.check_committee`), and the threshold is the key's own.

Share versions. The key's row in ``keys`` holds the **active** share and its
``share_version`` (1 after the DKG). A finished refresh seals the new share under the AAD
of version ``v + 1`` and keeps it **beside** the active one (meta ``pending-share:KEY``);
signing goes on with the active share. The node then signs a *done statement* (its
identity key) over the ceremony's public outcome. The switch (:meth:`Ceremonies.commit`)
happens only on ``POST /v1/keys/{id}/commit`` carrying the done statements of **every**
committee member, each verified against the identity key pinned in the committee: one
transaction swaps the pending share in, and at once every outstanding nonce and
presignature of the key is dropped from memory. A failed or interrupted refresh leaves
the active share untouched (the pending one is overwritten by the next refresh; a seal-key
rotation rewraps it, :mod:`signer_nodes.rotation`); a commit
interrupted anywhere is retried (idempotent: a node already on the new version answers
``committed``). The signed statements are the ceremony's transcript, kept by the
coordinator.

Imports: :mod:`signer_nodes.anchor`, ``.ecdsa``, ``.errors``, ``.faults``, ``.logs``,
``.protocols``, ``.shares``, ``.specs``, ``.vault``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from custody.ceremonies import done_statement, verify_transcript
from mpc import dkls23, frost, keyio
from mpc.dkls23.resetup import OtResetupChain
from mpc.errors import MpcError
from mpc.refresh import RefreshSession
from mpc.shamir import KeyPackage, PublicKeyPackage
from signer_nodes import ecdsa, logs, vault
from signer_nodes.anchor import Anchor
from signer_nodes.errors import Kind, NodeError
from signer_nodes.faults import NO_FAULTS, FaultHooks
from signer_nodes.protocols import (
    FROST_SCHEMES,
    Protocols,
    ProtocolSession,
    dump_key_package,
    dump_public_package,
    load_key_package,
    public_result,
)
from signer_nodes.shares import ShareStore
from signer_nodes.specs import SessionSpec

__all__ = [
    "KINDS",
    "CeremonyFactory",
    "Ceremonies",
    "done_statement",
    "refresh_context",
]

#: session kinds this module runs
KINDS = ("refresh",)


def refresh_context(scheme: str, key_id: str, share_version: int) -> bytes:
    """Bound into every echo digest of a refresh: a transcript cannot be replayed for
    another key, scheme or epoch."""
    return (
        b"tpwc-refresh-v1\x00"
        + scheme.encode()
        + b"\x00"
        + key_id.encode()
        + b"\x00"
        + str(share_version).encode()
    )


def _pending_meta(key_id: str) -> str:
    return "pending-share:" + key_id


class CeremonyFactory:
    """A :class:`~signer_nodes.protocols.SessionFactory`: ceremonies here, the rest to
    ``inner``."""

    def __init__(
        self,
        inner: Protocols,
        shares: ShareStore,
        anchor: Anchor,
        sign: Any,
        faults: FaultHooks = NO_FAULTS,
    ) -> None:
        self.inner = inner
        self.me = inner.me
        self.shares = shares
        self.anchor = anchor
        self.sign = sign  # the node identity key's statement signer
        self.faults = faults

    # -- the SessionFactory protocol ------------------------------------------------------
    def new_session(self, spec: SessionSpec) -> ProtocolSession:
        if spec.kind not in KINDS:
            return self.inner.new_session(spec)
        row = self.shares.row(spec.key_id)
        if spec.scheme != row.scheme:
            raise NodeError(
                Kind.WRONG_SCHEME, f"key {row.key_id!r} is {row.scheme}, not {spec.scheme!r}"
            )
        self.check_ceremony(spec)
        version = row.share_version + 1
        ctx = refresh_context(row.scheme, row.key_id, version)
        plain = self.shares.unseal_share(row)
        if row.scheme in FROST_SCHEMES:
            kp = load_key_package(plain)
            del plain
            return RefreshSession(kp, spec.sid, list(spec.participants), ctx)
        ecdsa.check_scheme(row.key_id, row.scheme)
        share = dkls23.EcdsaKeyShare.from_bytes(plain)
        del plain
        return OtResetupChain(RefreshSession(share.key, spec.sid, list(spec.participants), ctx))

    def accepts(self, spec: SessionSpec, rs: ProtocolSession) -> Mapping[str, bytes]:
        if isinstance(rs, OtResetupChain):
            return rs.accepts
        return self.inner.accepts(spec, rs)

    def finish(self, spec: SessionSpec, rs: ProtocolSession) -> dict[str, Any]:
        if spec.kind not in KINDS:
            return self.inner.finish(spec, rs)
        row = self.shares.row(spec.key_id)
        version = row.share_version + 1
        if row.scheme in FROST_SCHEMES:
            kp: KeyPackage = rs.result
            share_bytes, pub = dump_key_package(kp), kp.public
        else:
            share: dkls23.EcdsaKeyShare = rs.result
            share_bytes, pub = share.to_bytes(), share.public
        public_info = dump_public_package(pub)
        if public_key_of(row.scheme, pub) != row.public_key:  # RefreshSession checks it too
            raise NodeError(Kind.PROTOCOL_ERROR, "refresh changed the group public key")
        self._store_pending(spec, version, share_bytes, public_info)
        del share_bytes
        self.faults.reached("refresh:pending-stored")
        outcome = {
            "ceremony": spec.kind,
            "session_id": spec.session_id,
            "key_id": spec.key_id,
            "scheme": row.scheme,
            "threshold": pub.min_signers,
            "participants": list(spec.participants),
            "share_version": version,
            "public_key": row.public_key.hex(),
            "public_package": hashlib.sha256(public_info).hexdigest(),
        }
        statement = done_statement(outcome)
        out = public_result(spec.key_id, row.scheme, pub) if row.scheme in FROST_SCHEMES else {}
        if not out:
            out = {
                "key_id": spec.key_id,
                "scheme": row.scheme,
                "public_key": row.public_key.hex(),
                "group_public_key": pub.group_public_key.encode().hex(),
                "min_signers": pub.min_signers,
                "verifying_shares": {
                    str(i): p.encode().hex() for i, p in sorted(pub.verifying_shares.items())
                },
            }
        logs.event(
            "ceremony.done",
            node_id=self.shares.node_id,
            key_id=spec.key_id,
            ceremony=spec.kind,
            share_version=version,
        )
        return {
            **out,
            "share_version": version,
            "outcome": outcome,
            "statement": statement.hex(),
            "signature": self.sign(statement).hex(),
            "node_id": self.shares.node_id,
        }

    def on_failure(self, spec: SessionSpec, exc: MpcError) -> None:
        if spec.kind not in KINDS:
            self.inner.on_failure(spec, exc)

    # -- authorization ----------------------------------------------------------------------
    def check_ceremony(self, spec: SessionSpec) -> None:
        """The ceremony's parties are the key's committee, still in the roster as pinned,
        and its threshold is the key's (see the module docstring)."""
        self.anchor.check_committee(spec.key_id)
        committee = sorted(p for p, _, _ in self.anchor.committee(spec.key_id))
        if list(spec.participants) != committee:
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"a refresh of key {spec.key_id!r} must include exactly its committee "
                f"{committee}, not {list(spec.participants)}",
            )
        row = self.shares.row(spec.key_id)
        t = keyio.decode_public_key_package(row.public_info).min_signers
        if spec.threshold != t:
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"key {spec.key_id!r} is {t}-of-{len(committee)}; the request says threshold "
                f"{spec.threshold!r} (a refresh keeps the threshold)",
            )

    # -- pending share ---------------------------------------------------------------------
    def _store_pending(
        self, spec: SessionSpec, version: int, share_bytes: bytes, public_info: bytes
    ) -> None:
        v = self.shares.vault
        with self.shares.store.sealing.read():
            blob = v.seal(share_bytes, vault.share_aad(spec.key_id, self.shares.node_id, version))
            record = {
                "session_id": spec.session_id,
                "share_version": version,
                "public_info": public_info.hex(),
                "sealed_share": blob.hex(),
                "seal_version": v.blob_version(blob),
            }
            self.shares.store.set_meta(_pending_meta(spec.key_id), json.dumps(record))
        logs.event(
            "key.pending",
            node_id=self.shares.node_id,
            key_id=spec.key_id,
            share_version=version,
            session_id=spec.session_id,
        )


def public_key_of(scheme: str, pub: PublicKeyPackage) -> bytes:
    """The stored public key encoding of a package (as the DKG stored it)."""
    if scheme in FROST_SCHEMES:
        return frost.ciphersuite(scheme).encode_public_key(pub.group_public_key)
    return pub.group_public_key.encode()


class Ceremonies:
    """Commit (and inspect) the pending share of a ceremony; see the module docstring."""

    def __init__(self, shares: ShareStore, anchor: Anchor, faults: FaultHooks = NO_FAULTS) -> None:
        self.shares = shares
        self.anchor = anchor
        self.faults = faults

    def pending(self, key_id: str) -> dict[str, Any] | None:
        raw = self.shares.store.get_meta(_pending_meta(key_id))
        return None if raw is None else dict(json.loads(raw))

    def commit(self, key_id: object, session_id: object, signatures: object) -> dict[str, Any]:
        """Switch ``key_id`` to the share of the finished ceremony ``session_id``, given the
        done-statement signatures of every committee member (``{party: hex}``)."""
        row = self.shares.row(key_id)
        if not isinstance(session_id, str):
            raise NodeError(Kind.BAD_REQUEST, "session_id must be a string")
        info = self.shares.store.get_session(session_id)
        if info is None or info["kind"] not in KINDS or info["key_id"] != row.key_id:
            raise NodeError(
                Kind.UNKNOWN_SESSION, f"no ceremony {session_id} of key {row.key_id!r} here"
            )
        if info["status"] != "done":
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"ceremony {session_id} is {info['status']} on this node; nothing to commit",
            )
        result = info["result"]
        version = int(result["share_version"])
        if row.share_version == version:
            return {"key_id": row.key_id, "share_version": version, "status": "committed"}
        if row.share_version != version - 1:
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"ceremony {session_id} made share version {version}; the active one is "
                f"{row.share_version}",
            )
        self._check_signatures(row.key_id, result, signatures)
        pending = self.pending(row.key_id)
        if pending is None or pending["session_id"] != session_id:
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"the pending share of key {row.key_id!r} is not that of ceremony {session_id} "
                "(a later ceremony replaced it)",
            )
        self.faults.reached("refresh:commit")
        store = self.shares.store
        with store.sealing.read(), store.tx() as c:
            cur = c.execute(
                "UPDATE keys SET share_version = ?, public_info = ?, sealed_share = ?,"
                " seal_version = ? WHERE key_id = ? AND share_version = ?",
                (
                    version,
                    bytes.fromhex(pending["public_info"]),
                    bytes.fromhex(pending["sealed_share"]),
                    int(pending["seal_version"]),
                    row.key_id,
                    version - 1,
                ),
            )
            if cur.rowcount != 1:
                raise NodeError(Kind.INTERNAL, "the key's active share changed under the commit")
            c.execute(
                "DELETE FROM meta WHERE k IN (?, ?)",
                (_pending_meta(row.key_id), f"ot-retired:{row.key_id}"),
            )
        dropped = self.shares.pool.drop_key(row.key_id)
        self.faults.reached("refresh:committed")
        logs.event(
            "key.committed",
            node_id=self.shares.node_id,
            key_id=row.key_id,
            share_version=version,
            session_id=session_id,
            dropped_items=dropped,
        )
        return {
            "key_id": row.key_id,
            "share_version": version,
            "status": "committed",
            "dropped_items": dropped,
        }

    def _check_signatures(self, key_id: str, result: Mapping[str, Any], signatures: object) -> None:
        if not isinstance(signatures, dict):
            raise NodeError(Kind.BAD_REQUEST, "signatures must be an object party -> hex")
        pks = {p: pk for p, _node_id, pk in self.anchor.committee(key_id)}
        missing = sorted(p for p in pks if not isinstance(signatures.get(str(p)), str))
        bad = [p for p in verify_transcript(result["outcome"], signatures, pks) if p not in missing]
        if missing or bad:
            parts = []
            if missing:
                parts.append(f"no done statement from parties {missing}")
            if bad:
                parts.append(f"parties {bad} did not sign this node's outcome")
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                "commit refused: " + "; ".join(parts) + " (every party must report done)",
                culprits=sorted(missing + bad),
            )
