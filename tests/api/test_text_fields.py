"""Control characters in request text: a 422 naming the field, never a 500 (issue 14).

PostgreSQL cannot store a NUL in a text column: ``GET /v1/keys?label=%00`` reached the
database as a filter and psycopg's ``DataError`` answered 500 (the PostgreSQL pass of CI's
schemathesis run found it; SQLite stores the NUL, so the SQLite pass never saw it). Every
string a request carries now has a pattern refusing the C0 controls and DEL, or a stricter
one (ids, hex, cursors, event types). The first test holds the OpenAPI document to that, so a
new field without a pattern fails here; the others send a NUL in each place and read the
problem. tests/api runs on SQLite and, in CI's second pass, on PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from custody.models import NO_CONTROLS_PATTERN
from tests.api.conftest import Api, make_api
from tests.openapi_text import refuses_controls, request_strings


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One coordinator for the module: every request here is refused before it stores
    anything, so they cannot disturb each other."""
    gen = make_api(tmp_path_factory.mktemp("text"))
    api = next(gen)
    api.kid = api.add_key("ed25519")  # type: ignore[attr-defined]
    yield api
    gen.close()


def test_every_request_string_in_the_openapi_document_refuses_control_characters(
    api: Api,
) -> None:
    spec = api.client.get("/openapi.json").json()
    places = list(request_strings(spec))
    assert len(places) > 60  # the walk reaches parameters, bodies, arrays and maps
    bare = [where for where, schema in places if not refuses_controls(schema)]
    assert not bare, f"request strings that take a control character: {bare}"


def test_the_shared_pattern_takes_ordinary_text_and_refuses_each_control() -> None:
    for text in ("", "Treasury hot wallet", "Zahlung für Lieferant № 7", "m/0/7", "a\u2028b"):
        assert re.fullmatch(NO_CONTROLS_PATTERN, text), text
    for c in [*map(chr, range(0x20)), "\x7f"]:
        assert not re.fullmatch(NO_CONTROLS_PATTERN, f"label{c}"), repr(c)


def _named(r: Any, loc: list[str]) -> None:
    assert r.status_code == 422, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith(":validation"), body
    locs = [e["loc"] for e in body["errors"]]
    assert any(got[: len(loc)] == loc for got in locs), (loc, locs)


NUL = quote("\x00")


@pytest.mark.parametrize(
    ("url", "loc"),
    [
        (f"/v1/keys?label={NUL}", ["query", "label"]),
        (f"/v1/keys?label=hot{NUL}wallet", ["query", "label"]),
        (f"/v1/keys?cursor={NUL}", ["query", "cursor"]),
        (f"/v1/sign-requests?cursor={NUL}", ["query", "cursor"]),
        (f"/v1/sign-requests?key_id={NUL}", ["query", "key_id"]),
        (f"/v1/audit?cursor={NUL}", ["query", "cursor"]),
        (f"/v1/keys/{NUL}", ["path", "key_id"]),
        (f"/v1/keys/key_1{NUL}/xpub", ["path", "key_id"]),
        (f"/v1/keys/key_1{NUL}/ceremonies", ["path", "key_id"]),
        (f"/v1/keys/key_1/derive?path=m/0{NUL}", ["query", "path"]),
        (f"/v1/sign-requests/{NUL}", ["path", "request_id"]),
        (f"/v1/sign-requests/sr_1{NUL}/receipt", ["path", "request_id"]),
        (f"/v1/ceremonies/cer_1{NUL}", ["path", "ceremony_id"]),
        (f"/v1/webhooks/wh{NUL}", ["path", "webhook_id"]),
        (f"/v1/credentials/c{NUL}", ["path", "credential_id"]),
        (f"/problems/policy-denied{NUL}", ["path", "ref"]),
    ],
)
def test_a_nul_in_a_path_or_query_parameter_is_a_422_naming_it(
    api: Api, url: str, loc: list[str]
) -> None:
    _named(api.client.get(url, headers=api.h("admin")), loc)


def _key_body(**extra: Any) -> dict[str, Any]:
    return {"scheme": "ed25519", "threshold": 2, **extra}


