"""End-to-end benchmark: signing through the HTTP API of a local 2-of-3 cluster.

Starts a cluster (coordinator + 3 signer-node processes on loopback), creates one key per
scheme, warms the preprocessing pools (FROST commitments, ECDSA presignatures), then
measures ``POST /v1/sign-requests`` until the answer carries the signature, at concurrency
1, 8 and 32 (asyncio + httpx). Rows: ``{"suite": "e2e", "scheme", "t", "n", "op": "sign",
"concurrency", "median_ms", "p99_ms", "throughput_per_s", "runs", "failed"}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from custody.client import AsyncCustodyClient, CustodyClient
from custody.cluster import Cluster, free_port_block

SCHEMES = ("ed25519", "bip340", "ecdsa-secp256k1")
CONCURRENCY = (1, 8, 32)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def _measure(api_url: str, token: str, key_id: str, scheme: str, conc: int,
                   total: int) -> dict[str, Any]:
    lat: list[float] = []
    failed = 0
    counter = iter(range(total))
    http = httpx.AsyncClient(base_url=api_url, timeout=60,
                             limits=httpx.Limits(max_connections=conc + 4,
                                                 max_keepalive_connections=conc + 4))
    async with AsyncCustodyClient(api_url, token, http=http) as c:
        async def worker() -> None:
            nonlocal failed
            for i in counter:
                m = b"bench %d %f" % (i, time.time())
                msg = hashlib.sha256(m).digest() if scheme == "ecdsa-secp256k1" else m
                t0 = time.perf_counter()
                r = await c.sign(key_id, msg)
                dt = time.perf_counter() - t0
                if r["status"] == "signed":
                    lat.append(dt * 1000)
                else:
                    failed += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall = time.perf_counter() - start
    return {"median_ms": round(statistics.median(lat), 2) if lat else None,
            "p99_ms": round(_pct(lat, 0.99), 2) if lat else None,
            "throughput_per_s": round(len(lat) / wall, 1), "runs": len(lat), "failed": failed}


def _wait_pools(c: CustodyClient, seconds: float) -> None:
    time.sleep(seconds)  # background refill runs every pool_interval


def run(quick: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as d:
        env = {"CUSTODY_PRESIG_TARGET": "64" if not quick else "16",
               "CUSTODY_FROST_BATCH": "128", "CUSTODY_FROST_LOW_WATER": "96"}
        with Cluster(Path(d), nodes=3, port=free_port_block(3), env=env) as cluster:
            doc = cluster.start(timeout=120)
            creds = doc["credentials"]
            with CustodyClient(doc["api_url"], creds["admin"]) as admin:
                keys = {}
                for scheme in SCHEMES:
                    try:
                        k = admin.create_key(scheme, 2)
                    except Exception as e:  # noqa: BLE001 - a scheme the nodes lack
                        k = {"status": "failed", "error": str(e)}
                    if k["status"] == "active":
                        keys[scheme] = k["id"]
                _wait_pools(admin, 3.0 if quick else 8.0)
            for scheme, key_id in keys.items():
                for conc in CONCURRENCY:
                    total = (max(10, conc * 2) if quick else max(60, conc * 8))
                    res = asyncio.run(_measure(doc["api_url"], creds["requester"], key_id,
                                               scheme, conc, total))
                    rows.append({"suite": "e2e", "scheme": scheme, "t": 2, "n": 3,
                                 "op": "sign", "concurrency": conc, **res})
                    if scheme == "ecdsa-secp256k1":
                        time.sleep(2.0 if quick else 5.0)  # let the presignature pool refill
    return rows
