"""DKG and FROST signing through three real node processes; independent verifiers."""

from __future__ import annotations

import pytest
from coincurve import PublicKeyXOnly
from nacl.signing import VerifyKey

from custody.signing import message_to_sign
from tests.nodes.conftest import INITIATOR, Coordinator, NodeRefused, public_package


@pytest.fixture
def cluster(module_cluster: Coordinator) -> Coordinator:
    """The module's one cluster (tests/nodes/conftest.py ``module_cluster``): no test here
    crashes, restarts or re-governs a node, and each uses key ids of its own."""
    return module_cluster


def test_dkg_and_frost_sign_ed25519_and_bip340(cluster: Coordinator) -> None:
    for scheme in ("ed25519", "bip340"):
        key_id = f"k-{scheme}"
        res = cluster.dkg(scheme, key_id, 2, [1, 2, 3])
        pub = public_package(res, scheme)
        for signers in ([1, 2], [2, 3], [1, 3]):
            req = {
                "id": f"r-{scheme}-{signers[0]}{signers[1]}",
                "key_id": key_id,
                "kind": "raw",
                "message": b"pay 10 to bob".hex(),
            }
            sig = cluster.frost_sign(scheme, key_id, signers, req, pub)
            msg = message_to_sign(scheme, req)
            if scheme == "ed25519":
                VerifyKey(bytes.fromhex(res["public_key"])).verify(msg, sig)
            else:
                assert PublicKeyXOnly(bytes.fromhex(res["public_key"])).verify(sig, msg)


def test_nonce_single_use_and_message_recomputed(cluster: Coordinator) -> None:
    before = cluster.call(cluster.nodes[1], "GET", "/v1/status")
    res = cluster.dkg("ed25519", "k1", 2, [1, 2, 3])
    pub = public_package(res, "ed25519")
    nonces = {p: cluster.commitments(p, "k1")[0] for p in (1, 2)}
    req = {
        "id": "r1",
        "key_id": "k1",
        "kind": "payment",
        "payload": {"amount": "1000", "currency": "EUR", "to": "DE89..."},
        "initiator": INITIATOR,
    }
    sig = cluster.frost_sign("ed25519", "k1", [1, 2], req, pub, nonces)
    VerifyKey(bytes.fromhex(res["public_key"])).verify(message_to_sign("ed25519", req), sig)
    with pytest.raises(NodeRefused) as e:
        cluster.frost_sign("ed25519", "k1", [1, 2], req, pub, nonces)
    assert e.value.status == 409 and e.value.problem["type"].endswith("nonce-used")
    # a package whose message differs from the request's recomputed digest is refused
    other = {**req, "payload": {**req["payload"], "amount": "999999"}}
    fresh = {p: cluster.commitments(p, "k1")[0] for p in (1, 2)}
    from mpc import frost

    suite = frost.ciphersuite("ed25519")
    comms = [
        frost.SigningCommitments.from_bytes(bytes.fromhex(fresh[p]["commitments"]), suite=suite)
        for p in (1, 2)
    ]
    pkg = frost.signing_package(comms, message_to_sign("ed25519", other))
    with pytest.raises(NodeRefused) as e:
        cluster.call(
            cluster.nodes[1],
            "POST",
            "/v1/frost/sign",
            {
                "key_id": "k1",
                "nonce_id": fresh[1]["nonce_id"],
                "request": req,
                "signing_package": pkg.to_bytes().hex(),
            },
        )
    assert e.value.status == 403 and e.value.problem["type"].endswith("message-mismatch")
    st = cluster.call(cluster.nodes[1], "GET", "/v1/status")  # this test's: one key, one nonce
    assert st["nonces_used"] - before["nonces_used"] == 1
    assert st["keys"] - before["keys"] == 1 and set(st["key_ids"]) - set(before["key_ids"]) == {
        "k1"
    }
