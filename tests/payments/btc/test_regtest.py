"""The regtest UTXO set with spends signed by a real 2-of-3 FROST(BIP-340) key (in-process
DKG, never whole): accepted only when Bitcoin Core's script interpreter (py-bitcoinkernel)
accepts every input, mined, confirmed; each signature also checked by libsecp256k1
(coincurve) over the BIP-341 sighash computed by btclib, not by our code or custody's.
Every refusal names Core's reason and the input or output at fault."""

from __future__ import annotations

import base64
import secrets
from dataclasses import replace

import pytest
from btclib.script import sig_hash
from btclib.tx import Tx, TxOut
from coincurve import PublicKeyXOnly
from embit.psbt import PSBT
from embit.script import Script, Witness
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from custody.kinds.addresses import bitcoin_p2tr_address, p2tr_script
from payments.btc.fees import FeeRate, dust_threshold
from payments.btc.psbt import (
    SEQUENCE,
    PsbtError,
    SignedPayment,
    UnsignedPayment,
    build_psbt,
    decode_for_custody,
    finalize_psbt,
    payment_from_psbt,
)
from payments.btc.regtest import Regtest, Rejected, verify_scripts
from payments.btc.selection import Selection, Utxo, select_coins
from payments.btc.selection import TxOut as Out
from payments.btc.tx import AddressError, output_script, parse_tx
from tests.payments.btc.local_signer import LocalKey

RATE = FeeRate.sat_per_vb(2)
# regtest addresses of every type embit knows (BIP-173/350 and base58 test vectors' programs)
P2WPKH_ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
P2WSH_ADDR = "bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf4jry"
P2PKH_ADDR = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"
P2SH_ADDR = "2N2JD6wb56AfK4tfmM6PwdVmoYk2dCKf4Br"


@pytest.fixture(scope="module")
def key() -> LocalKey:
    return LocalKey()


@pytest.fixture
def chain() -> Regtest:
    return Regtest()


def ours(key: LocalKey) -> bytes:
    return p2tr_script(key.output_key)


def prepare(
    chain: Regtest, key: LocalKey, pay: list[tuple[str, int]], rate: FeeRate = RATE, **kw: int
) -> UnsignedPayment:
    outs = [Out(output_script(a, "regtest"), v) for a, v in pay]
    sel = select_coins(chain.utxos(ours(key)), outs, rate, ours(key))
    kw.setdefault("locktime", chain.height)
    return build_psbt(sel, internal_key=key.internal_key, network="regtest", fee_rate=rate, **kw)


def sign(key: LocalKey, unsigned: UnsignedPayment) -> SignedPayment:
    """Each input's sighash as custody's strict decoder computes it, signed by 2 of 3."""
    intent = decode_for_custody(unsigned)
    return finalize_psbt(unsigned, [key.sign(m) for m in intent.sighashes])


def independent_check(key: LocalKey, tx_hex: str, spent: list[tuple[bytes, int]]) -> None:
    """btclib's BIP-341 sighash (SIGHASH_DEFAULT) of each input, libsecp256k1's BIP-340
    verify of the input's one witness element under the BIP-86 output key."""
    tx = Tx.parse(bytes.fromhex(tx_hex))
    prevouts = [TxOut(a, s) for s, a in spent]
    pre = sig_hash.PrecomputedTxData(tx, prevouts)
    for i, vin in enumerate(tx.vin):
        (sig,) = vin.script_witness.stack
        digest = sig_hash.from_tx(prevouts, tx, i, sig_hash.DEFAULT, pre)
        assert len(sig) == 64 and PublicKeyXOnly(key.output_key).verify(sig, digest), i


def compact_size(n: int) -> bytes:
    return bytes([n]) if n < 0xFD else b"\xfd" + n.to_bytes(2, "little")


def rejected(chain: Regtest, tx_hex: str) -> Rejected:
    before = chain.mempool
    with pytest.raises(Rejected) as e:
        chain.accept(tx_hex)
    assert chain.mempool == before  # nothing half-accepted
    return e.value


