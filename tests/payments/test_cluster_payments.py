"""``custody up --with-payments`` (``Cluster(payments=True)``): the payment service starts
beside the coordinator and nodes with its own book key, cluster.json names it, and
``custody pay ... --cluster`` drives a payment to confirmed through it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from custody.cli import app
from tests.payments.conftest import payments_cluster


def test_cluster_starts_the_payment_service_and_custody_pay_uses_it(tmp_path: Path) -> None:
    cluster = payments_cluster(tmp_path / "c")
    try:
        doc = cluster.start(timeout=120)
        pay = doc["payments"]
        assert set(pay) == {"url", "token"} and "payments" in doc["pids"]
        h = httpx.Client(base_url=pay["url"], headers={"Authorization": f"Bearer {pay['token']}"})
        ids = []
        for owner in ("x", "y"):
            body = {"owner": owner, "asset": "EUR", "decimals": 2}
            ids.append(
                h.post("/v1/accounts", json=body, headers={"Idempotency-Key": owner}).json()["id"]
            )
        dep = {"amount": 900, "reference": "seed"}
        assert (
            h.post(
                f"/v1/accounts/{ids[0]}/deposits", json=dep, headers={"Idempotency-Key": "s"}
            ).status_code
            == 201
        )
        cj = str(cluster.cluster_file)
        r = CliRunner().invoke(
            app,
            [
                "pay",
                "create",
                "--account",
                ids[0],
                "--amount",
                "300",
                "--to",
                ids[1],
                "--cluster",
                cj,
                "--json",
            ],
        )
        assert r.exit_code == 0, r.output
        pid = json.loads(r.output)["id"]
        deadline = time.monotonic() + 60
        while True:
            r = CliRunner().invoke(app, ["pay", "show", pid, "--cluster", cj, "--json"])
            status = json.loads(r.output)["status"]
            if status == "confirmed":
                break
            assert status in ("authorized", "awaiting_approval", "signed", "broadcast"), r.output
            assert time.monotonic() < deadline, r.output
            time.sleep(0.2)
        r = CliRunner().invoke(app, ["pay", "settle", "--cluster", cj, "--json"])
        assert r.exit_code == 0 and json.loads(r.output)["items"][0]["payments"] == [pid]
        r = CliRunner().invoke(app, ["pay", "reconcile", "--cluster", cj])
        assert r.exit_code == 6 and "no confirmation" in r.output  # the settlement is open
    finally:
        cluster.stop()
