"""Addresses: BIP-86 and BIP-350 published vectors, and btclib / eth-keys as second opinions."""

from __future__ import annotations

import re
from pathlib import Path

import coincurve
import pytest
from btclib import b32
from btclib.key import PubKeyData
from btclib.script import taproot
from eth_keys import keys as eth_keys
from hypothesis import given, settings
from hypothesis import strategies as st

from custody.kinds import KindError
from custody.kinds.addresses import (
    NETWORKS,
    bitcoin_p2tr_address,
    ethereum_address,
    p2tr_script,
    segwit_address,
    taproot_output_key,
)
from tests.custody.kinds.btc_build import xonly_keys

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def bip86_vectors() -> list[dict[str, str]]:
    out, cur = [], {}
    for line in (VECTORS / "bip86" / "test-vectors-public.txt").read_text().splitlines():
        if line.startswith("//"):
            cur = {}
            continue
        name, value = (p.strip() for p in line.split("=", 1))
        cur[name] = value
        if name == "address":
            out.append(cur)
    assert len(out) == 3
    return out


@pytest.mark.parametrize("v", bip86_vectors(), ids=lambda v: v["address"][:12])
def test_bip86_vectors(v: dict[str, str]) -> None:
    internal = bytes.fromhex(v["internal_key"])
    assert taproot_output_key(internal).hex() == v["output_key"]
    assert p2tr_script(taproot_output_key(internal)).hex() == v["scriptPubKey"]
    assert bitcoin_p2tr_address(internal, "mainnet") == v["address"]


def bip350_valid() -> list[tuple[str, bytes]]:
    text = (VECTORS / "bip350" / "bip-0350.mediawiki").read_text()
    section = text.split("===Test vectors for v0-v16 native segregated witness addresses===")[1]
    valid = section.split("invalid")[0]
    pairs = re.findall(r"<tt>([^<]+)</tt>: <tt>([0-9a-f]+)</tt>", valid)
    assert len(pairs) == 8
    return [(a, bytes.fromhex(s)) for a, s in pairs]


@pytest.mark.parametrize("address,script", bip350_valid(), ids=lambda x: str(x)[:14])
def test_bip350_valid_segwit_addresses(address: str, script: bytes) -> None:
    hrp = address.lower().split("1")[0]
    if hrp not in ("bc", "tb"):
        pytest.skip("not a Bitcoin network")
    network = "mainnet" if hrp == "bc" else "testnet"
    assert segwit_address(script, network) == address.lower()


def test_segwit_address_of_other_scripts_is_none() -> None:
    assert segwit_address(b"\x6a\x04abcd", "mainnet") is None  # OP_RETURN
    assert segwit_address(b"\x00\x15" + bytes(21), "mainnet") is None  # v0 of 21 bytes
    assert segwit_address(b"\x51\x01\x00", "mainnet") is None  # 1-byte program


# points drawn as random x coordinates on the curve: public keys with no known secret
compressed_keys = st.tuples(st.sampled_from([b"\x02", b"\x03"]), xonly_keys).map(
    lambda t: t[0] + t[1]
)


@settings(max_examples=40, deadline=None)
@given(xonly_keys, st.sampled_from(NETWORKS))
def test_p2tr_address_matches_btclib(xonly: bytes, network: str) -> None:
    # btclib's taproot code and bech32m encoder: a second, independent computation
    output_key, _ = taproot.output_pubkey(PubKeyData(b"\x02" + xonly))
    assert taproot_output_key(xonly) == output_key
    net = "testnet" if network == "signet" else network
    assert bitcoin_p2tr_address(xonly, network) == b32.p2tr(output_key, net)
    prefix = {"mainnet": "bc1p", "testnet": "tb1p", "signet": "tb1p", "regtest": "bcrt1p"}
    assert bitcoin_p2tr_address(xonly, network).startswith(prefix[network])


@settings(max_examples=40, deadline=None)
@given(compressed_keys)
def test_ethereum_address_matches_eth_keys(key: bytes) -> None:
    # eth-keys computes the address on its own
    pub = coincurve.PublicKey(key)
    expected = eth_keys.PublicKey(pub.format(compressed=False)[1:]).to_checksum_address()
    assert ethereum_address(pub.format(compressed=True)) == expected


def test_address_refusals() -> None:
    for bad in (b"", bytes(32), b"\x04" + bytes(32), b"\x02" + bytes(32), "02" * 33):
        with pytest.raises(KindError) as err:
            ethereum_address(bad)  # type: ignore[arg-type]
        assert err.value.field == "public_key"
    for bad_key in (bytes(31), bytes(32), b"\xff" * 32):
        with pytest.raises(KindError) as err:
            bitcoin_p2tr_address(bad_key, "mainnet")
        assert err.value.field == "public_key"
    with pytest.raises(KindError) as err:
        bitcoin_p2tr_address(
            bytes.fromhex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
            "testnet4",
        )
    assert err.value.field == "network"
