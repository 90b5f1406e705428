"""Persistence for the routes: every read and write a route makes, in one place.

Routes never build a query; the coordinator's parts keep their own (they are the
orchestration's persistence: health, DKG outcome, sign outcome). Writes that are audited
append their audit entry in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table, select, text
from sqlalchemy.orm import Session

from api import audit, idempotency, integrity, webhooks
from api.db import Approval, AuditEntry, Checkpoint, Database, Key, Node, SignRequest, utcnow
from api.pagination import PageOf, paginate
from api.problems import Problem
from custody.domain import Network, Scheme, SignStatus

_INSERT_REQUEST = cast(Table, SignRequest.__table__).insert()  # Core, built once (hot path)


class Repository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def ping(self) -> None:
        """Raises when the database does not answer."""
        with self.db.session() as s:
            s.execute(text("SELECT 1"))

    # -- nodes ------------------------------------------------------------------------------
    def nodes(self) -> Sequence[Node]:
        with self.db.session() as s:
            return s.scalars(select(Node).order_by(Node.party_id)).all()

    def node(self, node_id: str) -> Node | None:
        with self.db.session() as s:
            return s.scalar(select(Node).where(Node.id == node_id))

    # -- keys -------------------------------------------------------------------------------
    def add_pending_key(
        self,
        key_id: str,
        scheme: Scheme,
        threshold: int,
        nodes: list[str],
        actor: str,
        network: Network | None = None,
        label: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Insert the pending key (with a bip340 key's Bitcoin ``network``, its label and
        metadata) and its ``key.create`` audit entry in one transaction."""
        data: dict[str, Any] = {"scheme": scheme, "threshold": threshold, "nodes": nodes}
        if network is not None:
            data["network"] = network
        if label is not None:
            data["label"] = label
        if metadata:
            data["metadata"] = metadata
        with self.db.session() as s:
            s.add(
                Key(
                    id=key_id,
                    scheme=scheme,
                    threshold=threshold,
                    nodes=nodes,
                    status="pending",
                    network=network,
                    label=label,
                    key_metadata=metadata or None,
                )
            )
            audit.append(s, actor, "key.create", key_id, data)

    def key(self, key_id: str) -> Key | None:
        with self.db.session() as s:
            return s.scalar(select(Key).where(Key.id == key_id))

    def keys(
        self,
        limit: int,
        cursor: str | None,
        *,
        scheme: str | None = None,
        status: str | None = None,
        label: str | None = None,
    ) -> PageOf[Key]:
        q = select(Key)
        if scheme is not None:
            q = q.where(Key.scheme == scheme)
        if status is not None:
            q = q.where(Key.status == status)
        if label is not None:
            q = q.where(Key.label == label)
        with self.db.session() as s:
            return paginate(s, Key, q, Key.seq, limit=limit, cursor=cursor)

    def update_key(self, key_id: str, changes: dict[str, Any], actor: str) -> Key | None:
        """Change a key's ``label`` / ``metadata`` (audited ``key.update``); None if unknown."""
        with self.db.session() as s:
            k = s.scalar(select(Key).where(Key.id == key_id))
            if k is None:
                return None
            if "label" in changes:
                k.label = changes["label"]
            if "metadata" in changes:
                k.key_metadata = changes["metadata"] or None
            k.updated_at = utcnow()
            audit.append(s, actor, "key.update", key_id, changes)
            return k

    # -- sign requests ------------------------------------------------------------------------
    @staticmethod
    def insert_sign_request(
        conn: Connection,
        row: dict[str, Any],
        slot: idempotency.Slot,
        fingerprint: str,
        audit_data: dict[str, Any],
        then: Callable[[Connection], None] | None = None,
    ) -> None:
        """One transaction (a group-writer job): claim the Idempotency-Key, insert the
        request, audit it, then ``then`` in the same transaction. IntegrityError when the
        key is taken."""
        idempotency.claim(conn, slot.credential_id, slot.key, fingerprint)
        conn.execute(_INSERT_REQUEST, row)
        audit.append(conn, slot.credential_id, "sign.request", row["id"], audit_data)
        if then is not None:
            then(conn)
        if row["status"] == "pending_approval":  # the outbox, in this transaction
            webhooks.enqueue(
                conn, "sign_request.pending_approval", webhooks.sign_request_event(row)
            )

    def sign_request(self, request_id: str) -> SignRequest | None:
        """The request; a ``signed`` one only if its stored signature still verifies."""
        with self.db.session() as s:
            r = s.scalar(select(SignRequest).where(SignRequest.id == request_id))
            if r is not None:
                _check_signed(s, [r])
            return r

    def approvals(self, request_id: str) -> Sequence[Approval]:
        """The approvals and rejections received for a request, oldest first."""
        with self.db.session() as s:
            return s.scalars(
                select(Approval).where(Approval.request_id == request_id).order_by(Approval.id)
            ).all()

    def sign_requests(
        self,
        limit: int,
        cursor: str | None,
        *,
        status: SignStatus | None = None,
        key_id: str | None = None,
        requested_by: str | None = None,
    ) -> PageOf[SignRequest]:
        q = select(SignRequest)
        if requested_by is not None:  # a requester's own requests only
            q = q.where(SignRequest.requested_by == requested_by)
        if status is not None:
            q = q.where(SignRequest.status == status)
        if key_id is not None:
            q = q.where(SignRequest.key_id == key_id)
        with self.db.session() as s:
            page = paginate(s, SignRequest, q, SignRequest.seq, limit=limit, cursor=cursor)
            _check_signed(s, page.rows)
            return page

    # -- audit ------------------------------------------------------------------------------
    def audit_entries(self, limit: int, cursor: str | None) -> PageOf[AuditEntry]:
        with self.db.session() as s:
            return paginate(
                s,
                AuditEntry,
                select(AuditEntry),
                AuditEntry.seq,
                limit=limit,
                cursor=cursor,
                order="oldest",
            )

    def verify_audit(self, cluster: str) -> dict[str, Any]:
        with self.db.session() as s:
            return integrity.verify_all(s, cluster)

    def checkpoints(self) -> Sequence[Checkpoint]:
        with self.db.session() as s:
            return s.scalars(select(Checkpoint).order_by(Checkpoint.seq)).all()


def _check_signed(s: Session, rows: Sequence[SignRequest]) -> None:
    """Verify every ``signed`` row's stored signature again (key public key, recomputed
    message); a mismatch is a 500 problem naming the request, never a ``signed`` answer."""
    signed = [r for r in rows if r.status == "signed"]
    if not signed:
        return
    ids = {r.key_id for r in signed}
    cols = (Key.id, Key.scheme, Key.public_key, Key.verifying_shares, Key.threshold)
    keys = {k.id: k for k in s.execute(select(*cols).where(Key.id.in_(ids)))}
    for r in signed:
        k = keys.get(r.key_id)
        scheme, pk = (k.scheme, k.public_key) if k is not None else ("", None)
        public = None if k is None else k._asdict()  # a derived request: the child key
        row = {"body": r.body, "signature": r.signature, "recovery_id": r.recovery_id}
        if not integrity.stored_signature_ok(scheme, pk, row, public):
            raise Problem(
                500,
                "stored-signature-invalid",
                "Stored signature invalid",
                f"the stored signature of {r.id} does not verify under key {r.key_id}; "
                "the database was changed behind the coordinator (see /v1/audit/verify)",
                request_id=r.id,
            )
