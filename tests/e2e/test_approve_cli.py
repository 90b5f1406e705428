"""``custody approve`` / ``custody reject`` as an approver runs them (a process, the dev
approvers' key files from cluster.json) against a real cluster: the decoded intent is shown
in plain words, two approvals get the transaction signed (eth-account recovers it), and a
coordinator that shows the approver something other than the payload it relays (played by
an HTTP server in front of the real one that rewrites its answers) gets nothing signed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import rlp
from eth_account import Account

from custody.cluster import DEMO_ETH_DESTINATIONS, ETH_LIMIT
from tests.e2e.conftest import Live

DEST = DEMO_ETH_DESTINATIONS[0]
ECDSA = "ecdsa-secp256k1"


@pytest.fixture(scope="module")
def live(shared_live: Live) -> Live:
    """This module's keys on the session's shared cluster (tests/e2e/conftest.py
    ``shared_live``): it only makes its own keys and signs, under the genesis's demo policy."""
    return shared_live


def unsigned_tx(value: int, nonce: int, to: str = DEST) -> str:
    fields = [1, nonce, 10**9, 3 * 10**9, 21_000, bytes.fromhex(to[2:]), value, b"", []]
    return "0x02" + rlp.encode(fields).hex()


def pending(live: Live, value: int, nonce: int) -> str:
    key = live.key(ECDSA)
    sr = live.requester.sign(
        key.id, kind="evm-tx", payload={"tx": unsigned_tx(value, nonce)}, wait=False
    )
    assert sr.status == "pending_approval", sr
    return sr.id


def cli(live: Live, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    files = live.doc["dev_governance"]
    return subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "custody.cli", *args, "--passphrase-file",
         files["approver_passphrase_file"]],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200", **env},
    )  # fmt: skip


def key_file(live: Live, i: int) -> str:
    return sorted(live.doc["dev_governance"]["approvers"])[i]


def genesis_file(live: Live) -> str:
    return str(live.doc["dev_governance"]["genesis"])


def cluster_json(live: Live) -> str:
    return str(live.cluster.cluster_file)


