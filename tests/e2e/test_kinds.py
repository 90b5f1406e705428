"""Chain-aware request kinds through the HTTP API, the coordinator and real node processes,
judged by code that is not ours (eth-account, eth-tester on py-evm, eth-keys, btclib,
coincurve / PyNaCl via :func:`custody.demo.verify_independently`).

No key is ever whole: the signing key is a 2-of-3 DKLs23 key of the cluster, and the
eth-tester funding comes from the tool's own genesis account. Transactions go to a
destination on the dev cluster's demo allowlist, under its limit, so the policy signs them
at once (tests/api/test_approvals.py has the ones that wait for approvals).
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import rlp
from btclib import b32
from btclib.key import PubKeyData
from btclib.script import taproot
from eth.vm.forks.london.transactions import UnsignedDynamicFeeTransaction
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys import keys as eth_keys
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from custody.client import CustodyClient, CustodyError
from custody.cluster import DEMO_ETH_DESTINATIONS
from custody.demo import verify_independently
from custody.models import KeyOut
from tests.e2e.conftest import Live

ECDSA = "ecdsa-secp256k1"
ALLOWED = bytes.fromhex(DEMO_ETH_DESTINATIONS[1][2:])  # on the demo policy's allowlist


@pytest.fixture(scope="module")
def live(shared_live: Live) -> Live:
    """This module's keys on the session's shared cluster (tests/e2e/conftest.py
    ``shared_live``): it only makes its own keys and signs, under the genesis's demo policy."""
    return shared_live


def unsigned_1559(chain_id: int, base_fee: int, to: bytes, value: int, nonce: int = 0) -> str:
    """Built by py-evm (not by our encoder)."""
    tx = UnsignedDynamicFeeTransaction(
        chain_id=chain_id,
        nonce=nonce,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=2 * base_fee + 10**9,
        gas=21_000,
        to=to,
        value=value,
        data=b"",
        access_list=[],
    )
    return "0x" + tx.get_message_for_signing().hex()


def eth_address_by_eth_keys(key: KeyOut) -> str:
    import coincurve

    assert key.public_key is not None
    point = coincurve.PublicKey(bytes.fromhex(key.public_key)).format(compressed=False)
    return str(eth_keys.PublicKey(point[1:]).to_checksum_address())


@pytest.fixture(scope="module")
def chain() -> EthereumTester:
    return EthereumTester(PyEVMBackend())


def test_ecdsa_key_shows_its_ethereum_address(live: Live) -> None:
    key = live.admin.get_key(live.key(ECDSA).id)
    assert key.network is None
    assert key.addresses == {"ethereum": eth_address_by_eth_keys(key)}
    assert key.addresses["ethereum"] == to_checksum_address(key.addresses["ethereum"])


@pytest.mark.parametrize("network", [None, "testnet", "signet", "regtest"])
def test_bip340_key_shows_its_bip86_address_on_its_network(live: Live, network: Any) -> None:
    key = live.admin.create_key("bip340", 2, network=network)
    assert key.status == "active", key
    key = live.auditor.get_key(key.id)
    assert key.network == (network or "mainnet")
    assert key.public_key is not None
    # btclib: a second taproot tweak and bech32m encoder (it names signet "testnet")
    output_key, _ = taproot.output_pubkey(PubKeyData(b"\x02" + bytes.fromhex(key.public_key)))
    net = {"signet": "testnet"}.get(key.network, key.network)
    assert key.addresses == {"bitcoin": b32.p2tr(output_key, net)}
    prefix = {"mainnet": "bc1p", "testnet": "tb1p", "signet": "tb1p", "regtest": "bcrt1p"}
    assert key.addresses["bitcoin"].startswith(prefix[key.network])


