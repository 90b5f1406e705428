"""Passkey (WebAuthn) approvals: the credential an approver registered, the assertion that
carries an approval, and its verification. Pure: no I/O, no clock.

A passkey approver signs the same :class:`custody.approvals.ApprovalStatement` as a CLI
approver, but through their authenticator: the WebAuthn challenge (W3C WebAuthn Level 3,
section 5.1.4.1 ``navigator.credentials.get``) is

    challenge = SHA-256( APPROVAL_CONTEXT || canonical CBOR of the statement )

(:func:`challenge_for`), so the authenticator's signature over ``authenticatorData ||
SHA-256(clientDataJSON)`` (section 6.3.3 step 11) binds the statement's request, intent,
policy version, governance digest, expiry, approver, decision and initiator. Each node runs
:func:`verify_assertion` itself: it is the Relying Party's check of section 7.2
("Verifying an Authentication Assertion"), done by the kept library ``webauthn``
(py_webauthn, ``verify_authentication_response``), with the node's last recorded signature
counter for the credential (section 6.1.1). Before the library runs, the fields it checks
are read here (section 5.8.1 clientDataJSON, section 6.1 authenticatorData) only to name
*which* check failed with a stable :class:`PasskeyRefusal` code; the verdict is the
library's.

What a credential is, in governance (the officers sign it like a CLI approver's key):

=================== ========= ==========================================================
field               type      meaning
=================== ========= ==========================================================
``credential_id``   bstr      the credential's id (section 6.5.1, 16-1023 bytes)
``public_key``      bstr      its COSE_Key (RFC 9052 section 7; ES256 P-256 or EdDSA
                              Ed25519), exactly as the attestation carried it
``rp_id``           tstr      the Relying Party id the credential is scoped to
``origins``         [tstr]    the origins the console is served from (section 5.8.1
                              ``origin``; at least one, https or http://localhost)
=================== ========= ==========================================================
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cbor2
from webauthn import verify_authentication_response
from webauthn.helpers import (
    bytes_to_base64url,
    decode_credential_public_key,
    parse_authenticator_data,
)
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, WebAuthnException

__all__ = [
    "AssertionRefused",
    "MAX_CLIENT_DATA",
    "MAX_CREDENTIAL_ID",
    "PasskeyAssertion",
    "PasskeyCredential",
    "PasskeyError",
    "PasskeyRefusal",
    "PasskeyVerified",
    "challenge_for",
    "assertion_from_cbor",
    "check_credential",
    "credential_from_cbor",
    "encode_assertion",
    "verify_assertion",
]

MIN_CREDENTIAL_ID: Final = 16  # WebAuthn L3 section 6.5.1: at least 16 bytes of entropy
MAX_CREDENTIAL_ID: Final = 1023  # section 5.1.3 step 4 (credentialId length)
MAX_PUBLIC_KEY: Final = 256
MAX_CLIENT_DATA: Final = 1024
MAX_AUTHENTICATOR_DATA: Final = 512
MAX_ORIGINS: Final = 8
_RP_ID: Final = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_ORIGIN: Final = re.compile(r"^(https://[a-z0-9.-]+(:[0-9]{1,5})?|http://localhost(:[0-9]{1,5})?)$")
FLAG_UP: Final = 0x01  # section 6.1, authenticatorData flags bit 0: user present
FLAG_UV: Final = 0x04  # bit 2: user verified


class PasskeyError(ValueError):
    """A credential or assertion that is not well formed (names the field)."""


class PasskeyRefusal(enum.StrEnum):
    """Why a passkey assertion does not count (stable, machine-readable; docs/SECURITY.md)."""

    MALFORMED = "passkey-malformed"
    UNKNOWN_CREDENTIAL = "passkey-unknown-credential"  # not the approver's registered one
    WRONG_TYPE = "passkey-wrong-type"  # clientData.type is not webauthn.get
    CHALLENGE = "passkey-challenge-mismatch"  # signed over another statement
    ORIGIN = "passkey-wrong-origin"
    CROSS_ORIGIN = "passkey-cross-origin"  # made inside another origin's frame
    RP_ID = "passkey-wrong-rp-id"
    USER_PRESENCE = "passkey-user-not-present"
    USER_VERIFICATION = "passkey-user-not-verified"  # UV flag cleared
    STALE_COUNTER = "passkey-stale-counter"  # a counter that did not increase (a clone)
    BAD_SIGNATURE = "passkey-bad-signature"


@dataclass(frozen=True)
class PasskeyCredential:
    """A registered passkey (module docstring table)."""

    credential_id: bytes
    public_key: bytes  # COSE_Key
    rp_id: str
    origins: tuple[str, ...]

    def to_cbor(self) -> dict[str, Any]:
        return {
            "credential_id": self.credential_id,
            "public_key": self.public_key,
            "rp_id": self.rp_id,
            "origins": list(self.origins),
        }


def check_credential(c: PasskeyCredential, what: str = "passkey") -> PasskeyCredential:
    """Structural rules of a credential; :class:`PasskeyError` names the field."""
    if not isinstance(c.credential_id, bytes) or not (
        MIN_CREDENTIAL_ID <= len(c.credential_id) <= MAX_CREDENTIAL_ID
    ):
        raise PasskeyError(f"{what}.credential_id: {MIN_CREDENTIAL_ID}-{MAX_CREDENTIAL_ID} bytes")
    if not isinstance(c.public_key, bytes) or not 1 <= len(c.public_key) <= MAX_PUBLIC_KEY:
        raise PasskeyError(f"{what}.public_key: a COSE_Key of at most {MAX_PUBLIC_KEY} bytes")
    try:
        decode_credential_public_key(c.public_key)
    # py_webauthn raises its own types (InvalidCBORData, UnsupportedPublicKeyType, ...) and
    # IndexError, KeyError or TypeError for CBOR of the wrong shape: all are malformed keys
    except (WebAuthnException, LookupError, ValueError, TypeError) as exc:
        raise PasskeyError(f"{what}.public_key: not a supported COSE_Key ({exc})") from None
    if not isinstance(c.rp_id, str) or not _RP_ID.fullmatch(c.rp_id):
        raise PasskeyError(f"{what}.rp_id: a lower-case host name")
    if not isinstance(c.origins, tuple) or not 1 <= len(c.origins) <= MAX_ORIGINS:
        raise PasskeyError(f"{what}.origins: 1-{MAX_ORIGINS} distinct origins")
    for o in c.origins:  # each a string before the set below (a list in it: a TypeError)
        if not isinstance(o, str) or not _ORIGIN.fullmatch(o):
            raise PasskeyError(
                f"{what}.origins: {o!r} is not https://host[:port] or http://localhost[:port]"
            )
        host = o.split("://", 1)[1].split(":", 1)[0]
        if host != c.rp_id and not host.endswith("." + c.rp_id):
            raise PasskeyError(f"{what}.origins: {o!r} is outside rp_id {c.rp_id!r}")
    if len(set(c.origins)) != len(c.origins):
        raise PasskeyError(f"{what}.origins: 1-{MAX_ORIGINS} distinct origins")
    return c


def credential_from_cbor(raw: Any, what: str = "passkey") -> PasskeyCredential:
    """The inverse of :meth:`PasskeyCredential.to_cbor`, strict."""
    fields = {"credential_id", "public_key", "rp_id", "origins"}
    if not isinstance(raw, Mapping) or set(raw) != fields:
        raise PasskeyError(f"{what}: expected fields {sorted(fields)}")
    if not isinstance(raw["origins"], list):
        raise PasskeyError(f"{what}.origins: a list")
    return check_credential(
        PasskeyCredential(
            raw["credential_id"], raw["public_key"], raw["rp_id"], tuple(raw["origins"])
        ),
        what,
    )


def challenge_for(signed_statement: bytes) -> bytes:
    """The WebAuthn challenge of an approval: SHA-256 of the statement's signed bytes
    (:meth:`custody.approvals.ApprovalStatement.signed_bytes`)."""
    return hashlib.sha256(signed_statement).digest()


@dataclass(frozen=True)
class PasskeyAssertion:
    """The authenticator's response (WebAuthn L3 section 5.2.2
    ``AuthenticatorAssertionResponse``), raw bytes as the browser returned them."""

    credential_id: bytes
    authenticator_data: bytes
    client_data_json: bytes
    signature: bytes

    def to_cbor(self) -> dict[str, Any]:
        return {
            "credential_id": self.credential_id,
            "authenticator_data": self.authenticator_data,
            "client_data_json": self.client_data_json,
            "signature": self.signature,
        }


def assertion_from_cbor(raw: Any) -> PasskeyAssertion:
    fields = {"credential_id", "authenticator_data", "client_data_json", "signature"}
    if not isinstance(raw, Mapping) or set(raw) != fields:
        raise PasskeyError(f"webauthn: expected fields {sorted(fields)}")
    limits = {
        "credential_id": (MIN_CREDENTIAL_ID, MAX_CREDENTIAL_ID),
        "authenticator_data": (37, MAX_AUTHENTICATOR_DATA),  # section 6.1: 37 bytes minimum
        "client_data_json": (2, MAX_CLIENT_DATA),
        "signature": (8, 256),
    }
    for name, (lo, hi) in limits.items():
        v = raw[name]
        if not isinstance(v, bytes) or not lo <= len(v) <= hi:
            raise PasskeyError(f"webauthn.{name}: {lo}-{hi} bytes")
    return PasskeyAssertion(
        raw["credential_id"], raw["authenticator_data"], raw["client_data_json"], raw["signature"]
    )


@dataclass(frozen=True)
class PasskeyVerified:
    """An assertion that verified: the counter it carried (0: the authenticator keeps none)."""

    credential_id: bytes
    sign_count: int


class AssertionRefused(Exception):
    """An assertion that does not verify: ``reason`` says which check failed."""

    def __init__(self, reason: PasskeyRefusal, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def _client_data(data: bytes) -> dict[str, Any]:
    """Section 5.8.1: the JSON-compatible serialization of CollectedClientData."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AssertionRefused(PasskeyRefusal.MALFORMED, "clientDataJSON: not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise AssertionRefused(PasskeyRefusal.MALFORMED, "clientDataJSON: not a JSON object")
    for name in ("type", "challenge", "origin"):
        if not isinstance(value.get(name), str):
            raise AssertionRefused(PasskeyRefusal.MALFORMED, f"clientDataJSON.{name}: a string")
    return value


