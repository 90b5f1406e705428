"""The authorization seam: the one place a node decides whether it may release a partial
signature (DESIGN.md invariant 2; issue 10, item 4: nodes decide).

:func:`authorize` is called by every signing path (FROST and ECDSA) after the request has
been parsed and before any nonce or presignature is touched. It raises
:class:`NotAuthorized` (a stable ``reason`` code and a detail) to refuse; it returns an
:class:`Authorization` (what was decided, for the release log and the receipt) to allow.
It is pure: the governance, the clock reading and the release history are given.

In order:

1. the HTTP request was signed by the enrolled coordinator (``custody.nodeauth``,
   checked by the service before the handler runs, recorded in ``coordinator_verified``)
   (``not-coordinator``), and names the key asked to sign (``key-mismatch``);
2. a ``kind: raw`` request only for a key the governance lists in ``raw_signing_keys``
   (``raw-not-enabled``);
3. the node recomputed the message from the request payload itself
   (``custody.signing.message_to_sign``) and it is byte-for-byte what the signing package
   (FROST) or the caller (ECDSA) asks it to sign (``message-mismatch``);
4. the coordinator's two members of the request body (the wire contract): ``initiator``,
   the principal who created the request (``initiator-malformed``), and ``approvals``, a
   list of at most :data:`MAX_APPROVALS` standard padded base64 strings of
   ``custody.approvals.Approval.encode()`` (``approvals-malformed``,
   ``approvals-too-many``, ``approval-too-large``, ``approval-not-base64``);
5. the node decodes the payload itself (``custody.approvals.request_intent``: the intent
   and the :class:`~custody.approvals.ApprovalRequest` approvals must name) and evaluates
   the ACTIVE governance version it verified (``custody.policy.decide``) at ``now`` over
   its OWN release history (velocity windows). ``raw`` for a key in ``raw_signing_keys``
   is allowed as before and needs no initiator; anything else without an ``initiator`` is
   refused (``initiator-missing``). A denial is ``policy-denied`` (the detail names the
   decision's reason and rule);
6. an ``approve`` decision needs its approvals (``custody.approvals.verify_approvals``):
   a valid rejection is ``approvals-rejected``; a shortfall is ``approvals-pending`` (the
   detail says which group needs how many more) unless some approval was refused, in which
   case the code is that approval's reason (``approval-bad-signature``,
   ``approval-expired``, ``approval-other-request``, ``approval-other-intent``,
   ``approval-other-initiator``, ``approval-stale-policy-version``,
   ``approval-other-governance``, ``approval-by-initiator``, ``approval-duplicate``,
   ``approval-not-in-a-required-group``, ``approval-unknown-approver``,
   ``approval-malformed``) and the detail lists every refused approval.

Satisfied approvals allow; approvals that did not count beside them change nothing.

A passkey approval (issue 15, ``custody.approvals.PasskeyApproval``) counts exactly like an
Ed25519 one; its signature step is the WebAuthn assertion check
(``custody.passkeys.verify_assertion``), refused with ``passkey-user-not-verified``,
``passkey-wrong-origin``, ``passkey-wrong-rp-id``, ``passkey-challenge-mismatch``,
``passkey-stale-counter``, ``passkey-bad-signature`` (and the other ``passkey-*`` codes of
docs/SECURITY.md), or ``approval-wrong-kind`` for a passkey approver's key-file approval.
The counter each assertion must exceed comes from the node's store
(``AuthorizationContext.passkey_floor``); the counters of the assertions that verified are
in ``Authorization.passkey_counters``, which the node records durably before it releases.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from custody import approvals as appr
from custody import governance as gov
from custody import policy as pol
from custody.signing import SignRequestError

__all__ = [
    "MAX_APPROVALS",
    "Authorization",
    "AuthorizationContext",
    "History",
    "NotAuthorized",
    "authorize",
    "request_key",
]

MAX_APPROVALS: Final = 64
#: Base64 length of the largest approval (``custody.approvals.MAX_APPROVAL_BYTES``).
MAX_APPROVAL_B64: Final = 4 * ((appr.MAX_APPROVAL_BYTES + 2) // 3)
MAX_INITIATOR: Final = 64

#: The node's own release history for one asset, without the request being decided:
#: ``history(asset, exclude)`` where ``exclude`` is :func:`request_key` of this request.
History = Callable[[str, tuple[str, str, bytes]], Sequence[pol.Release]]


class NotAuthorized(Exception):
    """The node refuses to sign; ``reason`` is a stable code for the problem document."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class AuthorizationContext:
    """Everything the decision may look at (public values only)."""

    node_id: str
    key_id: str
    scheme: str
    request: Mapping[str, Any]
    recomputed_message: bytes
    requested_message: bytes
    coordinator_verified: bool
    raw_enabled: bool = False  # governance lists this key in raw_signing_keys
    governance: gov.Governance | None = None  # the active version the node verified
    now: int = 0  # Unix seconds
    history: History | None = None  # None: no release counts (a policy without velocity)
    public_key: bytes | None = None  # the key's (btc-psbt: inputs must spend its output)
    passkey_floor: appr.PasskeyFloor | None = None  # the node's recorded passkey counters


