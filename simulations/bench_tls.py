"""What mutual TLS costs a local 2-of-3 cluster (docs/PERFORMANCE.md "Mutual TLS").

For plain HTTP (``--dev``) and for mutual TLS 1.3 (``Cluster(tls=True)``, what ``custody
up`` runs), each on a fresh data directory: the first start (provisioning included: with
TLS the dev CA, the coordinator's certificate and one ``tls-request`` process per node),
a second start of the same directory, then one Ed25519 key and 100 signatures one after
another, and 100 more 10 at a time. The coordinator's node connections are keep-alive
pools (``api.nodes.NodeCaller``), so a handshake is paid per connection, not per request:
the TCP connections the coordinator holds to the nodes are counted after the runs.

    .venv/bin/python -m simulations.bench_tls            # prints one JSON row per mode
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from custody.client import CustodyClient
from custody.cluster import Cluster, free_port_block

ENV = {"CUSTODY_POOL_INTERVAL": "0.3"}


def _node_connections(cluster: Cluster) -> int:
    """Established TCP connections to the node ports (only the coordinator opens them
    here), from /proc/net/tcp (Linux)."""
    ports = {cluster.port + i for i in range(1, cluster.nodes + 1)}
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port, state = int(fields[2].split(":")[1], 16), fields[3]
        n += state == "01" and remote_port in ports
    return n


def run(tls: bool, root: Path) -> dict[str, Any]:
    d = root / ("tls" if tls else "plain")
    row: dict[str, Any] = {"suite": "tls", "mode": "mtls-1.3" if tls else "plain-http"}
    c = Cluster(d, nodes=3, port=free_port_block(3), env=ENV, allow_raw=True, tls=tls)
    t0 = time.perf_counter()
    try:
        c.start(timeout=180)
        row["first_start_s"] = round(time.perf_counter() - t0, 2)
    finally:
        c.stop()
    c = Cluster(d, nodes=3, port=free_port_block(3), env=ENV, allow_raw=True, tls=tls)
    t0 = time.perf_counter()
    try:
        doc = c.start(timeout=180)
        row["start_s"] = round(time.perf_counter() - t0, 2)
        admin = CustodyClient(doc["api_url"], doc["credentials"]["admin"])
        req = CustodyClient(doc["api_url"], doc["credentials"]["requester"])
        key = admin.create_key("ed25519", 2)
        for i in range(5):  # warm-up: pools filled, connections open
            req.sign(key.id, b"warm %d" % i)
        lat = []
        t0 = time.perf_counter()
        for i in range(100):
            s = time.perf_counter()
            sr = req.sign(key.id, b"seq %d" % i)
            lat.append(time.perf_counter() - s)
            assert sr.status == "signed", sr
        row["seq_100_s"] = round(time.perf_counter() - t0, 2)
        row["seq_median_ms"] = round(statistics.median(lat) * 1000, 1)
        row["seq_p99_ms"] = round(sorted(lat)[98] * 1000, 1)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(10) as pool:
            out = list(pool.map(lambda i: req.sign(key.id, b"conc %d" % i), range(100)))
        assert all(sr.status == "signed" for sr in out)
        row["conc10_100_s"] = round(time.perf_counter() - t0, 2)
        row["coordinator_node_connections"] = _node_connections(c)
        admin.close()
        req.close()
    finally:
        c.stop()
    return row


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        for tls in (False, True):
            print(json.dumps(run(tls, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
