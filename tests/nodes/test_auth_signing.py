"""Coordinator request signatures at the node (401s) and the sign-request digest rule."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from fastapi.testclient import TestClient
from nacl.signing import SigningKey

from custody.nodeauth import NodeAuthError, sign_headers, verify_headers
from custody.signing import SignRequestError, message_to_sign
from mpc.wire import cbor_dumps
from tests.nodes.conftest import InProc


def test_node_refuses_unsigned_forged_and_stale_requests(inproc: InProc) -> None:
    from signer_nodes.service import create_app

    client = TestClient(create_app(inproc.nodes[1]))
    assert client.get("/health").json()["hsm"] == "ok"
    me = {"recipient": "node-1"}
    cases = {
        "missing": {},
        "other key": sign_headers(SigningKey.generate(), "GET", "/v1/status", **me),
        "stale": sign_headers(
            inproc.key, "GET", "/v1/status", timestamp=int(time.time()) - 120, **me
        ),
        "other path": sign_headers(inproc.key, "GET", "/v1/sessions/x", **me),
        "no recipient (v1)": sign_headers(inproc.key, "GET", "/v1/status"),
        "other recipient": sign_headers(inproc.key, "GET", "/v1/status", recipient="node-2"),
    }
    for name, headers in cases.items():
        r = client.get("/v1/status", headers=headers)
        assert r.status_code == 401, name
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:tpwc:node:unauthenticated", name
    good = sign_headers(inproc.key, "GET", "/v1/status", **me)
    ok = client.get("/v1/status", headers=good)
    assert ok.status_code == 200 and ok.json()["node_id"] == "node-1"
    again = client.get("/v1/status", headers=good)  # the same signature in its window
    assert again.status_code == 401 and again.json()["type"] == "urn:tpwc:node:replayed"
    body = json.dumps({"key_id": "nope", "count": 1}).encode()
    h = sign_headers(inproc.key, "POST", "/v1/frost/commitments", body, **me)
    tampered = json.dumps({"key_id": "nope", "count": 2}).encode()
    assert client.post("/v1/frost/commitments", content=tampered, headers=h).status_code == 401
    r = client.post("/v1/frost/commitments", content=body, headers=h)
    assert r.status_code == 404 and r.json()["type"] == "urn:tpwc:node:unknown-key"


def test_verify_headers_rules() -> None:
    k = SigningKey.generate()
    h = sign_headers(k, "post", "/p", b"x", timestamp=1000)
    verify_headers(bytes(k.verify_key), "POST", "/p", b"x", h, now=1030)
    with pytest.raises(NodeAuthError):
        verify_headers(bytes(k.verify_key), "POST", "/p", b"x", h, now=1061)
    with pytest.raises(NodeAuthError):
        verify_headers(bytes(k.verify_key), "POST", "/p", b"y", h, now=1000)


def test_message_to_sign() -> None:
    raw = {"id": "r1", "key_id": "k", "kind": "raw", "message": "00ff"}
    assert message_to_sign("ed25519", raw) == b"\x00\xff"
    with pytest.raises(SignRequestError) as e:
        message_to_sign("ecdsa-secp256k1", raw)
    assert e.value.field == "message"
    pay = {
        "id": "r2",
        "key_id": "k",
        "kind": "payment",
        "payload": {"amount": "10.00", "currency": "EUR", "to": "x"},
    }
    want = hashlib.sha256(
        b"tpwc-sign-v1\x00payment\x00"
        + cbor_dumps({"id": "r2", "key_id": "k", "kind": "payment", "payload": pay["payload"]})
    ).digest()
    for scheme in ("ed25519", "bip340", "ecdsa-secp256k1"):
        assert message_to_sign(scheme, pay) == want
    assert message_to_sign("ed25519", {**pay, "message": want.hex()}) == want
    for bad, field in (
        ({**pay, "message": "00" * 32}, "message"),
        ({**pay, "payload": {"amount": 1.5}}, "payload.amount"),
        ({**pay, "kind": "other"}, "kind"),
        ({**pay, "id": ""}, "id"),
        ({**raw, "message": "0G"}, "message"),
    ):
        with pytest.raises(SignRequestError) as e:
            message_to_sign("ed25519", bad)
        assert e.value.field == field
    assert message_to_sign("ed25519", {**pay, "id": "r3"}) != want
