"""The SDK's errors, retries and timeouts (issue 11, item 8): one exception class per
problem family, retries that re-send the same Idempotency-Key against a real loopback HTTP
server that fails the first attempts, redirects never taken as success, ``sign(timeout=)``
raising, webhook verification with the standardwebhooks package."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from custody import client as sdk
from custody.client import (
    AsyncCustodyClient,
    CustodyClient,
    CustodyError,
    Retries,
    SignTimeout,
)
from custody.examples import EXAMPLES

FAST = Retries(attempts=4, wait_initial=0.01, wait_max=0.05, timeout=10)
KEY = EXAMPLES["KeyOut"]["id"]


def _sign_request(status: str) -> dict[str, Any]:
    out = dict(EXAMPLES["SignRequestOut"])
    out["status"] = status
    if status != "signed":
        out["signature"] = None
        out["signers"] = None
    return out


class Server:
    """A small HTTP server on loopback; ``answer(handler, attempt)`` writes each answer and
    every request's method, path and headers are recorded."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler, int], None]) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                if n:
                    self.rfile.read(n)
                server.seen.append((self.command, self.path, dict(self.headers)))
                answer(self, len(server.seen))

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(h: BaseHTTPRequestHandler, status: int, body: Any, **headers: str) -> None:
    data = json.dumps(body).encode()
    h.send_response(status)
    ctype = "application/problem+json" if status >= 400 else "application/json"
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(data)))
    for k, v in headers.items():
        h.send_header(k.replace("_", "-"), v)
    h.end_headers()
    h.wfile.write(data)


def problem(status: int, slug: str) -> dict[str, Any]:
    return {"type": f"urn:tpwc:problem:{slug}", "title": slug, "status": status}


def _idem_keys(server: Server) -> list[str | None]:
    return [{k.lower(): v for k, v in h.items()}.get("idempotency-key") for _, _, h in server.seen]


@pytest.mark.parametrize("status", [503, 502, 429, 504])
def test_retry_resends_the_same_idempotency_key(status: int) -> None:
    def answer(h: BaseHTTPRequestHandler, attempt: int) -> None:
        if attempt <= 2:
            reply(h, status, problem(status, "nodes-unavailable"), Retry_After="0")
        else:
            reply(h, 201, _sign_request("signed"))

    with Server(answer) as srv, CustodyClient(srv.url, "t", retries=FAST) as c:
        sr = c.sign(KEY, kind="message", payload={"message": "0x68656c6c6f"})
    assert sr.status == "signed"
    keys = _idem_keys(srv)
    assert len(keys) == 3 and keys[0] and len(set(keys)) == 1, keys


def test_retry_after_a_dropped_connection_reuses_the_key() -> None:
    def answer(h: BaseHTTPRequestHandler, attempt: int) -> None:
        if attempt == 1:
            h.close_connection = True  # no answer at all: the client sees a transport error
            return
        reply(h, 201, _sign_request("signed"))

    with Server(answer) as srv, CustodyClient(srv.url, "t", retries=FAST) as c:
        assert c.sign(KEY, b"\x01", idempotency_key="mine-1").status == "signed"
    assert _idem_keys(srv) == ["mine-1", "mine-1"]


def test_retries_give_up_with_the_family_error() -> None:
    def answer(h: BaseHTTPRequestHandler, attempt: int) -> None:
        reply(h, 429, problem(429, "rate-limited"), Retry_After="0")

    with Server(answer) as srv, CustodyClient(srv.url, "t", retries=FAST) as c:
        with pytest.raises(sdk.RateLimited) as info:
            c.get_key(KEY)
    assert len(srv.seen) == FAST.attempts
    assert isinstance(info.value, CustodyError) and info.value.retry_after == 0


def test_no_retry_when_disabled_or_unsafe() -> None:
    def answer(h: BaseHTTPRequestHandler, attempt: int) -> None:
        reply(h, 503, problem(503, "database-busy"), Retry_After="0")

    with Server(answer) as srv, CustodyClient(srv.url, "t", retries=0) as c:
        with pytest.raises(sdk.Unavailable):
            c.get_key(KEY)
        assert len(srv.seen) == 1
    with Server(answer) as srv, CustodyClient(srv.url, "t", retries=FAST) as c:
        with pytest.raises(sdk.Unavailable):  # a POST without Idempotency-Key: sent once
            c.dry_run_policy(KEY, kind="message", payload={"message": "0x00"})
        assert len(srv.seen) == 1


