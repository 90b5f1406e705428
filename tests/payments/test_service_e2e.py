"""The payment service as a real process against a real custody cluster (coordinator and
three signer nodes): book transfers signed by the threshold Ed25519 key, and the same
payment never paying twice across a SIGKILL of the payment service mid-payment.

Every signature is checked here with pynacl over the instruction bytes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import pytest
from sqlalchemy import create_engine, select

from custody import policy as pol
from custody.cluster import TREASURY
from custody.models import KeyOut
from payments.book import journal
from payments.worker import sign_idempotency_key
from tests.e2e.conftest import Live, current_governance, install_policy, running_cluster

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "paycore-e2e-" + "t" * 24


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as lv:
        yield lv


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PaymentService:
    def __init__(self, live: Live, d: Path, key: KeyOut | None = None) -> None:
        self.d = d
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        key = key or live.key("ed25519")
        self.key_id = key.id
        self.public_key = key.public_key or ""
        self.env = {
            **os.environ,
            "PAYMENTS_DATABASE_URL": f"sqlite:///{d / 'payments.db'}",
            "PAYMENTS_BOOK_DATABASE_URL": f"sqlite:///{d / 'book.db'}",
            "PAYMENTS_TOKEN": TOKEN,
            "PAYMENTS_PORT": str(self.port),
            "PAYMENTS_CUSTODY_URL": live.doc["api_url"],
            "PAYMENTS_CUSTODY_TOKEN": live.doc["credentials"]["requester"],
            "PAYMENTS_BOOK_KEY_ID": self.key_id,
            "PAYMENTS_WORKER_INTERVAL": "0.1",
            "PAYMENTS_FAULT_MARKER": str(d / "paused"),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def start(self, pause_at: str | None = None) -> None:
        env = dict(self.env)
        env.pop("PAYMENTS_FAULT_PAUSE_AT", None)
        if pause_at:
            env["PAYMENTS_FAULT_PAUSE_AT"] = pause_at
        log = (self.d / "payments.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - this interpreter, fixed module
            [sys.executable, "-m", "payments"], env=env, cwd=ROOT, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.d / "payments.log").read_text()[-3000:]
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("payment service did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.http.close()

    def post(self, path: str, body: dict[str, Any] | None = None, key: str = "") -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return self.http.post(path, json=body, headers=headers)

    def wait_status(self, pid: str, want: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            p = self.http.get(f"/v1/payments/{pid}").json()
            if p["status"] == want:
                return p
            assert p["status"] not in ("failed", "declined", "cancelled"), p
            assert time.monotonic() < deadline, p
            time.sleep(0.1)

    def book_entries(self, pid: str) -> list[Any]:
        eng = create_engine(f"sqlite:///{self.d / 'book.db'}")
        with eng.connect() as c:
            rows = c.execute(select(journal).where(journal.c.payment_id == pid)).all()
        eng.dispose()
        return rows


@pytest.fixture
def service(live: Live, tmp_path: Path) -> Iterator[PaymentService]:
    s = PaymentService(live, tmp_path)
    yield s
    s.stop()


def accounts(s: PaymentService, tag: str, funds: int) -> tuple[str, str]:
    a = s.post(
        "/v1/accounts", {"owner": f"a-{tag}", "asset": "USDC", "decimals": 2}, f"a-{tag}"
    ).json()["id"]
    b = s.post(
        "/v1/accounts", {"owner": f"b-{tag}", "asset": "USDC", "decimals": 2}, f"b-{tag}"
    ).json()["id"]
    assert (
        s.post(
            f"/v1/accounts/{a}/deposits", {"amount": funds, "reference": f"f-{tag}"}, f"d-{tag}"
        ).status_code
        == 201
    )
    return a, b


def verify_book_signature(s: PaymentService, entry: Any) -> None:
    """pynacl (libsodium), not our code, checks the threshold signature."""
    nacl.signing.VerifyKey(bytes.fromhex(s.public_key)).verify(
        bytes.fromhex(entry.instruction), bytes.fromhex(entry.signature)
    )


def test_payment_is_signed_by_custody_confirmed_settled_and_reconciled(
    service: PaymentService, live: Live
) -> None:
    s = service
    s.start()
    a, b = accounts(s, "happy", 100_00)
    r = s.post(
        "/v1/payments",
        {"account_id": a, "amount": 40_00, "destination": b, "rail": "book"},
        "happy-1",
    )
    assert r.status_code == 201 and r.json()["status"] == "authorized", r.json()
    pid = r.json()["id"]
    p = s.wait_status(pid, "confirmed")
    [entry] = s.book_entries(pid)
    verify_book_signature(s, entry)
    sr = live.requester.get_sign_request(p["sign_request_id"])
    assert sr.status == "signed" and sr.kind == "message" and sr.key_id == s.key_id
    stl = s.post("/v1/settlements").json()["items"]
    assert [x["payments"] for x in stl] == [[pid]]
    s.post(
        f"/v1/settlements/{stl[0]['id']}/confirmations", {"amount": 40_00, "reference": "stmt-1"}
    )
    rec = s.post("/v1/reconciliations").json()
    assert rec["breaks"] == [] and rec["reconciled"] == [pid]
    assert s.http.get(f"/v1/accounts/{b}").json()["balance"] == 40_00
    assert s.http.get(f"/v1/accounts/{a}").json()["balance"] == 60_00
    assert s.http.get("/v1/ledger/check").json() == {
        "sum_per_asset": {"USDC": 0},
        "replay_differences": [],
    }
    types = [e["type"] for e in s.http.get(f"/v1/payments/{pid}/events").json()]
    assert types == [
        "PaymentCreated", "PaymentAuthorized", "SignPrepared", "PaymentSigned",
        "PaymentBroadcast", "PaymentConfirmed", "PaymentSettled", "PaymentReconciled",
    ]  # fmt: skip


@pytest.mark.parametrize("pause_at", ["after-prepare", "after-sign-submit", "after-broadcast"])
def test_sigkill_mid_payment_then_restart_never_pays_twice(
    service: PaymentService, live: Live, pause_at: str
) -> None:
    s = service
    s.start(pause_at=pause_at)
    a, b = accounts(s, pause_at, 100_00)
    body = {"account_id": a, "amount": 30_00, "destination": b, "rail": "book"}
    pid = s.post("/v1/payments", body, f"kill-{pause_at}").json()["id"]
    marker = s.d / "paused"
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline, "the worker never reached " + pause_at
        time.sleep(0.05)
    assert marker.read_text().split() == [pause_at, pid]
    s.kill()  # SIGKILL: no cleanup, mid-payment
    s.start()  # the same database, no fault
    again = s.post("/v1/payments", body, f"kill-{pause_at}")  # the client retries too
    assert again.status_code == 200 and again.json()["id"] == pid
    s.wait_status(pid, "confirmed")
    entries = s.book_entries(pid)
    assert len(entries) == 1, entries  # paid once
    verify_book_signature(s, entries[0])
    # custody holds one sign request for this payment: the resubmission got the same one
    mine = [
        r for r in live.requester.list_sign_requests(key_id=s.key_id)
        if pid.encode().hex() in (r.payload or {}).get("message", "")
    ]  # fmt: skip
    assert len(mine) == 1, [r.id for r in mine]
    assert s.http.get(f"/v1/accounts/{a}").json()["balance"] == 70_00
    assert s.http.get("/v1/ledger/check").json()["replay_differences"] == []
    assert sign_idempotency_key(pid) == f"payment:{pid}:sign"


def _approve(live: Live, rid: str, i: int) -> None:
    """``custody approve`` as an approver runs it: a process with a dev approver's key file."""
    files = live.doc["dev_governance"]
    r = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "custody.cli", "approve", rid, "--yes",
         "--key-file", sorted(files["approvers"])[i],
         "--passphrase-file", files["approver_passphrase_file"],
         "--cluster", str(live.cluster.cluster_file)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_payment_waits_for_two_approvals_then_pays(live: Live, tmp_path: Path) -> None:
    """A policy that parks every ``message`` request of this key for 2 treasury approvals:
    the payment sits in awaiting_approval (funds held, nothing on the book) until two
    approvers sign, then goes on by itself."""
    key = live.admin.create_key("ed25519", 2)
    assert key.status == "active"
    cur, _ = current_governance(live)
    parked = pol.Rule(
        "book-four-eyes",
        "approve",
        kinds=frozenset({"message"}),
        keys=frozenset({key.id}),
        approvals=pol.Requirement("all", (pol.GroupQuorum(TREASURY, 2),)),
    )
    install_policy(
        live,
        pol.Policy(
            rules=(parked, *cur.policy.rules),
            allowlists=cur.policy.allowlists,
            wallets=cur.policy.wallets,
            approver_groups=cur.policy.approver_groups,
        ),
    )
    s = PaymentService(live, tmp_path, key)
    try:
        s.start()
        a, b = accounts(s, "four-eyes", 50_00)
        body = {"account_id": a, "amount": 20_00, "destination": b, "rail": "book"}
        pid = s.post("/v1/payments", body, "four-eyes").json()["id"]
        p = s.wait_status(pid, "awaiting_approval")
        assert s.book_entries(pid) == []
        assert s.http.get(f"/v1/accounts/{a}").json()["held"] == 20_00
        sr = live.requester.get_sign_request(p["sign_request_id"])
        assert sr.status == "pending_approval"
        _approve(live, sr.id, 0)
        time.sleep(0.5)
        assert s.http.get(f"/v1/payments/{pid}").json()["status"] == "awaiting_approval"
        _approve(live, sr.id, 1)
        s.wait_status(pid, "confirmed")
        [entry] = s.book_entries(pid)
        verify_book_signature(s, entry)
        acct = s.http.get(f"/v1/accounts/{a}").json()
        assert (acct["balance"], acct["held"]) == (30_00, 0)
    finally:
        s.stop()


