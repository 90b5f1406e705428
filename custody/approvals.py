"""Approvals: approvers' Ed25519 signatures over what they approve, and their counting. Pure.

An approver (a named principal with a key file of their own,
:func:`custody.governance.create_approver_key`) signs an :class:`ApprovalStatement`:

    Ed25519( APPROVAL_CONTEXT || canonical CBOR of the statement )

with ``APPROVAL_CONTEXT = b"tpwc-approval-v1\\x00"`` and the statement a CBOR map of exactly
these fields (RFC 8949 section 4.2.1 canonical encoding):

=================== ========= =========================================================
field               type      meaning
=================== ========= =========================================================
``format``          uint      1
``intent_digest``   bstr 32   :func:`intent_digest`: SHA-256 over the intent's canonical
                              summary (binds the decoded request, hence its digests)
``request_id``      tstr      the sign request's id
``policy_version``  uint      the governance version whose policy was evaluated
``governance_digest`` bstr 32 that version's digest (:attr:`Governance.digest`)
``expires_at``      uint      Unix seconds; the approval counts while ``now < expires_at``
``approver_id``     tstr      who signs
``decision``        tstr      ``approve`` or ``reject``
``initiator``       tstr      the principal who created the request, as the approver was
                              shown it; it must equal the request's ``initiator``, so a
                              coordinator cannot rename the initiator after approval
=================== ========= =========================================================

:func:`verify_approvals` is what every node runs: each signature against the approver's
key in the governance's approver groups, the request, intent, policy version and
governance digest it names, its expiry, the initiator rule (the initiator never counts),
duplicates (an approver counts once; an approver who both approved and rejected has
rejected), and one valid rejection from a group the requirement names rejects the request.
No I/O, no clock: ``now`` is an argument.

Passkey approvals (issue 15): an approver whose governance entry is a passkey credential
(:mod:`custody.passkeys`) approves with a WebAuthn assertion whose challenge is
SHA-256(``statement.signed_bytes()``); the wire form is canonical CBOR
``{"statement": bstr, "webauthn": {"credential_id", "authenticator_data",
"client_data_json", "signature"}}`` (:class:`PasskeyApproval`). It is checked exactly like an
Ed25519 approval, its signature step being :func:`custody.passkeys.verify_assertion`
(RP id hash, UP and UV flags, origin, challenge, signature, counter), and counts the same.
The caller gives each credential's last recorded counter (``passkey_floor``) and records
the counters of the assertions that verified (:attr:`ApprovalOutcome.passkey_counters`).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import cbor2
import nacl.exceptions
import nacl.signing

from custody import passkeys
from custody.domain import DECODED_KINDS
from custody.governance import Governance
from custody.kinds import Intent
from custody.policy import Decision, GroupQuorum, Requirement
from custody.signing import decode_request, derivation_summary, message_to_sign

__all__ = [
    "APPROVAL_CONTEXT",
    "INTENT_DIGEST_CONTEXT",
    "AnyApproval",
    "Approval",
    "ApprovalError",
    "PasskeyApproval",
    "PasskeyCounter",
    "ApprovalOutcome",
    "ApprovalRequest",
    "ApprovalStatement",
    "Refusal",
    "RefusalReason",
    "Shortfall",
    "check_signature",
    "decode_approval",
    "intent_digest",
    "request_intent",
    "sign_approval",
    "verify_approvals",
]

APPROVAL_CONTEXT: Final = b"tpwc-approval-v1\x00"
INTENT_DIGEST_CONTEXT: Final = b"tpwc-intent-digest-v1\x00"
STATEMENT_FORMAT: Final = 1
# A passkey approval carries clientDataJSON and authenticatorData beside the statement.
MAX_APPROVAL_BYTES: Final = 2048
_FIELDS: Final = frozenset(
    {
        "format",
        "intent_digest",
        "request_id",
        "policy_version",
        "governance_digest",
        "expires_at",
        "approver_id",
        "decision",
        "initiator",
    }
)


class ApprovalError(ValueError):
    """Bytes that are not an approval (malformed, non-canonical, wrong fields)."""


def intent_digest(kind: str, summary: Mapping[str, Any]) -> bytes:
    """SHA-256 over a context tag and the canonical CBOR of ``{"kind", "summary"}``, where
    ``summary`` is :meth:`custody.kinds.Intent.summary` (for ``raw``, ``{"message": hex}``)."""
    body = cbor2.dumps({"kind": kind, "summary": dict(summary)}, canonical=True)
    return hashlib.sha256(INTENT_DIGEST_CONTEXT + body).digest()


def request_intent(
    scheme: str, request: Mapping[str, Any], *, public_key: bytes | None = None
) -> tuple[Intent | str, ApprovalRequest]:
    """What a policy evaluates for a sign ``request`` to a key of ``scheme`` (the decoded
    :class:`~custody.kinds.Intent`, or the kind's name for kinds without a decoder) and the
    :class:`ApprovalRequest` its approvals must name. The coordinator, every node and the
    approver's CLI call this on the request they hold; nothing is taken from another party.
    ``public_key`` is the key's (needed for ``btc-psbt``: every input must spend its BIP-86
    output), the child's for a request with a ``derivation_path``, whose summary then
    carries ``derivation`` (:func:`custody.signing.derivation_summary`). Raises
    :class:`custody.signing.SignRequestError` for a malformed request."""
    message = message_to_sign(scheme, request, public_key=public_key)
    kind = str(request["kind"])
    intent: Intent | str
    if kind in DECODED_KINDS:
        intent = decode_request(scheme, request, public_key=public_key)
        summary = intent.summary()
    else:
        intent, summary = kind, {"message": message.hex()}
    derivation = derivation_summary(scheme, request, public_key)
    if derivation is not None:  # signing under a derived key: path, child key (issue 13)
        summary = {**summary, "derivation": derivation}
    return intent, ApprovalRequest(str(request["id"]), intent_digest(kind, summary))


@dataclass(frozen=True)
class ApprovalStatement:
    intent_digest: bytes
    request_id: str
    policy_version: int
    governance_digest: bytes
    expires_at: int
    approver_id: str
    decision: Literal["approve", "reject"]
    initiator: str

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "format": STATEMENT_FORMAT,
                "intent_digest": self.intent_digest,
                "request_id": self.request_id,
                "policy_version": self.policy_version,
                "governance_digest": self.governance_digest,
                "expires_at": self.expires_at,
                "approver_id": self.approver_id,
                "decision": self.decision,
                "initiator": self.initiator,
            },
            canonical=True,
        )

    def signed_bytes(self) -> bytes:
        return APPROVAL_CONTEXT + self.encode()


@dataclass(frozen=True)
class Approval:
    """A statement and its signature; ``encode`` is the wire form
    (canonical CBOR ``{"statement": bstr, "signature": bstr 64}``)."""

    statement: ApprovalStatement
    signature: bytes

    def encode(self) -> bytes:
        return cbor2.dumps(
            {"statement": self.statement.encode(), "signature": self.signature}, canonical=True
        )


@dataclass(frozen=True)
class PasskeyApproval:
    """A statement and the WebAuthn assertion over its challenge (module docstring)."""

    statement: ApprovalStatement
    assertion: passkeys.PasskeyAssertion

    @property
    def challenge(self) -> bytes:
        return passkeys.challenge_for(self.statement.signed_bytes())

    @property
    def assertion_digest(self) -> bytes:
        """SHA-256 over the assertion's three signed parts: one assertion, one digest."""
        a = self.assertion
        return hashlib.sha256(
            cbor2.dumps([a.authenticator_data, a.client_data_json, a.signature])
        ).digest()

    def encode(self) -> bytes:
        return cbor2.dumps(
            {"statement": self.statement.encode(), "webauthn": self.assertion.to_cbor()},
            canonical=True,
        )


