"""Webhooks (issue 11, item 5), against a real HTTP receiver on loopback: every delivery
is verified with ``standardwebhooks.Webhook.verify``; the receiver fails the first attempt
and sees the retry (same ``webhook-id``, backoff between); a redelivery is de-duplicated
by its message id. The outbox is written in the state change's own transaction; secrets
are sealed at rest and never logged; URLs to link-local/metadata addresses are refused.

The app is the in-process coordinator (its delivery worker runs as in production); the
receiver is a real ``http.server`` on 127.0.0.1. Nothing is mocked."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks import WebhookVerificationError

from api import webhooks
from api.coordinator import SignResult
from api.db import SignRequest, Webhook, WebhookMessage
from custody.cluster import ETH_LIMIT
from tests.api.conftest import Api, make_api
from tests.api.coordinator.inflight import in_flight
from tests.api.test_approvals import b64, post_approval, post_tx, statement
from tests.api.test_audit_integrity import stored_digest
from tests.api.test_auth_problems import assert_problem

FAST = {
    "webhook_allow_loopback": True,
    "webhook_poll_interval": 0.05,
    "webhook_backoff_base": 0.3,
}


class Receiver:
    """A webhook receiver as an integrator writes one: verify, de-duplicate by
    ``webhook-id``, process once. ``fail_first`` answers 500 to that many requests."""

    def __init__(self, fail_first: int = 0, always_fail: bool = False) -> None:
        self.fail_first = fail_first
        self.always_fail = always_fail
        self.secret: str | None = None
        self.requests: list[tuple[float, dict[str, str], bytes, int]] = []
        self.processed: dict[str, dict[str, Any]] = {}
        self.duplicates: list[str] = []
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                code = rx.handle(headers, body)
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            n = len(self.requests)
            code = 500 if self.always_fail or n < self.fail_first else 200
            self.requests.append((time.monotonic(), headers, body, code))
            if code != 200:
                return code
            assert self.secret is not None
            try:
                payload = StandardWebhook(self.secret).verify(body, headers)
            except WebhookVerificationError as exc:
                self.rejected.append(str(exc))
                return 400
            mid = headers["webhook-id"]
            if mid in self.processed:
                self.duplicates.append(mid)
            else:
                self.processed[mid] = payload
            return 200

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(cond: Callable[[], Any], timeout: float = 15.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver(fail_first=1)
    yield rx
    rx.close()


@pytest.fixture
def hook_api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path, **FAST)


def subscribe(api: Api, rx: Receiver, events: list[str]) -> dict[str, Any]:
    r = api.client.post(
        "/v1/webhooks",
        headers=api.h("admin"),
        json={"url": rx.url, "event_types": events, "description": "test receiver"},
    )
    assert r.status_code == 201, r.text
    doc = r.json()
    rx.secret = doc["secret"]
    return doc  # type: ignore[no-any-return]


def post_sr(api: Api, kid: str, idem: str, message: str = "11" * 32) -> Any:
    return api.client.post(
        "/v1/sign-requests",
        headers=api.h("requester", idem),
        json={"key_id": kid, "kind": "raw", "message": message},
    )


def deliveries(api: Api, wid: str) -> list[dict[str, Any]]:
    r = api.client.get(f"/v1/webhooks/{wid}/deliveries", headers=api.h("admin"))
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def test_a_failed_delivery_is_retried_verified_and_a_redelivery_deduplicated(
    hook_api: Api, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    api, rx = hook_api, receiver
    caplog.set_level(logging.DEBUG)
    hook = subscribe(api, rx, ["sign_request.pending_approval"])
    kid = api.add_key()
    rid = post_sr(api, kid, "w1").json()["id"]  # the test policy parks it for approvals

    # the first attempt is answered 500; the retry comes after the backoff and verifies
    wait_for(lambda: rx.processed)
    assert [code for *_, code in rx.requests] == [500, 200]
    (t1, h1, b1, _), (t2, h2, b2, _) = rx.requests
    assert h1["webhook-id"] == h2["webhook-id"] and b1 == b2
    assert t2 - t1 >= FAST["webhook_backoff_base"] * 0.9
    assert not rx.rejected
    ((mid, payload),) = rx.processed.items()
    assert payload["type"] == "sign_request.pending_approval"
    assert payload["data"]["id"] == rid and payload["data"]["status"] == "pending_approval"
    assert payload["data"]["key_id"] == kid
    # a forged or re-signed body does not verify
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(rx.secret).verify(b1.replace(b"pending", b"signed!"), h1)  # type: ignore[arg-type]

    # the delivery log: two attempts, 500 then 200, delivered
    (d,) = wait_for(lambda: [x for x in deliveries(api, hook["id"]) if x["status"] == "delivered"])
    assert d["message_id"] == mid and d["attempts"] == 2
    assert [a["status_code"] for a in d["log"]] == [500, 200]
    assert d["event_type"] == "sign_request.pending_approval"

    # a redelivery carries the same webhook-id: the receiver de-duplicates it
    r = api.client.post(
        f"/v1/webhooks/{hook['id']}/deliveries/{d['id']}/redeliver", headers=api.h("admin")
    )
    assert r.status_code == 202, r.text
    wait_for(lambda: rx.duplicates)
    assert rx.duplicates == [mid] and list(rx.processed) == [mid] and len(rx.requests) == 3

    # the secret is sealed at rest and in no log line
    with api.app.state.db.session() as s:
        row = s.get(Webhook, hook["id"])
        assert row is not None and rx.secret not in row.secret
    with api.app.state.db.engine.connect() as conn:
        dump = " ".join(
            str(x)
            for t in ("webhooks", "webhook_messages", "webhook_deliveries", "audit")
            for x in conn.execute(text("SELECT * FROM " + t))  # noqa: S608 - fixed names
        )
    assert rx.secret is not None and rx.secret not in dump
    assert rx.secret.removeprefix("whsec_") not in caplog.text
    shown = api.client.get(f"/v1/webhooks/{hook['id']}", headers=api.h("admin")).json()
    assert "secret" not in shown
    listed = api.client.get("/v1/webhooks", headers=api.h("admin")).json()["items"]
    assert [w["id"] for w in listed] == [hook["id"]] and "secret" not in listed[0]


def test_events_for_failed_expired_and_only_subscribed_types(
    tmp_path: Path, receiver: Receiver
) -> None:
    """``sign_request.failed`` from the outcome writer (a dev cluster without nodes fails
    every signing), ``sign_request.expired`` from the expiry sweep; a subscription gets
    only its event types."""
    rx = receiver
    rx.fail_first = 0
    for api in make_api(tmp_path, raw=True, **FAST):
        hook = subscribe(api, rx, ["sign_request.failed", "sign_request.expired"])
        kid = api.add_key("bip340")
        failed = post_sr(api, kid, "f1")
        assert failed.status_code == 502, failed.text  # a failed signing is an error answer
        rid = failed.json()["sign_request"]["id"]
        wait_for(lambda: rx.processed)
        ((_, payload),) = rx.processed.items()
        assert payload["type"] == "sign_request.failed"
        assert payload["data"]["id"] == rid and payload["data"]["error"]["type"]
        # expiry: only pending_approval requests expire; make one by hand
        with api.app.state.db.session() as s:
            s.execute(
                text("UPDATE sign_requests SET status='pending_approval', expires_at=:t"),
                {"t": "2000-01-01 00:00:00+00:00"},
            )
        api.app.state.coordinator.expire_requests()
        wait_for(lambda: len(rx.processed) == 2)
        types = sorted(p["type"] for p in rx.processed.values())
        assert types == ["sign_request.expired", "sign_request.failed"]
        assert len(deliveries(api, hook["id"])) == 2


def test_the_outbox_is_written_in_the_state_changes_transaction(
    hook_api: Api, receiver: Receiver
) -> None:
    """When the outbox insert fails, the state change it reports is rolled back with it
    (no change without its event, and no event without its change)."""
    api = hook_api
    subscribe(api, receiver, ["sign_request.expired"])
    kid = api.add_key()
    rid = post_sr(api, kid, "t1").json()["id"]
    with api.app.state.db.session() as s:
        s.execute(
            text("UPDATE sign_requests SET expires_at=:t WHERE id=:id"),
            {"t": "2000-01-01 00:00:00+00:00", "id": rid},
        )
    with api.app.state.db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE webhook_messages RENAME TO webhook_messages_gone"))
    with pytest.raises(Exception, match="webhook_messages"):
        api.app.state.coordinator.expire_requests()
    with api.app.state.db.session() as s:
        assert s.scalar(select(SignRequest.status).where(SignRequest.id == rid)) == (
            "pending_approval"
        )
    with api.app.state.db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE webhook_messages_gone RENAME TO webhook_messages"))
    api.app.state.coordinator.expire_requests()
    with api.app.state.db.session() as s:
        assert s.scalar(select(SignRequest.status).where(SignRequest.id == rid)) == "expired"
        (msg,) = s.scalars(select(WebhookMessage)).all()
        assert msg.event_type == "sign_request.expired" and msg.payload["data"]["id"] == rid


def test_test_event_and_retries_give_up_after_the_maximum(tmp_path: Path) -> None:
    rx = Receiver(always_fail=True)
    try:
        for api in make_api(
            tmp_path, **{**FAST, "webhook_backoff_base": 0.05}, webhook_max_attempts=3
        ):
            hook = subscribe(api, rx, ["*"])
            r = api.client.post(f"/v1/webhooks/{hook['id']}/test", headers=api.h("admin"))
            assert r.status_code == 202, r.text
            assert r.json()["event_type"] == "webhook.test" and r.json()["status"] == "pending"
            (d,) = wait_for(
                lambda a=api, w=hook["id"]: [x for x in deliveries(a, w) if x["status"] == "failed"]
            )
            assert d["attempts"] == 3 and len(rx.requests) == 3
            assert [a["status_code"] for a in d["log"]] == [500, 500, 500]
            assert d["last_error"] == "answered 500" and d["next_attempt_at"] is None
    finally:
        rx.close()


def test_disabled_webhooks_wait_and_deleted_ones_are_gone(
    hook_api: Api, receiver: Receiver
) -> None:
    api, rx = hook_api, receiver
    rx.fail_first = 0
    hook = subscribe(api, rx, ["webhook.test"])
    r = api.client.patch(
        f"/v1/webhooks/{hook['id']}", headers=api.h("admin"), json={"enabled": False}
    )
    assert r.status_code == 200 and r.json()["enabled"] is False
    r = api.client.post(f"/v1/webhooks/{hook['id']}/test", headers=api.h("admin"))
    assert_problem(r, 409, "webhook-disabled")
    api.client.patch(f"/v1/webhooks/{hook['id']}", headers=api.h("admin"), json={"enabled": True})
    assert api.client.post(f"/v1/webhooks/{hook['id']}/test", headers=api.h("admin")).is_success
    wait_for(lambda: rx.processed)
    assert next(iter(rx.processed.values()))["data"] == {"webhook_id": hook["id"]}
    assert (
        api.client.delete(f"/v1/webhooks/{hook['id']}", headers=api.h("admin")).status_code == 204
    )
    assert_problem(
        api.client.get(f"/v1/webhooks/{hook['id']}", headers=api.h("admin")), 404, "not-found"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[fe80::1]/hook",  # IPv6 link-local
        "http://[::ffff:169.254.169.254]/",  # the same, IPv4-mapped
        "http://0.0.0.0:80/",  # unspecified
        "ftp://example.com/hook",
        "http://user:pw@example.com/",
        "not a url",
    ],
)
def test_ssrf_targets_are_refused(hook_api: Api, url: str) -> None:
    r = hook_api.client.post(
        "/v1/webhooks",
        headers=hook_api.h("admin"),
        json={"url": url, "event_types": ["sign_request.signed"]},
    )
    assert_problem(r, 422, "webhook-url-refused")


def test_loopback_needs_the_dev_setting_and_only_admins_manage_webhooks(api: Api) -> None:
    """The default settings (``webhook_allow_loopback`` off) refuse loopback URLs."""
    body = {"url": "http://127.0.0.1:9/hook", "event_types": ["sign_request.signed"]}
    r = api.client.post("/v1/webhooks", headers=api.h("admin"), json=body)
    assert_problem(r, 422, "webhook-url-refused")
    assert "loopback" in r.json()["detail"]
    r = api.client.post(
        "/v1/webhooks",
        headers=api.h("admin"),
        json={**body, "url": "http://localhost:9/hook"},
    )
    assert_problem(r, 422, "webhook-url-refused")
    bad = {**body, "event_types": ["sign_request.exploded"]}
    assert_problem(
        api.client.post("/v1/webhooks", headers=api.h("admin"), json=bad), 422, "unknown-event-type"
    )
    for role in ("requester", "approver", "auditor"):
        assert_problem(api.client.get("/v1/webhooks", headers=api.h(role)), 403, "forbidden")
        r = api.client.post("/v1/webhooks", headers=api.h(role), json=body)
        assert_problem(r, 403, "forbidden")


def test_the_outbox_payload_is_the_standard_webhooks_form(
    hook_api: Api, receiver: Receiver
) -> None:
    """``{"type", "timestamp", "data"}``; headers webhook-id / -timestamp / -signature."""
    api, rx = hook_api, receiver
    rx.fail_first = 0
    hook = subscribe(api, rx, ["webhook.test"])
    api.client.post(f"/v1/webhooks/{hook['id']}/test", headers=api.h("admin"))
    wait_for(lambda: rx.processed)
    _, headers, body, _ = rx.requests[0]
    doc = json.loads(body)
    assert set(doc) == {"type", "timestamp", "data"}
    assert headers["webhook-id"].startswith("msg_")
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["webhook-signature"].startswith("v1,")


def test_signed_and_rejected_events_from_the_outcome_and_the_approval_desk(
    hook_api: Api, receiver: Receiver
) -> None:
    """``sign_request.signed`` (with the signature) from the outcome writer's transaction,
    ``sign_request.rejected`` from the approval desk's."""
    api, rx = hook_api, receiver
    rx.fail_first = 0
    subscribe(api, rx, ["sign_request.signed", "sign_request.rejected"])
    kid, sk = api.add_signing_key()
    sid = post_sr(api, kid, "s1").json()["id"]  # parked: no event subscribed for that
    sig = sk.sign(bytes.fromhex("11" * 32)).signature  # type: ignore[attr-defined]
    in_flight(api, sid)  # the queue's in-flight state (issue 14)
    asyncio.run(
        api.app.state.coordinator.outcomes.record(
            sid,
            kid,
            SignResult(sig, None, [1, 2]),
            None,
            [],
            request_digest=stored_digest(api, sid),
        )
    )
    wait_for(lambda: rx.processed)
    ((_, signed),) = rx.processed.items()
    assert signed["type"] == "sign_request.signed"
    assert signed["data"]["id"] == sid and signed["data"]["signature"] == sig.hex()

    ecdsa = api.add_key()
    rid = post_tx(api, ecdsa, 5 * ETH_LIMIT, "r1").json()["id"]
    rej = b64(statement(api, rid, "dev-approver-2", decision="reject"))
    assert post_approval(api, rid, rej, "r2", path="rejections").status_code == 200
    wait_for(lambda: len(rx.processed) == 2)
    rejected = [p for p in rx.processed.values() if p["type"] == "sign_request.rejected"]
    assert [p["data"]["id"] for p in rejected] == [rid]
    assert rejected[0]["data"]["status"] == "rejected" and rejected[0]["data"]["error"]


