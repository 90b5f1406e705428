"""Every RFC 9457 problem type the coordinator emits: its slug, status, family and meaning.

A problem document's ``type`` is ``urn:tpwc:problem:<slug>``: a stable identifier (a URN,
so it never depends on where a coordinator is reachable). It resolves on every coordinator
at ``GET /problems/<slug>`` (also ``GET /problems/urn:tpwc:problem:<slug>``), which answers
this catalogue's entry as JSON or, for a browser, HTML; ``GET /problems`` lists them all.
``docs/PROBLEMS.md`` is generated from this module (:func:`markdown`; a test keeps it in
step). The SDK (:mod:`custody.client`) raises one exception class per :class:`Family`.

A new slug is added here, with its meaning; ``tests/api/test_openapi_product.py`` fails for
a slug the coordinator can emit that is missing.

May import: nothing of ours.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "TYPE_PREFIX",
    "NODE_TYPE_PREFIX",
    "CLIENT_TYPE_PREFIX",
    "Family",
    "ProblemType",
    "CATALOGUE",
    "slug_of",
    "lookup",
    "markdown",
]

TYPE_PREFIX = "urn:tpwc:problem:"
NODE_TYPE_PREFIX = "urn:tpwc:node:"
CLIENT_TYPE_PREFIX = "urn:tpwc:client:"


class Family(enum.StrEnum):
    """What an integrator does about a problem; the SDK's exception classes follow it."""

    UNAUTHORIZED = "unauthorized"  # send a valid token
    FORBIDDEN = "forbidden"  # this credential may not do this
    POLICY_DENIED = "policy-denied"  # the governance policy (or an approver) said no
    NOT_FOUND = "not-found"  # no such resource
    CONFLICT = "conflict"  # the resource's state forbids it now
    VALIDATION = "validation"  # fix the request
    RATE_LIMITED = "rate-limited"  # slow down; retry after Retry-After
    UNAVAILABLE = "unavailable"  # transient: retry later, with the same Idempotency-Key
    FAILED = "failed"  # the work ran and failed (stored on the resource)
    INTERNAL = "internal"  # a coordinator fault: report it


FAMILY_TEXT = {
    Family.UNAUTHORIZED: "No credential, or one the coordinator does not know (revoked, "
    "mistyped). Send `Authorization: Bearer <token>`. SDK: `Unauthorized`.",
    Family.FORBIDDEN: "The credential is valid but its role may not do this. SDK: `Forbidden`.",
    Family.POLICY_DENIED: "The active governance policy, or an approver, refused the request. "
    "Retrying the same request gets the same answer. SDK: `PolicyDenied` (a `Forbidden`).",
    Family.NOT_FOUND: "No such resource (or none this credential may see). SDK: `NotFound`.",
    Family.CONFLICT: "The request is well formed but the resource's state forbids it now. "
    "SDK: `Conflict`.",
    Family.VALIDATION: "The request does not match the schema or a rule; `errors` (for "
    "`validation`) or `detail` names the field. Fix the request. SDK: `ValidationFailed`.",
    Family.RATE_LIMITED: "Too many requests; wait `Retry-After` seconds. The SDK retries these "
    "with the same Idempotency-Key, then raises `RateLimited`.",
    Family.UNAVAILABLE: "Transient: a node, the database or the coordinator is not ready. Retry "
    "later with the same Idempotency-Key (the SDK does, then raises `Unavailable`).",
    Family.FAILED: "The work ran and failed; the problem is stored on the key or sign request "
    "(its `error` member) and a retry with a new Idempotency-Key may succeed. SDK: "
    "`SignFailed` when raised.",
    Family.INTERNAL: "A fault of the coordinator itself; nothing was released. Report it with "
    "the response's `X-Request-Id`. SDK: `ServerError`.",
}


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str
    family: Family
    meaning: str

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.slug

    def as_dict(self) -> dict[str, object]:
        return {
            "type": self.type,
            "slug": self.slug,
            "status": self.status,
            "title": self.title,
            "family": self.family.value,
            "meaning": self.meaning,
            "href": f"/problems/{self.slug}",
        }