AnyApproval = Approval | PasskeyApproval


@dataclass(frozen=True)
class PasskeyCounter:
    """A passkey assertion that verified: what the verifier records for the credential."""

    approver_id: str
    credential_id: bytes
    sign_count: int
    assertion_digest: bytes


#: ``passkey_floor(credential_id, assertion_digest)``: the counter an assertion must exceed
#: (the verifier's last recorded one for the credential; one less when the recorded one was
#: set by this very assertion, so a retry of the same approval still counts). 0 if none.
PasskeyFloor = Callable[[bytes, bytes], int]


def sign_approval(signer: nacl.signing.SigningKey, statement: ApprovalStatement) -> Approval:
    return Approval(statement, signer.sign(statement.signed_bytes()).signature)


def _strict(data: Any, what: str) -> Any:
    if not isinstance(data, bytes) or len(data) > MAX_APPROVAL_BYTES:
        raise ApprovalError(f"{what}: bytes of at most {MAX_APPROVAL_BYTES}")
    try:
        value = cbor2.loads(data)
        again = cbor2.dumps(value, canonical=True)
    except Exception as exc:  # cbor2 raises several types
        raise ApprovalError(f"{what}: not CBOR") from exc
    if again != data:
        raise ApprovalError(f"{what}: not canonical CBOR")
    return value


