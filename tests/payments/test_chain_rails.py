"""The chain rails' pieces without a custody cluster: the ledger unit (ETH in gwei), the
amount-unit decision's premise (SQLite's NUMERIC is not exact), and the ethereum rail's
build/nonce persistence over a real SQLite payments database and an in-process eth-tester
chain, through the payment core's own commands, on SQLite and PostgreSQL (the ``engine``
fixture of tests/payments/conftest.py: the nonce row is locked with ``FOR UPDATE`` there).

The rail's key here is a nothing-up-my-sleeve point (x = SHA-256 of a tag, the first that
is on the curve): its public key is all the rail needs to build; nobody knows a private
key for it, so nothing can be signed with it, which is what the refusal test needs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import sqlite3

import coincurve
import pytest
import rlp
from sqlalchemy import Engine, select

from custody.client import CustodyClient
from custody.kinds.addresses import bitcoin_p2tr_address
from custody.models import KeyOut
from payments import ledger, risk
from payments.btc import FeeRate, Regtest
from payments.btc_rail import BitcoinPayRail
from payments.chains import NotYet
from payments.core import PaymentCore
from payments.db import MAX_AMOUNT, chain_builds
from payments.evm import EthTesterChain, NonceState
from payments.evm_rail import EthereumRail, address_of
from payments.evm_rail import checks as evm_checks
from payments.ledger import ETH_GWEI, LedgerError
from payments.rails import CustodySignature, RailError, Unsigned
from payments.sanctions import SanctionsList
from payments.settings import PACKAGE_DATA

DEST = "0x00000000000000000000000000000000000DEaD1"
GWEI = 10**9


def nums_key(tag: bytes) -> bytes:
    for i in itertools.count():
        x = hashlib.sha256(tag + i.to_bytes(4, "big")).digest()
        try:
            return coincurve.PublicKey(b"\x02" + x).format()
        except ValueError:
            continue
    raise AssertionError("unreachable")


def test_eth_ledger_unit_is_the_gwei_exactly() -> None:
    assert ETH_GWEI.scale == GWEI
    assert ETH_GWEI.to_chain(1) == GWEI
    assert ETH_GWEI.from_chain(3 * GWEI) == 3
    with pytest.raises(LedgerError, match="not a whole number of ETH ledger units"):
        ETH_GWEI.from_chain(3 * GWEI + 1)
    # a fee in wei is charged rounded UP to the gwei, the rounding reported
    # 21000 gas at 1.875000001 gwei = 39 375 000 021 000 wei: 39 376 gwei, 999 979 000 over
    assert ETH_GWEI.charge(21_000 * 1_875_000_001) == (39_376, 999_979_000)
    assert ETH_GWEI.charge(2 * GWEI) == (2, 0)
    # the BIGINT ledger carries ~9.2 billion ETH in gwei (it would carry 9.2 ETH in wei)
    assert ETH_GWEI.to_chain(MAX_AMOUNT) > 9_000_000_000 * 10**18
    with pytest.raises(LedgerError, match="exceeds the ledger maximum"):
        ledger.check_amount(10 * 10**18)  # 10 ETH in wei does not fit


def test_sqlite_numeric_is_not_exact_for_big_integers() -> None:
    """The premise of the decision in payments.db: SQLite keeps a NUMERIC(78,0) beyond 64
    bits as a REAL, so it could not hold wei amounts exactly."""
    c = sqlite3.connect(":memory:")
    c.execute("CREATE TABLE t (x NUMERIC(78,0))")
    c.execute("INSERT INTO t VALUES (?)", (str(2**70 + 1),))
    value, kind = c.execute("SELECT x, typeof(x) FROM t").fetchone()
    assert kind == "real" and int(value) != 2**70 + 1


@pytest.fixture
def chain() -> EthTesterChain:
    return EthTesterChain()


def _key(public_key: bytes) -> KeyOut:
    return KeyOut(
        id="key_nums",
        scheme="ecdsa-secp256k1",
        threshold=2,
        nodes=["node-1", "node-2", "node-3"],
        status="active",
        public_key=public_key.hex(),
        addresses={"ethereum": address_of(public_key)},
        created_at=dt.datetime.now(dt.UTC),
    )


@pytest.fixture
def rail(engine: Engine, chain: EthTesterChain) -> EthereumRail:
    r = EthereumRail(engine, chain, _key(nums_key(b"tpwc chain-rails test")))
    chain.fund(r.address, 5 * 10**18)
    return r


def _core(engine: Engine, rail: EthereumRail) -> PaymentCore:
    settings = risk.Settings(velocity_max=1000)
    sanctions = SanctionsList.load(PACKAGE_DATA / "sanctions")
    return PaymentCore(engine, sanctions, settings, {"ethereum": rail}, dict(evm_checks(rail)))


def _customer(core: PaymentCore, tag: str, gwei: int, decimals: int = 9) -> str:
    aid, _ = core.open_account({"owner": tag, "asset": "ETH", "decimals": decimals}, tag)
    core.deposit(aid, gwei, f"dep-{tag}")
    return aid


def test_build_is_idempotent_per_payment_and_nonces_are_persisted(
    engine: Engine, rail: EthereumRail
) -> None:
    core = _core(engine, rail)
    a = _customer(core, "alice", 2 * GWEI)
    p1, _ = core.create_payment(
        {"account_id": a, "amount": 1_000, "destination": DEST, "rail": "ethereum"}, "k1"
    )
    p2, _ = core.create_payment(
        {"account_id": a, "amount": 2_000, "destination": DEST, "rail": "ethereum"}, "k2"
    )
    assert core.get(p1)["status"] == core.get(p2)["status"] == "authorized"
    u1 = rail.build(core.instruction(core.get(p1)))
    u2 = rail.build(core.instruction(core.get(p2)))
    assert (u1.state["nonce"], u2.state["nonce"]) == (0, 1)
    assert u1.state["value"] == 1_000 * GWEI
    # never more gas than reserved: max_fee_per_gas * gas <= the authorized fee (gwei)
    assert u1.state["max_fee"] * u1.state["gas"] <= core.get(p1)["fee"] * GWEI
    # a second build (a retry, a restart) is the same bytes, no second nonce
    assert rail.build(core.instruction(core.get(p1))) == u1
    fresh = EthereumRail(engine, rail.evm.chain, _key(rail.public_key))  # a restarted service
    assert fresh.build(core.instruction(core.get(p2))) == u2
    state = fresh.nonce_state()
    assert state.next_nonce == 2 and {r.stage for r in state.inflight.values()} == {"signed"}
    with engine.connect() as c:
        assert len(c.execute(select(chain_builds)).all()) == 2


def test_a_fresh_in_process_chain_starts_the_nonces_over(
    engine: Engine, rail: EthereumRail
) -> None:
    """A development service restarted on a new in-process chain (it lives and dies with
    the process): the nonces kept for the old chain are dropped, the next payment takes
    nonce 0 of the new chain instead of waiting forever behind a gap."""
    core = _core(engine, rail)
    a = _customer(core, "hal", 2 * GWEI)
    for n in range(2):
        pid, _ = core.create_payment(
            {"account_id": a, "amount": 1_000 + n, "destination": DEST, "rail": "ethereum"},
            f"f{n}",
        )
        rail.build(core.instruction(core.get(pid)))
    assert rail.nonce_state().next_nonce == 2
    again = EthereumRail(engine, rail.evm.chain, _key(rail.public_key))
    assert again.nonce_state().next_nonce == 2  # same chain: the state is kept
    new_chain = EthTesterChain()
    fresh = EthereumRail(engine, new_chain, _key(rail.public_key), fresh_chain=True)
    new_chain.fund(fresh.address, 10**18)
    core = _core(engine, fresh)
    pid, _ = core.create_payment(
        {"account_id": a, "amount": 3_000, "destination": DEST, "rail": "ethereum"}, "f2"
    )
    assert fresh.build(core.instruction(core.get(pid))).state["nonce"] == 0


def test_a_payment_dead_without_a_signature_gives_its_nonce_back(
    engine: Engine, rail: EthereumRail
) -> None:
    core = _core(engine, rail)
    a = _customer(core, "bob", 2 * GWEI)
    p1, _ = core.create_payment(
        {"account_id": a, "amount": 1_000, "destination": DEST, "rail": "ethereum"}, "d1"
    )
    u1 = rail.build(core.instruction(core.get(p1)))
    core.step(p1, "SignPrepared", {"unsigned": u1.to_json()})
    core.step(p1, "PaymentFailed", {"reasons": ["custody refused to sign: 403 denied"]})
    p2, _ = core.create_payment(
        {"account_id": a, "amount": 2_000, "destination": DEST, "rail": "ethereum"}, "d2"
    )
    u2 = rail.build(core.instruction(core.get(p2)))
    assert u2.state["nonce"] == u1.state["nonce"] == 0  # reused: no gap on chain
    assert set(rail.nonce_state().inflight) == {p2}


def test_a_payment_whose_signature_was_refused_keeps_its_nonce(
    engine: Engine, rail: EthereumRail
) -> None:
    core = _core(engine, rail)
    a = _customer(core, "carol", 2 * GWEI)
    p1, _ = core.create_payment(
        {"account_id": a, "amount": 1_000, "destination": DEST, "rail": "ethereum"}, "r1"
    )
    u1 = rail.build(core.instruction(core.get(p1)))
    core.step(p1, "SignPrepared", {"unsigned": u1.to_json()})
    core.step(p1, "PaymentFailed", {"reasons": ["signature refused: does not recover"]})
    p2, _ = core.create_payment(
        {"account_id": a, "amount": 2_000, "destination": DEST, "rail": "ethereum"}, "r2"
    )
    assert rail.build(core.instruction(core.get(p2))).state["nonce"] == 1


def test_attach_refuses_a_signature_that_does_not_recover_to_the_key(
    engine: Engine, rail: EthereumRail
) -> None:
    core = _core(engine, rail)
    a = _customer(core, "dave", 2 * GWEI)
    pid, _ = core.create_payment(
        {"account_id": a, "amount": 1_000, "destination": DEST, "rail": "ethereum"}, "s1"
    )
    u = rail.build(core.instruction(core.get(pid)))
    bogus = CustodySignature(("11" * 32) + ("22" * 32), 0, None)
    with pytest.raises(RailError) as err:
        rail.attach(u, bogus, rail.public_key.hex())
    assert err.value.field == "signature"
    with pytest.raises(RailError, match="not hex"):
        rail.attach(u, CustodySignature("zz" * 64, 0), rail.public_key.hex())
    tampered = Unsigned(u.kind, u.payload, u.fee, {**u.state, "value": u.state["value"] + 1})
    with pytest.raises(RailError, match="differs from its payload"):
        rail.attach(tampered, bogus, rail.public_key.hex())


def test_authorization_refuses_an_eth_ledger_in_wei(
    engine: Engine, rail: EthereumRail, chain: EthTesterChain
) -> None:
    core = _core(engine, rail)
    a = _customer(core, "erin", 10**18, decimals=18)  # a ledger that opened ETH in wei
    pid, _ = core.create_payment(
        {"account_id": a, "amount": 5, "destination": DEST, "rail": "ethereum"}, "w1"
    )
    p = core.get(pid)
    assert p["status"] == "declined"
    assert any("must be ledgered with 9 decimals" in r for r in p["reasons"]), p["reasons"]


def test_broadcast_waits_for_the_lower_nonce(engine: Engine, rail: EthereumRail) -> None:
    """Nonce order (payments.evm.nonces): the second payment's bytes are not sent while
    the first one's nonce is not broadcast; NotYet is not a RailError (retried)."""
    core = _core(engine, rail)
    a = _customer(core, "fay", 2 * GWEI)
    pids = [
        core.create_payment(
            {"account_id": a, "amount": 1_000 + n, "destination": DEST, "rail": "ethereum"},
            f"o{n}",
        )[0]
        for n in range(2)
    ]
    units = [rail.build(core.instruction(core.get(p))) for p in pids]
    # a transaction at nonce 1 (unsigned bytes with a dummy signature shape): refused
    # before anything reaches the chain, since nonce 0 is not broadcast
    fields = rlp.decode(bytes.fromhex(units[1].payload["tx"][4:]))
    raw = bytes([2]) + rlp.encode([*fields, 0, 1, 1])
    with pytest.raises(NotYet, match="waits for a lower nonce"):
        rail.broadcast(type("S", (), {"raw": raw.hex(), "ref": ""})())  # type: ignore[arg-type]
    assert isinstance(rail.nonce_state(), NonceState)


