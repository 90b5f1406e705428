"""Passkeys (WebAuthn L3), the checks mutation testing asks to pin (issue 16; docs/MUTATION.md).

Pure and fast, over a software authenticator (an EC P-256 key of pyca/cryptography,
tests/console/authenticator.py): a credential's fields at their bounds and one past
(credential id 16-1023 bytes, COSE key 1-256 bytes, 1-8 distinct origins inside the RP id),
each COSE key the library cannot read refused as a credential error rather than an
exception; the assertion's wire fields at their bounds; clientDataJSON that is not an
object of strings; and the Relying Party's checks of section 7.2 one by one (step 22's
counter rule on every side of its boundary). Every assertion that verifies is also checked
by pyca/cryptography over ``authenticatorData || SHA-256(clientDataJSON)``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import replace

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import parse_authenticator_data

from custody import passkeys as pk
from custody import policy as pol
from custody.passkeys import PasskeyRefusal as P
from tests.console.authenticator import ORIGIN, RP_ID, UP, UV, SoftAuthenticator, b64url

CHALLENGE = hashlib.sha256(b"a statement's signed bytes").digest()


@pytest.fixture(scope="module")
def alice() -> SoftAuthenticator:
    return SoftAuthenticator(credential_id=b"alice-credential")


def independently_verified(cred: pk.PasskeyCredential, a: pk.PasskeyAssertion) -> None:
    cose = cbor2.loads(cred.public_key)
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(cose[-2], "big"), int.from_bytes(cose[-3], "big"), ec.SECP256R1()
    )
    numbers.public_key().verify(
        a.signature,
        a.authenticator_data + hashlib.sha256(a.client_data_json).digest(),
        ec.ECDSA(hashes.SHA256()),
    )


def refused(cred, assertion, last=0, challenge=CHALLENGE) -> pk.AssertionRefused:
    with pytest.raises(pk.AssertionRefused) as info:
        pk.verify_assertion(cred, assertion, challenge, last)
    assert str(info.value) == f"{info.value.reason.value}: {info.value.detail}"
    return info.value


# -- the credential (governance's entry) ------------------------------------------------------


def test_credential_ids_of_16_to_1023_bytes(alice) -> None:
    c = alice.credential
    for n in (16, 1023):
        assert pk.check_credential(replace(c, credential_id=bytes(n))).credential_id == bytes(n)
    for bad in (bytes(15), bytes(1024), b"", bytearray(16), "x" * 16):
        with pytest.raises(pk.PasskeyError, match=r"^who\.credential_id: 16-1023 bytes$"):
            pk.check_credential(replace(c, credential_id=bad), "who")


def test_cose_keys_of_1_to_256_bytes(alice) -> None:
    c = alice.credential
    base = cbor2.loads(c.public_key)
    # an extra label the library ignores pads the key to exactly 256 bytes
    short = len(cbor2.dumps({**base, 99: b"x" * 100}))
    exact = cbor2.dumps({**base, 99: b"x" * (100 + 256 - short)})
    assert len(exact) == 256
    assert pk.check_credential(replace(c, public_key=exact)).public_key == exact
    over = cbor2.dumps({**base, 99: b"x" * (100 + 257 - short)})
    assert len(over) == 257
    for bad in (over, b"", bytearray(c.public_key)):
        with pytest.raises(pk.PasskeyError, match=r"^p\.public_key: a COSE_Key of at most 256"):
            pk.check_credential(replace(c, public_key=bad), "p")


@pytest.mark.parametrize(
    "cose",
    [
        b"\xff",  # not CBOR (InvalidCBORData)
        cbor2.dumps({3: -7}),  # no kty (KeyError)
        cbor2.dumps(5),  # not a map (TypeError)
        cbor2.dumps([1]),  # an array (IndexError)
        cbor2.dumps({1: 9, 3: -7}),  # a key type the library does not support
        cbor2.dumps({1: 2, 3: -7, -1: 1}),  # EC2 without its coordinates
    ],
)
def test_a_cose_key_the_library_cannot_read_is_a_credential_error(alice, cose) -> None:
    """Each is refused as :class:`PasskeyError` naming the field, never an exception of the
    library's: a governance document carrying it must fail as a malformed document."""
    with pytest.raises(pk.PasskeyError, match=r"^p\.public_key: not a supported COSE_Key"):
        pk.check_credential(replace(alice.credential, public_key=cose), "p")
    # found this way: an array or an unsupported kty escaped as IndexError and
    # UnsupportedPublicKeyType, through the policy check of a governance document too
    group = pol.ApproverGroup(
        "t", (pol.Approver("alice", b"", replace(alice.credential, public_key=cose)),)
    )
    with pytest.raises(
        pol.PolicyError, match="approver alice: passkey.public_key: not a supported"
    ):
        pol.check_policy(pol.Policy(approver_groups=(group,)))


