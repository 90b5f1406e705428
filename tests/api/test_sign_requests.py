"""Sign-request resource without nodes: idempotency rules, state machine, pagination, audit."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, text

from api import audit
from api.db import IdempotencyRecord, Key, SignRequest
from api.idempotency import fingerprint
from custody.signing import message_to_sign
from tests.api.test_auth_problems import assert_problem


def post_sr(api, key_id: str, idem: str, message: str = "11" * 32, **extra):  # noqa: ANN001, ANN003, ANN201
    return api.client.post(
        "/v1/sign-requests",
        headers=api.h("requester", idem),
        json={"key_id": key_id, "kind": "raw", "message": message, **extra},
    )


def stored_digest(api, request_id: str) -> bytes:  # noqa: ANN001
    """The request digest the nodes log for a stored request (what the coordinator passes
    to its outcome writer), recomputed from the stored body and the key's scheme."""
    with api.app.state.db.session() as s:
        row = s.scalar(select(SignRequest).where(SignRequest.id == request_id))
        assert row is not None, request_id
        key = s.scalar(select(Key).where(Key.id == row.key_id))
        body, scheme, key_id = dict(row.body), key.scheme, row.key_id
    return audit.request_digest(request_id, key_id, scheme, body, message_to_sign(scheme, body))


def test_pending_approval_without_policy(api) -> None:  # noqa: ANN001
    kid = api.add_key()
    r = post_sr(api, kid, "i1")
    assert r.status_code == 202, r.text
    sr = r.json()
    assert sr["status"] == "pending_approval" and sr["signature"] is None
    assert sr["expires_at"] is not None and sr["message"] == "11" * 32
    got = api.client.get(f"/v1/sign-requests/{sr['id']}", headers=api.h("auditor")).json()
    assert got == sr


def test_idempotency_rules(api) -> None:  # noqa: ANN001
    kid = api.add_key()
    first = post_sr(api, kid, "same")
    again = post_sr(api, kid, "same")
    assert again.status_code == first.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    # key order in the body does not matter: canonical JSON fingerprint
    r = api.client.post(
        "/v1/sign-requests",
        headers=api.h("requester", "same"),
        json={"message": "11" * 32, "kind": "raw", "key_id": kid},
    )
    assert r.json()["id"] == first.json()["id"]
    # same key, other body: 422
    assert_problem(post_sr(api, kid, "same", message="22" * 32), 422, "idempotency-mismatch")
    # only one request was created
    lst = api.client.get("/v1/sign-requests", headers=api.h("requester")).json()
    assert len(lst["items"]) == 1
    # keys are per credential: another requester may use the same key string
    from api.auth import create_credential

    _, other = create_credential(api.app.state.db, "requester")
    r = api.client.post(
        "/v1/sign-requests",
        json={"key_id": kid, "kind": "raw", "message": "11" * 32},
        headers={"Authorization": f"Bearer {other}", "Idempotency-Key": "same"},
    )
    assert r.status_code == 202 and r.json()["id"] != first.json()["id"]


def test_idempotency_in_flight_is_409(api) -> None:  # noqa: ANN001
    kid = api.add_key()
    body = {"key_id": kid, "kind": "raw", "message": "33" * 32}
    import json

    # the state a concurrent first request leaves while it runs
    cred = next(iter(api.tokens))  # noqa: F841
    from api.auth import hash_token
    from api.db import Credential

    with api.app.state.db.session() as s:
        cid = s.scalar(
            select(Credential.id).where(
                Credential.token_sha256 == hash_token(api.tokens["requester"])
            )
        )
        s.add(
            IdempotencyRecord(
                credential_id=cid,
                key="busy",
                state="in_flight",
                fingerprint=fingerprint("POST", "/v1/sign-requests", json.dumps(body).encode()),
            )
        )
    r = api.client.post("/v1/sign-requests", json=body, headers=api.h("requester", "busy"))
    assert_problem(r, 409, "idempotency-in-flight")


