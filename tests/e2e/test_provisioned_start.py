"""A copy of a provisioned cluster starts without re-running ``api init``
(``Cluster._provisioned``): the coordinator keys and credentials come from its
``cluster.json`` only while every part the first run made is there; anything missing
sends the start back through the first run's provisioning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from custody.cluster import Cluster
from tests.e2e.conftest import clone_cluster


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "cluster"
    clone_cluster(d)
    return d


def test_a_copy_of_the_template_is_recognised_as_provisioned(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    doc = json.loads((d / "cluster.json").read_text())
    known = Cluster(d, nodes=3)._provisioned()
    assert known is not None
    keys, creds = known
    assert keys == {"coordinator": bytes.fromhex(doc["coordinator_public_keys"]["coordinator"])}
    assert creds == doc["credentials"] and set(creds) >= {"admin", "requester"}
    assert len(keys["coordinator"]) == 32


def test_anything_missing_means_a_first_run_provisioning(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    cluster_json = (d / "cluster.json").read_text()
    doc = json.loads(cluster_json)

    def provisioned(nodes: int = 3, more: tuple[str, ...] = ()) -> bool:
        return Cluster(d, nodes=nodes, more_coordinators=more)._provisioned() is not None

    assert provisioned()
    assert not provisioned(nodes=4)  # node-4 was never made
    assert not provisioned(more=("coordinator-2",))  # nor a second coordinator
    # no recorded key (a cluster.json of an earlier release), or a malformed one
    for bad in ({}, {"coordinator": "zz"}, {"coordinator": None}, {"other": "00" * 32}):
        (d / "cluster.json").write_text(json.dumps({**doc, "coordinator_public_keys": bad}))
        assert not provisioned(), bad
    (d / "cluster.json").write_text(cluster_json)
    assert provisioned()
    db = d / "coordinator" / "coordinator.db"
    db.rename(d / "away.db")  # the coordinator's database is gone: init makes a new one
    assert not provisioned()
    (d / "away.db").rename(db)
    (d / "coordinator" / "hsm.json").rename(d / "hsm.json")  # its token config is gone
    assert not provisioned()
    (d / "hsm.json").rename(d / "coordinator" / "hsm.json")
    shutil.rmtree(d / "node-2")
    assert not provisioned()
    (d / "cluster.json").unlink()
    assert not provisioned()
