"""Builders: the bytes are exactly py-evm's own encoding of the same transaction, custody's
decoder reads back the fields, fees follow the documented rule, bad input names its field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth.vm.forks.london.transactions import UnsignedDynamicFeeTransaction
from eth_abi.abi import encode as abi_encode
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.crypto import keccak

from custody.cluster import DEMO_ERC20
from custody.kinds import evm as custody_evm
from custody.models import SignRequestOut
from payments.evm.rail import EvmRail
from payments.evm.token import deploy_test_token, give_tokens
from payments.evm.tx import (
    BuildError,
    Fees,
    UnsignedTx,
    erc20_transfer_calldata,
    fees_from,
    parse_address,
)
from tests.payments.evm.conftest import CHAINS, Env, chain_env

DEST = "0x00000000000000000000000000000000000DEaD1"
TOKEN_CONTRACT = DEMO_ERC20  # USDC mainnet, the demo policy's token
FEES = Fees(base_fee=7 * 10**9, max_priority_fee_per_gas=2 * 10**9)


def by_py_evm(tx: UnsignedTx) -> bytes:
    """The same transaction encoded by py-evm (not by our encoder)."""
    return bytes(
        UnsignedDynamicFeeTransaction(
            chain_id=tx.chain_id,
            nonce=tx.nonce,
            max_priority_fee_per_gas=tx.max_priority_fee_per_gas,
            max_fee_per_gas=tx.max_fee_per_gas,
            gas=tx.gas_limit,
            to=bytes.fromhex(tx.to[2:]),
            value=tx.value,
            data=tx.data,
            access_list=[],
        ).get_message_for_signing()
    )


@pytest.mark.parametrize("nonce", [0, 1, 127, 128, 2**32, 2**64 - 2])
@pytest.mark.parametrize("value", [0, 1, 10**18, 2**256 - 1])
def test_ether_transfer_bytes_equal_py_evm_and_decode_in_custody(nonce: int, value: int) -> None:
    tx = UnsignedTx.ether_transfer(
        chain_id=1, nonce=nonce, to=DEST, value=value, fees=FEES, gas_limit=21_000
    )
    assert tx.raw == by_py_evm(tx)
    assert tx.payload == {"tx": "0x" + tx.raw.hex()}
    got = custody_evm.decode(tx.payload)
    assert (got.nonce, got.value, got.to, got.data, got.erc20) == (nonce, value, DEST, b"", None)
    assert got.digest == tx.digest == keccak(tx.raw)
    assert tx.max_cost == value + 21_000 * tx.max_fee_per_gas


def test_erc20_transfer_calldata_and_custody_reads_the_transfer() -> None:
    data = erc20_transfer_calldata(DEST, 1234)
    assert data[:4] == function_signature_to_4byte_selector("transfer(address,uint256)")
    assert data == bytes.fromhex("a9059cbb") + abi_encode(["address", "uint256"], [DEST, 1234])
    tx = UnsignedTx.erc20_transfer(
        chain_id=5,
        nonce=3,
        token=TOKEN_CONTRACT,
        recipient=DEST,
        amount=1234,
        fees=FEES,
        gas_limit=60_000,
    )
    assert tx.raw == by_py_evm(tx) and tx.value == 0 and tx.to == TOKEN_CONTRACT
    erc20 = custody_evm.decode(tx.payload).erc20
    assert erc20 is not None
    assert (erc20.method, erc20.token, erc20.recipient, erc20.amount) == (
        "transfer",
        TOKEN_CONTRACT,
        DEST,
        1234,
    )


def test_fee_rule_and_cap() -> None:
    f = fees_from(10 * 10**9, 10**9)
    assert f.max_fee_per_gas == 2 * 10 * 10**9 + 10**9
    assert fees_from(0, 0).max_fee_per_gas == 0
    with pytest.raises(BuildError, match="max_fee_per_gas: 21000000000 wei/gas is over the cap"):
        fees_from(10 * 10**9, 10**9, max_fee_cap=20 * 10**9)
    with pytest.raises(BuildError, match="base_fee"):
        fees_from(-1, 0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"chain_id": 0}, "chain_id"),
        ({"chain_id": 2**64}, "chain_id"),
        ({"nonce": 2**64 - 1}, "nonce"),  # EIP-2681
        ({"nonce": -1}, "nonce"),
        ({"nonce": True}, "nonce"),
        ({"value": 2**256}, "value"),
        ({"gas_limit": 20_999}, "gas_limit"),
        ({"max_priority_fee_per_gas": 10**10, "max_fee_per_gas": 10**9}, "max_priority_fee"),
        ({"to": "0x00000000000000000000000000000000000dEaD1"}, "to: EIP-55 checksum"),
        ({"to": "0x1234"}, "to: not a 20-byte"),
        ({"to": 5}, "to"),
        ({"data": "0x"}, "data"),
    ],
)
def test_bad_fields_are_named(changes: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {
        "chain_id": 1,
        "nonce": 0,
        "max_priority_fee_per_gas": 10**9,
        "max_fee_per_gas": 3 * 10**9,
        "gas_limit": 21_000,
        "to": DEST,
        "value": 1,
        "data": b"",
    }
    with pytest.raises(BuildError, match=field):
        UnsignedTx(**{**base, **changes})


def test_addresses() -> None:
    assert parse_address(DEST.lower(), "to") == DEST  # all lower case: no checksum to check
    assert parse_address("0x" + DEST[2:].upper(), "to") == DEST
    with pytest.raises(BuildError, match="recipient: EIP-55"):
        erc20_transfer_calldata("0x00000000000000000000000000000000000dEaD1", 1)


def test_erc20_calldata_custody_would_refuse_is_never_built() -> None:
    # calldata with the transfer selector that is not the canonical call: custody refuses,
    # so the builder does too, naming custody's field
    with pytest.raises(BuildError, match="tx.data"):
        UnsignedTx(1, 0, 1, 2, 60_000, TOKEN_CONTRACT, 0, bytes.fromhex("a9059cbb") + b"\x00" * 63)


# -- the rail's builders on a chain ----------------------------------------------------------


@pytest.fixture(params=CHAINS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    with chain_env(request.param) as e:
        yield e


def test_rail_builds_from_the_chain(env: Env) -> None:
    rail = EvmRail(env.chain)
    sender = env.plumbing.genesis_account(3)
    base = env.chain.latest_base_fee()
    tx = rail.build_ether_transfer(sender=sender, to=DEST, value=10**18, nonce=0)
    assert tx.chain_id == 131277322940537 and tx.gas_limit == 21_000
    assert tx.max_fee_per_gas == 2 * base + 10**9 and tx.max_priority_fee_per_gas == 10**9
    token = deploy_test_token(env.plumbing)
    give_tokens(env.plumbing, token, sender, 500)
    t = rail.build_erc20_transfer(sender=sender, token=token, recipient=DEST, amount=500, nonce=1)
    estimate = env.chain.estimate_gas(sender, token, 0, t.data)
    assert t.gas_limit == -(-estimate * 12 // 10) and t.to == token and t.value == 0


def test_rail_pinned_to_a_chain_refuses_another_endpoint(env: Env) -> None:
    sender = env.plumbing.genesis_account(3)
    with pytest.raises(BuildError, match="chain_id: the endpoint is chain 131277322940537, not 1"):
        EvmRail(env.chain, chain_id=1).build_ether_transfer(
            sender=sender, to=DEST, value=1, nonce=0
        )
    tx = EvmRail(env.chain, chain_id=131277322940537).build_ether_transfer(
        sender=sender, to=DEST, value=1, nonce=0
    )
    assert tx.chain_id == 131277322940537


def test_rail_refuses_what_the_sender_cannot_pay(env: Env) -> None:
    rail = EvmRail(env.chain)
    poor = "0x00000000000000000000000000000000000dead2"
    with pytest.raises(BuildError, match="value: .* holds 0 wei, less than the 1 sent"):
        rail.build_ether_transfer(sender=poor, to=DEST, value=1, nonce=0)
    token = deploy_test_token(env.plumbing)
    with pytest.raises(BuildError, match="amount: .* holds 0 of token"):
        rail.build_erc20_transfer(sender=poor, token=token, recipient=DEST, amount=1, nonce=0)
    env.plumbing.fund(poor, 10)
    give_tokens(env.plumbing, token, poor, 1)
    with pytest.raises(BuildError, match="token: the transfer would fail: .*cannot afford"):
        rail.build_erc20_transfer(sender=poor, token=token, recipient=DEST, amount=1, nonce=0)
    # a fee cap under the chain's fees: nothing is built
    with pytest.raises(BuildError, match="over the cap"):
        EvmRail(env.chain, max_fee_cap=10**9).fees()


def _answer(tx: UnsignedTx, **changes: Any) -> SignRequestOut:
    doc: dict[str, Any] = {
        "id": "sr_1",
        "key_id": "k_1",
        "kind": "evm-tx",
        "message": tx.digest.hex(),
        "status": "signed",
        "signature": "11" * 64,
        "recovery_id": 0,
        "signers": [1, 2],
        "result": {
            "signature": {"r": "0x" + "11" * 32, "s": "0x" + "22" * 32, "y_parity": 0},
            "signed_tx": "0x02",
        },
        "blamed": [],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "expires_at": None,
    }
    return SignRequestOut.model_validate({**doc, **changes})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "message"}, "sign_request.kind"),
        ({"status": "pending_approval"}, "sign_request.status"),
        ({"message": "00" * 32}, "sign_request.message: signs another transaction"),
        ({"result": None}, "sign_request.result"),
        # r, s that are no signature of this digest by this key: refused before broadcast
        ({}, "signature"),
    ],
)
def test_attach_refuses_answers_that_do_not_fit(changes: dict[str, Any], field: str) -> None:
    tx = UnsignedTx.ether_transfer(
        chain_id=1, nonce=0, to=DEST, value=1, fees=FEES, gas_limit=21_000
    )
    pk = bytes.fromhex("02" + "79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798")
    with pytest.raises(BuildError, match=field):
        EvmRail.attach(tx, _answer(tx, **changes), pk)
