"""The Bitcoin rail against a real local cluster (coordinator and three signer-node
processes, ONE per module): a 2-of-3 ``bip340`` key on regtest, its BIP-86 address funded
in the regtest UTXO set with several coins, payments with change signed through the SDK as
``btc-psbt``, finalized, and accepted by the UTXO set only after Bitcoin Core's script
interpreter (py-bitcoinkernel) passed every input. Each input's signature is also checked
by libsecp256k1 (coincurve) over the BIP-341 sighash as btclib computes it. No key is
whole anywhere: each node signs with its own share, tweaked by itself."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from btclib.script import sig_hash
from btclib.tx import Tx, TxOut
from coincurve import PublicKeyXOnly

from custody import policy as pol
from custody.cluster import BTC_LIMIT, DEMO_BTC_DESTINATIONS
from custody.models import KeyOut
from payments.btc import (
    BitcoinRail,
    FeeRate,
    Payment,
    RailError,
    Regtest,
    Rejected,
    SelectionError,
    UnsignedPayment,
    build_psbt,
    output_script,
    parse_tx,
    payment_from_psbt,
    select_coins,
)
from payments.btc.regtest import verify_scripts
from payments.btc.selection import TxOut as Out
from payments.btc.selection import Utxo
from tests.e2e.conftest import Live, current_governance, install_policy, running_cluster

RATE = FeeRate.sat_per_vb(3)
DEST = DEMO_BTC_DESTINATIONS[2]  # regtest, on the demo allowlist
P2WPKH_ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"  # not on it
P2PKH_ADDR = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with running_cluster(tmp_path_factory.mktemp("btc-cluster")) as lv:
        yield lv


@pytest.fixture(scope="module")
def key(live: Live) -> KeyOut:
    k = live.admin.create_key("bip340", 2, network="regtest")
    assert k.status == "active" and k.network == "regtest", k
    return k


@pytest.fixture
def rail(live: Live, key: KeyOut) -> BitcoinRail:
    """A fresh regtest chain per test, the key's BIP-86 address funded with four coins."""
    chain = Regtest()
    r = BitcoinRail(live.requester, key, chain)
    chain.fund(r.address, [30_000, 45_000, 80_000, 12_000])
    return r


def independent_check(rail: BitcoinRail, unsigned: UnsignedPayment, tx_hex: str) -> None:
    """btclib's BIP-341 sighash of each input, coincurve's BIP-340 verify under x(Q)."""
    tx = Tx.parse(bytes.fromhex(tx_hex))
    prevouts = [TxOut(u.amount, u.script) for u in unsigned.inputs]
    pre = sig_hash.PrecomputedTxData(tx, prevouts)
    for i, vin in enumerate(tx.vin):
        (sig,) = vin.script_witness.stack
        digest = sig_hash.from_tx(prevouts, tx, i, sig_hash.DEFAULT, pre)
        assert PublicKeyXOnly(rail.output_key).verify(sig, digest), i
        assert not PublicKeyXOnly(rail.internal_key).verify(sig, digest)


def test_a_payment_with_change_under_the_demo_policy_is_accepted_by_bitcoin_core(
    rail: BitcoinRail, key: KeyOut
) -> None:
    assert rail.address == key.addresses["bitcoin"] and rail.address.startswith("bcrt1p")
    assert rail.balance() == 167_000
    unsigned = rail.prepare([Payment(DEST, 100_000)], RATE)
    assert len(unsigned.inputs) >= 2 and unsigned.change_index is not None  # multi-input
    spent = sum(u.amount for u in unsigned.inputs)
    assert rail.balance() == 167_000 - spent  # reserved
    sr = rail.sign(unsigned, idempotency_key=secrets.token_hex(16))
    assert sr.status == "signed" and sr.signers is not None and len(sr.signers) == 2, sr
    signed = rail.finalize(unsigned, sr)
    assert sr.result is not None and signed.hex == sr.result.signed_tx
    assert signed.txid == unsigned.txid and signed.vsize == unsigned.vsize  # exact vsize
    assert signed.weight == Tx.parse(bytes.fromhex(signed.hex)).weight
    independent_check(rail, unsigned, signed.hex)

    txid = rail.broadcast(signed)  # libbitcoinkernel verified every input
    assert txid == signed.txid and rail.status(txid).state == "mempool"
    (block,) = rail.chain.mine()  # type: ignore[attr-defined]
    st = rail.status(txid)
    assert (st.state, st.height, st.confirmations) == ("confirmed", block.height, 1)
    chain: Regtest = rail.chain  # type: ignore[assignment]
    chain.mine(5)
    assert rail.status(txid).confirmations == 6
    paid = chain.coin(txid, 1 - unsigned.change_index)
    change = chain.coin(txid, unsigned.change_index)
    assert (
        paid is not None
        and paid.amount == 100_000
        and paid.script == output_script(DEST, "regtest")
    )
    assert change is not None and change.script == rail.script
    assert spent == 100_000 + change.amount + unsigned.fee
    assert unsigned.fee == RATE.fee(signed.vsize)
    assert rail.balance() == 167_000 - spent + change.amount


