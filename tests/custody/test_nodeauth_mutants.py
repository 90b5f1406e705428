"""Coordinator -> node request authentication (custody.nodeauth), the checks mutation
testing asks to pin (issue 16; docs/MUTATION.md, "custody/nodeauth.py (session 23)").

Every check of :func:`verify_headers` is a defence against a coordinator impostor or a
replayed/redirected request, so each test here is an attack with its exact refusal, next
to the honest request that passes. Pure and fast: real Ed25519 (pynacl signs; every
signature that counts is also checked by pyca/cryptography over the byte string written
out by hand from the module docstring, not by :func:`signed_bytes`)."""

from __future__ import annotations

import hashlib
import re
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.signing import SigningKey

from custody import nodeauth
from custody.nodeauth import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    NodeAuthError,
    sign_headers,
    signed_bytes,
    verify_headers,
)

SEED = bytes(range(32))
KEY = SigningKey(SEED)
PK = bytes(KEY.verify_key)
ME = "node-1"
BODY = b'{"key_id": "k1", "count": 1}'


def by_hand(method: str, path: str, ts: str, body: bytes, recipient=None, nonce="") -> bytes:
    """The signed string of the module docstring, written out without signed_bytes."""
    tail = f"{method}\n{path}\n{ts}\n{hashlib.sha256(body).hexdigest()}".encode()
    if recipient is None:
        return b"tpwc-coord-v1\n" + tail
    return b"tpwc-coord-v2\n" + recipient.encode() + b"\n" + nonce.encode() + b"\n" + tail


def independent_verify(headers: dict[str, str], message: bytes) -> None:
    """pyca/cryptography (OpenSSL) checks the signature over ``message``."""
    Ed25519PublicKey.from_public_bytes(PK).verify(bytes.fromhex(headers[SIGNATURE_HEADER]), message)


def refused(headers, *, now=1000.0, body=BODY, method="POST", path="/v1/x", **kw) -> str:
    with pytest.raises(NodeAuthError) as e:
        verify_headers(PK, method, path, body, headers, now=now, **kw)
    return str(e.value)


def good(ts: int = 1000, **kw) -> dict[str, str]:
    return sign_headers(KEY, "POST", "/v1/x", BODY, timestamp=ts, recipient=ME, **kw)


# -- the signed string --------------------------------------------------------------------


