"""Several coordinators behind one address (issue 14): what one coordinator installs is
taken up by the others at their next sweep. The registry read the ``nodes`` table, and
the governance store its directory, only at start, so a second coordinator never signed
with a node enrolled (or under a version installed) after it started. A row whose identity
governance does not pin, and a version file that does not chain, are not taken up."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from api.coordinator.registry import NodeRegistry
from api.db import Database
from api.governance import GovernanceStore
from custody import governance as gov
from tests.api.test_postgres import approvals_policy

OFFICER = SigningKey.generate()


def _genesis(pins: list[gov.RosterNode]) -> bytes:
    officer = OFFICER
    body = gov.Governance(
        cluster_id="tpwc-dev",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(gov.Officer("test-officer", bytes(officer.verify_key)),),
        quorum=1,
        roster=tuple(pins),
        raw_signing_keys=frozenset(),
        policy=approvals_policy(),
    )
    return gov.unsigned(body).with_signature(officer, "test-officer").encode()


def _pin(node_id: str, party: int) -> gov.RosterNode:
    return gov.RosterNode(
        node_id,
        party,
        bytes(SigningKey.generate().verify_key),
        bytes(PrivateKey.generate().public_key),
    )


def _registry(tmp: Path, url: str, genesis: bytes) -> NodeRegistry:
    tmp.mkdir(parents=True, exist_ok=True)
    store = GovernanceStore(tmp)
    store.install_genesis(genesis)
    return NodeRegistry(Database(url), caller=None, governance=store)  # type: ignore[arg-type]


def test_a_node_enrolled_through_another_coordinator_is_taken_up_and_a_stranger_row_is_not(
    tmp_path: Path,
) -> None:
    pins = [_pin("node-1", 1), _pin("node-2", 2)]
    genesis = _genesis(pins)
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    a = _registry(tmp_path / "a", url, genesis)
    a.db.migrate()
    b = _registry(tmp_path / "b", url, genesis)
    a.load()
    b.load()
    assert a.nodes == b.nodes == {}
    one = pins[0]
    a._store_enrolment(
        "node-1", "https://n1:7101", 1, one.sign_pk.hex(), one.box_pk.hex(), "healthy", "admin"
    )
    # a row governance does not pin (node-2's keys swapped for a stranger's), written
    # around the enrolment checks
    stranger = _pin("node-2", 2)
    a._store_enrolment(
        "node-2",
        "https://n2:7102",
        2,
        stranger.sign_pk.hex(),
        stranger.box_pk.hex(),
        "healthy",
        "admin",
    )
    assert b.refresh() == ["node-1"]
    got = b.nodes["node-1"]
    assert (got.party_id, got.url, got.sign_pk) == (1, "https://n1:7101", one.sign_pk.hex())
    assert got.status == "unknown"  # health comes from b's own next check
    assert "node-2" not in b.nodes
    assert b.refresh() == []  # unchanged rows are left alone (their health is kept)
    a._store_enrolment(
        "node-1", "https://n1-moved:7101", 1, one.sign_pk.hex(), one.box_pk.hex(), "healthy", "a"
    )
    assert b.refresh() == ["node-1"] and b.nodes["node-1"].url == "https://n1-moved:7101"
    a.db.close()
    b.db.close()


def test_a_governance_version_installed_by_another_coordinator_is_taken_up_and_a_forged_one_is_not(
    tmp_path: Path,
) -> None:
    genesis = _genesis([_pin("node-1", 1)])
    a, b = GovernanceStore(tmp_path), GovernanceStore(tmp_path)  # one shared data directory
    assert b.refresh() == [] and b.current is None
    a.install_genesis(genesis)
    assert b.refresh() == [1] and b.current is not None and b.current.version == 1
    v1 = b.current
    v2 = gov.unsigned(v1.successor(roster=(*v1.roster, _pin("node-2", 2))))
    a.advance(v2.with_signature(OFFICER, "test-officer").encode())
    assert b.refresh() == [2]
    assert b.current.version == 2 and b.current.node("node-2") is not None
    assert b.document() == a.document()
    # a version 3 signed by a stranger, written into the directory around the API
    forged = gov.unsigned(b.current.successor()).with_signature(
        SigningKey.generate(), "test-officer"
    )
    (tmp_path / "governance" / "v3.gov").write_bytes(forged.encode())
    with pytest.raises(gov.GovernanceError):
        b.refresh()
    assert b.current.version == 2  # stays on the version it had