def decode_approval(data: bytes) -> AnyApproval:
    """Strictly decode an approval's wire form (an Ed25519 :class:`Approval` or a
    :class:`PasskeyApproval`); :class:`ApprovalError` names the field."""
    outer = _strict(data, "approval")
    if isinstance(outer, dict) and set(outer) == {"statement", "webauthn"}:
        try:
            assertion = passkeys.assertion_from_cbor(outer["webauthn"])
        except passkeys.PasskeyError as exc:
            raise ApprovalError(str(exc)) from None
        return PasskeyApproval(_statement(outer["statement"]), assertion)
    if not isinstance(outer, dict) or set(outer) != {"statement", "signature"}:
        raise ApprovalError("approval: fields statement and signature (or webauthn)")
    sig = outer["signature"]
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise ApprovalError("signature: 64 bytes")
    return Approval(_statement(outer["statement"]), sig)


def _statement(data: Any) -> ApprovalStatement:
    raw = _strict(data, "statement")
    if not isinstance(raw, dict) or set(raw) != _FIELDS:
        raise ApprovalError(f"statement: expected fields {sorted(_FIELDS)}")
    if raw["format"] != STATEMENT_FORMAT:
        raise ApprovalError(f"statement.format: not {STATEMENT_FORMAT}")
    for name in ("intent_digest", "governance_digest"):
        if not isinstance(raw[name], bytes) or len(raw[name]) != 32:
            raise ApprovalError(f"statement.{name}: 32 bytes")
    for name in ("request_id", "approver_id", "initiator"):
        if not isinstance(raw[name], str) or not 1 <= len(raw[name]) <= 64:
            raise ApprovalError(f"statement.{name}: a string of 1-64 characters")
    for name in ("policy_version", "expires_at"):
        v = raw[name]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
            raise ApprovalError(f"statement.{name}: a non-negative integer")
    if raw["decision"] not in ("approve", "reject"):
        raise ApprovalError("statement.decision: approve or reject")
    return ApprovalStatement(
        raw["intent_digest"],
        raw["request_id"],
        raw["policy_version"],
        raw["governance_digest"],
        raw["expires_at"],
        raw["approver_id"],
        raw["decision"],
        raw["initiator"],
    )


# -- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalRequest:
    """The request approvals are checked against."""

    request_id: str
    intent_digest: bytes


class RefusalReason(enum.StrEnum):
    """Why one approval does not count (stable, machine-readable)."""

    MALFORMED = "approval-malformed"
    UNKNOWN_APPROVER = "approval-unknown-approver"
    BAD_SIGNATURE = "approval-bad-signature"
    OTHER_REQUEST = "approval-other-request"
    OTHER_INTENT = "approval-other-intent"
    OTHER_INITIATOR = "approval-other-initiator"  # shown another initiator than the request's
    STALE_POLICY = "approval-stale-policy-version"  # names an older (or other) version
    OTHER_GOVERNANCE = "approval-other-governance"  # same version number, other digest
    EXPIRED = "approval-expired"
    INITIATOR = "approval-by-initiator"
    NOT_IN_REQUIRED_GROUP = "approval-not-in-a-required-group"
    DUPLICATE = "approval-duplicate"
    # issue 15: a passkey approval's assertion (custody.passkeys.PasskeyRefusal, same values)
    PASSKEY_MALFORMED = "passkey-malformed"
    PASSKEY_UNKNOWN_CREDENTIAL = "passkey-unknown-credential"
    PASSKEY_WRONG_TYPE = "passkey-wrong-type"
    PASSKEY_CHALLENGE = "passkey-challenge-mismatch"
    PASSKEY_ORIGIN = "passkey-wrong-origin"
    PASSKEY_CROSS_ORIGIN = "passkey-cross-origin"
    PASSKEY_RP_ID = "passkey-wrong-rp-id"
    PASSKEY_USER_PRESENCE = "passkey-user-not-present"
    PASSKEY_USER_VERIFICATION = "passkey-user-not-verified"
    PASSKEY_STALE_COUNTER = "passkey-stale-counter"
    PASSKEY_BAD_SIGNATURE = "passkey-bad-signature"
    PASSKEY_KIND = "approval-wrong-kind"  # a passkey approver's Ed25519 approval, or reverse


