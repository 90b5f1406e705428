"""Signing under a derived key (issue 13) against REAL node processes: this test holds the
coordinator's key and calls the nodes directly, as a (possibly compromised) coordinator
would. Each request names only a ``derivation_path``; every node derives its own share
tweak from it. Every signature is checked by an independent verifier under the child key
that an independent BIP-32 library (embit) derives from our xpub: coincurve for BIP-340 and
ECDSA, eth-account for an Ethereum transaction, py-bitcoinkernel for a Bitcoin spend, and
pynacl for Ed25519 (whose additive-tweak derivation no other library implements: its child
key comes from :mod:`mpc.hd`, documented there)."""

from __future__ import annotations

import secrets
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest
from coincurve import PublicKey, PublicKeyXOnly
from embit.bip32 import HDKey
from eth_account import Account

from custody import approvals as appr
from custody import governance as gov
from custody import policy as pol
from custody.kinds.addresses import (
    bitcoin_p2tr_address,
    ethereum_address,
    p2tr_script,
    taproot_output_key,
)
from custody.signing import (
    derive_public,
    encode_public_key,
    message_to_sign,
    messages_to_sign,
    request_path,
    root_chain_code,
    sign_result,
)
from mpc import dkls23, frost, hd
from mpc.errors import ProtocolError
from mpc.groups import SECP256K1
from mpc.shamir import PublicKeyPackage
from tests.custody.kinds.btc_build import b64, build_psbt
from tests.custody.kinds.test_chain_acceptance import core_verifies
from tests.nodes.conftest import INITIATOR, Coordinator, NodeRefused, public_package
from tests.nodes.test_decoded_kinds import unsigned_tx

PATHS = ("m/0/0", "m/0/7", "m/1/3")


def xpub_of(key_id: str, pub: PublicKeyPackage, network: hd.Network = "mainnet") -> str:
    """Our root xpub (mpc.hd), the input to the independent library."""
    return hd.ExtendedPublicKey(pub.group_public_key, root_chain_code(pub, key_id)).to_xpub(network)


def embit_child(xpub: str, path: str) -> bytes:
    """The child's SEC1 compressed key, by embit's BIP-32 CKDpub (not our code)."""
    return bytes(HDKey.from_base58(xpub).derive(path).key.sec())


def message_request(key_id: str, path: str | None, text: bytes, rid: str = "") -> dict[str, Any]:
    req = {
        "id": rid or "d-" + secrets.token_hex(4),
        "key_id": key_id,
        "kind": "message",
        "payload": {"message": "0x" + text.hex()},
        "initiator": INITIATOR,
    }
    if path is not None:
        req["derivation_path"] = path
    return req


def frost_shares(
    c: Coordinator,
    scheme: str,
    key_id: str,
    requests: dict[int, dict[str, Any]],
    message: bytes,
) -> tuple[frost.SigningPackage, list[frost.SignatureShare]]:
    """Each party's signature share for its own copy of the request (one package)."""
    suite = frost.ciphersuite(scheme)
    nonces = {p: c.commitments(p, key_id)[0] for p in requests}
    comms = [
        frost.SigningCommitments.from_bytes(bytes.fromhex(nonces[p]["commitments"]), suite=suite)
        for p in requests
    ]
    pkg = frost.signing_package(comms, message)
    shares = []
    for p, req in requests.items():
        r = c.call(
            c.nodes[p],
            "POST",
            "/v1/frost/sign",
            {
                "key_id": key_id,
                "nonce_id": nonces[p]["nonce_id"],
                "request": req,
                "signing_package": pkg.to_bytes().hex(),
            },
        )
        shares.append(
            frost.SignatureShare.from_bytes(bytes.fromhex(r["signature_share"]), suite=suite)
        )
    return pkg, shares


def presign(c: Coordinator, key_id: str, signers: list[int], path: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "session_id": secrets.token_hex(32),
        "kind": "ecdsa-presign",
        "key_id": key_id,
        "scheme": "ecdsa-secp256k1",
        "threshold": len(signers),
        "participants": signers,
    }
    if path is not None:
        spec["derivation_path"] = path
    res = c.run_session(spec)
    assert all(r["status"] == "done" for r in res.values()), res
    results = [r["result"] for r in res.values()]
    assert all(r == results[0] for r in results)
    return results[0]