@pytest.mark.parametrize(
    ("method", "url", "role", "body", "loc"),
    [
        ("POST", "/v1/keys", "admin", _key_body(label="hot\x00"), ["body", "label"]),
        ("POST", "/v1/keys", "admin", _key_body(metadata={"desk": "fx\x00"}), ["body", "metadata"]),
        ("POST", "/v1/keys", "admin", _key_body(nodes=["node-1\x00"]), ["body", "nodes", "0"]),
        ("PATCH", "/v1/keys/{kid}", "admin", {"label": "\x00"}, ["body", "label"]),
        ("PATCH", "/v1/keys/{kid}", "admin", {"metadata": {"a": "\x1b[2J"}}, ["body", "metadata"]),
        (
            "POST",
            "/v1/credentials",
            "admin",
            {"role": "auditor", "label": "a\x00"},
            ["body", "label"],
        ),
        (
            "POST",
            "/v1/webhooks",
            "admin",
            {"url": "https://h.example/\x00", "event_types": ["*"]},
            ["body", "url"],
        ),
        (
            "POST",
            "/v1/webhooks",
            "admin",
            {"url": "https://h.example/", "event_types": ["key.active\x00"]},
            ["body", "event_types", "0"],
        ),
        (
            "POST",
            "/v1/webhooks",
            "admin",
            {"url": "https://h.example/", "event_types": ["*"], "description": "x\x00"},
            ["body", "description"],
        ),
        (
            "POST",
            "/v1/sign-requests",
            "requester",
            {"key_id": "{kid}", "kind": "raw", "message": "00" * 32, "derivation_path": "m/0\x00"},
            ["body", "derivation_path"],
        ),
        (
            "POST",
            "/v1/policy/dry-run",
            "requester",
            {"key_id": "{kid}", "kind": "raw", "message": "00" * 32, "derivation_path": "m/\x00"},
            ["body", "derivation_path"],
        ),
        (
            "POST",
            "/v1/keys/{kid}/reshare",
            "admin",
            {"threshold": 2, "nodes": ["node-1", "node\x00"], "authorization": "a2"},
            ["body", "nodes", "1"],
        ),
    ],
)
def test_a_nul_in_a_body_field_is_a_422_naming_it(
    api: Api, method: str, url: str, role: str, body: dict[str, Any], loc: list[Any]
) -> None:
    kid = api.kid  # type: ignore[attr-defined]
    fill = {"{kid}": kid}
    url = url.replace("{kid}", kid)
    body = {k: fill.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    r = api.client.request(method, url, json=body, headers=api.h(role, idem="text-fields-1"))
    _named(r, loc)


def test_a_control_character_in_the_idempotency_key_is_a_422_naming_it(api: Api) -> None:
    r = api.client.post("/v1/keys", json=_key_body(), headers=api.h("admin", idem="retry\x01one"))
    _named(r, ["header", "Idempotency-Key"])


def test_a_nul_in_any_string_parameter_of_any_route_is_never_a_server_error(api: Api) -> None:
    """Generated from the OpenAPI document, so a route added later is covered: a NUL in each
    string path or query parameter, with the admin's and the requester's credential."""
    spec = api.client.get("/openapi.json").json()
    tried = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            params = [p for p in op.get("parameters", []) if "$ref" not in p]
            for p in params:
                if p["in"] not in ("path", "query") or p["schema"].get("type") != "string":
                    continue
                url = path
                for q in params:  # every other path parameter a well-formed id
                    if q["in"] == "path" and q is not p:
                        url = url.replace(
                            "{" + q["name"] + "}", "1" if "delivery" in q["name"] else "x"
                        )
                if p["in"] == "path":
                    url = url.replace("{" + p["name"] + "}", f"x{NUL}")
                else:
                    url = f"{url}?{p['name']}=x{NUL}"
                for role in ("admin", "requester"):
                    r = api.client.request(method, url, headers=api.h(role, idem="nul-sweep"))
                    tried += 1
                    assert r.status_code < 500, (method, url, role, r.status_code, r.text)
                    if r.status_code == 422 and r.json().get("errors"):
                        locs = [e["loc"] for e in r.json()["errors"]]
                        assert [p["in"], p["name"]] in [loc[:2] for loc in locs], (url, locs)
    assert tried >= 30