def test_a_threshold_signed_multi_input_spend_is_accepted_mined_and_confirmed(
    key: LocalKey, chain: Regtest
) -> None:
    addr = bitcoin_p2tr_address(key.internal_key, "regtest")
    chain.fund(addr, [50_000, 30_000, 120_000, 9_000])
    assert chain.height == 100 and chain.balance(ours(key)) == 209_000
    before = chain.utxos(ours(key))
    unsigned = prepare(chain, key, [(P2WPKH_ADDR, 172_000)], change_position=1)
    assert len(unsigned.inputs) == 3 and unsigned.change_index == 1
    signed = sign(key, unsigned)
    # the vsize predicted before signing is the finalized transaction's, exactly
    assert signed.vsize == unsigned.vsize and signed.weight == unsigned.weight
    assert signed.txid == unsigned.txid == Tx.parse(bytes.fromhex(signed.hex)).id.hex()
    assert signed.wtxid == Tx.parse(bytes.fromhex(signed.hex)).hash.hex() != signed.txid
    spent = [(u.script, u.amount) for u in unsigned.inputs]
    independent_check(key, signed.hex, spent)
    assert verify_scripts(bytes.fromhex(signed.hex), spent) == []  # libbitcoinkernel

    checked = chain.test_accept(signed.hex)  # testmempoolaccept: nothing kept
    assert (checked.txid, checked.wtxid) == (signed.txid, signed.wtxid)
    assert (checked.vsize, checked.fee) == (unsigned.vsize, unsigned.fee)
    assert chain.mempool == [] and chain.status(signed.txid).state == "unknown"
    assert chain.accept(signed.hex) == signed.txid
    st = chain.status(signed.txid)
    assert (st.state, st.confirmations, st.height) == ("mempool", 0, None)
    spent_now = {u.outpoint for u in unsigned.inputs}
    left = [u for u in before if u.outpoint not in spent_now]
    assert chain.utxos(ours(key)) == left  # the mempool spends the rest
    (block,) = chain.mine()
    assert block.txids == (signed.txid,) and block.height == 101
    st = chain.status(signed.txid)
    assert (st.state, st.height, st.confirmations, st.block_hash) == (
        "confirmed",
        101,
        1,
        block.hash,
    )
    chain.mine(2)
    assert chain.status(signed.txid).confirmations == 3  # height - tx_height + 1
    # the payee has its coin; the change came back to the key, the fee is what was built
    dest = chain.coin(signed.txid, 0)
    assert dest is not None and dest.amount == 172_000
    assert dest.script == output_script(P2WPKH_ADDR, "regtest")
    change = chain.coin(signed.txid, 1)
    assert change is not None and change.script == ours(key)
    assert change.amount == unsigned.outputs[1].amount
    assert sum(u.amount for u in unsigned.inputs) == 172_000 + change.amount + unsigned.fee
    assert unsigned.fee == RATE.fee(unsigned.vsize)
    assert chain.balance(ours(key)) == sum(u.amount for u in left) + change.amount
    assert chain.status("ab" * 32).state == "unknown"