def ecdsa_partials(
    c: Coordinator, key_id: str, pre: dict[str, Any], requests: dict[int, dict[str, Any]]
) -> list[dkls23.PartialSignature]:
    return [
        dkls23.PartialSignature.from_bytes(
            bytes.fromhex(
                c.call(
                    c.nodes[p],
                    "POST",
                    "/v1/ecdsa/sign",
                    {"key_id": key_id, "presignature_id": pre["presignature_id"], "request": r},
                )["partial"]
            ),
            sender=p,
        )
        for p, r in requests.items()
    ]


def presig_public(pre: dict[str, Any]) -> dkls23.PresignaturePublic:
    return dkls23.PresignaturePublic(
        bytes.fromhex(pre["presignature_id"]),
        bytes.fromhex(pre["dkls23_key_id"]),
        bytes.fromhex(pre["session_id"]),
        tuple(pre["participants"]),
        SECP256K1.decode_point(bytes.fromhex(pre["R"])),
    )


def status(c: Coordinator, p: int) -> dict[str, Any]:
    return dict(c.call(c.nodes[p], "GET", "/v1/status"))


# -- FROST: BIP-340 and Ed25519 ----------------------------------------------------------------


def test_frost_signs_under_each_path_and_a_split_path_fails_closed(cluster: Coordinator) -> None:
    res = cluster.dkg("bip340", "tr-d", 2, [1, 2, 3])
    root = public_package(res, "bip340")
    xpub = xpub_of("tr-d", root)
    for path in PATHS:
        child = embit_child(xpub, path)  # independent of our derivation code
        ours = derive_public(root, "tr-d", request_path({"derivation_path": path}))
        assert ours.group_public_key.encode() == child
        req = message_request("tr-d", path, b"pay from " + path.encode())
        pkg, shares = frost_shares(cluster, "bip340", "tr-d", {1: req, 2: req}, req_msg(req))
        sig = frost.aggregate(pkg, shares, ours)
        assert PublicKeyXOnly(child[1:]).verify(sig, req_msg(req))  # libsecp256k1
        assert not PublicKeyXOnly(bytes.fromhex(res["public_key"])).verify(sig, req_msg(req))

    # Ed25519: the additive-tweak scheme (mpc.hd), verified by libsodium (pynacl)
    res_ed = cluster.dkg("ed25519", "ed-d", 2, [1, 2, 3])
    root_ed = public_package(res_ed, "ed25519")
    for path in PATHS:
        ours = derive_public(root_ed, "ed-d", request_path({"derivation_path": path}))
        req = message_request("ed-d", path, b"ed " + path.encode())
        pkg, shares = frost_shares(cluster, "ed25519", "ed-d", {2: req, 3: req}, req_msg(req))
        sig = frost.aggregate(pkg, shares, ours)
        child_pk = encode_public_key("ed25519", ours.group_public_key)
        nacl.signing.VerifyKey(child_pk).verify(req_msg(req), sig)
        with pytest.raises(nacl.exceptions.BadSignatureError):
            nacl.signing.VerifyKey(bytes.fromhex(res_ed["public_key"])).verify(req_msg(req), sig)

    # A coordinator that sends node 1 one path and node 2 another: each node signs under the
    # key of ITS path (it derived the tweak itself), so the shares are of different keys and
    # aggregate under neither: nothing verifies, and aggregation names the culprit.
    a = message_request("tr-d", "m/0/1", b"split", rid="split-1")
    b = {**a, "derivation_path": "m/0/7"}
    pkg, shares = frost_shares(cluster, "bip340", "tr-d", {1: a, 2: b}, req_msg(a))
    for path in ("m/0/1", "m/0/7"):
        child_pkg = derive_public(root, "tr-d", request_path({"derivation_path": path}))
        with pytest.raises(ProtocolError) as exc:
            frost.aggregate(pkg, shares, child_pkg)
        assert exc.value.culprits, exc.value  # the share of the node told the other path
    # and each node's release log records the path IT signed under
    for p, path in ((1, "m/0/1"), (2, "m/0/7")):
        entries = cluster.call(cluster.nodes[p], "GET", "/v1/releases")["entries"]
        last = [e for e in entries if e["request_id"] == "split-1"]
        assert [e["derivation_path"] for e in last] == [path]


