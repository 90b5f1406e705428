"""Resharing through real node processes (signer_nodes.ceremonies, issue 13).

One module-scoped cluster of five nodes (parties 1..5, all in the genesis roster). For each
scheme a key made 2-of-3 by parties 1..3 is reshared to 3-of-5 (parties 4 and 5 join as
receivers) and back to 2-of-3 with party 3 replaced by party 4; after each step the key
signs (verified with PyNaCl / coincurve) under the unchanged public key, the departing
members delete their shares at the commit, and a departed member that kept its share is
refused by the new committee. Every ceremony needs the officers' authorization: missing,
under-signed, forged, expired, replayed, or a coordinator that changes the committee,
threshold or version after the officers signed, is refused by every node with a stable
code. A node SIGKILLed during a resharing loses nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from typing import Any

import cbor2
import httpx
import pytest
from coincurve import PublicKey
from nacl.signing import SigningKey

from custody import governance as gov
from mpc import dkls23
from mpc.groups import SECP256K1
from tests.nodes.ceremony_auth import authorize
from tests.nodes.conftest import (
    Coordinator,
    NodeProc,
    NodeRefused,
    Officers,
    public_package,
    slow_short,
)
from tests.nodes.test_refresh_cluster import frost_verify

SCHEMES = ["ed25519", "bip340", "ecdsa-secp256k1"]
ALL = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def five(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """Five running nodes under one genesis (the module's one cluster start)."""
    root = tmp_path_factory.mktemp("reshare")
    key = SigningKey.generate()
    officers = Officers()
    nodes = [NodeProc(root / f"node-{i}", i, key) for i in ALL]
    try:
        for n in nodes:
            n.init()
        # raw signing for every key of this module (the keys are made per test)
        body = officers.genesis_body([n.info for n in nodes], raw_keys=frozenset({gov.ALL_KEYS}))
        genesis = officers.sign(body)
        for n in nodes:
            r = n.trust(genesis)
            assert r.returncode == 0, r.stderr
        for n in nodes:
            n.start(wait=False)
        for n in nodes:
            n.wait_ready()
        coord = Coordinator(key, nodes)
        coord.officers, coord.genesis = officers, genesis
        coord.enroll()
        yield coord
    finally:
        for n in nodes:
            n.stop()


def reshare_spec(
    key_id: str,
    scheme: str,
    threshold: int,
    participants: list[int],
    old: dict[str, Any],
    network: str | None = None,
) -> dict[str, Any]:
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "reshare",
        "key_id": key_id,
        "scheme": scheme,
        "threshold": threshold,
        "participants": sorted(participants),
        "old_verifying_shares": old["verifying_shares"],
    }
    if network is not None:
        spec["network"] = network
    return spec


def auth(
    c: Coordinator,
    spec: dict[str, Any],
    pk: str,
    version: int,
    committee: list[int],
    previous: int,
    **kw: Any,
) -> str:
    return authorize(
        c.officers.keys,
        c.officers.cluster_id,
        spec,
        pk,
        version,
        committee=committee,
        previous_threshold=previous,
        **kw,
    )


def reshare(
    c: Coordinator,
    key_id: str,
    scheme: str,
    pk: str,
    old: dict[str, Any],
    version: int,
    threshold: int,
    committee: list[int],
    dealers: list[int],
    commit_to: list[int] | None = None,
    **kw: Any,
) -> dict[int, Any]:
    """Run an authorized resharing among ``dealers | committee`` and commit it on
    ``commit_to`` (default: every party). Returns each party's result."""
    parts = sorted(set(dealers) | set(committee))
    spec = reshare_spec(key_id, scheme, threshold, parts, old)
    spec["authorization"] = auth(c, spec, pk, version, committee, old["min_signers"], **kw)
    res = c.run_session(spec)
    assert all(r["status"] == "done" for r in res.values()), res
    results = {p: r["result"] for p, r in res.items()}
    commit(c, key_id, results, commit_to if commit_to is not None else parts)
    return results


def commit(c: Coordinator, key_id: str, results: dict[int, Any], parties: list[int]) -> None:
    sid = next(iter(results.values()))["outcome"]["session_id"]
    sigs = {str(p): r["signature"] for p, r in results.items()}
    for p in parties:
        out = c.call(
            c.nodes[p], "POST", f"/v1/keys/{key_id}/commit", {"session_id": sid, "signatures": sigs}
        )
        assert out["status"] == "committed", out