async def test_async_retry_reuses_the_same_idempotency_key() -> None:
    def answer(h: BaseHTTPRequestHandler, attempt: int) -> None:
        if attempt == 1:
            reply(h, 503, problem(503, "nodes-unavailable"), Retry_After="0")
        else:
            reply(h, 201, _sign_request("signed"))

    with Server(answer) as srv:
        async with AsyncCustodyClient(srv.url, "t", retries=FAST) as c:
            sr = await c.sign(KEY, kind="message", payload={"message": "0x00"})
    keys = _idem_keys(srv)
    assert sr.status == "signed" and len(keys) == 2 and keys[0] == keys[1]


def test_a_redirect_is_never_a_success() -> None:
    def answer(h: BaseHTTPRequestHandler, attempt: int) -> None:
        h.send_response(307)
        h.send_header("Location", "/v1/keys/")
        h.send_header("Content-Length", "0")
        h.end_headers()

    with Server(answer) as srv, CustodyClient(srv.url, "t", retries=FAST) as c:
        with pytest.raises(sdk.UnexpectedResponse) as info:
            c.get_key("x")
    assert info.value.status == 307 and len(srv.seen) == 1


def test_a_2xx_that_is_not_the_model_is_an_error() -> None:
    def answer(h: BaseHTTPRequestHandler, attempt: int) -> None:
        reply(h, 200, {"hello": "world"})

    with Server(answer) as srv, CustodyClient(srv.url, "t") as c:
        with pytest.raises(sdk.UnexpectedResponse):
            c.get_key(KEY)


def test_sign_timeout_raises_with_the_last_state() -> None:
    def answer(h: BaseHTTPRequestHandler, attempt: int) -> None:
        reply(h, 202 if h.command == "POST" else 200, _sign_request("signing"))

    with Server(answer) as srv, CustodyClient(srv.url, "t", retries=FAST) as c:
        with pytest.raises(SignTimeout) as info:
            c.sign(KEY, b"\x01", timeout=0.3)
        assert info.value.request.status == "signing"
        assert isinstance(info.value, CustodyError)
        assert sum(1 for m, _, _ in srv.seen if m == "GET") >= 1
        # without waiting, the request as it stands, no error
        assert c.sign(KEY, b"\x01", wait=False).status == "signing"


async def test_async_sign_timeout_raises() -> None:
    def answer(h: BaseHTTPRequestHandler, attempt: int) -> None:
        reply(h, 202 if h.command == "POST" else 200, _sign_request("signing"))

    with Server(answer) as srv:
        async with AsyncCustodyClient(srv.url, "t", retries=FAST) as c:
            with pytest.raises(SignTimeout):
                await c.sign(KEY, b"\x01", timeout=0.2)


# -- against the coordinator itself: each family's class ---------------------------------


@pytest.fixture
def denying_api(tmp_path: Path) -> Iterator[Any]:
    """The demo policy as ``custody up`` installs it: raw requests are denied."""
    from custody.cluster import demo_policy
    from tests.api.conftest import make_api, treasury

    yield from make_api(tmp_path, policy=demo_policy(treasury()))