def test_a_payment_resumed_after_a_restart_signs_once_and_pays_once(
    live: Live, key: KeyOut, rail: BitcoinRail
) -> None:
    """What a payment service keeps (the PSBT and its Idempotency-Key) is enough: after a
    crash a new rail rebuilds the payment, reserves its coins again, gets the same sign
    request back, and a broadcast repeated any number of times pays once."""
    unsigned = rail.prepare([Payment(DEST, 20_000)], RATE)
    idem = secrets.token_hex(16)
    first = rail.sign(unsigned, idempotency_key=idem)
    stored = dict(unsigned.payload)
    # "restart": a new rail over the same chain, nothing of the old one kept
    resumed = BitcoinRail(live.requester, key, rail.chain)
    again = payment_from_psbt(stored, internal_key=resumed.internal_key, network="regtest")
    assert again.txid == unsigned.txid and again.inputs == unsigned.inputs
    resumed.reserve(again)
    other = resumed.prepare([Payment(DEST, 20_000)], RATE)
    assert not {u.outpoint for u in other.inputs} & {u.outpoint for u in again.inputs}
    sr = resumed.sign(again, idempotency_key=idem)
    assert sr.id == first.id and sr.signature == first.signature  # no second request
    signed = resumed.finalize(again, sr)
    chain: Regtest = resumed.chain  # type: ignore[assignment]
    assert resumed.broadcast(signed) == resumed.broadcast(signed) == unsigned.txid
    assert chain.mempool == [unsigned.txid]
    chain.mine()
    assert resumed.broadcast(signed) == unsigned.txid  # already mined: still the same
    assert chain.status(unsigned.txid).confirmations == 1
    # coins reserved for one payment cannot be reserved for another
    with pytest.raises(RailError):
        resumed.reserve(replace(other, txid="00" * 32))


def test_finalize_refuses_what_a_compromised_coordinator_could_return(rail: BitcoinRail) -> None:
    """The rail does not take the coordinator's word: it finalizes from the signatures with
    custody's finalizer (each checked under x(Q)) and compares the coordinator's own
    transaction with its result."""
    unsigned = rail.prepare([Payment(DEST, 100_000)], RATE)
    sr = rail.sign(unsigned)
    assert sr.status == "signed" and sr.signature is not None and sr.result is not None
    sig = sr.signature
    other_psbt = {"psbt": base64.b64encode(unsigned.psbt[:-1] + b"\x01").decode()}
    forged = {
        "sign_request.status": sr.model_copy(update={"status": "failed"}),
        "sign_request": sr.model_copy(update={"key_id": "key_" + "0" * 32}),
        "sign_request.payload": sr.model_copy(update={"payload": other_psbt}),
        "sign_request.signature": sr.model_copy(update={"signature": sig[128:] + sig[:128]}),
        "sign_request.result.signed_tx": sr.model_copy(
            update={
                "result": sr.result.model_copy(
                    update={"signed_tx": sr.result.signed_tx[:-2] + "01"}
                )
            }
        ),
    }
    for field, bad in forged.items():
        with pytest.raises(RailError) as e:
            rail.finalize(unsigned, bad)
        assert e.value.field == field, (field, e.value)
    truncated = sr.model_copy(update={"signature": sig[:128]})
    with pytest.raises(RailError) as e:
        rail.finalize(unsigned, truncated)
    n = len(unsigned.inputs)
    assert e.value.field == "sign_request.signature" and f"need {n} signatures" in e.value.detail
    assert rail.finalize(unsigned, sr).hex == sr.result.signed_tx


