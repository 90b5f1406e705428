"""SIGKILL a node at random points while it signs: after restart no nonce is ever used twice
(a released one is in the durable release log, an outstanding one died with the process),
no share is lost, the node serves again; the other nodes keep signing meanwhile."""

from __future__ import annotations

import random
import threading
from typing import Any

import httpx
import pytest
from nacl.signing import VerifyKey

from custody.signing import message_to_sign
from mpc import frost
from tests.nodes.conftest import Coordinator, NodeRefused, public_package, slow_short


def _package(
    cluster: Coordinator, parties: list[int], req: dict[str, Any], nonces: dict[int, dict[str, str]]
) -> str:
    suite = frost.ciphersuite("ed25519")
    comms = [
        frost.SigningCommitments.from_bytes(bytes.fromhex(nonces[p]["commitments"]), suite=suite)
        for p in parties
    ]
    return frost.signing_package(comms, message_to_sign("ed25519", req)).to_bytes().hex()


def _sign_call(
    cluster: Coordinator, p: int, nonce: dict[str, str], req: dict[str, Any], pkg: str
) -> str:
    r = cluster.call(
        cluster.nodes[p],
        "POST",
        "/v1/frost/sign",
        {"key_id": "k1", "nonce_id": nonce["nonce_id"], "request": req, "signing_package": pkg},
    )
    return str(r["signature_share"])


def run_kills(cluster: Coordinator, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    res = cluster.dkg("ed25519", "k1", 2, [1, 2, 3])
    pub = public_package(res, "ed25519")
    vk = VerifyKey(bytes.fromhex(res["public_key"]))
    victim = cluster.nodes[1]
    released: list[tuple[dict[str, str], dict[str, Any], str]] = []  # node-1 shares handed out
    in_flight: list[tuple[dict[str, str], dict[str, Any], str]] = []
    counter = 0
    hit = 0  # kills that landed while a node-1 sign call was in flight
    for k in range(kills):
        n1 = cluster.commitments(1, "k1", 15)
        n2 = cluster.commitments(2, "k1", 15)
        timer = threading.Timer(rng.uniform(0.02, 0.35), victim.kill)
        timer.start()
        try:
            for a, b in zip(n1, n2, strict=True):
                counter += 1
                req = {
                    "id": f"k{k}-{counter}",
                    "key_id": "k1",
                    "kind": "raw",
                    "message": counter.to_bytes(4, "big").hex(),
                }
                pkg = _package(cluster, [1, 2], req, {1: a, 2: b})
                in_flight = [(a, req, pkg)]
                s1 = _sign_call(cluster, 1, a, req, pkg)
                released.append((a, req, pkg))
                in_flight = []
                s2 = _sign_call(cluster, 2, b, req, pkg)
                suite = frost.ciphersuite("ed25519")
                sig = frost.aggregate(
                    frost.SigningPackage.from_bytes(bytes.fromhex(pkg)),
                    [
                        frost.SignatureShare.from_bytes(bytes.fromhex(s), suite=suite)
                        for s in (s1, s2)
                    ],
                    pub,
                )
                vk.verify(message_to_sign("ed25519", req), sig)
        except (httpx.HTTPError, NodeRefused):
            pass
        timer.join()
        victim.kill()
        # the other nodes keep signing while node 1 is down
        req = {"id": f"down-{k}", "key_id": "k1", "kind": "raw", "message": "dd"}
        vk.verify(
            message_to_sign("ed25519", req), cluster.frost_sign("ed25519", "k1", [2, 3], req, pub)
        )
        victim.start()
        # never reuse: every nonce whose share left node 1 is refused now
        for nonce, req, pkg in released[-5:]:
            with pytest.raises(NodeRefused) as e:
                _sign_call(cluster, 1, nonce, req, pkg)
            assert e.value.status == 409
        # the nonce in flight at the kill: released (409 nonce-used, its release entry is
        # durable) or, if the entry never committed, gone with the process (404
        # unknown-nonce: nonces live in memory only). Never usable again either way.
        hit += bool(in_flight)
        for nonce, req, pkg in in_flight:
            with pytest.raises(NodeRefused) as refused:
                _sign_call(cluster, 1, nonce, req, pkg)
            assert refused.value.status in (404, 409)
        st = cluster.call(victim, "GET", "/v1/status")
        assert st["keys"] == 1 and st["hsm"] == "ok"
    # at the end: all released nonces refused, node 1 still signs
    for nonce, req, pkg in released:
        with pytest.raises(NodeRefused):
            _sign_call(cluster, 1, nonce, req, pkg)
    req = {"id": "final", "key_id": "k1", "kind": "raw", "message": "ff"}
    vk.verify(
        message_to_sign("ed25519", req), cluster.frost_sign("ed25519", "k1", [1, 3], req, pub)
    )
    assert len(released) > 0
    print(f"kills={kills} during-sign={hit} shares-released={len(released)}")


@pytest.mark.slow
def test_sigkill_during_signing(cluster: Coordinator) -> None:
    """Ten kills (the full form); five under CUSTODY_SLOW_SHORT=1, beside the five of
    :func:`test_sigkill_during_signing_long`'s short form (another seed)."""
    run_kills(cluster, kills=5 if slow_short() else 10, seed=1)


@pytest.mark.slow
def test_sigkill_during_signing_long(cluster: Coordinator) -> None:
    run_kills(cluster, kills=5 if slow_short() else 60, seed=2)
