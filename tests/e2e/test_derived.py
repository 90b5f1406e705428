"""Signing under a derived key (issue 13) through the HTTP API, the SDK, the CLI, the
coordinator and real node processes, judged by code that is not ours: the child keys come
from embit's BIP-32 CKDpub over our xpub; signatures are verified by eth-account (EIP-191,
EIP-1559 recovery, mined by eth-tester on py-evm), libsecp256k1 (coincurve, BIP-340) and
Bitcoin Core's script interpreter (py-bitcoinkernel); Ed25519 (our additive-tweak scheme,
which no other library implements) by libsodium under the child key the API reports.

The sign request names only ``derivation_path``: each node derives its own share tweak.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import replace

import nacl.signing
import pytest
from coincurve import PublicKeyXOnly
from embit.bip32 import HDKey
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils.address import to_checksum_address

from custody import policy as pol
from custody import receipts
from custody.client import CustodyError
from custody.kinds.addresses import ethereum_address, p2tr_script, taproot_output_key
from custody.models import KeyOut
from tests.custody.kinds.btc_build import b64, build_psbt
from tests.custody.kinds.test_chain_acceptance import core_verifies
from tests.e2e.conftest import Live, current_governance, install_policy
from tests.e2e.test_kinds import ALLOWED, unsigned_1559

PATHS = ("m/0/0", "m/0/7", "m/1/3")


def xpub(live: Live, key: KeyOut) -> HDKey:
    r = live.auditor.http.get(f"/v1/keys/{key.id}/xpub")
    assert r.status_code == 200, r.text
    return HDKey.from_base58(r.json()["xpub"])


def child_sec(live: Live, key: KeyOut, path: str) -> bytes:
    """The child's SEC1 key by embit (independent), checked against our derive endpoint."""
    sec = bytes(xpub(live, key).derive(path).key.sec())
    shown = live.auditor.derive_key(key.id, path)
    want = sec.hex() if key.scheme == "ecdsa-secp256k1" else sec[1:].hex()
    assert shown.public_key == want and shown.path == path
    return sec


def message(scheme: str, path: str) -> bytes:
    return f"{scheme} under {path} {secrets.token_hex(4)}".encode()


@pytest.mark.parametrize("path", PATHS)
def test_ecdsa_and_bip340_sign_under_each_path(live: Live, path: str) -> None:
    ec = live.key("ecdsa-secp256k1")
    child = child_sec(live, ec, path)
    text = message("ecdsa", path)
    sr = live.requester.sign(
        ec.id, kind="message", payload={"message": "0x" + text.hex()}, derivation_path=path
    )
    assert sr.status == "signed", sr
    assert sr.derivation_path == path
    assert sr.recovery_id is not None
    sig = bytes.fromhex(sr.signature or "") + bytes([27 + sr.recovery_id])
    recovered = Account.recover_message(encode_defunct(primitive=text), signature=sig)
    assert (
        recovered == ethereum_address(child) != ethereum_address(bytes.fromhex(ec.public_key or ""))
    )

    tr = live.key("bip340")
    xonly = child_sec(live, tr, path)[1:]
    msg = message("bip340", path)
    sr = live.requester.sign(
        tr.id, kind="message", payload={"message": "0x" + msg.hex()}, derivation_path=path
    )
    assert sr.status == "signed", sr
    sig = bytes.fromhex(sr.signature or "")
    assert PublicKeyXOnly(xonly).verify(sig, msg)  # libsecp256k1 under embit's child
    assert not PublicKeyXOnly(bytes.fromhex(tr.public_key or "")).verify(sig, msg)
    # read back (the coordinator re-verifies a stored signature under the child key), and
    # the receipt names the child key the nodes released for
    assert live.auditor.get_sign_request(sr.id).status == "signed"
    receipt = live.auditor.get_receipt(sr.id)
    assert receipt.signature is not None and receipt.signature.public_key == xonly.hex()
    # offline verification against the governance, under the child key the verifier
    # derived itself (embit); the root key is refused
    g, _ = current_governance(live)
    doc = receipt.model_dump(mode="json", exclude_none=True)
    ok = receipts.verify_receipt(doc, g, public_key=xonly)
    assert ok.signature_checked and ok.body.request_id == sr.id
    with pytest.raises(receipts.ReceiptError):
        receipts.verify_receipt(doc, g, public_key=bytes.fromhex(tr.public_key or ""))


