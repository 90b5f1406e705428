"""Issue 9, item 1: governance is the node's trust anchor (real node processes, SoftHSM2,
SQLCipher). Every attack fails closed with a precise problem document, culprits named."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from custody import governance as gov
from tests.nodes.conftest import (
    INITIATOR,
    Coordinator,
    NodeProc,
    NodeRefused,
    Officers,
    cli,
    public_package,
    roster_node,
)


def _refused(exc: pytest.ExceptionInfo[NodeRefused], status: int, kind: str) -> dict:
    assert exc.value.status == status, exc.value.problem
    assert exc.value.problem["type"] == f"urn:tpwc:node:{kind}", exc.value.problem
    return exc.value.problem


def _rogue(party: int, node_id: str | None = None) -> dict[str, object]:
    return {
        "node_id": node_id or f"rogue-{party}",
        "party_id": party,
        "sign_pk": bytes(SigningKey.generate().verify_key).hex(),
        "box_pk": bytes(PrivateKey.generate().public_key).hex(),
    }


def _dkg_spec(key_id: str, parties: list[int]) -> dict[str, object]:
    return {
        "session_id": secrets.token_hex(32),
        "kind": "dkg",
        "key_id": key_id,
        "scheme": "ed25519",
        "threshold": 2,
        "participants": parties,
    }


def test_trust_refuses_a_genesis_that_pins_another_identity_or_lacks_its_quorum(
    tmp_path: Path, coordinator_key: SigningKey, officers: Officers
) -> None:
    node = NodeProc(tmp_path / "node-1", 1, coordinator_key)
    node.init()
    shown = cli("identity", "--data-dir", str(node.data_dir))
    assert shown.returncode == 0 and json.loads(shown.stdout) == node.info
    # the roster pins node-1 with someone else's keys (an attacker's genesis)
    other = officers.sign(officers.genesis_body([_rogue(1, "node-1")]))
    r = node.trust(other)
    assert r.returncode == 1 and "identity-mismatch" in r.stderr, r.stderr
    # pinned right, but signed by one officer of a quorum of two
    body = officers.genesis_body([node.info])
    r = node.trust(officers.sign(body, by=["officer-1"]))
    assert r.returncode == 1 and "governance-under-signed" in r.stderr, r.stderr
    # without governance the node serves, but takes part in nothing (fail closed)
    node.start()
    try:
        coord = Coordinator(coordinator_key, [node])
        with pytest.raises(NodeRefused) as e:
            coord.call(node, "POST", "/v1/sessions", _dkg_spec("k1", [1, 2]))
        _refused(e, 409, "governance-missing")
        with pytest.raises(NodeRefused) as e:
            coord.call(node, "POST", "/v1/frost/commitments", {"key_id": "k1", "count": 1})
        assert e.value.status in (404, 409)
        # and the coordinator cannot make a node trust its own genesis over HTTP
        good = officers.sign(body)
        with pytest.raises(NodeRefused) as e:
            coord.call(node, "PUT", "/v1/governance", {"document": good.hex()})
        _refused(e, 409, "governance-missing")
        assert coord.call(node, "GET", "/v1/governance") == {"installed": False}
    finally:
        node.stop()
    r = node.trust(good)
    assert r.returncode == 0, r.stderr
    r = node.trust(officers.sign(officers.genesis_body([node.info], frozenset({"x"}))))
    assert r.returncode == 1 and "installed once" in r.stderr


def test_governance_versions_forged_undersigned_unchained_skipped_rolled_back(
    cluster: Coordinator,
) -> None:
    genesis = gov.decode(cluster.genesis).body
    n1 = cluster.nodes[1]
    v2 = genesis.successor(raw_signing_keys=genesis.raw_signing_keys | {"v2-key"})
    stranger = Officers(cluster_id=genesis.cluster_id)
    attacks = {
        "forged": (stranger.sign(v2), 403, "governance-under-signed", "invalid signature"),
        "under-signed": (
            cluster.officers.sign(v2, ["officer-2"]),
            403,
            "governance-under-signed",
            "1 valid",
        ),
        "unchained": (
            cluster.officers.sign(gov.Governance(**{**v2.__dict__, "previous": bytes(range(32))})),
            409,
            "governance-unchained",
            "names previous",
        ),
        "skipped": (
            cluster.officers.sign(v2.successor()),
            409,
            "governance-unchained",
            "skips version 2",
        ),
        "malformed": (b"\xa0not-cbor", 422, "governance-malformed", "document"),
        "other cluster": (
            Officers(cluster_id="elsewhere").sign(
                Officers(cluster_id="elsewhere").genesis_body([])
            ),
            409,
            "governance-wrong-cluster",
            "elsewhere",
        ),
    }
    for name, (doc, status, kind, words) in attacks.items():
        with pytest.raises(NodeRefused) as e:
            cluster.call(n1, "PUT", "/v1/governance", {"document": doc.hex()})
        problem = _refused(e, status, kind)
        assert words in problem["detail"], (name, problem)
    assert cluster.call(n1, "GET", "/v1/governance")["version"] == 1
    doc2 = cluster.govern(v2)
    again = cluster.call(n1, "PUT", "/v1/governance", {"document": doc2.hex()})
    assert again["version"] == 2 and again["changed"] is False  # a relay retry is harmless
    with pytest.raises(NodeRefused) as e:
        cluster.call(n1, "PUT", "/v1/governance", {"document": cluster.genesis.hex()})
    _refused(e, 409, "governance-rollback")
    # the highest version survives a restart (stored in the node's database, re-verified)
    n1.stop()
    n1.start()
    st = cluster.call(n1, "GET", "/v1/governance")
    assert st["version"] == 2 and "v2-key" in st["raw_signing_keys"]


def test_rogue_peers_repointed_identities_and_non_roster_committees_are_refused(
    cluster: Coordinator,
) -> None:
    n1 = cluster.nodes[1]
    honest = [
        {k: n.info[k] for k in ("node_id", "party_id", "sign_pk", "box_pk")}
        for n in cluster.nodes.values()
    ]
    # enrolling an attacker's node
    with pytest.raises(NodeRefused) as e:
        cluster.call(n1, "PUT", "/v1/peers", {"peers": [*honest, _rogue(4)]})
    problem = _refused(e, 403, "not-in-roster")
    assert problem["culprits"] == [4] and "rogue-4" in problem["detail"]
    # re-pointing node-3 to a new identity
    repointed = [*honest[:2], _rogue(3, "node-3")]
    with pytest.raises(NodeRefused) as e:
        cluster.call(n1, "PUT", "/v1/peers", {"peers": repointed})
    assert _refused(e, 403, "not-in-roster")["culprits"] == [3]
    # a key committee with a non-roster party, on every honest node of it
    spec = _dkg_spec("k-rogue", [1, 2, 4])
    for n in (cluster.nodes[1], cluster.nodes[2]):
        with pytest.raises(NodeRefused) as e:
            cluster.call(n, "POST", "/v1/sessions", spec)
        assert _refused(e, 403, "not-in-roster")["culprits"] == [4]


def test_a_member_removed_or_rekeyed_by_governance_retires_the_key_committee(
    cluster: Coordinator,
) -> None:
    res = cluster.dkg("ed25519", "k1", 2, [1, 2, 3])
    pub = public_package(res, "ed25519")
    req = {"id": "before", "key_id": "k1", "kind": "raw", "message": "01"}
    assert cluster.frost_sign("ed25519", "k1", [1, 2], req, pub)
    genesis = gov.decode(cluster.genesis).body
    n3 = genesis.node("node-3")
    assert n3 is not None
    # the officers re-key node-3 (say, its host was rebuilt): the old identity's share
    # must no longer sign, even though party 3 is still in the roster
    rekeyed = roster_node(_rogue(3, "node-3"))
    v2 = genesis.successor(
        roster=tuple(n if n.node_id != "node-3" else rekeyed for n in genesis.roster)
    )
    cluster.govern(v2)
    for p in (1, 2):
        with pytest.raises(NodeRefused) as e:
            cluster.call(
                cluster.nodes[p], "POST", "/v1/frost/commitments", {"key_id": "k1", "count": 1}
            )
        problem = _refused(e, 403, "not-in-roster")
        assert problem["culprits"] == [3] and "node-3" in problem["detail"]
    # a removed member: sessions with it are refused, new committees without it work
    v3 = v2.successor(roster=tuple(n for n in v2.roster if n.node_id != "node-3"))
    doc3 = cluster.officers.sign(v3)
    for p in (1, 2):
        cluster.call(cluster.nodes[p], "PUT", "/v1/governance", {"document": doc3.hex()})
    with pytest.raises(NodeRefused) as e:
        cluster.call(cluster.nodes[1], "POST", "/v1/sessions", _dkg_spec("k2", [1, 2, 3]))
    assert _refused(e, 403, "not-in-roster")["culprits"] == [3]
    spec = {**_dkg_spec("k2", [1, 2])}
    states = cluster.run_session(spec, parties=[1, 2])
    assert all(s["status"] == "done" for s in states.values()), states


def test_raw_signing_only_for_keys_governance_enables(cluster: Coordinator) -> None:
    """A stolen coordinator key driving the nodes directly gets no signature over
    arbitrary bytes: ``kind: raw`` is refused for a key not in raw_signing_keys."""
    res = cluster.dkg("ed25519", "not-raw", 2, [1, 2, 3])
    pub = public_package(res, "ed25519")
    req = {"id": "steal", "key_id": "not-raw", "kind": "raw", "message": "de" * 32}
    with pytest.raises(NodeRefused) as e:
        cluster.frost_sign("ed25519", "not-raw", [1, 2], req, pub)
    problem = _refused(e, 403, "raw-not-enabled")
    assert "not-raw" in problem["detail"]
    pay = {
        "id": "p1",
        "key_id": "not-raw",
        "kind": "payment",
        "payload": {"to": "acct-9", "amount": "10", "asset": "USD"},
        "initiator": INITIATOR,
    }
    assert cluster.frost_sign("ed25519", "not-raw", [1, 2], pay, pub)
