"""Hostile input gets a 4xx problem document, never a 500: the known 500s (a lone
surrogate, a huge cursor, deep nesting) and hypothesis fuzzing of the coordinator's HTTP
bodies, cursors and headers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import Api

PROBLEM = "application/problem+json"
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def cursor_of(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def assert_problem(r: Any, *codes: int) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.headers["content-type"] == PROBLEM, r.text
        doc = r.json()
        assert doc["status"] == r.status_code and doc["type"].startswith("urn:tpwc:problem:")
    if codes:
        assert r.status_code in codes, r.text


def post_json(api: Api, path: str, raw: bytes, role: str, idem: str) -> Any:
    h = {**api.h(role, idem), "content-type": "application/json"}
    return api.client.post(path, headers=h, content=raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"key_id":"%s","kind":"payment","payload":{"memo":"\\ud800"}}',
        b'{"key_id":"%s","kind":"raw","message":"11","note":"\\udc00x"}',
        b'{"key_id":"%s","kind":"raw","message":"\\ud800"}',
    ],
)
def test_lone_surrogate_is_a_422(dev_api: Api, raw: bytes) -> None:
    kid = dev_api.add_key("ed25519")
    r = post_json(dev_api, "/v1/sign-requests", raw.replace(b"%s", kid.encode()), "requester", "u")
    assert_problem(r, 422)
    assert r.json()["type"].endswith(("invalid-text", "validation", "invalid-sign-request"))


def test_a_valid_surrogate_pair_is_fine(dev_api: Api) -> None:
    kid = dev_api.add_key("ed25519")
    raw = b'{"key_id":"%s","kind":"payment","payload":{"memo":"\\ud83d\\ude00"}}' % kid.encode()
    r = post_json(dev_api, "/v1/sign-requests", raw, "requester", "pair")
    assert r.status_code in (201, 202), r.text


@pytest.mark.parametrize(
    "cursor",
    [cursor_of({"s": 10**30}), cursor_of({"s": -1}), cursor_of({"s": 2**63}), "\u00ff", "!!"],
)
@pytest.mark.parametrize("path", ["/v1/keys", "/v1/sign-requests", "/v1/audit"])
def test_bad_cursors_are_a_422(api: Api, cursor: str, path: str) -> None:
    r = api.client.get(path, params={"cursor": cursor}, headers=api.h("admin"))
    assert_problem(r, 422)


def test_deep_nesting_is_refused(dev_api: Api) -> None:
    # (under the route's body limit, api.limits: 256 KiB)
    for raw in (b"[" * 100_000, b'{"a":' * 40_000 + b"1" + b"}" * 40_000):
        r = post_json(dev_api, "/v1/sign-requests", raw, "requester", "deep")
        assert_problem(r, 422)
        assert r.json()["type"].endswith("too-deep")
    kid = dev_api.add_key("ed25519")  # brackets inside strings do not count
    raw = b'{"key_id":"%s","kind":"payment","payload":{"memo":"%s"}}' % (kid.encode(), b"[" * 500)
    r = post_json(dev_api, "/v1/sign-requests", raw, "requester", "brackets")
    assert r.status_code in (201, 202), r.text


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "key_id": st.text() | JSON,
            "kind": st.sampled_from(["raw", "payment", "settlement"]) | st.text(),
            "message": st.text(alphabet="0123456789abcdef") | JSON,
            "payload": JSON,
        },
    ),
    extra=st.dictionaries(st.text(max_size=8), JSON, max_size=3),
)
def test_fuzz_sign_request_bodies(dev_api: Api, body: dict, extra: dict) -> None:
    body.setdefault("key_id", "key_" + "0" * 32)
    raw = json.dumps({**extra, **body}).encode()  # ensure_ascii: surrogates as escapes
    r = post_json(dev_api, "/v1/sign-requests", raw, "requester", f"f{hash(raw)}")
    assert_problem(r)


@FUZZ
@given(body=JSON, path=st.sampled_from(["/v1/keys", "/v1/audit/checkpoints"]))
def test_fuzz_admin_bodies(api: Api, body: Any, path: str) -> None:
    r = post_json(api, path, json.dumps(body).encode(), "admin", f"a{hash(str(body))}")
    assert_problem(r)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_fuzz_raw_bytes(dev_api: Api, raw: bytes) -> None:
    r = post_json(dev_api, "/v1/sign-requests", raw, "requester", "raw")
    assert_problem(r)


@FUZZ
@given(cursor=st.text(max_size=60) | JSON.map(cursor_of), limit=st.integers() | st.text())
def test_fuzz_cursors(api: Api, cursor: str, limit: Any) -> None:
    for path in ("/v1/keys", "/v1/sign-requests", "/v1/audit"):
        r = api.client.get(
            path, params={"cursor": cursor, "limit": str(limit)}, headers=api.h("auditor")
        )
        assert_problem(r)


LATIN1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=300)


@FUZZ
@given(auth=LATIN1, idem=LATIN1, ctype=LATIN1)
def test_fuzz_headers(api: Api, auth: str, idem: str, ctype: str) -> None:
    enc = {k: v.encode("latin-1") for k, v in (("i", idem), ("c", ctype))}
    h = {"authorization": auth.encode("latin-1"), "idempotency-key": enc["i"]}
    h["content-type"] = enc["c"]
    for method, path in (("GET", "/v1/keys"), ("POST", "/v1/keys"), ("GET", "/v1/audit/verify")):
        r = api.client.request(method, path, headers=h, content=b'{"scheme":"ed25519"}')
        assert_problem(r)
    r = api.client.post(
        "/v1/keys",
        headers={**api.h("admin"), "idempotency-key": enc["i"], "content-type": enc["c"]},
        content=b'{"scheme":"ed25519","threshold":2}',
    )
    assert_problem(r)
