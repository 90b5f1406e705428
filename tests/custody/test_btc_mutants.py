"""Attack tests for ``custody/kinds/btc.py`` (the PSBT decoder every node recomputes),
written against the survivors of its mutation run (docs/MUTATION.md, issue 16).

Each PSBT is written here byte by byte from BIP-174's key-value maps (around transactions
built by embit), so a test can put exactly the field it attacks where BIP-174 puts it:
``PSBT_IN_NON_WITNESS_UTXO`` (0x00) that lies about what an input spends (the BIP-143 /
segwit fee attack: a witness UTXO worth more than the output the previous transaction
really has), a final scriptSig or witness (0x07, 0x08), taproot script-path data (0x14,
0x15), a PSBT version (``PSBT_GLOBAL_VERSION`` 0xFB). Sighashes are checked by btclib,
signatures by coincurve and Bitcoin Core's script interpreter (py-bitcoinkernel); the key
signs as a FROST 2-of-3 sharing from the test dealer (never whole).
"""

from __future__ import annotations

import base64
import dataclasses
import secrets

import pytest
from embit import compact
from embit.script import Script, Witness
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from custody.kinds import KindError, btc
from custody.kinds.addresses import p2tr_script, taproot_output_key
from mpc import frost
from mpc.groups import SECP256K1
from tests.custody.kinds.test_btc import btclib_sighashes
from tests.custody.kinds.test_chain_acceptance import core_verifies, frost_sign
from tests.mpc.conftest import dealer_split_for_tests

SAT = 100_000_000
MAX_MONEY = 21_000_000 * SAT  # Bitcoin Core's consensus amount bound, written out
KEY = bytes.fromhex("cc8a4bc64d897bddc5fbc2f670f7a8ba0b386779106cf1223c6fc5d7cd6fc115")  # BIP-86
OURS = p2tr_script(taproot_output_key(KEY))
OP_RETURN = b"\x6a\x00"


def kv(key: bytes, value: bytes) -> bytes:
    return compact.to_bytes(len(key)) + key + compact.to_bytes(len(value)) + value


def wutxo(amount: int, spk: bytes = OURS) -> bytes:
    return TransactionOutput(amount, Script(spk)).serialize()


def unsigned(
    ins: list[tuple[bytes, int]], outs: list[tuple[bytes, int]], version: int = 2
) -> Transaction:
    return Transaction(
        version=version,
        vin=[TransactionInput(txid, vout, sequence=0xFFFFFFFD) for txid, vout in ins],
        vout=[TransactionOutput(amount, Script(spk)) for spk, amount in outs],
        locktime=0,
    )


def psbt(
    tx: Transaction | bytes,
    inputs: list[list[tuple[bytes, bytes]]],
    n_outputs: int | None = None,
    globals_: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, str]:
    """BIP-174: magic, global map (``globals_`` first, then the unsigned tx), one map per
    input with the given key-value pairs, empty output maps."""
    raw_tx = tx if isinstance(tx, bytes) else tx.serialize()
    out = b"psbt\xff"
    for k, v in globals_ or []:
        out += kv(k, v)
    out += kv(b"\x00", raw_tx) + b"\x00"
    for pairs in inputs:
        out += b"".join(kv(k, v) for k, v in pairs) + b"\x00"
    count = len(Transaction.parse(raw_tx).vout) if n_outputs is None else n_outputs
    out += b"\x00" * count
    return {"psbt": base64.b64encode(out).decode()}


def decoded(payload: dict[str, str], key: bytes = KEY) -> btc.BtcPsbt:
    return btc.decode(payload, internal_key=key, network="regtest")


def refused(payload: object, field: str, detail: str | None = None, key: object = KEY) -> str:
    with pytest.raises(KindError) as err:
        btc.decode(payload, internal_key=key, network="regtest")  # type: ignore[arg-type]
    assert (err.value.kind, err.value.field) == ("btc-psbt", field), err.value
    if detail is not None:
        assert detail in err.value.detail, err.value
    return err.value.detail


def one_input(*pairs: tuple[bytes, bytes], amount: int = 10_000) -> list[list[tuple[bytes, bytes]]]:
    return [[(b"\x01", wutxo(amount)), *pairs]]