def test_two_workers_on_one_database_send_each_attempt_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Two delivery workers (as two coordinators on one database run) sweeping the same due
    deliveries at the same moment: each attempt is claimed by one of them only."""
    rx = receiver
    rx.fail_first = 0
    for api in make_api(tmp_path, **FAST, webhooks_enabled=False):  # no worker of its own
        hook = subscribe(api, rx, ["webhook.test"])
        for _ in range(12):
            r = api.client.post(f"/v1/webhooks/{hook['id']}/test", headers=api.h("admin"))
            assert r.status_code == 202
        st = api.app.state

        async def race(st: Any = st) -> list[int]:
            workers = [webhooks.DeliveryWorker(st.settings, st.db, st.sealer) for _ in range(2)]
            try:
                return list(await asyncio.gather(*(w.sweep() for w in workers)))
            finally:
                for w in workers:
                    await w.http.aclose()

        seen = asyncio.run(race())
        # each worker reports the due deliveries it read: both read all 12 when their
        # reads overlap (the race this test is about); on a loaded machine the second may
        # read only after the first claimed every one (then it sees 0, and nothing is sent
        # twice either way: the assertions below)
        assert max(seen) == 12 and len(seen) == 2, seen
        ids = [h["webhook-id"] for _, h, _, _ in rx.requests]
        assert len(ids) == 12 and len(set(ids)) == 12 and not rx.duplicates
        assert all(d["status"] == "delivered" for d in deliveries(api, hook["id"]))


def test_key_events_come_with_the_dkg_result(hook_api: Api, receiver: Receiver) -> None:
    """``key.active`` and ``key.failed`` are written with the DKG result's own transaction
    (the ceremony's recorder, called as a finished DKG calls it)."""
    api, rx = hook_api, receiver
    rx.fail_first = 0
    subscribe(api, rx, ["key.active", "key.failed"])
    ceremony = api.app.state.coordinator.ceremony
    good = api.add_key("ed25519", status="pending")
    bad = api.add_key("bip340", status="pending")
    ceremony._record(good, "ed25519", 2, ["node-1", "node-2"], "ab" * 32, {}, None)
    problem = {"type": "urn:x", "title": "DKG failed", "status": 502}
    ceremony._record(bad, "bip340", 2, ["node-1", "node-2"], None, None, problem)
    wait_for(lambda: len(rx.processed) == 2)
    got = {p["data"]["id"]: p for p in rx.processed.values()}
    assert got[good]["type"] == "key.active" and got[good]["data"]["public_key"] == "ab" * 32
    assert got[bad]["type"] == "key.failed" and got[bad]["data"]["status"] == "failed"
