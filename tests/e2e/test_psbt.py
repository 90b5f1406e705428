"""``btc-psbt`` through the HTTP API, the coordinator and real node processes, judged by
code that is not ours: Bitcoin Core's script interpreter (py-bitcoinkernel) accepts the
finalized key-path spend and refuses a tampered one; libsecp256k1 (coincurve) verifies each
input's signature under the BIP-86 output key; btclib derives the same output key and
address on its own.

No key is ever whole: the key is a 2-of-3 FROST(BIP-340) key of the cluster's DKG, and each
node tweaks its own share to the output key.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import replace
from typing import Any

import pytest
from btclib import b32
from btclib.key import PubKeyData
from btclib.script import taproot
from coincurve import PublicKeyXOnly

from custody import policy as pol
from custody.client import CustodyClient
from custody.kinds.addresses import p2tr_script, taproot_output_key
from custody.models import KeyOut
from custody.signing import messages_to_sign
from tests.custody.kinds.btc_build import b64, build_psbt
from tests.custody.kinds.test_chain_acceptance import core_verifies
from tests.e2e.conftest import Live, current_governance, install_policy
from tests.e2e.test_cluster import GarbageProxy


@pytest.fixture(scope="module")
def psbt_key(live: Live) -> KeyOut:
    """The one place the signing key and its governance are set up: a 2-of-3 BIP-340 key
    created over the API on regtest, and a governance version whose first rule allows any
    ``btc-psbt`` of this key (these tests pay random outputs, not the demo allowlist)."""
    key = live.admin.create_key("bip340", 2, network="regtest")
    assert key.status == "active" and key.network == "regtest", key
    cur, _ = current_governance(live)
    rule = pol.Rule("psbt-tests", "allow", kinds=frozenset({"btc-psbt"}), keys=frozenset({key.id}))
    install_policy(live, replace(cur.policy, rules=(rule, *cur.policy.rules)))
    return key


def internal_key(key: KeyOut) -> bytes:
    assert key.public_key is not None
    return bytes.fromhex(key.public_key)


def two_input_psbt(key: KeyOut, amounts: list[int]) -> tuple[dict[str, str], list[bytes]]:
    """A PSBT spending two of ``key``'s BIP-86 outputs to a P2TR output (its own, change)
    and a P2WPKH output; the scripts of both outputs are returned."""
    internal = internal_key(key)
    ins = [(secrets.token_bytes(32), 3 * i + 1, a, 0xFFFFFFFE) for i, a in enumerate(amounts)]
    outs = [
        (p2tr_script(taproot_output_key(internal)), amounts[0] - 1_000),
        (b"\x00\x14" + secrets.token_bytes(20), amounts[1] - 1_000),
    ]
    return b64(build_psbt(internal, ins, outs, locktime=100)), [s for s, _ in outs]


def test_address_is_bip86_by_btclib(live: Live, psbt_key: KeyOut) -> None:
    key = live.auditor.get_key(psbt_key.id)
    output_key, _ = taproot.output_pubkey(PubKeyData(b"\x02" + internal_key(key)))
    assert output_key == taproot_output_key(internal_key(key))
    assert key.addresses == {"bitcoin": b32.p2tr(output_key, "regtest")}
    assert key.addresses["bitcoin"].startswith("bcrt1p")


def test_psbt_signed_over_the_api_passes_bitcoin_core(live: Live, psbt_key: KeyOut) -> None:
    amounts = [81_000, 19_500]
    payload, out_scripts = two_input_psbt(psbt_key, amounts)
    sr = live.requester.sign(psbt_key.id, kind="btc-psbt", payload=payload)
    assert sr.status == "signed", sr
    assert sr.signers is not None and len(sr.signers) == 2
    assert sr.result is not None and sr.result.signature is None
    internal = internal_key(psbt_key)
    output_key = taproot_output_key(internal)
    spk = p2tr_script(output_key)
    # each input's signature: 64 bytes, in input order, verified by libsecp256k1 under x(Q)
    body = {"id": sr.id, "key_id": psbt_key.id, "kind": "btc-psbt", "payload": payload}
    sighashes = messages_to_sign("bip340", {**body, "network": "regtest"}, public_key=internal)
    assert sr.message == b"".join(sighashes).hex()
    assert sr.signature is not None and len(sr.signature) == 2 * 64 * 2
    sigs = [bytes.fromhex(sr.signature[128 * i : 128 * i + 128]) for i in range(2)]
    for sig, m in zip(sigs, sighashes, strict=True):
        assert PublicKeyXOnly(output_key).verify(sig, m)
        assert not PublicKeyXOnly(internal).verify(sig, m)  # the tweak was applied
    # Bitcoin Core's script verification of every input
    signed = sr.result.signed_tx
    assert core_verifies(signed, spk, amounts)
    assert sigs[0].hex() in signed and sigs[1].hex() in signed
    assert out_scripts[1].hex() in signed  # the P2WPKH output
    # tampered: an output amount, a signature bit, a prevout amount
    raw = bytearray(bytes.fromhex(signed))
    at = raw.find((amounts[1] - 1_000).to_bytes(8, "little"))
    raw[at] ^= 1
    assert not core_verifies(raw.hex(), spk, amounts)
    flipped = signed.replace(sigs[1].hex(), sigs[1][:-1].hex() + f"{sigs[1][-1] ^ 1:02x}")
    assert not core_verifies(flipped, spk, amounts)
    assert not core_verifies(signed, spk, [amounts[0] + 1, amounts[1]])
    # read back: the same result, re-assembled from the stored (re-verified) signature
    again = live.auditor.get_sign_request(sr.id)
    assert again.status == "signed" and again.result is not None
    assert again.result.signed_tx == signed and again.signature == sr.signature
    # audited as signed, and the audit/integrity report (which re-verifies it) is clean
    entries = [e for e in live.auditor.audit(limit=200) if e.subject == sr.id]
    assert [e.action for e in entries if e.action == "sign.signed"] == ["sign.signed"]
    report = live.auditor.verify_audit()
    assert report.ok, report
    # every node co-signs the audit head: each signer's k release-log entries (one per
    # input, the request's digest and signer set) are matched by the one sign.signed entry
    cp = live.admin.checkpoint_audit(idempotency_key=secrets.token_hex(8))
    assert set(cp.signatures) == {"node-1", "node-2", "node-3"}, cp


def _refused(c: CustodyClient, body: dict[str, Any]) -> dict[str, Any]:
    r = c.http.post(
        "/v1/sign-requests", json=body, headers={"Idempotency-Key": secrets.token_hex(16)}
    )
    assert r.status_code == 422, (body, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    doc: dict[str, Any] = r.json()
    return doc


def test_hostile_psbts_get_a_422_naming_the_field_and_nothing_is_signed(
    live: Live, psbt_key: KeyOut
) -> None:
    payload, _ = two_input_psbt(psbt_key, [10_000, 10_000])
    stranger = live.admin.create_key("bip340", 2, network="regtest")
    foreign, _ = two_input_psbt(stranger, [10_000, 10_000])
    raw = base64.b64decode(payload["psbt"])
    before = sum(1 for _ in live.auditor.list_sign_requests())
    k = psbt_key.id
    cases: list[tuple[dict[str, Any], str]] = [
        ({"key_id": k, "kind": "btc-psbt", "payload": payload, "network": "mainnet"}, "network"),
        (
            {"key_id": k, "kind": "btc-psbt", "payload": foreign},
            "payload.psbt.inputs[0].witness_utxo",
        ),
        (
            {"key_id": k, "kind": "btc-psbt", "payload": {"psbt": payload["psbt"][:-8]}},
            "payload.psbt",
        ),
        (
            {
                "key_id": k,
                "kind": "btc-psbt",
                "payload": {"psbt": base64.b64encode(raw + b"\x00").decode()},
            },
            "payload.psbt",
        ),
        ({"key_id": k, "kind": "btc-psbt", "payload": {"tx": "0x02"}}, "payload.tx"),
        ({"key_id": k, "kind": "btc-psbt", "payload": payload, "message": "00" * 64}, "message"),
        ({"key_id": live.key("ed25519").id, "kind": "btc-psbt", "payload": payload}, "scheme"),
        (
            {"key_id": live.key("ecdsa-secp256k1").id, "kind": "btc-psbt", "payload": payload},
            "scheme",
        ),
        (
            {"key_id": k, "kind": "message", "payload": {"message": "0x00"}, "network": "regtest"},
            "network",
        ),
    ]
    for body, field in cases:
        doc = _refused(live.requester, body)
        assert doc.get("field") == field, (body, doc)
    assert sum(1 for _ in live.auditor.list_sign_requests()) == before
    # the key's own network, given explicitly, is accepted
    sr = live.requester.sign(k, kind="btc-psbt", payload=payload, network="regtest")
    assert sr.status == "signed", sr


def test_a_garbage_node_is_blamed_and_every_input_signed_again_without_it(
    live: Live, psbt_key: KeyOut
) -> None:
    """Node 2 behind a proxy that turns its shares into garbage: an attempt that picked it
    fails, blames node 2 alone, and the retry signs every input on another signer set."""
    real = live.cluster.node_url(2)
    spk = p2tr_script(taproot_output_key(internal_key(psbt_key)))
    with GarbageProxy(real, "bad-share") as proxy:
        live.admin.enrol_node("node-2", proxy.url)
        try:
            blamed = []
            for i in range(40):  # the coordinator picks 2 of 3 at random
                amounts = [20_000 + i, 30_000]
                payload, _ = two_input_psbt(psbt_key, amounts)
                sr = live.requester.sign(psbt_key.id, kind="btc-psbt", payload=payload)
                assert sr.status == "signed", sr
                assert sr.signers is not None and 2 not in sr.signers or not sr.blamed
                assert sr.result is not None
                assert core_verifies(sr.result.signed_tx, spk, amounts)
                blamed += sr.blamed
                if blamed:
                    break
                time.sleep(0.05)
            assert blamed, "node-2 was never picked in 40 tries"
            assert {b.node_id for b in blamed} == {"node-2"}
            assert all("invalid signature share" in b.reason for b in blamed), blamed
        finally:
            live.admin.enrol_node("node-2", real)
