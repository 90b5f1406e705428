"""The public API models (pydantic v2): request and response bodies of the coordinator API.

The coordinator's routes declare them (so they drive its OpenAPI document) and the SDK
(:mod:`custody.client`) returns them, so an integrator gets the same typed objects the
service documents. Every scheme, status, kind and id rule comes from :mod:`custody.domain`.

Each request and response model carries an example (:mod:`custody.examples`).

May import: :mod:`custody.domain`, :mod:`custody.examples`, pydantic.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from custody import examples
from custody.domain import (
    ID_PATTERN,
    MAX_ID_LEN,
    MAX_MESSAGE,
    KeyStatus,
    Kind,
    Network,
    NodeStatus,
    Role,
    Scheme,
    SignStatus,
)

__all__ = [
    "HEX_PATTERN",
    "NO_CONTROLS_PATTERN",
    "MAX_MESSAGE_HEX",
    "Id",
    "ProblemModel",
    "Health",
    "Ready",
    "NodeEnrol",
    "NodeOut",
    "NodeList",
    "KeyCreate",
    "KeyOut",
    "KeyList",
    "SignRequestCreate",
    "EvmSignature",
    "SignResultOut",
    "Blame",
    "SignRequestOut",
    "SignRequestList",
    "ApprovalSubmit",
    "ApprovalState",
    "ApprovalEntry",
    "ApprovalRequirement",
    "GroupQuorumOut",
    "ApproverGroupOut",
    "Shortfall",
    "PolicyDecision",
    "AuditOut",
    "AuditList",
    "AuditVerify",
    "Page",
]

HEX_PATTERN = r"^(?:[0-9a-fA-F]{2})*$"
# Text for people (labels, descriptions, tags, paths): no C0 control character and no DEL.
# A NUL is the one PostgreSQL cannot store in a text column (psycopg.DataError: a 500 where
# a 422 is due); the rest have no meaning in a label and would let a client forge lines in
# a log or the console. Every string a request carries has this pattern or a stricter one
# (tests/api/test_text_fields.py checks the OpenAPI document for it).
NO_CONTROLS_PATTERN = r"^[^\x00-\x1f\x7f]*$"
NODE_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
MAX_MESSAGE_HEX = 2 * MAX_MESSAGE
Id = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_LEN,
        pattern=ID_PATTERN,
        description=f"1-{MAX_ID_LEN} characters of [A-Za-z0-9._:-]",
    ),
]
T = TypeVar("T")


class ProblemModel(BaseModel):
    """The RFC 9457 members we emit; extension members (``errors``, ``culprits``...) allowed."""

    model_config = ConfigDict(extra="allow", json_schema_extra=examples.of("ProblemModel"))
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class Page(BaseModel, Generic[T]):
    """One page of a list: pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[T]
    next_cursor: str | None


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra=examples.of("Health"))
    status: Literal["ok", "degraded"]
    version: str


class Ready(BaseModel):
    model_config = ConfigDict(json_schema_extra=examples.of("Ready"))
    status: Literal["ready", "not-ready"]
    database: str
    nodes_healthy: int
    nodes_enrolled: int
    pools: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "unused preprocessing held in memory: FROST nonce commitments, ECDSA presignatures"
        ),
    )
    batching: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "node sign calls made since start and the sign items they carried (micro-batching)"
        ),
    )


class NodeEnrol(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("NodeEnrol"))
    url: str = Field(
        min_length=8,
        max_length=300,
        pattern=r"^https?://[^\s]+$",
        description="base URL of the signer node, e.g. http://127.0.0.1:7101",
    )


class NodeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=examples.of("NodeOut"))
    id: str
    party_id: int
    url: str
    status: NodeStatus = Field(description="healthy | degraded | down | unknown")
    last_seen: dt.datetime | None
    last_error: str | None
    sign_pk: str
    box_pk: str


class NodeList(BaseModel):
    model_config = ConfigDict(json_schema_extra=examples.of("NodeList"))
    items: list[NodeOut]


