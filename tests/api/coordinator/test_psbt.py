"""The coordinator's public side of ``btc-psbt`` (no nodes): the request's message bound to
the key's network and public key, the tweaked public package it aggregates under, and the
re-verification of a stored signature (every input under the output key, checked by
libsecp256k1 too)."""

from __future__ import annotations

import secrets

import pytest
from coincurve import PublicKeyXOnly

from api import crypto, integrity
from api.coordinator.psbt import request_message
from api.coordinator.types import KeyInfo
from custody.kinds.addresses import p2tr_script, taproot_output_key
from custody.signing import SignRequestError, messages_to_sign, sign_result
from mpc import frost
from mpc.groups import SECP256K1
from tests.custody.kinds.btc_build import b64, build_psbt
from tests.custody.kinds.test_chain_acceptance import core_verifies, frost_sign
from tests.mpc.conftest import dealer_split_for_tests

SUITE = frost.ciphersuite("bip340")


@pytest.fixture(scope="module")
def shares() -> dict:
    return dealer_split_for_tests(SECP256K1, 2, 3)


def key_info(shares: dict, network: str | None = "regtest") -> KeyInfo:
    pub = shares[1].public
    return KeyInfo(
        "tr-1",
        "bip340",
        2,
        ["node-1", "node-2", "node-3"],
        SUITE.encode_public_key(pub.group_public_key).hex(),
        {str(i): p.encode().hex() for i, p in pub.verifying_shares.items()},
        network,
    )


def body(internal: bytes, amounts: list[int]) -> dict:
    ins = [(secrets.token_bytes(32), 0, a, 0) for a in amounts]
    outs = [(b"\x00\x14" + bytes(20), sum(amounts) - 300)]
    return {
        "id": "sr-1",
        "key_id": "tr-1",
        "kind": "btc-psbt",
        "payload": b64(build_psbt(internal, ins, outs)),
    }


def test_the_message_is_bound_to_the_keys_network_and_public_key(shares: dict) -> None:
    key = key_info(shares)
    internal = bytes.fromhex(key.public_key)
    b = body(internal, [1_000, 2_000, 3_000])
    msg = request_message(key, b)
    assert b["network"] == "regtest"  # set from the key
    assert msg == b"".join(messages_to_sign("bip340", b, public_key=internal))
    assert len(msg) == 3 * 32
    with pytest.raises(SignRequestError) as e:
        request_message(key, {**b, "network": "mainnet"})
    assert e.value.field == "network"
    # a key created before networks existed is a mainnet key
    assert request_message(key_info(shares, None), {**b, "network": "mainnet"}) == msg


def test_tweaked_public_package_is_the_bip86_output_key(shares: dict) -> None:
    key = key_info(shares)
    out, vs = crypto.taproot_public(key.scheme, key.public_key, key.verifying_shares, 2)
    assert bytes.fromhex(out) == taproot_output_key(bytes.fromhex(key.public_key))
    tweaked = {i: frost.taproot_tweak(k) for i, k in shares.items()}
    assert vs == {str(i): k.public.verifying_shares[i].encode().hex() for i, k in tweaked.items()}
    with pytest.raises(ValueError):
        crypto.taproot_public("ed25519", key.public_key, key.verifying_shares, 2)


def test_a_stored_psbt_signature_is_verified_input_by_input(shares: dict) -> None:
    key = key_info(shares)
    internal = bytes.fromhex(key.public_key)
    amounts = [40_000, 50_000]
    b = body(internal, amounts)
    msg = request_message(key, b)
    tweaked = {i: frost.taproot_tweak(k) for i, k in shares.items()}
    sighashes = (msg[:32], msg[32:])
    sigs = [frost_sign(tweaked, [1, 3], m) for m in sighashes]
    output_key = taproot_output_key(internal)
    for s, m in zip(sigs, sighashes, strict=True):
        assert PublicKeyXOnly(output_key).verify(s, m)
    row = {"body": b, "signature": b"".join(sigs).hex(), "recovery_id": None}
    assert integrity.stored_signature_ok("bip340", key.public_key, row)
    result = sign_result("bip340", b, b"".join(sigs), None, internal)
    assert result is not None
    assert core_verifies(result["signed_tx"], p2tr_script(output_key), amounts)
    # the serializer's re-assembly (no key) gives the same transaction
    assert sign_result("bip340", b, b"".join(sigs), None) == result
    for bad in (
        b"".join(sigs[::-1]),  # swapped between inputs
        sigs[0],  # one input missing
        b"".join(sigs) + sigs[0],  # one too many
        sigs[0] + sigs[1][:-1] + bytes([sigs[1][-1] ^ 1]),  # a flipped bit
        b"".join(frost_sign(shares, [1, 3], m) for m in sighashes),  # untweaked
    ):
        assert not integrity.stored_signature_ok(
            "bip340", key.public_key, {**row, "signature": bad.hex()}
        )
    with pytest.raises(SignRequestError):
        sign_result("bip340", b, b"".join(sigs[::-1]), None, internal)
