"""Key ceremonies on an existing key: proactive refresh, resharing and the OT re-setup of an
ECDSA key, commit-when-all-done.

A ceremony runs as a protocol session of kind ``refresh``, ``reshare`` or ``ot-resetup``
(docs/NODE_API.md
``POST /v1/sessions``), hosted like a DKG by :class:`~signer_nodes.sessions.SessionHost`;
:class:`CeremonyFactory` is the session factory that adds them in front of
:class:`~signer_nodes.protocols.Protocols`:

* FROST keys (bip340, ed25519) run :class:`mpc.refresh.RefreshSession` or
  :class:`mpc.reshare.ReshareSession`;
* ECDSA keys run :class:`mpc.dkls23.resetup.OtResetupChain` (the refresh or resharing, then
  a fresh base-OT setup for every pair of the new committee), whose result is the new
  :class:`~mpc.dkls23.EcdsaKeyShare` (``None`` for a departing dealer);
* an ``ot-resetup`` (ECDSA keys only) is that chain over a refresh, under its own echo
  context (:func:`ot_resetup_context`), authorized and checked exactly like a refresh; its
  commit installs the new share with :func:`signer_nodes.ecdsa.resetup_pairs` (fresh base
  OTs towards every peer checked, the next share version, the retired pairs re-enabled in
  one transaction) and drops the key's outstanding presignatures.

Authorization (docs/SECURITY.md, "Key ceremonies"). Every ceremony carries an
``authorization`` signed by the officer quorum (:class:`custody.governance.
CeremonyAuthorization`), verified by this node under the governance version it holds
(:meth:`~signer_nodes.anchor.Anchor.verify_ceremony`): quorum, cluster, expiry; then
compared with what the node is asked to do and with what it holds itself: kind, key,
scheme, public key, share version, threshold before and after, and the committee after
the ceremony (node ids of the roster). A refresh must also include exactly the key's
committee as pinned at its DKG, every member still in the roster with the pinned identity
key (:meth:`~signer_nodes.anchor.Anchor.check_committee`). A resharing's participants are
the authorized new committee plus dealers from the old committee (at least the old
threshold of them; :class:`~mpc.reshare.ReshareSession` checks). Each authorization is
accepted once (its ``ceremony_id`` is recorded durably when the session starts: a replay
is refused with ``ceremony-authorization-replayed``), and its digest is bound into every
echo digest of the ceremony, so parties handed different authorizations abort. Refusals
are 403 problems with stable codes: ``ceremony-unauthorized`` (none),
``ceremony-authorization-malformed``, ``-under-signed`` (forged or too few officers),
``-expired``, ``-replayed``, ``-mismatch`` (another key, committee, threshold, version),
``ceremony-threshold-drop`` (a lower threshold the officers did not state explicitly).

Resharing. A node in the new committee that holds no share of the key yet (enrolled
through governance) takes part as a receiver: it rebuilds the key's old public package
from the ``old_verifying_shares`` of the request and the authorized ``previous_threshold``
and refuses unless it interpolates to the authorized public key (a coordinator that
relays other verifying shares makes the ceremony abort, it cannot make it succeed:
:class:`~mpc.reshare.ReshareSession` checks every dealer's constant term against them).
A departing dealer (in the old committee, not in the new) gets the new public package
only; at the commit it deletes its share, its committee record and its pooled items.

Share versions (both ceremonies). The key's row in ``keys`` holds the **active** share and its
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
coordinator. A resharing's commit needs the done statements of every participant (old
dealers and new members), each checked against the identity key the roster pinned for it
when this node finished the session; it swaps the share in (or inserts it, for a
receiver, or deletes it, for a departing dealer) and records the new committee in the
same transaction. An old holder that did not take part (down, or not needed to deal) is
told to retire with the transcript (:meth:`Ceremonies._retire`): it checks the officers'
authorization and every participant's done statement itself, then deletes its share.

Imports: :mod:`signer_nodes.anchor`, ``.ecdsa``, ``.errors``, ``.faults``, ``.logs``,
``.protocols``, ``.shares``, ``.specs``, ``.vault``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from custody import governance as gov
from custody.ceremonies import done_statement, verify_transcript
from mpc import dkls23, frost, keyio
from mpc.dkls23.resetup import OtResetupChain
from mpc.errors import EncodingError, MpcError
from mpc.groups import SECP256K1, Point
from mpc.refresh import RefreshSession
from mpc.reshare import ReshareResult, ReshareSession
from mpc.shamir import KeyPackage, PublicKeyPackage, lagrange_coefficient
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
from signer_nodes.shares import ShareStore, check_key_id
from signer_nodes.specs import SessionSpec

__all__ = [
    "KINDS",
    "CeremonyFactory",
    "Ceremonies",
    "done_statement",
    "ot_resetup_context",
    "refresh_context",
    "reshare_context",
]

#: session kinds this module runs
KINDS = ("refresh", "reshare", "ot-resetup")
_CODES = gov.CeremonyAuthErrorKind


def refresh_context(
    scheme: str, key_id: str, share_version: int, authorization: bytes = b""
) -> bytes:
    """Bound into every echo digest of a refresh: a transcript cannot be replayed for
    another key, scheme, epoch or authorization (its digest)."""
    return (
        b"tpwc-refresh-v2\x00"
        + scheme.encode()
        + b"\x00"
        + key_id.encode()
        + b"\x00"
        + str(share_version).encode()
        + b"\x00"
        + authorization
    )


def ot_resetup_context(key_id: str, share_version: int, authorization: bytes) -> bytes:
    """Bound into every echo digest of an OT re-setup's refresh stage (its own domain: a
    refresh transcript cannot pass for a re-setup, nor the converse)."""
    return (
        b"tpwc-ot-resetup-v1\x00"
        + key_id.encode()
        + b"\x00"
        + str(share_version).encode()
        + b"\x00"
        + authorization
    )


def reshare_context(
    scheme: str, key_id: str, share_version: int, authorization: bytes, network: str | None
) -> bytes:
    """Bound into every echo digest of a resharing: key, scheme, the new share version, the
    authorization's digest and (bip340) the key's network, so parties told different ones
    abort at the echo instead of finishing apart."""
    return (
        b"tpwc-reshare-v1\x00"
        + scheme.encode()
        + b"\x00"
        + key_id.encode()
        + b"\x00"
        + str(share_version).encode()
        + b"\x00"
        + authorization
        + b"\x00"
        + (network or "").encode()
    )


def _pending_meta(key_id: str) -> str:
    return "pending-share:" + key_id


def _retire_meta(key_id: str) -> str:
    """A departing dealer's pending retirement (no share: never rewrapped by a rotation)."""
    return "pending-retire:" + key_id


