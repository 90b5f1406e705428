"""``evm-tx`` and ``message`` at the node: a coordinator (this test holds its key and calls
real node processes directly) cannot get a partial signature for a malformed payload or for
bytes other than the ones the node decodes itself; nothing is released for a refusal."""

from __future__ import annotations

import secrets

import pytest
import rlp
from coincurve import PublicKeyXOnly
from eth.vm.forks.london.transactions import UnsignedDynamicFeeTransaction
from eth_account import Account
from eth_utils.crypto import keccak

from custody.kinds.addresses import ethereum_address
from custody.signing import message_to_sign, sign_result
from mpc import dkls23, frost
from mpc.groups import SECP256K1
from tests.nodes.conftest import INITIATOR, Coordinator, NodeRefused, public_package
from tests.nodes.test_ecdsa_cluster import presign


@pytest.fixture
def cluster(module_cluster: Coordinator) -> Coordinator:
    """The module's one cluster (tests/nodes/conftest.py ``module_cluster``): no test here
    crashes, restarts or re-governs a node, and each uses key ids of its own."""
    return module_cluster


def unsigned_tx(nonce: int) -> str:
    tx = UnsignedDynamicFeeTransaction(
        chain_id=1,
        nonce=nonce,
        max_priority_fee_per_gas=1,
        max_fee_per_gas=2,
        gas=21_000,
        to=secrets.token_bytes(20),
        value=5,
        data=b"",
        access_list=[],
    )
    return "0x" + tx.get_message_for_signing().hex()


def _status(cluster: Coordinator, party: int) -> dict:
    return dict(cluster.call(cluster.nodes[party], "GET", "/v1/status"))


def test_evm_tx_at_the_node(cluster: Coordinator) -> None:
    before = {p: _status(cluster, p) for p in (1, 2)}
    key = cluster.dkg("ecdsa-secp256k1", "eth-k", 2, [1, 2, 3])
    pk = bytes.fromhex(key["public_key"])
    pre = presign(cluster, "eth-k", [1, 2])
    good, other = unsigned_tx(0), unsigned_tx(1)
    base = {"id": "sr-1", "key_id": "eth-k", "kind": "evm-tx", "initiator": INITIATOR}
    legacy = "0x" + rlp.encode([0, 1, 21000, bytes(20), 1, b""]).hex()
    hostile = {
        "legacy": ({**base, "payload": {"tx": legacy}}, "payload.tx.type"),
        "trailing": ({**base, "payload": {"tx": good + "00"}}, "payload.tx"),
        "malformed": ({**base, "payload": {"tx": "0x02c0"}}, "payload.tx"),
        "swapped kind": ({**base, "payload": {"message": "0x00"}}, "payload.message"),
        "digest of another tx": (
            {**base, "payload": {"tx": good}, "message": keccak(bytes.fromhex(other[2:])).hex()},
            "message",
        ),
        "extra member": ({**base, "payload": {"tx": good}, "to": "0x00"}, "to"),
    }
    for name, (req, field) in hostile.items():
        for party in (1, 2):
            with pytest.raises(NodeRefused) as e:
                cluster.call(
                    cluster.nodes[party],
                    "POST",
                    "/v1/ecdsa/sign",
                    {"key_id": "eth-k", "presignature_id": pre["presignature_id"], "request": req},
                )
            assert e.value.status == 422, (name, e.value.problem)
            assert f"field {field!r}" in e.value.problem["detail"], (name, e.value.problem)
    for party in (1, 2):  # nothing was released, the presignature is still there
        st, was = _status(cluster, party), before[party]
        assert st["presignatures_used"] - was["presignatures_used"] == 0
        assert st["presignatures_unused"] - was["presignatures_unused"] == 1
    # the good transaction: the nodes sign the digest they decoded themselves
    req = {**base, "payload": {"tx": good}}
    digest = message_to_sign("ecdsa-secp256k1", req)
    assert digest == keccak(bytes.fromhex(good[2:]))
    public = dkls23.PresignaturePublic(
        bytes.fromhex(pre["presignature_id"]),
        bytes.fromhex(pre["dkls23_key_id"]),
        bytes.fromhex(pre["session_id"]),
        tuple(pre["participants"]),
        SECP256K1.decode_point(bytes.fromhex(pre["R"])),
    )
    partials = [
        dkls23.PartialSignature.from_bytes(
            bytes.fromhex(
                cluster.call(
                    cluster.nodes[p],
                    "POST",
                    "/v1/ecdsa/sign",
                    {"key_id": "eth-k", "presignature_id": pre["presignature_id"], "request": req},
                )["partial"]
            ),
            sender=p,
        )
        for p in (1, 2)
    ]
    sig = dkls23.combine_signature(public, partials, digest, SECP256K1.decode_point(pk))
    raw = sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big")
    result = sign_result("ecdsa-secp256k1", req, raw, sig.recovery_id, pk)
    assert result is not None
    assert Account.recover_transaction(result["signed_tx"]) == ethereum_address(pk)


def test_message_at_the_node(cluster: Coordinator) -> None:
    before = _status(cluster, 1)
    res = cluster.dkg("bip340", "tr-k", 2, [1, 2, 3])
    pub = public_package(res, "bip340")
    req = {
        "id": "m-1",
        "key_id": "tr-k",
        "kind": "message",
        "payload": {"message": "0x6869"},
        "initiator": INITIATOR,
    }
    sig = cluster.frost_sign("bip340", "tr-k", [1, 2], req, pub)
    assert PublicKeyXOnly(bytes.fromhex(res["public_key"])).verify(sig, b"hi")
    # a package over other bytes than the payload's, and a malformed payload, are refused
    suite = frost.ciphersuite("bip340")
    fresh = {p: cluster.commitments(p, "tr-k")[0] for p in (1, 2)}
    comms = [
        frost.SigningCommitments.from_bytes(bytes.fromhex(fresh[p]["commitments"]), suite=suite)
        for p in (1, 2)
    ]
    for request, package_msg, status in (
        (req, b"other bytes", 403),
        ({**req, "payload": {"message": "6869"}}, b"hi", 422),
        ({**req, "kind": "evm-tx", "payload": {"tx": unsigned_tx(0)}}, b"hi", 422),
    ):
        pkg = frost.signing_package(comms, package_msg)
        with pytest.raises(NodeRefused) as e:
            cluster.call(
                cluster.nodes[1],
                "POST",
                "/v1/frost/sign",
                {
                    "key_id": "tr-k",
                    "nonce_id": fresh[1]["nonce_id"],
                    "request": request,
                    "signing_package": pkg.to_bytes().hex(),
                },
            )
        assert e.value.status == status, e.value.problem
    st = _status(cluster, 1)
    assert st["nonces_used"] - before["nonces_used"] == 1  # only the good message's