@dataclass(frozen=True)
class Refusal:
    approver_id: str
    reason: RefusalReason
    detail: str


@dataclass(frozen=True)
class Shortfall:
    """Group ``group_id`` still needs ``needed`` more approvals (of ``m``)."""

    group_id: str
    needed: int
    m: int


Status = Literal["satisfied", "pending", "rejected"]


@dataclass(frozen=True)
class ApprovalOutcome:
    status: Status
    reason: str  # stable: approvals-satisfied | approvals-pending | approvals-rejected | ...
    counted: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # group -> approvers
    missing: tuple[Shortfall, ...] = ()  # for pending: what would satisfy each open term
    rejected_by: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()
    passkey_counters: tuple[PasskeyCounter, ...] = ()  # to record (module docstring)

    @property
    def satisfied(self) -> bool:
        return self.status == "satisfied"


def check_signature(
    approval: AnyApproval, governance: Governance, passkey_floor: PasskeyFloor | None
) -> Refusal | PasskeyCounter | None:
    """The approval's signature under the approver's governance key: the Ed25519 signature,
    or the passkey assertion (:func:`custody.passkeys.verify_assertion`)."""
    st = approval.statement
    who = st.approver_id
    approver = governance.approver(who)
    if approver is None:
        return Refusal(who, RefusalReason.UNKNOWN_APPROVER, f"{who} is in no approver group")
    if approver.passkey is None:
        if not isinstance(approval, Approval):
            return Refusal(
                who, RefusalReason.PASSKEY_KIND, f"{who} approves with a key file, not a passkey"
            )
        try:
            nacl.signing.VerifyKey(approver.public_key).verify(
                st.signed_bytes(), approval.signature
            )
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return Refusal(who, RefusalReason.BAD_SIGNATURE, f"signature of {who} does not verify")
        return None
    if not isinstance(approval, PasskeyApproval):
        return Refusal(
            who, RefusalReason.PASSKEY_KIND, f"{who} approves with a passkey, not a key file"
        )
    floor = 0
    if passkey_floor is not None:
        floor = passkey_floor(approver.passkey.credential_id, approval.assertion_digest)
    try:
        verified = passkeys.verify_assertion(
            approver.passkey, approval.assertion, approval.challenge, floor
        )
    except passkeys.AssertionRefused as exc:
        return Refusal(who, RefusalReason(exc.reason.value), f"passkey of {who}: {exc.detail}")
    return PasskeyCounter(
        who, verified.credential_id, verified.sign_count, approval.assertion_digest
    )


def _check_one(
    approval: AnyApproval,
    governance: Governance,
    request: ApprovalRequest,
    now: int,
    initiator: str,
    required: frozenset[str],
) -> Refusal | None:
    """Everything but the signature (:func:`check_signature`, run first)."""
    st = approval.statement
    who = st.approver_id
    if st.request_id != request.request_id:
        return Refusal(
            who, RefusalReason.OTHER_REQUEST, f"{who} approved request {st.request_id!r}"
        )
    if st.intent_digest != request.intent_digest:
        return Refusal(who, RefusalReason.OTHER_INTENT, f"{who} approved another intent")
    if st.initiator != initiator:
        return Refusal(
            who,
            RefusalReason.OTHER_INITIATOR,
            f"{who} approved a request initiated by {st.initiator!r}, not {initiator!r}",
        )
    if st.policy_version != governance.version:
        return Refusal(
            who,
            RefusalReason.STALE_POLICY,
            f"{who} approved under policy version {st.policy_version}, not {governance.version}",
        )
    if st.governance_digest != governance.digest:
        return Refusal(
            who,
            RefusalReason.OTHER_GOVERNANCE,
            f"{who} approved under another governance document of version {st.policy_version}",
        )
    if now >= st.expires_at:
        return Refusal(who, RefusalReason.EXPIRED, f"approval of {who} expired at {st.expires_at}")
    if who == initiator:
        return Refusal(who, RefusalReason.INITIATOR, f"{who} initiated the request")
    if not any(
        g.group_id in required and g.member(who) is not None
        for g in governance.policy.approver_groups
    ):
        return Refusal(
            who, RefusalReason.NOT_IN_REQUIRED_GROUP, f"{who} is in none of {sorted(required)}"
        )
    return None