def _used_meta(ceremony_id: str) -> str:
    return "ceremony-auth:" + ceremony_id


def _committed_meta(session_id: str) -> str:
    return "ceremony-committed:" + session_id


def _mismatch(detail: str) -> NodeError:
    return NodeError(Kind.NOT_AUTHORIZED, detail, code=_CODES.MISMATCH.value)


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
        # the verified authorization of each running ceremony (memory: a restart fails it)
        self._auth: dict[str, gov.CeremonyAuthorization] = {}
        self._lock = threading.Lock()

    # -- the SessionFactory protocol ------------------------------------------------------
    def new_session(self, spec: SessionSpec) -> ProtocolSession:
        if spec.kind not in KINDS:
            if spec.kind == "ecdsa-presign":
                self.check_signers(spec)
            return self.inner.new_session(spec)
        auth = self.anchor.verify_ceremony(spec.authorization, int(time.time()))
        self._check_request(spec, auth)
        if self.shares.store.get_meta(_used_meta(auth.ceremony_id)) is not None:
            raise self._replayed(auth)
        if spec.kind == "reshare":
            rs = self._reshare(spec, auth)
        else:
            rs = self._refresh(spec, auth)
        self._mark_used(spec, auth)
        with self._lock:
            self._auth[spec.session_id] = auth
        return rs

    def _refresh(self, spec: SessionSpec, auth: gov.CeremonyAuthorization) -> ProtocolSession:
        row = self.shares.row(spec.key_id)
        if spec.scheme != row.scheme:
            raise NodeError(
                Kind.WRONG_SCHEME, f"key {row.key_id!r} is {row.scheme}, not {spec.scheme!r}"
            )
        self.check_ceremony(spec)
        committee = sorted(n for _, n, _ in self.anchor.committee(spec.key_id))
        if list(auth.committee) != committee:
            raise _mismatch(
                f"the authorized committee {list(auth.committee)} is not key "
                f"{row.key_id!r}'s committee {committee} (the {spec.kind} keeps it)"
            )
        self._check_holder(row, auth)
        version = row.share_version + 1
        if spec.kind == "ot-resetup":
            ecdsa.check_scheme(row.key_id, row.scheme)
            ctx = ot_resetup_context(row.key_id, version, auth.digest)
        else:
            ctx = refresh_context(row.scheme, row.key_id, version, auth.digest)
        plain = self.shares.unseal_share(row)
        if row.scheme in FROST_SCHEMES:
            kp = load_key_package(plain)
            del plain
            return RefreshSession(kp, spec.sid, list(spec.participants), ctx)
        ecdsa.check_scheme(row.key_id, row.scheme)
        share = dkls23.EcdsaKeyShare.from_bytes(plain)
        del plain
        return OtResetupChain(RefreshSession(share.key, spec.sid, list(spec.participants), ctx))

    def _reshare(self, spec: SessionSpec, auth: gov.CeremonyAuthorization) -> ProtocolSession:
        """A resharing to the authorized committee and threshold (module docstring)."""
        new_ids = self.anchor.parties_of(auth.committee)
        new = sorted(new_ids.values())
        parts = set(spec.participants)
        left_out = sorted(set(new) - parts)
        if left_out:
            raise _mismatch(
                f"participants {list(spec.participants)} leave out parties {left_out} of the "
                f"authorized committee {list(auth.committee)}"
            )
        key: KeyPackage | None = None
        if self.shares.exists(spec.key_id):
            row = self.shares.row(spec.key_id)
            if spec.scheme != row.scheme:
                raise NodeError(
                    Kind.WRONG_SCHEME, f"key {row.key_id!r} is {row.scheme}, not {spec.scheme!r}"
                )
            self.anchor.check_committee(row.key_id)
            old_public = self._check_holder(row, auth)
            committee = {p for p, _, _ in self.anchor.committee(row.key_id)}
            if committee != set(old_public.verifying_shares):
                raise NodeError(Kind.INTERNAL, f"key {row.key_id!r}'s committee and share disagree")
            plain = self.shares.unseal_share(row)
            if row.scheme in FROST_SCHEMES:
                key = load_key_package(plain)
            else:
                ecdsa.check_scheme(row.key_id, row.scheme)
                key = dkls23.EcdsaKeyShare.from_bytes(plain).key
            del plain
            network = self.shares.network(row.key_id) if row.scheme == "bip340" else None
        else:
            if self.me not in new:
                raise _mismatch(
                    f"{self.shares.node_id} holds no share of key {spec.key_id!r} and is not "
                    f"in the authorized committee {list(auth.committee)}"
                )
            if spec.scheme not in FROST_SCHEMES and spec.scheme != ecdsa.SCHEME:
                raise NodeError(Kind.BAD_REQUEST, f"unknown scheme {spec.scheme!r}")
            old_public = self._old_public(spec, auth)
            network = (spec.network or "mainnet") if spec.scheme == "bip340" else None
        old = set(old_public.verifying_shares)
        strangers = sorted(parts - set(new) - old)
        if strangers:
            raise _mismatch(
                f"participants {strangers} are neither in the authorized committee nor "
                f"holders of key {spec.key_id!r}"
            )
        dealers = sorted(parts & old)
        ctx = reshare_context(
            spec.scheme, spec.key_id, auth.share_version + 1, auth.digest, network
        )
        rs = ReshareSession(
            spec.sid, self.me, old_public, dealers, new, auth.threshold, key=key, context=ctx
        )
        del key
        if spec.scheme in FROST_SCHEMES:
            return rs
        return OtResetupChain(rs)

    def _check_request(self, spec: SessionSpec, auth: gov.CeremonyAuthorization) -> None:
        """The request is the ceremony the officers authorized (kind, key, scheme,
        threshold); what the node holds is checked by the kind's own method."""
        for field, asked, signed in (
            ("kind", spec.kind, auth.kind),
            ("key_id", spec.key_id, auth.key_id),
            ("scheme", spec.scheme, auth.scheme),
            ("threshold", spec.threshold, auth.threshold),
        ):
            if asked != signed:
                raise _mismatch(
                    f"{field}: the request says {asked!r}, the officers authorized {signed!r} "
                    f"(ceremony {auth.ceremony_id})"
                )

    def _check_holder(self, row: Any, auth: gov.CeremonyAuthorization) -> PublicKeyPackage:
        return check_holder(row, auth)

    def _old_public(self, spec: SessionSpec, auth: gov.CeremonyAuthorization) -> PublicKeyPackage:
        """A receiver's view of the old public package: the relayed verifying shares, which
        must interpolate (RFC 9591 section 4.2) to the authorized public key."""
        raw = spec.old_verifying_shares
        if not raw:
            raise NodeError(
                Kind.BAD_REQUEST,
                "a new member of a resharing needs old_verifying_shares (party -> hex)",
            )
        g = FROST_SCHEMES.get(spec.scheme) or SECP256K1
        vs: dict[int, Point] = {}
        try:
            for party, hexpt in raw.items():
                pid = int(party)
                if not 1 <= pid <= 255:
                    raise ValueError(f"party {party!r}")
                vs[pid] = g.decode_point(bytes.fromhex(hexpt))
        except (ValueError, EncodingError) as exc:
            raise NodeError(Kind.BAD_REQUEST, f"old_verifying_shares: {exc}") from None
        t = auth.previous_threshold
        if len(vs) < t:
            raise _mismatch(
                f"old_verifying_shares: {len(vs)} shares of a {t}-of-n key (authorized)"
            )
        ids = sorted(vs)[:t]
        pk = g.sum([vs[i] * lagrange_coefficient(g, i, ids) for i in ids])
        for j in sorted(vs)[t:]:
            at_j = g.sum([vs[i] * lagrange_coefficient(g, i, ids, at=j) for i in ids])
            if at_j != vs[j]:
                raise _mismatch(f"old_verifying_shares: share {j} is off the others' polynomial")
        pub = PublicKeyPackage(g, t, pk, vs)
        if pk.is_identity() or public_key_of(spec.scheme, pub) != auth.public_key:
            raise _mismatch("old_verifying_shares do not interpolate to the authorized public key")
        return pub

    def _mark_used(self, spec: SessionSpec, auth: gov.CeremonyAuthorization) -> None:
        """Accept ``auth`` once, durably (refused as a replay afterwards)."""
        k = _used_meta(auth.ceremony_id)
        with self.shares.store.tx() as c:
            if c.execute("SELECT 1 FROM meta WHERE k = ?", (k,)).fetchone() is not None:
                raise self._replayed(auth)
            c.execute(
                "INSERT INTO meta (k, v) VALUES (?, ?)",
                (k, json.dumps({"key_id": spec.key_id, "session_id": spec.session_id})),
            )

    def _replayed(self, auth: gov.CeremonyAuthorization) -> NodeError:
        return NodeError(
            Kind.NOT_AUTHORIZED,
            f"ceremony {auth.ceremony_id}'s authorization was used already on "
            f"{self.shares.node_id}: the officers sign a new one for each ceremony",
            code=_CODES.REPLAYED.value,
        )

    def check_signers(self, spec: SessionSpec) -> None:
        """A presign session's signers are members of the key's committee (a member
        reshared out is refused by name, whatever share it kept)."""
        committee = {p for p, _, _ in self.anchor.committee(spec.key_id)}
        outside = sorted(set(spec.participants) - committee)
        if outside:
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"parties {outside} are not in key {spec.key_id!r}'s committee {sorted(committee)}",
                culprits=outside,
                code="not-in-committee",
            )

    def accepts(self, spec: SessionSpec, rs: ProtocolSession) -> Mapping[str, bytes]:
        if isinstance(rs, OtResetupChain):
            return rs.accepts
        return self.inner.accepts(spec, rs)

    def finish(self, spec: SessionSpec, rs: ProtocolSession) -> dict[str, Any]:
        if spec.kind not in KINDS:
            return self.inner.finish(spec, rs)
        with self._lock:
            auth = self._auth.pop(spec.session_id)
        if spec.kind == "reshare":
            return self._finish_reshare(spec, rs, auth)
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
        return self._done(spec, row.scheme, pub, outcome, version)

    def _done(
        self,
        spec: SessionSpec,
        scheme: str,
        pub: PublicKeyPackage,
        outcome: dict[str, Any],
        version: int,
        **extra: Any,
    ) -> dict[str, Any]:
        statement = done_statement(outcome)
        out = public_result(spec.key_id, scheme, pub) if scheme in FROST_SCHEMES else {}
        if not out:
            out = {
                "key_id": spec.key_id,
                "scheme": scheme,
                "public_key": outcome["public_key"],
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
            **extra,
            "share_version": version,
            "outcome": outcome,
            "statement": statement.hex(),
            "signature": self.sign(statement).hex(),
            "node_id": self.shares.node_id,
        }

    def _finish_reshare(
        self, spec: SessionSpec, rs: ProtocolSession, auth: gov.CeremonyAuthorization
    ) -> dict[str, Any]:
        share_bytes: bytes | None
        if isinstance(rs, OtResetupChain):
            first: ReshareResult = rs.first.result
            pub = first.public
            ecdsa_share: dkls23.EcdsaKeyShare | None = rs.result
            share_bytes = None if ecdsa_share is None else ecdsa_share.to_bytes()
        else:
            rr: ReshareResult = rs.result
            pub = rr.public
            share_bytes = None if rr.key is None else dump_key_package(rr.key)
        if public_key_of(spec.scheme, pub) != auth.public_key:  # ReshareSession checks too
            raise NodeError(Kind.PROTOCOL_ERROR, "resharing changed the group public key")
        version = auth.share_version + 1
        public_info = dump_public_package(pub)
        parties = sorted(spec.participants)
        committee = sorted(pub.verifying_shares)
        record = {
            "ceremony": "reshare",
            "session_id": spec.session_id,
            "share_version": version,
            "scheme": spec.scheme,
            "public_key": auth.public_key.hex(),
            "public_info": public_info.hex(),
            "committee": committee,
            "network": self.shares.network(spec.key_id)
            if self.shares.exists(spec.key_id)
            else (spec.network or "mainnet"),
            "pins": {str(p): pk.hex() for p, pk in self.anchor.pins(parties).items()},
        }
        if share_bytes is not None:
            self._store_pending(spec, version, share_bytes, public_info, record)
            del share_bytes
        else:
            self.shares.store.set_meta(_retire_meta(spec.key_id), json.dumps(record))
        self.faults.reached("reshare:pending-stored")
        outcome = {
            "ceremony": spec.kind,
            "session_id": spec.session_id,
            "key_id": spec.key_id,
            "scheme": spec.scheme,
            "threshold": pub.min_signers,
            "participants": parties,
            "share_version": version,
            "public_key": auth.public_key.hex(),
            "public_package": hashlib.sha256(public_info).hexdigest(),
        }
        return self._done(
            spec,
            spec.scheme,
            pub,
            outcome,
            version,
            member=self.me in committee,
            committee=committee,
            ceremony_id=auth.ceremony_id,
        )

    def on_failure(self, spec: SessionSpec, exc: MpcError) -> None:
        if spec.kind not in KINDS:
            self.inner.on_failure(spec, exc)
            return
        with self._lock:
            self._auth.pop(spec.session_id, None)

    # -- authorization ----------------------------------------------------------------------
    def check_ceremony(self, spec: SessionSpec) -> None:
        """The refresh's parties are the key's committee, still in the roster as pinned,
        and its threshold is the key's (see the module docstring)."""
        self.anchor.check_committee(spec.key_id)
        committee = sorted(p for p, _, _ in self.anchor.committee(spec.key_id))
        if list(spec.participants) != committee:
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"the {spec.kind} of key {spec.key_id!r} must include exactly its committee "
                f"{committee}, not {list(spec.participants)}",
            )
        row = self.shares.row(spec.key_id)
        t = keyio.decode_public_key_package(row.public_info).min_signers
        if spec.threshold != t:
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"key {spec.key_id!r} is {t}-of-{len(committee)}; the request says threshold "
                f"{spec.threshold!r} (the {spec.kind} keeps the threshold)",
            )

    # -- pending share ---------------------------------------------------------------------
    def _store_pending(
        self,
        spec: SessionSpec,
        version: int,
        share_bytes: bytes,
        public_info: bytes,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        v = self.shares.vault
        with self.shares.store.sealing.read():
            blob = v.seal(share_bytes, vault.share_aad(spec.key_id, self.shares.node_id, version))
            record = {
                **(extra or {}),
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


def check_holder(row: Any, auth: gov.CeremonyAuthorization) -> PublicKeyPackage:
    """What this holder of the key knows against what the officers signed."""
    pub = keyio.decode_public_key_package(row.public_info)
    for field, held, signed in (
        ("public_key", row.public_key.hex(), auth.public_key.hex()),
        ("share_version", row.share_version, auth.share_version),
        ("previous_threshold", pub.min_signers, auth.previous_threshold),
    ):
        if held != signed:
            raise _mismatch(
                f"{field}: key {row.key_id!r} here has {held!r}, the authorization says "
                f"{signed!r} (ceremony {auth.ceremony_id})"
            )
    return pub


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

    def commit(
        self, key_id: object, session_id: object, signatures: object, retire: object = None
    ) -> dict[str, Any]:
        """Switch ``key_id`` to the share of the finished ceremony ``session_id``, given the
        done-statement signatures of every party (``{party: hex}``); with ``retire`` (an old
        holder that did not take part in the resharing ``session_id``), delete the share."""
        kid = check_key_id(key_id)
        if not isinstance(session_id, str):
            raise NodeError(Kind.BAD_REQUEST, "session_id must be a string")
        info = self.shares.store.get_session(session_id)
        if info is None and retire is not None:
            return self._retire(kid, session_id, signatures, retire)
        if info is None or info["kind"] not in KINDS or info["key_id"] != kid:
            raise NodeError(Kind.UNKNOWN_SESSION, f"no ceremony {session_id} of key {kid!r} here")
        if info["status"] != "done":
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"ceremony {session_id} is {info['status']} on this node; nothing to commit",
            )
        if info["kind"] == "reshare":
            return self._commit_reshare(kid, session_id, info["result"], signatures)
        row = self.shares.row(kid)
        result = info["result"]
        version = int(result["share_version"])
        if row.share_version == version:
            if info["kind"] == "ot-resetup":  # an interrupted re-setup commit: finish it
                return self._ot_resetup_installed(row.key_id, session_id, version)
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
        if info["kind"] == "ot-resetup":
            return self._commit_ot_resetup(row.key_id, session_id, version, pending)
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

    def _commit_ot_resetup(
        self, kid: str, session_id: str, version: int, pending: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Install an authorized OT re-setup's share with :func:`signer_nodes.ecdsa.
        resetup_pairs` (same party, group key, threshold and committee; fresh base OTs
        towards every peer; sealed under the next share version; the retired pairs
        re-enabled, in one transaction), then drop the key's pending record and its
        outstanding presignatures (made with the old base OTs)."""
        with self.shares.store.sealing.read():
            plain = self.shares.vault.unseal(
                bytes.fromhex(pending["sealed_share"]),
                vault.share_aad(kid, self.shares.node_id, version),
            )
        new = dkls23.EcdsaKeyShare.from_bytes(plain)
        del plain
        installed = ecdsa.resetup_pairs(self.shares, kid, new)
        del new
        if installed["share_version"] != version:  # resetup_pairs went from the row we read
            raise NodeError(Kind.INTERNAL, "the key's active share changed under the commit")
        out = self._ot_resetup_installed(kid, session_id, version, first=True)
        return {**out, "reenabled_peers": installed["reenabled_peers"]}

    def _ot_resetup_installed(
        self, kid: str, session_id: str, version: int, *, first: bool = False
    ) -> dict[str, Any]:
        """After the re-setup share is active: the pending record of ``session_id`` and every
        outstanding presignature of the key go. A retried commit (the node answered
        ``committed`` before, or stopped between the install and this) drops them only if
        the pending record is still there: presignatures made since with the new share stay."""
        pending = self.pending(kid)
        left = pending is not None and pending["session_id"] == session_id
        if left:
            with self.shares.store.tx() as c:
                c.execute("DELETE FROM meta WHERE k = ?", (_pending_meta(kid),))
        dropped = self.shares.pool.drop_key(kid) if first or left else 0
        logs.event(
            "key.ot_resetup",
            node_id=self.shares.node_id,
            key_id=kid,
            share_version=version,
            session_id=session_id,
            dropped_items=dropped,
        )
        return {
            "key_id": kid,
            "share_version": version,
            "status": "committed",
            "dropped_items": dropped,
            "reenabled_peers": [],
        }

    def _retire(
        self, kid: str, session_id: str, signatures: object, retire: object
    ) -> dict[str, Any]:
        """An old holder that did not deal in resharing ``session_id`` deletes its share.

        Why the holder may: the officers authorized a resharing of this key, from the share
        version it holds, to a committee without it; and every participant signed the
        outcome (the new share version, under the same public key) with the identity key the
        roster pins for it, which they do only after their part verified (the module
        docstring). The authorization's expiry is not checked here: it is the evidence of a
        ceremony that ran while it was valid, not a permission to start one. The new
        committee already refuses this share (another polynomial; signers outside the
        committee are refused by name: :meth:`CeremonyFactory.check_signers`); deleting it
        leaves nothing to steal."""
        store = self.shares.store
        done = {"key_id": kid, "status": "retired", "session_id": session_id}
        if store.get_meta(_committed_meta(session_id)) is not None:
            return done
        if not isinstance(retire, dict):
            raise NodeError(Kind.BAD_REQUEST, "retire must be an object {outcome, authorization}")
        outcome, raw = retire.get("outcome"), retire.get("authorization")
        if not isinstance(raw, str):
            raise NodeError(Kind.BAD_REQUEST, "retire.authorization must be a hex string")
        cur = self.anchor.require()
        try:
            data = bytes.fromhex(raw)
            issued = gov.decode_ceremony_authorization(data).body.issued_at
            auth = gov.verify_ceremony_authorization(data, cur, issued)
        except ValueError:
            raise NodeError(
                Kind.NOT_AUTHORIZED, "retire.authorization: not hex", code=_CODES.MALFORMED.value
            ) from None
        except gov.CeremonyAuthError as exc:
            raise NodeError(Kind.NOT_AUTHORIZED, exc.detail, code=exc.kind.value) from None
        row = self.shares.row(kid)
        me = self.shares.node_id
        if auth.kind != "reshare" or me in auth.committee:
            raise _mismatch(
                f"retire: ceremony {auth.ceremony_id} is a {auth.kind} to {list(auth.committee)};"
                f" only a resharing that leaves {me} out retires its share"
            )
        check_holder(row, auth)
        if not isinstance(outcome, dict):
            raise NodeError(Kind.BAD_REQUEST, "retire.outcome must be an object")
        parties = outcome.get("participants")
        if not isinstance(parties, list) or not all(type(p) is int for p in parties):
            raise NodeError(Kind.BAD_REQUEST, "retire.outcome.participants: party ids")
        for field, said, expect in (
            ("ceremony", outcome.get("ceremony"), "reshare"),
            ("session_id", outcome.get("session_id"), session_id),
            ("key_id", outcome.get("key_id"), kid),
            ("scheme", outcome.get("scheme"), row.scheme),
            ("public_key", outcome.get("public_key"), row.public_key.hex()),
            ("share_version", outcome.get("share_version"), auth.share_version + 1),
            ("threshold", outcome.get("threshold"), auth.threshold),
        ):
            if said != expect:
                raise _mismatch(f"retire.outcome.{field}: {said!r}, not {expect!r}")
        new = set(self.anchor.parties_of(auth.committee).values())
        pinned = cur.node(me)
        if not new <= set(parties) or (pinned is not None and pinned.party_id in parties):
            raise _mismatch(
                f"retire.outcome.participants {parties}: not the authorized committee "
                f"{list(auth.committee)} without {me}"
            )
        try:
            done_statement(outcome)
        except ValueError as exc:
            raise NodeError(Kind.BAD_REQUEST, f"retire.outcome: {exc}") from None
        self._check_signatures(kid, {"outcome": outcome}, signatures, self.anchor.pins(parties))
        with store.tx() as c:
            c.execute("DELETE FROM ledger WHERE key_id = ?", (kid,))
            c.execute("DELETE FROM keys WHERE key_id = ?", (kid,))
            c.execute(
                "DELETE FROM meta WHERE k IN (?, ?, ?, ?)",
                (f"committee:{kid}", _pending_meta(kid), _retire_meta(kid), f"ot-retired:{kid}"),
            )
            c.execute(
                "INSERT INTO meta (k, v) VALUES (?, ?)",
                (_committed_meta(session_id), json.dumps({"key_id": kid, "retired": True})),
            )
        self.anchor.forget_committee(kid)
        dropped = self.shares.pool.drop_key(kid)
        logs.event(
            "key.retired",
            node_id=me,
            key_id=kid,
            share_version=row.share_version,
            session_id=session_id,
            committee=sorted(new),
            dropped_items=dropped,
            dealt=False,
        )
        return {**done, "dropped_items": dropped}

    def _commit_reshare(
        self, kid: str, session_id: str, result: Mapping[str, Any], signatures: object
    ) -> dict[str, Any]:
        """The commit of a resharing (module docstring): swap in, insert or delete."""
        store = self.shares.store
        version = int(result["share_version"])
        member = bool(result["member"])
        done = {"key_id": kid, "share_version": version, "status": "committed", "member": member}
        if store.get_meta(_committed_meta(session_id)) is not None:
            return done
        row = store.get_key(kid)
        if row is not None and row.share_version != version - 1:
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"ceremony {session_id} made share version {version}; the active one is "
                f"{row.share_version}",
            )
        raw = store.get_meta(_pending_meta(kid) if member else _retire_meta(kid))
        pending = None if raw is None else json.loads(raw)
        if pending is None or pending["session_id"] != session_id:
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"the pending outcome of key {kid!r} is not that of ceremony {session_id} "
                "(a later ceremony replaced it)",
            )
        pins = {int(p): bytes.fromhex(pk) for p, pk in pending["pins"].items()}
        self._check_signatures(kid, result, signatures, pins)
        self.faults.reached("reshare:commit")
        committee = list(pending["committee"])
        entry = self.anchor.committee_entry(kid, committee) if member else None
        with store.sealing.read(), store.tx() as c:
            if member and row is not None:
                cur = c.execute(
                    "UPDATE keys SET share_version = ?, public_info = ?, sealed_share = ?,"
                    " seal_version = ? WHERE key_id = ? AND share_version = ?",
                    (
                        version,
                        bytes.fromhex(pending["public_info"]),
                        bytes.fromhex(pending["sealed_share"]),
                        int(pending["seal_version"]),
                        kid,
                        version - 1,
                    ),
                )
                if cur.rowcount != 1:
                    raise NodeError(
                        Kind.INTERNAL, "the key's active share changed under the commit"
                    )
            elif member:
                c.execute(
                    "INSERT INTO keys (key_id, scheme, share_version, public_key, public_info,"
                    " sealed_share, seal_version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        kid,
                        pending["scheme"],
                        version,
                        bytes.fromhex(pending["public_key"]),
                        bytes.fromhex(pending["public_info"]),
                        bytes.fromhex(pending["sealed_share"]),
                        int(pending["seal_version"]),
                        time.time(),
                    ),
                )
                if pending["scheme"] == "bip340":
                    c.execute(
                        "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET"
                        " v = excluded.v",
                        ("network:" + kid, pending["network"]),
                    )
            else:  # a departing dealer: the share, its committee and its items go
                c.execute("DELETE FROM ledger WHERE key_id = ?", (kid,))
                c.execute("DELETE FROM keys WHERE key_id = ?", (kid,))
                c.execute("DELETE FROM meta WHERE k = ?", (f"committee:{kid}",))
            if entry is not None:
                c.execute(
                    "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET"
                    " v = excluded.v",
                    entry,
                )
            c.execute(
                "DELETE FROM meta WHERE k IN (?, ?, ?)",
                (_pending_meta(kid), _retire_meta(kid), f"ot-retired:{kid}"),
            )
            c.execute(
                "INSERT INTO meta (k, v) VALUES (?, ?)",
                (_committed_meta(session_id), json.dumps({"key_id": kid, "version": version})),
            )
        self.anchor.forget_committee(kid)
        dropped = self.shares.pool.drop_key(kid)
        self.faults.reached("reshare:committed")
        logs.event(
            "key.reshared" if member else "key.retired",
            node_id=self.shares.node_id,
            key_id=kid,
            share_version=version,
            session_id=session_id,
            committee=committee,
            dropped_items=dropped,
        )
        return {**done, "dropped_items": dropped}

    def _check_signatures(
        self,
        key_id: str,
        result: Mapping[str, Any],
        signatures: object,
        pins: Mapping[int, bytes] | None = None,
    ) -> None:
        if not isinstance(signatures, dict):
            raise NodeError(Kind.BAD_REQUEST, "signatures must be an object party -> hex")
        pks = (
            dict(pins)
            if pins is not None
            else {p: pk for p, _node_id, pk in self.anchor.committee(key_id)}
        )
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