def presign(c: Coordinator, key_id: str, signers: list[int], t: int) -> dict[str, Any]:
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "ecdsa-presign",
        "key_id": key_id,
        "scheme": "ecdsa-secp256k1",
        "threshold": t,
        "participants": signers,
    }
    res = c.run_session(spec)
    assert all(r["status"] == "done" for r in res.values()), res
    return dict(next(iter(res.values()))["result"])


def ecdsa_sign(c: Coordinator, key_id: str, signers: list[int], t: int, pk: str, tag: str) -> None:
    pre = presign(c, key_id, signers, t)
    public = dkls23.PresignaturePublic(
        bytes.fromhex(pre["presignature_id"]),
        bytes.fromhex(pre["dkls23_key_id"]),
        bytes.fromhex(pre["session_id"]),
        tuple(pre["participants"]),
        SECP256K1.decode_point(bytes.fromhex(pre["R"])),
    )
    digest = hashlib.sha256(tag.encode()).digest()
    req = {**raw(key_id, tag), "message": digest.hex()}
    partials = []
    for p in signers:
        r = c.call(
            c.nodes[p],
            "POST",
            "/v1/ecdsa/sign",
            {"key_id": key_id, "presignature_id": pre["presignature_id"], "request": req},
        )
        partials.append(dkls23.PartialSignature.from_bytes(bytes.fromhex(r["partial"]), sender=p))
    point = SECP256K1.decode_point(bytes.fromhex(pk))
    sig = dkls23.combine_signature(public, partials, digest, point)
    # independent verifier: libsecp256k1 through coincurve
    assert PublicKey(bytes.fromhex(pk)).verify(sig.to_der(), digest, hasher=None)


def sign(
    c: Coordinator, scheme: str, key_id: str, signers: list[int], res: dict[str, Any], tag: str
) -> None:
    """One signature by ``signers`` under the key's public package ``res``, verified
    independently (PyNaCl for Ed25519, coincurve for BIP-340 and ECDSA)."""
    pk = res["public_key"]
    if scheme == "ecdsa-secp256k1":
        ecdsa_sign(c, key_id, signers, res["min_signers"], pk, tag)
        return
    req = raw(key_id, tag)
    frost_verify(
        scheme, pk, req, c.frost_sign(scheme, key_id, signers, req, public_package(res, scheme))
    )


def refused_by(c: Coordinator, parties: list[int], spec: dict[str, Any], code: str) -> None:
    """Every one of ``parties`` refuses to start ``spec`` with 403 ``code``."""
    for p in parties:
        with pytest.raises(NodeRefused) as e:
            c.call(c.nodes[p], "POST", "/v1/sessions", spec)
        assert e.value.status == 403, (p, e.value.problem)
        assert e.value.problem["type"] == f"urn:tpwc:node:{code}", (p, e.value.problem)


def raw(key_id: str, tag: str) -> dict[str, Any]:
    """A raw sign request for ``tag`` (its id made of the tag's hash: ids are id-safe)."""
    rid = "r-" + hashlib.sha256(f"{key_id}/{tag}".encode()).hexdigest()[:24]
    return {"id": rid, "key_id": key_id, "kind": "raw", "message": tag.encode().hex()}


def key_id_for(scheme: str) -> str:
    return "k-" + scheme