def test_signed_bytes_are_the_documented_v1_and_v2_strings() -> None:
    nonce = "0123456789abcdef0123456789abcdef"
    v2 = signed_bytes("post", "/v1/s?x=1", "1000", b"abc", "node-7", nonce)
    assert v2 == (
        b"tpwc-coord-v2\nnode-7\n" + nonce.encode() + b"\nPOST\n/v1/s?x=1\n1000\n"
        b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert v2 == by_hand("POST", "/v1/s?x=1", "1000", b"abc", "node-7", nonce)
    v1 = signed_bytes("get", "/v1/status", "1000", b"")
    assert (
        v1 == b"tpwc-coord-v1\nGET\n/v1/status\n1000\n" + hashlib.sha256(b"").hexdigest().encode()
    )
    assert nodeauth.DOMAIN == b"tpwc-coord-v1\n" and nodeauth.DOMAIN_V2 == b"tpwc-coord-v2\n"


def test_sign_headers_signs_the_documented_v2_string_with_a_fresh_nonce() -> None:
    h = good()
    assert set(h) == {TIMESTAMP_HEADER, SIGNATURE_HEADER, NONCE_HEADER}
    assert h[TIMESTAMP_HEADER] == "1000"
    assert re.fullmatch(r"[0-9a-f]{32}", h[NONCE_HEADER])
    independent_verify(h, by_hand("POST", "/v1/x", "1000", BODY, ME, h[NONCE_HEADER]))
    # two identical requests in one second differ (so a node refuses every repeat)
    again = good()
    assert again[NONCE_HEADER] != h[NONCE_HEADER]
    assert again[SIGNATURE_HEADER] != h[SIGNATURE_HEADER]


def test_sign_headers_without_a_recipient_is_the_v1_form() -> None:
    h = sign_headers(KEY, "get", "/v1/status", timestamp=1000)
    assert set(h) == {TIMESTAMP_HEADER, SIGNATURE_HEADER}
    independent_verify(h, by_hand("GET", "/v1/status", "1000", b""))


def test_every_kind_of_signing_key_signs_the_same_bytes() -> None:
    calls: list[bytes] = []

    def hsm_like(data: bytes) -> bytes:  # the coordinator's key behind a signing function
        calls.append(data)
        return KEY.sign(data).signature

    for signer in (KEY, SEED, bytearray(SEED), hsm_like):
        h = sign_headers(signer, "POST", "/v1/x", BODY, timestamp=1000)
        assert (
            h[SIGNATURE_HEADER] == KEY.sign(by_hand("POST", "/v1/x", "1000", BODY)).signature.hex()
        )
    assert calls == [by_hand("POST", "/v1/x", "1000", BODY)]


def test_the_timestamp_is_now_unless_given() -> None:
    before = int(time.time())
    h = sign_headers(KEY, "GET", "/v1/status", recipient=ME)
    after = int(time.time())
    assert before <= int(h[TIMESTAMP_HEADER]) <= after
    verify_headers(PK, "GET", "/v1/status", b"", h, recipient=ME)  # now read from the clock
    assert sign_headers(KEY, "GET", "/", timestamp=1234.9)[TIMESTAMP_HEADER] == "1234"


# -- what a node accepts ------------------------------------------------------------------


def test_an_honest_request_verifies_and_returns_its_signature_as_the_replay_key() -> None:
    h = good()
    sig = verify_headers(PK, "POST", "/v1/x", BODY, h, now=1000, recipient=ME)
    assert sig == bytes.fromhex(h[SIGNATURE_HEADER]) and len(sig) == 64
    # a VerifyKey or the raw 32 bytes; the method's case does not matter
    assert verify_headers(KEY.verify_key, "post", "/v1/x", BODY, h, now=1000, recipient=ME) == sig


def test_header_names_are_found_in_lower_case_too() -> None:
    h = {k.lower(): v for k, v in good().items()}
    assert verify_headers(PK, "POST", "/v1/x", BODY, h, now=1000, recipient=ME)


def test_missing_headers_each_alone() -> None:
    h = good()
    for name in (TIMESTAMP_HEADER, SIGNATURE_HEADER):
        partial = {k: v for k, v in h.items() if k != name}
        assert refused(partial, recipient=ME) == "missing coordinator signature headers"
    assert refused({}, recipient=ME) == "missing coordinator signature headers"
    no_nonce = {k: v for k, v in h.items() if k != NONCE_HEADER}
    assert refused(no_nonce, recipient=ME) == (
        f"missing or malformed {NONCE_HEADER} (32 hex digits)"
    )


@pytest.mark.parametrize(
    "ts",
    [
        "\u0661\u0660\u0660\u0660",  # Arabic-Indic digits: isdigit() and int() accept them
        "1000a",
        "-1000",
        " 1000",
        "+1000",
        "",
        "1e3",
        "0000000001000",  # 13 digits
    ],
)
def test_a_timestamp_that_is_not_at_most_12_ascii_digits_is_malformed(ts: str) -> None:
    h = {**good(), TIMESTAMP_HEADER: ts}
    assert refused(h, recipient=ME) == "malformed timestamp"


def test_a_timestamp_of_exactly_12_digits_is_read() -> None:
    h = good()
    nonce = h[NONCE_HEADER]
    ts = "000000001000"
    sig = KEY.sign(by_hand("POST", "/v1/x", ts, BODY, ME, nonce)).signature.hex()
    h = {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig, NONCE_HEADER: nonce}
    assert verify_headers(PK, "POST", "/v1/x", BODY, h, now=1000, recipient=ME).hex() == sig


def test_the_window_is_60_seconds_each_way() -> None:
    assert nodeauth.MAX_SKEW_SECONDS == 60
    h = good(ts=1000)
    for now in (940, 940.0, 1000, 1060, 1060.0):
        verify_headers(PK, "POST", "/v1/x", BODY, h, now=now, recipient=ME)
    for now in (939, 939.5, 1060.5, 1061, 100_000):
        assert refused(h, now=now, recipient=ME) == "timestamp more than 60 s off"
    # a node's own window, both edges
    verify_headers(PK, "POST", "/v1/x", BODY, h, now=1005, recipient=ME, max_skew=5)
    assert refused(h, now=1006, recipient=ME, max_skew=5) == "timestamp more than 5 s off"
    assert refused(h, now=994, recipient=ME, max_skew=5) == "timestamp more than 5 s off"


def test_a_stale_request_is_refused_before_its_signature_is_read() -> None:
    h = {**good(ts=1000), SIGNATURE_HEADER: "zz"}
    assert refused(h, now=2000, recipient=ME) == "timestamp more than 60 s off"


def test_the_signature_must_be_hex_of_64_bytes() -> None:
    h = good()
    assert refused({**h, SIGNATURE_HEADER: "zz" * 64}, recipient=ME) == "signature is not hex"
    assert refused({**h, SIGNATURE_HEADER: "abc"}, recipient=ME) == "signature is not hex"
    for n in (0, 63, 65, 128):
        bad = {**h, SIGNATURE_HEADER: "00" * n}
        assert refused(bad, recipient=ME) == "signature must be 64 bytes", n


@pytest.mark.parametrize(
    "nonce",
    [
        "",
        "0" * 31,
        "0" * 33,
        "0123456789ABCDEF0123456789ABCDEF",  # upper case: not the one encoding
        "g" * 32,
        "0123456789abcdef0123456789abcde ",
        "\u0661" * 32,
    ],
)
def test_a_nonce_that_is_not_32_lower_case_hex_digits_is_refused(nonce: str) -> None:
    h = {**good(), NONCE_HEADER: nonce}
    assert refused(h, recipient=ME) == f"missing or malformed {NONCE_HEADER} (32 hex digits)"


def test_a_forged_signature_is_refused_naming_the_recipient() -> None:
    forger = SigningKey.generate()
    h = sign_headers(forger, "POST", "/v1/x", BODY, timestamp=1000, recipient=ME)
    assert refused(h, recipient=ME) == f"bad coordinator signature (for recipient {ME})"
    v1 = sign_headers(forger, "POST", "/v1/x", BODY, timestamp=1000)
    assert refused(v1) == "bad coordinator signature"


def test_a_request_signed_for_another_node_is_refused_by_this_one() -> None:
    h = sign_headers(KEY, "POST", "/v1/x", BODY, timestamp=1000, recipient="node-2")
    verify_headers(PK, "POST", "/v1/x", BODY, h, now=1000, recipient="node-2")
    assert refused(h, recipient=ME) == f"bad coordinator signature (for recipient {ME})"


def test_v1_and_v2_signatures_never_stand_for_each_other() -> None:
    v1 = sign_headers(KEY, "POST", "/v1/x", BODY, timestamp=1000)
    # a node with an id asks for a nonce; a nonce header added to a v1 signature fails it
    assert refused(v1, recipient=ME).startswith("missing or malformed")
    with_nonce = {**v1, NONCE_HEADER: "0" * 32}
    assert refused(with_nonce, recipient=ME) == f"bad coordinator signature (for recipient {ME})"
    # and a v2 signature is not a v1 one
    assert refused(good()) == "bad coordinator signature"


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("method", {"method": "PUT"}),
        ("path", {"path": "/v1/y"}),
        ("query", {"path": "/v1/x?all=1"}),
        ("body", {"body": BODY + b" "}),
    ],
)
def test_every_signed_field_is_bound(what: str, change: dict) -> None:
    assert refused(good(), recipient=ME, **change) == (
        f"bad coordinator signature (for recipient {ME})"
    ), what


def test_the_timestamp_and_the_nonce_are_bound_too() -> None:
    h = good()
    assert refused({**h, TIMESTAMP_HEADER: "1001"}, recipient=ME).startswith("bad coordinator")
    other = "f" * 32 if h[NONCE_HEADER] != "f" * 32 else "e" * 32
    assert refused({**h, NONCE_HEADER: other}, recipient=ME).startswith("bad coordinator")
