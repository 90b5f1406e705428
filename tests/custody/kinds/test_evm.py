"""evm-tx: built by py-evm, hashed by eth-account, decoded by ours; every refusal typed."""

from __future__ import annotations

import eth_abi
import pytest
import rlp
from eth.vm.forks.london.transactions import UnsignedDynamicFeeTransaction
from eth_account.typed_transactions import TypedTransaction
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from custody.kinds import KindError, decode, evm

U64 = 2**64 - 1
U256 = 2**256 - 1
addresses = st.binary(min_size=20, max_size=20)
access_lists = st.lists(
    st.tuples(addresses, st.lists(st.binary(min_size=32, max_size=32), max_size=3)), max_size=3
)


@st.composite
def txs(draw: st.DrawFn, data: st.SearchStrategy[bytes] | None = None) -> dict:
    max_fee = draw(st.integers(0, U256))
    return {
        "chain_id": draw(st.integers(1, U64)),
        "nonce": draw(st.integers(0, U64 - 1)),
        "max_priority_fee_per_gas": draw(st.integers(0, max_fee)),
        "max_fee_per_gas": max_fee,
        "gas": draw(st.integers(0, U64)),
        "to": draw(addresses),
        "value": draw(st.integers(0, U256)),
        "data": draw(data if data is not None else st.binary(max_size=200)),
        "access_list": draw(access_lists),
    }


def unsigned(fields: dict) -> bytes:
    """0x02 || rlp(fields), built by py-evm (not by our code)."""
    tx = UnsignedDynamicFeeTransaction(
        **{
            **fields,
            "access_list": [
                (a, [int.from_bytes(x, "big") for x in k]) for a, k in fields["access_list"]
            ],
        }
    )
    out: bytes = tx.get_message_for_signing()
    return out


def eth_account_hash(fields: dict) -> bytes:
    """The signing hash by eth-account's typed-transaction code (an independent computation)."""
    d = {
        "type": 2,
        "chainId": fields["chain_id"],
        "nonce": fields["nonce"],
        "maxPriorityFeePerGas": fields["max_priority_fee_per_gas"],
        "maxFeePerGas": fields["max_fee_per_gas"],
        "gas": fields["gas"],
        "to": to_checksum_address(fields["to"]),
        "value": fields["value"],
        "data": fields["data"],
        "accessList": [
            {"address": to_checksum_address(a), "storageKeys": ["0x" + k.hex() for k in keys]}
            for a, keys in fields["access_list"]
        ],
    }
    h: bytes = TypedTransaction.from_dict(d).hash()
    return h


def payload(raw: bytes) -> dict:
    return {"tx": "0x" + raw.hex()}


@settings(max_examples=150, deadline=None)
@given(txs())
def test_round_trip_every_field_and_digest(fields: dict) -> None:
    raw = unsigned(fields)
    intent = evm.decode(payload(raw))
    assert intent.chain_id == fields["chain_id"]
    assert intent.nonce == fields["nonce"]
    assert intent.max_priority_fee_per_gas == fields["max_priority_fee_per_gas"]
    assert intent.max_fee_per_gas == fields["max_fee_per_gas"]
    assert intent.gas_limit == fields["gas"]
    assert intent.to == to_checksum_address(fields["to"])
    assert intent.value == fields["value"]
    assert intent.data == fields["data"]
    assert intent.access_list == tuple(
        (to_checksum_address(a), tuple(k)) for a, k in fields["access_list"]
    )
    assert intent.unsigned == raw
    assert intent.digest == intent.messages[0] == eth_account_hash(fields)
    assert decode("evm-tx", payload(raw), scheme="ecdsa-secp256k1") == intent


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["transfer", "approve"]), addresses, st.integers(0, U256), txs(st.just(b"")))
def test_erc20_calls_decoded(method: str, recipient: bytes, amount: int, fields: dict) -> None:
    selector = {"transfer": "a9059cbb", "approve": "095ea7b3"}[method]
    call = bytes.fromhex(selector) + eth_abi.encode(["address", "uint256"], [recipient, amount])
    intent = evm.decode(payload(unsigned({**fields, "data": call})))
    assert intent.erc20 == evm.Erc20Call(
        method, to_checksum_address(fields["to"]), to_checksum_address(recipient), amount
    )
    assert intent.summary()["erc20"]["amount"] == str(amount)


def test_other_calldata_is_not_erc20() -> None:
    fields = {**_simple(), "data": bytes.fromhex("deadbeef") + bytes(64)}
    assert evm.decode(payload(unsigned(fields))).erc20 is None


def _simple() -> dict:
    return {
        "chain_id": 1,
        "nonce": 7,
        "max_priority_fee_per_gas": 2,
        "max_fee_per_gas": 30,
        "gas": 60000,
        "to": bytes(range(20)),
        "value": 10**18,
        "data": b"",
        "access_list": [],
    }


def _items() -> list:
    return rlp.decode(unsigned(_simple())[1:])