@pytest.mark.parametrize("scheme", SCHEMES)
def test_reshare_2of3_to_3of5_and_back_with_a_member_replaced(
    five: Coordinator, scheme: str
) -> None:
    kid = key_id_for(scheme)
    dkg = five.dkg(scheme, kid, 2, [1, 2, 3])
    pk = dkg["public_key"]
    sign(five, scheme, kid, [1, 3], dkg, "before")

    # 2-of-3 -> 3-of-5: parties 4 and 5 hold nothing yet and join as receivers
    up = reshare(five, kid, scheme, pk, dkg, 1, 3, ALL, [1, 2, 3])
    new = up[4]
    assert all(r["public_key"] == pk and r["share_version"] == 2 for r in up.values())
    assert all(r["verifying_shares"] == new["verifying_shares"] for r in up.values())
    assert sorted(map(int, new["verifying_shares"])) == ALL and new["min_signers"] == 3
    assert all(r["member"] for r in up.values())
    sign(five, scheme, kid, [3, 4, 5], new, "3-of-5")
    sign(five, scheme, kid, [1, 2, 5], new, "3-of-5 again")

    # 3-of-5 -> 2-of-3, party 3 replaced by party 4 (3 and 5 deal, then leave); the
    # threshold drops, which the officers state explicitly
    down = reshare(five, kid, scheme, pk, new, 2, 2, [1, 2, 4], ALL, lower_threshold=True)
    last = down[1]
    assert all(r["public_key"] == pk and r["share_version"] == 3 for r in down.values())
    assert sorted(map(int, last["verifying_shares"])) == [1, 2, 4]
    assert [p for p, r in sorted(down.items()) if not r["member"]] == [3, 5]
    for signers in ([1, 4], [2, 4], [1, 2]):
        sign(five, scheme, kid, signers, last, f"2-of-3 {signers}")
    # the departed members deleted their shares
    for p in (3, 5):
        with pytest.raises(NodeRefused) as e:
            five.call(five.nodes[p], "POST", "/v1/frost/commitments", {"key_id": kid, "count": 1})
        assert e.value.status == 404 and "unknown-key" in e.value.problem["type"], e.value.problem
    # and they cannot deal in a later ceremony either (they hold no share)
    spec = reshare_spec(kid, scheme, 2, [1, 2, 3, 4], last)
    spec["authorization"] = auth(five, spec, pk, 3, [1, 2, 4], 2)
    with pytest.raises(NodeRefused) as e:
        five.call(five.nodes[3], "POST", "/v1/sessions", spec)
    assert e.value.status == 403


def test_member_reshared_out_keeps_its_share_and_is_refused_by_the_new_committee(
    five: Coordinator,
) -> None:
    """Party 3 deals in a resharing that drops it, then never commits (it kept its share,
    as a compromised node would): the new committee refuses every signature with it."""
    for scheme in SCHEMES:
        kid = "out-" + scheme
        dkg = five.dkg(scheme, kid, 2, [1, 2, 3])
        pk = dkg["public_key"]
        res = reshare(five, kid, scheme, pk, dkg, 1, 2, [1, 2, 4], [1, 2, 3], commit_to=[1, 2, 4])
        new = res[1]
        if scheme == "ecdsa-secp256k1":
            spec = {
                "session_id": secrets.token_hex(32),
                "kind": "ecdsa-presign",
                "key_id": kid,
                "scheme": scheme,
                "threshold": 2,
                "participants": [1, 3],
            }
            with pytest.raises(NodeRefused) as e:
                five.call(five.nodes[1], "POST", "/v1/sessions", spec)
            assert e.value.status == 403 and e.value.problem["culprits"] == [3], e.value.problem
            assert e.value.problem["type"] == "urn:tpwc:node:not-in-committee"
        else:
            req = raw(kid, "with the replaced member")
            with pytest.raises(NodeRefused) as e:
                five.frost_sign(scheme, kid, [1, 3], req, public_package(new, scheme))
            # the new member computes no share for a package naming a non-holder
            assert e.value.status == 422, e.value.problem
            assert e.value.problem["type"] == "urn:tpwc:node:bad-signing-package"
            assert "participant 3" in e.value.problem["detail"], e.value.problem
        sign(five, scheme, kid, [2, 4], new, "new committee")


