"""A real local cluster (coordinator + 3 signer-node processes on loopback) per test module.

Its genesis has the demo policy and, because these tests sign ``raw`` bytes, raw signing
enabled for every key (``custody up --allow-raw``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest

from custody import governance as gov
from custody import policy as pol
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


def current_governance(live: Live) -> tuple[gov.Governance, bytes]:
    """The active governance version (and its document) as the coordinator holds it."""
    doc = live.admin.http.get("/v1/governance").json()
    raw = bytes.fromhex(doc["document"])
    return gov.decode(raw).body, raw


def dev_officers(live: Live) -> dict[str, nacl.signing.SigningKey]:
    """The dev cluster's officers' keys (``custody up`` writes them under DIR/officers)."""
    d = live.cluster.data_dir / "officers"
    passphrase = (d / "passphrase").read_bytes()
    out = {}
    for f in sorted(d.glob("*.key")):
        officer, signer = gov.open_officer_key(f.read_bytes(), passphrase)
        out[officer.officer_id] = signer
    return out


def install_policy(live: Live, policy: pol.Policy) -> gov.Governance:
    """Propose the next governance version with ``policy``, sign it with a quorum of the
    dev officers and install it through the coordinator on every node."""
    cur, _ = current_governance(live)
    nxt = gov.unsigned(cur.successor(policy=policy))
    keys = dev_officers(live)
    for oid in sorted(keys)[: cur.quorum]:
        nxt = nxt.with_signature(keys[oid], oid)
    put = live.admin.http.put("/v1/governance", json={"document": nxt.encode().hex()})
    assert put.status_code == 200, put.text
    assert set(put.json()["nodes"].values()) == {"installed"}, put.json()
    return nxt.body


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