F = Family
_ENTRIES = [
    # -- credentials and roles
    ProblemType(
        "unauthorized",
        401,
        "Missing or invalid credentials",
        F.UNAUTHORIZED,
        "No `Authorization: Bearer` header, or a token the coordinator does not know or has "
        "revoked.",
    ),
    ProblemType(
        "forbidden",
        403,
        "Forbidden",
        F.FORBIDDEN,
        "The credential's role may not call this operation (detail names the roles that may).",
    ),
    ProblemType(
        "credential-out-of-scope",
        403,
        "Key outside the credential's scope",
        F.FORBIDDEN,
        "The credential is scoped to some keys and wallets (`PUT /v1/credentials/{id}/scope`) "
        "and the key named (`key_id` member) is neither one of its keys nor in one of its "
        "wallets of the active policy. Use another credential or widen its scope.",
    ),
    ProblemType(
        "credential-revoked",
        409,
        "Credential revoked",
        F.CONFLICT,
        "The credential was revoked: its scope cannot be set nor its token rotated. Create a "
        "new credential instead.",
    ),
    ProblemType(
        "last-admin",
        409,
        "Last admin credential",
        F.CONFLICT,
        "Revoking this credential would leave no active admin credential: create another "
        "admin credential first.",
    ),
    # -- policy and approvals
    ProblemType(
        "policy-denied",
        403,
        "Denied by policy",
        F.POLICY_DENIED,
        "The active governance policy denied the sign request (detail names the rule and the "
        "reason). Nothing was stored but the audit entry; no node was called. Use "
        "`POST /v1/policy/dry-run` to see why.",
    ),
    ProblemType(
        "approvals-rejected",
        403,
        "Rejected",
        F.POLICY_DENIED,
        "An approver of a required group rejected the sign request: it will not be signed. "
        "Stored as the request's `error`.",
    ),
    ProblemType(
        "refused-by-node",
        403,
        "Refused by a signer node",
        F.POLICY_DENIED,
        "A signer node's own policy check refused to release its share (each node decides for "
        "itself). Stored as the request's `error`; no other signer set is tried.",
    ),
    ProblemType(
        "request-not-pending",
        409,
        "Request not pending approval",
        F.CONFLICT,
        "An approval or rejection was posted to a sign request that no longer waits for "
        "approvals (signed, failed, rejected or expired).",
    ),
    ProblemType(
        "approval-wrong-decision",
        422,
        "Approval refused",
        F.VALIDATION,
        "A `reject` statement was posted to `/approvals` or an `approve` statement to "
        "`/rejections`.",
    ),
    ProblemType(
        "approval-malformed",
        422,
        "Approval refused",
        F.VALIDATION,
        "The approval is not standard padded base64 of a canonical CBOR approval statement.",
    ),
    ProblemType(
        "approval-unknown-approver",
        422,
        "Approval refused",
        F.VALIDATION,
        "The approver is not in any approver group of the policy version named.",
    ),
    ProblemType(
        "approval-bad-signature",
        422,
        "Approval refused",
        F.VALIDATION,
        "The approver's Ed25519 signature over the statement does not verify.",
    ),
    ProblemType(
        "approval-other-request",
        422,
        "Approval refused",
        F.VALIDATION,
        "The statement names another sign request id.",
    ),
    ProblemType(
        "approval-other-intent",
        422,
        "Approval refused",
        F.VALIDATION,
        "The statement's intent digest is not this request's: the approver saw something else.",
    ),
    ProblemType(
        "approval-other-initiator",
        422,
        "Approval refused",
        F.VALIDATION,
        "The statement names another initiator than the request's.",
    ),
    ProblemType(
        "approval-stale-policy-version",
        422,
        "Approval refused",
        F.VALIDATION,
        "The statement names an older (or other) governance version than the active one.",
    ),
    ProblemType(
        "approval-other-governance",
        422,
        "Approval refused",
        F.VALIDATION,
        "The statement names the active version number but another governance digest.",
    ),
    ProblemType(
        "approval-expired", 422, "Approval refused", F.VALIDATION, "The statement has expired."
    ),
    ProblemType(
        "approval-by-initiator",
        422,
        "Approval refused",
        F.VALIDATION,
        "The initiator of a request cannot approve it.",
    ),
    ProblemType(
        "approval-not-in-a-required-group",
        422,
        "Approval refused",
        F.VALIDATION,
        "The approver belongs to no group the rule's requirement counts.",
    ),
    ProblemType(
        "approval-duplicate",
        422,
        "Approval refused",
        F.VALIDATION,
        "This approver's statement for this request is already counted.",
    ),
    ProblemType(
        "passkey-malformed",
        422,
        "Approval refused",
        F.VALIDATION,
        "The passkey approval's clientDataJSON or authenticatorData cannot be read (WebAuthn "
        "L3 sections 5.8.1, 6.1).",
    ),
    ProblemType(
        "passkey-unknown-credential",
        422,
        "Approval refused",
        F.VALIDATION,
        "The assertion names another credential than the approver's registered passkey.",
    ),
    ProblemType(
        "passkey-wrong-type",
        422,
        "Approval refused",
        F.VALIDATION,
        "The assertion's clientDataJSON `type` is not `webauthn.get`.",
    ),
    ProblemType(
        "passkey-challenge-mismatch",
        422,
        "Approval refused",
        F.VALIDATION,
        "The assertion signed another challenge than SHA-256 of this approval statement (the "
        "statement was swapped).",
    ),
    ProblemType(
        "passkey-wrong-origin",
        422,
        "Approval refused",
        F.VALIDATION,
        "The assertion was made on an origin the approver's governance entry does not allow "
        "(a phishing site).",
    ),
    ProblemType(
        "passkey-cross-origin",
        422,
        "Approval refused",
        F.VALIDATION,
        "The assertion was made inside another site's frame (`crossOrigin: true`).",
    ),
    ProblemType(
        "passkey-wrong-rp-id",
        422,
        "Approval refused",
        F.VALIDATION,
        "The authenticatorData's RP id hash is not SHA-256 of the credential's RP id.",
    ),
    ProblemType(
        "passkey-user-not-present",
        422,
        "Approval refused",
        F.VALIDATION,
        "The authenticatorData's user-presence (UP) flag is clear.",
    ),
    ProblemType(
        "passkey-user-not-verified",
        422,
        "Approval refused",
        F.VALIDATION,
        "The authenticatorData's user-verification (UV) flag is clear: an approval needs a "
        "PIN or biometric.",
    ),
    ProblemType(
        "passkey-stale-counter",
        422,
        "Approval refused",
        F.VALIDATION,
        "The assertion's signature counter does not exceed the last one accepted for the "
        "credential (a cloned authenticator).",
    ),
    ProblemType(
        "passkey-bad-signature",
        422,
        "Approval refused",
        F.VALIDATION,
        "The passkey's signature over authenticatorData and the clientDataJSON hash does not "
        "verify under the registered key.",
    ),
    ProblemType(
        "approval-wrong-kind",
        422,
        "Approval refused",
        F.VALIDATION,
        "A key-file signature for an approver whose governance entry is a passkey, or the reverse.",
    ),
    # -- the treasury console (/console, docs/CONSOLE.md): its JSON calls and its pages
    ProblemType(
        "console-csrf",
        403,
        "Missing or wrong CSRF token",
        F.FORBIDDEN,
        "A console POST without its session's CSRF token in `X-CSRF-Token` (or with another "
        "session's). Reload the page: it carries the token.",
    ),
    ProblemType(
        "console-bad-json",
        400,
        "Body not a JSON object",
        F.VALIDATION,
        "A console call's body is not JSON, or not an object.",
    ),
    ProblemType(
        "console-token-missing",
        400,
        "Approver token missing",
        F.VALIDATION,
        "Registering a passkey needs the approver's API token (`token` member).",
    ),
    ProblemType(
        "console-token-refused",
        401,
        "Approver token refused",
        F.UNAUTHORIZED,
        "The API token given to register a passkey is unknown or revoked.",
    ),
    ProblemType(
        "console-not-approver",
        403,
        "Not an approver token",
        F.FORBIDDEN,
        "Only a credential of role `approver` can register a passkey (detail names the role).",
    ),
    ProblemType(
        "console-registration-refused",
        400,
        "Passkey registration refused",
        F.VALIDATION,
        "The WebAuthn registration response did not verify (challenge, origin, RP id, user "
        "verification, or an unsupported key); detail says which.",
    ),
    ProblemType(
        "console-no-ceremony",
        400,
        "No WebAuthn ceremony in progress",
        F.VALIDATION,
        "A verify call without its options call first, after the challenge expired (5 "
        "minutes), or a second time (a challenge is used once). Start again.",
    ),
    ProblemType(
        "console-unknown-passkey",
        403,
        "Passkey not registered",
        F.FORBIDDEN,
        "Sign-in with a passkey that is neither in the active governance nor registered in "
        "the console.",
    ),
    ProblemType(
        "console-bad-credential",
        400,
        "Not a WebAuthn assertion",
        F.VALIDATION,
        "The `credential` member is not a `PublicKeyCredential.toJSON()` of an assertion.",
    ),
    ProblemType(
        "console-sign-in-refused",
        403,
        "Sign-in refused",
        F.FORBIDDEN,
        "The sign-in assertion did not verify (challenge, origin, RP id, user verification, "
        "signature); detail says which.",
    ),
    ProblemType(
        "console-signed-out",
        401,
        "Signed out",
        F.UNAUTHORIZED,
        "The console session is not signed in (never, or it expired: 10 minutes idle, 1 hour "
        "after sign-in). Sign in with a passkey.",
    ),
    ProblemType(
        "console-bad-decision",
        400,
        "Decision missing",
        F.VALIDATION,
        "`decision` must be `approve` or `reject`.",
    ),
    ProblemType(
        "console-not-in-group",
        403,
        "Not an approver of this request",
        F.FORBIDDEN,
        "The signed-in approver is in no approver group that the matched rule names.",
    ),
    ProblemType(
        "console-no-approval-needed",
        409,
        "No approval needed",
        F.CONFLICT,
        "The request's policy decision is not `approve`: there is nothing to decide.",
    ),
    ProblemType(
        "console-assertion-missing",
        400,
        "Passkey assertion missing",
        F.VALIDATION,
        "A decision posted without a fresh passkey assertion: a session alone approves nothing.",
    ),
    ProblemType(
        "console-other-decision",
        400,
        "Assertion asked for another decision",
        F.VALIDATION,
        "The decision posted is not the one the challenge was made for (approve vs reject).",
    ),
    ProblemType(
        "console-other-passkey",
        403,
        "Another passkey",
        F.FORBIDDEN,
        "The assertion is from another passkey than the one the session signed in with.",
    ),
    ProblemType(
        "console-cannot-decode",
        422,
        "Request does not decode",
        F.VALIDATION,
        "The console cannot decode the sign request's payload (or its key or policy is "
        "gone), so it shows nothing to approve.",
    ),
    # -- resources
    ProblemType(
        "not-found",
        404,
        "Not found",
        F.NOT_FOUND,
        "No resource at this URL: an unknown key, sign request or route, or no shadow policy.",
    ),
    ProblemType(
        "key-not-found",
        404,
        "Key not found",
        F.NOT_FOUND,
        "The sign request names a `key_id` no key has (the key's own URL answers `not-found`).",
    ),
    ProblemType(
        "no-receipt",
        404,
        "No receipt",
        F.NOT_FOUND,
        "The sign request exists but has no authorization receipt (not signed, or signed "
        "before receipts existed).",
    ),
    ProblemType(
        "key-not-active",
        409,
        "Key not active",
        F.CONFLICT,
        "The key is still being generated, or its DKG failed: it cannot sign.",
    ),
    ProblemType(
        "method-not-allowed",
        405,
        "Method not allowed",
        F.VALIDATION,
        "The URL exists but not with this HTTP method.",
    ),
    ProblemType(
        "not-acceptable",
        406,
        "Not acceptable",
        F.VALIDATION,
        "The `Accept` header asks for a media type this operation cannot answer.",
    ),
    ProblemType(
        "unsupported-media-type",
        415,
        "Unsupported media type",
        F.VALIDATION,
        "The body is not `application/json`.",
    ),
    ProblemType(
        "too-large",
        413,
        "Request body too large",
        F.VALIDATION,
        "The body is larger than this route accepts.",
    ),
    ProblemType(
        "bad-request", 400, "Bad request", F.VALIDATION, "The HTTP request itself is malformed."
    ),
    ProblemType(
        "conflict", 409, "Conflict", F.CONFLICT, "The resource's state forbids the change."
    ),
    ProblemType(
        "http-error",
        400,
        "HTTP error",
        F.VALIDATION,
        "Any other HTTP-level refusal (the status says which).",
    ),
    # -- request validation
    ProblemType(
        "validation",
        422,
        "Request validation failed",
        F.VALIDATION,
        "The body, a query or a path parameter does not match the schema; `errors` lists "
        "each field (`loc`, `msg`, `type`).",
    ),
    ProblemType(
        "invalid-sign-request",
        422,
        "Invalid sign request",
        F.VALIDATION,
        "The payload does not decode for its kind, the message does not match the payload, "
        "or a member only the coordinator sets (`initiator`, `approvals`) was sent.",
    ),
    ProblemType(
        "invalid-text",
        422,
        "Invalid text",
        F.VALIDATION,
        "Text that is not valid Unicode (e.g. a lone UTF-16 surrogate escape).",
    ),
    ProblemType(
        "too-deep",
        422,
        "Body nested too deeply",
        F.VALIDATION,
        "JSON nested deeper than 32 levels is refused before parsing.",
    ),
    ProblemType(
        "invalid-cursor",
        422,
        "Invalid cursor",
        F.VALIDATION,
        "A list's `cursor` is not a `next_cursor` this coordinator gave: pass it back unchanged.",
    ),
    ProblemType(
        "invalid-threshold",
        422,
        "Invalid threshold",
        F.VALIDATION,
        "A key needs 2 <= threshold <= the number of share holders.",
    ),
    ProblemType(
        "invalid-network",
        422,
        "Invalid network",
        F.VALIDATION,
        "`network` applies to bip340 keys only.",
    ),
    ProblemType(
        "unknown-node",
        422,
        "Unknown node",
        F.VALIDATION,
        "A key's `nodes` names a node that is not enrolled.",
    ),
    ProblemType(
        "invalid-governance",
        422,
        "Invalid governance document",
        F.VALIDATION,
        "The governance document is not base64 or not a well-formed governance version.",
    ),
    ProblemType(
        "shadow-signed",
        422,
        "A shadow is an unsigned draft",
        F.VALIDATION,
        "A shadow policy must be an unsigned draft; a signed version is installed with "
        "`PUT /v1/governance`.",
    ),
    ProblemType(
        "webhook-url-refused",
        422,
        "Webhook URL refused",
        F.VALIDATION,
        "A webhook `url` must be an `http://` or `https://` URL with a host, no credentials in "
        "it, whose host resolves, and only to unicast addresses that are not link-local or "
        "cloud metadata (nor loopback, unless the coordinator allows it); detail says why.",
    ),
    ProblemType(
        "unknown-event-type",
        422,
        "Unknown event type",
        F.VALIDATION,
        "A webhook's `event_types` names an event type the coordinator does not emit; detail "
        "lists the known ones (`*`: all of them).",
    ),
    ProblemType(
        "invalid-path",
        422,
        "Invalid derivation path",
        F.VALIDATION,
        "The `path` of `GET /v1/keys/{id}/derive` is not a BIP-32 style path such as `m/0/1` "
        "(32-bit indices, at most 255 steps).",
    ),
    ProblemType(
        "hardened-derivation",
        422,
        "Hardened derivation refused",
        F.VALIDATION,
        "The derivation `path` has a hardened step (marked `'`, `h` or `H`, or an index of "
        "2^31 or more): that needs the whole parent "
        "private key, which never exists in threshold custody. Use non-hardened steps only.",
    ),
    ProblemType(
        "no-xpub",
        422,
        "No extended public key",
        F.VALIDATION,
        "BIP-32 `xpub` serialization exists for secp256k1 keys (ecdsa-secp256k1, bip340) only; "
        "an ed25519 key derives children by `GET /v1/keys/{id}/derive` but has no xpub.",
    ),
    # -- idempotency
    ProblemType(
        "idempotency-mismatch",
        422,
        "Idempotency-Key reused",
        F.VALIDATION,
        "This Idempotency-Key was used with a different request body: use a new key for a new "
        "request.",
    ),
    ProblemType(
        "idempotency-in-flight",
        409,
        "Request in flight",
        F.CONFLICT,
        "A request with this Idempotency-Key is still being processed: retry it later with "
        "the same key to get its answer.",
    ),
    # -- governance and nodes
    ProblemType(
        "governance-missing",
        409,
        "No governance installed",
        F.CONFLICT,
        "No officer-signed governance genesis is installed (`python -m api trust`).",
    ),
    ProblemType(
        "governance-malformed",
        422,
        "Governance version refused",
        F.VALIDATION,
        "The governance document does not decode or breaks a rule of its format.",
    ),
    ProblemType(
        "governance-under-signed",
        403,
        "Governance version refused",
        F.FORBIDDEN,
        "The new version lacks a quorum of the old or of the new officers' signatures.",
    ),
    ProblemType(
        "governance-unchained",
        409,
        "Governance version refused",
        F.CONFLICT,
        "The new version does not name the installed version's digest as its previous.",
    ),
    ProblemType(
        "governance-rollback",
        409,
        "Governance version refused",
        F.CONFLICT,
        "The version number does not move forward.",
    ),
    ProblemType(
        "governance-wrong-cluster",
        409,
        "Governance version refused",
        F.CONFLICT,
        "The version is for another cluster id.",
    ),
    ProblemType(
        "governance-refused-by-nodes",
        409,
        "Nodes refused the governance version",
        F.CONFLICT,
        "At least one node refused the version (detail names each); it was not kept.",
    ),
    ProblemType(
        "shadow-unchained",
        409,
        "Shadow does not follow the active version",
        F.CONFLICT,
        "A shadow draft must be the next version of the active one, for the same cluster.",
    ),
    ProblemType(
        "not-in-roster",
        403,
        "Node not in the roster",
        F.FORBIDDEN,
        "Only nodes of the governance roster can be enrolled.",
    ),
    ProblemType(
        "node-id-mismatch",
        409,
        "Node id mismatch",
        F.CONFLICT,
        "The node at this URL reports another node id.",
    ),
    ProblemType(
        "identity-mismatch",
        409,
        "Node identity differs from its pin",
        F.CONFLICT,
        "The node's identity keys are not the ones the governance roster pins.",
    ),
    ProblemType(
        "party-id-taken",
        409,
        "Party id taken",
        F.CONFLICT,
        "Another enrolled node already has this party id.",
    ),
    ProblemType(
        "node-unreachable",
        502,
        "Node unreachable",
        F.UNAVAILABLE,
        "The node to enrol did not answer its `GET /health`.",
    ),
    ProblemType(
        "node-garbage",
        502,
        "Node answered garbage",
        F.UNAVAILABLE,
        "The node's `GET /health` lacks its party id or identity keys.",
    ),
    ProblemType(
        "no-nodes",
        409,
        "No nodes",
        F.CONFLICT,
        "No node is enrolled to co-sign an audit checkpoint.",
    ),
    ProblemType(
        "nothing-to-checkpoint",
        409,
        "Nothing to checkpoint",
        F.CONFLICT,
        "No audit entry since the last checkpoint.",
    ),
    ProblemType(
        "checkpoint-unsigned",
        502,
        "No node signed the checkpoint",
        F.UNAVAILABLE,
        "No node co-signed the audit head; the checkpoint was not stored.",
    ),
    ProblemType(
        "webhook-disabled",
        409,
        "Webhook disabled",
        F.CONFLICT,
        "A test event cannot be sent to a disabled webhook: enable it first "
        "(`PATCH /v1/webhooks/{id}` with `enabled: true`).",
    ),
    # -- key ceremonies (proactive refresh)
    ProblemType(
        "ceremony-running",
        409,
        "Ceremony running",
        F.CONFLICT,
        "A refresh of this key is already running on this coordinator: wait for it "
        "(`GET /v1/ceremonies/{id}`) instead of starting another.",
    ),
    ProblemType(
        "ceremony-unfinished",
        409,
        "Ceremony unfinished",
        F.CONFLICT,
        "An earlier refresh of this key is still `committing` (some node has not switched to "
        "the new shares): `POST /v1/ceremonies/{id}/resume` it (`ceremony_id` member) first.",
    ),
    ProblemType(
        "ceremony-not-committing",
        409,
        "Nothing to resume",
        F.CONFLICT,
        "Only a `committing` ceremony can be resumed; this one is `done`, `failed` or still "
        "`running`.",
    ),
    # -- ceremony authorizations (custody.governance.CeremonyAuthErrorKind; every node
    # refuses with the same code, urn:tpwc:node:<slug>)
    ProblemType(
        "ceremony-unauthorized",
        403,
        "Ceremony not authorized",
        F.FORBIDDEN,
        "A key ceremony (refresh, reshare) needs an `authorization` signed by the officer "
        "quorum (`custody keys refresh|reshare` signs one with the officers' key files).",
    ),
    ProblemType(
        "ceremony-authorization-malformed",
        403,
        "Ceremony not authorized",
        F.FORBIDDEN,
        "The authorization is not a well-formed signed statement (the detail names the "
        "field): canonical CBOR of exactly its fields, a lifetime of at most a day.",
    ),
    ProblemType(
        "ceremony-authorization-under-signed",
        403,
        "Ceremony not authorized",
        F.FORBIDDEN,
        "Fewer valid signatures than the governance quorum of officers (forged, by "
        "non-officers, or the statement was edited after signing).",
    ),
    ProblemType(
        "ceremony-authorization-expired",
        403,
        "Ceremony not authorized",
        F.FORBIDDEN,
        "The authorization expired (or is issued in the future): the officers sign a new one.",
    ),
    ProblemType(
        "ceremony-authorization-replayed",
        403,
        "Ceremony not authorized",
        F.FORBIDDEN,
        "Nodes accept each authorization (its `ceremony_id`) once: the officers sign a new "
        "one for each ceremony, including a retry.",
    ),
    ProblemType(
        "ceremony-authorization-mismatch",
        403,
        "Ceremony not authorized",
        F.FORBIDDEN,
        "The request is not the ceremony the officers authorized (another kind, key, public "
        "key, share version, committee or threshold, or another cluster); the detail names "
        "the field.",
    ),
    ProblemType(
        "ceremony-threshold-drop",
        403,
        "Ceremony not authorized",
        F.FORBIDDEN,
        "A resharing to a lower threshold must say so explicitly (`lower_threshold` in the "
        "signed authorization); it never drops silently.",
    ),
    # -- availability
    ProblemType(
        "nodes-unavailable",
        503,
        "Nodes unavailable",
        F.UNAVAILABLE,
        "A DKG needs every share holder healthy (or signing needs `t` of them): retry when "
        "they are back (`GET /v1/nodes`).",
    ),
    ProblemType(
        "database-busy",
        503,
        "Database busy",
        F.UNAVAILABLE,
        "The coordinator database did not answer in time; retry after `Retry-After`.",
    ),
    ProblemType(
        "not-ready",
        503,
        "Not ready",
        F.UNAVAILABLE,
        "Readiness failed: the database does not answer.",
    ),
    ProblemType(
        "unavailable", 503, "Service unavailable", F.UNAVAILABLE, "The service is unavailable."
    ),
    ProblemType(
        "rate-limited",
        429,
        "Too many requests",
        F.RATE_LIMITED,
        "Too many requests from this credential or address; retry after `Retry-After`.",
    ),
    # -- outcomes stored on keys and sign requests
    ProblemType(
        "dkg-failed",
        502,
        "DKG failed",
        F.FAILED,
        "Key generation failed among the nodes (`blamed`/detail names the culprit). Stored "
        "as the key's `error`; create the key again.",
    ),
    ProblemType(
        "signing-failed",
        502,
        "Signing failed",
        F.FAILED,
        "The signing round failed (too few healthy nodes, or a culprit named in `blamed`). "
        "Stored as the sign request's `error`.",
    ),
    ProblemType(
        "ceremony-failed",
        409,
        "Ceremony failed",
        F.FAILED,
        "The refresh did not complete before any node switched shares (a party failed, "
        "disagreed on the outcome or did not sign it; `culprits`/`blamed` name it, or the "
        "coordinator restarted mid-way): the key keeps its active shares and still signs. "
        "Stored as the ceremony's `error`; start a new refresh once the culprit is fixed.",
    ),
    ProblemType(
        "audit-failed",
        500,
        "Audit write failed",
        F.INTERNAL,
        "The audit entry of a signature could not be written, so the signature was withheld "
        "(fail closed).",
    ),
    ProblemType(
        "stored-signature-invalid",
        500,
        "Stored signature invalid",
        F.INTERNAL,
        "A stored signature no longer verifies under its key: the database was tampered with. "
        "Nothing is returned; run `GET /v1/audit/verify`.",
    ),
    ProblemType(
        "internal",
        500,
        "Internal error",
        F.INTERNAL,
        "The coordinator hit an unexpected error (no internals are shown; see its log by "
        "`X-Request-Id`).",
    ),
]