def req_msg(req: dict[str, Any]) -> bytes:
    return message_to_sign("bip340" if req["key_id"] != "ed-d" else "ed25519", req)


def hardened_and_malformed_paths_are_refused_by_every_node(cluster: Coordinator) -> None:
    """Run inside the ECDSA test below (one cluster start fewer for the suite)."""
    cluster.dkg("bip340", "tr-h", 2, [1, 2, 3])
    for party in (1, 2):
        nonce = cluster.commitments(party, "tr-h")[0]
        for path, want in (
            ("m/0'/1", "path step 1 is hardened (0')"),
            ("m/0/1h", "path step 2 is hardened (1')"),
            ("m/2147483648", "path step 1 is hardened"),
            ("m/01", "not a canonical decimal index"),
            ("0/1", "must start with 'm/'"),
            ("m", "must start with 'm/'"),
            ("m/" + "/".join(["1"] * 17), "a signing path has 1 to 16"),
        ):
            req = message_request("tr-h", path, b"x")
            with pytest.raises(NodeRefused) as e:
                cluster.call(
                    cluster.nodes[party],
                    "POST",
                    "/v1/frost/sign",
                    {
                        "key_id": "tr-h",
                        "nonce_id": nonce["nonce_id"],
                        "request": req,
                        "signing_package": "00",
                    },
                )
            assert e.value.status == 422, (path, e.value.problem)
            assert "derivation_path" in e.value.problem["detail"], e.value.problem
            assert want in e.value.problem["detail"], (path, e.value.problem)
        assert status(cluster, party)["nonces_used"] == 0
    # a presign session for a hardened path never starts
    with pytest.raises(NodeRefused) as e:
        presign(cluster, "eth-d", [1, 2], "m/44'/0")
    assert e.value.status == 422 and "hardened" in e.value.problem["detail"], e.value.problem


# -- DKLs23 ECDSA ----------------------------------------------------------------------------


def test_ecdsa_presignatures_are_per_path_and_evm_tx_recovers_to_the_child(
    cluster: Coordinator,
) -> None:
    """Also: hardened and malformed paths refused by every node, FROST and presign alike."""
    res = cluster.dkg("ecdsa-secp256k1", "eth-d", 2, [1, 2, 3])
    hardened_and_malformed_paths_are_refused_by_every_node(cluster)
    root = public_package(res, "ecdsa-secp256k1")
    xpub = xpub_of("eth-d", root)
    for path in PATHS:
        child = embit_child(xpub, path)
        pre = presign(cluster, "eth-d", [1, 2], path)
        assert pre["derivation_path"] == path
        tx = unsigned_tx(int(path[-1]))
        req = {
            "id": "tx-" + secrets.token_hex(4),
            "key_id": "eth-d",
            "kind": "evm-tx",
            "payload": {"tx": tx},
            "initiator": INITIATOR,
            "derivation_path": path,
        }
        digest = message_to_sign("ecdsa-secp256k1", req)
        sig = dkls23.combine_signature(
            presig_public(pre),
            ecdsa_partials(cluster, "eth-d", pre, {1: req, 2: req}),
            digest,
            SECP256K1.decode_point(child),
        )
        raw = sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big")
        assert PublicKey(child).verify(
            sig.to_der(), digest, hasher=None
        )  # libsecp256k1 under embit's child
        out = sign_result("ecdsa-secp256k1", req, raw, sig.recovery_id, child)
        assert out is not None
        assert Account.recover_transaction(out["signed_tx"]) == ethereum_address(child)
        assert ethereum_address(child) != ethereum_address(bytes.fromhex(res["public_key"]))

    # A presignature made for m/0/1 is never used for another path, nor for the root key,
    # and it is not consumed by the refusal.
    pre = presign(cluster, "eth-d", [1, 2], "m/0/1")
    base = {
        "id": "tx-x",
        "key_id": "eth-d",
        "kind": "evm-tx",
        "payload": {"tx": unsigned_tx(9)},
        "initiator": INITIATOR,
    }
    used = {p: status(cluster, p)["presignatures_used"] for p in (1, 2)}
    for other in ({**base, "derivation_path": "m/0/7"}, base):
        for p in (1, 2):
            with pytest.raises(NodeRefused) as e:
                ecdsa_partials(cluster, "eth-d", pre, {p: other})
            assert "was made for m/0/1" in e.value.problem["detail"], e.value.problem
    # a coordinator splitting the path between the nodes gets one partial, never two
    good = {**base, "derivation_path": "m/0/1"}
    first = ecdsa_partials(cluster, "eth-d", pre, {1: good})
    with pytest.raises(NodeRefused):
        ecdsa_partials(cluster, "eth-d", pre, {2: {**base, "derivation_path": "m/0/7"}})
    assert status(cluster, 2)["presignatures_used"] == used[2]
    # the honest second partial (same path) completes it, under the m/0/1 child only
    second = ecdsa_partials(cluster, "eth-d", pre, {2: good})
    child = embit_child(xpub, "m/0/1")
    digest = message_to_sign("ecdsa-secp256k1", good)
    sig = dkls23.combine_signature(
        presig_public(pre), first + second, digest, SECP256K1.decode_point(child)
    )
    assert PublicKey(child).verify(sig.to_der(), digest, hasher=None)
    # the presignature was consumed once, by the m/0/1 request
    for p in (1, 2):
        assert status(cluster, p)["presignatures_used"] == used[p] + 1