def test_reshare_without_valid_authorization_is_refused_by_every_node(five: Coordinator) -> None:
    kid = "auth-ed25519"
    dkg = five.dkg("ed25519", kid, 2, [1, 2, 3])
    pk = dkg["public_key"]
    parts = ALL
    spec = reshare_spec(kid, "ed25519", 3, parts, dkg)
    # no authorization at all
    refused_by(five, parts, spec, "ceremony-unauthorized")
    # under quorum: one officer of the quorum of two
    one = auth(five, spec, pk, 1, ALL, 2, by=["officer-1"])
    refused_by(five, parts, {**spec, "authorization": one}, "ceremony-authorization-under-signed")
    # forged: two signatures under the officers' ids by keys that are not theirs
    strangers = {o: SigningKey.generate() for o in ("officer-1", "officer-2")}
    forged = authorize(
        strangers, five.officers.cluster_id, spec, pk, 1, committee=ALL, previous_threshold=2
    )
    refused_by(
        five, parts, {**spec, "authorization": forged}, "ceremony-authorization-under-signed"
    )
    # a committee edited inside a signed authorization: the signatures no longer hold
    good = bytes.fromhex(auth(five, spec, pk, 1, ALL, 2))
    outer = cbor2.loads(good)
    body = cbor2.loads(outer["body"])
    body["committee"] = ["node-1", "node-2", "node-4", "node-5"]
    outer["body"] = cbor2.dumps(body, canonical=True)
    edited = cbor2.dumps(outer, canonical=True).hex()
    refused_by(
        five,
        [1, 2, 4, 5],
        {**spec, "participants": [1, 2, 3, 4, 5], "authorization": edited},
        "ceremony-authorization-under-signed",
    )
    # expired
    old = auth(five, spec, pk, 1, ALL, 2, issued_at=int(time.time()) - 3600, lifetime=600)
    refused_by(five, parts, {**spec, "authorization": old}, "ceremony-authorization-expired")
    # another cluster's officers' statement
    other = authorize(
        five.officers.keys, "other-cluster", spec, pk, 1, committee=ALL, previous_threshold=2
    )
    refused_by(five, parts, {**spec, "authorization": other}, "ceremony-authorization-mismatch")
    # a lower threshold the officers did not state: signed CBOR made by hand (our own
    # encoder refuses to make it)
    now = int(time.time())
    drop = {
        "format": gov.CEREMONY_AUTH_FORMAT,
        "cluster_id": five.officers.cluster_id,
        "ceremony_id": "cer_drop",
        "kind": "reshare",
        "key_id": kid,
        "scheme": "ed25519",
        "public_key": bytes.fromhex(pk),
        "share_version": 1,
        "committee": ["node-1", "node-2", "node-3"],
        "threshold": 2,
        "previous_threshold": 3,
        "lower_threshold": False,
        "issued_at": now,
        "expires_at": now + 600,
    }
    body_bytes = cbor2.dumps(drop, canonical=True)
    sigs = [
        [o, five.officers.keys[o].sign(gov.CEREMONY_AUTH_CONTEXT + body_bytes).signature]
        for o in ("officer-1", "officer-2")
    ]
    dropped = cbor2.dumps({"body": body_bytes, "signatures": sigs}, canonical=True).hex()
    spec2 = reshare_spec(kid, "ed25519", 2, [1, 2, 3], dkg)
    refused_by(five, [1, 2, 3], {**spec2, "authorization": dropped}, "ceremony-threshold-drop")
    # nothing changed: the key signs 2-of-3 on its old shares
    sign(five, "ed25519", kid, [1, 2], dkg, "after refusals")


def test_coordinator_cannot_change_the_authorized_ceremony(five: Coordinator) -> None:
    """The officers authorized 2-of-3 -> 3-of-4 onto parties 1..4; a coordinator that
    changes the committee, the threshold, the key's version or the key after they signed
    is refused by every node it asks; the authorization, once used, is not accepted again."""
    kid = "coord-bip340"
    dkg = five.dkg("bip340", kid, 2, [1, 2, 3])
    pk = dkg["public_key"]
    spec = reshare_spec(kid, "bip340", 3, [1, 2, 3, 4], dkg)
    signed = auth(five, spec, pk, 1, [1, 2, 3, 4], 2)
    spec["authorization"] = signed
    mismatch = "ceremony-authorization-mismatch"
    # party 5 slipped in as a new member (a fifth share the officers never authorized)
    refused_by(five, ALL, {**spec, "participants": ALL}, mismatch)
    # party 4 dropped from the committee: the nodes notice the authorized member missing
    refused_by(five, [1, 2, 3], {**spec, "participants": [1, 2, 3]}, mismatch)
    # another threshold than authorized
    refused_by(five, [1, 2, 3, 4], {**spec, "threshold": 2}, mismatch)
    # the authorization replayed for another key
    other = five.dkg("bip340", "coord-other", 2, [1, 2, 3])
    refused_by(
        five,
        [1, 2, 3],
        {**spec, "key_id": "coord-other", "old_verifying_shares": other["verifying_shares"]},
        mismatch,
    )
    # a receiver handed verifying shares of another key
    refused_by(five, [4], {**spec, "old_verifying_shares": other["verifying_shares"]}, mismatch)
    # as authorized it runs (one use) ...
    res = five.run_session(spec)
    assert all(r["status"] == "done" for r in res.values()), res
    results = {p: r["result"] for p, r in res.items()}
    commit(five, kid, results, [1, 2, 3, 4])
    sign(five, "bip340", kid, [2, 3, 4], results[4], "3-of-4")
    # ... and a replay of the same authorization is refused, even under a fresh session
    again = {**spec, "session_id": secrets.token_hex(32)}
    refused_by(five, [1, 2, 3, 4], again, "ceremony-authorization-replayed")
    # an authorization for the old share version (the key is at version 2 now)
    stale = auth(five, spec, pk, 1, [1, 2, 3, 4], 2)
    refused_by(
        five,
        [1, 2, 3],
        {**spec, "session_id": secrets.token_hex(32), "authorization": stale},
        mismatch,
    )


