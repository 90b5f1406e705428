"""Issue 14: several coordinators, each its own identity key, pinned in governance by the
officer quorum (custody.governance ``coordinators``). Real node processes (SoftHSM2,
SQLCipher); every signature checked by pynacl, not by our code."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import typer
from nacl.signing import SigningKey, VerifyKey

from custody import governance as gov
from custody.nodeauth import sign_headers
from custody.signing import message_to_sign
from tests.nodes.conftest import Coordinator, NodeProc, NodeRefused, public_package


def _pin(name: str, key: SigningKey) -> gov.PinnedCoordinator:
    return gov.PinnedCoordinator(name, bytes(key.verify_key))


def _call_as(
    coord: Coordinator,
    node: NodeProc,
    key: SigningKey,
    method: str,
    path: str,
    body: object = None,
    *,
    name_key: bool = True,
) -> httpx.Response:
    """A request signed by ``key`` (naming it in X-Coordinator-Key, as api.nodes does)."""
    data = b"" if body is None else json.dumps(body).encode()
    headers = sign_headers(key, method, path, data, recipient=node.node_id)
    headers["content-type"] = "application/json"
    if name_key:
        headers["X-Coordinator-Key"] = bytes(key.verify_key).hex()
    return coord.http.request(method, node.url + path, content=data, headers=headers)


def _refused_everywhere(coord: Coordinator, key: SigningKey, *, name_key: bool) -> None:
    for node in coord.nodes.values():
        r = _call_as(coord, node, key, "GET", "/v1/governance", name_key=name_key)
        assert r.status_code == 401, (node.node_id, r.text)
        problem = r.json()
        assert problem["type"] == "urn:tpwc:node:coordinator-not-pinned", problem
        if name_key:
            assert bytes(key.verify_key).hex() in problem["detail"], problem
        assert "governance version" in problem["detail"], problem


def _sign_as(
    coord: Coordinator, key: SigningKey, key_id: str, rid: str, res: dict[str, object]
) -> None:
    """A FROST ed25519 signature driven entirely by ``key``, checked by pynacl."""
    saved = coord.key
    coord.key = key
    try:
        req = {"id": rid, "key_id": key_id, "kind": "raw", "message": rid.encode().hex()}
        pub = public_package(res, "ed25519")
        sig = coord.frost_sign("ed25519", key_id, [1, 2], req, pub)
    finally:
        coord.key = saved
    VerifyKey(bytes.fromhex(str(res["public_key"]))).verify(message_to_sign("ed25519", req), sig)


def test_pinned_coordinators_sign_a_stranger_and_a_retired_one_are_refused(
    cluster: Coordinator,
) -> None:
    node1 = cluster.nodes[1]
    genesis = gov.decode(cluster.genesis).body
    assert genesis.coordinators is None  # before the list: each node's init key
    stranger = SigningKey.generate()
    r = _call_as(cluster, node1, stranger, "GET", "/v1/governance")
    assert r.status_code == 401 and "init" in r.json()["detail"], r.text
    res = cluster.dkg("ed25519", "k-ed", 2, [1, 2, 3])

    # version 2 pins two coordinators: a (the init key) and b (its own key)
    key_a, key_b = cluster.key, SigningKey.generate()
    v2 = genesis.successor(coordinators=(_pin("coord-a", key_a), _pin("coord-b", key_b)))
    cluster.govern(v2)
    for node in cluster.nodes.values():
        assert cluster.call(node, "GET", "/v1/governance")["version"] == 2
    _sign_as(cluster, key_a, "k-ed", "by-a", res)
    _sign_as(cluster, key_b, "k-ed", "by-b", res)
    _refused_everywhere(cluster, stranger, name_key=True)
    _refused_everywhere(cluster, stranger, name_key=False)

    # version 3 retires coord-a (the key the nodes were initialised with): the init key
    # does not widen the list, so a is refused from the moment v3 is installed
    v3 = v2.successor(coordinators=(_pin("coord-b", key_b),))
    cluster.govern(v3)  # relayed by a, still pinned by v2 when it arrives
    _refused_everywhere(cluster, key_a, name_key=True)
    _refused_everywhere(cluster, key_a, name_key=False)
    _sign_as(cluster, key_b, "k-ed", "by-b-after", res)
    with pytest.raises(NodeRefused) as e:  # a cannot drive a DKG either
        cluster.dkg("ed25519", "k2", 2, [1, 2, 3])
    assert e.value.problem["type"] == "urn:tpwc:node:coordinator-not-pinned"


def test_nodes_refuse_a_coordinators_version_that_does_not_chain_or_is_under_signed(
    cluster: Coordinator,
) -> None:
    genesis = gov.decode(cluster.genesis).body
    rogue = SigningKey.generate()
    v2 = genesis.successor(coordinators=(_pin("rogue", rogue),))
    officers = cluster.officers
    under = officers.sign(v2, by=["officer-1"])  # one officer of a quorum of two
    unchained = officers.sign(replace(v2, previous=b"\x01" * 32))
    for node in cluster.nodes.values():
        with pytest.raises(NodeRefused) as e:
            cluster.call(node, "PUT", "/v1/governance", {"document": under.hex()})
        assert e.value.problem["type"] == "urn:tpwc:node:governance-under-signed"
        with pytest.raises(NodeRefused) as e:
            cluster.call(node, "PUT", "/v1/governance", {"document": unchained.hex()})
        assert e.value.problem["type"] in (
            "urn:tpwc:node:governance-unchained",
            "urn:tpwc:node:governance-malformed",
        ), e.value.problem
        assert cluster.call(node, "GET", "/v1/governance")["version"] == 1
        r = _call_as(cluster, node, rogue, "GET", "/v1/governance")
        assert r.status_code == 401, r.text  # the rogue's key was never installed


# -- the coordinators list in the document (custody.governance) ------------------------


def _body(**kw: object) -> gov.Governance:
    officer = SigningKey.generate()
    base = gov.Governance(
        cluster_id="c",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(gov.Officer("o1", bytes(officer.verify_key)),),
        quorum=1,
        roster=(),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_document_without_coordinators_keeps_its_encoding() -> None:
    body = _body()
    assert b"coordinators" not in body.encode()
    assert gov.decode_body(body.encode()) == body
    pinned = replace(body, coordinators=(_pin("a", SigningKey.generate()),))
    assert b"coordinators" in pinned.encode() and pinned.digest != body.digest
    assert gov.decode_body(pinned.encode()) == pinned


@pytest.mark.parametrize(
    ("coordinators", "named"),
    [
        ((), "coordinators: at least one"),
        (
            (gov.PinnedCoordinator("a", bytes(32)),),
            "coordinator a: public_key: not a valid Ed25519 point",
        ),
        ((gov.PinnedCoordinator("a b", bytes(32)),), "coordinators[0].name"),
    ],
)
def test_malformed_coordinator_lists_are_refused_by_field(
    coordinators: tuple[gov.PinnedCoordinator, ...], named: str
) -> None:
    with pytest.raises(gov.GovernanceError) as e:
        gov.check_body(_body(coordinators=coordinators))
    assert e.value.kind is gov.GovernanceErrorKind.MALFORMED and named in str(e.value)


def test_a_coordinator_key_shared_or_named_twice_is_refused() -> None:
    key = SigningKey.generate()
    body = _body()
    for coords, named in [
        ((_pin("a", key), _pin("a", SigningKey.generate())), "duplicate name a"),
        ((_pin("a", key), _pin("b", key)), "coordinator b: public key used by another"),
        (
            (gov.PinnedCoordinator("a", body.officers[0].public_key),),
            "coordinator a: public key is an officer's",
        ),
    ]:
        with pytest.raises(gov.GovernanceError) as e:
            gov.check_body(replace(body, coordinators=coords))
        assert named in str(e.value)


def test_officers_pin_and_retire_coordinators_with_the_cli(tmp_path: Path) -> None:
    """``custody governance genesis --coordinator NAME=HEX`` and ``propose
    --add-coordinator/--remove-coordinator`` (what docs/DEPLOY.md has the officers run)."""
    from typer.testing import CliRunner

    from custody.governance_cli import governance_app, officer_app

    app = typer.Typer()
    app.add_typer(governance_app, name="governance")
    app.add_typer(officer_app, name="officer")
    runner = CliRunner()
    env = {"CUSTODY_OFFICER_PASSPHRASE": "correct horse battery"}

    def run(*args: str, ok: bool = True) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert (result.exit_code == 0) is ok, result.output
        return result.output

    officer = tmp_path / "alice.key"
    run("officer", "enroll", "--id", "alice", "--out", str(officer))
    node = tmp_path / "node-1.json"
    nk = SigningKey.generate()
    node.write_text(
        json.dumps(
            {
                "node_id": "node-1",
                "party_id": 1,
                "sign_pk": bytes(nk.verify_key).hex(),
                "box_pk": bytes(nk.to_curve25519_private_key().public_key).hex(),
            }
        )
    )
    a, b = (bytes(SigningKey.generate().verify_key).hex() for _ in range(2))
    g = tmp_path / "v1.gov"
    run(
        "governance", "genesis", "--cluster-id", "prod", "--officer", str(officer),
        "--quorum", "1", "--node", str(node), "--coordinator", f"coordinator-1={a}",
        "--coordinator", f"coordinator-2={b}", "--out", str(g),
    )  # fmt: skip
    run("governance", "sign", str(g), "--key", str(officer), "--yes")
    shown = json.loads(run("governance", "show", str(g), "--json"))
    assert shown["coordinators"] == [
        {"name": "coordinator-1", "public_key": a},
        {"name": "coordinator-2", "public_key": b},
    ]
    v2 = tmp_path / "v2.gov"
    run("governance", "propose", str(g), "--remove-coordinator", "coordinator-2", "--out", str(v2))
    assert [c.name for c in gov.decode(v2.read_bytes()).body.coordinators or ()] == [
        "coordinator-1"
    ]
    # a key that is not a point, a missing name, a bad argument: refused by name
    bad = tmp_path / "bad.gov"
    out = run(
        "governance", "propose", str(g), "--add-coordinator", f"coordinator-3={'00' * 32}",
        "--out", str(bad), ok=False,
    )  # fmt: skip
    assert "coordinator coordinator-3: public_key" in out
    out = run(
        "governance", "propose", str(g), "--remove-coordinator", "nobody", "--out", str(bad),
        ok=False,
    )  # fmt: skip
    assert "no coordinator nobody" in out
    assert "NAME=HEX" in run(
        "governance", "propose", str(g), "--add-coordinator", "x", "--out", str(bad), ok=False
    )