def test_the_psbt_is_what_custody_decodes(key: LocalKey, chain: Regtest) -> None:
    chain.fund(ours(key), [70_000, 20_000])
    unsigned = prepare(chain, key, [(P2WPKH_ADDR, 60_000), (P2PKH_ADDR, 5_000)])
    intent = decode_for_custody(unsigned)
    assert intent.network == "regtest" and intent.internal_key == key.internal_key
    assert intent.output_key == key.output_key
    assert [(i.txid, i.vout, i.amount, i.sequence) for i in intent.inputs] == [
        (u.txid, u.vout, u.amount, SEQUENCE) for u in unsigned.inputs
    ]
    assert [(o.script, o.amount) for o in intent.outputs] == [
        (o.script, o.amount) for o in unsigned.outputs
    ]
    assert intent.fee == unsigned.fee and intent.locktime == chain.height
    assert {o.address for o in intent.outputs} >= {P2WPKH_ADDR, P2PKH_ADDR}
    # the maps, as a third party (embit's own parser) reads them
    psbt = PSBT.parse(base64.b64decode(unsigned.payload["psbt"]))
    for inp, u in zip(psbt.inputs, unsigned.inputs, strict=True):
        assert inp.witness_utxo is not None and inp.witness_utxo.value == u.amount
        assert inp.witness_utxo.script_pubkey.data == ours(key)
        assert inp.taproot_internal_key.xonly() == key.internal_key
        assert inp.sighash_type is None and inp.taproot_merkle_root is None
    for j, out in enumerate(psbt.outputs):
        has_key = out.taproot_internal_key is not None
        assert has_key == (j == unsigned.change_index)

    # the maps byte for byte (BIP-174 key-value pairs, written out here by hand)
    def kv(k: bytes, v: bytes) -> bytes:
        return bytes([len(k)]) + k + compact_size(len(v)) + v

    raw = unsigned.psbt
    assert raw[:7] == b"psbt\xff\x01\x00"  # magic, the global unsigned tx's key 0x00
    n = raw[7]  # its length (< 253 here)
    assert n < 0xFD
    tx_bytes = raw[8 : 8 + n]
    expected = b"psbt\xff" + kv(b"\x00", tx_bytes) + b"\x00"
    for u in unsigned.inputs:
        witness_utxo = u.amount.to_bytes(8, "little") + bytes([len(u.script)]) + u.script
        expected += kv(b"\x01", witness_utxo) + kv(b"\x17", key.internal_key) + b"\x00"
    for j in range(len(unsigned.outputs)):
        expected += (kv(b"\x05", key.internal_key) if j == unsigned.change_index else b"") + b"\x00"
    assert raw == expected
    assert Tx.parse(tx_bytes).id.hex() == unsigned.txid  # btclib reads the same transaction
    # a coin that is not the key's own BIP-86 output is refused before any PSBT exists
    stranger = Utxo("cd" * 32, 0, 50_000, output_script(P2WPKH_ADDR, "regtest"))
    sel = Selection((stranger,), (Out(ours(key), 40_000),), 0, 10_000, 111, "bnb")
    with pytest.raises(PsbtError) as e:
        build_psbt(sel, internal_key=key.internal_key, network="regtest", fee_rate=RATE, locktime=0)
    assert e.value.field == "inputs[0]"


def test_outputs_to_every_address_type_are_accepted(key: LocalKey, chain: Regtest) -> None:
    chain.fund(ours(key), [500_000])
    pay = [(P2WPKH_ADDR, 10_000), (P2WSH_ADDR, 11_000), (P2PKH_ADDR, 12_000), (P2SH_ADDR, 13_000)]
    pay.append((bitcoin_p2tr_address(key.output_key, "regtest"), 14_000))
    signed = sign(key, prepare(chain, key, pay))
    txid = chain.accept(signed.hex)
    chain.mine()
    scripts = {output_script(a, "regtest"): v for a, v in pay}
    got = {
        c.script: c.amount
        for j in range(6)
        if (c := chain.coin(txid, j)) is not None and c.script in scripts
    }
    assert got == scripts
    # another network's address, a bad checksum, or no address at all: refused, named
    for bad in ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", P2WPKH_ADDR[:-1] + "1", "nope"):
        with pytest.raises(AddressError) as e:
            output_script(bad, "regtest", field="payments[0].address")
        assert e.value.field == "payments[0].address"
    assert output_script(P2WPKH_ADDR.upper(), "regtest") == output_script(P2WPKH_ADDR, "regtest")