def test_approve_shows_the_intent_in_plain_words_and_two_approvals_sign(live: Live) -> None:
    rid = pending(live, 2 * ETH_LIMIT + ETH_LIMIT // 2, 0)
    # without --yes the approver is asked; answering no signs nothing
    no = cli(live, "approve", rid, "--key-file", key_file(live, 0), "--cluster",
             cluster_json(live), stdin="n\n")  # fmt: skip
    assert no.returncode == 1 and "nothing signed" in no.stderr, no.stdout + no.stderr
    assert live.auditor.get_sign_request(rid).approval.approvals == []  # type: ignore[union-attr]

    one = cli(live, "approve", rid, "--key-file", key_file(live, 0), "--yes", "--cluster",
              cluster_json(live), "--governance", genesis_file(live))  # fmt: skip
    assert one.returncode == 0, one.stdout + one.stderr
    out = one.stdout
    for shown in (
        "send 2.5 ETH",
        DEST,
        "chain id 1 (Ethereum mainnet)",
        "at most 0.000063 ETH",  # 21 000 gas at 3 gwei
        "data",
        "payments-bot",  # the initiator: custody up's requester principal
        "version 1",
        "eth-over-limit",
        "2 of treasury",
        "2 more from treasury",
        "recomputed here from the payload",
    ):
        assert shown in out, (shown, out)
    assert f"approved as dev-approver-1: request {rid} is pending_approval" in out
    assert "1 more from treasury" in out

    two = cli(live, "approve", rid, "--key-file", key_file(live, 1), "--yes", "--cluster",
              cluster_json(live))  # fmt: skip
    assert two.returncode == 0, two.stdout + two.stderr
    assert "approved as dev-approver-2" in two.stdout
    for _ in range(300):
        sr = live.auditor.get_sign_request(rid)
        if sr.status != "signing":
            break
        time.sleep(0.1)
    assert sr.status == "signed", sr
    assert sr.result is not None
    address = live.auditor.get_key(sr.key_id).addresses["ethereum"]
    assert Account.recover_transaction(sr.result.signed_tx) == address

    # after it left pending_approval: refused, with the coordinator's reason
    late = cli(live, "approve", rid, "--key-file", key_file(live, 2), "--yes", "--cluster",
               cluster_json(live))  # fmt: skip
    assert late.returncode == 4 and "does not wait for approvals" in late.stderr


def test_reject_rejects(live: Live) -> None:
    rid = pending(live, 4 * ETH_LIMIT, 1)
    r = cli(live, "reject", rid, "--key-file", key_file(live, 2), "--yes", "--cluster",
            cluster_json(live))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"rejected as dev-approver-3: request {rid} is rejected" in r.stdout
    sr = live.auditor.get_sign_request(rid)
    assert sr.status == "rejected" and sr.signature is None


class LyingCoordinator:
    """An HTTP server in front of the real coordinator that rewrites the sign request it
    shows (``rewrite(doc)``) and records every POST (answering 500: nothing gets through)."""

    def __init__(self, upstream: str, rewrite: Callable[[dict[str, Any]], None]) -> None:
        self.posts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                r = httpx.get(
                    upstream + self.path,
                    headers={"Authorization": self.headers["Authorization"]},
                    timeout=30,
                )
                doc = r.json()
                if self.path.startswith("/v1/sign-requests/"):
                    rewrite(doc)
                data = json.dumps(doc).encode()
                self.send_response(r.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                outer.posts.append(self.path)
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LyingCoordinator:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token(live: Live) -> Iterator[str]:
    yield live.doc["credentials"]["approver"]


def test_a_coordinator_showing_another_intent_gets_nothing_signed(live: Live, token: str) -> None:
    rid = pending(live, 3 * ETH_LIMIT, 2)
    other = unsigned_tx(ETH_LIMIT // 10, 2)  # what a liar would like the approver to see

    def other_summary(doc: dict[str, Any]) -> None:  # the summary says 0.1 ETH elsewhere
        doc["approval"]["summary"]["value"] = str(ETH_LIMIT // 10)
        doc["approval"]["summary"]["to"] = DEMO_ETH_DESTINATIONS[1]

    def other_payload(doc: dict[str, Any]) -> None:  # shows another tx, same digest claimed
        doc["payload"] = {"tx": other}
        doc.pop("message", None)
        doc["message"] = ""

    def other_initiator(doc: dict[str, Any]) -> None:
        doc["approval"]["initiator"] = "dev-approver-1"

    def other_governance(doc: dict[str, Any]) -> None:  # checked against the approver's copy
        doc["approval"]["governance_digest"] = "ab" * 32

    def other_rule(doc: dict[str, Any]) -> None:  # the approver's policy says another rule
        doc["approval"]["decision"]["rule_id"] = "token-over-limit"

    genesis = ["--governance", live.doc["dev_governance"]["genesis"]]
    for rewrite, says, extra in (
        (other_summary, "summary differs", []),
        (other_payload, "intent digest", []),
        (other_initiator, "initiators", []),
        (other_governance, "your document is version 1", genesis),
        (other_rule, "not approve (token-over-limit)", genesis),
    ):
        with LyingCoordinator(live.doc["api_url"], rewrite) as liar:
            r = cli(live, "approve", rid, "--key-file", key_file(live, 0), "--yes",
                    "--api-url", liar.url, "--token", token, *extra)  # fmt: skip
        assert r.returncode == 4, r.stdout + r.stderr  # ExitCode.REFUSED
        assert "refused, nothing signed" in r.stderr and says in r.stderr, r.stderr
        assert liar.posts == []
    sr = live.auditor.get_sign_request(rid)
    assert sr.status == "pending_approval" and sr.approval is not None
    assert sr.approval.approvals == []


def test_key_file_of_an_officer_is_refused(live: Live) -> None:
    rid = pending(live, 2 * ETH_LIMIT, 3)
    officer = live.doc["dev_governance"]["officers"][0]
    r = cli(live, "approve", rid, "--key-file", officer, "--yes", "--cluster",
            cluster_json(live))  # fmt: skip
    assert r.returncode == 2 and "officer key file" in r.stderr, r.stderr
    assert Path(officer).stat().st_mode & 0o077 == 0


def test_the_demos_policy_flow(live: Live) -> None:
    """What ``custody demo`` shows after the scheme table, on this cluster (which enables
    raw signing: the raw step is signed here; tests/api/test_approvals.py sees it denied)."""
    from custody.client import CustodyClient  # noqa: PLC0415
    from custody.demo import policy_flow  # noqa: PLC0415

    with CustodyClient(live.doc["api_url"], live.doc["credentials"]["approver"]) as approver:
        steps = policy_flow(live.admin, live.requester, approver, live.doc)
    assert [s["status"] for s in steps] == ["signed", "signed", "signed"], steps
    assert all(s["verified"] for s in steps), steps
    assert "pending_approval (needs 2 of treasury)" in steps[2]["policy"]
    assert "dev-approver-1, dev-approver-2" in steps[2]["policy"]
