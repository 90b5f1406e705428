"""A real local cluster (coordinator + 3 signer-node processes on loopback) per test module.

Its genesis has the demo policy and, because these tests sign ``raw`` bytes, raw signing
enabled for every key (``custody up --allow-raw``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from custody.client import CustodyClient
from custody.cluster import Cluster, free_port_block
from custody.models import KeyOut


class Live:
    def __init__(self, cluster: Cluster, doc: dict) -> None:
        self.cluster = cluster
        self.doc = doc
        creds = doc["credentials"]
        self.admin = CustodyClient(doc["api_url"], creds["admin"])
        self.requester = CustodyClient(doc["api_url"], creds["requester"])
        self.auditor = CustodyClient(doc["api_url"], creds["auditor"])
        self.keys: dict[str, KeyOut] = {}

    def key(self, scheme: str) -> KeyOut:
        if scheme not in self.keys:
            k = self.admin.create_key(scheme, 2)
            assert k.status == "active", k
            self.keys[scheme] = k
        return self.keys[scheme]

    def close(self) -> None:
        for c in (self.admin, self.requester, self.auditor):
            c.close()


@contextlib.contextmanager
def running_cluster(d: Path) -> Iterator[Live]:
    """A real 3-node cluster under ``d``, stopped on the way out (setup failures too)."""
    cluster = Cluster(
        d,
        nodes=3,
        port=free_port_block(3),
        env={"CUSTODY_POOL_INTERVAL": "0.3", "CUSTODY_ROUND_TIMEOUT": "5"},
        allow_raw=True,
    )
    try:
        doc = cluster.start(timeout=90)
    except BaseException:
        cluster.stop()
        raise
    lv = Live(cluster, doc)
    try:
        yield lv
    finally:
        lv.close()
        cluster.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as lv:
        yield lv