def test_tampered_transactions_fail_bitcoin_cores_rules(key: LocalKey, chain: Regtest) -> None:
    chain.fund(ours(key), [40_000, 35_000])
    unsigned = prepare(chain, key, [(P2WPKH_ADDR, 70_000)], change_position=0)
    assert len(unsigned.inputs) == 2
    signed = sign(key, unsigned)
    tx = parse_tx(bytes.fromhex(signed.hex)).tx
    spent = [(u.script, u.amount) for u in unsigned.inputs]
    names = [f"input {i} ({u.txid}:{u.vout})" for i, u in enumerate(unsigned.inputs)]

    # a flipped bit in input 1's signature
    sig = bytearray(tx.vin[1].witness.items[0])
    sig[10] ^= 1
    tx.vin[1].witness = Witness([bytes(sig)])
    e = rejected(chain, tx.serialize().hex())
    assert e.reason == "mandatory-script-verify-flag-failed"
    assert e.input_index == 1 and e.where == names[1] and names[1] in str(e)

    # an output amount changed after signing: every input's sighash covers the outputs
    tx = parse_tx(bytes.fromhex(signed.hex)).tx
    tx.vout[1].value -= 1_000
    e = rejected(chain, tx.serialize().hex())
    assert e.reason == "mandatory-script-verify-flag-failed" and e.input_index == 0
    assert "also inputs [1]" in e.detail

    # the signature of input 0 moved to input 1 (each commits to its own index)
    tx = parse_tx(bytes.fromhex(signed.hex)).tx
    tx.vin[1].witness = tx.vin[0].witness
    assert rejected(chain, tx.serialize().hex()).input_index == 1

    # a wrong spent amount in the prevouts: the kernel refuses each input
    assert verify_scripts(bytes.fromhex(signed.hex), [spent[0], (spent[1][0], 35_001)]) == [0, 1]
    assert verify_scripts(bytes.fromhex(signed.hex), spent) == []

    # the untouched transaction is still good
    assert chain.accept(signed.hex) == signed.txid


def test_a_psbt_lying_about_a_spent_amount_is_signed_but_refused_by_the_chain(
    key: LocalKey, chain: Regtest
) -> None:
    """The fee-lie attack on a signer that trusts the PSBT: the witness UTXO claims 1 sat
    more than the coin holds. The threshold signature is valid over that lie, so custody's
    finalizer places it; the chain, which knows the real amount, refuses the input."""
    (coin,) = chain.fund(ours(key), [80_000])
    liar = Utxo(coin.txid, coin.vout, coin.amount + 1, coin.script)
    sel = select_coins(
        [liar], [Out(output_script(P2WPKH_ADDR, "regtest"), 50_000)], RATE, ours(key)
    )
    unsigned = build_psbt(
        sel, internal_key=key.internal_key, network="regtest", fee_rate=RATE, locktime=0
    )
    signed = sign(key, unsigned)
    e = rejected(chain, signed.hex)
    assert e.reason == "mandatory-script-verify-flag-failed" and e.input_index == 0
    assert f"{coin.txid}:{coin.vout}" in str(e)


def test_double_spends_are_refused_in_the_mempool_and_after_mining(
    key: LocalKey, chain: Regtest
) -> None:
    (coin,) = chain.fund(ours(key), [100_000])
    first = sign(key, prepare(chain, key, [(P2WPKH_ADDR, 60_000)]))
    second = sign(key, prepare(chain, key, [(P2PKH_ADDR, 50_000)]))  # same coin, other tx
    assert first.txid != second.txid
    chain.accept(first.hex)
    e = rejected(chain, second.hex)
    assert e.reason == "txn-mempool-conflict" and e.input_index == 0
    assert first.txid in e.detail and f"{coin.txid}:{coin.vout}" in e.where
    assert rejected(chain, first.hex).reason == "txn-already-in-mempool"
    chain.mine()
    e = rejected(chain, second.hex)
    assert e.reason == "bad-txns-inputs-missingorspent" and e.input_index == 0
    assert rejected(chain, first.hex).reason == "txn-already-known"


