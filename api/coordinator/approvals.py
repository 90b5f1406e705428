"""The coordinator's approval desk: the policy evaluated before any node is called, and the
approval workflow of a request waiting for approvers.

The signer nodes are the authority: each decodes the request, evaluates the policy of the
governance version it holds and verifies every approval itself. The coordinator runs the
same pure functions (:func:`custody.approvals.request_intent`, :func:`custody.policy.decide`,
:func:`custody.approvals.verify_approvals`) on its own verified governance copy only so
that a request the policy denies costs no node call, a request that needs approvals waits
for them (``pending_approval``), and an approver learns at once, with the precise reason,
when an approval would not count. Velocity windows are the nodes' (their release logs):
the coordinator evaluates them over no history, so it may let through what nodes refuse.

Approvals are stored one row each (:class:`api.db.Approval`, with the time received), and
the request body's ``approvals`` (what the nodes are sent) is rewritten, in the same
transaction, to the stored approvals that still count. The move out of
``pending_approval`` (to ``signing`` when the requirement holds, to ``rejected`` on one
valid rejection from a required group) is a conditional update in that one group-writer
transaction, so concurrent approvals start signing exactly once.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import Connection, Table, select, update

from api import audit, webhooks
from api.coordinator.hd import signing_key
from api.coordinator.types import KeyInfo, problem_doc
from api.db import Approval as ApprovalRow
from api.db import Database, SignRequest, utcnow
from api.governance import GovernanceStore
from api.problems import Problem
from custody import approvals as ap
from custody import policy as pol
from custody.kinds import Intent

__all__ = ["ApprovalDesk", "Evaluation", "Submitted", "decode_b64", "requirement_out"]

Want = Literal["approve", "reject"]
_APPROVALS = cast(Table, ApprovalRow.__table__)
_REQUESTS = cast(Table, SignRequest.__table__)
NO_GOVERNANCE = "no governance is installed on the coordinator: deny by default"


@dataclass(frozen=True)
class Evaluation:
    """A request's decoded intent, the request its approvals name, and the decision."""

    intent: Intent | str
    request: ap.ApprovalRequest
    decision: pol.Decision
    governance: Any  # custody.governance.Governance | None (None: nothing installed)

    @property
    def kind(self) -> str:
        return self.intent if isinstance(self.intent, str) else self.intent.kind

    def summary(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(self.intent, str):
            return {"message": str(body.get("message", ""))}
        return self.intent.summary()


@dataclass(frozen=True)
class Submitted:
    """What an accepted approval did: the request's new status and body."""

    status: str
    body: dict[str, Any]
    outcome: ap.ApprovalOutcome


def decode_b64(value: str) -> bytes:
    """Standard padded base64 (RFC 4648 section 4), canonical: else a 422 problem."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or base64.b64encode(raw).decode() != value:
        raise Problem(
            422,
            ap.RefusalReason.MALFORMED.value,
            "Approval refused",
            "approval: standard padded base64 of the approval's canonical CBOR",
            field="approval",
        )
    return raw


def requirement_out(req: pol.Requirement) -> dict[str, Any]:
    """``{"op": "all"|"any", "terms": [{"group", "m"} | requirement]}``."""
    return {
        "op": req.op,
        "terms": [
            {"group": t.group_id, "m": t.m}
            if isinstance(t, pol.GroupQuorum)
            else requirement_out(t)
            for t in req.terms
        ],
    }


def _refused(r: ap.Refusal) -> Problem:
    return Problem(422, r.reason.value, "Approval refused", r.detail, approver_id=r.approver_id)


class ApprovalDesk:
    def __init__(self, db: Database, governance: GovernanceStore) -> None:
        self.db = db
        self.governance = governance

    # -- policy -----------------------------------------------------------------------------
    def evaluate(self, key: KeyInfo, body: Mapping[str, Any], now: int) -> Evaluation:
        """The decision of the active governance for ``body`` (a request to ``key``) at
        ``now``; raises :class:`custody.signing.SignRequestError` for a malformed request.
        No governance installed: deny by default."""
        key = signing_key(key, body)  # a derivation_path: decoded for the child key
        public_key = bytes.fromhex(key.public_key) if key.public_key else None
        intent, request = ap.request_intent(key.scheme, body, public_key=public_key)
        g = self.governance.current
        if g is None:
            decision = pol.Decision(
                "deny", pol.DEFAULT_DENY, pol.Reason.NO_RULE, detail=NO_GOVERNANCE
            )
        else:
            decision = pol.decide(
                g,
                intent,
                key_id=str(body["key_id"]),
                initiator=str(body.get("initiator", "")),
                now=now,
            )
        return Evaluation(intent, request, decision, g)

    # -- what an approver is shown ------------------------------------------------------------
    def view(
        self,
        ev: Evaluation,
        body: Mapping[str, Any],
        rows: Sequence[Any],
        now: int,
    ) -> dict[str, Any]:
        """The ``approval`` member of a sign request (:class:`custody.models.ApprovalState`)."""
        g = ev.governance
        approvals = [ap.decode_approval(decode_b64(r.approval)) for r in rows]
        outcome = (
            ap.verify_approvals(ev.decision, approvals, g, ev.request, now, _initiator(body))
            if g is not None
            else ap.ApprovalOutcome("rejected", "approvals-policy-denied")
        )
        initiator = _initiator(body)

        def counts(a: ap.AnyApproval) -> bool:
            if g is None:
                return False
            one = ap.verify_approvals(ev.decision, [a], g, ev.request, now, initiator)
            return not one.refused

        d = ev.decision
        return {
            "kind": ev.kind,
            "summary": ev.summary(body),
            "intent_digest": ev.request.intent_digest.hex(),
            "policy_version": d.policy_version,
            "governance_digest": d.governance_digest.hex(),
            "initiator": _initiator(body),
            "decision": {
                "action": d.action,
                "rule_id": d.rule_id,
                "reason": d.reason.value,
                "detail": d.detail,
            },
            "requirement": None if d.requirement is None else requirement_out(d.requirement),
            "groups": _groups(g, d.requirement),
            "status": outcome.status,
            "missing": [
                {"group": s.group_id, "needed": s.needed, "m": s.m} for s in outcome.missing
            ],
            "counted": {k: list(v) for k, v in outcome.counted.items()},
            "rejected_by": list(outcome.rejected_by),
            "approvals": [
                {
                    "approver_id": r.approver_id,
                    "decision": r.decision,
                    "received_at": r.received_at,
                    "expires_at": r.expires_at,
                    "counts": counts(a),
                }
                for r, a in zip(rows, approvals, strict=True)
            ],
        }

    # -- the workflow ------------------------------------------------------------------------
    async def submit(
        self,
        request_id: str,
        encoded: str,
        want: Want,
        key: KeyInfo,
        body: Mapping[str, Any],
        actor: str,
    ) -> Submitted:
        """Check one approval (``want``: the endpoint's decision) against the request's own
        body and the active governance, store it with its audit entry, and move the
        request on when the requirement holds or a required group rejected; a 422 problem
        naming the refusal reason when it would not count, 409 when the request no longer
        waits for approvals."""
        raw = decode_b64(encoded)
        try:
            approval = ap.decode_approval(raw)
        except ap.ApprovalError as exc:
            raise Problem(
                422, ap.RefusalReason.MALFORMED.value, "Approval refused", str(exc)
            ) from None
        st = approval.statement
        if st.decision != want:
            raise Problem(
                422,
                "approval-wrong-decision",
                "Approval refused",
                f"a {st.decision!r} statement was posted to the {want} endpoint",
                approver_id=st.approver_id,
            )
        now = int(time.time())
        ev = self.evaluate(key, body, now)
        g = ev.governance
        initiator = _initiator(body)
        if g is not None and ev.decision.action == "approve":
            alone = ap.verify_approvals(ev.decision, [approval], g, ev.request, now, initiator)
            if alone.refused:
                raise _refused(alone.refused[0])

        def job(conn: Connection) -> Submitted:
            return self._store(conn, request_id, encoded, approval, ev, now, actor)

        return await self.db.write(job)

    def _store(
        self,
        conn: Connection,
        request_id: str,
        encoded: str,
        approval: ap.AnyApproval,
        ev: Evaluation,
        now: int,
        actor: str,
    ) -> Submitted:
        """One group-writer transaction: re-read the request, count every stored approval
        and the new one, store it, audit it, and make the move out of pending_approval
        conditional on the status read (so it happens once)."""
        row = conn.execute(  # FOR UPDATE (PostgreSQL): approvals to one request, whichever
            # coordinator takes them, are counted one after another (SQLite: its write lock)
            select(_REQUESTS.c.status, _REQUESTS.c.body)
            .where(_REQUESTS.c.id == request_id)
            .with_for_update()
        ).first()
        if row is None:
            raise Problem(404, "not-found", "Not found", f"no sign request {request_id!r}")
        if row.status != "pending_approval":
            raise _not_pending(request_id, row.status)
        body = dict(row.body)
        initiator = _initiator(body)
        stored = [
            (r.approval, ap.decode_approval(decode_b64(r.approval)))
            for r in conn.execute(
                select(_APPROVALS.c.approval)
                .where(_APPROVALS.c.request_id == request_id)
                .order_by(_APPROVALS.c.id)
            )
        ]
        g = ev.governance
        everything = [a for _, a in stored] + [approval]
        if g is None:
            outcome = ap.ApprovalOutcome("rejected", "approvals-policy-denied")
        else:
            outcome = ap.verify_approvals(ev.decision, everything, g, ev.request, now, initiator)
            st = approval.statement
            for r in outcome.refused:
                if r.approver_id == st.approver_id and r.reason == ap.RefusalReason.DUPLICATE:
                    raise _refused(r)
        st = approval.statement
        conn.execute(
            _APPROVALS.insert(),
            {
                "request_id": request_id,
                "approver_id": st.approver_id,
                "decision": st.decision,
                "approval": encoded,
                "expires_at": dt.datetime.fromtimestamp(st.expires_at, dt.UTC),
                "received_at": utcnow(),
                "received_by": actor,
            },
        )
        audit.append(
            conn,
            actor,
            "sign.approval" if st.decision == "approve" else "sign.rejection",
            request_id,
            {
                "approver_id": st.approver_id,
                "decision": st.decision,
                "intent_digest": st.intent_digest.hex(),
                "policy_version": st.policy_version,
                "governance_digest": st.governance_digest.hex(),
                "expires_at": st.expires_at,
                "initiator": st.initiator,
                "approval": encoded,
            },
        )
        # What the nodes are sent: the stored approvals that still count (not expired,
        # not superseded), oldest first.
        counting = [
            text
            for text, a in [*stored, (encoded, approval)]
            if g is not None
            and a.statement.decision == "approve"
            and not ap.verify_approvals(ev.decision, [a], g, ev.request, now, initiator).refused
        ]
        body["approvals"] = counting
        body.setdefault("initiator", initiator)
        status = {"satisfied": "signing", "rejected": "rejected", "pending": "pending_approval"}[
            outcome.status
        ]
        changes: dict[str, Any] = {"body": body, "updated_at": utcnow()}
        if status != "pending_approval":
            changes["status"] = status
        if status == "rejected":
            changes["error"] = problem_doc(
                "approvals-rejected" if outcome.rejected_by else "policy-denied",
                "Rejected",
                f"rejected by {', '.join(outcome.rejected_by)}"
                if outcome.rejected_by
                else f"{ev.decision.rule_id}: {ev.decision.reason.value} {ev.decision.detail}",
                403,
                rejected_by=list(outcome.rejected_by),
            )
        done = conn.execute(
            update(_REQUESTS)
            .where(_REQUESTS.c.id == request_id, _REQUESTS.c.status == "pending_approval")
            .values(**changes)
        )
        if done.rowcount != 1:  # another coordinator moved it first
            raise _not_pending(request_id, "no longer pending_approval")
        if status != "pending_approval":
            event = "sign_request.approved" if status == "signing" else "sign_request.rejected"
            ref = {"id": request_id, "key_id": body.get("key_id"), "kind": body.get("kind")}
            webhooks.enqueue(  # the outbox, in this transaction (api.webhooks)
                conn, event, webhooks.sign_request_event({**ref, **changes, "status": status})
            )
            audit.append(
                conn,
                "coordinator",
                "sign.approved" if status == "signing" else "sign.rejected",
                request_id,
                {
                    "policy_version": ev.decision.policy_version,
                    "rule_id": ev.decision.rule_id,
                    "reason": outcome.reason,
                    "counted": {k: list(v) for k, v in outcome.counted.items()},
                    "rejected_by": list(outcome.rejected_by),
                },
            )
        return Submitted(status, body, outcome)


def _initiator(body: Mapping[str, Any]) -> str:
    return str(body.get("initiator", ""))


def _not_pending(request_id: str, status: str) -> Problem:
    return Problem(
        409,
        "request-not-pending",
        "Request not pending approval",
        f"sign request {request_id} is {status}: approvals are taken only while it is "
        "pending_approval",
        request_id=request_id,
    )


def _groups(g: Any, req: pol.Requirement | None) -> list[dict[str, Any]]:
    """The approver groups a requirement names, with their members (the N of M of N)."""
    if g is None or req is None:
        return []
    out = []
    for gid in sorted(req.groups()):
        group = g.policy.group(gid)
        members = [] if group is None else [a.approver_id for a in group.approvers]
        out.append({"group": gid, "n": len(members), "approvers": members})
    return out
