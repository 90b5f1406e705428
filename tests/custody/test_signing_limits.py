"""The limits of ``custody.signing``, the message every node recomputes (issue 16 survivors).

Each limit is a defence: a payload the coordinator and a node could read differently, or
that costs a node unbounded work, is refused with the field named. Each test sits on the
limit: the last accepted value passes and the first refused one fails, so moving the
limit by one, or dropping it, is noticed. The digest of ``payment``/``settlement`` is
rebuilt here by hand (hashlib and cbor2 directly) from the module docstring.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import cbor2
import pytest

from custody.domain import MAX_ID_LEN, MAX_MESSAGE, SCHEMES
from custody.signing import (
    DOMAIN,
    SignRequestError,
    canonical_digest,
    decode_request,
    message_to_sign,
    messages_to_sign,
    sign_result,
)
from mpc import frost
from mpc.groups import SECP256K1
from tests.custody.kinds.btc_build import b64, build_psbt
from tests.custody.test_signing_kinds import TX
from tests.mpc.conftest import dealer_split_for_tests


def req(kind: str = "payment", **extra: Any) -> dict[str, Any]:
    return {"id": "sr-1", "key_id": "k-1", "kind": kind, **extra}


def digest_by_hand(request: dict[str, Any]) -> bytes:
    body = {k: request[k] for k in ("id", "key_id", "kind", "payload")}
    kind = request["kind"].encode()
    data = b"tpwc-sign-v1\x00" + kind + b"\x00" + cbor2.dumps(body, canonical=True)
    return hashlib.sha256(data).digest()


def refused(field: str, match: str, scheme: str, request: Any) -> SignRequestError:
    with pytest.raises(SignRequestError, match=match) as exc:
        message_to_sign(scheme, request)
    assert exc.value.field == field
    return exc.value


# -- the digest, as documented ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["payment", "settlement"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_payment_digest_is_the_documented_sha256_of_canonical_cbor(kind: str, scheme: str) -> None:
    r = req(kind, payload={"amount": "10.00", "to": "DE89", "n": 7, "tags": ["a", None, True]})
    assert DOMAIN == b"tpwc-sign-v1\x00"
    expected = digest_by_hand(r)
    assert message_to_sign(scheme, r) == expected == canonical_digest(r)
    assert messages_to_sign(scheme, r) == (expected,)
    # the request id and key id are bound in: the same payload for another request differs
    assert message_to_sign(scheme, {**r, "id": "sr-2"}) != expected
    assert message_to_sign(scheme, {**r, "key_id": "k-2"}) != expected
    # a "message" member equal to the digest is accepted, any other refused
    assert message_to_sign(scheme, {**r, "message": expected.hex()}) == expected
    refused("message", "does not match", scheme, {**r, "message": bytes(32).hex()})


def test_digest_kinds_only_and_a_non_empty_payload() -> None:
    with pytest.raises(SignRequestError, match="must be 'payment' or 'settlement'") as exc:
        canonical_digest(req("raw", message="00"))
    assert exc.value.field == "kind"
    empty: list[Any] = [{}, [], "x", None]
    for payload in empty:
        refused("payload", "non-empty object", "ed25519", req(payload=payload))


# -- nesting, integers, keys, types ----------------------------------------------------------


def nested(levels: int) -> dict[str, Any]:
    """A payload whose leaf sits ``levels`` containers below the payload object."""
    leaf: Any = "x"
    for k in range(levels):
        leaf = [leaf] if k % 2 else {"a": leaf}
    return {"deep": leaf}


def test_payload_nested_past_the_limit_is_refused_before_recursing_further() -> None:
    # Attack: a payload nested thousands deep to exhaust a node's stack or time. The
    # payload object is depth 0; a value at depth 16 passes, depth 17 is refused.
    ok = req(payload=nested(15))  # leaf at depth 16
    assert message_to_sign("ed25519", ok) == digest_by_hand(ok)
    bad = req(payload=nested(16))  # leaf at depth 17
    with pytest.raises(SignRequestError, match="nested too deeply") as exc:
        message_to_sign("ed25519", bad)
    assert exc.value.field.startswith("payload.deep")
    hostile = req(payload=nested(5000))
    with pytest.raises(SignRequestError, match="nested too deeply"):
        message_to_sign("bip340", hostile)


def test_integers_outside_the_cbor_64_bit_range_are_refused() -> None:
    # CBOR encodes integers beyond 64 bits as tagged bignums, which other encoders (and
    # JSON readers) do not agree on: refused at the boundary, named by path.
    for edge in (-(2**63), 2**64 - 1, 0):
        ok = req(payload={"amount": edge})
        assert message_to_sign("ecdsa-secp256k1", ok) == digest_by_hand(ok)
    for beyond in (-(2**63) - 1, 2**64, 10**30):
        refused(
            "payload.amount", "integer out of range", "ed25519", req(payload={"amount": beyond})
        )
    refused("payload.legs[1]", "integer out of range", "ed25519", req(payload={"legs": [1, 2**64]}))


def test_non_string_object_keys_are_refused() -> None:
    # JSON has string keys only; an int key would give the node a CBOR map the
    # coordinator's JSON never had (two readings of one request).
    refused("payload", "object keys must be strings", "ed25519", req(payload={"a": "1", 5: "x"}))
    refused(
        "payload.inner",
        "object keys must be strings",
        "ed25519",
        req(payload={"inner": {(1, 2): "x"}}),
    )


@pytest.mark.parametrize("value", [1.5, 0.0, b"\x00", (1, 2), {1, 2}, object()])
def test_values_without_one_canonical_form_are_refused(value: Any) -> None:
    err = refused("payload.v", "is not allowed", "ed25519", req(payload={"v": value}))
    assert type(value).__name__ in str(err)


def test_bools_and_null_are_accepted_as_themselves() -> None:
    r = req(payload={"t": True, "f": False, "n": None, "s": ""})
    assert message_to_sign("ed25519", r) == digest_by_hand(r)
    assert message_to_sign("ed25519", req(payload={"t": 1})) != message_to_sign("ed25519", r)


# -- raw messages: hex, size, ECDSA digests ---------------------------------------------------


def test_raw_message_size_limit_sits_at_max_message() -> None:
    # Attack: a huge raw message to make every node hash and store it.
    ok = req("raw", message="ab" * MAX_MESSAGE)
    assert message_to_sign("ed25519", ok) == b"\xab" * MAX_MESSAGE
    too_long = req("raw", message="ab" * (MAX_MESSAGE + 1))
    refused("message", f"longer than {MAX_MESSAGE} bytes", "ed25519", too_long)


@pytest.mark.parametrize("message", ["", "00" * 31, "00" * 33, "00" * 64])
def test_ecdsa_raw_message_must_be_one_32_byte_digest(message: str) -> None:
    # An ECDSA key signs a digest; an empty or odd-length "digest" would be hashed or
    # padded differently by every verifier, so it is refused before any node signs.
    bad = req("raw", message=message)
    refused("message", "ECDSA signs a 32-byte digest", "ecdsa-secp256k1", bad)


def test_ed25519_and_bip340_sign_raw_bytes_of_any_length_within_the_limit() -> None:
    for scheme in ("ed25519", "bip340"):
        assert message_to_sign(scheme, req("raw", message="")) == b""
        assert message_to_sign(scheme, req("raw", message="00" * 33)) == bytes(33)
    assert message_to_sign("ecdsa-secp256k1", req("raw", message="11" * 32)) == b"\x11" * 32


@pytest.mark.parametrize("bad", ["AB", "abc", "0x00", "zz", 12, None])
def test_raw_message_must_be_lower_case_even_hex(bad: Any) -> None:
    refused("message", "lower-case hex", "ed25519", req("raw", message=bad))


# -- ids, scheme, kind, shape -----------------------------------------------------------------


def test_ids_scheme_kind_and_shape_are_checked_and_named() -> None:
    refused("scheme", "unknown scheme", "rsa", req("raw", message="00"))
    with pytest.raises(SignRequestError, match="must be an object") as exc:
        message_to_sign("ed25519", [("id", "x")])  # type: ignore[arg-type]
    assert exc.value.field == "request"
    refused("id", f"1-{MAX_ID_LEN} characters", "ed25519", {**req("raw", message="00"), "id": ""})
    long_id = "a" * (MAX_ID_LEN + 1)
    refused("key_id", "characters", "ed25519", {**req("raw", message="00"), "key_id": long_id})
    assert message_to_sign("ed25519", {**req("raw", message="00"), "id": "a" * MAX_ID_LEN})
    refused("kind", "must be one of", "ed25519", req("transfer"))


def test_decoded_requests_refuse_unknown_members_and_a_missing_payload() -> None:
    with pytest.raises(SignRequestError, match="unknown member") as exc:
        decode_request("ed25519", req("message", payload={"message": "0x00"}, extra=1))
    assert exc.value.field == "extra"
    with pytest.raises(SignRequestError, match="missing") as exc:
        decode_request("ed25519", req("message"))
    assert exc.value.field == "payload"
    with pytest.raises(SignRequestError, match="must be one of") as exc:
        decode_request("ed25519", req("payment", payload={"a": "1"}))
    assert exc.value.field == "kind"
    with pytest.raises(SignRequestError, match="must be an object"):
        decode_request("ed25519", "not a request")  # type: ignore[arg-type]
    # the coordinator's members are allowed and change nothing
    plain = req("message", payload={"message": "0x6869"})
    relayed = {**plain, "initiator": "alice", "approvals": []}
    assert message_to_sign("ed25519", relayed) == message_to_sign("ed25519", plain) == b"hi"


def test_psbt_requests_need_a_network_and_the_32_byte_key() -> None:
    base = req("btc-psbt", payload={"psbt": "cHNidP8="}, network="mainnet")
    with pytest.raises(SignRequestError, match="must be one of") as exc:
        decode_request("bip340", {**base, "network": "moon"}, public_key=bytes(32))
    assert exc.value.field == "network"
    for pk in (None, bytes(31), bytes(33), "00" * 32):
        with pytest.raises(SignRequestError, match="x-only public key") as exc:
            decode_request("bip340", base, public_key=pk)  # type: ignore[arg-type]
        assert exc.value.field == "public_key"


def test_sign_result_refuses_unusable_signatures() -> None:
    assert sign_result("ed25519", req("raw", message="00"), bytes(64), None) is None
    psbt = req("btc-psbt", payload={"psbt": "cHNidP8="}, network="mainnet")
    for sig in (b"", bytes(63), bytes(65)):
        with pytest.raises(SignRequestError, match="64 bytes per input") as exc:
            sign_result("bip340", psbt, sig, None)
        assert exc.value.field == "signature"


def test_an_unknown_member_is_named_but_cut_to_40_characters() -> None:
    # A hostile client's member name is echoed into errors and logs: at most 40 characters.
    long_name = "x" * 39 + "yz" + "w" * 1000
    with pytest.raises(SignRequestError, match="unknown member") as exc:
        decode_request("ed25519", req("message", payload={"message": "0x00"}, **{long_name: 1}))
    assert exc.value.field == "x" * 39 + "y"
    with pytest.raises(SignRequestError, match="unknown member") as short:
        decode_request("ed25519", req("message", payload={"message": "0x00"}, **{"x" * 40: 1}))
    assert short.value.field == "x" * 40


# -- the remembered PSBT decoding keeps every refusal of the strict one -------------------------


def _psbt_request(**extra: Any) -> dict[str, Any]:
    shares = dealer_split_for_tests(SECP256K1, 2, 3)
    internal = frost.ciphersuite("bip340").encode_public_key(shares[1].public.group_public_key)
    ins = [(secrets.token_bytes(32), 0, 1_000, 0)]
    payload = b64(build_psbt(internal, ins, [(b"\x00\x14" + bytes(20), 500)]))
    return {**req("btc-psbt", payload=payload, network="testnet", **extra), "_pk": internal}


def test_psbt_memo_never_decodes_another_kind_or_drops_a_member() -> None:
    r = _psbt_request()
    pk = r.pop("_pk")
    assert len(message_to_sign("bip340", r, public_key=pk)) == 32  # the honest request
    # a `message` request carrying a PSBT payload is a malformed message, not a PSBT
    as_message = {**r, "kind": "message"}
    as_message.pop("network")
    with pytest.raises(SignRequestError) as exc:
        message_to_sign("bip340", as_message, public_key=pk)
    assert exc.value.field.startswith("payload")
    # a second payload member is refused, not dropped on the way to the remembered decode
    extra = {**r, "payload": {**r["payload"], "memo": "x"}}
    with pytest.raises(SignRequestError) as member:
        message_to_sign("bip340", extra, public_key=pk)
    assert member.value.field.startswith("payload")
    # payloads that are not objects give a refusal, never an AttributeError
    for payload in (["x"], "a", [r["payload"]["psbt"]]):
        with pytest.raises(SignRequestError) as shape:
            message_to_sign("bip340", {**r, "payload": payload}, public_key=pk)
        assert shape.value.field.startswith("payload")


def test_stored_psbt_signature_reassembly_refuses_non_base64() -> None:
    # Re-assembling a stored result (no public key) decodes the PSBT strictly: a character
    # outside base64 is refused, never skipped (two strings must not give one PSBT).
    r = _psbt_request()
    r.pop("_pk")
    sig = bytes(range(64))
    signed = sign_result("bip340", r, sig, None)
    assert signed is not None and signed["signed_tx"]
    psbt = r["payload"]["psbt"]
    junk = {**r, "payload": {"psbt": psbt[:8] + "!" + psbt[8:]}}
    with pytest.raises(SignRequestError, match="cannot assemble the transaction") as exc:
        sign_result("bip340", junk, sig, None)
    assert exc.value.field == "payload"


def test_evm_signature_needs_64_bytes_and_a_recovery_id() -> None:
    r = req("evm-tx", payload={"tx": TX})
    for sig, rid in ((bytes(64), None), (bytes(63), 0), (bytes(65), 1)):
        with pytest.raises(SignRequestError, match="64 bytes r .. s with a recovery id") as exc:
            sign_result("ecdsa-secp256k1", r, sig, rid)
        assert exc.value.field == "signature"


def test_only_btc_psbt_messages_are_split_into_32_byte_sighashes() -> None:
    raw = req("raw", message="ab" * 33)
    assert messages_to_sign("ed25519", raw) == (b"\xab" * 33,)
    assert messages_to_sign("bip340", req("raw", message="")) == (b"",)
    with pytest.raises(SignRequestError, match="must be an object") as exc:
        messages_to_sign("ed25519", ["kind", "btc-psbt"])  # type: ignore[arg-type]
    assert exc.value.field == "request"
