"""Credentials through the API (issue 11, item 4): create, list, show, scope, rotate and
revoke (admin only), each audited; a token shown once and stored hashed; a requester sees
only its own sign requests; the credential cache TTL is a setting.

Each test names the defect of the issue's "Why" it covers: "no way to create, scope,
rotate or revoke one (revoking means editing SQLite)", "a requester sees everyone's sign
requests", "the 1 s credential cache (``SEEN_TTL``) is a module constant"."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select, text, update

from api.auth import hash_token
from api.db import AuditEntry, Credential
from api.settings import Settings
from custody import policy as pol
from custody.client import AsyncCustodyClient, CustodyClient, CustodyError
from tests.api.conftest import Api, make_api, nothing_up_my_sleeve_point
from tests.api.conftest import test_policy as base_policy
from tests.api.test_auth_problems import assert_problem


def post_sr(api: Api, kid: str, idem: str, token: str, message: str = "11" * 32) -> Any:
    return api.client.post(
        "/v1/sign-requests",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": idem},
        json={"key_id": kid, "kind": "raw", "message": message},
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def actions(api: Api, subject: str) -> list[str]:
    with api.app.state.db.session() as s:
        return list(
            s.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.subject == subject)
                .order_by(AuditEntry.seq)
            )
        )


def create(api: Api, **body: Any) -> dict[str, Any]:
    r = api.client.post("/v1/credentials", headers=api.h("admin"), json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def verify_ok(api: Api) -> dict[str, Any]:
    r = api.client.get("/v1/audit/verify", headers=api.h("auditor"))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_create_shows_the_token_once_and_stores_only_its_hash(api: Api) -> None:
    doc = create(api, role="requester", principal="mobile-app", label="mobile app, prod")
    token = doc["token"]
    assert token.startswith("tpwc_") and doc["principal"] == "mobile-app"
    assert doc["role"] == "requester" and doc["scope"] is None and not doc["revoked"]
    # the new token works, with its role
    assert api.client.get("/v1/sign-requests", headers=bearer(token)).status_code == 200
    assert api.client.get("/v1/credentials", headers=bearer(token)).status_code == 403
    # listed and shown without the token or its hash
    listed = api.client.get("/v1/credentials", headers=api.h("admin")).json()["items"]
    mine = [c for c in listed if c["id"] == doc["id"]]
    assert len(mine) == 1 and "token" not in mine[0] and "token_sha256" not in mine[0]
    shown = api.client.get(f"/v1/credentials/{doc['id']}", headers=api.h("admin")).json()
    assert "token" not in shown and shown["label"] == "mobile app, prod"
    assert token not in api.client.get("/v1/audit", headers=api.h("auditor")).text
    # the database holds the hash, never the token
    with api.app.state.db.session() as s:
        row = s.get(Credential, doc["id"])
        assert row is not None and row.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    with api.app.state.db.engine.connect() as conn:
        rows = [
            *conn.execute(text("SELECT * FROM credentials")),
            *conn.execute(text("SELECT * FROM audit")),
        ]
    dump = "\n".join(str(r) for r in rows)
    assert token not in dump
    assert actions(api, doc["id"]) == ["credential.create"]
    assert verify_ok(api)["ok"]


def test_only_admins_manage_credentials(api: Api) -> None:
    for role in ("requester", "approver", "auditor"):
        assert_problem(api.client.get("/v1/credentials", headers=api.h(role)), 403, "forbidden")
        r = api.client.post("/v1/credentials", headers=api.h(role), json={"role": "admin"})
        assert_problem(r, 403, "forbidden")
    assert_problem(api.client.get("/v1/credentials"), 401, "unauthorized")
    r = api.client.post("/v1/credentials", headers=api.h("admin"), json={"role": "root"})
    assert r.status_code == 422
    r = api.client.post(
        "/v1/credentials", headers=api.h("admin"), json={"role": "admin", "extra": 1}
    )
    assert r.status_code == 422
    assert_problem(
        api.client.get("/v1/credentials/cred_nope", headers=api.h("admin")), 404, "not-found"
    )


def test_rotate_replaces_the_token_at_once_and_is_audited(api: Api) -> None:
    doc = create(api, role="auditor", label="siem")
    old = doc["token"]
    assert api.client.get("/v1/sign-requests", headers=bearer(old)).status_code == 200  # cached
    r = api.client.post(f"/v1/credentials/{doc['id']}/rotate", headers=api.h("admin"))
    assert r.status_code == 200, r.text
    new = r.json()["token"]
    assert new != old and r.json()["id"] == doc["id"] and r.json()["rotated_at"]
    # refused at once on this coordinator, although it was in the credential cache
    assert_problem(api.client.get("/v1/sign-requests", headers=bearer(old)), 401, "unauthorized")
    assert api.client.get("/v1/sign-requests", headers=bearer(new)).status_code == 200
    assert actions(api, doc["id"]) == ["credential.create", "credential.rotate"]
    assert verify_ok(api)["ok"]  # the rotated row matches its audited events


def test_revoke_through_the_api(api: Api) -> None:
    doc = create(api, role="requester")
    token = doc["token"]
    assert api.client.get("/v1/sign-requests", headers=bearer(token)).status_code == 200
    r = api.client.delete(f"/v1/credentials/{doc['id']}", headers=api.h("admin"))
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert_problem(api.client.get("/v1/sign-requests", headers=bearer(token)), 401, "unauthorized")
    # again: same answer, nothing new audited; a revoked credential is not rotated or scoped
    assert api.client.delete(f"/v1/credentials/{doc['id']}", headers=api.h("admin")).is_success
    r = api.client.post(f"/v1/credentials/{doc['id']}/rotate", headers=api.h("admin"))
    assert_problem(r, 409, "credential-revoked")
    r = api.client.put(
        f"/v1/credentials/{doc['id']}/scope", headers=api.h("admin"), json={"scope": None}
    )
    assert_problem(r, 409, "credential-revoked")
    assert actions(api, doc["id"]) == ["credential.create", "credential.revoke"]
    listed = api.client.get("/v1/credentials", headers=api.h("admin")).json()["items"]
    assert doc["id"] not in [c["id"] for c in listed]
    everything = api.client.get(
        "/v1/credentials", params={"include_revoked": "true"}, headers=api.h("admin")
    ).json()["items"]
    assert doc["id"] in [c["id"] for c in everything]
    assert verify_ok(api)["ok"]
    assert_problem(
        api.client.delete("/v1/credentials/cred_nope", headers=api.h("admin")), 404, "not-found"
    )


def test_the_last_admin_credential_is_not_revoked(api: Api) -> None:
    with api.app.state.db.session() as s:
        admin_id = s.scalar(
            select(Credential.id).where(Credential.token_sha256 == hash_token(api.tokens["admin"]))
        )
    r = api.client.delete(f"/v1/credentials/{admin_id}", headers=api.h("admin"))
    assert_problem(r, 409, "last-admin")
    other = create(api, role="admin", label="second admin")
    r = api.client.delete(f"/v1/credentials/{admin_id}", headers=bearer(other["token"]))
    assert r.status_code == 200 and r.json()["revoked"]
    assert_problem(
        api.client.delete(f"/v1/credentials/{other['id']}", headers=bearer(other["token"])),
        409,
        "last-admin",
    )


# -- scopes --------------------------------------------------------------------------------
def _key_id(scheme: str) -> str:
    """The id :meth:`Api.add_key` gives an active key of ``scheme`` (to name it in a policy
    before the app exists)."""
    pk = nothing_up_my_sleeve_point(scheme.encode())
    if scheme != "ecdsa-secp256k1":
        pk = pk[1:]
    return "key_" + hashlib.sha256(pk + b"active").hexdigest()[:32]


HOT = _key_id("ed25519")


@pytest.fixture
def wallet_api(tmp_path: Path) -> Iterator[Api]:
    """The test policy plus a wallet ``hot`` holding the ed25519 test key."""
    base = base_policy()
    policy = pol.Policy(
        base.rules,
        base.allowlists,
        (*base.wallets, pol.Wallet("hot", frozenset({HOT}))),
        base.approver_groups,
    )
    yield from make_api(tmp_path, policy=policy)


def test_scope_to_keys_and_wallets(wallet_api: Api) -> None:
    api = wallet_api
    ecdsa = api.add_key()
    hot = api.add_key("ed25519")
    assert hot == HOT
    by_key = create(api, role="requester", scope={"keys": [ecdsa]})
    by_wallet = create(api, role="requester", scope={"wallets": ["hot"]})
    assert by_key["scope"] == {"keys": [ecdsa], "wallets": []}
    # in scope: the request goes on (the test policy parks raw requests for approvals)
    assert post_sr(api, ecdsa, "k1", by_key["token"]).status_code == 202
    assert post_sr(api, hot, "w1", by_wallet["token"]).status_code == 202
    # out of scope: refused before anything is stored
    r = post_sr(api, hot, "k2", by_key["token"])
    assert_problem(r, 403, "credential-out-of-scope")
    assert r.json()["key_id"] == hot
    assert_problem(post_sr(api, ecdsa, "w2", by_wallet["token"]), 403, "credential-out-of-scope")
    # re-scoped through the API: takes effect at once, audited; null lifts it
    r = api.client.put(
        f"/v1/credentials/{by_key['id']}/scope",
        headers=api.h("admin"),
        json={"scope": {"keys": [], "wallets": ["hot"]}},
    )
    assert r.status_code == 200 and r.json()["scope"] == {"keys": [], "wallets": ["hot"]}
    assert post_sr(api, hot, "k3", by_key["token"]).status_code == 202
    assert_problem(post_sr(api, ecdsa, "k4", by_key["token"]), 403, "credential-out-of-scope")
    r = api.client.put(
        f"/v1/credentials/{by_key['id']}/scope", headers=api.h("admin"), json={"scope": None}
    )
    assert r.status_code == 200 and r.json()["scope"] is None
    assert post_sr(api, ecdsa, "k5", by_key["token"]).status_code == 202
    assert actions(api, by_key["id"]) == [
        "credential.create",
        "credential.scope",
        "credential.scope",
    ]
    assert verify_ok(api)["ok"]


def test_a_scope_widened_in_the_database_is_refused(wallet_api: Api) -> None:
    """Editing the scope behind the API (so the credential reaches more keys) makes the row
    differ from its audited events: the token is refused, and verify names it."""
    api = wallet_api
    kid = api.add_key()
    doc = create(api, role="requester", scope={"keys": [kid]})
    with api.app.state.db.session() as s:
        s.execute(update(Credential).where(Credential.id == doc["id"]).values(scope=None))
    api.app.state.credentials_seen = {}
    assert_problem(post_sr(api, kid, "x1", doc["token"]), 401, "unauthorized")
    found = verify_ok(api)
    assert not found["ok"]
    assert any(
        f["kind"] == "credential-forged" and f["subject"] == doc["id"] for f in found["findings"]
    ), found


# -- a requester sees only its own requests ---------------------------------------------------
def test_a_requester_sees_only_its_own_sign_requests(api: Api) -> None:
    kid = api.add_key()
    a = create(api, role="requester", principal="app-a")
    b = create(api, role="requester", principal="app-b")
    ra = post_sr(api, kid, "a1", a["token"]).json()["id"]
    rb = post_sr(api, kid, "b1", b["token"], message="22" * 32).json()["id"]

    def listed(headers: dict[str, str]) -> set[str]:
        r = api.client.get("/v1/sign-requests", headers=headers)
        assert r.status_code == 200, r.text
        return {x["id"] for x in r.json()["items"]}

    assert listed(bearer(a["token"])) == {ra}
    assert listed(bearer(b["token"])) == {rb}
    # another requester's request is not found (its existence is not revealed)
    r = api.client.get(f"/v1/sign-requests/{rb}", headers=bearer(a["token"]))
    assert_problem(r, 404, "not-found")
    assert api.client.get(f"/v1/sign-requests/{ra}", headers=bearer(a["token"])).is_success
    # nor its receipt (not found, not "no receipt": existence is not revealed)
    r = api.client.get(f"/v1/sign-requests/{rb}/receipt", headers=bearer(a["token"]))
    assert_problem(r, 404, "not-found")
    r = api.client.get(f"/v1/sign-requests/{ra}/receipt", headers=bearer(a["token"]))
    assert_problem(r, 404, "no-receipt")
    # the other roles see everything, as before
    for role in ("admin", "approver", "auditor"):
        assert {ra, rb} <= listed(api.h(role))
        assert api.client.get(f"/v1/sign-requests/{rb}", headers=api.h(role)).is_success


# -- settings -----------------------------------------------------------------------------------
def test_the_credential_cache_ttl_is_a_setting(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CUSTODY_CREDENTIAL_CACHE_TTL", "0")
    monkeypatch.setenv("CUSTODY_SYNC_WAIT", "3.5")
    s = Settings(data_dir=tmp_path)
    assert s.credential_cache_ttl == 0 and s.sync_wait == 3.5
    assert Settings(data_dir=tmp_path, credential_cache_ttl=2).credential_cache_ttl == 2
    monkeypatch.setenv("CUSTODY_CREDENTIAL_CACHE_TTL", "soon")
    with pytest.raises(ValidationError, match="credential_cache_ttl"):
        Settings(data_dir=tmp_path)


def test_with_a_zero_ttl_a_revocation_in_the_database_is_seen_at_once(tmp_path: Path) -> None:
    """``credential_cache_ttl=0``: no caching at all (every request reads its credential)."""
    for api in make_api(tmp_path, credential_cache_ttl=0.0):
        h = api.h("auditor")
        assert api.client.get("/v1/sign-requests", headers=h).status_code == 200
        with api.app.state.db.session() as s:
            s.execute(
                update(Credential)
                .where(Credential.token_sha256 == hash_token(api.tokens["auditor"]))
                .values(revoked=True)
            )
        assert_problem(api.client.get("/v1/sign-requests", headers=h), 401, "unauthorized")


def test_every_setting_is_in_the_one_documented_list() -> None:
    """docs/OPERATIONS.md lists every coordinator setting as its environment variable, and
    the coordinator reads no ``CUSTODY_*`` variable outside :class:`Settings`."""
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "OPERATIONS.md").read_text()
    missing = [n for n in Settings.model_fields if f"`CUSTODY_{n.upper()}`" not in doc]
    assert missing == []
    for f in sorted((root / "api").rglob("*.py")):
        text = f.read_text()
        assert "os.environ" not in text or f.name == "settings.py", f


# -- the SDK (sync and async) -----------------------------------------------------------------
def test_sdk_manages_credentials_and_webhooks(api: Api) -> None:
    kid = api.add_key()
    with CustodyClient("http://testserver", api.tokens["admin"], http=TestClient(api.app)) as c:
        made = c.create_credential("requester", principal="sdk-bot", keys=[kid])
        assert made.token and made.scope is not None and made.scope.keys == [kid]
        assert made.id in [x.id for x in c.list_credentials()]
        assert c.get_credential(made.id).principal == "sdk-bot"
        assert c.scope_credential(made.id).scope is None
        assert c.scope_credential(made.id, wallets=["hot"]).scope.wallets == ["hot"]  # type: ignore[union-attr]
        new = c.rotate_credential(made.id)
        assert new.token != made.token and new.rotated_at is not None
        assert c.revoke_credential(made.id).revoked
        with pytest.raises(CustodyError) as e:
            c.rotate_credential(made.id)
        assert e.value.status == 409
        with pytest.raises(CustodyError) as e:
            c.create_webhook("http://169.254.169.254/", ["*"])
        assert e.value.status == 422 and e.value.type.endswith("webhook-url-refused")
        assert c.list_webhooks() == []


async def test_async_sdk_manages_credentials(api: Api) -> None:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://t")
    async with AsyncCustodyClient("http://t", api.tokens["admin"], http=http) as c:
        made = await c.create_credential("auditor", label="async")
        assert made.id in [x.id for x in await c.list_credentials()]
        assert (await c.get_credential(made.id)).label == "async"
        rotated = await c.rotate_credential(made.id)
        assert rotated.token != made.token
        assert (await c.revoke_credential(made.id)).revoked
        assert await c.list_webhooks() == []