# -- the bitcoin rail -----------------------------------------------------------------------
BTC_DEST = "bcrt1pcrq3cyuk8lpfsfr7kflww2w9gdwvetkvhazcs4tjtacd5h3n06jshj7h8t"


def _btc_rail(engine: Engine, chain: Regtest) -> BitcoinPayRail:
    x_only = nums_key(b"tpwc chain-rails btc test")[1:]
    key = KeyOut(
        id="key_nums_btc",
        scheme="bip340",
        threshold=2,
        nodes=["node-1", "node-2", "node-3"],
        status="active",
        public_key=x_only.hex(),
        network="regtest",
        addresses={"bitcoin": bitcoin_p2tr_address(x_only, "regtest")},
        created_at=dt.datetime.now(dt.UTC),
    )
    # the SDK client is never called by build/attach/broadcast (the worker signs)
    client = CustodyClient("http://127.0.0.1:9", "unused")
    return BitcoinPayRail(engine, client, key, chain, fee_rate=FeeRate.sat_per_vb(2))


def test_bitcoin_builds_keep_their_coins_across_a_restart(engine: Engine) -> None:
    chain = Regtest()
    rail = _btc_rail(engine, chain)
    chain.fund(rail.btc.address, [100_000, 100_000, 100_000])
    core = PaymentCore(
        engine,
        SanctionsList.load(PACKAGE_DATA / "sanctions"),
        risk.Settings(velocity_max=1000),
        {"bitcoin": rail},
    )
    aid, _ = core.open_account({"owner": "gus", "asset": "BTC", "decimals": 8}, "gus")
    core.deposit(aid, 10**6, "dep-gus")

    def pay(n: int) -> str:
        body = {"account_id": aid, "amount": 60_000, "destination": BTC_DEST, "rail": "bitcoin"}
        pid, _ = core.create_payment(body, f"b{n}")
        assert core.get(pid)["status"] == "authorized", core.get(pid)
        return pid

    p1, p2 = pay(1), pay(2)
    u1 = rail.build(core.instruction(core.get(p1)))
    assert u1.fee <= core.get(p1)["fee"]  # never more than was reserved
    assert rail.build(core.instruction(core.get(p1))) == u1  # the same PSBT again
    restarted = _btc_rail(engine, chain)  # the coins of u1 are taken again at start-up
    u2 = restarted.build(core.instruction(core.get(p2)))
    inputs = [
        {(i.txid, i.vout) for i in restarted._payment(u).inputs}  # noqa: SLF001
        for u in (u1, u2)
    ]
    assert not inputs[0] & inputs[1]
    p3 = pay(3)
    u3 = restarted.build(core.instruction(core.get(p3)))
    used = inputs[0] | inputs[1]
    assert not {(i.txid, i.vout) for i in restarted._payment(u3).inputs} & used  # noqa: SLF001
    p4 = pay(4)  # every coin is taken: the build waits (not a RailError)
    with pytest.raises(NotYet, match="cannot build now"):
        restarted.build(core.instruction(core.get(p4)))
    # a signature custody did not make is refused by the finalizer / libbitcoinkernel
    with pytest.raises(RailError) as err:
        restarted.attach(u3, CustodySignature("11" * 64), restarted.btc.internal_key.hex())
    assert err.value.field == "signature"