KeyLabel = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_CONTROLS_PATTERN)]
NodeId = Annotated[str, Field(min_length=1, max_length=64, pattern=NODE_ID_PATTERN)]
KeyMetadata = Annotated[
    dict[
        Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._:-]+$")],
        Annotated[str, Field(max_length=200, pattern=NO_CONTROLS_PATTERN)],
    ],
    Field(max_length=16),
]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("KeyCreate"))
    scheme: Scheme
    threshold: int = Field(ge=2, le=255)
    nodes: list[NodeId] | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="node ids holding shares; default all enrolled",
    )
    network: Network | None = Field(
        default=None,
        description="bip340 keys only: the Bitcoin network of the key's BIP-86 address "
        "(default mainnet)",
    )
    label: KeyLabel | None = Field(default=None, description="a name for people; filterable")
    metadata: KeyMetadata | None = Field(default=None, description="string tags, up to 16")


class KeyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=examples.of("KeyOut"))
    id: str
    scheme: Scheme
    threshold: int
    nodes: list[str]
    status: KeyStatus
    public_key: str | None = Field(
        description="hex: 32 bytes (ed25519), 32-byte x-only (bip340), 33-byte compressed (ecdsa)"
    )
    verifying_shares: dict[str, str] | None = None
    network: Network | None = Field(
        default=None, description="bip340 keys: the Bitcoin network of the key's address"
    )
    addresses: dict[str, str] = Field(
        default_factory=dict,
        description='ecdsa-secp256k1: {"ethereum": EIP-55 address}; bip340: {"bitcoin": '
        "BIP-86 P2TR address on the key's network}; ed25519: {}",
    )
    error: ProblemModel | None = None
    created_at: dt.datetime
    label: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class KeyList(Page[KeyOut]):
    model_config = ConfigDict(json_schema_extra=examples.of("KeyList"))


