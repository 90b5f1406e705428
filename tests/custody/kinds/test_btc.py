"""btc-psbt: built with embit, sighashes recomputed by btclib, every refusal typed."""

from __future__ import annotations

import base64

import pytest
from btclib.script import sig_hash
from btclib.tx import Tx, TxOut
from embit import compact
from embit.script import Script
from embit.transaction import TransactionOutput
from hypothesis import given, settings
from hypothesis import strategies as st

from custody.kinds import KindError, btc, decode
from custody.kinds.addresses import NETWORKS, bitcoin_p2tr_address, p2tr_script, taproot_output_key
from tests.custody.kinds.btc_build import b64, build_psbt, xonly_keys

SAT = 100_000_000


@st.composite
def scripts(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["p2tr", "p2wpkh", "p2wsh", "p2pkh", "p2sh", "op_return"]))
    if kind == "p2tr":
        return p2tr_script(taproot_output_key(draw(xonly_keys)))
    if kind == "p2wpkh":
        return b"\x00\x14" + draw(st.binary(min_size=20, max_size=20))
    if kind == "p2wsh":
        return b"\x00\x20" + draw(st.binary(min_size=32, max_size=32))
    if kind == "p2pkh":
        return b"\x76\xa9\x14" + draw(st.binary(min_size=20, max_size=20)) + b"\x88\xac"
    if kind == "p2sh":
        return b"\xa9\x14" + draw(st.binary(min_size=20, max_size=20)) + b"\x87"
    data = draw(st.binary(max_size=40))
    return b"\x6a" + bytes([len(data)]) + data


