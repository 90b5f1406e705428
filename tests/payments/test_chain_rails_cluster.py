"""``custody up --with-payments`` (``Cluster(payments=True)``) with the chain rails: the
cluster creates the ethereum and bitcoin rails' keys on first run, the payment service runs
its in-process dev chains with those keys funded (``PAYMENTS_DEV_CHAINS``: the explicit
dev-only step), and the demo policy signs ether, the dev-chain test token and bitcoin to
its allowlisted destinations at once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from custody.client import CustodyClient
from custody.cluster import (
    DEMO_BTC_DESTINATIONS,
    DEMO_ETH_DESTINATIONS,
    DEV_ERC20,
)
from payments.service import DEV_ERC20_ADDRESS
from tests.payments.conftest import payments_cluster


def _wait(h: httpx.Client, pid: str, want: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        p: dict[str, Any] = h.get(f"/v1/payments/{pid}").json()
        if p["status"] == want:
            return p
        assert p["status"] not in ("failed", "declined", "cancelled"), p
        assert time.monotonic() < deadline, p
        time.sleep(0.2)


def test_dev_cluster_pays_on_its_ethereum_and_bitcoin_dev_chains(tmp_path: Path) -> None:
    assert DEV_ERC20 == DEV_ERC20_ADDRESS  # the policy names the token the dev chain deploys
    cluster = payments_cluster(tmp_path / "c")
    try:
        doc = cluster.start(timeout=180)
        pay = doc["payments"]
        d = tmp_path / "c" / "payments"
        ids = {r: (d / f"{r}-key-id").read_text().strip() for r in ("book", "ethereum", "bitcoin")}
        with CustodyClient(doc["api_url"], doc["credentials"]["admin"]) as admin:
            assert admin.get_key(ids["ethereum"]).scheme == "ecdsa-secp256k1"
            btc = admin.get_key(ids["bitcoin"])
            assert btc.scheme == "bip340" and btc.network == "regtest"
        h = httpx.Client(
            base_url=pay["url"], headers={"Authorization": f"Bearer {pay['token']}"}, timeout=30
        )
        cases = [
            ("ETH", 9, 100_000_000, DEMO_ETH_DESTINATIONS[0], "ethereum"),  # 0.1 ETH in gwei
            ("TPT", 6, 25 * 10**6, DEMO_ETH_DESTINATIONS[1], "ethereum"),
            ("BTC", 8, 1_000_000, DEMO_BTC_DESTINATIONS[2], "bitcoin"),
        ]
        pids = []
        for asset, decimals, amount, dest, rail in cases:
            body = {"owner": f"dev-{asset}", "asset": asset, "decimals": decimals}
            aid = h.post("/v1/accounts", json=body, headers={"Idempotency-Key": asset}).json()["id"]
            dep = {"amount": 3 * amount, "reference": f"seed-{asset}"}
            r = h.post(
                f"/v1/accounts/{aid}/deposits", json=dep, headers={"Idempotency-Key": f"d{asset}"}
            )
            assert r.status_code == 201, r.text
            p = {"account_id": aid, "amount": amount, "destination": dest, "rail": rail}
            r = h.post("/v1/payments", json=p, headers={"Idempotency-Key": f"p{asset}"})
            assert r.status_code == 201 and r.json()["status"] == "authorized", r.json()
            pids.append(r.json()["id"])
        for pid in pids:
            p = _wait(h, pid, "confirmed")
            assert p["rail_ref"]
        h.close()
    finally:
        cluster.stop()