@pytest.fixture(scope="module")
def open_policy(live: Live, key: KeyOut) -> None:
    """A governance version whose first rule allows any ``btc-psbt`` of this key, for the
    payments to addresses off the demo allowlist (installed by the dev officers' quorum)."""
    cur, _ = current_governance(live)
    rule = pol.Rule(
        "btc-rail-tests", "allow", kinds=frozenset({"btc-psbt"}), keys=frozenset({key.id})
    )
    install_policy(live, replace(cur.policy, rules=(rule, *cur.policy.rules)))


def signed_payment(rail: BitcoinRail, pay: list[Payment]) -> tuple[UnsignedPayment, str]:
    unsigned = rail.prepare(pay, RATE)
    sr = rail.sign(unsigned)
    assert sr.status == "signed", sr
    return unsigned, rail.finalize(unsigned, sr).hex


@pytest.mark.usefixtures("open_policy")
def test_tampered_spends_fail_bitcoin_cores_rules(rail: BitcoinRail) -> None:
    chain: Regtest = rail.chain  # type: ignore[assignment]
    unsigned, tx_hex = signed_payment(
        rail, [Payment(P2WPKH_ADDR, 90_000), Payment(P2PKH_ADDR, 25_000)]
    )
    assert len(unsigned.inputs) >= 2
    names = [f"input {i} ({u.txid}:{u.vout})" for i, u in enumerate(unsigned.inputs)]
    # a flipped signature byte
    tx = parse_tx(bytes.fromhex(tx_hex)).tx
    sig = bytearray(tx.vin[1].witness.items[0])
    sig[63] ^= 0x80
    tx.vin[1].witness.items[0] = bytes(sig)
    with pytest.raises(Rejected) as e:
        chain.accept(tx.serialize().hex())
    assert e.value.reason == "mandatory-script-verify-flag-failed"
    assert e.value.input_index == 1 and e.value.where == names[1]
    # an output amount changed after signing
    tx = parse_tx(bytes.fromhex(tx_hex)).tx
    tx.vout[0].value += 1
    with pytest.raises(Rejected) as e:
        chain.accept(tx.serialize().hex())
    assert e.value.reason == "mandatory-script-verify-flag-failed" and e.value.input_index == 0
    # a wrong spent amount in the prevouts
    spent = [(u.script, u.amount) for u in unsigned.inputs]
    assert verify_scripts(bytes.fromhex(tx_hex), spent) == []
    wrong = [spent[0], (spent[1][0], spent[1][1] - 1), *spent[2:]]
    assert verify_scripts(bytes.fromhex(tx_hex), wrong) == list(range(len(spent)))
    # the honest transaction is accepted, and a second spend of its coins is not
    assert chain.accept(tx_hex) == unsigned.txid
    independent_check(rail, unsigned, tx_hex)


@pytest.mark.usefixtures("open_policy")
def test_a_psbt_that_lies_about_a_coin_amount_gets_signed_and_refused_by_the_chain(
    rail: BitcoinRail,
) -> None:
    """The nodes cannot know a coin's amount; they sign the sighash of the PSBT's claim.
    The chain knows it, and Bitcoin Core's rules refuse the input."""
    chain: Regtest = rail.chain  # type: ignore[assignment]
    (coin,) = [u for u in chain.utxos(rail.script) if u.amount == 80_000]
    liar = Utxo(coin.txid, coin.vout, 80_001, coin.script)
    outs = [Out(output_script(P2WPKH_ADDR, "regtest"), 79_000)]
    sel = select_coins([liar], outs, RATE, rail.script)
    unsigned = build_psbt(
        sel, internal_key=rail.internal_key, network="regtest", fee_rate=RATE, locktime=0
    )
    sr = rail.sign(unsigned)
    assert sr.status == "signed", sr
    signed = rail.finalize(unsigned, sr)
    with pytest.raises(Rejected) as e:
        rail.broadcast(signed)
    assert e.value.reason == "mandatory-script-verify-flag-failed" and e.value.input_index == 0
    assert f"{coin.txid}:{coin.vout}" in str(e.value)