def test_problem_families_map_to_exception_classes(denying_api) -> None:  # noqa: ANN001
    from custody.cluster import ETH_LIMIT
    from tests.api.test_approvals import unsigned_tx

    api = denying_api
    kid = api.add_key("ed25519")

    def client(role: str) -> CustodyClient:
        token = api.tokens[role] if role else "not-a-token"
        return CustodyClient("http://testserver", token, http=TestClient(api.app))

    with client("requester") as c:
        with pytest.raises(sdk.PolicyDenied) as denied:
            c.sign(kid, b"\x01\x02")
        assert denied.value.status == 403 and denied.value.slug == "policy-denied"
        assert isinstance(denied.value, sdk.Forbidden)
        with pytest.raises(sdk.Forbidden) as forbidden:
            c.create_key("ed25519", 2)
        assert not isinstance(forbidden.value, sdk.PolicyDenied)
        with pytest.raises(sdk.NotFound):
            c.get_key("key_nope")
        with pytest.raises(sdk.NotFound) as unknown_key:
            c.sign("key_nope", kind="message", payload={"message": "0x00"})
        assert unknown_key.value.slug == "key-not-found"
        with pytest.raises(sdk.ValidationFailed) as invalid:
            c.sign(kid, "zz")  # not hex
        assert invalid.value.status == 422 and invalid.value.errors
        # Only a 2xx answer keeps its Idempotency-Key (a failed signing releases it, and
        # this app has no nodes): an evm-tx over the limit parks for approvals (202, kept).
        eth = api.add_key("ecdsa-secp256k1")
        big = {"tx": unsigned_tx(2 * ETH_LIMIT)}
        parked = c.sign(eth, kind="evm-tx", payload=big, idempotency_key="k1", wait=False)
        assert parked.status == "pending_approval"
        with pytest.raises(sdk.ValidationFailed) as reused:
            other = {"tx": unsigned_tx(3 * ETH_LIMIT)}
            c.sign(eth, kind="evm-tx", payload=other, idempotency_key="k1")
        assert reused.value.slug == "idempotency-mismatch"
    with client("") as c, pytest.raises(sdk.Unauthorized):
        c.get_key(kid)
    for cls in (sdk.Unauthorized, sdk.NotFound, sdk.Conflict, sdk.RateLimited, sdk.SignTimeout):
        assert issubclass(cls, CustodyError)


def test_error_for_falls_back_on_status_for_unknown_types() -> None:
    assert type(sdk.error_for(409, {"type": "urn:tpwc:problem:brand-new"})) is sdk.Conflict
    assert type(sdk.error_for(429, {})) is sdk.RateLimited
    assert type(sdk.error_for(500, {})) is sdk.ServerError
    assert type(sdk.error_for(418, {})) is CustodyError
    assert type(sdk.error_for(502, problem(502, "signing-failed"))) is sdk.SignFailed
    assert issubclass(sdk.CustodyUnreachable, sdk.Unavailable)


# -- webhook verification -----------------------------------------------------------------


def test_verify_webhook_with_the_standard() -> None:
    import base64

    from standardwebhooks.webhooks import Webhook

    from custody.webhooks_verify import WebhookInvalid, verify_webhook

    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    body = json.dumps({"type": "sign_request.signed", "data": {"id": "sr_1"}})
    now = dt.datetime.now(dt.UTC)
    headers = {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(int(now.timestamp())),
        "Webhook-Signature": Webhook(secret).sign("msg_1", now, body),
    }
    assert verify_webhook(body.encode(), headers, secret)["data"]["id"] == "sr_1"
    with pytest.raises(WebhookInvalid):
        verify_webhook(body.replace("sr_1", "sr_2"), headers, secret)
    with pytest.raises(WebhookInvalid):
        verify_webhook(body, {**headers, "Webhook-Signature": "garbage"}, secret)
    old = now - dt.timedelta(hours=1)
    stale = {
        **headers,
        "Webhook-Timestamp": str(int(old.timestamp())),
        "Webhook-Signature": Webhook(secret).sign("msg_1", old, body),
    }
    with pytest.raises(WebhookInvalid):
        verify_webhook(body, stale, secret)
    with pytest.raises(WebhookInvalid):
        verify_webhook(body, {}, secret)


def test_a_request_still_in_flight_is_asked_again_with_the_same_key() -> None:
    """409 idempotency-in-flight: the first attempt is still being processed; the repeat
    (same key) gets the stored answer. Any other 409 is a Conflict at once."""

    def answer(h: BaseHTTPRequestHandler, attempt: int) -> None:
        if attempt == 1:
            reply(h, 409, problem(409, "idempotency-in-flight"))
        else:
            reply(h, 201, _sign_request("signed"), Idempotent_Replayed="true")

    with Server(answer) as srv, CustodyClient(srv.url, "t", retries=FAST) as c:
        assert c.sign(KEY, b"\x01", idempotency_key="k-9").status == "signed"
    assert _idem_keys(srv) == ["k-9", "k-9"]

    def conflict(h: BaseHTTPRequestHandler, attempt: int) -> None:
        reply(h, 409, problem(409, "key-not-active"))

    with Server(conflict) as srv, CustodyClient(srv.url, "t", retries=FAST) as c:
        with pytest.raises(sdk.Conflict):
            c.sign(KEY, b"\x01")
    assert len(srv.seen) == 1