# -- the node's policy sees the child's addresses --------------------------------------------


def test_the_node_decodes_and_authorizes_a_psbt_under_the_child_key(cluster: Coordinator) -> None:
    res = cluster.dkg("bip340", "tr-p", 2, [1, 2, 3], network="regtest")
    root = public_package(res, "bip340")
    xpub = xpub_of("tr-p", root, "testnet")
    path = "m/0/7"
    child = embit_child(xpub, path)[1:]  # x-only internal key of the child
    root_x = bytes.fromhex(res["public_key"])
    payee = b"\x00\x14" + secrets.token_bytes(20)
    payee_addr = pol.normalize_address(_segwit(payee))
    # governance v2: btc-psbt allowed only when every destination is on the allowlist
    g = gov.decode(cluster.genesis).body
    policy = pol.Policy(
        rules=(
            pol.Rule(
                "psbt-allowlisted",
                "allow",
                kinds=frozenset({"btc-psbt"}),
                allowlists=frozenset({"payees"}),
            ),
        ),
        allowlists=(pol.Allowlist("payees", (pol.AllowlistEntry(payee_addr, 0),)),),
    )
    cluster.govern(g.successor(policy=policy))

    def psbt_request(change_to: bytes, amounts: list[int], **extra: Any) -> dict[str, Any]:
        ins = [(secrets.token_bytes(32), i, a, 0xFFFFFFFD) for i, a in enumerate(amounts)]
        outs = [
            (payee, sum(amounts) // 2),
            (p2tr_script(taproot_output_key(change_to)), sum(amounts) // 2 - 400),
        ]
        return {
            "id": "psbt-" + secrets.token_hex(4),
            "key_id": "tr-p",
            "kind": "btc-psbt",
            "payload": b64(build_psbt(child, ins, outs)),
            "network": "regtest",
            "initiator": INITIATOR,
            **extra,
        }

    amounts = [60_000, 25_000]
    req = psbt_request(child, amounts, derivation_path=path)  # change back to the child
    output_key = taproot_output_key(child)  # BIP-86 of the derived child: derive, then tweak
    sighashes = messages_to_sign("bip340", req, public_key=child)
    nonces = {p: cluster.commitments(p, "tr-p", 2) for p in (1, 2)}
    suite = frost.ciphersuite("bip340")

    def package(i: int, m: bytes) -> frost.SigningPackage:
        comms = [
            frost.SigningCommitments.from_bytes(
                bytes.fromhex(nonces[p][i]["commitments"]), suite=suite
            )
            for p in (1, 2)
        ]
        return frost.signing_package(comms, m)

    def items(p: int, r: dict[str, Any], out_key: bytes) -> list[dict[str, Any]]:
        return [
            {
                "key_id": "tr-p",
                "nonce_id": nonces[p][i]["nonce_id"],
                "request": r,
                "signing_package": package(i, m).to_bytes().hex(),
                "input_index": i,
                "output_key": out_key.hex(),
            }
            for i, m in enumerate(sighashes)
        ]

    # refused before any nonce is touched: the same PSBT for the root key (its inputs are
    # not the root's), the root key's output key, and change to the ROOT key's address
    # (under the child it is a foreign destination, not on the allowlist: policy-denied)
    no_path = {k: v for k, v in req.items() if k != "derivation_path"}
    root_change = psbt_request(root_x, amounts, derivation_path=path)
    for r, out_key, status_code, what in (
        (no_path, output_key, 422, "witness_utxo"),
        (req, taproot_output_key(root_x), 422, "output_key"),
    ):
        with pytest.raises(NodeRefused) as e:
            cluster.call(cluster.nodes[1], "POST", "/v1/frost/sign", items(1, r, out_key)[0])
        assert e.value.status == status_code and what in e.value.problem["detail"], e.value.problem
    rc_sighashes = messages_to_sign("bip340", root_change, public_key=child)
    rc_item = {
        **items(1, root_change, output_key)[0],
        "signing_package": package(0, rc_sighashes[0]).to_bytes().hex(),
    }
    with pytest.raises(NodeRefused) as e:
        cluster.call(cluster.nodes[1], "POST", "/v1/frost/sign", rc_item)
    assert e.value.status == 403, e.value.problem
    assert e.value.problem["type"].endswith(":policy-denied"), e.value.problem
    assert "policy-no-rule-matched" in e.value.problem["detail"], e.value.problem
    assert status(cluster, 1)["nonces_used"] == 0

    # the honest request: every input signed under the child's BIP-86 output key
    results = {
        p: cluster.call(
            cluster.nodes[p], "POST", "/v1/frost/sign-batch", {"items": items(p, req, output_key)}
        )["results"]
        for p in (1, 2)
    }
    tweaked = frost.taproot_tweak(derive_public(root, "tr-p", (0, 7)))
    assert suite.encode_public_key(tweaked.group_public_key) == output_key
    sigs = []
    for i, m in enumerate(sighashes):
        parts = [
            frost.SignatureShare.from_bytes(
                bytes.fromhex(results[p][i]["signature_share"]), suite=suite
            )
            for p in (1, 2)
        ]
        sig = frost.aggregate(package(i, m), parts, tweaked)
        assert PublicKeyXOnly(output_key).verify(sig, m)  # libsecp256k1 under x(Q) of the child
        sigs.append(sig)
    out = sign_result("bip340", req, b"".join(sigs), None, child)
    assert out is not None
    assert core_verifies(out["signed_tx"], p2tr_script(output_key), amounts)  # Bitcoin Core
    assert bitcoin_p2tr_address(child, "regtest") != bitcoin_p2tr_address(root_x, "regtest")


def _segwit(script: bytes) -> str:
    from custody.kinds.addresses import segwit_address

    out = segwit_address(script, "regtest")
    assert out is not None
    return out


def test_the_path_is_in_the_approvals_intent_with_the_childs_sender_address() -> None:
    """Pure: an approval binds the path and the child's key (its Ethereum address is an
    evm-tx's sender), so an approval for one path never counts for another."""
    from tests.mpc.conftest import dealer_split_for_tests  # public parts used only

    shares = dealer_split_for_tests(SECP256K1, 2, 3)
    root = shares[1].public
    tx = unsigned_tx(3)
    base = {
        "id": "sr-9",
        "key_id": "eth-a",
        "kind": "evm-tx",
        "payload": {"tx": tx},
        "initiator": INITIATOR,
    }
    digests = {}
    for path in (None, "m/0/1", "m/0/7"):
        req = dict(base) if path is None else {**base, "derivation_path": path}
        pk = derive_public(root, "eth-a", request_path(req)).group_public_key.encode()
        intent, ar = appr.request_intent("ecdsa-secp256k1", req, public_key=pk)
        summary = intent.summary()  # the kind's own summary: the same for every path
        assert summary["to"]
        digests[path] = ar.intent_digest
        if path is not None:
            want = {"path": path, "public_key": pk.hex(), "address": ethereum_address(pk)}
            assert ar.intent_digest == appr.intent_digest("evm-tx", {**summary, "derivation": want})
    assert len(set(digests.values())) == 3
    # payment digests bind the path too (the message every node recomputes)
    pay = {"id": "p-1", "key_id": "eth-a", "kind": "payment", "payload": {"amount": "1"}}
    assert message_to_sign("bip340", pay) != message_to_sign(
        "bip340", {**pay, "derivation_path": "m/0/1"}
    )