def test_custody_refusing_to_sign_fails_the_payment_and_releases_its_funds(
    live: Live, tmp_path: Path
) -> None:
    key = live.admin.create_key("ed25519", 2)
    cur, _ = current_governance(live)
    deny = pol.Rule("book-denied", "deny", kinds=frozenset({"message"}), keys=frozenset({key.id}))
    install_policy(
        live,
        pol.Policy(
            rules=(deny, *cur.policy.rules),
            allowlists=cur.policy.allowlists,
            wallets=cur.policy.wallets,
            approver_groups=cur.policy.approver_groups,
        ),
    )
    s = PaymentService(live, tmp_path, key)
    try:
        s.start()
        a, b = accounts(s, "denied", 50_00)
        body = {"account_id": a, "amount": 20_00, "destination": b, "rail": "book"}
        pid = s.post("/v1/payments", body, "denied").json()["id"]
        deadline = time.monotonic() + 60
        while (p := s.http.get(f"/v1/payments/{pid}").json())["status"] != "failed":
            assert time.monotonic() < deadline, p
            time.sleep(0.1)
        assert p["reasons"][-1].startswith("custody refused to sign: 403"), p["reasons"]
        assert "book-denied" in p["reasons"][-1] or "denied" in p["reasons"][-1]
        acct = s.http.get(f"/v1/accounts/{a}").json()
        assert (acct["balance"], acct["held"]) == (50_00, 0)
        assert s.book_entries(pid) == []
    finally:
        s.stop()