TXID = bytes(range(32))
SIMPLE = unsigned([(TXID, 0)], [(OP_RETURN, 9_000)])


def test_the_plain_psbt_of_these_tests_decodes() -> None:
    intent = decoded(psbt(SIMPLE, one_input()))
    assert intent.fee == 1_000 and intent.inputs[0].txid == TXID.hex()
    assert list(intent.sighashes) == btclib_sighashes(SIMPLE.serialize(), [10_000], OURS)


# -- PSBT_IN_NON_WITNESS_UTXO: the previous transaction must be the one the input spends ----


def previous_tx(amounts: list[int]) -> Transaction:
    return unsigned([(secrets.token_bytes(32), 0)], [(OURS, a) for a in amounts], version=1)


def spending(prev: Transaction, vout: int, txid: bytes | None = None) -> Transaction:
    return unsigned([(prev.txid() if txid is None else txid, vout)], [(OP_RETURN, 1_000)])


def test_a_matching_non_witness_utxo_is_accepted_at_its_last_output() -> None:
    prev = previous_tx([5_000, 7_000])
    tx = spending(prev, 1)  # vout = len(vout) - 1: inside
    intent = decoded(psbt(tx, [[(b"\x00", prev.serialize()), (b"\x01", wutxo(7_000))]]))
    assert intent.fee == 6_000 and intent.inputs[0].vout == 1


def test_non_witness_utxo_of_another_transaction_is_refused() -> None:
    prev = previous_tx([5_000])
    tx = spending(prev, 0, txid=bytes(32))  # the input spends another txid
    refused(
        psbt(tx, [[(b"\x00", prev.serialize()), (b"\x01", wutxo(5_000))]]),
        "psbt.inputs[0].non_witness_utxo",
        "does not match the prevout",
    )


def test_non_witness_utxo_without_the_spent_output_is_refused() -> None:
    prev = previous_tx([5_000, 7_000])
    tx = spending(prev, 2)  # vout = len(vout): outside
    refused(
        psbt(tx, [[(b"\x00", prev.serialize()), (b"\x01", wutxo(7_000))]]),
        "psbt.inputs[0].non_witness_utxo",
        "does not match the prevout",
    )


def test_segwit_fee_attack_witness_utxo_inflated_against_non_witness_utxo() -> None:
    # The BIP-143 fee attack: the witness UTXO claims 1 BTC where the previous transaction
    # pays 5,000 sat, so the shown fee is 99,996,000 sat smaller than the real one (a
    # taproot sighash commits to every amount, so the signature would not verify; the
    # decoder still refuses to show the lie).
    prev = previous_tx([5_000])
    tx = spending(prev, 0)
    refused(
        psbt(tx, [[(b"\x00", prev.serialize()), (b"\x01", wutxo(SAT))]]),
        "psbt.inputs[0].witness_utxo",
        "differs from non_witness_utxo",
    )
    # the same amount to another script, too
    refused(
        psbt(tx, [[(b"\x00", prev.serialize()), (b"\x01", wutxo(5_000, b"\x51\x20" + KEY))]]),
        "psbt.inputs[0].witness_utxo",
    )


# -- inputs already signed or finalized, and script-path data -----------------------------


def test_pre_finalized_input_final_scriptsig_is_refused() -> None:
    refused(psbt(SIMPLE, one_input((b"\x07", b"\x51"))), "psbt.inputs[0]", "already finalized")


def test_pre_finalized_input_final_scriptwitness_is_refused() -> None:
    witness = b"\x01\x40" + bytes(64)  # one 64-byte stack item
    refused(psbt(SIMPLE, one_input((b"\x08", witness))), "psbt.inputs[0]", "already finalized")


def test_unsigned_transaction_with_a_scriptsig_is_refused() -> None:
    tx = unsigned([(TXID, 0)], [(OP_RETURN, 9_000)])
    tx.vin[0].script_sig = Script(b"\x51")
    with pytest.raises(KindError) as err:
        decoded(psbt(tx, one_input()))
    # BIP-174: "the transaction must be in the old serialization format (without
    # witnesses) and have empty scriptSigs"; embit or our check refuses it, as a PSBT error
    assert err.value.field in ("psbt", "psbt.inputs[0]"), err.value