def test_a_change_output_in_the_mempool_can_be_spent_and_both_confirm_in_order(
    key: LocalKey, chain: Regtest
) -> None:
    chain.fund(ours(key), [100_000])
    parent = sign(key, prepare(chain, key, [(P2WPKH_ADDR, 30_000)]))
    chain.accept(parent.hex)
    pending = chain.utxos(ours(key), include_mempool=True)
    assert [u.txid for u in pending] == [parent.txid]
    outs = [Out(output_script(P2SH_ADDR, "regtest"), 20_000)]
    sel = select_coins(pending, outs, RATE, ours(key))
    child = sign(
        key,
        build_psbt(
            sel,
            internal_key=key.internal_key,
            network="regtest",
            fee_rate=RATE,
            locktime=chain.height,
        ),
    )
    chain.accept(child.hex)
    (block,) = chain.mine()
    assert block.txids == (parent.txid, child.txid)


def manual_tx(
    inputs: list[tuple[str, int, int]], outputs: list[tuple[bytes, int]], locktime: int = 0
) -> str:
    """An arbitrary transaction (random 64-byte 'signatures'): for checks that come before
    script verification."""
    tx = Transaction(
        version=2,
        vin=[TransactionInput(bytes.fromhex(t), v, sequence=s) for t, v, s in inputs],
        vout=[TransactionOutput(a, Script(s)) for s, a in outputs],
        locktime=locktime,
    )
    for vin in tx.vin:
        vin.witness = Witness([secrets.token_bytes(64)])
    return str(tx.serialize().hex())


def test_structural_amount_and_policy_refusals_name_the_fault(
    key: LocalKey, chain: Regtest
) -> None:
    (c,) = chain.fund(ours(key), [100_000])
    wpkh = output_script(P2WPKH_ADDR, "regtest")
    op = (c.txid, c.vout, SEQUENCE)
    cases = [
        (
            manual_tx([("ee" * 32, 7, SEQUENCE)], [(wpkh, 1_000)]),
            "bad-txns-inputs-missingorspent",
            0,
        ),
        (manual_tx([op], [(wpkh, 100_001)]), "bad-txns-in-belowout", None),
        (manual_tx([op], [(wpkh, 99_950)]), "min relay fee not met", None),  # 50 sat < 111
        (manual_tx([op], [(wpkh, 50_000), (wpkh, 293)]), "dust", None),
        (manual_tx([op, op], [(wpkh, 1_000)]), "bad-txns-inputs-duplicate", 1),
        (manual_tx([op], [(b"\x51" * 30, 1_000)]), "scriptpubkey", None),
        (manual_tx([op], [(b"\x6a", 0)]), "tx-size-small", None),  # 61 bytes < 65
        (manual_tx([op], [(wpkh, 1_000)], locktime=chain.height + 1), "non-final", None),
        (manual_tx([op], [(wpkh, 1_000)], locktime=600_000_000), "non-final", None),
        (manual_tx([op], []), "bad-txns-vout-empty", None),
        (manual_tx([op], [(wpkh, 50_000)]) + "00", "TX decode failed", None),
        ("zz", "TX decode failed", None),
        (manual_tx([op], [(wpkh, 50_000)]), "mandatory-script-verify-flag-failed", 0),
    ]
    for tx_hex, reason, index in cases:
        e = rejected(chain, tx_hex)
        assert (e.reason, e.input_index) == (reason, index), (reason, str(e))
    e = rejected(chain, manual_tx([op], [(wpkh, 50_000), (wpkh, 293)]))
    assert e.where == "output 1" and f"{dust_threshold(wpkh)} sat" in e.detail
    e = rejected(chain, manual_tx([op], [(wpkh, 50_000), (wpkh, 293), (ours(key), 329)]))
    assert e.reason == "dust" and e.where == "outputs [1, 2]"  # btclib's IsStandardTx
    e = rejected(chain, manual_tx([op], [(wpkh, 99_950)]))
    assert "50 < " in e.detail
    # the weight limit (400 000 WU): 2 400 outputs of 43 bytes are 412 800 WU
    many = manual_tx([op], [(ours(key), 330)] * 2_400)
    assert parse_tx(bytes.fromhex(many)).weight > 400_000
    assert rejected(chain, many).reason == "tx-size"
    assert chain.mempool == []