@pytest.mark.usefixtures("open_policy")
def test_double_spend_refused_and_reservations_keep_payments_apart(rail: BitcoinRail) -> None:
    chain: Regtest = rail.chain  # type: ignore[assignment]
    a = rail.prepare([Payment(P2WPKH_ADDR, 70_000)], RATE)
    b = rail.prepare([Payment(P2WPKH_ADDR, 40_000)], RATE)  # a's coins are reserved
    assert not {u.outpoint for u in a.inputs} & {u.outpoint for u in b.inputs}
    held = rail.balance()
    rail.release(b)  # b will not be sent: its coins are selectable again
    assert rail.balance() == held + sum(u.amount for u in b.inputs)
    # a second payment built from a stale view of a's coins (as a second service would)
    sel = select_coins(list(a.inputs), [Out(output_script(P2PKH_ADDR, "regtest"), 60_000)],
                       RATE, rail.script)  # fmt: skip
    c = build_psbt(
        sel, internal_key=rail.internal_key, network="regtest", fee_rate=RATE, locktime=0
    )
    shared = {u.outpoint for u in a.inputs} & {u.outpoint for u in c.inputs}
    assert shared
    sa, sc = (rail.finalize(p, rail.sign(p)) for p in (a, c))
    rail.broadcast(sa)
    with pytest.raises(Rejected) as e:
        rail.broadcast(sc)
    assert e.value.reason == "txn-mempool-conflict" and sa.txid in e.value.detail
    assert e.value.input_index is not None
    assert c.inputs[e.value.input_index].outpoint in shared
    chain.mine()
    with pytest.raises(Rejected) as e:
        rail.broadcast(sc)
    assert e.value.reason == "bad-txns-inputs-missingorspent"
    assert e.value.input_index is not None
    assert c.inputs[e.value.input_index].outpoint in shared


def test_insufficient_funds_and_dust_are_refused_before_custody_is_asked(
    live: Live, rail: BitcoinRail
) -> None:
    before = sum(1 for _ in live.auditor.list_sign_requests())
    with pytest.raises(SelectionError) as e:
        rail.prepare([Payment(DEST, 167_000)], RATE)
    assert "short by" in str(e.value) and e.value.field == "amount"
    with pytest.raises(SelectionError) as e:
        rail.prepare([Payment(DEST, 200), Payment(DEST, 1_000)], RATE)
    assert e.value.field == "payments[0].amount" and "dust" in str(e.value)
    with pytest.raises(ValueError, match=r"payments\[0\]\.address"):
        rail.prepare([Payment("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", 1_000)], RATE)
    assert sum(1 for _ in live.auditor.list_sign_requests()) == before
    assert rail.balance() == 167_000  # nothing stays reserved after a refusal


def approve_twice(live: Live, rail: BitcoinRail, request_id: str) -> None:
    """Two dev approvers of the treasury group approve with ``custody approve`` (a process,
    as an approver runs it): it decodes the PSBT on the key's network itself, compares the
    intent digest with the coordinator's, shows the spend in plain words and signs."""
    files = live.doc["dev_governance"]
    for path in sorted(files["approvers"])[:2]:
        r = subprocess.run(  # noqa: S603 - our own argv
            [sys.executable, "-m", "custody.cli", "approve", request_id, "--key-file", path,
             "--yes", "--cluster", str(live.cluster.cluster_file), "--passphrase-file",
             files["approver_passphrase_file"]],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Bitcoin regtest" in r.stdout, r.stdout


def test_above_the_limit_a_payment_waits_for_two_approvals(live: Live, key: KeyOut) -> None:
    """The demo policy's ``btc-over-limit`` rule: more than 0.1 BTC to the allowlist waits
    for two approvals of the treasury group. A fresh key, so that the open policy of the
    tests above (which names the module's key) does not apply."""
    fresh = live.admin.create_key("bip340", 2, network="regtest")
    chain = Regtest()
    rail = BitcoinRail(live.requester, fresh, chain)
    chain.fund(rail.address, [BTC_LIMIT, BTC_LIMIT // 2])
    unsigned = rail.prepare([Payment(DEST, BTC_LIMIT + 1_000)], RATE)
    sr = rail.sign(unsigned, wait=False)
    assert sr.status == "pending_approval", sr
    with pytest.raises(RailError) as e:
        rail.finalize(unsigned, sr)
    assert e.value.field == "sign_request.status"
    approve_twice(live, rail, sr.id)
    deadline = time.monotonic() + 60
    while (sr := live.requester.get_sign_request(sr.id)).status not in ("signed", "failed"):
        assert time.monotonic() < deadline, sr
        time.sleep(0.2)
    signed = rail.finalize(unsigned, sr)
    assert rail.broadcast(signed) == unsigned.txid
    chain.mine()
    assert rail.status(unsigned.txid).confirmations == 1
