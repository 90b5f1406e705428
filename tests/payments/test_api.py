"""The payment service's HTTP API in process (no custody needed for these routes): bearer
auth, RFC 9457 problems naming the field, Idempotency-Key, cursors, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from payments import risk
from payments.app import create_app
from payments.core import PaymentCore
from payments.db import create_schema, make_engine
from payments.sanctions import SanctionsList
from payments.settings import PACKAGE_DATA

TOKEN = "test-token-" + "x" * 20


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    eng = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    create_schema(eng)
    core = PaymentCore(eng, SanctionsList.load(PACKAGE_DATA / "sanctions"), risk.Settings(), {})
    with TestClient(create_app(core, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c
    eng.dispose()


def post(c: TestClient, path: str, body: dict, key: str | None = "k") -> object:
    return c.post(path, json=body, headers={"Idempotency-Key": key} if key else {})


def test_auth_is_required_and_refusals_are_problem_documents(client: TestClient) -> None:
    r = client.get("/v1/payments", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:tpwc:problem:payments.unauthorized"
    assert r.json()["field"] == "Authorization"
    assert client.get("/v1/nothing").status_code == 404


def test_accounts_deposits_and_idempotency(client: TestClient) -> None:
    body = {"owner": "alice", "asset": "USDC", "decimals": 2}
    r = post(client, "/v1/accounts", body, key=None)
    assert r.status_code == 400 and r.json()["field"] == "Idempotency-Key", r.json()
    r1 = post(client, "/v1/accounts", body, "a1")
    assert r1.status_code == 201
    r2 = post(client, "/v1/accounts", body, "a1")
    assert r2.status_code == 200 and r2.json()["id"] == r1.json()["id"]
    r3 = post(client, "/v1/accounts", {**body, "decimals": 6}, "a1")
    assert r3.status_code == 422 and r3.json()["type"].endswith("idempotency-key-reused")
    dup = post(client, "/v1/accounts", body, "a2")
    assert dup.status_code == 409 and dup.json()["field"] == "owner"
    aid = r1.json()["id"]
    d = post(client, f"/v1/accounts/{aid}/deposits", {"amount": 500, "reference": "dep1"}, "d1")
    assert d.status_code == 201 and d.json()["available"] == 500
    same = post(client, f"/v1/accounts/{aid}/deposits", {"amount": 500, "reference": "dep1"}, "d1")
    assert same.status_code == 200 and same.json()["balance"] == 500  # booked once
    other = post(client, f"/v1/accounts/{aid}/deposits", {"amount": 7, "reference": "dep1"}, "d2")
    assert other.status_code == 409 and other.json()["field"] == "reference"
    assert "already booked for 500" in other.json()["detail"]
    check = client.get("/v1/ledger/check").json()
    assert check == {"sum_per_asset": {"USDC": 0}, "replay_differences": []}


def test_validation_errors_name_each_field(client: TestClient) -> None:
    r = post(
        client,
        "/v1/payments",
        {"account_id": "a b", "amount": -1, "destination": "", "rail": "book"},
    )
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"account_id", "amount", "destination"} <= fields
    r = post(
        client,
        "/v1/payments",
        {"account_id": "acct_1", "amount": 5, "destination": "x", "rail": "evm"},
    )
    assert r.status_code == 422 and r.json()["field"] == "rail"
    assert "not available in this build" in r.json()["detail"]


def test_cursor_pagination_visits_every_account_once(client: TestClient) -> None:
    for i in range(7):
        post(client, "/v1/accounts", {"owner": f"o{i}", "asset": "BTC", "decimals": 8}, f"p{i}")
    seen, cursor = [], None
    while True:
        page = client.get(
            "/v1/accounts", params={"limit": 3, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [a["owner"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == [f"o{i}" for i in range(7)]
    assert client.get("/v1/accounts", params={"cursor": "garbage!"}).json()["field"] == "cursor"


def test_unknown_resources_and_unavailable_import(client: TestClient) -> None:
    r = client.get("/v1/payments/pay_nope")
    assert r.status_code == 404 and r.json()["field"] == "payment_id"
    assert client.post("/v1/payments/pay_nope/cancel").status_code == 404
    r = client.post("/v1/payments/imports", content=b"<x/>")
    assert r.status_code == 501 and "not available in this build" in r.json()["detail"]
    assert client.post("/v1/settlements").json() == {"items": [], "messages": []}
    rec = client.post("/v1/reconciliations").json()
    assert rec["breaks"] == [] and client.get(f"/v1/reconciliations/{rec['id']}").status_code == 200


def test_openapi_lists_every_resource(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/payments", "/v1/payments/{payment_id}", "/v1/payments/{payment_id}/cancel",
              "/v1/accounts", "/v1/settlements", "/v1/reconciliations"):  # fmt: skip
        assert p in paths
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn.jsdelivr" not in docs.text and "unpkg" not in docs.text