CATALOGUE: dict[str, ProblemType] = {p.slug: p for p in _ENTRIES}


def slug_of(type_uri: str) -> str:
    """``policy-denied`` from ``urn:tpwc:problem:policy-denied`` (or from the slug itself)."""
    return type_uri.removeprefix(TYPE_PREFIX)


def lookup(ref: str) -> ProblemType | None:
    """The catalogue entry of a slug or a full type URI, or ``None``."""
    return CATALOGUE.get(slug_of(ref))


def markdown() -> str:
    """``docs/PROBLEMS.md``: every problem type, grouped by family, with its meaning."""
    out = [
        "# Problem types",
        "",
        "<!-- generated from custody/problem_types.py: python -m custody.problem_types "
        "> docs/PROBLEMS.md -->",
        "",
        "Every error the coordinator answers is an RFC 9457 problem document "
        "(`application/problem+json`): `type`, `title`, `status`, `detail`, `instance`, and "
        "extension members where they apply (`errors` on a validation failure, `approver_id` "
        "on a refused approval). Branch on `type` (or the SDK's exception class), never on "
        "`title` or `detail`.",
        "",
        "A `type` is `urn:tpwc:problem:<slug>`, a stable name independent of where the "
        "coordinator runs. It resolves on the coordinator itself, offline: "
        "`GET /problems/<slug>` (or `GET /problems/urn:tpwc:problem:<slug>`) answers the "
        "entry below as JSON, or as HTML to a browser; `GET /problems` lists them all. A "
        "signer node's own problems (`urn:tpwc:node:<code>`) can appear inside a stored "
        "`error` or `blamed` reason: see `docs/NODE_API.md`. The SDK's own "
        "`urn:tpwc:client:unreachable` means no answer came at all.",
        "",
        "Transient families (`rate-limited`, `unavailable`) are worth retrying with the "
        "**same** `Idempotency-Key`; the SDK does so with backoff, honouring `Retry-After`.",
        "",
    ]
    for fam in Family:
        entries = [p for p in _ENTRIES if p.family is fam]
        if not entries:
            continue
        out += [f"## {fam.value}", "", FAMILY_TEXT[fam], ""]
        out += ["| slug | status | title | meaning |", "| --- | --- | --- | --- |"]
        for p in entries:
            out.append(
                f'| <a id="{p.slug}"></a>`{p.slug}` | {p.status} | {p.title} | {p.meaning} |'
            )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
