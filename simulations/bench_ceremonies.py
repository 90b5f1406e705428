"""Key ceremonies over the service: ``python -m simulations.bench ceremonies [--json] [--quick]``.

A real local cluster of five nodes (``custody.cluster.Cluster``: the coordinator and five
node processes on loopback, each with its SoftHSM2 token and SQLCipher file). Each row is
the wall time of one ``POST /v1/keys/{id}/refresh`` or ``/reshare`` answered ``done`` (the
sessions relayed over HTTP, every node's done statement verified, the commit on every
node), i.e. what ``custody keys refresh|reshare`` waits for; the officers' authorization is
signed before the clock starts (opening the key files is Argon2id, not the ceremony).
Rows ``{"suite": "ceremonies", "scheme", "t", "n", "op", "median_ms", "runs"}``:

* ``refresh`` of a ``t``-of-``n`` key by its ``n`` holders (2-of-3, 3-of-5);
* ``reshare``: ``2-of-3 -> 2-of-3`` with one member replaced (3 dealers, 1 receiver),
  ``3-of-5 -> 3-of-5`` onto the same five (5 dealers), and ``2-of-3 -> 3-of-5`` (two
  receivers join); ``op`` names the move.

ECDSA ceremonies include the fresh pairwise base-OT setup of the resulting committee.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from custody.ceremony_cli import authorization_for, open_officers
from custody.client import CustodyClient
from custody.cluster import Cluster, free_port_block

SCHEMES = ("ed25519", "bip340", "ecdsa-secp256k1")
THREE = ["node-1", "node-2", "node-3"]
FIVE = [f"node-{i}" for i in range(1, 6)]
REPLACED = ["node-1", "node-2", "node-4"]


def _timed(admin: CustodyClient, path: str, body: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    r = admin.http.post(path, json=body, timeout=900)
    ms = (time.perf_counter() - t0) * 1000
    if r.status_code != 200 or r.json().get("status") != "done":
        raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
    return ms


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def run(quick: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        env = {"CUSTODY_POOL_INTERVAL": "5", "CUSTODY_ROUND_TIMEOUT": "60"}
        with Cluster(Path(d), nodes=5, port=free_port_block(5), env=env, allow_raw=True) as c:
            doc = c.start(timeout=180)
            signers = open_officers(c.cluster_file, None, None)
            with CustodyClient(doc["api_url"], doc["credentials"]["admin"]) as admin:

                def auth(kind: str, key_id: str, nodes: list[str] | None, t: int | None) -> str:
                    return authorization_for(
                        admin, kind, key_id, nodes, t, signers=signers, cluster=c.cluster_file
                    )

                for scheme in SCHEMES:
                    runs = 1 if quick else (2 if scheme == "ecdsa-secp256k1" else 3)
                    for t, nodes in ((2, THREE), (3, FIVE)):
                        key = admin.create_key(scheme, t, nodes, timeout=600)
                        path = f"/v1/keys/{key.id}/refresh"
                        ms = [
                            _timed(
                                admin, path, {"authorization": auth("refresh", key.id, None, None)}
                            )
                            for _ in range(runs)
                        ]
                        rows.append(_row(scheme, t, len(nodes), "refresh", ms))
                    for op, (t0, n0), (t1, n1) in (
                        ("reshare 2-of-3 -> 2-of-3 (1 replaced)", (2, THREE), (2, REPLACED)),
                        ("reshare 3-of-5 -> 3-of-5 (same 5)", (3, FIVE), (3, FIVE)),
                        ("reshare 2-of-3 -> 3-of-5", (2, THREE), (3, FIVE)),
                    ):
                        ms = []
                        for _ in range(runs):
                            key = admin.create_key(scheme, t0, n0, timeout=600)
                            body = {
                                "threshold": t1,
                                "nodes": n1,
                                "authorization": auth("reshare", key.id, n1, t1),
                            }
                            ms.append(_timed(admin, f"/v1/keys/{key.id}/reshare", body))
                        rows.append(_row(scheme, t1, len(n1), op, ms))
    return rows


def _row(scheme: str, t: int, n: int, op: str, ms: list[float]) -> dict[str, Any]:
    return {
        "suite": "ceremonies",
        "scheme": scheme,
        "t": t,
        "n": n,
        "op": op,
        "median_ms": round(_median(ms), 1),
        "runs": len(ms),
    }
