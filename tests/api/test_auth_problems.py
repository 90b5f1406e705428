"""Auth matrix (401 without, 403 for the wrong role) and RFC 9457 problem documents."""

from __future__ import annotations

import pytest

from api.problems import PROBLEM_MEDIA_TYPE, TYPE_PREFIX

# (method, path, json body, roles allowed)
ROUTES = [
    ("GET", "/v1/nodes", None, {"admin", "auditor"}),
    ("GET", "/v1/keys", None, {"admin", "requester", "approver", "auditor"}),
    ("GET", "/v1/keys/key_nope", None, {"admin", "requester", "approver", "auditor"}),
    ("POST", "/v1/keys", {"scheme": "ed25519", "threshold": 2}, {"admin"}),
    ("GET", "/v1/sign-requests", None, {"admin", "requester", "approver", "auditor"}),
    ("GET", "/v1/sign-requests/sr_nope", None, {"admin", "requester", "approver", "auditor"}),
    (
        "POST",
        "/v1/sign-requests",
        {"key_id": "key_x", "kind": "raw", "message": "00" * 32},
        {"requester"},
    ),
    ("GET", "/v1/audit", None, {"admin", "auditor"}),
    ("GET", "/v1/audit/verify", None, {"admin", "auditor"}),
    ("PUT", "/v1/nodes/node-1", {"url": "http://127.0.0.1:1"}, {"admin"}),
]
ROLES = ("admin", "requester", "approver", "auditor")


def assert_problem(r, status: int, slug: str | None = None) -> dict:  # noqa: ANN001
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    doc = r.json()
    assert doc["status"] == status
    assert doc["type"].startswith(TYPE_PREFIX) and doc["title"]
    if slug:
        assert doc["type"] == TYPE_PREFIX + slug
    return doc


@pytest.mark.parametrize(("method", "path", "body", "allowed"), ROUTES)
def test_auth_matrix(api, method, path, body, allowed) -> None:  # noqa: ANN001
    # no credentials, and a forged one: 401 with a challenge
    for headers in ({}, {"Authorization": "Bearer tpwc_forged"}, {"Authorization": "Basic x"}):
        r = api.client.request(
            method, path, json=body, headers={**headers, "Idempotency-Key": "k1"}
        )
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
    for role in ROLES:
        r = api.client.request(method, path, json=body, headers=api.h(role, f"k-{role}"))
        if role in allowed:
            assert r.status_code not in (401, 403), (role, r.text)
        else:
            doc = assert_problem(r, 403, "forbidden")
            assert role in doc["detail"]


def test_tokens_stored_hashed(api) -> None:  # noqa: ANN001
    from sqlalchemy import select

    from api.auth import hash_token
    from api.db import Credential

    with api.app.state.db.session() as s:
        rows = s.scalars(select(Credential)).all()
    stored = {c.token_sha256 for c in rows}
    for tok in api.tokens.values():
        assert tok not in stored and hash_token(tok) in stored
        assert len(tok) >= 40  # 32 random bytes, base64url


def test_problem_documents(api) -> None:  # noqa: ANN001
    assert_problem(api.client.get("/v1/nowhere", headers=api.h("admin")), 404)
    assert_problem(api.client.delete("/v1/keys", headers=api.h("admin")), 405)
    doc = assert_problem(api.client.get("/v1/keys/key_nope", headers=api.h("admin")), 404)
    assert doc["instance"] == "/v1/keys/key_nope"
    # FastAPI's own validation (422) is a problem document too, with the errors listed
    r = api.client.post(
        "/v1/keys", json={"scheme": "rsa", "threshold": 1}, headers=api.h("admin", "v1")
    )
    doc = assert_problem(r, 422, "validation")
    locs = {tuple(e["loc"]) for e in doc["errors"]}
    assert ("body", "scheme") in locs and ("body", "threshold") in locs
    r = api.client.post(
        "/v1/keys",
        content=b"{not json",
        headers={**api.h("admin", "v2"), "content-type": "application/json"},
    )
    assert_problem(r, 422, "validation")
    # missing Idempotency-Key is a validation error naming the header
    r = api.client.post(
        "/v1/keys", json={"scheme": "ed25519", "threshold": 2}, headers=api.h("admin")
    )
    doc = assert_problem(r, 422, "validation")
    assert any(e["loc"][-1].lower() == "idempotency-key" for e in doc["errors"])
    assert_problem(
        api.client.get("/v1/keys?cursor=%%%", headers=api.h("admin")), 422, "invalid-cursor"
    )
    assert_problem(api.client.get("/v1/keys?limit=0", headers=api.h("admin")), 422)


def test_key_creation_refusals(api) -> None:  # noqa: ANN001
    # no nodes enrolled: threshold cannot be met
    r = api.client.post(
        "/v1/keys", json={"scheme": "ed25519", "threshold": 2}, headers=api.h("admin", "a")
    )
    assert_problem(r, 422, "invalid-threshold")
    r = api.client.post(
        "/v1/keys",
        json={"scheme": "ed25519", "threshold": 2, "nodes": ["node-9", "node-8"]},
        headers=api.h("admin", "b"),
    )
    assert "node-9" in assert_problem(r, 422, "unknown-node")["detail"]
    r = api.client.post(
        "/v1/keys",
        json={"scheme": "ed25519", "threshold": 2, "nodes": ["n", "n"]},
        headers=api.h("admin", "c"),
    )
    assert_problem(r, 422)


def test_enrol_unreachable_node(api) -> None:  # noqa: ANN001
    r = api.client.put(
        "/v1/nodes/node-1", json={"url": "http://127.0.0.1:9"}, headers=api.h("admin")
    )
    assert_problem(r, 502, "node-unreachable")


def test_health_ready_openapi(api) -> None:  # noqa: ANN001
    assert api.client.get("/health").json()["status"] == "ok"
    r = api.client.get("/ready").json()
    assert r["status"] == "ready" and r["nodes_enrolled"] == 0
    spec = api.client.get("/openapi.json").json()
    assert "bearer" in str(spec["components"]["securitySchemes"]).lower()
    for path, ops in spec["paths"].items():
        for op in ops.values():
            for code, resp in op["responses"].items():
                if int(code) >= 400:
                    assert list(resp["content"]) == [PROBLEM_MEDIA_TYPE], (path, code)


def test_revoked_credential_is_refused_within_the_cache_ttl(api, monkeypatch) -> None:  # noqa: ANN001
    """Valid credentials are remembered for ``credential_cache_ttl`` seconds (one read per
    second for a busy client); a revoked one is refused once that has passed."""
    import time

    from sqlalchemy import update

    from api import auth
    from api.db import Credential

    monkeypatch.setattr(api.app.state.settings, "credential_cache_ttl", 0.2)
    h = api.h("auditor")
    assert api.client.get("/v1/sign-requests", headers=h).status_code == 200
    with api.app.state.db.session() as s:
        s.execute(
            update(Credential)
            .where(Credential.token_sha256 == auth.hash_token(api.tokens["auditor"]))
            .values(revoked=True)
        )
    time.sleep(0.25)
    r = api.client.get("/v1/sign-requests", headers=h)
    assert r.status_code == 401 and r.json()["status"] == 401
    assert api.client.get("/v1/sign-requests", headers=h).status_code == 401  # not cached