def test_unsigned_transaction_with_a_witness_alone_is_refused() -> None:
    # a witness but no scriptSig: each of the two is refused on its own
    tx = unsigned([(TXID, 0)], [(OP_RETURN, 9_000)])
    tx.vin[0].witness = Witness([bytes(64)])
    assert tx.is_segwit and not tx.vin[0].script_sig.data
    refused(psbt(tx, one_input()), "psbt.inputs[0]", "carries a scriptSig/witness")


def test_tap_script_sig_alone_is_script_path_data_and_refused() -> None:
    key = b"\x14" + KEY + bytes(32)  # PSBT_IN_TAP_SCRIPT_SIG: x-only key || leaf hash
    refused(psbt(SIMPLE, one_input((key, bytes(64)))), "psbt.inputs[0]", "script-path")


def test_tap_leaf_script_alone_is_script_path_data_and_refused() -> None:
    control = bytes([0xC0]) + KEY  # PSBT_IN_TAP_LEAF_SCRIPT: control block of leaf 0xc0
    refused(
        psbt(SIMPLE, one_input((b"\x15" + control, b"\x51\xc0"))), "psbt.inputs[0]", "script-path"
    )


def test_explicit_sighash_default_and_psbt_version_0_are_accepted() -> None:
    intent = decoded(psbt(SIMPLE, one_input((b"\x03", (0).to_bytes(4, "little")))))
    assert intent.fee == 1_000
    v0 = psbt(SIMPLE, one_input(), globals_=[(b"\xfb", (0).to_bytes(4, "little"))])
    assert decoded(v0).fee == 1_000


def test_psbt_versions_other_than_0_are_refused() -> None:
    # 1 and 3 reach our check; 2 (PSBTv2, BIP-370) embit refuses itself beside a global tx
    for version, field in ((1, "psbt.version"), (3, "psbt.version"), (2, "psbt")):
        refused(
            psbt(SIMPLE, one_input(), globals_=[(b"\xfb", version.to_bytes(4, "little"))]), field
        )


def test_a_global_field_before_the_unsigned_transaction_is_skipped() -> None:
    # BIP-174 orders nothing inside a map: a proprietary global field (0xFC) may come first,
    # and the transaction read for the sighash must still be PSBT_GLOBAL_UNSIGNED_TX
    other = unsigned([(bytes(32), 7)], [(OP_RETURN, 1)])
    payload = psbt(SIMPLE, one_input(), globals_=[(b"\xfc\x01x", other.serialize())])
    intent = decoded(payload)
    assert intent.inputs[0].txid == TXID.hex()
    assert list(intent.sighashes) == btclib_sighashes(SIMPLE.serialize(), [10_000], OURS)


def test_the_internal_key_must_be_bytes() -> None:
    refused(psbt(SIMPLE, one_input()), "public_key", "32-byte x-only", key=bytearray(KEY))
    refused(psbt(SIMPLE, one_input()), "public_key", "32-byte x-only", key=KEY.hex())


def test_not_base64_is_named_as_such() -> None:
    assert refused({"psbt": "%%%"}, "psbt") == "not base64"
    assert refused({"psbt": "cHNid"}, "psbt") == "not base64"  # bad padding
    # non-ASCII: base64 raises a plain ValueError here, not binascii.Error
    assert refused({"psbt": "cHNi\u00e9"}, "psbt") == "not base64"


# -- amounts: MAX_MONEY on every amount and on both sums; fee zero ------------------------


def test_amounts_at_max_money_are_accepted_and_one_more_refused() -> None:
    tx = unsigned([(TXID, 0)], [(OP_RETURN, MAX_MONEY)])
    assert decoded(psbt(tx, one_input(amount=MAX_MONEY))).fee == 0
    refused(psbt(tx, one_input(amount=MAX_MONEY + 1)), "psbt.inputs[0].witness_utxo.amount")
    over = unsigned([(TXID, 0)], [(OP_RETURN, MAX_MONEY + 1)])
    refused(psbt(over, one_input(amount=MAX_MONEY)), "psbt.outputs[0].amount", "out of range")
    huge = unsigned([(TXID, 0)], [(OP_RETURN, 2**64 - 1)])
    refused(psbt(huge, one_input()), "psbt.outputs[0].amount")


