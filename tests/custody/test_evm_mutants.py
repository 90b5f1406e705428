"""custody.kinds.evm: each bound on both sides, each refusal by its field (issue 16).

Transactions are built by py-evm (``tests.custody.kinds.test_evm.unsigned``), not by our
code; pure and fast, first in ``mutation.toml``'s selection for ``custody/kinds/evm.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import rlp

from custody.kinds import KindError, evm
from tests.custody.kinds.test_evm import U64, U256, payload, unsigned

TO = bytes(range(1, 21))


def tx(**kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "chain_id": 1,
        "nonce": 0,
        "max_priority_fee_per_gas": 1,
        "max_fee_per_gas": 2,
        "gas": 21000,
        "to": TO,
        "value": 5,
        "data": b"",
        "access_list": [],
    }
    fields.update(kw)
    return fields


def ok(**kw: Any) -> evm.EvmTx:
    return evm.decode(payload(unsigned(tx(**kw))))


def refused(raw: bytes) -> KindError:
    with pytest.raises(KindError) as exc:
        evm.decode(payload(raw))
    return exc.value


def raw_fields(items: list[Any]) -> bytes:
    return b"\x02" + bytes(rlp.encode(items))


def test_integer_bounds_sit_at_their_eips() -> None:
    assert ok(chain_id=U64).chain_id == U64 and ok(chain_id=1).chain_id == 1
    assert ok(nonce=U64 - 1).nonce == U64 - 1  # EIP-2681: nonce < 2^64 - 1
    assert ok(gas=U64).gas_limit == U64
    top = ok(max_fee_per_gas=U256, max_priority_fee_per_gas=U256, value=U256)
    assert top.max_fee_per_gas == top.value == U256
    base = rlp.decode(unsigned(tx())[1:])
    for index, name, value, bits in (
        (0, "chain_id", U64 + 1, 64),
        (1, "nonce", U64, 64),
        (4, "gas_limit", U64 + 1, 64),
        (6, "value", U256 + 1, 256),
    ):
        items = list(base)
        items[index] = value.to_bytes((value.bit_length() + 7) // 8, "big")
        e = refused(raw_fields(items))
        assert e.field == f"tx.{name}" and e.detail == f"integer over {bits} bits", name
    items = list(base)
    items[0] = b""
    assert refused(raw_fields(items)).field == "tx.chain_id"  # chain id 0


def test_the_tip_may_equal_but_not_exceed_the_fee_cap() -> None:
    assert ok(max_priority_fee_per_gas=7, max_fee_per_gas=7).max_priority_fee_per_gas == 7
    items = rlp.decode(unsigned(tx(max_priority_fee_per_gas=7, max_fee_per_gas=7))[1:])
    items[2] = b"\x08"
    e = refused(raw_fields(items))
    assert (e.field, e.detail) == ("tx.max_priority_fee_per_gas", "exceeds max_fee_per_gas")


def test_integers_with_a_leading_zero_or_as_lists_are_refused() -> None:
    base = rlp.decode(unsigned(tx())[1:])
    items = list(base)
    items[1] = b"\x00\x01"
    assert refused(raw_fields(items)).detail.startswith("integer with a leading zero byte")
    items = list(base)
    items[6] = [b"\x01"]
    assert refused(raw_fields(items)).field == "tx.value"
    items = list(base)
    items[7] = [b""]
    assert refused(raw_fields(items)).field == "tx.data"


def test_transaction_types_are_named() -> None:
    assert refused(b"\xc0").detail.startswith("legacy (RLP list)")
    assert refused(b"\xbf" + rlp.encode([])).detail.startswith("type 191")
    assert refused(b"\x01" + rlp.encode([])).detail.startswith("type 1")
    assert refused(b"").field == "tx"


def test_transaction_size_bound_is_128_kib() -> None:
    assert evm.MAX_TX == 128 * 1024
    overhead = len(unsigned(tx(data=b"")))
    size = evm.MAX_TX - overhead - 4  # the data's RLP length prefix grows by 3 bytes
    full = unsigned(tx(data=b"\x01" * size))
    full = unsigned(tx(data=b"\x01" * (size + evm.MAX_TX - len(full))))
    assert len(full) == evm.MAX_TX
    assert len(evm.decode(payload(full)).data) > 0
    longer = unsigned(tx(data=b"\x01" * (len(full) - overhead)))
    assert len(longer) > evm.MAX_TX
    assert refused(longer).detail == f"longer than {evm.MAX_TX} bytes"


def test_access_list_entries_are_named_by_index() -> None:
    key = bytes(32)
    two = ok(access_list=[(TO, [key, key]), (TO, [])])
    assert two.access_list == ((two.to, (key, key)), (two.to, ()))
    base = rlp.decode(unsigned(tx())[1:])
    cases: list[tuple[Any, str]] = [
        (b"", "tx.access_list"),
        ([[TO, [key]], [TO]], "tx.access_list[1]"),
        ([[TO, [key]], [TO, [key], b""]], "tx.access_list[1]"),
        ([[TO, []], [TO[:19], []]], "tx.access_list[1].address"),
        ([[TO, []], [TO, b""]], "tx.access_list[1].storage_keys"),
        ([[TO, [key, key[:31]]]], "tx.access_list[0].storage_keys[1]"),
        ([[TO, [key, [key]]]], "tx.access_list[0].storage_keys[1]"),
    ]
    for access, name in cases:
        items = list(base)
        items[8] = access
        assert refused(raw_fields(items)).field == name, name


def test_to_must_be_20_bytes() -> None:
    base = rlp.decode(unsigned(tx())[1:])
    for bad in (b"", TO[:19], TO + b"\x00", [TO]):
        items = list(base)
        items[5] = bad
        assert refused(raw_fields(items)).field == "tx.to"


def test_erc20_transfer_calldata_is_exactly_68_bytes() -> None:
    sel = bytes.fromhex("a9059cbb")
    args = bytes(12) + TO + (5).to_bytes(32, "big")
    call = ok(data=sel + args).erc20
    assert call is not None and (call.method, call.amount) == ("transfer", 5)
    for data in (sel + args[:-1], sel + args + b"\x00"):
        assert (
            refused(unsigned(tx(data=data))).detail == "ERC-20 transfer calldata must be 68 bytes"
        )
    assert ok(data=bytes.fromhex("a9059cbc") + args).erc20 is None


def test_summary_reports_the_maximum_fee() -> None:
    s = ok(max_fee_per_gas=3, max_priority_fee_per_gas=2, gas=21000).summary()
    assert s["max_fee"] == str(3 * 21000) and s["gas_limit"] == 21000
    assert s["max_fee_per_gas"] == "3" and s["max_priority_fee_per_gas"] == "2"


def test_signature_scalars_and_parity_bounds() -> None:
    intent = ok()
    n = evm.SECP256K1_N
    assert n == 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    assert evm.assemble(intent, n - 1, n // 2, 1).startswith("0x02")
    assert evm.assemble(intent, 1, 1, 0).startswith("0x02")
    for r, s, y, name in (
        (0, 1, 0, "signature.r"),
        (n, 1, 0, "signature.r"),
        (True, 1, 0, "signature.r"),
        (1, 0, 0, "signature.s"),
        (1, n // 2 + 1, 0, "signature.s"),
        (1, 1, 2, "signature.y_parity"),
        (1, 1, -1, "signature.y_parity"),
        (1, 1, True, "signature.y_parity"),
    ):
        with pytest.raises(KindError) as exc:
            evm.assemble(intent, r, s, y)
        assert exc.value.field == name, (r, s, y)
    signed = rlp.decode(bytes.fromhex(evm.assemble(intent, 3, 4, 1)[4:]))
    assert signed[-3:] == [b"\x01", b"\x03", b"\x04"]


def test_decoded_transactions_and_calls_cannot_be_altered() -> None:
    """What approvers and policies saw is what is signed: the intent is frozen."""
    sel = bytes.fromhex("a9059cbb")
    intent = ok(data=sel + bytes(12) + TO + (5).to_bytes(32, "big"))
    assert intent.erc20 is not None
    for obj, name, value in (
        (intent, "value", 10**18),
        (intent, "digest", bytes(32)),
        (intent.erc20, "amount", 10**18),
        (intent.erc20, "recipient", intent.to),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, value)


def test_assemble_checks_what_the_signature_recovers_to() -> None:
    """Any (r, s, v) with r on the curve recovers to *some* key (libsecp256k1, via coincurve):
    no private key is needed to test that assemble accepts only the expected one."""
    import coincurve

    intent = ok()
    r = int.from_bytes(G_X, "big")  # x of the generator: on the curve
    sig = r.to_bytes(32, "big") + (1).to_bytes(32, "big") + bytes([0])
    expected = coincurve.PublicKey.from_signature_and_message(sig, intent.digest, hasher=None)
    key = expected.format(compressed=True)
    signed = evm.assemble(intent, r, 1, 0, public_key=key)
    assert rlp.decode(bytes.fromhex(signed[4:]))[-3:] == [b"", r.to_bytes(32, "big"), b"\x01"]
    with pytest.raises(KindError, match="recovers to another key"):
        evm.assemble(intent, r, 1, 1, public_key=key)  # the other parity: the other key
    with pytest.raises(KindError, match="recovers to another key"):
        evm.assemble(intent, r, 1, 0, public_key=expected.format(compressed=False))
    with pytest.raises(KindError, match="does not recover to a public key"):
        evm.assemble(intent, 5, 1, 0, public_key=key)  # x = 5 is not on secp256k1
    out = evm.result(intent, r, 1, 0, public_key=key)
    assert out == {
        "signature": {"r": "0x" + G_X.hex(), "s": "0x" + "00" * 31 + "01", "y_parity": 0},
        "signed_tx": signed,
    }


G_X = bytes.fromhex("79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798")