RISK_FLAGS_MAX = 16  # flags in one sign request's risk report
RISK_FLAG_MAX_CHARS = 300
RiskFlag = Annotated[
    str, Field(min_length=1, max_length=RISK_FLAG_MAX_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class RiskReport(BaseModel):
    """What the requester's own risk engine found (the payment core sends its authorization's
    flags: limits, velocity, new destination, z-score). **Non-authoritative metadata**: kept
    in the request's audit entry and shown to approvers in the console as the requester's
    report; it is not part of what the signer nodes are sent, sign or check, and no policy
    decision depends on it."""

    model_config = ConfigDict(extra="forbid")
    score: int | None = Field(default=None, ge=0, le=100, description="the requester's score")
    flags: list[RiskFlag] = Field(
        default_factory=list,
        max_length=RISK_FLAGS_MAX,
        description=f"at most {RISK_FLAGS_MAX} sentences of at most {RISK_FLAG_MAX_CHARS} "
        "characters, no control characters",
    )


class SignRequestCreate(BaseModel):
    """A request to sign. ``payload``: payment details, or for ``evm-tx`` ``{"tx":
    "0x02..."}``, for ``btc-psbt`` ``{"psbt": "<base64>"}`` and for ``message``
    ``{"message": "0x..."}``; it is sent to the nodes, which recompute the message from it
    (``custody.signing.message_to_sign``). A ``btc-psbt`` request's ``network`` is the key's
    own (set by the coordinator; a different one given here is refused). Any other member
    is a 422 (``initiator`` and ``approvals`` are set by the coordinator, never a client).
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("SignRequestCreate"))
    key_id: Id
    kind: Kind
    message: str | None = Field(
        default=None,
        max_length=MAX_MESSAGE_HEX,
        pattern=HEX_PATTERN,
        description="hex; required for raw (ECDSA: a 32-byte digest); for the other kinds "
        "optional, and if given must equal the message recomputed from the payload",
    )
    payload: dict[str, Any] | None = Field(
        default=None,
        description="payment/settlement: the details whose digest is signed; evm-tx: "
        '{"tx": "0x02..."}; btc-psbt: {"psbt": "<base64>"}; message: {"message": "0x..."}',
    )
    network: Network | None = Field(
        default=None, description="btc-psbt only: must be the key's network (default: it)"
    )
    derivation_path: str | None = Field(
        default=None,
        max_length=200,
        pattern=NO_CONTROLS_PATTERN,
        description="sign under the key's non-hardened BIP-32 child at this path, e.g. "
        "'m/0/7' (1-16 steps, canonical decimal; Ed25519 keys: the additive-tweak scheme). "
        "A hardened step is a 422 hardened-derivation naming it. Every node derives its own "
        "share tweak from the path; the child's public key: GET /v1/keys/{id}/derive",
        examples=["m/0/7"],
    )
    risk: RiskReport | None = Field(
        default=None,
        description="the requester's risk report (RiskReport): shown to approvers, audited; "
        "never sent to the signer nodes, and nothing is decided on it",
    )


class DerivedKeyOut(BaseModel):
    """``GET /v1/keys/{id}/derive?path=...``: a key's child at a non-hardened path."""

    key_id: str
    scheme: str
    path: str = Field(description="canonical, e.g. m/0/7")
    public_key: str = Field(
        description="hex: SEC1 compressed (ecdsa), x-only (bip340), RFC 8032 (ed25519)"
    )
    addresses: dict[str, str] = Field(
        default_factory=dict, description="ethereum (ecdsa), bitcoin BIP-86 P2TR (bip340)"
    )
    xpub: str | None = Field(default=None, description="secp256k1 keys: the child's xpub/tpub")


class Blame(BaseModel):
    node_id: str | None
    party_id: int | None
    reason: str


class EvmSignature(BaseModel):
    r: str = Field(description="0x hex, 32 bytes")
    s: str = Field(description="0x hex, 32 bytes, low-s (EIP-2)")
    y_parity: Literal[0, 1]


class SignResultOut(BaseModel):
    """What a signed chain-aware request carries beyond its signature."""

    signature: EvmSignature | None = Field(default=None, description="evm-tx: r, s, y_parity")
    signed_tx: str = Field(
        description="evm-tx: the signed EIP-1559 transaction, 0x02... hex; btc-psbt: the "
        "finalized network transaction (each input's key-path witness), hex without 0x"
    )


class GroupQuorumOut(BaseModel):
    group: str = Field(description="an approver group of the policy")
    m: int = Field(description="approvals needed from that group")


class ApprovalRequirement(BaseModel):
    """What an ``approve`` rule requires: all (AND) or any (OR) of its terms, each a group
    quorum or, one level down, a requirement."""

    op: Literal["all", "any"]
    terms: list[GroupQuorumOut | ApprovalRequirement]


class ApproverGroupOut(BaseModel):
    group: str
    n: int = Field(description="members of the group (the N of M of N)")
    approvers: list[str]


class Shortfall(BaseModel):
    group: str
    needed: int = Field(description="approvals still missing from this group")
    m: int


class PolicyDecision(BaseModel):
    action: Literal["allow", "deny", "approve"]
    rule_id: str = Field(description="the rule that matched, or default-deny")
    reason: str = Field(description="stable: policy-allowed, policy-approvals-required, ...")
    detail: str = ""


class ApprovalEntry(BaseModel):
    approver_id: str
    decision: Literal["approve", "reject"]
    received_at: dt.datetime
    expires_at: dt.datetime
    counts: bool = Field(description="still counts now (not expired, same policy version)")


ApprovalStatus = Literal["satisfied", "pending", "rejected"]


class ApprovalState(BaseModel):
    """What an approver needs to decide, as the coordinator evaluated it. An approver's
    tool must decode the request itself (``custody approve`` does) and compare its own
    ``intent_digest`` with this one: the coordinator is not trusted for what is signed."""

    kind: str
    summary: dict[str, Any] = Field(description="the decoded intent (custody.kinds summary)")
    intent_digest: str = Field(description="hex: custody.approvals.intent_digest")
    policy_version: int = Field(description="the governance version an approval must name")
    governance_digest: str = Field(description="hex: that version's digest")
    initiator: str = Field(description="the principal who created the request")
    decision: PolicyDecision
    requirement: ApprovalRequirement | None
    groups: list[ApproverGroupOut] = Field(default_factory=list)
    status: ApprovalStatus
    missing: list[Shortfall] = Field(default_factory=list)
    counted: dict[str, list[str]] = Field(
        default_factory=dict, description="group -> approvers whose approval counts"
    )
    rejected_by: list[str] = Field(default_factory=list)
    approvals: list[ApprovalEntry] = Field(default_factory=list)


class ApprovalSubmit(BaseModel):
    """One approver's signed statement (``custody.approvals.Approval.encode``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("ApprovalSubmit"))
    approval: str = Field(
        min_length=4,
        max_length=1400,
        pattern=r"^[A-Za-z0-9+/]+={0,2}$",
        description="standard padded base64 of the approval's canonical CBOR",
    )


class SignRequestOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=examples.of("SignRequestOut"))
    id: str
    key_id: str
    kind: Kind
    message: str
    status: SignStatus
    signature: str | None = Field(
        description="hex, 64 bytes: R||s (ed25519, bip340) or r||s low-s (ecdsa); btc-psbt: "
        "64 bytes per input, in input order, each input's BIP-340 signature of its BIP-341 "
        "sighash under the key's BIP-86 output key (the witnesses of result.signed_tx)"
    )
    recovery_id: int | None
    signers: list[int] | None = Field(description="party ids whose shares made the signature")
    result: SignResultOut | None = Field(
        default=None,
        description="evm-tx, once signed: the signature and the signed transaction; "
        "btc-psbt: the finalized transaction",
    )
    blamed: list[Blame]
    error: ProblemModel | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime | None
    payload: dict[str, Any] | None = Field(
        default=None,
        description="the request's payload as the nodes are sent it (decode it yourself: "
        "custody.approvals.request_intent)",
    )
    initiator: str | None = Field(
        default=None, description="the principal whose credential created the request"
    )
    derivation_path: str | None = Field(
        default=None,
        description="the BIP-32 non-hardened path the request signs under (None: the root "
        "key); the signature verifies under the child key at that path",
    )
    approval: ApprovalState | None = Field(
        default=None,
        description="GET of one request that needs (or had) approvals: intent, policy "
        "version, requirement, what is missing, approvals so far",
    )


class SignRequestList(Page[SignRequestOut]):
    model_config = ConfigDict(json_schema_extra=examples.of("SignRequestList"))


class AuditOut(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    subject: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


class AuditList(Page[AuditOut]):
    model_config = ConfigDict(json_schema_extra=examples.of("AuditList"))


class AuditFinding(BaseModel):
    kind: str = Field(
        description="edited | inserted | reordered | deleted | rewritten | truncated | "
        "checkpoint-unsigned | checkpoint-invalid | checkpoint-missing | credential-forged | "
        "signature-invalid | signature-swapped | releases-missing (a node released "
        "signatures the chain does not hold)"
    )
    seq: int | None = Field(description="the first bad audit entry, when it is one")
    subject: str | None = Field(description="the credential, sign request or checkpoint")
    detail: str


class CheckpointSummary(BaseModel):
    stored: int
    anchored: int = Field(description="checkpoints with a valid node signature that hold")
    last_seq: int = Field(description="entries up to here are anchored by node signatures")


class AuditVerify(BaseModel):
    model_config = ConfigDict(json_schema_extra=examples.of("AuditVerify"))
    ok: bool
    entries: int
    first_bad_seq: int | None
    head: str | None = None
    findings: list[AuditFinding] = Field(default_factory=list)
    checkpoints: CheckpointSummary | None = None


class CheckpointNode(BaseModel):
    node_id: str
    status: Literal[
        "signed", "unsupported", "refused", "missing-releases", "invalid", "unreachable"
    ] = Field(
        description="missing-releases: the node refused because the audit log lacks "
        "signatures it released (named in detail; recorded, reported by verify)"
    )
    detail: str | None = None


class CheckpointOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=examples.of("CheckpointOut"))
    seq: int
    head: str
    signatures: dict[str, str] = Field(description="node id -> hex Ed25519 signature")
    nodes: list[CheckpointNode] = Field(default_factory=list)
    created_at: dt.datetime | None = None


class CheckpointList(BaseModel):
    model_config = ConfigDict(json_schema_extra=examples.of("CheckpointList"))
    items: list[CheckpointOut]


class GovernanceSubmit(BaseModel):
    """The next governance version as the officers signed it (canonical CBOR, hex)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("GovernanceSubmit"))
    document: str = Field(min_length=2, max_length=2 * 256 * 1024, pattern=r"^(?:[0-9a-f]{2})+$")


class GovernanceOut(BaseModel):
    """The coordinator's verified governance: version, roster and, for a submission, what
    each node answered."""

    model_config = ConfigDict(json_schema_extra=examples.of("GovernanceOut"))
    installed: bool
    cluster_id: str | None = None
    version: int | None = None
    digest: str | None = None
    roster: list[str] = []
    document: str | None = None
    nodes: dict[str, str] | None = None


# -- policy dry run and shadow mode ---------------------------------------------------------


class PolicyDryRunCreate(BaseModel):
    """A sign request as ``POST /v1/sign-requests`` takes it (``key_id``, ``kind``,
    ``message``, ``payload``), to evaluate without signing, plus what to evaluate it
    against and as whom. Any other member is a 422."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("PolicyDryRunCreate"))
    key_id: Id
    kind: Kind
    message: str | None = Field(
        default=None, max_length=MAX_MESSAGE_HEX, pattern=HEX_PATTERN, description="as for signing"
    )
    payload: dict[str, Any] | None = Field(default=None, description="as for signing")
    network: Network | None = Field(default=None, description="as for signing (btc-psbt)")
    derivation_path: str | None = Field(
        default=None,
        max_length=200,
        pattern=NO_CONTROLS_PATTERN,
        description="as for signing: evaluate under the key's non-hardened BIP-32 child at "
        "this path (the intent then names the path and the child key); a hardened step is a "
        "422 hardened-derivation naming it",
        examples=["m/0/7"],
    )
    governance: str | None = Field(
        default=None,
        min_length=4,
        max_length=4 * (256 * 1024 + 2) // 3 + 4,
        pattern=r"^[A-Za-z0-9+/]+={0,2}$",
        description="base64 of a governance document (canonical CBOR; a draft, unsigned, is "
        "fine) to evaluate instead of the active version",
    )
    at: int | None = Field(
        default=None, ge=0, le=2**62, description="Unix seconds to evaluate at (default now)"
    )
    initiator: Id | None = Field(
        default=None, description="the principal who would create the request (default: you)"
    )


class PolicyMissOut(BaseModel):
    condition: str = Field(description="the rule's field: kinds, max_amount, velocity[0], ...")
    detail: str = Field(description="why the request fails it, in plain words")


class PolicyRuleCheckOut(BaseModel):
    index: int = Field(description="1-based position of the rule in the policy")
    rule: str
    action: Literal["allow", "deny", "approve"]
    matched: bool
    failed: list[PolicyMissOut]


class PolicyTransferOut(BaseModel):
    destination: str
    amount: str = Field(description="base units, decimal digits")


class PolicyFactsOut(BaseModel):
    """What the policy read of the request (``custody.policy.Facts``)."""

    kind: str
    key_id: str
    initiator: str
    operation: str
    asset: str | None
    chain: str | None
    amount: str | None = Field(description="base units, decimal digits")
    amount_text: str | None
    transfers: list[PolicyTransferOut]


class PolicyDryRunOut(BaseModel):
    """A policy decision and why; nothing was created or signed."""

    model_config = ConfigDict(json_schema_extra=examples.of("PolicyDryRunOut"))
    action: Literal["allow", "deny", "approve"]
    rule: str = Field(description="the rule that matched, or default-deny")
    reason: str = Field(description="custody.policy.Reason: policy-allowed, policy-denied, ...")
    detail: str
    policy_version: int
    governance_digest: str = Field(description="hex SHA-256 of the version evaluated")
    requirement: dict[str, Any] | None = Field(
        description='for approve: {"all"|"any": [{"group", "m"} | nested]} (policy file form)'
    )
    requirement_text: str | None
    at: str = Field(description="the instant evaluated at, ISO 8601 UTC")
    facts: PolicyFactsOut | None
    rules: list[PolicyRuleCheckOut] = Field(
        description="the rules tried in order, up to and including the one that matched"
    )
    source: Literal["active", "document"] = Field(
        description="the active version, or the document submitted"
    )
    signed_by: list[str] = Field(description="officers whose signatures the document carries")


class PolicyShadowSubmit(BaseModel):
    """A shadow policy: an *unsigned* draft of the next governance version (base64)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("PolicyShadowSubmit"))
    document: str = Field(
        min_length=4,
        max_length=4 * (256 * 1024 + 2) // 3 + 4,
        pattern=r"^[A-Za-z0-9+/]+={0,2}$",
        description="base64 of the draft (canonical CBOR, no officer signatures), chained to "
        "the active version",
    )


class PolicyShadowOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=examples.of("PolicyShadowOut"))
    installed: bool
    version: int | None = None
    digest: str | None = None
    base_version: int | None = Field(default=None, description="the active version it follows")
    base_digest: str | None = None
    stale: bool = Field(
        default=False, description="the active version moved on since it was installed"
    )
    installed_by: str | None = None
    installed_at: dt.datetime | None = None


class PolicyVerdictOut(BaseModel):
    version: int
    digest: str
    action: Literal["allow", "deny", "approve"]
    rule: str
    reason: str
    requirement: str | None = Field(description="the approvals required, in plain words")


class ShadowDisagreementOut(BaseModel):
    seq: int
    request_id: str
    key_id: str
    kind: str
    at: dt.datetime
    active: PolicyVerdictOut
    shadow: PolicyVerdictOut


class ShadowDisagreementList(Page[ShadowDisagreementOut]):
    model_config = ConfigDict(json_schema_extra=examples.of("ShadowDisagreementList"))


class ReceiptAttestation(BaseModel):
    node_id: str
    release_seq: int = Field(description="the node's release-log entry of this release")
    release_hash: str = Field(description="that entry's hash (hex)")
    signature: str = Field(description="the node's Ed25519 identity signature (hex)")


class ReceiptSignature(BaseModel):
    public_key: str
    signature: str
    recovery_id: int | None = None


