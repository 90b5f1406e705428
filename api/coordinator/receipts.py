"""An authorization receipt from the releasing nodes' parts (``custody.receipts``).

Each node that released a share for a signed request answered, beside its share, the
receipt body (the same for every node: what was authorized, by which policy version and
rule, with which approvals) and its own attestation of its release-log entry, signed with
its identity key. The coordinator only gathers them, adds the aggregated signature and the
sequence number of the ``sign.signed`` audit entry (its own claim, checked by
``custody audit verify``, not signed by the nodes), and stores the result with the outcome;
``GET /v1/sign-requests/{id}/receipt`` serves it and ``custody receipt verify`` checks it
offline against the governance document. A receipt the parts cannot make (a node that sent
none, bodies that differ) is not stored, and the signature is kept: the receipt is
evidence, the nodes' release logs stay the record.
"""

from __future__ import annotations

import logging
from typing import Any

from api.coordinator.types import KeyInfo, SignResult
from custody import receipts

log = logging.getLogger("api.coordinator")


def assemble(key: KeyInfo, body: dict[str, Any], result: SignResult) -> dict[str, Any] | None:
    """The receipt (wire form, without ``audit``) of ``result``, or None when the nodes'
    parts do not make one."""
    parts = [result.receipts.get(p) for p in sorted(result.signers)]
    if not parts or any(not isinstance(p, dict) for p in parts):
        log.warning("no receipt: a releasing node sent none", extra={"request_id": body["id"]})
        return None
    bodies = {p.get("body") for p in parts if isinstance(p, dict)}
    if len(bodies) != 1:
        log.warning("no receipt: the nodes' bodies differ", extra={"request_id": body["id"]})
        return None
    signature = None
    if body.get("kind") != "btc-psbt":  # a PSBT's signatures are in its signed transaction
        signature = {
            "public_key": key.public_key,
            "signature": result.signature.hex(),
            "recovery_id": result.recovery_id,
        }
    doc = {
        "format": receipts.FORMAT,
        "body": bodies.pop(),
        "nodes": [p["node"] for p in parts if isinstance(p, dict)],
        "signature": signature,
    }
    try:
        receipts.parse_receipt(doc)
    except receipts.ReceiptError as e:
        log.warning("no receipt: malformed parts", extra={"request_id": body["id"], "code": e.code})
        return None
    return doc