def test_a_commit_needs_every_participants_done_statement(five: Coordinator) -> None:
    kid = "commit-ed25519"
    dkg = five.dkg("ed25519", kid, 2, [1, 2, 3])
    pk = dkg["public_key"]
    spec = reshare_spec(kid, "ed25519", 2, [1, 2, 3, 4], dkg)
    spec["authorization"] = auth(five, spec, pk, 1, [1, 2, 4], 2)
    res = five.run_session(spec)
    results = {p: r["result"] for p, r in res.items()}
    sigs = {str(p): r["signature"] for p, r in results.items() if p != 3}
    for p in (1, 2, 3, 4):
        with pytest.raises(NodeRefused) as e:
            five.call(
                five.nodes[p],
                "POST",
                f"/v1/keys/{kid}/commit",
                {"session_id": spec["session_id"], "signatures": sigs},
            )
        assert e.value.status == 403 and e.value.problem["culprits"] == [3], e.value.problem
    # nothing switched: the old committee signs; the receiver holds nothing yet
    sign(five, "ed25519", kid, [2, 3], dkg, "not committed")
    with pytest.raises(NodeRefused) as e:
        five.commitments(4, kid)
    assert e.value.status == 404


POINTS = ["reshare:pending-stored", "reshare:commit"]


def _killed_during_reshare(five: Coordinator, scheme: str, point: str, victim_party: int) -> None:
    """SIGKILL ``victim_party`` at ``point`` of a 2-of-3 -> 2-of-3 resharing onto 1, 2, 4:
    the old key still signs, or (after the commit rolls forward) the new one does."""
    kid = f"kill-{scheme}-{point.split(':')[1]}-{victim_party}"
    dkg = five.dkg(scheme, kid, 2, [1, 2, 3])
    pk = dkg["public_key"]
    victim: NodeProc = five.nodes[victim_party]
    victim.stop()
    victim.start(crash_at=point)
    try:
        spec = reshare_spec(kid, scheme, 2, [1, 2, 3, 4], dkg)
        spec["authorization"] = auth(five, spec, pk, 1, [1, 2, 4], 2)
        results: dict[int, Any] = {}
        try:
            res = five.run_session(spec)
            results = {p: r["result"] for p, r in res.items()}
        except (httpx.HTTPError, NodeRefused, RuntimeError, AssertionError):
            results = {}  # the victim died in the session
        if point == "reshare:commit":
            assert len(results) == 4
            others = [p for p in (1, 2, 3, 4) if p != victim_party]
            commit(five, kid, results, others)
            with pytest.raises(httpx.HTTPError):
                commit(five, kid, results, [victim_party])
        assert victim.proc is not None and victim.proc.wait(30) == 137
    finally:
        victim.stop()
        victim.start()
    if point == "reshare:pending-stored":
        # nobody committed: the old committee signs, with the victim too
        sign(five, scheme, kid, [1, 3] if victim_party != 1 else [1, 2], dkg, "old after kill")
        # and a fresh authorized resharing succeeds
        res2 = reshare(five, kid, scheme, pk, dkg, 1, 2, [1, 2, 4], [1, 2, 3])
        sign(five, scheme, kid, [1, 4], res2[1], "new after retry")
    else:
        # the victim restarted on its old state; the commit rolls forward on it
        commit(five, kid, results, [victim_party])
        sign(five, scheme, kid, [1, 4], results[1], "rolled forward")
        sign(five, scheme, kid, [2, 4], results[2], "rolled forward 2")


@pytest.mark.parametrize("point", POINTS)
def test_node_killed_during_a_reshare_loses_nothing(five: Coordinator, point: str) -> None:
    """Short form: the departing dealer (party 3) SIGKILLed at each point, on ed25519."""
    _killed_during_reshare(five, "ed25519", point, 3)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("point", POINTS)
def test_node_killed_during_a_reshare_every_scheme_and_role(
    five: Coordinator, scheme: str, point: str
) -> None:
    """Long form: a continuing dealer (1) and the receiver (4) killed, every scheme."""
    for victim in (1,) if slow_short() else (1, 4):
        _killed_during_reshare(five, scheme, point, victim)