def _term_ok(term: GroupQuorum | Requirement, counts: Mapping[str, int]) -> bool:
    if isinstance(term, GroupQuorum):
        return counts.get(term.group_id, 0) >= term.m
    results = [_term_ok(t, counts) for t in term.terms]
    return all(results) if term.op == "all" else any(results)


def _shortfalls(req: Requirement, counts: Mapping[str, int]) -> list[Shortfall]:
    out: list[Shortfall] = []
    for t in req.terms:
        if _term_ok(t, counts):
            continue
        if isinstance(t, GroupQuorum):
            out.append(Shortfall(t.group_id, t.m - counts.get(t.group_id, 0), t.m))
        else:
            out.extend(_shortfalls(t, counts))
    return out


def verify_approvals(
    decision: Decision,
    approvals: Sequence[AnyApproval | bytes],
    governance: Governance,
    request: ApprovalRequest,
    now: int,
    initiator: str,
    passkey_floor: PasskeyFloor | None = None,
) -> ApprovalOutcome:
    """Count ``approvals`` for ``decision`` (from :func:`custody.policy.decide` on the same
    ``governance``) at ``now``; the request was initiated by principal ``initiator``.

    ``satisfied`` when the requirement holds on valid approvals; ``rejected`` when the
    policy denied, the decision was made under another governance version, or a valid
    rejection came from an approver of a group the requirement names; ``pending``
    otherwise, with ``missing`` listing what each open term still needs. Approvals that do
    not count are listed in ``refused``, each naming the approver and the reason.
    ``passkey_floor`` gives each passkey credential's recorded counter (None: 0, a verifier
    that keeps none); the counters of passkey assertions that counted (approvals and
    rejections) are in ``passkey_counters`` for the caller to record.
    """
    if decision.policy_version != governance.version or (
        decision.governance_digest != governance.digest
    ):
        return ApprovalOutcome("rejected", "approvals-decision-of-other-governance")
    if decision.action == "deny":
        return ApprovalOutcome("rejected", "approvals-policy-denied")
    if decision.action == "allow":
        return ApprovalOutcome("satisfied", "approvals-not-required")
    req = decision.requirement
    if req is None:  # an approve decision always carries one; fail closed
        return ApprovalOutcome("rejected", "approvals-no-requirement")
    required = req.groups()
    refused: list[Refusal] = []
    counters: list[PasskeyCounter] = []
    approvers: set[str] = set()
    rejecters: set[str] = set()
    for item in approvals:
        if isinstance(item, bytes):
            try:
                item = decode_approval(item)
            except ApprovalError as exc:
                refused.append(Refusal("", RefusalReason.MALFORMED, str(exc)))
                continue
        checked = check_signature(item, governance, passkey_floor)
        if isinstance(checked, Refusal):
            refused.append(checked)
            continue
        problem = _check_one(item, governance, request, now, initiator, required)
        if problem is not None:
            refused.append(problem)
            continue
        if checked is not None:
            counters.append(checked)
        who = item.statement.approver_id
        if item.statement.decision == "reject":
            rejecters.add(who)
        elif who in approvers:
            refused.append(Refusal(who, RefusalReason.DUPLICATE, f"{who} approved twice"))
        else:
            approvers.add(who)
    approvers -= rejecters  # one who rejected has rejected, whatever else they signed
    # A set: an approver counts once per group even if a group listed it twice (which
    # check_policy refuses; this is the second line, behind it).
    counted = {
        g.group_id: tuple(
            sorted({a.approver_id for a in g.approvers if a.approver_id in approvers})
        )
        for g in governance.policy.approver_groups
        if g.group_id in required
    }
    if rejecters:
        return ApprovalOutcome(
            "rejected",
            "approvals-rejected",
            counted,
            rejected_by=tuple(sorted(rejecters)),
            refused=tuple(refused),
            passkey_counters=tuple(counters),
        )
    counts = {g: len(a) for g, a in counted.items()}
    if _term_ok(req, counts):
        return ApprovalOutcome(
            "satisfied",
            "approvals-satisfied",
            counted,
            refused=tuple(refused),
            passkey_counters=tuple(counters),
        )
    return ApprovalOutcome(
        "pending",
        "approvals-pending",
        counted,
        missing=tuple(_shortfalls(req, counts)),
        refused=tuple(refused),
        passkey_counters=tuple(counters),
    )
