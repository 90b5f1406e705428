"""The Chain contract: both implementations (in-process eth-tester and JSON-RPC over HTTP to a
real server) give the same answers, checked against eth-tester itself."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import rlp
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from payments.evm.chain import (
    Chain,
    ChainError,
    ChainUnavailable,
    EthTesterChain,
    JsonRpcChain,
    TxRejected,
    tx_hash_of,
)
from payments.evm.rail import erc20_transfers
from payments.evm.token import deploy_test_token, give_tokens, token_balance
from payments.evm.tx import erc20_transfer_calldata
from tests.payments.evm.conftest import CHAINS, Env, chain_env

DEST = "0x00000000000000000000000000000000000DEaD1"


@pytest.fixture(params=CHAINS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    with chain_env(request.param) as e:
        yield e


def signed_bytes_of_mined(plumbing: EthTesterChain, tx_hash: bytes) -> bytes:
    """The EIP-2718 bytes of a transaction eth-tester signed with its genesis key, rebuilt
    from the chain's own record of it (fields and y_parity, r, s)."""
    t = plumbing.tester.get_transaction_by_hash("0x" + tx_hash.hex())
    fields = [
        t["chain_id"], t["nonce"], t["max_priority_fee_per_gas"], t["max_fee_per_gas"],
        t["gas"], bytes.fromhex(t["to"][2:]), t["value"], bytes.fromhex(t["data"][2:]), [],
        t["y_parity"], t["r"], t["s"],
    ]  # fmt: skip
    return b"\x02" + bytes(rlp.encode(fields))


def test_both_implement_the_protocol(env: Env) -> None:
    assert isinstance(env.chain, Chain)


def test_chain_id_and_block_number(env: Env) -> None:
    assert env.chain.chain_id() == env.plumbing.tester.backend.chain.chain_id == 131277322940537
    head = env.chain.block_number()
    assert head == env.plumbing.tester.get_block_by_number("latest")["number"]
    env.plumbing.mine(3)
    assert env.chain.block_number() == head + 3


def test_balance_and_nonces_follow_the_chain(env: Env) -> None:
    genesis = env.plumbing.genesis_account(0)
    assert env.chain.get_balance(DEST) == 0
    assert env.chain.get_transaction_count(genesis) == 0
    env.plumbing.fund(DEST, 12345)
    assert env.chain.get_balance(DEST) == 12345
    assert env.chain.get_transaction_count(genesis, "pending") == 1
    assert env.chain.get_transaction_count(genesis, "latest") == 1
    # held in the pool: pending counts it, latest not yet
    env.plumbing.hold()
    env.plumbing.fund(DEST, 1)
    assert env.chain.get_transaction_count(genesis, "pending") == 2
    assert env.chain.get_transaction_count(genesis, "latest") == 1
    assert env.chain.get_balance(DEST) == 12345
    env.plumbing.mine()
    assert env.chain.get_transaction_count(genesis, "latest") == 2
    assert env.chain.get_balance(DEST) == 12346


def test_fee_inputs(env: Env) -> None:
    env.plumbing.fund(DEST, 1)
    latest = env.plumbing.tester.get_block_by_number("latest")
    assert env.chain.latest_base_fee() == latest["base_fee_per_gas"] > 0
    assert env.chain.max_priority_fee() == 10**9


def test_receipts_of_an_ether_transfer(env: Env) -> None:
    h = env.plumbing.fund(DEST, 777)
    r = env.chain.get_transaction_receipt(h)
    expected = env.plumbing.tester.get_transaction_receipt("0x" + h.hex())
    assert r is not None
    assert r.tx_hash == h and r.status == 1 and r.gas_used == 21_000
    assert r.block_number == expected["block_number"] == env.chain.block_number()
    assert r.effective_gas_price == expected["effective_gas_price"]
    assert r.sender == env.plumbing.genesis_account(0) and r.to == DEST
    assert r.contract_address is None and r.logs == ()
    assert r.fee == 21_000 * r.effective_gas_price
    assert env.chain.get_transaction_receipt(keccak(b"no such transaction")) is None


def test_receipt_is_none_while_pending(env: Env) -> None:
    env.plumbing.hold()
    h = env.plumbing.fund(DEST, 1)
    assert env.chain.get_transaction_receipt(h) is None
    env.plumbing.mine()
    r = env.chain.get_transaction_receipt(h)
    assert r is not None and r.status == 1


def test_token_deploy_call_estimate_and_logs(env: Env) -> None:
    token = deploy_test_token(env.plumbing, supply=1_000_000)
    genesis, other = env.plumbing.genesis_account(0), env.plumbing.genesis_account(1)
    assert token_balance(env.chain, token, genesis) == 1_000_000
    assert token_balance(env.chain, token, other) == 0
    gas = env.chain.estimate_gas(genesis, token, 0, erc20_transfer_calldata(other, 10))
    assert 21_000 < gas < 100_000
    h = give_tokens(env.plumbing, token, other, 250)
    r = env.chain.get_transaction_receipt(h)
    assert r is not None and r.status == 1 and r.to == token
    assert [(t.token, t.sender, t.recipient, t.amount) for t in erc20_transfers(r)] == [
        (token, genesis, other, 250)
    ]
    assert token_balance(env.chain, token, other) == 250
    # a transfer above the balance reverts: the estimate says so
    with pytest.raises(TxRejected, match="eth_estimateGas"):
        env.chain.estimate_gas(other, token, 0, erc20_transfer_calldata(genesis, 251))


