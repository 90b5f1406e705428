"""A software WebAuthn authenticator for tests (not product code): an EC P-256 key made with
pyca/cryptography, authenticatorData built per WebAuthn L3 section 6.1, clientDataJSON per
section 5.8.1, and the assertion signature over ``authenticatorData ||
SHA-256(clientDataJSON)`` (section 6.3.3 step 11), ES256 (DER ECDSA, RFC 9053 section 2.1).

Every knob an attacker (or a broken authenticator) could turn is a keyword: the origin, the
RP id, the flags, the counter, the challenge, ``type``, ``crossOrigin``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from custody import approvals as ap
from custody import passkeys as pk

ORIGIN = "http://localhost:8000"
RP_ID = "localhost"
UP, UV = 0x01, 0x04


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cose_es256(public: ec.EllipticCurvePublicKey) -> bytes:
    """RFC 9052 section 7 / RFC 9053 section 7.1.1: kty EC2 (2), alg ES256 (-7), crv P-256."""
    n = public.public_numbers()
    return cbor2.dumps(
        {1: 2, 3: -7, -1: 1, -2: n.x.to_bytes(32, "big"), -3: n.y.to_bytes(32, "big")}
    )


@dataclass
class SoftAuthenticator:
    rp_id: str = RP_ID
    origins: tuple[str, ...] = (ORIGIN,)
    counter: int = 0  # 0 and use_counter False: an authenticator that keeps no counter
    use_counter: bool = True
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def credential(self) -> pk.PasskeyCredential:
        return pk.PasskeyCredential(
            self.credential_id, cose_es256(self.key.public_key()), self.rp_id, self.origins
        )

    def get_assertion(
        self,
        challenge: bytes,
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        flags: int = UP | UV,
        counter: int | None = None,
        type_: str = "webauthn.get",
        cross_origin: bool = False,
    ) -> pk.PasskeyAssertion:
        if counter is None:
            if self.use_counter:
                self.counter += 1
            counter = self.counter
        client = json.dumps(
            {
                "type": type_,
                "challenge": b64url(challenge),
                "origin": origin or self.origins[0],
                "crossOrigin": cross_origin,
            },
            separators=(",", ":"),
        ).encode()
        auth = (
            hashlib.sha256((rp_id or self.rp_id).encode()).digest()
            + bytes([flags])
            + counter.to_bytes(4, "big")
        )
        sig = self.key.sign(auth + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256()))
        return pk.PasskeyAssertion(self.credential_id, auth, client, sig)

    def approve(self, statement: ap.ApprovalStatement, **knobs) -> ap.PasskeyApproval:
        challenge = pk.challenge_for(statement.signed_bytes())
        return ap.PasskeyApproval(statement, self.get_assertion(challenge, **knobs))


# -- the browser's JSON forms (PublicKeyCredential.toJSON(), WebAuthn L3 section 5.1.8) ----


def _client_json(type_: str, challenge_b64: str, origin: str) -> bytes:
    return json.dumps(
        {"type": type_, "challenge": challenge_b64, "origin": origin, "crossOrigin": False},
        separators=(",", ":"),
    ).encode()


def registration_json(auth: SoftAuthenticator, options: dict, origin: str) -> dict:
    """A ``none``-attestation registration response (section 6.5.4 attested credential
    data; section 8.7 "none" format) for ``options`` (the server's creation options)."""
    client = _client_json("webauthn.create", options["challenge"], origin)
    cose = cose_es256(auth.key.public_key())
    data = (
        hashlib.sha256(options["rp"]["id"].encode()).digest()
        + bytes([UP | UV | 0x40])  # AT: attested credential data included
        + auth.counter.to_bytes(4, "big")
        + bytes(16)  # AAGUID
        + len(auth.credential_id).to_bytes(2, "big")
        + auth.credential_id
        + cose
    )
    att = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": data})
    return {
        "id": b64url(auth.credential_id),
        "rawId": b64url(auth.credential_id),
        "type": "public-key",
        "response": {"clientDataJSON": b64url(client), "attestationObject": b64url(att)},
        "clientExtensionResults": {},
    }


def assertion_json(auth: SoftAuthenticator, options: dict, origin: str, **knobs) -> dict:
    """An assertion response for ``options`` (the server's request options)."""
    pad = "=" * (-len(options["challenge"]) % 4)
    challenge = base64.urlsafe_b64decode(options["challenge"] + pad)
    a = auth.get_assertion(challenge, origin=origin, **knobs)
    return {
        "id": b64url(a.credential_id),
        "rawId": b64url(a.credential_id),
        "type": "public-key",
        "response": {
            "authenticatorData": b64url(a.authenticator_data),
            "clientDataJSON": b64url(a.client_data_json),
            "signature": b64url(a.signature),
        },
        "clientExtensionResults": {},
    }
