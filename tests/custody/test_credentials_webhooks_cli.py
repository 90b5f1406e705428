"""``custody credentials ...`` and ``custody webhooks ...`` black box: the real command
(``python -m custody.cli``) against a real coordinator process (``python -m api init`` and
``serve``; no signer nodes are needed for these routes), and a real webhook receiver on
loopback that verifies every delivery with ``standardwebhooks``. The coordinator's log is
checked to hold no token and no webhook secret."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from custody.exitcodes import ExitCode
from tests.api.test_webhooks import Receiver, wait_for


@dataclass
class Coordinator:
    url: str
    admin: str
    requester: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    d = tmp_path_factory.mktemp("cli-coord")
    data = d / "coord"
    env = {
        **os.environ,
        "CUSTODY_WEBHOOK_ALLOW_LOOPBACK": "true",
        "CUSTODY_WEBHOOK_POLL_INTERVAL": "0.1",
        "CUSTODY_WEBHOOK_BACKOFF_BASE": "0.3",
    }
    init = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "api", "init", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    creds = json.loads(init.stdout)["credentials"]
    port = _free_port()
    log = d / "coordinator.log"
    with log.open("w") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "api", "serve", "--data-dir", str(data), "--port", str(port)]
            + ["--dev"],  # no TLS material: plain HTTP to nodes
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "coordinator did not start"
            time.sleep(0.2)
        yield Coordinator(url, creds["admin"], creds["requester"], log)
    finally:
        proc.terminate()
        proc.wait(20)


def cli(c: Coordinator, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODY_")}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "custody.cli",
            *args,
            "--api-url",
            c.url,
            "--token",
            token or c.admin,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def status_with(c: Coordinator, token: str) -> int:
    return httpx.get(
        c.url + "/v1/sign-requests", headers={"Authorization": f"Bearer {token}"}
    ).status_code


def test_credentials_lifecycle(coordinator: Coordinator) -> None:
    c = coordinator
    r = cli(c, "credentials", "create", "requester", "--principal", "ci-bot", "--label", "ci",
            "--wallet", "hot", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    cid, token = made["id"], made["token"]
    assert made["scope"] == {"keys": [], "wallets": ["hot"]} and made["principal"] == "ci-bot"
    assert status_with(c, token) == 200

    # list into a pipe: a header and one tab-separated line per credential, ids whole
    r = cli(c, "credentials", "list")
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert rows[0][:3] == ["id", "role", "principal"]
    assert [cid, "requester", "ci-bot"] in [row[:3] for row in rows[1:]]
    assert token not in r.stdout

    r = cli(c, "credentials", "show", cid, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == cid and "token" not in r.stdout

    # rotate: the new token is printed alone; the old one is refused at once
    r = cli(c, "credentials", "rotate", cid, "--token-only")
    assert r.returncode == 0, r.stderr
    new = r.stdout.strip()
    assert new.startswith("tpwc_") and new != token
    assert status_with(c, token) == 401 and status_with(c, new) == 200

    r = cli(c, "credentials", "scope", cid, "--unscoped", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["scope"] is None
    r = cli(c, "credentials", "scope", cid, "--unscoped", "--key", "key_x")
    assert r.returncode == ExitCode.USAGE and "not both" in r.stderr

    r = cli(c, "credentials", "revoke", cid, "--yes")
    assert r.returncode == 0, r.stderr
    assert status_with(c, new) == 401
    r = cli(c, "credentials", "show", cid)
    assert r.returncode == 0 and re.search(r"^revoked\s+yes$", r.stdout, re.M), r.stdout
    r = cli(c, "credentials", "rotate", cid)
    assert r.returncode == ExitCode.CONFLICT and "revoked" in r.stderr

    # errors: not found, empty id, a non-admin token; never a traceback
    r = cli(c, "credentials", "show", "cred_nope")
    assert r.returncode == ExitCode.NOT_FOUND and "Traceback" not in r.stderr
    r = cli(c, "credentials", "show", "")
    assert r.returncode == ExitCode.USAGE and "Traceback" not in r.stderr
    r = cli(c, "credentials", "list", token=c.requester)
    assert r.returncode == ExitCode.REFUSED and "403" in r.stderr
    r = cli(c, "credentials", "create", "root")
    assert r.returncode == ExitCode.USAGE

    # every change is in the audit log; no token is in the coordinator's log
    audit = httpx.get(
        c.url + "/v1/audit", params={"limit": 200}, headers={"Authorization": f"Bearer {c.admin}"}
    ).json()["items"]
    mine = [e["action"] for e in audit if e["subject"] == cid]
    assert sorted(mine) == sorted(
        ["credential.create", "credential.rotate", "credential.scope", "credential.revoke"]
    )
    logged = c.log.read_text()
    assert token not in logged and new not in logged


def test_webhooks_create_test_deliveries_redeliver(coordinator: Coordinator) -> None:
    c = coordinator
    rx = Receiver(fail_first=1)
    try:
        r = cli(c, "webhooks", "create", rx.url, "--event", "webhook.test", "--json")
        assert r.returncode == 0, r.stderr
        hook = json.loads(r.stdout)
        rx.secret = hook["secret"]
        wid = hook["id"]

        r = cli(c, "webhooks", "list")
        assert r.returncode == 0 and wid in r.stdout and rx.url in r.stdout
        assert rx.secret not in r.stdout

        r = cli(c, "webhooks", "test", wid, "--json")
        assert r.returncode == 0, r.stderr
        mid = json.loads(r.stdout)["message_id"]
        wait_for(lambda: rx.processed)  # after one failed attempt and its retry
        assert [code for *_, code in rx.requests] == [500, 200] and list(rx.processed) == [mid]
        assert rx.processed[mid]["type"] == "webhook.test"

        def delivered() -> list[dict[str, object]]:
            out = cli(c, "webhooks", "deliveries", wid, "--json")
            assert out.returncode == 0, out.stderr
            return [d for d in json.loads(out.stdout) if d["status"] == "delivered"]

        (d,) = wait_for(delivered)
        assert d["attempts"] == 2 and d["message_id"] == mid

        r = cli(c, "webhooks", "redeliver", wid, str(d["id"]))
        assert r.returncode == 0, r.stderr
        wait_for(lambda: rx.duplicates)
        assert rx.duplicates == [mid] and not rx.rejected

        r = cli(c, "webhooks", "create", "http://169.254.169.254/latest", "--event", "*")
        assert r.returncode == ExitCode.USAGE and "link-local" in r.stderr
        r = cli(c, "webhooks", "redeliver", wid, "999999")
        assert r.returncode == ExitCode.NOT_FOUND
        assert rx.secret.removeprefix("whsec_") not in c.log.read_text()

        # the attempts are counted on the coordinator's /metrics, by event type and outcome
        text = httpx.get(c.url + "/metrics", headers={"Authorization": f"Bearer {c.admin}"}).text
        counts = {
            (smp.labels["event_type"], smp.labels["outcome"]): smp.value
            for fam in text_string_to_metric_families(text)
            if fam.name == "custody_webhook_attempts"
            for smp in fam.samples
            if smp.name.endswith("_total")
        }
        assert counts[("webhook.test", "retry")] == 1
        assert counts[("webhook.test", "delivered")] == 2  # the retry and the redelivery
    finally:
        rx.close()