def test_estimate_of_a_plain_transfer_is_the_intrinsic_gas(env: Env) -> None:
    genesis = env.plumbing.genesis_account(0)
    assert env.chain.estimate_gas(genesis, DEST, 10**18, b"") == 21_000


def test_send_raw_refuses_garbage_and_a_replay(env: Env) -> None:
    with pytest.raises(TxRejected, match="eth_sendRawTransaction"):
        env.chain.send_raw_transaction(b"\x02\xc0")
    h = env.plumbing.fund(DEST, 5)
    raw = signed_bytes_of_mined(env.plumbing, h)
    assert tx_hash_of(raw) == h  # rebuilt exactly
    with pytest.raises(TxRejected, match="(?i)nonce"):
        env.chain.send_raw_transaction(raw)  # its nonce is spent: the chain refuses a reuse
    assert env.chain.get_balance(DEST) == 5


def test_send_raw_accepts_a_signed_transaction_in_the_pool(env: Env) -> None:
    """A genesis-signed transaction taken out of a snapshot's future and sent as raw bytes:
    accepted, mined, same hash."""
    snap = env.plumbing.tester.take_snapshot()
    h = env.plumbing.fund(DEST, 99)
    raw = signed_bytes_of_mined(env.plumbing, h)
    env.plumbing.tester.revert_to_snapshot(snap)
    assert env.chain.get_transaction_receipt(h) is None and env.chain.get_balance(DEST) == 0
    assert env.chain.send_raw_transaction(raw) == h
    r = env.chain.get_transaction_receipt(h)
    assert r is not None and r.status == 1 and env.chain.get_balance(DEST) == 99


def test_addresses_come_back_checksummed(env: Env) -> None:
    h = env.plumbing.fund(DEST.lower(), 1)
    r = env.chain.get_transaction_receipt(h)
    assert r is not None and r.to == to_checksum_address(DEST) == DEST


# -- JSON-RPC only: what a misbehaving endpoint gets ------------------------------------------


@pytest.fixture
def rpc_env() -> Iterator[Env]:
    with chain_env("jsonrpc") as e:
        yield e


def test_jsonrpc_unavailable_endpoint(rpc_env: Env) -> None:
    assert rpc_env.url is not None
    with JsonRpcChain(rpc_env.url + "/down") as down:
        with pytest.raises(ChainUnavailable, match="HTTP 503"):
            down.block_number()
        with pytest.raises(ChainUnavailable):
            down.send_raw_transaction(b"\x02\xc0")  # outcome unknown: not TxRejected
    with JsonRpcChain("http://127.0.0.1:9/", timeout=1) as nobody:
        with pytest.raises(ChainUnavailable, match="eth_chainId: ConnectError"):
            nobody.chain_id()


def test_jsonrpc_malformed_answers_are_named(rpc_env: Env) -> None:
    assert rpc_env.url is not None
    with JsonRpcChain(rpc_env.url + "/garbage") as bad:
        with pytest.raises(ChainError, match="eth_blockNumber: HTTP 200, body is not JSON"):
            bad.block_number()
    with JsonRpcChain(rpc_env.url + "/padded") as padded:
        with pytest.raises(ChainError, match="eth_blockNumber: not a JSON-RPC QUANTITY: '0x00'"):
            padded.block_number()
    assert isinstance(rpc_env.chain, JsonRpcChain)
    with pytest.raises(ChainError, match="-32601") as e:
        rpc_env.chain.rpc("eth_noSuchMethod", [])
    assert not isinstance(e.value, TxRejected | ChainUnavailable)


def test_jsonrpc_answer_for_another_request_is_refused(rpc_env: Env) -> None:
    def transport(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": 999, "result": "0x1"})

    http = httpx.Client(transport=httpx.MockTransport(transport))
    with JsonRpcChain("http://x/", http=http) as c:
        with pytest.raises(ChainError, match="not a JSON-RPC 2.0 answer to request 1"):
            c.block_number()


def test_jsonrpc_hash_must_be_the_keccak_of_the_bytes() -> None:
    def transport(request: httpx.Request) -> httpx.Response:
        rid = json.loads(request.content)["id"]
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": rid, "result": "0x" + "11" * 32})

    http = httpx.Client(transport=httpx.MockTransport(transport))
    with JsonRpcChain("http://x/", http=http) as c:
        with pytest.raises(ChainError, match="not keccak256"):
            c.send_raw_transaction(b"\x02\xc0")


def test_jsonrpc_already_known_is_a_successful_send() -> None:
    """Geth's answer to the same bytes sent twice: not a refusal, the hash is returned."""

    def transport(request: httpx.Request) -> httpx.Response:
        rid = json.loads(request.content)["id"]
        err = {"code": -32000, "message": "already known"}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": rid, "error": err})

    http = httpx.Client(transport=httpx.MockTransport(transport))
    with JsonRpcChain("http://x/", http=http) as c:
        assert c.send_raw_transaction(b"\x02\xc0") == keccak(b"\x02\xc0")