@pytest.mark.parametrize("path", PATHS)
def test_ed25519_signs_under_each_path_with_the_additive_tweak(live: Live, path: str) -> None:
    ed = live.key("ed25519")
    shown = live.auditor.derive_key(ed.id, path)
    assert shown.xpub is None and shown.public_key != ed.public_key
    msg = message("ed25519", path)
    sr = live.requester.sign(
        ed.id, kind="message", payload={"message": "0x" + msg.hex()}, derivation_path=path
    )
    assert sr.status == "signed", sr
    nacl.signing.VerifyKey(bytes.fromhex(shown.public_key)).verify(
        msg, bytes.fromhex(sr.signature or "")
    )


def test_evm_tx_under_a_path_recovers_to_the_child_and_is_mined(live: Live) -> None:
    chain = EthereumTester(PyEVMBackend())
    key = live.key("ecdsa-secp256k1")
    path = "m/0/7"
    sender = ethereum_address(child_sec(live, key, path))
    assert live.auditor.derive_key(key.id, path).addresses["ethereum"] == sender
    funder = chain.get_accounts()[0]
    chain.send_transaction({"from": funder, "to": sender, "value": 10**18, "gas": 21000})
    base_fee = chain.get_block_by_number("pending")["base_fee_per_gas"]
    tx = unsigned_1559(chain.backend.chain.chain_id, base_fee, ALLOWED, 4242)
    sr = live.requester.sign(key.id, kind="evm-tx", payload={"tx": tx}, derivation_path=path)
    assert sr.status == "signed", sr
    assert sr.result is not None
    assert Account.recover_transaction(sr.result.signed_tx) == sender
    tx_hash = chain.send_raw_transaction(sr.result.signed_tx)
    assert chain.get_transaction_receipt(tx_hash)["status"] == 1
    assert chain.get_transaction_by_hash(tx_hash)["from"] == sender
    assert chain.get_balance(to_checksum_address(ALLOWED)) == 4242
    # the same transaction for the root key is another intent: it signs under the root
    sr_root = live.requester.sign(key.id, kind="evm-tx", payload={"tx": tx})
    assert sr_root.status == "signed" and sr_root.result is not None
    assert Account.recover_transaction(sr_root.result.signed_tx) != sender


def test_btc_psbt_spending_the_childs_bip86_output_passes_bitcoin_core(live: Live) -> None:
    key = live.admin.create_key("bip340", 2, network="regtest")
    assert key.status == "active", key
    cur, _ = current_governance(live)
    rule = pol.Rule(
        "derived-psbt", "allow", kinds=frozenset({"btc-psbt"}), keys=frozenset({key.id})
    )
    install_policy(live, replace(cur.policy, rules=(rule, *cur.policy.rules)))
    path = "m/1/3"
    child = child_sec(live, key, path)[1:]  # x-only internal key of the child
    output_key = taproot_output_key(child)  # BIP-86 over the derived child
    shown = live.auditor.derive_key(key.id, path)
    assert shown.addresses["bitcoin"].startswith("bcrt1p")
    amounts = [80_000, 15_000]
    ins = [(secrets.token_bytes(32), i, a, 0xFFFFFFFD) for i, a in enumerate(amounts)]
    outs = [
        (p2tr_script(output_key), 50_000),
        (b"\x00\x14" + secrets.token_bytes(20), 44_000),
    ]
    payload = b64(build_psbt(child, ins, outs))
    # the root key cannot spend the child's outputs: its nodes decode the inputs as foreign
    with pytest.raises(CustodyError) as e:
        live.requester.sign(key.id, kind="btc-psbt", payload=payload)
    assert e.value.status == 422 and "witness_utxo" in str(e.value)
    sr = live.requester.sign(key.id, kind="btc-psbt", payload=payload, derivation_path=path)
    assert sr.status == "signed", sr
    assert sr.result is not None
    sigs = bytes.fromhex(sr.signature or "")
    assert len(sigs) == 64 * len(amounts)
    assert core_verifies(sr.result.signed_tx, p2tr_script(output_key), amounts)