def _raw(items: list) -> dict:
    return payload(b"\x02" + rlp.encode(items))


def refused(p: object, field: str) -> KindError:
    with pytest.raises(KindError) as err:
        evm.decode(p)  # type: ignore[arg-type]
    assert err.value.kind == "evm-tx"
    assert err.value.field == field, err.value
    return err.value


def test_refusals_name_the_field() -> None:
    good = unsigned(_simple())
    refused({}, "tx")
    refused({"tx": "0x" + good.hex(), "extra": 1}, "extra")
    refused([], "payload")
    refused({"tx": good.hex()}, "tx")  # no 0x
    refused({"tx": "0x"}, "tx")
    refused({"tx": 5}, "tx")
    refused({"tx": "0x" + "00" * (evm.MAX_TX + 1)}, "tx")
    # other transaction types
    legacy = rlp.encode([0, 1, 21000, bytes(20), 0, b""])
    assert "legacy" in refused(payload(legacy), "tx.type").detail
    refused(payload(b"\x01" + good[1:]), "tx.type")
    refused(payload(b"\x03" + good[1:]), "tx.type")
    # trailing bytes, non-canonical RLP
    refused(payload(good + b"\x00"), "tx")
    body = good[1:]
    assert body[0] < 0xF8  # short list: re-encode its header in the long form
    long_form = bytes([0xF8, len(body) - 1]) + body[1:]
    refused(payload(b"\x02" + long_form), "tx")
    items = _items()
    refused(_raw(items[:8]), "tx")
    refused(_raw([*items, b""]), "tx")  # a signed tx's fields are not an unsigned one
    # integers: leading zeros, too long, lists
    for idx, name in enumerate(["chain_id", "nonce", "max_priority_fee_per_gas"]):
        bad = list(items)
        bad[idx] = b"\x00\x01"
        refused(_raw(bad), f"tx.{name}")
        bad[idx] = []
        refused(_raw(bad), f"tx.{name}")
    bad = list(items)
    bad[0] = (2**64).to_bytes(9, "big")
    refused(_raw(bad), "tx.chain_id")
    bad[0] = b""
    refused(_raw(bad), "tx.chain_id")
    bad = list(items)
    bad[1] = (2**64 - 1).to_bytes(8, "big")  # EIP-2681
    refused(_raw(bad), "tx.nonce")
    bad = list(items)
    bad[6] = (2**256).to_bytes(33, "big")
    refused(_raw(bad), "tx.value")
    bad = list(items)
    bad[2] = (31).to_bytes(1, "big")
    refused(_raw(bad), "tx.max_priority_fee_per_gas")  # over max fee
    # to: contract creation, wrong lengths
    for to in (b"", bytes(19), bytes(21), [bytes(20)]):
        bad = list(items)
        bad[5] = to
        refused(_raw(bad), "tx.to")
    bad = list(items)
    bad[7] = [b""]
    refused(_raw(bad), "tx.data")
    # access list shape
    for al, field in [
        (b"", "tx.access_list"),
        ([[bytes(20)]], "tx.access_list[0]"),
        ([[bytes(19), []]], "tx.access_list[0].address"),
        ([[bytes(20), b""]], "tx.access_list[0].storage_keys"),
        ([[bytes(20), [bytes(31)]]], "tx.access_list[0].storage_keys[0]"),
    ]:
        bad = list(items)
        bad[8] = al
        refused(_raw(bad), field)


def test_malformed_erc20_calldata_refused() -> None:
    base = _simple()
    good = bytes.fromhex("a9059cbb") + eth_abi.encode(["address", "uint256"], [bytes(20), 5])
    for data in (good[:-1], good + b"\x00", good[:4] + b"\x01" + good[5:]):  # dirty padding
        refused(payload(unsigned({**base, "data": data})), "tx.data")


def test_scheme_is_checked_by_dispatch() -> None:
    good = payload(unsigned(_simple()))
    for scheme in ("ed25519", "bip340"):
        with pytest.raises(KindError) as err:
            decode("evm-tx", good, scheme=scheme)
        assert err.value.field == "scheme"
    with pytest.raises(KindError) as err:
        decode("raw", good, scheme="ecdsa-secp256k1")
    assert err.value.field == "kind"


def test_assemble_refuses_bad_signatures() -> None:
    intent = evm.decode(payload(unsigned(_simple())))
    n = evm.SECP256K1_N
    for r, s, v, field in [
        (0, 1, 0, "signature.r"),
        (n, 1, 0, "signature.r"),
        (1, 0, 0, "signature.s"),
        (1, n // 2 + 1, 0, "signature.s"),
        (1, 1, 2, "signature.y_parity"),
    ]:
        with pytest.raises(KindError) as err:
            evm.assemble(intent, r, s, v)
        assert err.value.field == field
    # a signature that does not recover to the key is refused when the key is given
    with pytest.raises(KindError) as err:
        evm.assemble(intent, 1, 1, 0, public_key=b"\x02" + bytes(32))
    assert err.value.field == "signature"
