"""Ed25519 signing keys on the token (the coordinator's identity): made, used, never read out."""

from __future__ import annotations

import nacl.exceptions
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from hsm import Hsm, HsmConfig, HsmError, _backend
from hsm.session import signing_key_label


def test_signature_made_in_the_token_verifies_with_two_independent_libraries(hsm: Hsm) -> None:
    public = hsm.create_signing_key("coordinator")
    assert len(public) == 32 and hsm.signing_public_key("coordinator") == public
    message = b"tpwc-coord-v1\nPOST\n/v1/frost/sign\n1700000000\n" + b"ab" * 32
    signature = hsm.sign_ed25519("coordinator", message)
    nacl.signing.VerifyKey(public).verify(message, signature)
    Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.signing.VerifyKey(public).verify(message + b"x", signature)


def test_private_key_is_sensitive_and_not_extractable(hsm: Hsm) -> None:
    hsm.create_signing_key("coordinator")
    with _backend.LOCK:
        (private,) = hsm._session.get_objects(
            {
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.LABEL: signing_key_label("coordinator"),
            }
        )
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        with pytest.raises(p11e.AttributeSensitive):
            private[Attribute.VALUE]


def test_one_key_per_name_and_a_missing_key_is_named(hsm: Hsm) -> None:
    hsm.create_signing_key("coordinator")
    with pytest.raises(HsmError) as err:
        hsm.create_signing_key("coordinator")
    assert err.value.code == "hsm.signing_key_exists"
    with pytest.raises(HsmError) as err:
        hsm.sign_ed25519("other", b"m")
    assert err.value.code == "hsm.signing_key_missing"
    assert "custody-ed25519-other" in err.value.message
    with pytest.raises(ValueError, match="signing key name"):
        hsm.sign_ed25519("Bad Name!", b"m")


def test_key_persists_across_sessions_and_survives_a_lost_session(
    hsm_config: HsmConfig, hsm: Hsm
) -> None:
    public = hsm.create_signing_key("coordinator")
    hsm.sign_ed25519("coordinator", b"warm the handle cache")
    with _backend.LOCK:
        hsm._session.close()  # the cached handle's session is gone
    nacl.signing.VerifyKey(public).verify(b"m", hsm.sign_ed25519("coordinator", b"m"))
    hsm.close()
    with Hsm.open(hsm_config) as again:
        assert again.signing_public_key("coordinator") == public
        nacl.signing.VerifyKey(public).verify(b"n", again.sign_ed25519("coordinator", b"n"))
