"""``custody.signing`` for the decoded kinds: the message comes from the decoders, fields
are named ``payload.<path>``, and a signature only becomes a transaction with y_parity 0/1."""

from __future__ import annotations

import pytest
from eth.vm.forks.london.transactions import UnsignedDynamicFeeTransaction
from eth_account import Account
from eth_utils.crypto import keccak

from custody.domain import DECODED_KINDS, KINDS
from custody.kinds import KINDS as DECODER_KINDS
from custody.kinds.addresses import ethereum_address
from custody.kinds.message import eip191_digest
from custody.signing import SignRequestError, message_to_sign, sign_result
from mpc.testing import run_keygen_local
from tests.custody.kinds.test_chain_acceptance import dkls_sign

TX = "0x" + UnsignedDynamicFeeTransaction(
    chain_id=5, nonce=3, max_priority_fee_per_gas=1, max_fee_per_gas=2, gas=21_000,
    to=b"\x11" * 20, value=7, data=b"", access_list=[],
).get_message_for_signing().hex()  # fmt: skip


def req(kind: str, **extra: object) -> dict[str, object]:
    return {"id": "sr-1", "key_id": "k-1", "kind": kind, **extra}


def test_decoded_kinds_are_domain_kinds_with_decoders() -> None:
    assert set(DECODED_KINDS) <= set(KINDS) and set(DECODED_KINDS) <= set(DECODER_KINDS)


def test_messages_come_from_the_decoders() -> None:
    tx = req("evm-tx", payload={"tx": TX})
    assert message_to_sign("ecdsa-secp256k1", tx) == keccak(bytes.fromhex(TX[2:]))
    m = req("message", payload={"message": "0x6869"})
    assert message_to_sign("ecdsa-secp256k1", m) == eip191_digest(b"hi")
    assert message_to_sign("ed25519", m) == message_to_sign("bip340", m) == b"hi"
    # a matching "message" member is accepted, another one refused
    assert message_to_sign("ed25519", {**m, "message": "6869"}) == b"hi"
    with pytest.raises(SignRequestError) as e:
        message_to_sign("ed25519", {**m, "message": "6870"})
    assert e.value.field == "message"


def test_the_coordinators_members_change_no_message() -> None:
    """Every request the coordinator relays carries ``initiator`` and ``approvals`` (the
    wire contract with the nodes); they are allowed members and sign nothing themselves."""
    extra = {"initiator": "payments-bot", "approvals": ["oA=="]}
    for scheme, r in (
        ("ecdsa-secp256k1", req("evm-tx", payload={"tx": TX})),
        ("ed25519", req("message", payload={"message": "0x6869"})),
        ("ed25519", req("raw", message="6869")),
        ("ed25519", req("payment", payload={"amount": "1.00"})),
    ):
        assert message_to_sign(scheme, {**r, **extra}) == message_to_sign(scheme, r)


@pytest.mark.parametrize(
    ("scheme", "request_", "field"),
    [
        ("ecdsa-secp256k1", req("evm-tx", payload={"tx": TX + "00"}), "payload.tx"),
        ("ecdsa-secp256k1", req("evm-tx", payload={"tx": "0xc0"}), "payload.tx.type"),
        ("ecdsa-secp256k1", req("evm-tx", payload={"tx": TX, "x": 1}), "payload.x"),
        ("ecdsa-secp256k1", req("evm-tx", payload=[]), "payload"),
        ("ecdsa-secp256k1", req("evm-tx"), "payload"),
        ("ecdsa-secp256k1", req("evm-tx", payload={"tx": TX}, memo="m"), "memo"),
        ("bip340", req("evm-tx", payload={"tx": TX}), "scheme"),
        ("ed25519", req("message", payload={"message": "6869"}), "payload.message"),
        ("ed25519", {**req("message", payload={"message": "0x"}), "id": "bad id"}, "id"),
    ],
)
def test_refusals_name_the_field(scheme: str, request_: dict[str, object], field: str) -> None:
    with pytest.raises(SignRequestError) as e:
        message_to_sign(scheme, request_)
    assert e.value.field == field


def test_sign_result_assembles_and_refuses_recovery_ids_2_and_3() -> None:
    """A 2-of-3 DKLs23 key (in-process DKG; never whole) signs; the result must be what
    eth-account recovers, and no y_parity but 0/1 is usable."""
    keys = run_keygen_local(2, 3)
    pk = keys[1].group_public_key.encode()
    r_ = req("evm-tx", payload={"tx": TX})
    sig = dkls_sign(keys, message_to_sign("ecdsa-secp256k1", r_))
    raw = sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big")
    out = sign_result("ecdsa-secp256k1", r_, raw, sig.recovery_id, pk)
    assert out is not None and out["signature"]["y_parity"] == sig.recovery_id
    assert Account.recover_transaction(out["signed_tx"]) == ethereum_address(pk)
    for recid in (2, 3, None, 1 - sig.recovery_id):
        with pytest.raises(SignRequestError) as e:
            sign_result("ecdsa-secp256k1", r_, raw, recid, pk)
        assert e.value.field.startswith("signature")
    other = run_keygen_local(2, 3)[1].group_public_key.encode()
    with pytest.raises(SignRequestError):  # recovers to another key
        sign_result("ecdsa-secp256k1", r_, raw, sig.recovery_id, other)
    assert (
        sign_result("ed25519", req("message", payload={"message": "0x"}), bytes(64), None) is None
    )