def test_rp_ids_are_lower_case_host_names(alice) -> None:
    c = alice.credential
    for bad in ("Localhost", "", "a_b", "localhost\n", b"localhost", ".example.com"):
        with pytest.raises(pk.PasskeyError, match=r"^p\.rp_id: a lower-case host name$"):
            pk.check_credential(replace(c, rp_id=bad), "p")


def test_one_to_eight_distinct_origins_inside_the_rp_id(alice) -> None:
    c = replace(alice.credential, rp_id="example.com")
    eight = tuple(f"https://n{i}.example.com" for i in range(8))
    assert pk.check_credential(replace(c, origins=eight)).origins == eight
    assert pk.check_credential(replace(c, origins=eight[:1])).origins == eight[:1]
    for bad in ((), (*eight, "https://n9.example.com"), eight[:1] * 2, list(eight[:1])):
        with pytest.raises(pk.PasskeyError, match=r"^p\.origins: 1-8 distinct origins$"):
            pk.check_credential(replace(c, origins=bad), "p")
    ok = ("https://example.com", "https://example.com:8443", "https://a.b.example.com:1")
    assert pk.check_credential(replace(c, origins=ok)).origins == ok
    for outside in ("https://evilexample.com", "https://example.com.evil.org", "https://com"):
        with pytest.raises(pk.PasskeyError, match="is outside rp_id 'example.com'"):
            pk.check_credential(replace(c, origins=(outside,)), "p")
    for bad in ("http://example.com", "https://Example.com", 7, "https://example.com/"):
        with pytest.raises(pk.PasskeyError, match="is not https://host"):
            pk.check_credential(replace(c, origins=(bad,)), "p")
    local = replace(c, rp_id="localhost", origins=("http://localhost:8000", "http://localhost"))
    assert pk.check_credential(local) == local


def test_credential_cbor_is_strict_and_round_trips(alice) -> None:
    c = alice.credential
    raw = c.to_cbor()
    assert raw == {
        "credential_id": c.credential_id,
        "public_key": c.public_key,
        "rp_id": RP_ID,
        "origins": [ORIGIN],
    }
    assert pk.credential_from_cbor(raw) == c
    with pytest.raises(pk.PasskeyError, match=r"^q: expected fields"):
        pk.credential_from_cbor({**raw, "x": 1}, "q")
    with pytest.raises(pk.PasskeyError, match=r"^q: expected fields"):
        pk.credential_from_cbor([raw], "q")
    with pytest.raises(pk.PasskeyError, match=r"^q\.origins: a list$"):
        pk.credential_from_cbor({**raw, "origins": ORIGIN}, "q")
    with pytest.raises(pk.PasskeyError, match=r"^q\.credential_id"):
        pk.credential_from_cbor({**raw, "credential_id": b"short"}, "q")


# -- the assertion's wire form ----------------------------------------------------------------


def test_assertion_fields_at_their_bounds(alice) -> None:
    a = alice.get_assertion(CHALLENGE).to_cbor()
    bounds = {
        "credential_id": (16, 1023),
        "authenticator_data": (37, 512),
        "client_data_json": (2, 1024),
        "signature": (8, 256),
    }
    for name, (lo, hi) in bounds.items():
        for n in (lo, hi):
            assert getattr(pk.assertion_from_cbor({**a, name: b"a" * n}), name) == b"a" * n
        for bad in (b"a" * (lo - 1), b"a" * (hi + 1), "a" * lo, bytearray(lo)):
            with pytest.raises(pk.PasskeyError, match=rf"^webauthn\.{name}: {lo}-{hi} bytes$"):
                pk.assertion_from_cbor({**a, name: bad})
    for bad in ({**a, "extra": b""}, {k: v for k, v in a.items() if k != "signature"}, [a]):
        with pytest.raises(pk.PasskeyError, match=r"^webauthn: expected fields"):
            pk.assertion_from_cbor(bad)


