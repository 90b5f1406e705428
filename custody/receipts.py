"""Authorization receipts (issue 10, item 6): what the releasing nodes say they authorized,
signed by each of them, checked offline against the governance document. Pure: no I/O,
no clock.

A receipt has one **body**, the same for every releasing node (canonical CBOR map)::

    {"format": 1, "cluster_id": str, "request_id": str, "key_id": str, "kind": str,
     "scheme": str, "message": bstr (what was signed), "request_digest": bstr 32
     (custody.auditchain.request_digest: what the audit log's sign entry names),
     "intent_digest": bstr 32 (custody.approvals.intent_digest), "policy_version": uint,
     "governance_digest": bstr 32, "rule": str (the rule that allowed it),
     "approvals": [[approver_id, statement digest], ...] (those that counted, sorted;
     the digest is SHA-256 of the approval's signed statement bytes),
     "signers": [party ids, sorted]}

and one **attestation** per releasing node: its Ed25519 identity signature over::

    RECEIPT_CONTEXT || canonical CBOR {"body": body bytes, "node_id": str,
                                       "release_seq": uint, "release_hash": bstr 32}

with ``RECEIPT_CONTEXT = b"tpwc-receipt-v1\\x00"``: the node names its own release-log entry
(seq and hash) of the release. A node signs only after that entry committed.

The wire form (JSON) is ``{"format": 1, "body": hex, "nodes": [{"node_id", "release_seq",
"release_hash": hex, "signature": hex}], "signature": {"public_key": hex, "signature": hex,
"recovery_id": int|null}|null, "audit": {"seq": uint}?}``; a node's sign answer carries
``{"body", "node"}``: its own attestation, which the coordinator gathers into ``nodes``.
``audit.seq`` is the coordinator's claim of the ``sign.signed`` audit entry that records
the signature: no node signs it (``custody audit verify`` checks the audit log itself).

:func:`verify_receipt` checks the body (strict canonical CBOR, exact fields), that the
governance given is the one the body names (cluster, version and digest), each node's
signature under the ``sign_pk`` its roster pins, that the attesting nodes are distinct
roster nodes of the signer set and at least the threshold of them (default: every party of
the signer set) signed, and, when included, that the signature verifies under the key's
public key (pynacl for Ed25519, libsecp256k1 through coincurve for BIP-340 and ECDSA).
Each refusal is a :class:`ReceiptError` with a stable ``code``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cbor2
import coincurve
import nacl.exceptions
import nacl.signing

from custody.governance import Governance

__all__ = [
    "FORMAT",
    "RECEIPT_CONTEXT",
    "Attestation",
    "Receipt",
    "ReceiptBody",
    "ReceiptError",
    "Verified",
    "node_statement",
    "parse_receipt",
    "statement_digest",
    "verify_receipt",
]

FORMAT: Final = 1
RECEIPT_CONTEXT: Final = b"tpwc-receipt-v1\x00"
MAX_BODY: Final = 64 * 1024
MAX_NODES: Final = 255
_BODY_FIELDS: Final = frozenset(
    {
        "format",
        "cluster_id",
        "request_id",
        "key_id",
        "kind",
        "scheme",
        "message",
        "request_digest",
        "intent_digest",
        "policy_version",
        "governance_digest",
        "rule",
        "approvals",
        "signers",
    }
)


class ReceiptError(ValueError):
    """A receipt refused; ``code`` is stable, the message names the field or node."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def statement_digest(signed_statement: bytes) -> bytes:
    """How a receipt names an approval: SHA-256 of its signed statement bytes."""
    return hashlib.sha256(signed_statement).digest()