@st.composite
def spends(draw: st.DrawFn) -> tuple:
    key = draw(xonly_keys)
    ins = draw(
        st.lists(
            st.tuples(
                st.binary(min_size=32, max_size=32),
                st.integers(0, 2**32 - 1),
                st.integers(1, 50 * SAT),
                st.integers(0, 2**32 - 1),
            ),
            min_size=1,
            max_size=4,
            unique_by=lambda i: (i[0], i[1]),
        )
    )
    total = sum(i[2] for i in ins)
    n_out = draw(st.integers(1, 4))
    outs = [(draw(scripts()), draw(st.integers(0, total // n_out))) for _ in range(n_out)]
    return key, ins, outs, draw(st.sampled_from(NETWORKS)), draw(st.integers(1, 3))


def btclib_sighashes(psbt_tx_bytes: bytes, amounts: list[int], spk: bytes) -> list[bytes]:
    """BIP-341 SIGHASH_DEFAULT by btclib, from the serialized unsigned tx (its own parser)."""
    tx = Tx.parse(psbt_tx_bytes)
    prevouts = [TxOut(a, spk) for a in amounts]
    return [
        sig_hash.taproot(tx, i, prevouts, sig_hash.DEFAULT, 0, b"", b"")
        for i in range(len(amounts))
    ]


@settings(max_examples=60, deadline=None)
@given(spends(), st.integers(0, 2**32 - 1))
def test_round_trip_every_field_and_sighash(spend: tuple, locktime: int) -> None:
    key, ins, outs, network, version = spend
    psbt = build_psbt(key, ins, outs, version=version, locktime=locktime)
    intent = decode("btc-psbt", b64(psbt), scheme="bip340", public_key=key, network=network)
    assert isinstance(intent, btc.BtcPsbt)
    assert intent.network == network and intent.internal_key == key
    assert intent.version == version and intent.locktime == locktime
    assert [(bytes.fromhex(i.txid), i.vout, i.amount, i.sequence) for i in intent.inputs] == ins
    assert [(o.script, o.amount) for o in intent.outputs] == outs
    for o in intent.outputs:
        if o.script[0] == 0x6A:
            assert o.address is None
        else:
            assert o.address is not None
    assert intent.fee == sum(i[2] for i in ins) - sum(o[1] for o in outs)
    spk = p2tr_script(taproot_output_key(key))
    expected = btclib_sighashes(psbt.unsigned.serialize(), [i[2] for i in ins], spk)
    assert list(intent.messages) == list(intent.sighashes) == expected


@settings(max_examples=20, deadline=None)
@given(xonly_keys, st.sampled_from(NETWORKS))
def test_output_addresses_use_the_network(key: bytes, network: str) -> None:
    spk = p2tr_script(taproot_output_key(key))
    psbt = build_psbt(key, [(bytes(32), 0, 1000, 0)], [(spk, 900)])
    intent = btc.decode(b64(psbt), internal_key=key, network=network)
    assert intent.outputs[0].address == bitcoin_p2tr_address(key, network)


KEY = bytes.fromhex("cc8a4bc64d897bddc5fbc2f670f7a8ba0b386779106cf1223c6fc5d7cd6fc115")  # BIP-86


def good() -> tuple:
    return build_psbt(
        KEY, [(bytes(32), 0, 10_000, 0), (b"\x01" * 32, 1, 5_000, 0)], [(b"\x6a\x00", 14_000)]
    )


def refused(payload: object, field: str, key: bytes = KEY, network: str = "mainnet") -> KindError:
    with pytest.raises(KindError) as err:
        btc.decode(payload, internal_key=key, network=network)  # type: ignore[arg-type]
    assert (err.value.kind, err.value.field) == ("btc-psbt", field), err.value
    return err.value


def test_refusals_name_the_field() -> None:
    p = good()
    ok = b64(p)
    btc.decode(ok, internal_key=KEY, network="regtest")
    refused(ok, "network", network="testnet4")
    refused(ok, "public_key", key=bytes(31))
    refused(ok, "public_key", key=b"\xff" * 32)
    refused({}, "psbt")
    refused({**ok, "x": 1}, "x")
    refused({"psbt": 1}, "psbt")
    refused({"psbt": "%%%"}, "psbt")
    refused({"psbt": ok["psbt"] + "\n"}, "psbt")
    raw = base64.b64decode(ok["psbt"])
    refused({"psbt": base64.b64encode(raw + b"\x00").decode()}, "psbt")  # trailing byte
    refused({"psbt": base64.b64encode(raw[:-3]).decode()}, "psbt")  # truncated
    refused({"psbt": base64.b64encode(b"psbu" + raw[4:]).decode()}, "psbt")
    # another key's output, or a missing witness UTXO
    q = good()
    q.inputs[1].witness_utxo = TransactionOutput(5_000, Script(b"\x00\x14" + bytes(20)))
    refused(b64(q), "psbt.inputs[1].witness_utxo")
    q = good()
    q.inputs[0].witness_utxo = None
    assert "required" in refused(b64(q), "psbt.inputs[0].witness_utxo").detail
    q = good()
    q.inputs[0].sighash_type = 1
    refused(b64(q), "psbt.inputs[0].sighash_type")
    q = good()
    q.inputs[1].taproot_merkle_root = bytes(32)
    refused(b64(q), "psbt.inputs[1].tap_merkle_root")
    # outputs worth more than the inputs, amounts out of range
    over = build_psbt(KEY, [(bytes(32), 0, 1000, 0)], [(b"\x6a\x00", 1001)])
    refused(b64(over), "psbt.outputs")
    big = build_psbt(KEY, [(bytes(32), 0, 21_000_000 * SAT + 1, 0)], [(b"\x6a\x00", 1)])
    refused(b64(big), "psbt.inputs[0].witness_utxo.amount")
    none_out = build_psbt(KEY, [(bytes(32), 0, 1000, 0)], [])
    refused(b64(none_out), "psbt.outputs")


def test_finalize_refuses_wrong_signatures() -> None:
    intent = btc.decode(b64(good()), internal_key=KEY, network="mainnet")
    with pytest.raises(KindError) as err:
        btc.finalize(intent, [bytes(64)])
    assert err.value.field == "signatures"
    with pytest.raises(KindError) as err:
        btc.finalize(intent, [bytes(64), bytes(63)])
    assert err.value.field == "signatures[0]"


def test_tap_internal_key_must_be_ours() -> None:
    p = build_psbt(KEY, [(bytes(32), 0, 1000, 5)], [(b"\x6a\x00", 900)])
    raw = base64.b64decode(b64(p)["psbt"])
    head = b"psbt\xff" + kv(b"\x00", p.unsigned.serialize()) + b"\x00"
    assert raw.startswith(head)
    other = bytes.fromhex("83dfe85a3151d2517290da461fe2815591ef69f2b18a2ce63f01697a8b313145")
    ours = head + kv(b"\x17", KEY) + raw[len(head) :]  # PSBT_IN_TAP_INTERNAL_KEY
    intent = btc.decode(
        {"psbt": base64.b64encode(ours).decode()}, internal_key=KEY, network="mainnet"
    )
    assert intent.fee == 100
    theirs = head + kv(b"\x17", other) + raw[len(head) :]
    refused({"psbt": base64.b64encode(theirs).decode()}, "psbt.inputs[0].tap_internal_key")


def kv(key: bytes, value: bytes) -> bytes:
    return compact.to_bytes(len(key)) + key + compact.to_bytes(len(value)) + value