def test_an_assertion_encodes_as_canonical_cbor(alice) -> None:
    a = alice.get_assertion(CHALLENGE)
    wire = pk.encode_assertion(a)
    # RFC 8949 section 4.2.1: keys by encoded length, so signature (9) comes first
    assert wire.startswith(b"\xa4\x69signature")
    assert wire == cbor2.dumps(a.to_cbor(), canonical=True)
    assert pk.assertion_from_cbor(cbor2.loads(wire)) == a


def test_the_flag_constants_are_the_bits_the_library_reads() -> None:
    """Section 6.1: UP is bit 0 and UV bit 2 of the flags byte."""
    data = bytes(32) + bytes([pk.FLAG_UP]) + bytes(4)
    flags = parse_authenticator_data(data).flags
    assert (flags.up, flags.uv) == (True, False)
    flags = parse_authenticator_data(bytes(32) + bytes([pk.FLAG_UV]) + bytes(4)).flags
    assert (flags.up, flags.uv) == (False, True)
    assert (pk.FLAG_UP, pk.FLAG_UV) == (UP, UV)


def test_the_challenge_is_sha256_of_the_signed_statement() -> None:
    assert pk.challenge_for(b"abc") == hashlib.sha256(b"abc").digest()


# -- the Relying Party's checks, section 7.2 --------------------------------------------------


def _client(alice, **fields) -> bytes:
    body = {"type": "webauthn.get", "challenge": b64url(CHALLENGE), "origin": ORIGIN}
    return json.dumps({**body, **fields}, separators=(",", ":")).encode()


def _signed_with(alice, client: bytes, flags: int = UP | UV, counter: int = 1):
    auth = hashlib.sha256(RP_ID.encode()).digest() + bytes([flags]) + counter.to_bytes(4, "big")
    sig = alice.key.sign(auth + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256()))
    return pk.PasskeyAssertion(alice.credential_id, auth, client, sig)


def test_an_honest_assertion_verifies_and_carries_its_counter(alice) -> None:
    a = _signed_with(alice, _client(alice), counter=7)
    independently_verified(alice.credential, a)
    assert pk.verify_assertion(alice.credential, a, CHALLENGE, 6) == pk.PasskeyVerified(
        alice.credential_id, 7
    )
    # crossOrigin false, absent or not the JSON value true is not a cross-origin frame
    for extra in ({"crossOrigin": False}, {"crossOrigin": "true"}, {}):
        b = _signed_with(alice, _client(alice, **extra), counter=8)
        assert pk.verify_assertion(alice.credential, b, CHALLENGE, 7).sign_count == 8


@pytest.mark.parametrize(
    ("sign_count", "last", "stale"),
    [
        (0, 0, False),  # an authenticator without a counter (section 6.1.1)
        (1, 0, False),
        (6, 5, False),
        (5, 5, True),  # a replay
        (4, 5, True),  # a clone behind the original
        (0, 5, True),  # a counter that went back to zero
        (0, 1, True),  # ... from the first count an authenticator recorded
        (1, 1, True),
        (2, 1, False),
    ],
)
def test_the_signature_counter_rule_of_step_22(alice, sign_count, last, stale) -> None:
    a = _signed_with(alice, _client(alice), counter=sign_count)
    if stale:
        e = refused(alice.credential, a, last)
        assert e.reason is P.STALE_COUNTER
        assert f"signature counter {sign_count} does not exceed {last}" in e.detail
    else:
        got = pk.verify_assertion(alice.credential, a, CHALLENGE, last)
        assert got == pk.PasskeyVerified(alice.credential_id, sign_count)
        independently_verified(alice.credential, a)