class ReceiptAudit(BaseModel):
    seq: int = Field(description="the sign.signed audit entry (the coordinator's claim)")


class ReceiptOut(BaseModel):
    """An authorization receipt (``custody.receipts``): the body every releasing node
    attested and each node's signature over it and its release-log entry. Check it offline
    with ``custody receipt verify FILE --governance GOV``."""

    model_config = ConfigDict(json_schema_extra=examples.of("ReceiptOut"))
    format: int
    body: str = Field(description="canonical CBOR of the receipt body (hex)")
    nodes: list[ReceiptAttestation]
    signature: ReceiptSignature | None = Field(
        default=None, description="the signature made (none for btc-psbt: see signed_tx)"
    )
    audit: ReceiptAudit | None = None


class KeyUpdate(BaseModel):
    """``PATCH /v1/keys/{id}``: the members given replace the key's; ``label: null``
    removes the label, ``metadata`` replaces all tags (``{}`` removes them)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("KeyUpdate"))
    label: KeyLabel | None = None
    metadata: KeyMetadata | None = None


# -- credentials (/v1/credentials, admin) -----------------------------------------------------
class CredentialScope(BaseModel):
    """The keys a credential may sign with: these key ids, and every key of these wallets
    (the active governance policy's named key sets). No scope at all: every key."""

    model_config = ConfigDict(extra="forbid")
    keys: list[Id] = Field(default_factory=list, max_length=256)
    wallets: list[Id] = Field(default_factory=list, max_length=64)


class CredentialCreate(BaseModel):
    """A new credential: its role, the principal it belongs to (default: its own id), a
    label, and optionally a scope."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("CredentialCreate"))
    role: Role
    principal: Id | None = None
    label: str = Field(default="", max_length=100, pattern=NO_CONTROLS_PATTERN)
    scope: CredentialScope | None = None


class CredentialScopeSet(BaseModel):
    """Set a credential's scope; ``null`` lifts it (every key)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("CredentialScopeSet"))
    scope: CredentialScope | None


class CredentialOut(BaseModel):
    """A credential as listed: never its token, nor the token's hash."""

    model_config = ConfigDict(json_schema_extra=examples.of("CredentialOut"))

    id: str
    role: str
    principal: str
    label: str
    scope: CredentialScope | None = None
    revoked: bool
    created_at: dt.datetime
    rotated_at: dt.datetime | None = None


class CredentialIssued(CredentialOut):
    """A created or rotated credential with its bearer token: shown this once only."""

    model_config = ConfigDict(json_schema_extra=examples.of("CredentialIssued"))

    token: str


class CredentialList(Page[CredentialOut]):
    model_config = ConfigDict(json_schema_extra=examples.of("CredentialList"))


# -- webhooks (/v1/webhooks, admin) -----------------------------------------------------------
URL_PATTERN = NO_CONTROLS_PATTERN  # what a URL may be is api.webhooks' check (a named 422)
# Which event types exist is api.webhooks.EVENT_TYPES (a 422 naming the unknown ones).
EventType = Annotated[str, Field(min_length=1, max_length=64, pattern=NO_CONTROLS_PATTERN)]


class WebhookCreate(BaseModel):
    """A subscription: Standard Webhooks POSTs to ``url`` for each event of ``event_types``
    (``["*"]``: all of them)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("WebhookCreate"))
    url: str = Field(min_length=1, max_length=2000, pattern=URL_PATTERN)
    event_types: list[EventType] = Field(min_length=1, max_length=32)
    description: str = Field(default="", max_length=200, pattern=NO_CONTROLS_PATTERN)


class WebhookUpdate(BaseModel):
    """Change a subscription: any member given replaces the stored one."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=examples.of("WebhookUpdate"))
    url: str | None = Field(default=None, min_length=1, max_length=2000, pattern=URL_PATTERN)
    event_types: list[EventType] | None = Field(default=None, min_length=1, max_length=32)
    description: str | None = Field(default=None, max_length=200, pattern=NO_CONTROLS_PATTERN)
    enabled: bool | None = None


class WebhookOut(BaseModel):
    """A subscription, never its secret (shown once, at creation)."""

    model_config = ConfigDict(json_schema_extra=examples.of("WebhookOut"))

    id: str
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class WebhookCreated(WebhookOut):
    """A created subscription with its signing secret (``whsec_...``): shown this once;
    give it to ``standardwebhooks.Webhook(secret).verify``."""

    model_config = ConfigDict(json_schema_extra=examples.of("WebhookCreated"))

    secret: str


class WebhookList(Page[WebhookOut]):
    model_config = ConfigDict(json_schema_extra=examples.of("WebhookList"))


class WebhookAttempt(BaseModel):
    at: dt.datetime
    status_code: int | None = None
    error: str | None = None
    ms: float


class WebhookDeliveryOut(BaseModel):
    """One message to one webhook: ``message_id`` is the ``webhook-id`` header (the same
    on every attempt and redelivery, for de-duplication)."""

    model_config = ConfigDict(json_schema_extra=examples.of("WebhookDeliveryOut"))

    id: int
    message_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: dt.datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    log: list[WebhookAttempt]
    created_at: dt.datetime
    updated_at: dt.datetime


class WebhookDeliveryList(Page[WebhookDeliveryOut]):
    model_config = ConfigDict(json_schema_extra=examples.of("WebhookDeliveryList"))


# -- the problem types' catalogue (GET /problems) --------------------------------------------


class ProblemTypeOut(BaseModel):
    """One problem type: what a problem document's ``type`` means (docs/PROBLEMS.md)."""

    model_config = ConfigDict(json_schema_extra=examples.of("ProblemTypeOut"))
    type: str = Field(description="the problem documents' type: urn:tpwc:problem:<slug>")
    slug: str
    status: int = Field(description="the HTTP status it comes with")
    title: str
    family: str = Field(description="what to do about it; the SDK's exception class follows it")
    meaning: str
    href: str = Field(description="where this entry resolves on the coordinator")


class ProblemTypeList(BaseModel):
    model_config = ConfigDict(json_schema_extra=examples.of("ProblemTypeList"))
    items: list[ProblemTypeOut]