def test_errors_release_the_idempotency_key(api) -> None:  # noqa: ANN001
    assert_problem(post_sr(api, "key_missing", "k"), 404, "key-not-found")
    kid = api.add_key()
    r = post_sr(api, kid, "k")  # same Idempotency-Key, fixed request: accepted
    assert r.status_code == 202


def test_sign_request_validation(api) -> None:  # noqa: ANN001
    kid = api.add_key("ecdsa-secp256k1")
    doc = assert_problem(post_sr(api, kid, "a", message="11" * 31), 422, "invalid-sign-request")
    assert doc["field"] == "message"
    assert_problem(post_sr(api, kid, "b", message="xyz"), 422, "validation")
    pending = api.add_key("ed25519", status="pending")
    assert_problem(post_sr(api, pending, "c"), 409, "key-not-active")
    # payment: the message is the digest of the payload; a wrong claimed message is refused
    ed = api.add_key("ed25519")
    r = api.client.post(
        "/v1/sign-requests",
        headers=api.h("requester", "p1"),
        json={"key_id": ed, "kind": "payment", "payload": {"amount": "10.00", "to": "acct-1"}},
    )
    assert r.status_code == 202 and len(bytes.fromhex(r.json()["message"])) == 32
    r = api.client.post(
        "/v1/sign-requests",
        headers=api.h("requester", "p2"),
        json={"key_id": ed, "kind": "payment", "payload": {"amount": 1.5}},
    )
    assert assert_problem(r, 422, "invalid-sign-request")["field"].startswith("payload")


def test_dev_policy_without_nodes_fails_cleanly(dev_api) -> None:  # noqa: ANN001
    kid = dev_api.add_key("bip340")
    r = post_sr(dev_api, kid, "d1")
    doc = assert_problem(
        r, 502, "signing-failed"
    )  # a failure says so (tests/api/test_http_semantics)
    sr = doc["sign_request"]
    assert r.headers["Location"] == f"/v1/sign-requests/{sr['id']}"
    assert sr["status"] == "failed" and sr["signature"] is None
    assert sr["error"]["type"].endswith("signing-failed")
    assert "healthy nodes" in sr["error"]["detail"]


def test_expiry(api) -> None:  # noqa: ANN001
    kid = api.add_key()
    sid = post_sr(api, kid, "e1").json()["id"]
    with api.app.state.db.session() as s:
        row = s.scalar(select(SignRequest).where(SignRequest.id == sid))
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    api.app.state.coordinator.expire_requests()
    got = api.client.get(f"/v1/sign-requests/{sid}", headers=api.h("requester")).json()
    assert got["status"] == "expired"


def test_cursor_pagination(api) -> None:  # noqa: ANN001
    kid = api.add_key()
    ids = [post_sr(api, kid, f"p{i}", message=f"{i:02x}" * 32).json()["id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        q = "/v1/sign-requests?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = api.client.get(q, headers=api.h("approver")).json()
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert "seq" not in cursor and not cursor.isdigit()  # opaque
    assert pages == 3 and seen == list(reversed(ids))
    page = api.client.get("/v1/sign-requests?status=signed", headers=api.h("approver")).json()
    assert page["items"] == []


def test_audit_chain_and_tamper(api) -> None:  # noqa: ANN001
    kid = api.add_key()
    for i in range(3):
        post_sr(api, kid, f"a{i}", message=f"{i:02x}" * 32)
    v = api.client.get("/v1/audit/verify", headers=api.h("auditor")).json()
    assert (v["ok"], v["entries"], v["first_bad_seq"], v["findings"]) == (True, 7, None, [])
    items = api.client.get("/v1/audit", headers=api.h("auditor")).json()["items"]
    assert [i["prev_hash"] for i in items[1:]] == [i["hash"] for i in items[:-1]]
    with api.app.state.db.session() as s:
        s.execute(text("UPDATE audit SET actor = 'mallory' WHERE seq = 6"))
    v = api.client.get("/v1/audit/verify", headers=api.h("auditor")).json()
    assert v["ok"] is False and v["first_bad_seq"] == 6