@dataclass(frozen=True)
class ReceiptBody:
    cluster_id: str
    request_id: str
    key_id: str
    kind: str
    scheme: str
    message: bytes
    request_digest: bytes
    intent_digest: bytes
    policy_version: int
    governance_digest: bytes
    rule: str
    approvals: tuple[tuple[str, bytes], ...]
    signers: tuple[int, ...]

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "format": FORMAT,
                "cluster_id": self.cluster_id,
                "request_id": self.request_id,
                "key_id": self.key_id,
                "kind": self.kind,
                "scheme": self.scheme,
                "message": self.message,
                "request_digest": self.request_digest,
                "intent_digest": self.intent_digest,
                "policy_version": self.policy_version,
                "governance_digest": self.governance_digest,
                "rule": self.rule,
                "approvals": [[a, d] for a, d in sorted(self.approvals)],
                "signers": sorted(self.signers),
            },
            canonical=True,
        )

    def to_json(self) -> dict[str, Any]:
        """A readable view (bytes as hex) for people and ``--json``."""
        return {
            "cluster_id": self.cluster_id,
            "request_id": self.request_id,
            "key_id": self.key_id,
            "kind": self.kind,
            "scheme": self.scheme,
            "message": self.message.hex(),
            "request_digest": self.request_digest.hex(),
            "intent_digest": self.intent_digest.hex(),
            "policy_version": self.policy_version,
            "governance_digest": self.governance_digest.hex(),
            "rule": self.rule,
            "approvals": [
                {"approver_id": a, "statement_digest": d.hex()} for a, d in self.approvals
            ],
            "signers": list(self.signers),
        }


def node_statement(body: bytes, node_id: str, release_seq: int, release_hash: bytes) -> bytes:
    """What a releasing node signs with its identity key (module docstring)."""
    return RECEIPT_CONTEXT + cbor2.dumps(
        {
            "body": body,
            "node_id": node_id,
            "release_seq": release_seq,
            "release_hash": release_hash,
        },
        canonical=True,
    )


@dataclass(frozen=True)
class Attestation:
    node_id: str
    release_seq: int
    release_hash: bytes
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "release_seq": self.release_seq,
            "release_hash": self.release_hash.hex(),
            "signature": self.signature.hex(),
        }


@dataclass(frozen=True)
class Receipt:
    body: bytes  # canonical CBOR of a ReceiptBody
    nodes: tuple[Attestation, ...]
    public_key: bytes | None = None
    signature: bytes | None = None
    recovery_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        sig = (
            None
            if self.signature is None
            else {
                "public_key": (self.public_key or b"").hex(),
                "signature": self.signature.hex(),
                "recovery_id": self.recovery_id,
            }
        )
        return {
            "format": FORMAT,
            "body": self.body.hex(),
            "nodes": [n.to_json() for n in self.nodes],
            "signature": sig,
        }


@dataclass(frozen=True)
class Verified:
    """What :func:`verify_receipt` established."""

    body: ReceiptBody
    nodes: tuple[str, ...]  # the distinct roster nodes whose attestation verified
    signature_checked: bool


# -- strict decoding ------------------------------------------------------------------------