def test_coinbase_maturity_and_relative_lock_times(key: LocalKey, chain: Regtest) -> None:
    (c,) = chain.fund(ours(key), [100_000], mature=False)
    assert chain.utxos(ours(key)) == []  # not spendable in the next block yet
    wpkh = output_script(P2WPKH_ADDR, "regtest")
    spend = manual_tx([(c.txid, c.vout, SEQUENCE)], [(wpkh, 90_000)])
    e = rejected(chain, spend)
    assert e.reason == "bad-txns-premature-spend-of-coinbase" and e.input_index == 0
    chain.mine(98)  # the next block is at height c.height + 99: still one short
    assert rejected(chain, spend).reason == "bad-txns-premature-spend-of-coinbase"
    chain.mine()
    assert rejected(chain, spend).reason == "mandatory-script-verify-flag-failed"  # matured
    # BIP-68: sequence 150 asks for 150 confirmations of the coin (it has 100)
    locked = manual_tx([(c.txid, c.vout, 150)], [(wpkh, 90_000)])
    e = rejected(chain, locked)
    assert e.reason == "non-BIP68-final" and e.input_index == 0
    chain.mine(50)
    assert rejected(chain, locked).reason == "mandatory-script-verify-flag-failed"
    e = rejected(chain, manual_tx([(c.txid, c.vout, 1 << 22 | 3)], [(wpkh, 90_000)]))
    assert e.reason == "non-BIP68-final" and "time-based" in e.detail
    # a signed spend of the matured coin is accepted
    signed = sign(key, prepare(chain, key, [(P2WPKH_ADDR, 90_000)]))
    assert chain.accept(signed.hex) == signed.txid


def test_a_lock_time_at_the_next_height_waits_for_it(key: LocalKey, chain: Regtest) -> None:
    chain.fund(ours(key), [100_000])
    signed = sign(key, prepare(chain, key, [(P2WPKH_ADDR, 90_000)], locktime=chain.height + 1))
    assert rejected(chain, signed.hex).reason == "non-final"
    chain.mine()
    assert chain.accept(signed.hex) == signed.txid


def test_finalize_refuses_signatures_that_do_not_verify(key: LocalKey, chain: Regtest) -> None:
    chain.fund(ours(key), [100_000])
    unsigned = prepare(chain, key, [(P2WPKH_ADDR, 90_000)])
    (m,) = decode_for_custody(unsigned).sighashes
    other = LocalKey()
    for sigs, field in (
        ([other.sign(m)], "signatures[0]"),
        ([key.sign(m)[:63]], "signatures[0]"),
        ([key.sign(m), key.sign(m)], "signatures"),
    ):
        with pytest.raises(PsbtError) as e:
            finalize_psbt(unsigned, sigs)
        assert e.value.field == field
    # a payment record that does not describe its PSBT is refused, not finalized
    with pytest.raises(PsbtError) as e:
        finalize_psbt(replace(unsigned, fee=unsigned.fee + 1), [key.sign(m)])
    assert e.value.field == "psbt"
    with pytest.raises(PsbtError) as e:
        finalize_psbt(replace(unsigned, txid="00" * 32), [key.sign(m)])
    assert e.value.field == "signed_tx"


def test_a_stored_psbt_rebuilds_the_same_payment(key: LocalKey, chain: Regtest) -> None:
    chain.fund(ours(key), [70_000, 20_000])
    unsigned = prepare(chain, key, [(P2WPKH_ADDR, 60_000), (P2SH_ADDR, 15_000)])
    assert unsigned.change_index is not None
    again = payment_from_psbt(unsigned.payload, internal_key=key.internal_key, network="regtest")
    assert again == unsigned  # with change the rate paid is exactly the rate asked
    assert (
        again.summary()["outputs"][unsigned.change_index]["amount"]
        == unsigned.outputs[unsigned.change_index].amount
    )
    stranger = LocalKey()
    with pytest.raises(PsbtError) as e:
        payment_from_psbt(unsigned.payload, internal_key=stranger.internal_key, network="regtest")
    assert e.value.field == "psbt.inputs[0].witness_utxo"