def test_client_data_that_is_not_an_object_of_strings_is_malformed(alice) -> None:
    cases = {
        b"\xff\xfe": "clientDataJSON: not UTF-8 JSON",
        b"{not json": "clientDataJSON: not UTF-8 JSON",
        b"[1, 2]": "clientDataJSON: not a JSON object",
        b'"webauthn.get"': "clientDataJSON: not a JSON object",
        _client(alice, type=1): "clientDataJSON.type: a string",
        _client(alice, challenge=None): "clientDataJSON.challenge: a string",
        b'{"type":"webauthn.get","challenge":"x"}': "clientDataJSON.origin: a string",
    }
    for client, detail in cases.items():
        e = refused(alice.credential, _signed_with(alice, client))
        assert (e.reason, e.detail) == (P.MALFORMED, detail)


def test_each_check_names_its_step(alice) -> None:
    c = alice.credential
    cases = [
        (_signed_with(alice, _client(alice, type="webauthn.create")), P.WRONG_TYPE),
        (_signed_with(alice, _client(alice, challenge=b64url(bytes(32)))), P.CHALLENGE),
        (_signed_with(alice, _client(alice, origin="http://localhost:8001")), P.ORIGIN),
        (_signed_with(alice, _client(alice, crossOrigin=True)), P.CROSS_ORIGIN),
        (_signed_with(alice, _client(alice), flags=UV), P.USER_PRESENCE),
        (_signed_with(alice, _client(alice), flags=UP), P.USER_VERIFICATION),
        (replace(_signed_with(alice, _client(alice)), credential_id=bytes(16)), None),
    ]
    for a, reason in cases:
        e = refused(c, a)
        assert e.reason is (reason or P.UNKNOWN_CREDENTIAL), (reason, e)
    # another RP id's hash, signed (so only the hash differs)
    client = _client(alice)
    auth = hashlib.sha256(b"example.com").digest() + bytes([UP | UV]) + (1).to_bytes(4, "big")
    sig = alice.key.sign(auth + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256()))
    e = refused(c, pk.PasskeyAssertion(alice.credential_id, auth, client, sig))
    assert e.reason is P.RP_ID and "SHA-256 of 'localhost'" in e.detail


def test_short_authenticator_data_is_malformed_not_an_exception(alice) -> None:
    """Built in memory past :func:`assertion_from_cbor`'s 37-byte floor, as a caller could."""
    a = _signed_with(alice, _client(alice))
    for data in (b"", a.authenticator_data[:36]):
        e = refused(alice.credential, replace(a, authenticator_data=data))
        assert e.reason is P.MALFORMED and e.detail.startswith("authenticatorData: ")


def test_a_signature_the_library_cannot_parse_is_a_bad_signature(alice) -> None:
    a = _signed_with(alice, _client(alice))
    for sig in (b"\x30\x00", bytes(64), a.signature[:-1]):
        assert refused(alice.credential, replace(a, signature=sig)).reason is P.BAD_SIGNATURE
    # a credential whose COSE key the library reads but cannot use (built past
    # check_credential): its exception is a bad signature, named by its type
    odd = replace(alice.credential, public_key=cbor2.dumps({1: 1, 3: -8, -1: 6, -2: b"x"}))
    e = refused(odd, a)
    assert e.reason is P.BAD_SIGNATURE
    assert e.detail == "ValueError: An Ed25519 public key is 32 bytes long"


def test_every_passkey_type_is_frozen(alice) -> None:
    a = alice.get_assertion(CHALLENGE)
    for obj in (alice.credential, a, pk.PasskeyVerified(bytes(16), 1)):
        name = dataclasses.fields(obj)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, None)
        hash(obj)


def test_an_origin_that_is_not_a_string_is_refused_by_name_not_a_type_error(alice) -> None:
    """A list among the origins (hashable or not) is a PasskeyError naming the field: it
    was a bare TypeError from set() before the per-origin check (found in session 23)."""
    c = replace(alice.credential, rp_id="example.com")
    for bad in (["https://wallet.example.com"], {"a": 1}, 443, None):
        with pytest.raises(pk.PasskeyError, match=r"^p\.origins: .* is not https://host"):
            pk.check_credential(replace(c, origins=(bad,)), "p")