def _hex(raw: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(raw, str):
        raise ReceiptError("receipt-malformed", f"{what}: hex")
    try:
        out = bytes.fromhex(raw)
    except ValueError:
        raise ReceiptError("receipt-malformed", f"{what}: hex") from None
    if out.hex() != raw or (size is not None and len(out) != size):
        raise ReceiptError(
            "receipt-malformed",
            f"{what}: lower-case hex" + (f" of {size} bytes" if size is not None else ""),
        )
    return out


def _uint(raw: Any, what: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < 2**63:
        raise ReceiptError("receipt-malformed", f"{what}: a non-negative integer")
    return raw


def _text(raw: Any, what: str) -> str:
    if not isinstance(raw, str) or not 1 <= len(raw) <= 128:
        raise ReceiptError("receipt-malformed", f"{what}: a string of 1-128 characters")
    return raw


def _bstr(raw: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(raw, bytes) or (size is not None and len(raw) != size):
        raise ReceiptError("receipt-malformed", f"{what}: {size or 'some'} bytes")
    return raw


def decode_body(data: bytes) -> ReceiptBody:
    """Strictly decode a body (canonical CBOR, exactly its fields)."""
    if not isinstance(data, bytes) or len(data) > MAX_BODY:
        raise ReceiptError("receipt-malformed", f"body: bytes of at most {MAX_BODY}")
    try:
        raw = cbor2.loads(data)
        again = cbor2.dumps(raw, canonical=True)
    except Exception as exc:  # cbor2 raises several types
        raise ReceiptError("receipt-malformed", "body: not CBOR") from exc
    if again != data:
        raise ReceiptError("receipt-malformed", "body: not canonical CBOR")
    if not isinstance(raw, dict) or set(raw) != _BODY_FIELDS:
        raise ReceiptError("receipt-malformed", f"body: expected fields {sorted(_BODY_FIELDS)}")
    if raw["format"] != FORMAT:
        raise ReceiptError("receipt-malformed", f"body.format: not {FORMAT}")
    approvals = raw["approvals"]
    if not isinstance(approvals, list) or any(
        not isinstance(a, list) or len(a) != 2 for a in approvals
    ):
        raise ReceiptError("receipt-malformed", "body.approvals: [[approver_id, digest], ...]")
    signers = raw["signers"]
    if (
        not isinstance(signers, list)
        or not signers
        or any(isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 255 for p in signers)
        or sorted(set(signers)) != signers
    ):
        raise ReceiptError("receipt-malformed", "body.signers: distinct sorted party ids")
    return ReceiptBody(
        cluster_id=_text(raw["cluster_id"], "body.cluster_id"),
        request_id=_text(raw["request_id"], "body.request_id"),
        key_id=_text(raw["key_id"], "body.key_id"),
        kind=_text(raw["kind"], "body.kind"),
        scheme=_text(raw["scheme"], "body.scheme"),
        message=_bstr(raw["message"], "body.message"),
        request_digest=_bstr(raw["request_digest"], "body.request_digest", 32),
        intent_digest=_bstr(raw["intent_digest"], "body.intent_digest", 32),
        policy_version=_uint(raw["policy_version"], "body.policy_version"),
        governance_digest=_bstr(raw["governance_digest"], "body.governance_digest", 32),
        rule=_text(raw["rule"], "body.rule"),
        approvals=tuple(
            (_text(a, "body.approvals[].approver_id"), _bstr(d, "body.approvals[].digest", 32))
            for a, d in approvals
        ),
        signers=tuple(signers),
    )


def parse_attestation(raw: Any) -> Attestation:
    if not isinstance(raw, Mapping) or set(raw) != {
        "node_id",
        "release_seq",
        "release_hash",
        "signature",
    }:
        raise ReceiptError(
            "receipt-malformed", "nodes[]: node_id, release_seq, release_hash, signature"
        )
    return Attestation(
        _text(raw["node_id"], "nodes[].node_id"),
        _uint(raw["release_seq"], "nodes[].release_seq"),
        _hex(raw["release_hash"], "nodes[].release_hash", 32),
        _hex(raw["signature"], "nodes[].signature", 64),
    )


def parse_receipt(raw: Any) -> Receipt:
    """The wire (JSON) form of a receipt (module docstring), strictly."""
    if not isinstance(raw, Mapping) or not {"format", "body", "nodes"} <= set(raw) <= {
        "format",
        "body",
        "nodes",
        "signature",
        "audit",
    }:
        raise ReceiptError(
            "receipt-malformed", "receipt: format, body, nodes[, signature][, audit]"
        )
    audit = raw.get("audit")
    if audit is not None and (
        not isinstance(audit, Mapping)
        or set(audit) != {"seq"}
        or isinstance(audit["seq"], bool)
        or not isinstance(audit["seq"], int)
        or audit["seq"] < 1
    ):
        raise ReceiptError("receipt-malformed", "audit: {seq: a positive integer}")
    if raw["format"] != FORMAT:
        raise ReceiptError("receipt-malformed", f"format: not {FORMAT}")
    nodes = raw["nodes"]
    if not isinstance(nodes, Sequence) or isinstance(nodes, str) or len(nodes) > MAX_NODES:
        raise ReceiptError("receipt-malformed", f"nodes: a list of at most {MAX_NODES}")
    sig = raw.get("signature")
    public_key = signature = recovery_id = None
    if sig is not None:
        if not isinstance(sig, Mapping) or not {"public_key", "signature"} <= set(sig) <= {
            "public_key",
            "signature",
            "recovery_id",
        }:
            raise ReceiptError("receipt-malformed", "signature: public_key, signature")
        public_key = _hex(sig["public_key"], "signature.public_key")
        signature = _hex(sig["signature"], "signature.signature", 64)
        rid = sig.get("recovery_id")
        if rid is not None and (isinstance(rid, bool) or rid not in (0, 1, 2, 3)):
            raise ReceiptError("receipt-malformed", "signature.recovery_id: 0-3 or null")
        recovery_id = rid
    return Receipt(
        _hex(raw["body"], "body"),
        tuple(parse_attestation(n) for n in nodes),
        public_key,
        signature,
        recovery_id,
    )


# -- verification ---------------------------------------------------------------------------


def _signature_ok(
    scheme: str, public_key: bytes, message: bytes, sig: bytes, recovery_id: int | None
) -> bool:
    try:
        if scheme == "ed25519":
            nacl.signing.VerifyKey(public_key).verify(message, sig)
            return True
        if scheme == "bip340":
            return bool(coincurve.PublicKeyXOnly(public_key).verify(sig, message))
        if scheme == "ecdsa-secp256k1":
            if len(message) != 32:
                return False
            ids = (recovery_id,) if recovery_id is not None else (0, 1)
            want = coincurve.PublicKey(public_key).format(compressed=True)
            for rid in ids:
                try:
                    got = coincurve.PublicKey.from_signature_and_message(
                        sig + bytes([rid]), message, hasher=None
                    )
                except Exception:  # noqa: BLE001, S112 - coincurve raises several types
                    continue
                if got.format(compressed=True) == want:
                    return True
            return False
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return False


def verify_receipt(
    receipt: Receipt | Mapping[str, Any],
    governance: Governance,
    *,
    threshold: int | None = None,
    public_key: bytes | None = None,
) -> Verified:
    """Check ``receipt`` against ``governance`` (module docstring); raises
    :class:`ReceiptError` naming what failed, returns what was established.

    ``threshold``: how many distinct releasing nodes must have attested (default: every
    party of the body's signer set). ``public_key``: the key's public key as the verifier
    knows it (e.g. from ``GET /v1/keys/{id}``); a receipt's signature under another key is
    refused.
    """
    r = receipt if isinstance(receipt, Receipt) else parse_receipt(receipt)
    body = decode_body(r.body)
    if body.cluster_id != governance.cluster_id:
        raise ReceiptError(
            "receipt-other-cluster",
            f"receipt is for cluster {body.cluster_id}, governance for {governance.cluster_id}",
        )
    if (body.policy_version, body.governance_digest) != (governance.version, governance.digest):
        raise ReceiptError(
            "receipt-other-governance",
            f"receipt names governance version {body.policy_version} "
            f"({body.governance_digest.hex()[:16]}...), the document given is version "
            f"{governance.version} ({governance.digest.hex()[:16]}...)",
        )
    signers = set(body.signers)
    for party in body.signers:
        if governance.node_by_party(party) is None:
            raise ReceiptError(
                "receipt-signer-not-in-roster",
                f"party {party} of the signer set is in no roster node",
            )
    good: list[str] = []
    for att in r.nodes:
        node = governance.node(att.node_id)
        if node is None:
            raise ReceiptError(
                "receipt-node-not-in-roster",
                f"{att.node_id} is not in governance version {governance.version}'s roster",
            )
        if att.node_id in good:
            raise ReceiptError("receipt-duplicate-node", f"{att.node_id} attests twice")
        if node.party_id not in signers:
            raise ReceiptError(
                "receipt-node-not-a-signer",
                f"{att.node_id} (party {node.party_id}) is not in the signer set {sorted(signers)}",
            )
        statement = node_statement(r.body, att.node_id, att.release_seq, att.release_hash)
        try:
            nacl.signing.VerifyKey(node.sign_pk).verify(statement, att.signature)
        except nacl.exceptions.BadSignatureError:
            raise ReceiptError(
                "receipt-bad-node-signature",
                f"the attestation of {att.node_id} does not verify under its pinned sign_pk",
            ) from None
        good.append(att.node_id)
    need = len(signers) if threshold is None else threshold
    if need < 1:
        raise ReceiptError("receipt-malformed", "threshold: at least 1")
    if len(good) < need:
        raise ReceiptError(
            "receipt-too-few-nodes",
            f"{len(good)} releasing node(s) attested ({', '.join(good) or 'none'}), {need} needed",
        )
    checked = False
    if r.signature is not None:
        pk = r.public_key or b""
        if public_key is not None and pk != public_key:
            raise ReceiptError("receipt-other-key", "signature is under another public key")
        if not _signature_ok(body.scheme, pk, body.message, r.signature, r.recovery_id):
            raise ReceiptError(
                "receipt-bad-signature",
                f"the {body.scheme} signature does not verify under the key's public key",
            )
        checked = True
    return Verified(body, tuple(good), checked)
