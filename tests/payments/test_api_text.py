"""Control characters in the payment core's request text: a 422 naming the field, never a
500, on SQLite and on PostgreSQL (which cannot store a NUL in a text column).

The same class of bug as the coordinator's (tests/api/test_text_fields.py): the payment
core's ledger runs on PostgreSQL in production, and a NUL in an owner filter, a
destination or a cancellation reason would reach it. The first test holds the OpenAPI
document to "every request string refuses control characters"; the others send them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from payments import risk
from payments.app import create_app
from payments.core import PaymentCore
from payments.sanctions import SanctionsList
from payments.settings import PACKAGE_DATA
from tests.openapi_text import refuses_controls, request_strings

TOKEN = "test-token-" + "t" * 20
NUL = quote("\x00")


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    core = PaymentCore(engine, SanctionsList.load(PACKAGE_DATA / "sanctions"), risk.Settings(), {})
    with TestClient(create_app(core, TOKEN), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


def _named(r: Any, field: str) -> None:
    assert r.status_code == 422, (r.status_code, r.text)
    body = r.json()
    assert body["type"].endswith("invalid-request"), body
    assert field in [e["field"] for e in body["errors"]], body["errors"]


def test_every_request_string_of_the_payment_api_refuses_control_characters(
    client: TestClient,
) -> None:
    spec = client.get("/openapi.json").json()
    places = list(request_strings(spec))
    assert len(places) > 15
    bare = [where for where, schema in places if not refuses_controls(schema)]
    # The Authorization and Idempotency-Key headers are checked in code (401/400, below);
    # the pain.001 import's body is an XML document, and XML 1.0 has no NUL or C0 control
    # but tab, CR and LF, not even as a character reference: its parser refuses them.
    exempt = ("header:authorization", "header:idempotency-key", "/v1/payments/imports body")
    bare = [b for b in bare if not b.endswith(exempt)]
    assert not bare, f"request strings that take a control character: {bare}"


@pytest.mark.parametrize(
    ("url", "field"),
    [
        (f"/v1/accounts?owner=alice{NUL}", "owner"),
        (f"/v1/accounts?cursor={NUL}", "cursor"),
        (f"/v1/payments?customer={NUL}", "customer"),
        (f"/v1/payments?cursor=x{NUL}", "cursor"),
        (f"/v1/accounts/acc_1{NUL}", "account_id"),
        (f"/v1/payments/{NUL}", "payment_id"),
        (f"/v1/payments/pay_1{NUL}/events", "payment_id"),
        (f"/v1/settlements/stl_1{NUL}", "settlement_id"),
        (f"/v1/settlements/stl_1{NUL}/message", "settlement_id"),
        (f"/v1/reconciliations/rec{NUL}", "reconciliation_id"),
    ],
)
def test_a_nul_in_a_query_or_path_parameter_is_a_422_naming_it(
    client: TestClient, url: str, field: str
) -> None:
    _named(client.get(url), field)


def _account(client: TestClient) -> str:
    r = client.post(
        "/v1/accounts",
        json={"owner": "alice", "asset": "USDC", "decimals": 2},
        headers={"Idempotency-Key": "acct"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("destination", "0x52908400098527886E0F7030069857D2E4169EE7\x00"),
        ("rail", "evm\x00"),
        ("end_to_end_id", "E2E\x00-1"),
        ("destination", "GB29NWBK60161331926819\x1b"),
    ],
)
def test_a_control_character_in_a_payment_body_is_a_422_naming_the_member(
    client: TestClient, member: str, value: str
) -> None:
    aid = _account(client)
    body = {"account_id": aid, "amount": 1, "destination": "0x" + "11" * 20, "rail": "evm"}
    r = client.post(
        "/v1/payments", json={**body, member: value}, headers={"Idempotency-Key": "p-" + member}
    )
    _named(r, member)


def test_a_nul_in_a_cancellation_reason_or_a_confirmation_reference_is_a_422(
    client: TestClient,
) -> None:
    r = client.post("/v1/payments/pay_1/cancel", json={"reason": "fraud\x00"})
    _named(r, "reason")
    r = client.post("/v1/settlements/stl_1/confirmations", json={"amount": 1, "reference": "\x00"})
    _named(r, "reference")


def test_a_control_character_in_the_idempotency_key_is_refused_naming_it(
    client: TestClient,
) -> None:
    r = client.post(
        "/v1/accounts",
        json={"owner": "bob", "asset": "USDC", "decimals": 2},
        headers={"Idempotency-Key": "acct\x01two"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "Idempotency-Key"
    listed = client.get("/v1/accounts?owner=bob").json()["items"]
    assert listed == []  # nothing was opened
