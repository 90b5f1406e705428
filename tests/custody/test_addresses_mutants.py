"""custody.kinds.addresses: the bounds of each address rule on both sides (issue 16).

Pure functions. Addresses are decoded back with embit's bech32 (BIP-173/350) and the
Ethereum one compared with the well-known address of the key whose secret is 1 (its public
key is the generator G, a published constant: no key is held here).
"""

from __future__ import annotations

import pytest
from embit import bech32

from custody.kinds import addresses
from custody.kinds._common import KindError
from custody.kinds.addresses import (
    bitcoin_p2tr_address,
    ethereum_address,
    segwit_address,
    taproot_output_key,
)
from mpc.groups import SECP256K1, Secp256k1Point

G = bytes.fromhex("0279BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798")


def test_ethereum_address_of_g_is_the_published_one() -> None:
    assert ethereum_address(G) == "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
    odd = bytes([3]) + G[1:]  # -G: same x, odd y
    assert ethereum_address(odd) != ethereum_address(G)


def test_ethereum_address_refusals_name_the_reason() -> None:
    cases: list[tuple[object, str]] = [
        (G[:32], "must be 33 bytes"),
        (G + b"\x00", "must be 33 bytes"),
        (bytearray(G), "must be 33 bytes"),
        (b"\x04" + G[1:], "must start with 02 or 03"),
        (b"\x02" + bytes(32), "not a point on secp256k1"),
    ]
    for key, why in cases:
        with pytest.raises(KindError, match=why) as exc:
            ethereum_address(key)  # type: ignore[arg-type]
        assert exc.value.field == "public_key"


def test_taproot_tweak_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """BIP-341 ``t >= n``: unreachable with SHA-256, so the hash is replaced to reach it on
    both sides of n (SEC 2's order written out, not the module's constant)."""
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    assert addresses.SECP256K1_N == n
    two_g = SECP256K1.base_mul(2)  # even Y: lift_x(x(2G)) is 2G
    assert isinstance(two_g, Secp256k1Point) and two_g.has_even_y()
    monkeypatch.setattr(addresses, "tagged_hash", lambda tag, m: (n - 1).to_bytes(32, "big"))
    assert taproot_output_key(two_g.x_only()) == G[1:]  # 2G + (n - 1)G = G
    monkeypatch.setattr(addresses, "tagged_hash", lambda tag, m: n.to_bytes(32, "big"))
    with pytest.raises(KindError, match="tweak out of range"):
        taproot_output_key(two_g.x_only())


def test_taproot_key_refusals() -> None:
    for bad in (G[1:][:31], G, bytearray(G[1:])):
        with pytest.raises(KindError, match="32-byte x-only key"):
            taproot_output_key(bad)  # type: ignore[arg-type]
    with pytest.raises(KindError, match="not the x coordinate"):
        taproot_output_key(bytes(32))
    with pytest.raises(KindError, match="must be one of") as exc:
        bitcoin_p2tr_address(G[1:], "litecoin")
    assert exc.value.field == "network"


@pytest.mark.parametrize(
    ("network", "hrp"),
    [("mainnet", "bc"), ("testnet", "tb"), ("signet", "tb"), ("regtest", "bcrt")],
)
def test_p2tr_address_is_witness_v1_of_the_output_key(network: str, hrp: str) -> None:
    address = bitcoin_p2tr_address(G[1:], network)
    assert bech32.decode(hrp, address) == (1, list(taproot_output_key(G[1:])))


@pytest.mark.parametrize("program", [2, 40])
@pytest.mark.parametrize("op", [0x51, 0x60])
def test_segwit_programs_of_2_and_40_bytes_for_versions_1_and_16(op: int, program: int) -> None:
    script = bytes([op, program]) + bytes(range(program))
    address = segwit_address(script, "mainnet")
    assert address is not None
    assert bech32.decode("bc", address) == (op - 0x50, list(range(program)))


@pytest.mark.parametrize("program", [20, 32])
def test_segwit_v0_programs_of_20_and_32_bytes(program: int) -> None:
    address = segwit_address(bytes([0, program]) + bytes(program), "regtest")
    assert address is not None and bech32.decode("bcrt", address) == (0, [0] * program)


def test_scripts_that_are_not_segwit_have_no_address() -> None:
    for script in (
        b"",
        b"\x51",  # too short to hold a length byte
        b"\x00",
        b"\x50\x14" + bytes(20),  # OP_RESERVED before a 20-byte push: not witness v0
        b"\x51\x01\x00",  # 3 bytes: a 1-byte program
        b"\x51\x29" + bytes(41),  # 43 bytes: a 41-byte program
        b"\x51\x03" + bytes(2),  # the length byte disagrees
        b"\x50\x02" + bytes(2),  # OP_RESERVED, not a version
        b"\x61\x02" + bytes(2),  # OP_NOP, not a version
        b"\x00\x15" + bytes(21),  # v0 of 21 bytes
        b"\x00\x02" + bytes(2),
    ):
        assert segwit_address(script, "mainnet") is None, script.hex()
    with pytest.raises(KindError, match="must be one of"):
        segwit_address(b"\x00\x14" + bytes(20), "bogus")
