"""``btc-psbt`` at the node: a coordinator (this test holds its key and calls real node
processes directly) gets each input's signature share only for that input's sighash, which
the node recomputes from the PSBT, and only under the key's BIP-86 output key, which the node
reaches by tweaking its own share. Attacks are refused and release nothing; the honest path
gives a transaction Bitcoin Core's script interpreter (py-bitcoinkernel) accepts, with every
signature checked by libsecp256k1 (coincurve)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from coincurve import PublicKeyXOnly

from custody.kinds import btc
from custody.kinds.addresses import p2tr_script, taproot_output_key
from custody.signing import messages_to_sign, sign_result
from mpc import frost
from tests.custody.kinds.btc_build import b64, build_psbt
from tests.custody.kinds.test_chain_acceptance import core_verifies
from tests.nodes.conftest import INITIATOR, Coordinator, NodeRefused, public_package, relay

SUITE = frost.ciphersuite("bip340")
KEY = "tr-psbt"
SIGNERS = (1, 2)


@pytest.fixture(scope="module")
def _module_key(module_cluster: Coordinator) -> dict[str, Any]:
    """The one place the test key and its governance are set up: a 2-of-3 BIP-340 key by
    DKG on the real nodes, on regtest (each node records the network). The test genesis's
    policy (``tests.nodes.conftest.TEST_POLICY``) allows ``btc-psbt``. One key on the
    module's one cluster (tests/nodes/conftest.py ``module_cluster``) for every test."""
    return module_cluster.dkg("bip340", KEY, 2, [1, 2, 3], network="regtest")


#: each signer's nonce count and release-log head when the running test began
#: (:func:`psbt_key`): the tests share the key and cluster, and count from there
_start: dict[int, tuple[int, int]] = {}


@pytest.fixture
def psbt_key(
    module_cluster: Coordinator, _module_key: dict[str, Any]
) -> Iterator[tuple[Coordinator, dict[str, Any]]]:
    """The module's cluster and key, with the signers' counters noted for this test."""
    _start.clear()
    for p in SIGNERS:
        _start[p] = (_nonces_total(module_cluster, p), _release_head(module_cluster, p))
    yield module_cluster, _module_key