def test_zero_amounts_are_amounts() -> None:
    tx = unsigned([(TXID, 0)], [(OP_RETURN, 0)])
    intent = decoded(psbt(tx, one_input(amount=0)))
    assert intent.fee == 0 and intent.inputs[0].amount == 0 and intent.outputs[0].amount == 0


def test_inputs_summing_past_max_money_are_refused() -> None:
    tx = unsigned([(TXID, 0), (TXID, 1)], [(OP_RETURN, 1)])
    inputs = [[(b"\x01", wutxo(MAX_MONEY))], [(b"\x01", wutxo(1))]]
    refused(psbt(tx, inputs), "psbt.inputs", "out of range")


def test_outputs_summing_past_max_money_are_refused() -> None:
    tx = unsigned([(TXID, 0)], [(OP_RETURN, MAX_MONEY), (OP_RETURN, 1)])
    refused(psbt(tx, one_input(amount=MAX_MONEY)), "psbt.outputs", "out of range")


def test_outputs_equal_to_the_inputs_pay_no_fee_and_one_more_is_refused() -> None:
    even = unsigned([(TXID, 0)], [(OP_RETURN, 10_000)])
    assert decoded(psbt(even, one_input())).fee == 0
    over = unsigned([(TXID, 0)], [(OP_RETURN, 10_001)])
    refused(psbt(over, one_input()), "psbt.outputs", "more than the inputs")


# -- the size bound: MAX_PSBT bytes decoded ------------------------------------------------


def sized(n: int) -> dict[str, str]:
    """A valid PSBT of exactly ``n`` bytes (one large OP_RETURN output)."""

    def build(data_len: int) -> bytes:
        spk = b"\x6a\x4e" + data_len.to_bytes(4, "little") + bytes(data_len)  # OP_PUSHDATA4
        tx = unsigned([(TXID, 0)], [(spk, 1_000)])
        raw = base64.b64decode(psbt(tx, one_input())["psbt"])
        return raw

    base = len(build(70_000))  # compact sizes are 5 bytes from 65,536 on: linear above
    raw = build(70_000 + n - base)
    assert len(raw) == n
    return {"psbt": base64.b64encode(raw).decode()}


def test_a_psbt_of_max_psbt_bytes_decodes_and_one_byte_more_is_refused() -> None:
    assert btc.MAX_PSBT == 512 * 1024
    intent = decoded(sized(btc.MAX_PSBT))
    assert intent.fee == 9_000 and len(intent.psbt) == btc.MAX_PSBT
    refused(sized(btc.MAX_PSBT + 1), "psbt", f"longer than {btc.MAX_PSBT} bytes")


def test_base64_longer_than_the_bound_is_refused_before_decoding() -> None:
    # 4 * ceil(MAX_PSBT / 3) characters encode MAX_PSBT bytes; anything past the string
    # bound is refused by length alone (not decoded: "longer than", not "not base64")
    limit = (btc.MAX_PSBT * 4) // 3 + 4
    assert limit == 699_054
    assert refused({"psbt": "A" * limit}, "psbt") == "not base64"  # 699,054 is not 4k
    assert "longer than" in refused({"psbt": "A" * (limit + 1)}, "psbt")
    assert "longer than" in refused({"psbt": "%" * (limit + 1)}, "psbt")


# -- finalize and assemble: only 64-byte bytes, each input's witness ---------------------

SHARES = dealer_split_for_tests(SECP256K1, 2, 3)
SUITE = frost.ciphersuite("bip340")
INTERNAL = SUITE.encode_public_key(SHARES[1].public.group_public_key)
TWEAKED = {i: frost.taproot_tweak(k) for i, k in SHARES.items()}


def signed_intent() -> tuple[btc.BtcPsbt, list[bytes], bytes]:
    spk = p2tr_script(taproot_output_key(INTERNAL))
    tx = unsigned([(TXID, 0), (TXID, 3)], [(b"\x00\x14" + bytes(20), 15_000)])
    inputs = [[(b"\x01", wutxo(10_000, spk))], [(b"\x01", wutxo(6_000, spk))]]
    intent = decoded(psbt(tx, inputs), key=INTERNAL)
    sigs = [frost_sign(TWEAKED, [1, 3], m) for m in intent.messages]
    return intent, sigs, spk