@dataclass(frozen=True)
class Authorization:
    """What :func:`authorize` allowed: recorded in the release log and the receipt."""

    decision: pol.Decision
    intent_digest: bytes
    initiator: str | None
    facts: pol.Facts | None  # None for a raw request allowed by raw_signing_keys
    approvals: tuple[tuple[str, bytes], ...]  # counted: (approver id, statement digest)
    passkey_counters: tuple[appr.PasskeyCounter, ...] = ()  # to record before release

    @property
    def asset(self) -> str | None:
        return None if self.facts is None else self.facts.asset

    @property
    def transfers(self) -> tuple[pol.Transfer, ...]:
        return () if self.facts is None else self.facts.transfers


def request_key(request_id: str, key_id: str, intent_digest: bytes) -> tuple[str, str, bytes]:
    """What velocity counts once: a retry of a request on another signer subset, or the
    several items of one request, are one request (the same id, key and intent); the same id
    with another intent is another request."""
    return (request_id, key_id, intent_digest)


def _check_transport(ctx: AuthorizationContext) -> None:
    if not ctx.coordinator_verified:
        raise NotAuthorized("not-coordinator", "request is not signed by the enrolled coordinator")
    if ctx.request.get("key_id") != ctx.key_id:
        raise NotAuthorized("key-mismatch", "request names another key than the one asked to sign")
    if ctx.request.get("kind") == "raw" and not ctx.raw_enabled:
        raise NotAuthorized(
            "raw-not-enabled",
            f"governance does not enable raw signing for key {ctx.key_id!r} (raw_signing_keys)",
        )
    if ctx.recomputed_message != ctx.requested_message:
        raise NotAuthorized(
            "message-mismatch", "message to sign differs from the one recomputed from the request"
        )


def _initiator(request: Mapping[str, Any]) -> str | None:
    raw = request.get("initiator")
    if raw is None:
        return None
    if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_INITIATOR:
        raise NotAuthorized(
            "initiator-malformed", f"initiator: a principal id of 1-{MAX_INITIATOR} characters"
        )
    return raw


