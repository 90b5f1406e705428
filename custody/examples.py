"""Example bodies for the OpenAPI document: one per request and response model.

:mod:`custody.models` attaches them (``json_schema_extra``), the coordinator's OpenAPI
document shows them on every operation, and ``tests/api/test_openapi_product.py`` checks
each one validates against its model. Values are illustrative (no real key or signature).

May import: nothing of ours.
"""

from __future__ import annotations

from typing import Any

KEY = "key_3f9a1c0e5b7d4a2e8c6f1b0d9e7a5c3b"
SR = "sr_8d2e4f6a1b3c5d7e9f0a2b4c6d8e0f1a"
PK = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
SIG = (
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
T = "2026-12-01T12:00:00Z"
T2 = "2026-12-01T12:00:01Z"
NODE = {
    "id": "node-1",
    "party_id": 1,
    "url": "http://127.0.0.1:7101",
    "status": "healthy",
    "last_seen": T,
    "last_error": None,
    "sign_pk": "5e" * 32,
    "box_pk": "3a" * 32,
}
KEYOUT = {
    "id": KEY,
    "scheme": "ed25519",
    "threshold": 2,
    "nodes": ["node-1", "node-2", "node-3"],
    "status": "active",
    "public_key": PK,
    "verifying_shares": {"1": "a1" * 32, "2": "b2" * 32, "3": "c3" * 32},
    "network": None,
    "addresses": {},
    "error": None,
    "created_at": T,
}
SROUT = {
    "id": SR,
    "key_id": KEY,
    "kind": "message",
    "message": "68656c6c6f",
    "status": "signed",
    "signature": SIG,
    "recovery_id": None,
    "signers": [1, 2],
    "result": None,
    "blamed": [],
    "error": None,
    "created_at": T,
    "updated_at": T2,
    "expires_at": "2026-12-01T13:00:00Z",
    "payload": {"message": "0x68656c6c6f"},
    "initiator": "payments-bot",
    "approval": None,
}
AUDIT = {
    "seq": 42,
    "at": T,
    "actor": "payments-bot",
    "action": "sign.signed",
    "subject": SR,
    "data": {"key_id": KEY, "kind": "message"},
    "prev_hash": "9c" * 32,
    "hash": "4d" * 32,
}
CKPT = {
    "seq": 42,
    "head": "4d" * 32,
    "signatures": {"node-1": "e1" * 64, "node-2": "e2" * 64},
    "nodes": [
        {"node_id": "node-1", "status": "signed", "detail": None},
        {"node_id": "node-2", "status": "signed", "detail": None},
        {"node_id": "node-3", "status": "unreachable", "detail": "connection refused"},
    ],
    "created_at": T,
}
VERDICT_A = {
    "version": 1,
    "digest": "7e" * 32,
    "action": "allow",
    "rule": "eth-under-limit",
    "reason": "policy-allowed",
    "requirement": None,
}
VERDICT_S = {
    "version": 2,
    "digest": "8f" * 32,
    "action": "approve",
    "rule": "eth-over-limit",
    "reason": "policy-approvals-required",
    "requirement": "2 of treasury",
}
EXAMPLES: dict[str, Any] = {
    "ProblemTypeOut": {
        "type": "urn:tpwc:problem:policy-denied",
        "slug": "policy-denied",
        "status": 403,
        "title": "Denied by policy",
        "family": "policy-denied",
        "meaning": "The active governance policy denied the sign request.",
        "href": "/problems/policy-denied",
    },
    "ProblemModel": {
        "type": "urn:tpwc:problem:policy-denied",
        "title": "Denied by policy",
        "status": 403,
        "detail": "raw-denied: bytes no decoder can read",
        "instance": "/v1/sign-requests",
    },
    "Health": {"status": "ok", "version": "0.1.0"},
    "Ready": {
        "status": "ready",
        "database": "ok",
        "nodes_healthy": 3,
        "nodes_enrolled": 3,
        "pools": {"ed25519": 64, "ecdsa-secp256k1": 8},
        "batching": {"calls": 12, "items": 30},
    },
    "NodeEnrol": {"url": "http://127.0.0.1:7101"},
    "NodeOut": NODE,
    "NodeList": {"items": [NODE]},
    "KeyCreate": {"scheme": "ed25519", "threshold": 2},
    "KeyOut": KEYOUT,
    "KeyList": {"items": [KEYOUT], "next_cursor": None},
    "SignRequestCreate": {"key_id": KEY, "kind": "message", "payload": {"message": "0x68656c6c6f"}},
    "SignRequestOut": SROUT,
    "SignRequestList": {"items": [SROUT], "next_cursor": "eyJzZXEiOjQyfQ"},
    "ApprovalSubmit": {"approval": "pWFhYjEyYWJjZGVm"},
    "AuditList": {"items": [AUDIT], "next_cursor": None},
    "AuditVerify": {
        "ok": True,
        "entries": 42,
        "first_bad_seq": None,
        "head": "4d" * 32,
        "findings": [],
        "checkpoints": {"stored": 3, "anchored": 3, "last_seq": 40},
    },
    "CheckpointOut": CKPT,
    "CheckpointList": {"items": [CKPT]},
    "GovernanceSubmit": {"document": "a5" * 16},
    "GovernanceOut": {
        "installed": True,
        "cluster_id": "tpwc-dev",
        "version": 1,
        "digest": "7e" * 32,
        "roster": ["node-1", "node-2", "node-3"],
        "document": "a5" * 16,
        "nodes": None,
    },
    "PolicyDryRunCreate": {
        "key_id": KEY,
        "kind": "message",
        "payload": {"message": "0x68656c6c6f"},
    },
    "PolicyDryRunOut": {
        "action": "allow",
        "rule": "messages",
        "reason": "policy-allowed",
        "detail": "",
        "policy_version": 1,
        "governance_digest": "7e" * 32,
        "requirement": None,
        "requirement_text": None,
        "at": T,
        "facts": {
            "kind": "message",
            "key_id": KEY,
            "initiator": "payments-bot",
            "operation": "message",
            "asset": None,
            "chain": None,
            "amount": None,
            "amount_text": None,
            "transfers": [],
        },
        "rules": [
            {"index": 7, "rule": "messages", "action": "allow", "matched": True, "failed": []}
        ],
        "source": "active",
        "signed_by": ["officer-1"],
    },
    "PolicyShadowSubmit": {"document": "pWFhYjEyYWJjZGVm"},
    "PolicyShadowOut": {
        "installed": True,
        "version": 2,
        "digest": "8f" * 32,
        "base_version": 1,
        "base_digest": "7e" * 32,
        "stale": False,
        "installed_by": "admin",
        "installed_at": T,
    },
    "ShadowDisagreementList": {
        "items": [
            {
                "seq": 1,
                "request_id": SR,
                "key_id": KEY,
                "kind": "evm-tx",
                "at": T,
                "active": VERDICT_A,
                "shadow": VERDICT_S,
            }
        ],
        "next_cursor": None,
    },
    "ReceiptOut": {
        "format": 1,
        "body": "a6" * 16,
        "nodes": [
            {
                "node_id": "node-1",
                "release_seq": 7,
                "release_hash": "1f" * 32,
                "signature": "e1" * 64,
            },
            {
                "node_id": "node-2",
                "release_seq": 9,
                "release_hash": "2f" * 32,
                "signature": "e2" * 64,
            },
        ],
        "signature": {"public_key": PK, "signature": SIG, "recovery_id": None},
        "audit": {"seq": 42},
    },
}

# -- key labels, credentials, webhooks, ceremonies, HD derivation
CRED = {
    "id": "cred_4b1e9c2a7d0f3e6a8b5c",
    "role": "requester",
    "principal": "payments-bot",
    "label": "payments service, prod",
    "scope": {"keys": [], "wallets": ["hot"]},
    "revoked": False,
    "created_at": T,
    "rotated_at": None,
}
WEBHOOK = {
    "id": "wh_7c3d1a9e5b2f4c8d0e6a",
    "url": "https://hooks.example.com/custody",
    "event_types": ["sign_request.signed", "sign_request.failed"],
    "description": "wallet backend",
    "enabled": True,
    "created_at": T,
    "updated_at": T,
}
DELIVERY = {
    "id": 17,
    "message_id": "msg_2f8e6c4a0b1d3f5e7a9c8b6d4f2e0a1c",
    "event_type": "sign_request.signed",
    "status": "delivered",
    "attempts": 2,
    "next_attempt_at": None,
    "last_status_code": 204,
    "last_error": None,
    "log": [
        {"at": T, "status_code": 503, "error": None, "ms": 41.7},
        {"at": T2, "status_code": 204, "error": None, "ms": 12.3},
    ],
    "created_at": T,
    "updated_at": T2,
}
EXAMPLES.update(
    {
        "KeyUpdate": {"label": "treasury hot wallet", "metadata": {"team": "treasury"}},
        "CredentialCreate": {
            "role": "requester",
            "principal": "payments-bot",
            "label": "payments service, prod",
            "scope": {"keys": [], "wallets": ["hot"]},
        },
        "CredentialScopeSet": {"scope": {"keys": [KEY], "wallets": ["hot"]}},
        "CredentialOut": CRED,
        "CredentialIssued": {**CRED, "token": "tpwc_Q2hhbmdlTWVJbkEtcmVhbC10b2tlbi1leGFtcGxl"},
        "CredentialList": {"items": [CRED], "next_cursor": None},
        "WebhookCreate": {
            "url": "https://hooks.example.com/custody",
            "event_types": ["sign_request.signed", "sign_request.failed"],
            "description": "wallet backend",
        },
        "WebhookUpdate": {"event_types": ["*"], "enabled": True},
        "WebhookOut": WEBHOOK,
        "WebhookCreated": {**WEBHOOK, "secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"},
        "WebhookList": {"items": [WEBHOOK], "next_cursor": None},
        "WebhookDeliveryOut": DELIVERY,
        "WebhookDeliveryList": {"items": [DELIVERY], "next_cursor": None},
    }
)

# Answers of routes that return plain JSON objects (no response model): shown on their
# operation by ``api.routes`` (``responses=``), not validated against a model.
CEREMONY = {
    "id": "cer_5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b",
    "kind": "refresh",
    "key_id": KEY,
    "status": "done",
    "session_id": "6b" * 32,
    "share_version": 2,
    "participants": [1, 2, 3],
    "transcript": {
        "outcome": {
            "ceremony": "refresh",
            "session_id": "6b" * 32,
            "key_id": KEY,
            "scheme": "ed25519",
            "threshold": 2,
            "participants": [1, 2, 3],
            "share_version": 2,
            "public_key": PK,
            "public_package": "a7" * 16,
        },
        "signatures": {"1": "e1" * 64, "2": "e2" * 64, "3": "e3" * 64},
        "verifying_shares": {"1": "d1" * 32, "2": "d2" * 32, "3": "d3" * 32},
    },
    "progress": [
        {"party_id": 1, "node_id": "node-1", "step": "commit", "ok": True},
        {"party_id": 2, "node_id": "node-2", "step": "commit", "ok": True},
        {"party_id": 3, "node_id": "node-3", "step": "commit", "ok": True},
    ],
    "error": None,
    "created_by": "cred_4b1e9c2a7d0f3e6a8b5c",
    "created_at": T,
    "updated_at": T2,
}
XPUB = (
    "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD"
    "265TMg7usUDFdp6W1EGMcet8"
)
ROUTE_EXAMPLES: dict[str, Any] = {
    "Ceremony": CEREMONY,
    "DerivedKey": {
        "key_id": KEY,
        "scheme": "ecdsa-secp256k1",
        "path": "m/0/1",
        "public_key": "02" + "4f" * 32,
        "addresses": {"ethereum": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"},
        "xpub": XPUB,
    },
    "KeyXpub": {
        "key_id": KEY,
        "scheme": "ecdsa-secp256k1",
        "xpub": XPUB,
        "chain_code": "87" * 32,
    },
}


def response(name: str, description: str) -> dict[str, Any]:
    """A ``responses=`` entry showing ``ROUTE_EXAMPLES[name]`` as the JSON answer."""
    return {
        "description": description,
        "content": {"application/json": {"example": ROUTE_EXAMPLES[name]}},
    }


EXAMPLES["ProblemTypeList"] = {"items": [EXAMPLES["ProblemTypeOut"]]}


def of(name: str) -> dict[str, Any]:
    """``json_schema_extra`` for model ``name``: ``{"examples": [...]}``."""
    return {"examples": [EXAMPLES[name]]}