def request(internal: bytes, amounts: list[int], **extra: Any) -> dict[str, Any]:
    """A 2-input PSBT paying a P2TR output (the key's own) and a P2WPKH output."""
    ins = [(secrets.token_bytes(32), i, a, 0xFFFFFFFD) for i, a in enumerate(amounts)]
    outs = [
        (p2tr_script(taproot_output_key(internal)), sum(amounts) // 2),
        (b"\x00\x14" + secrets.token_bytes(20), sum(amounts) // 2 - 500),
    ]
    payload = b64(build_psbt(internal, ins, outs))
    return {
        "id": "psbt-" + secrets.token_hex(4),
        "key_id": KEY,
        "kind": "btc-psbt",
        "payload": payload,
        "network": "regtest",
        "initiator": INITIATOR,
        **extra,
    }


def commitments(c: Coordinator, count: int) -> dict[int, list[dict[str, str]]]:
    return {p: c.commitments(p, KEY, count) for p in SIGNERS}


def package(nonces: dict[int, list[dict[str, str]]], i: int, message: bytes) -> str:
    comms = [
        frost.SigningCommitments.from_bytes(bytes.fromhex(nonces[p][i]["commitments"]), suite=SUITE)
        for p in SIGNERS
    ]
    return frost.signing_package(comms, message).to_bytes().hex()


def item(
    nonces: dict[int, list[dict[str, str]]],
    p: int,
    i: int,
    req: dict[str, Any],
    message: bytes,
    output_key: bytes,
    index: object = "same",
) -> dict[str, Any]:
    out = {
        "key_id": KEY,
        "nonce_id": nonces[p][i]["nonce_id"],
        "request": req,
        "signing_package": package(nonces, i, message),
        "input_index": i if index == "same" else index,
        "output_key": output_key.hex(),
    }
    if index is None:
        del out["input_index"]
    return out


def batch(c: Coordinator, p: int, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    res = c.call(c.nodes[p], "POST", "/v1/frost/sign-batch", {"items": items})["results"]
    assert isinstance(res, list) and len(res) == len(items)
    return res


def _nonces_total(c: Coordinator, p: int) -> int:
    return int(c.call(c.nodes[p], "GET", "/v1/status")["nonces_used"])


def _release_head(c: Coordinator, p: int) -> int:
    entries = c.call(c.nodes[p], "GET", "/v1/releases?after=0&limit=1000")["entries"]
    assert len(entries) < 1000  # one page holds this module's releases
    return int(entries[-1]["seq"]) if entries else 0


def nonces_used(c: Coordinator, p: int) -> int:
    """Nonces node ``p`` used since the running test began (``psbt_key``)."""
    return _nonces_total(c, p) - _start[p][0]


def releases(c: Coordinator, p: int) -> list[Any]:
    """Node ``p``'s release-log entries since the running test began (``psbt_key``)."""
    return list(c.call(c.nodes[p], "GET", f"/v1/releases?after={_start[p][1]}")["entries"])


def test_each_input_signed_under_the_output_key_passes_bitcoin_core(
    psbt_key: tuple[Coordinator, dict[str, Any]],
) -> None:
    c, res = psbt_key
    internal = bytes.fromhex(res["public_key"])
    tweaked = frost.taproot_tweak(public_package(res, "bip340"))
    output_key = SUITE.encode_public_key(tweaked.group_public_key)
    assert output_key == taproot_output_key(internal)  # BIP-86, computed by libsecp256k1
    amounts = [50_000, 27_000]
    req = request(internal, amounts)
    sighashes = messages_to_sign("bip340", req, public_key=internal)
    assert len(sighashes) == 2 and sighashes[0] != sighashes[1]
    nonces = commitments(c, 2)
    shares = {
        p: batch(c, p, [item(nonces, p, i, req, m, output_key) for i, m in enumerate(sighashes)])
        for p in SIGNERS
    }
    sigs = []
    for i, m in enumerate(sighashes):
        pkg = frost.SigningPackage.from_bytes(bytes.fromhex(package(nonces, i, m)), suite=SUITE)
        parts = [
            frost.SignatureShare.from_bytes(
                bytes.fromhex(shares[p][i]["signature_share"]), suite=SUITE
            )
            for p in SIGNERS
        ]
        sig = frost.aggregate(pkg, parts, tweaked)
        assert PublicKeyXOnly(output_key).verify(sig, m)  # libsecp256k1, under x(Q)
        assert not PublicKeyXOnly(internal).verify(sig, m)
        sigs.append(sig)
    result = sign_result("bip340", req, b"".join(sigs), None, internal)
    assert result is not None
    assert core_verifies(result["signed_tx"], p2tr_script(output_key), amounts)
    # a tampered transaction (an output amount changed after signing) fails Core
    raw = bytearray(bytes.fromhex(result["signed_tx"]))
    at = raw.find((sum(amounts) // 2).to_bytes(8, "little"))
    raw[at] ^= 1
    assert not core_verifies(raw.hex(), p2tr_script(output_key), amounts)
    for p in SIGNERS:
        assert nonces_used(c, p) == 2


def test_a_coordinator_cannot_get_a_share_for_another_message_or_key(
    psbt_key: tuple[Coordinator, dict[str, Any]],
) -> None:
    c, res = psbt_key
    internal = bytes.fromhex(res["public_key"])
    output_key = taproot_output_key(internal)
    stranger_pk = bytes.fromhex(c.dkg("bip340", "tr-x", 2, [1, 2, 3], "regtest")["public_key"])
    other_key = taproot_output_key(stranger_pk)
    req = request(internal, [40_000, 20_000])
    s0, s1 = messages_to_sign("bip340", req, public_key=internal)
    stranger = request(stranger_pk, [9_000, 9_000])
    no_network = {k: v for k, v in req.items() if k != "network"}
    nonces = commitments(c, 1)

    def hostile(p: int) -> dict[str, tuple[dict[str, Any], int, str]]:
        return {
            # input 0's item carrying input 1's sighash: the node recomputed input 0's
            "another input's sighash": (item(nonces, p, 0, req, s1, output_key), 403, "message"),
            "the concatenation": (item(nonces, p, 0, req, s0 + s1, output_key), 403, "message"),
            # aggregating under the internal (untweaked) key, or another key's output key
            "untweaked key": (item(nonces, p, 0, req, s0, internal), 422, "output_key"),
            "another output key": (item(nonces, p, 0, req, s0, other_key), 422, "output_key"),
            "no input index": (
                item(nonces, p, 0, req, s0, output_key, index=None),
                422,
                "input_index",
            ),
            "index out of range": (
                item(nonces, p, 0, req, s1, output_key, index=2),
                422,
                "input_index",
            ),
            "index not an integer": (
                item(nonces, p, 0, req, s1, output_key, index="1"),
                422,
                "input_index",
            ),
            "PSBT of another key": (
                item(nonces, p, 0, stranger, s0, output_key),
                422,
                "payload.psbt.inputs[0].witness_utxo",
            ),
            "no network": (item(nonces, p, 0, no_network, s0, output_key), 422, "network"),
            # the addresses re-labelled for another network than the one of the key's DKG
            "another network": (
                item(nonces, p, 0, {**req, "network": "mainnet"}, s0, output_key),
                422,
                "is a regtest key",
            ),
        }

    for p in SIGNERS:
        for name, (it, status, what) in hostile(p).items():
            with pytest.raises(NodeRefused) as e:
                c.call(c.nodes[p], "POST", "/v1/frost/sign", it)
            assert e.value.status == status, (name, e.value.problem)
            assert what in e.value.problem["detail"], (name, e.value.problem)
        # the batch endpoint refuses each item alone, the same way
        outcomes = batch(c, p, [it for it, _, _ in hostile(p).values()])
        assert all("problem" in o for o in outcomes), outcomes
        # nothing released: the nonce is still there, and the release log is empty
        assert nonces_used(c, p) == 0
        assert releases(c, p) == []
    # the same nonces still sign the honest item
    for p in SIGNERS:
        (ok,) = batch(c, p, [item(nonces, p, 0, req, s0, output_key)])
        assert "signature_share" in ok, ok


def test_input_index_belongs_to_btc_psbt_only_and_other_kinds_sign_untweaked(
    psbt_key: tuple[Coordinator, dict[str, Any]],
) -> None:
    c, res = psbt_key
    internal = bytes.fromhex(res["public_key"])
    output_key = taproot_output_key(internal)
    req = request(internal, [30_000, 10_000])
    s0, _ = messages_to_sign("bip340", req, public_key=internal)
    nonces = commitments(c, 1)
    # a `message` request over the sighash bytes, dressed as an input item: refused
    as_message = {
        "id": "m-1",
        "key_id": KEY,
        "kind": "message",
        "payload": {"message": "0x" + s0.hex()},
        "initiator": INITIATOR,
    }
    with pytest.raises(NodeRefused) as e:
        c.call(c.nodes[1], "POST", "/v1/frost/sign", item(nonces, 1, 0, as_message, s0, output_key))
    assert e.value.status == 422 and "input_index" in e.value.problem["detail"]
    dressed = item(nonces, 1, 0, as_message, s0, output_key, index=None)
    with pytest.raises(NodeRefused) as e:
        c.call(c.nodes[1], "POST", "/v1/frost/sign", dressed)
    assert e.value.status == 422 and "output_key" in e.value.problem["detail"]
    assert nonces_used(c, 1) == 0
    # plainly a `message`: signed, but under the internal key, so it spends nothing
    sig = c.frost_sign("bip340", KEY, list(SIGNERS), as_message, public_package(res, "bip340"))
    assert PublicKeyXOnly(internal).verify(sig, s0)
    assert not PublicKeyXOnly(output_key).verify(sig, s0)
    intent = btc.decode(req["payload"], internal_key=internal, network="regtest")
    with pytest.raises(btc.KindError):
        btc.finalize(intent, [sig, sig])
    tx = btc.assemble(intent.psbt, [sig, sig])
    assert not core_verifies(tx, p2tr_script(output_key), [30_000, 10_000])


def test_the_network_is_recorded_at_the_dkg_and_checked(module_cluster: Coordinator) -> None:
    cluster = module_cluster  # the key ids it makes (tr-main, tr-sig, tr-split) are its own
    res = cluster.dkg("bip340", "tr-main", 2, [1, 2, 3])  # no network: mainnet, as the API
    assert res["network"] == "mainnet"
    assert cluster.dkg("bip340", "tr-sig", 2, [1, 2, 3], "signet")["network"] == "signet"
    for scheme, network in (("ed25519", "mainnet"), ("bip340", "litecoin")):
        spec = {
            "session_id": secrets.token_hex(32),
            "kind": "dkg",
            "key_id": "tr-bad",
            "scheme": scheme,
            "threshold": 2,
            "participants": [1, 2, 3],
            "network": network,
        }
        with pytest.raises(NodeRefused) as e:
            cluster.call(cluster.nodes[1], "POST", "/v1/sessions", spec)
        assert e.value.status == 422 and "network" in e.value.problem["detail"], e.value.problem
    # nodes told different networks cannot agree on a key (the network is in the context)
    sid = secrets.token_hex(32)
    specs = {
        p: {
            "session_id": sid,
            "kind": "dkg",
            "key_id": "tr-split",
            "scheme": "bip340",
            "threshold": 2,
            "participants": [1, 2, 3],
            "network": "mainnet" if p == 1 else "testnet",
        }
        for p in (1, 2, 3)
    }
    first = {p: cluster.call(cluster.nodes[p], "POST", "/v1/sessions", specs[p]) for p in specs}

    def deliver(t: int, envs: list[Any]) -> dict[str, Any]:
        path = f"/v1/sessions/{sid}/envelopes"
        return dict(cluster.call(cluster.nodes[t], "POST", path, {"envelopes": envs}))

    relay(list(specs), first, deliver)
    out = {p: cluster.call(cluster.nodes[p], "GET", f"/v1/sessions/{sid}") for p in specs}
    assert all(r["status"] == "failed" for r in out.values()), out
    for p in specs:  # no key came of it
        with pytest.raises(NodeRefused) as e:
            cluster.commitments(p, "tr-split")
        assert e.value.status == 404, e.value.problem