def _approvals(request: Mapping[str, Any]) -> list[appr.AnyApproval | bytes]:
    """The ``approvals`` member, bounded and base64-decoded (bytes still to be decoded as
    approvals: a malformed one is refused by ``verify_approvals`` naming it)."""
    raw = request.get("approvals")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise NotAuthorized("approvals-malformed", "approvals: a list of base64 strings")
    if len(raw) > MAX_APPROVALS:
        raise NotAuthorized(
            "approvals-too-many", f"approvals: at most {MAX_APPROVALS}, got {len(raw)}"
        )
    out: list[appr.AnyApproval | bytes] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise NotAuthorized("approvals-malformed", f"approvals[{i}]: a base64 string")
        if len(item) > MAX_APPROVAL_B64:
            raise NotAuthorized(
                "approval-too-large",
                f"approvals[{i}]: longer than {MAX_APPROVAL_B64} base64 characters",
            )
        try:
            data = base64.b64decode(item.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise NotAuthorized(
                "approval-not-base64", f"approvals[{i}]: not standard padded base64"
            ) from None
        if base64.b64encode(data).decode("ascii") != item:  # one encoding per approval
            raise NotAuthorized(
                "approval-not-base64", f"approvals[{i}]: not in canonical padded base64"
            )
        try:
            out.append(appr.decode_approval(data))
        except appr.ApprovalError:
            out.append(data)  # refused by verify_approvals, naming it (approval-malformed)
    return out


def _statement_digest(a: appr.AnyApproval) -> bytes:
    return hashlib.sha256(a.statement.signed_bytes()).digest()


def _counted_one(
    approver_id: str,
    approvals: Sequence[appr.AnyApproval | bytes],
    governance: gov.Governance,
    request: appr.ApprovalRequest,
    now: int,
    initiator: str,
    passkey_floor: appr.PasskeyFloor | None,
) -> appr.AnyApproval:
    """The approval of ``approver_id`` that counted (``verify_approvals`` counted one): the
    one approving this request under this governance whose signature verifies."""
    approver = governance.approver(approver_id)
    assert approver is not None  # it counted
    candidates = [
        a
        for a in approvals
        if isinstance(a, appr.Approval | appr.PasskeyApproval)
        and a.statement.approver_id == approver_id
        and a.statement.decision == "approve"
        and (a.statement.request_id, a.statement.intent_digest)
        == (request.request_id, request.intent_digest)
        and (a.statement.policy_version, a.statement.governance_digest)
        == (governance.version, governance.digest)
        and now < a.statement.expires_at
        and a.statement.initiator == initiator
    ]
    if len(candidates) == 1:  # the one that counted (verify_approvals checked its signature)
        return candidates[0]
    for a in candidates:  # the approver sent several: the first whose signature verifies
        if isinstance(appr.check_signature(a, governance, passkey_floor), appr.Refusal):
            continue
        return a
    raise AssertionError(f"no counted approval of {approver_id}")  # verify_approvals counted it


def _refusals(outcome: appr.ApprovalOutcome) -> str:
    return "; ".join(
        f"{r.reason.value}{f' ({r.approver_id})' if r.approver_id else ''}: {r.detail}"
        for r in outcome.refused
    )


def authorize(ctx: AuthorizationContext) -> Authorization:
    """Raise :class:`NotAuthorized` unless the rule in the module docstring holds."""
    _check_transport(ctx)
    governance = ctx.governance
    if governance is None:  # the pipeline requires governance before this; fail closed
        raise NotAuthorized("governance-missing", "no governance version is installed")
    initiator = _initiator(ctx.request)
    approvals = _approvals(ctx.request)
    try:
        intent, approval_request = appr.request_intent(
            ctx.scheme, ctx.request, public_key=ctx.public_key
        )
    except SignRequestError as exc:
        raise NotAuthorized("request-malformed", str(exc)) from None
    raw_allowed = intent == "raw" and governance.raw_enabled(ctx.key_id)
    if initiator is None and not raw_allowed:
        raise NotAuthorized(
            "initiator-missing",
            "request has no initiator (the principal who created it): only raw signing for a"
            " key in raw_signing_keys goes without one",
        )
    who = initiator or ""
    facts: pol.Facts | None = None
    history: Sequence[pol.Release] = ()
    if not raw_allowed:
        try:
            facts = pol.facts_of(intent, key_id=ctx.key_id, initiator=who)
        except pol.PolicyError:
            facts = None  # decide denies it (policy-intent-not-understood)
        if facts is not None and facts.asset is not None and ctx.history is not None:
            key = request_key(
                approval_request.request_id, ctx.key_id, approval_request.intent_digest
            )
            history = ctx.history(facts.asset, key)
    decision = pol.decide(
        governance, intent, key_id=ctx.key_id, initiator=who, now=ctx.now, history=history
    )
    if decision.action == "deny":
        raise NotAuthorized(
            "policy-denied",
            f"{decision.reason.value} (rule {decision.rule_id}, policy version "
            f"{decision.policy_version})" + (f": {decision.detail}" if decision.detail else ""),
        )
    counted: tuple[tuple[str, bytes], ...] = ()
    passkey_counters: tuple[appr.PasskeyCounter, ...] = ()
    if decision.action == "approve":
        outcome = appr.verify_approvals(
            decision, approvals, governance, approval_request, ctx.now, who, ctx.passkey_floor
        )
        if outcome.status == "rejected":
            code = "approvals-rejected" if outcome.rejected_by else outcome.reason
            raise NotAuthorized(
                code,
                f"rule {decision.rule_id}: "
                + (
                    f"rejected by {', '.join(outcome.rejected_by)}"
                    if outcome.rejected_by
                    else outcome.reason
                ),
            )
        if outcome.status == "pending":
            missing = ", ".join(
                f"group {s.group_id} needs {s.needed} more of {s.m}" for s in outcome.missing
            )
            if outcome.refused:
                raise NotAuthorized(
                    outcome.refused[0].reason.value,
                    f"rule {decision.rule_id}: {missing}; refused: {_refusals(outcome)}",
                )
            raise NotAuthorized("approvals-pending", f"rule {decision.rule_id}: {missing}")
        ids = {a for group in outcome.counted.values() for a in group}
        counted = tuple(
            sorted(
                (
                    a,
                    _statement_digest(
                        _counted_one(
                            a,
                            approvals,
                            governance,
                            approval_request,
                            ctx.now,
                            who,
                            ctx.passkey_floor,
                        )
                    ),
                )
                for a in ids
            )
        )
        passkey_counters = outcome.passkey_counters
    return Authorization(
        decision, approval_request.intent_digest, initiator, facts, counted, passkey_counters
    )