def test_finalize_places_each_signature_and_bitcoin_core_accepts_the_spend() -> None:
    intent, sigs, spk = signed_intent()
    signed = btc.finalize(intent, sigs)
    assert core_verifies(signed, spk, [10_000, 6_000])
    tx = Transaction.parse(bytes.fromhex(signed))
    assert [list(vin.witness.items) for vin in tx.vin] == [[s] for s in sigs]
    assert btc.assemble(intent.psbt, sigs) == signed
    # swapped between the inputs: both still 64 bytes, finalize refuses the first
    with pytest.raises(KindError) as err:
        btc.finalize(intent, sigs[::-1])
    assert (err.value.field, err.value.detail) == (
        "signatures[0]",
        "does not verify under the output key",
    )


def test_finalize_takes_only_64_bytes_objects() -> None:
    intent, sigs, _ = signed_intent()
    for bad in (bytearray(sigs[0]), sigs[0] + b"\x00", sigs[0][:63], sigs[0].hex()):
        with pytest.raises(KindError) as err:
            btc.finalize(intent, [bad, sigs[1]])  # type: ignore[list-item]
        assert (err.value.field, err.value.detail) == ("signatures[0]", "must be 64 bytes")
    with pytest.raises(KindError) as err:
        btc.finalize(intent, [sigs[0], sigs[1] + b"\x01"])
    assert (err.value.field, err.value.detail) == ("signatures[1]", "must be 64 bytes")


def test_assemble_refuses_a_count_or_length_mismatch() -> None:
    intent, sigs, _ = signed_intent()
    for bad in ([sigs[0]], [*sigs, sigs[0]], [sigs[0], sigs[1][:63]], [sigs[0] + b"\x00", sigs[1]]):
        with pytest.raises(KindError) as err:
            btc.assemble(intent.psbt, bad)
        assert err.value.field == "signatures", bad
    with pytest.raises(KindError) as err:
        btc.assemble(b"psbt\xff\x00", sigs)  # a global map without PSBT_GLOBAL_UNSIGNED_TX
    assert (err.value.field, err.value.detail) == ("psbt", "no unsigned transaction")
    garbage = b"psbt\xff" + kv(b"\x00", b"\x02\x00\x00\x00\x01" + b"\xff" * 10) + b"\x00"
    with pytest.raises(KindError) as err:
        btc.assemble(garbage, sigs)  # embit's own parse error, wrapped
    assert err.value.field == "psbt"
    assert err.value.detail.startswith("unreadable unsigned transaction: ")


def test_decoded_values_are_frozen() -> None:
    intent = decoded(psbt(SIMPLE, one_input()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        intent.inputs[0].amount = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        intent.outputs[0].amount = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        intent.fee = 0  # type: ignore[misc]


def test_summary_shows_every_decoded_field() -> None:
    intent = decoded(psbt(SIMPLE, one_input()))
    assert intent.summary() == {
        "network": "regtest",
        "inputs": [{"txid": TXID.hex(), "vout": 0, "amount": 10_000, "sequence": 0xFFFFFFFD}],
        "outputs": [{"address": None, "script": OP_RETURN.hex(), "amount": 9_000}],
        "fee": 1_000,
        "version": 2,
        "locktime": 0,
        "sighashes": [h.hex() for h in intent.sighashes],
    }


def test_the_amount_check_on_its_own() -> None:
    # embit reads amounts as unsigned 8-byte integers, so no PSBT carries a negative one;
    # the check must refuse it anyway (a parser that read int64, as Bitcoin Core does, would)
    for ok in (0, 1, MAX_MONEY):
        assert btc._amount(ok, "a") == ok
    for bad in (-1, MAX_MONEY + 1, 1.0, "1", None):
        with pytest.raises(KindError) as err:
            btc._amount(bad, "psbt.outputs[0].amount")
        assert (err.value.field, err.value.detail) == (
            "psbt.outputs[0].amount",
            "amount out of range",
        )