def test_hardened_and_malformed_paths_are_a_422_and_nothing_is_stored(live: Live) -> None:
    key = live.key("bip340")
    before = sum(1 for _ in live.auditor.list_sign_requests())
    body = {"key_id": key.id, "kind": "message", "payload": {"message": "0x00"}}
    for path, slug, detail in (
        ("m/0'/1", "hardened-derivation", "path step 1 is hardened"),
        ("m/0/2147483648", "hardened-derivation", "path step 2 is hardened"),
        ("m/01", "invalid-sign-request", "canonical"),
        ("0/1", "invalid-sign-request", "must start with 'm/'"),
    ):
        r = live.requester.http.post(
            "/v1/sign-requests",
            json={**body, "derivation_path": path},
            headers={"Idempotency-Key": secrets.token_hex(16)},
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        doc = r.json()
        assert doc["type"].endswith(slug) and doc["field"] == "derivation_path", doc
        assert detail in doc["detail"], doc
        if slug == "hardened-derivation":
            assert doc["step"] == (1 if "0'" in path else 2)
    assert sum(1 for _ in live.auditor.list_sign_requests()) == before
    assert live.auditor.verify_audit().ok is True


def test_cli_sign_with_path(live: Live) -> None:
    key = live.key("ecdsa-secp256k1")
    path = "m/0/7"
    child = child_sec(live, key, path)
    text = "cli " + secrets.token_hex(4)
    r = subprocess.run(  # noqa: S603 - our own argv
        [
            sys.executable,
            "-m",
            "custody.cli",
            "sign",
            key.id,
            "--message",
            text,
            "--path",
            path,
            "--json",
            "--cluster",
            str(live.cluster.cluster_file),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "signed" and doc["derivation_path"] == path
    sig = bytes.fromhex(doc["signature"]) + bytes([27 + doc["recovery_id"]])
    assert Account.recover_message(encode_defunct(text=text), signature=sig) == ethereum_address(
        child
    )


def test_a_derived_request_over_the_limit_is_approved_with_the_cli_and_signed(
    live: Live,
) -> None:
    """The approvers' CLI derives the child key itself from the key's public values; the
    approvals bind the path and the child's address (the intent digest), and every node
    checks them under the child key it derived."""
    from custody.cluster import ETH_LIMIT
    from tests.e2e.test_approve_cli import cli as approve_cli
    from tests.e2e.test_approve_cli import cluster_json, key_file, unsigned_tx

    key = live.key("ecdsa-secp256k1")
    path = "m/0/9"
    sender = ethereum_address(child_sec(live, key, path))
    tx = unsigned_tx(2 * ETH_LIMIT, 0)
    sr = live.requester.sign(
        key.id, kind="evm-tx", payload={"tx": tx}, derivation_path=path, wait=False
    )
    assert sr.status == "pending_approval", sr
    for i in (0, 1):
        out = approve_cli(
            live, "approve", sr.id, "--key-file", key_file(live, i), "--yes",
            "--cluster", cluster_json(live),
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"child {path}" in out.stdout, out.stdout
    for _ in range(300):
        got = live.auditor.get_sign_request(sr.id)
        if got.status not in ("signing", "pending_approval"):
            break
        time.sleep(0.1)
    assert got.status == "signed", got
    assert got.result is not None
    assert Account.recover_transaction(got.result.signed_tx) == sender
