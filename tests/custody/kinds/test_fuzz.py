"""Every decoder, fed random and mutated input, returns an Intent or raises KindError only."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custody.kinds import KINDS, Intent, KindError, decode
from custody.kinds.btc import BtcPsbt
from tests.custody.kinds.btc_build import b64, build_psbt
from tests.custody.kinds.test_evm import _simple, unsigned
from tests.custody.kinds.test_iso20022 import pacs008

KEY = bytes.fromhex("cc8a4bc64d897bddc5fbc2f670f7a8ba0b386779106cf1223c6fc5d7cd6fc115")
SCHEMES = st.sampled_from(["ed25519", "bip340", "ecdsa-secp256k1"])
SCHEME = {"evm-tx": "ecdsa-secp256k1", "btc-psbt": "bip340", "iso20022": "ed25519"}


def run(kind: str, payload: Any, scheme: str | None = None) -> None:
    try:
        out = decode(kind, payload, scheme=scheme or SCHEME.get(kind, "ed25519"), public_key=KEY)
    except KindError as err:
        assert err.kind == kind and err.field and err.detail
        return
    assert isinstance(out, Intent) and all(isinstance(m, bytes) for m in out.messages)
    out.summary()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(KINDS), json_values, st.sampled_from(["ed25519", "bip340", "ecdsa-secp256k1"])
)
def test_random_payloads(kind: str, payload: Any, scheme: str) -> None:
    run(kind, payload, scheme)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.sampled_from(["tx", "psbt", "xml", "message"]), json_values)
def test_random_field_values(kind: str, name: str, value: Any) -> None:
    run(kind, {name: value})


def mutations() -> st.SearchStrategy[Any]:
    def apply(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
        b = bytearray(data)
        for op, pos, val in ops:
            if not b:
                break
            pos %= len(b)
            if op == 0:
                b[pos] ^= 1 << (val % 8)
            elif op == 1:
                del b[pos:]
            elif op == 2:
                b.insert(pos, val % 256)
            elif op == 3:
                del b[pos]
            else:
                b[pos] = val % 256
        return bytes(b)

    ops = st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 2**16), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    )
    return st.builds(lambda o: o, ops).map(lambda o: (apply, o))


EVM = unsigned(
    {
        **_simple(),
        "access_list": [(bytes(20), [bytes(32)])],
        "data": b"\xa9\x05\x9c\xbb" + bytes(64),
    }
)
PSBT = base64.b64decode(
    b64(
        build_psbt(
            KEY, [(bytes(32), 0, 10_000, 7), (b"\x01" * 32, 1, 5_000, 0)], [(b"\x6a\x00", 14_000)]
        )
    )["psbt"]
)
XML = pacs008().encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations(), st.sampled_from(["evm-tx", "btc-psbt", "iso20022", "message"]))
def test_mutated_valid_encodings(mutation: Any, kind: str) -> None:
    apply, ops = mutation
    if kind == "evm-tx":
        run(kind, {"tx": "0x" + apply(EVM, ops).hex()})
    elif kind == "btc-psbt":
        run(kind, {"psbt": base64.b64encode(apply(PSBT, ops)).decode()})
    elif kind == "iso20022":
        run(kind, {"xml": apply(XML, ops).decode("utf-8", errors="replace")})
    else:
        run(kind, {"message": "0x" + apply(b"hello world", ops).hex()}, "ecdsa-secp256k1")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    run("evm-tx", {"tx": "0x02" + data.hex()})
    run("btc-psbt", {"psbt": base64.b64encode(b"psbt\xff" + data).decode()})
    run("iso20022", {"xml": data.decode("latin-1")})


def test_valid_seeds_decode() -> None:
    assert isinstance(
        decode(
            "btc-psbt", {"psbt": base64.b64encode(PSBT).decode()}, scheme="bip340", public_key=KEY
        ),
        BtcPsbt,
    )
    decode("evm-tx", {"tx": "0x" + EVM.hex()}, scheme="ecdsa-secp256k1")
    decode("iso20022", {"xml": XML.decode()}, scheme="ed25519")


@pytest.mark.parametrize("kind", ["payment", "", None, 3])
def test_unknown_kinds(kind: Any) -> None:
    with pytest.raises(KindError) as err:
        decode(kind, {}, scheme="ed25519")
    assert err.value.field == "kind"