def test_network_is_refused_for_other_schemes_and_unknown_networks(live: Live) -> None:
    for scheme, network in ((ECDSA, "testnet"), ("ed25519", "mainnet"), ("bip340", "litecoin")):
        r = live.admin.http.post(
            "/v1/keys",
            json={"scheme": scheme, "threshold": 2, "network": network},
            headers={"Idempotency-Key": secrets.token_hex(16)},
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        doc = r.json()
        if network == "litecoin":
            assert doc["errors"][0]["loc"] == ["body", "network"], doc
        else:
            assert doc["type"].endswith(":invalid-network") and doc["field"] == "network", doc
    assert live.auditor.get_key(live.key("ed25519").id).addresses == {}


def test_evm_tx_signed_over_the_api_is_recovered_and_mined(
    live: Live, chain: EthereumTester
) -> None:
    key = live.key(ECDSA)
    sender = live.admin.get_key(key.id).addresses["ethereum"]
    funder = chain.get_accounts()[0]  # eth-tester's own genesis account
    chain.send_transaction({"from": funder, "to": sender, "value": 10**18, "gas": 21000})
    chain_id = chain.backend.chain.chain_id
    to = ALLOWED
    for nonce, value in enumerate((12345, 67890)):
        base_fee = chain.get_block_by_number("pending")["base_fee_per_gas"]
        tx = unsigned_1559(chain_id, base_fee, to, value, nonce)
        sr = live.requester.sign(key.id, kind="evm-tx", payload={"tx": tx})
        assert sr.status == "signed", sr
        assert sr.kind == "evm-tx" and sr.message == keccak(bytes.fromhex(tx[2:])).hex()
        assert sr.result is not None and sr.result.signature is not None
        sig = sr.result.signature
        assert sr.signature == sig.r[2:] + sig.s[2:] and sig.y_parity == sr.recovery_id
        signed = sr.result.signed_tx
        assert signed.startswith("0x02")
        # the signed transaction decodes to the chain id, nonce and destination asked for
        fields = rlp.decode(bytes.fromhex(signed[4:]))
        assert int.from_bytes(fields[0], "big") == chain_id == 131277322940537
        assert int.from_bytes(fields[1], "big") == nonce and fields[5] == to
        assert Account.recover_transaction(signed) == sender
        tx_hash = chain.send_raw_transaction(signed)
        assert chain.get_transaction_receipt(tx_hash)["status"] == 1
        mined = chain.get_transaction_by_hash(tx_hash)
        assert mined["from"] == sender and mined["chain_id"] == chain_id
        # the GET answers the same result
        assert live.auditor.get_sign_request(sr.id).result == sr.result
    assert chain.get_balance(to_checksum_address(to)) == 12345 + 67890
    assert live.auditor.verify_audit().ok is True


def test_message_for_ecdsa_is_an_eip191_personal_sign(live: Live) -> None:
    key = live.key(ECDSA)
    address = live.admin.get_key(key.id).addresses["ethereum"]
    text = "I control this address: tp-wallet-custody " + secrets.token_hex(4)
    sr = live.requester.sign(
        key.id, kind="message", payload={"message": "0x" + text.encode().hex()}
    )
    assert sr.status == "signed", sr
    assert sr.result is None and sr.recovery_id in (0, 1)
    signature = bytes.fromhex(sr.signature) + bytes([27 + sr.recovery_id])
    assert Account.recover_message(encode_defunct(text=text), signature=signature) == address


@pytest.mark.parametrize("scheme", ["ed25519", "bip340"])
def test_message_for_frost_keys_signs_the_bytes(live: Live, scheme: str) -> None:
    key = live.key(scheme)
    msg = b"attestation " + secrets.token_bytes(8)
    sr = live.requester.sign(key.id, kind="message", payload={"message": "0x" + msg.hex()})
    assert sr.status == "signed", sr
    assert sr.message == msg.hex() and sr.result is None
    assert key.public_key is not None
    ok, by = verify_independently(scheme, key.public_key, msg, sr.signature, None)
    assert ok, by


# -- hostile clients ------------------------------------------------------------------------


def _count(c: CustodyClient) -> int:
    return sum(1 for _ in c.list_sign_requests())


def _signing_audit(c: CustodyClient) -> int:
    return sum(1 for e in c.audit(limit=200) if e.action.startswith("sign."))


def _refused(c: CustodyClient, body: dict[str, Any]) -> dict[str, Any]:
    r = c.http.post(
        "/v1/sign-requests", json=body, headers={"Idempotency-Key": secrets.token_hex(16)}
    )
    assert r.status_code == 422, (body, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    doc: dict[str, Any] = r.json()
    assert doc["status"] == 422 and doc["type"] and doc["title"]
    return doc


def test_hostile_payloads_get_a_422_problem_and_nothing_is_signed(
    live: Live, chain: EthereumTester
) -> None:
    key, ed = live.key(ECDSA), live.key("ed25519")
    good = unsigned_1559(chain.backend.chain.chain_id, 10**9, secrets.token_bytes(20), 1)
    other = unsigned_1559(chain.backend.chain.chain_id, 10**9, secrets.token_bytes(20), 2)
    legacy = "0x" + rlp.encode([0, 10**9, 21000, bytes(20), 1, b""]).hex()
    before = _count(live.auditor)
    audit_before = _signing_audit(live.auditor)
    cases: list[tuple[dict[str, Any], str]] = [
        # swapped payloads: another kind's payload, or a message naming another tx's digest
        ({"key_id": key.id, "kind": "evm-tx", "payload": {"message": "0x01"}}, "payload.message"),
        ({"key_id": key.id, "kind": "message", "payload": {"tx": good}}, "payload.tx"),
        (
            {
                "key_id": key.id,
                "kind": "evm-tx",
                "payload": {"tx": good},
                "message": keccak(bytes.fromhex(other[2:])).hex(),
            },
            "message",
        ),
        # malformed, legacy, trailing bytes, an empty one, an ed25519 key for a transaction
        ({"key_id": key.id, "kind": "evm-tx", "payload": {"tx": "0x02zz"}}, "payload.tx"),
        ({"key_id": key.id, "kind": "evm-tx", "payload": {"tx": good[:-2]}}, "payload.tx"),
        ({"key_id": key.id, "kind": "evm-tx", "payload": {"tx": legacy}}, "payload.tx.type"),
        ({"key_id": key.id, "kind": "evm-tx", "payload": {"tx": good + "00"}}, "payload.tx"),
        ({"key_id": key.id, "kind": "evm-tx", "payload": {"tx": "0x"}}, "payload.tx"),
        ({"key_id": key.id, "kind": "evm-tx"}, "payload"),
        ({"key_id": key.id, "kind": "evm-tx", "payload": "0x02"}, "payload"),
        ({"key_id": ed.id, "kind": "evm-tx", "payload": {"tx": good}}, "scheme"),
        (
            {"key_id": key.id, "kind": "evm-tx", "payload": {"tx": good}, "memo": "x"},
            "memo",
        ),
        ({"key_id": key.id, "kind": "message", "payload": {"message": "zz"}}, "payload.message"),
    ]
    for body, field in cases:
        doc = _refused(live.requester, body)
        # a member of the wrong type or an unknown one: the schema's 422 names it in errors
        named = doc.get("field") or ".".join(map(str, doc["errors"][0]["loc"][1:]))
        assert named == field, (body, doc.get("errors"), doc.get("detail"))
    assert _count(live.auditor) == before  # no request was even created
    assert _signing_audit(live.auditor) == audit_before
    with pytest.raises(CustodyError) as e:  # the SDK raises the problem typed
        live.requester.sign(key.id, kind="evm-tx", payload={"tx": legacy})
    assert e.value.status == 422


def test_digest_of_a_signed_evm_tx_is_bound_to_the_payload(live: Live) -> None:
    """The stored message is keccak of exactly the bytes in the payload (no client digest
    taken on trust): the same tx twice gives the same message, another tx another one."""
    key = live.key(ECDSA)
    tx = unsigned_1559(1, 10**9, ALLOWED, 0, nonce=7)
    sr = live.requester.sign(key.id, kind="evm-tx", payload={"tx": tx})
    assert sr.status == "signed", sr
    assert sr.message == keccak(bytes.fromhex(tx[2:])).hex()
    assert sr.result is not None
    assert Account.recover_transaction(sr.result.signed_tx) == eth_address_by_eth_keys(key)
