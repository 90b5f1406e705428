"""The Ethereum rail end to end with REAL threshold signatures: a local custody cluster
(coordinator and three signer-node processes, started once for this module), a 2-of-3
DKLs23 ECDSA key, transfers built by :class:`~payments.evm.rail.EvmRail`, signed through the
SDK as ``evm-tx``, checked by eth-account, mined on eth-tester, in process and over JSON-RPC.

No key is ever whole: the sender is the threshold key; eth-tester's genesis accounts only
fund it and deploy the test token (their keys are eth-tester's). Amounts stay under the demo
policy's limits (1 ETH; 10 000 tokens) and go to its allowlisted destinations, so requests
are signed at once; the test token's address is added to the policy by a governance version
signed by the dev officers' quorum (the demo policy names USDC's mainnet address).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import rlp
from eth_account import Account
from eth_utils.crypto import keccak

from custody.client import CustodyClient, PolicyDenied
from custody.cluster import ALLOWLIST, DEMO_ETH_DESTINATIONS, ETH_LIMIT, TOKEN_LIMIT
from custody.demo import approve_as
from custody.models import KeyOut, SignRequestOut
from custody.policy import Rule
from payments.evm.chain import TxRejected
from payments.evm.nonces import NonceError, NonceState
from payments.evm.rail import EvmRail, erc20_transfers
from payments.evm.token import deploy_test_token, give_tokens, token_balance
from payments.evm.tx import BuildError, Fees, UnsignedTx
from tests.e2e.conftest import Live, current_governance, install_policy, running_cluster
from tests.payments.evm.conftest import CHAINS, Env, chain_env

ECDSA = "ecdsa-secp256k1"
DEST, DEST2 = DEMO_ETH_DESTINATIONS
FUNDING = 10 * 10**18
TOKENS = 5_000 * 10**6  # the key's token balance (6 decimals)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as lv:
        yield lv


@pytest.fixture(scope="module")
def key(live: Live) -> KeyOut:
    k = live.key(ECDSA)
    assert k.public_key is not None and "ethereum" in k.addresses
    return k


@dataclass
class World:
    env: Env
    rail: EvmRail
    key: KeyOut
    token: str
    nonces: NonceState
    live: Live

    @property
    def sender(self) -> str:
        return self.key.addresses["ethereum"]

    def sign(self, tx: UnsignedTx) -> SignRequestOut:
        sr = self.live.requester.sign(
            self.key.id,
            kind="evm-tx",
            payload=tx.payload,
            idempotency_key=f"{self.env.name}-{uuid.uuid4()}",
        )
        assert sr.status == "signed", sr
        return sr

    def signed(self, tx: UnsignedTx) -> bytes:
        assert self.key.public_key is not None
        return self.rail.attach(tx, self.sign(tx), self.key.public_key)


@pytest.fixture(scope="module", params=CHAINS)
def world(request: pytest.FixtureRequest, live: Live, key: KeyOut) -> Iterator[World]:
    with ExitStack() as stack:
        env = stack.enter_context(chain_env(request.param))
        sender = key.addresses["ethereum"]
        env.plumbing.fund(sender, FUNDING)
        token = deploy_test_token(env.plumbing)
        give_tokens(env.plumbing, token, sender, TOKENS)
        # a governance version whose policy also allows this token (first match wins; the
        # new rule goes after the demo ones, under the same limit and allowlist)
        cur, _ = current_governance(live)
        rule = Rule(
            f"test-token-{request.param}",
            "allow",
            kinds=frozenset({"evm-tx"}),
            operations=frozenset({"transfer"}),
            assets=frozenset({token.lower()}),
            allowlists=frozenset({ALLOWLIST}),
            max_amount=TOKEN_LIMIT,
        )
        install_policy(live, dataclasses.replace(cur.policy, rules=(*cur.policy.rules, rule)))
        rail = EvmRail(env.chain, chain_id=131277322940537, required_confirmations=3)
        yield World(env, rail, key, token, NonceState(sender), live)


def test_ether_transfer_is_threshold_signed_recovered_mined_and_confirmed(world: World) -> None:
    chain, rail = world.env.chain, world.rail
    value = ETH_LIMIT // 4
    nonce, world.nonces = rail.reserve_nonce(world.nonces, "eth-1")
    assert nonce == chain.get_transaction_count(world.sender, "pending")
    tx = rail.build_ether_transfer(sender=world.sender, to=DEST, value=value, nonce=nonce)
    world.nonces = world.nonces.signed("eth-1")
    sr = world.sign(tx)
    assert sr.message == tx.digest.hex()
    assert world.key.public_key is not None
    signed = rail.attach(tx, sr, world.key.public_key)
    # eth-account (not our code) recovers the threshold key's address from the signed bytes
    assert Account.recover_transaction(signed) == world.sender
    fields = rlp.decode(signed[1:])
    assert signed[0] == 2 and len(fields) == 12
    assert int.from_bytes(fields[1], "big") == nonce and fields[5] == bytes.fromhex(DEST[2:])
    assert int.from_bytes(fields[6], "big") == value

    before_s, before_d = chain.get_balance(world.sender), chain.get_balance(DEST)
    assert rail.ready(world.nonces, "eth-1")
    h = rail.broadcast(signed)
    world.nonces = world.nonces.broadcast("eth-1")
    assert h == keccak(signed)
    c = rail.confirmation(h)
    assert c.state == "included" and c.confirmations == 1 and c.receipt is not None
    world.env.plumbing.mine(2)
    c = rail.confirmation(h)
    assert c.state == "confirmed" and c.confirmations == 3
    r = c.receipt
    assert r is not None and r.status == 1 and r.sender == world.sender and r.to == DEST
    assert r.gas_used == 21_000 and r.effective_gas_price <= tx.max_fee_per_gas
    assert before_s - chain.get_balance(world.sender) == value + r.gas_used * r.effective_gas_price
    assert chain.get_balance(DEST) - before_d == value
    world.nonces = world.nonces.consumed("eth-1")
    # broadcasting the same bytes again is harmless: same hash, nothing moves twice
    assert rail.broadcast(signed) == h
    assert chain.get_balance(DEST) - before_d == value


def test_erc20_transfer_moves_tokens(world: World) -> None:
    chain, rail, token = world.env.chain, world.rail, world.token
    amount = 1_234 * 10**6
    nonce, world.nonces = rail.reserve_nonce(world.nonces, "tok-1")
    tx = rail.build_erc20_transfer(
        sender=world.sender, token=token, recipient=DEST2, amount=amount, nonce=nonce
    )
    signed = world.signed(tx)
    assert Account.recover_transaction(signed) == world.sender
    eth_before = chain.get_balance(world.sender)
    tok_before = token_balance(chain, token, world.sender), token_balance(chain, token, DEST2)
    h = rail.broadcast(signed)
    world.nonces = world.nonces.broadcast("tok-1")
    world.env.plumbing.mine(2)
    c = rail.confirmation(h)
    assert c.state == "confirmed" and c.receipt is not None and c.receipt.status == 1
    r = c.receipt
    assert [(t.token, t.sender, t.recipient, t.amount) for t in erc20_transfers(r)] == [
        (token, world.sender, DEST2, amount)
    ]
    assert token_balance(chain, token, world.sender) == tok_before[0] - amount
    assert token_balance(chain, token, DEST2) == tok_before[1] + amount
    # the ether side: only the gas, exactly
    assert eth_before - chain.get_balance(world.sender) == r.gas_used * r.effective_gas_price
    assert r.gas_used <= tx.gas_limit
    world.nonces = world.nonces.consumed("tok-1")


def _tamper_value(signed: bytes, value: int) -> bytes:
    fields = rlp.decode(signed[1:])
    fields[6] = value.to_bytes(32, "big").lstrip(b"\x00")
    return b"\x02" + bytes(rlp.encode(fields))


def test_tampered_signed_tx_is_refused(world: World) -> None:
    chain, rail = world.env.chain, world.rail
    nonce, world.nonces = rail.reserve_nonce(world.nonces, "tamper-1")
    tx = rail.build_ether_transfer(sender=world.sender, to=DEST, value=1000, nonce=nonce)
    sr = world.sign(tx)
    assert world.key.public_key is not None
    signed = rail.attach(tx, sr, world.key.public_key)
    before = chain.get_balance(DEST)
    # another value under the same signature: it recovers to somebody else (with no funds)
    tampered = _tamper_value(signed, 10**18)
    assert Account.recover_transaction(tampered) != world.sender
    with pytest.raises(TxRejected):
        rail.broadcast(tampered)
    # a corrupted r: no valid signature of the sender either
    fields = rlp.decode(signed[1:])
    fields[10] = (int.from_bytes(fields[10], "big") ^ 1).to_bytes(32, "big").lstrip(b"\x00")
    bad_r = b"\x02" + rlp.encode(fields)
    try:
        assert Account.recover_transaction(bad_r) != world.sender
    except Exception:  # noqa: S110 - r off the curve: recovery itself fails, which is the point
        pass
    with pytest.raises(TxRejected):
        rail.broadcast(bad_r)
    assert chain.get_balance(DEST) == before
    # attach refuses a signature that does not recover to the key it is told
    other = bytes.fromhex("0279BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798")
    with pytest.raises(BuildError, match="recovers to another key"):
        rail.attach(tx, sr, other)
    # the genuine bytes still go through: the tampering alone was refused
    h = rail.broadcast(signed)
    world.nonces = world.nonces.broadcast("tamper-1")
    c = rail.confirmation(h)
    assert c.receipt is not None and c.receipt.status == 1 and c.receipt.sender == world.sender
    assert chain.get_balance(DEST) == before + 1000
    world.nonces = world.nonces.consumed("tamper-1")


def test_nonce_reuse_is_refused_by_the_chain_and_prevented_by_the_manager(world: World) -> None:
    chain, rail = world.env.chain, world.rail
    n1, world.nonces = rail.reserve_nonce(world.nonces, "reuse-1")
    tx1 = rail.build_ether_transfer(sender=world.sender, to=DEST, value=7, nonce=n1)
    h1 = rail.broadcast(world.signed(tx1))
    world.nonces = world.nonces.broadcast("reuse-1").consumed("reuse-1")
    assert rail.confirmation(h1).receipt is not None
    # the manager never hands n1 out again, to a new payment...
    n2, world.nonces = rail.reserve_nonce(world.nonces, "reuse-2")
    assert n2 == n1 + 1
    # ...even restarted from its stored state
    restored = NonceState.from_json(world.nonces.to_json())
    n3, _ = restored.reserve("reuse-3", chain.get_transaction_count(world.sender))
    assert n3 == n1 + 2
    # and a transaction signed with the spent nonce anyway is refused by the chain
    before = chain.get_balance(DEST)
    again = rail.build_ether_transfer(sender=world.sender, to=DEST, value=8, nonce=n1)
    with pytest.raises(TxRejected, match="(?i)nonce"):
        rail.broadcast(world.signed(again))
    assert chain.get_balance(DEST) == before
    assert chain.get_transaction_count(world.sender) == n1 + 1
    world.nonces = world.nonces.release("reuse-2")


def test_refused_broadcast_is_retried_at_the_same_nonce_and_never_pays_twice(
    world: World,
) -> None:
    """A signed transaction the chain refuses for now (fees under the base fee) keeps its
    nonce: the payment is rebuilt with fresh fees AT THE SAME NONCE and signed again, so the
    first bytes are dead once the second are mined (one payment, at most one transfer)."""
    chain, rail = world.env.chain, world.rail
    n, world.nonces = rail.reserve_nonce(world.nonces, "cheap-1")
    # custody signs it (fees are not policy); the chain refuses it
    cheap = UnsignedTx.ether_transfer(
        chain_id=chain.chain_id(), nonce=n, to=DEST, value=5, fees=Fees(0, 0), gas_limit=21_000
    )
    world.nonces = world.nonces.signed("cheap-1")  # before the request goes to custody
    cheap_signed = world.signed(cheap)
    with pytest.raises(TxRejected):
        rail.broadcast(cheap_signed)
    assert not rail.is_consumed(world.sender, n)
    with pytest.raises(NonceError, match="signed bytes may exist"):
        world.nonces.release("cheap-1")  # the manager will not hand the nonce to another
    # another payment meanwhile gets the next nonce, not this one
    other, world.nonces = rail.reserve_nonce(world.nonces, "other-1")
    assert other == n + 1
    world.nonces = world.nonces.release("other-1")  # never signed: free again
    # the retry: same payment, same nonce, fees from the chain
    again, world.nonces = rail.reserve_nonce(world.nonces, "cheap-1")
    assert again == n
    before = chain.get_balance(DEST)
    tx = rail.build_ether_transfer(sender=world.sender, to=DEST, value=5, nonce=again)
    assert rail.ready(world.nonces, "cheap-1")
    h = rail.broadcast(world.signed(tx))
    world.nonces = world.nonces.broadcast("cheap-1")
    r = rail.confirmation(h).receipt
    assert r is not None and r.status == 1
    assert rail.is_consumed(world.sender, n)
    world.nonces = world.nonces.consumed("cheap-1")
    # the first bytes can never be mined now (their nonce is used): paid once
    with pytest.raises(TxRejected):
        rail.broadcast(cheap_signed)
    assert chain.get_balance(DEST) == before + 5
    assert chain.get_transaction_count(world.sender) == n + 1
    assert world.nonces.gaps(chain.get_transaction_count(world.sender)) == []


def test_reverted_token_transfer_is_failed_and_spends_its_nonce(world: World) -> None:
    chain, rail, token = world.env.chain, world.rail, world.token
    held = token_balance(chain, token, world.sender)
    amount = held + 1  # under the policy limit, over the balance: the contract reverts
    assert amount <= TOKEN_LIMIT
    n, world.nonces = rail.reserve_nonce(world.nonces, "revert-1")
    with pytest.raises(BuildError, match="amount: .* holds"):
        rail.build_erc20_transfer(
            sender=world.sender, token=token, recipient=DEST, amount=amount, nonce=n
        )
    tx = UnsignedTx.erc20_transfer(
        chain_id=chain.chain_id(),
        nonce=n,
        token=token,
        recipient=DEST,
        amount=amount,
        fees=rail.fees(),
        gas_limit=100_000,
    )
    eth_before = chain.get_balance(world.sender)
    h = rail.broadcast(world.signed(tx))
    world.nonces = world.nonces.broadcast("revert-1")
    world.env.plumbing.mine(2)
    c = rail.confirmation(h)
    assert c.state == "failed" and c.receipt is not None and c.receipt.status == 0
    assert erc20_transfers(c.receipt) == []
    assert token_balance(chain, token, world.sender) == held
    assert chain.get_transaction_count(world.sender) == n + 1  # the nonce is spent anyway
    assert eth_before - chain.get_balance(world.sender) == c.receipt.fee
    world.nonces = world.nonces.consumed("revert-1")


def test_transfer_over_the_limit_waits_for_two_approvals_then_is_mined(world: World) -> None:
    """The path a payment over the demo limit takes: parked in ``pending_approval`` until two
    treasury approvers (each decoding the request locally, as ``custody approve`` does) sign;
    then signed, attached, mined."""
    chain, rail = world.env.chain, world.rail
    value = 2 * ETH_LIMIT
    n, world.nonces = rail.reserve_nonce(world.nonces, "big-1")
    tx = rail.build_ether_transfer(sender=world.sender, to=DEST2, value=value, nonce=n)
    sr = world.live.requester.sign(
        world.key.id, kind="evm-tx", payload=tx.payload, idempotency_key=str(uuid.uuid4()),
        wait=False,
    )  # fmt: skip
    assert sr.status == "pending_approval", sr
    with pytest.raises(BuildError, match="sign_request.status: 'pending_approval'"):
        rail.attach(tx, sr, world.key.public_key or "")
    files = world.live.doc["dev_governance"]
    passphrase = Path(files["approver_passphrase_file"]).read_bytes().strip()
    creds = world.live.doc["credentials"]
    with CustodyClient(world.live.doc["api_url"], creds["approver"]) as approver:
        for path in [Path(p) for p in files["approvers"][:2]]:
            sr = approve_as(approver, sr.id, ECDSA, path, passphrase)
    assert sr.status == "signed", sr
    assert world.key.public_key is not None
    signed = rail.attach(tx, sr, world.key.public_key)
    assert Account.recover_transaction(signed) == world.sender
    before = chain.get_balance(DEST2)
    h = rail.broadcast(signed)
    world.nonces = world.nonces.broadcast("big-1")
    r = rail.confirmation(h).receipt
    assert r is not None and r.status == 1 and chain.get_balance(DEST2) == before + value
    world.nonces = world.nonces.consumed("big-1")


def test_payment_custody_denies_gives_its_nonce_back(world: World) -> None:
    """Custody's policy refuses a destination off the allowlist: no signature exists, ever,
    so the nonce is released and the next payment takes it (no gap)."""
    chain, rail = world.env.chain, world.rail
    n, world.nonces = rail.reserve_nonce(world.nonces, "denied-1")
    tx = rail.build_ether_transfer(
        sender=world.sender, to="0x000000000000000000000000000000000000bEEF", value=1, nonce=n
    )
    world.nonces = world.nonces.signed("denied-1")
    with pytest.raises(PolicyDenied):
        world.live.requester.sign(
            world.key.id, kind="evm-tx", payload=tx.payload, idempotency_key=str(uuid.uuid4())
        )
    world.nonces = world.nonces.release("denied-1", never_signed=True)
    n2, world.nonces = rail.reserve_nonce(world.nonces, "after-denied-1")
    assert n2 == n == chain.get_transaction_count(world.sender)
    world.nonces = world.nonces.release("after-denied-1")