def verify_assertion(
    credential: PasskeyCredential,
    assertion: PasskeyAssertion,
    challenge: bytes,
    last_sign_count: int,
) -> PasskeyVerified:
    """The Relying Party's assertion check, WebAuthn L3 section 7.2, for one approval.

    ``last_sign_count`` is the highest counter this verifier recorded for the credential
    (0 if none). Raises :class:`AssertionRefused` naming the failed check: the credential
    (step 6), ``type`` (step 11), ``challenge`` (step 12), ``origin`` and ``crossOrigin``
    (steps 13-14), the RP id hash (step 15), UP (step 16), UV (step 17, required: an
    approval is a user-verified act), the signature (step 21) and the counter (step 22: a
    non-zero counter must exceed the recorded one). The final verdict is py_webauthn's
    ``verify_authentication_response`` over the same inputs.
    """
    if assertion.credential_id != credential.credential_id:
        raise AssertionRefused(
            PasskeyRefusal.UNKNOWN_CREDENTIAL, "assertion names another credential"
        )
    client = _client_data(assertion.client_data_json)
    if client["type"] != "webauthn.get":
        raise AssertionRefused(
            PasskeyRefusal.WRONG_TYPE, f"clientDataJSON.type is {client['type']!r}"
        )
    if client["challenge"] != bytes_to_base64url(challenge):
        raise AssertionRefused(
            PasskeyRefusal.CHALLENGE, "clientDataJSON.challenge is not this statement's digest"
        )
    if client["origin"] not in credential.origins:
        raise AssertionRefused(
            PasskeyRefusal.ORIGIN,
            f"clientDataJSON.origin {client['origin']!r} is not one of {list(credential.origins)}",
        )
    if client.get("crossOrigin") is True:
        raise AssertionRefused(PasskeyRefusal.CROSS_ORIGIN, "clientDataJSON.crossOrigin is true")
    try:
        auth = parse_authenticator_data(assertion.authenticator_data)
    except Exception as exc:  # py_webauthn raises several types on short or bad data
        raise AssertionRefused(PasskeyRefusal.MALFORMED, f"authenticatorData: {exc}") from None
    if auth.rp_id_hash != hashlib.sha256(credential.rp_id.encode()).digest():
        raise AssertionRefused(
            PasskeyRefusal.RP_ID,
            f"authenticatorData.rpIdHash is not SHA-256 of {credential.rp_id!r}",
        )
    if not auth.flags.up:
        raise AssertionRefused(PasskeyRefusal.USER_PRESENCE, "authenticatorData flag UP is clear")
    if not auth.flags.uv:
        raise AssertionRefused(
            PasskeyRefusal.USER_VERIFICATION, "authenticatorData flag UV is clear"
        )
    stale = (auth.sign_count > 0 or last_sign_count > 0) and auth.sign_count <= last_sign_count
    try:
        verified = verify_authentication_response(
            credential={
                "id": bytes_to_base64url(assertion.credential_id),
                "rawId": bytes_to_base64url(assertion.credential_id),
                "type": "public-key",
                "response": {
                    "authenticatorData": bytes_to_base64url(assertion.authenticator_data),
                    "clientDataJSON": bytes_to_base64url(assertion.client_data_json),
                    "signature": bytes_to_base64url(assertion.signature),
                },
            },
            expected_challenge=challenge,
            expected_rp_id=credential.rp_id,
            expected_origin=list(credential.origins),
            credential_public_key=credential.public_key,
            # the counter is judged below, after the signature: a forged assertion is a bad
            # signature whatever counter it claims
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    except InvalidAuthenticationResponse as exc:
        raise AssertionRefused(PasskeyRefusal.BAD_SIGNATURE, str(exc)) from None
    except Exception as exc:  # a COSE key or signature the library cannot parse
        raise AssertionRefused(
            PasskeyRefusal.BAD_SIGNATURE, f"{type(exc).__name__}: {exc}"
        ) from None
    if stale:
        raise AssertionRefused(
            PasskeyRefusal.STALE_COUNTER,
            f"signature counter {auth.sign_count} does not exceed {last_sign_count}"
            " (a cloned authenticator, or a replayed assertion)",
        )
    return PasskeyVerified(assertion.credential_id, verified.new_sign_count)


def encode_assertion(a: PasskeyAssertion) -> bytes:
    return cbor2.dumps(a.to_cbor(), canonical=True)
