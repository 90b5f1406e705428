"""``btc-psbt`` in :mod:`custody.signing`: the messages a request signs are exactly the
decoder's sighashes (and their concatenation its message), every refusal is a
:class:`SignRequestError` naming the field, and the result is refused unless each input's
signature verifies under the BIP-86 output key (checked here by coincurve)."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import coincurve
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custody.domain import MAX_PSBT_INPUTS
from custody.kinds import decode
from custody.kinds.addresses import taproot_output_key
from custody.signing import (
    SignRequestError,
    decode_request,
    message_to_sign,
    messages_to_sign,
    sign_result,
)
from mpc import frost
from mpc.groups import SECP256K1
from tests.custody.kinds.btc_build import b64, build_psbt
from tests.custody.kinds.test_chain_acceptance import frost_sign
from tests.mpc.conftest import dealer_split_for_tests

# a FROST(BIP-340) 2-of-3 sharing from the test dealer: the key is never formed
SHARES = dealer_split_for_tests(SECP256K1, 2, 3)
INTERNAL = frost.ciphersuite("bip340").encode_public_key(SHARES[1].public.group_public_key)


def request(n: int, **extra: Any) -> dict[str, Any]:
    ins = [(secrets.token_bytes(32), i, 1_000 + i, i) for i in range(n)]
    outs = [(b"\x00\x14" + bytes(20), 500 * n)]
    return {
        "id": "sr-1",
        "key_id": "k-1",
        "kind": "btc-psbt",
        "payload": b64(build_psbt(INTERNAL, ins, outs)),
        "network": "testnet",
        **extra,
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=1, max_value=MAX_PSBT_INPUTS))
def test_messages_are_the_decoded_sighashes(n: int) -> None:
    req = request(n)
    intent = decode("btc-psbt", req["payload"], scheme="bip340", public_key=INTERNAL)
    msgs = messages_to_sign("bip340", req, public_key=INTERNAL)
    assert msgs == intent.messages and len(msgs) == n
    assert message_to_sign("bip340", req, public_key=INTERNAL) == b"".join(msgs)
    assert message_to_sign(
        "bip340", {**req, "message": b"".join(msgs).hex()}, public_key=INTERNAL
    ) == b"".join(msgs)


def test_refusals_name_the_field() -> None:
    req = request(2)
    cases = {
        "too many inputs": (request(MAX_PSBT_INPUTS + 1), INTERNAL, "payload.psbt.inputs"),
        "no network": ({k: v for k, v in req.items() if k != "network"}, INTERNAL, "network"),
        "bad network": ({**req, "network": "main"}, INTERNAL, "network"),
        "no public key": (req, None, "public_key"),
        "short public key": (req, INTERNAL[:31], "public_key"),
        "another key": (req, taproot_output_key(INTERNAL), "payload.psbt.inputs[0]"),
        "a message of another PSBT": (
            {**req, "message": message_to_sign("bip340", request(2), public_key=INTERNAL).hex()},
            INTERNAL,
            "message",
        ),
        "extra member": ({**req, "memo": "x"}, INTERNAL, "memo"),
    }
    for name, (r, pk, field) in cases.items():
        with pytest.raises(SignRequestError) as e:
            message_to_sign("bip340", r, public_key=pk)
        assert e.value.field.startswith(field), (name, e.value.field, str(e.value))
    with pytest.raises(SignRequestError) as e:
        decode_request("ed25519", req, public_key=INTERNAL)
    assert e.value.field == "scheme"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_psbts_raise_only_sign_request_errors(data: st.DataObject) -> None:
    raw = bytearray(base64.b64decode(request(2)["payload"]["psbt"]))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    req = request(2, payload={"psbt": base64.b64encode(bytes(raw[:cut])).decode()})
    try:
        msgs = messages_to_sign("bip340", req, public_key=INTERNAL)
    except SignRequestError as e:
        assert e.field and str(e)
        return
    assert all(len(m) == 32 for m in msgs)


def test_result_needs_each_inputs_signature_under_the_output_key() -> None:
    req = request(3)
    msgs = messages_to_sign("bip340", req, public_key=INTERNAL)
    out_key = taproot_output_key(INTERNAL)
    tweaked = {i: frost.taproot_tweak(k) for i, k in SHARES.items()}
    sigs = [frost_sign(tweaked, [1, 2], m) for m in msgs]
    assert all(
        coincurve.PublicKeyXOnly(out_key).verify(s, m) for s, m in zip(sigs, msgs, strict=True)
    )
    result = sign_result("bip340", req, b"".join(sigs), None, INTERNAL)
    assert result is not None and all(s.hex() in result["signed_tx"] for s in sigs)
    assert sign_result("bip340", req, b"".join(sigs), None) == result  # re-assembled
    untweaked = b"".join(frost_sign(SHARES, [2, 3], m) for m in msgs)
    for bad, field in (
        (b"".join(sigs[:2]), "signature"),
        (b"".join(sigs) + b"\x00", "signature"),
        (b"".join(sigs[::-1]), "signatures[0]"),
        (untweaked, "signatures[0]"),
    ):
        with pytest.raises(SignRequestError) as e:
            sign_result("bip340", req, bad, None, INTERNAL)
        assert e.value.field == field, (field, str(e.value))
