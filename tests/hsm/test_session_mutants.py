"""hsm.session: the seal key's template, version bounds, duplicate labels, the Ed25519 point
forms and the signing-key names (issue 16, mutation testing; docs/MUTATION.md). Real
SoftHSM2 tokens (tests/hsm/conftest.py), never a mocked HSM; first in ``mutation.toml``'s
selection for ``hsm/session.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from hsm import Hsm, HsmConfig, _backend, seal_aad
from hsm.errors import HsmError, HsmUnavailable, SealKeyMissing
from hsm.session import _ed25519_point, seal_key_label, signing_key_label
from tests.hsm.conftest import token_subdir

AAD = seal_aad("key-mut", "node-1", 1)


@pytest.fixture
def raw_session(hsm: Hsm, hsm_config: HsmConfig) -> Iterator[Any]:
    """A second, raw python-pkcs11 session on the token (logged in through ``hsm``)."""
    assert hsm_config.module_path is not None
    library = _backend.get_library(hsm_config.module_path, hsm_config.softhsm_conf)
    session = _backend.find_token(library, hsm_config.token_label).open(rw=True)
    try:
        yield session
    finally:
        session.close()


def test_every_attribute_of_the_seal_key_template(hsm: Hsm, raw_session: Any) -> None:
    """PKCS#11 v2.40 base 4.9: encrypt/decrypt only, never modified, copied, wrapped."""
    assert hsm.create_seal_key() == 1
    key = raw_session.get_key(label=seal_key_label(1))
    assert key[Attribute.MODIFIABLE] is False
    assert key[Attribute.COPYABLE] is False
    assert key[Attribute.ENCRYPT] is True and key[Attribute.DECRYPT] is True
    for name in (Attribute.SIGN, Attribute.VERIFY, Attribute.DERIVE, Attribute.WRAP):
        assert key[name] is False, name
    assert key[Attribute.LABEL] == "custody-seal-v1"
    assert hsm.create_seal_key() == 2
    assert raw_session.get_key(label=seal_key_label(2))[Attribute.ID] == b"\x00\x00\x00\x02"


def test_every_attribute_of_the_signing_key_pair(hsm: Hsm, raw_session: Any) -> None:
    """PKCS#11 v3.0 section 2.3.5 key pair, as ``create_signing_key`` declares it, read
    back from the token (s23-mutn): the public key a token object usable for
    verification; the private key a private, sensitive, never-extractable token object for
    signing only; the returned public key is the token's own point."""
    pk = hsm.create_signing_key("attrs")
    label = signing_key_label("attrs")
    public = raw_session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
    private = raw_session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
    assert public[Attribute.VERIFY] is True and public[Attribute.TOKEN] is True
    assert _ed25519_point(public[Attribute.EC_POINT]) == pk
    for name in (Attribute.TOKEN, Attribute.PRIVATE, Attribute.SENSITIVE, Attribute.SIGN):
        assert private[name] is True, name
    assert private[Attribute.EXTRACTABLE] is False
    assert private[Attribute.NEVER_EXTRACTABLE] is True
    assert private[Attribute.ALWAYS_SENSITIVE] is True


def test_two_keys_under_one_version_label_are_refused_not_guessed(
    hsm: Hsm, raw_session: Any
) -> None:
    for _ in range(2):
        raw_session.generate_key(KeyType.AES, 256, label=seal_key_label(1), store=True)
    assert hsm.seal_key_versions() == [1]
    with pytest.raises(HsmError) as e:
        hsm.seal(b"secret", AAD, version=1)
    assert e.value.code == "hsm.seal_key_duplicate"
    assert "2 keys labelled 'custody-seal-v1'" in str(e.value)


def test_versions_above_the_largest_are_ignored(hsm: Hsm, raw_session: Any) -> None:
    raw_session.generate_key(KeyType.AES, 256, label="custody-seal-v4294967296", store=True)
    assert hsm.seal_key_versions() == []
    raw_session.generate_key(KeyType.AES, 256, label="custody-seal-v4294967295", store=True)
    assert hsm.seal_key_versions() == [4294967295]
    with pytest.raises(HsmError) as e:  # the next version would pass 2^32 - 1
        hsm.create_seal_key()
    assert e.value.code == "hsm.seal_key_exhausted"


def test_seal_versions_outside_1_to_2_32_minus_1_are_refused_by_range(hsm: Hsm) -> None:
    for bad in (0, -1, 2**32):
        with pytest.raises(SealKeyMissing, match=r"\(versions are 1\.\.2\^32-1\)"):
            hsm.seal(b"x", AAD, version=bad)
    for wrong in (True, 1.0, "1"):
        with pytest.raises(TypeError, match="seal key version must be int"):
            hsm.seal(b"x", AAD, version=wrong)  # type: ignore[arg-type]
    with pytest.raises(SealKeyMissing) as e:
        hsm.seal(b"x", AAD, version=2**32 - 1)  # in range, not on the token
    assert "versions are" not in str(e.value)
    blob = hsm.seal(b"x", AAD)
    assert hsm.unseal(blob, AAD) == b"x"


def test_a_high_water_record_is_kept_and_versions_only_grow(hsm: Hsm, raw_session: Any) -> None:
    assert [hsm.create_seal_key() for _ in range(3)] == [1, 2, 3]
    records = list(
        raw_session.get_objects(
            {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: "custody-seal-high-water"}
        )
    )
    assert len(records) == 1  # the old records are destroyed
    assert records[0][Attribute.VALUE] == (3).to_bytes(4, "big")
    assert records[0][Attribute.PRIVATE] is True and records[0][Attribute.TOKEN] is True
    hsm.destroy_seal_key(3)
    hsm.destroy_seal_key(2)
    assert hsm.create_seal_key() == 4


def test_the_ed25519_point_forms_of_cka_ec_point() -> None:
    point = bytes(range(32))
    assert _ed25519_point(b"\x04\x20" + point) == point
    assert _ed25519_point(point) == point
    for bad in (
        b"\x04\x21" + point,
        b"\x03\x20" + point,
        b"\x04\x20" + point[:31],
        b"\x04\x20" + point + b"\x00",
        point[:31],
        b"",
    ):
        with pytest.raises(HsmError, match=f"unexpected CKA_EC_POINT of {len(bad)} bytes"):
            _ed25519_point(bad)


def test_signing_key_names_are_1_to_32_of_the_alphabet() -> None:
    assert signing_key_label("a" * 32) == "custody-ed25519-" + "a" * 32
    assert signing_key_label("coordinator-2") == "custody-ed25519-coordinator-2"
    for bad in ("", "a" * 33, "A", "a_b", "a\n", "a b"):
        with pytest.raises(ValueError, match="1-32 characters"):
            signing_key_label(bad)


def test_random_lengths_and_repr(hsm: Hsm, hsm_config: HsmConfig) -> None:
    assert len(hsm.random(1)) == 1 and len(hsm.random(7)) == 7
    with pytest.raises(TypeError):
        hsm.random(True)
    assert repr(hsm) == f"<Hsm token={hsm_config.token_label!r} open>"
    hsm.close()
    assert hsm.closed and repr(hsm) == f"<Hsm token={hsm_config.token_label!r} closed>"


def test_a_missing_signing_key_is_named_as_none(hsm: Hsm, hsm_config: HsmConfig) -> None:
    with pytest.raises(HsmError) as e:
        hsm.signing_public_key("absent")
    assert e.value.code == "hsm.signing_key_missing"
    assert str(e.value).endswith(
        f"token {hsm_config.token_label!r} has no signing key labelled 'custody-ed25519-absent'"
    )


def test_the_token_label_is_a_property(hsm: Hsm, hsm_config: HsmConfig) -> None:
    assert hsm.token_label == hsm_config.token_label
    assert hsm.closed is False


# -- s22-mutc: the survivors of the partial full run (docs/MUTATION.md) ----------------------


def test_the_last_version_2_32_minus_1_is_created_sealed_under_and_read(
    hsm: Hsm, hsm_config: HsmConfig, raw_session: Any
) -> None:
    """A high-water record of 2^32 - 2 makes the next key 2^32 - 1 itself (``>`` is the
    bound, not ``>=``); a blob sealed under it reads back (the lookup's range includes
    2^32 - 1); the version after is exhausted."""
    last = 2**32 - 1
    raw_session.create_object(
        {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.LABEL: "custody-seal-high-water",
            Attribute.VALUE: (last - 1).to_bytes(4, "big"),
        }
    )
    assert hsm.create_seal_key() == last
    assert hsm.seal_key_versions() == [last]
    blob = hsm.seal(b"the last", AAD, version=last)
    assert hsm.unseal(blob, AAD) == b"the last"
    with Hsm.open(hsm_config) as fresh:  # no cached handle: found by label, in range
        assert fresh.unseal(blob, AAD) == b"the last"
        assert fresh.unseal(fresh.seal(b"again", AAD, version=last), AAD) == b"again"
    with pytest.raises(HsmError) as e:
        hsm.create_seal_key()
    assert e.value.code == "hsm.seal_key_exhausted"


def test_closing_the_last_holder_forgets_the_token_login(hsm: Hsm, hsm_config: HsmConfig) -> None:
    """``_disconnect`` drops this Hsm from the token's login holders: once the last holder
    closes, the process no longer records a login (nor the PIN it was made with)."""
    assert hsm_config.module_path is not None
    library = _backend.get_library(hsm_config.module_path, hsm_config.softhsm_conf)
    serial = bytes(_backend.find_token(library, hsm_config.token_label).serial)
    assert id(hsm) in library.logins[serial].holders
    hsm.close()
    assert serial not in library.logins


def test_a_failed_reconnect_is_tried_once_more_then_fails_closed(
    hsm: Hsm, hsm_config: HsmConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """A real device fault, in process: the token's directory moved out of SoftHSM2's
    token directory and the PKCS#11 session closed under the Hsm (``C_CloseSession``).
    A call with no session reconnects on attempt 1 and, that failing, ONCE more on
    attempt 2 (each reconnect re-initialises the module once: two
    ``hsm.library_reinitialized`` lines), then fails closed with ``hsm.unavailable``;
    the directory back, the next call recovers on its own."""
    hsm.create_seal_key()
    blob = hsm.seal(b"kept", AAD)
    sub = token_subdir(hsm_config)
    away = sub.parent.parent / f"{sub.name}.away"  # outside the scanned token directory
    sub.rename(away)
    try:
        assert hsm._session is not None
        hsm._session.close()
        caplog.set_level(logging.WARNING, logger="hsm")
        with pytest.raises(HsmUnavailable, match=r"reconnect failed: hsm\.token_missing"):
            hsm.unseal(blob, AAD)  # the dead session, then one failed reconnect
        assert hsm._session is None
        lost = [r.getMessage() for r in caplog.records if "hsm.session_lost" in r.getMessage()]
        assert len(lost) == 1 and lost[0].endswith("reason=SessionHandleInvalid attempt=1"), lost
        caplog.clear()
        caplog.set_level(logging.WARNING, logger="hsm")
        with pytest.raises(HsmUnavailable, match=r"reconnect failed: hsm\.token_missing"):
            hsm.unseal(blob, AAD)  # no session: reconnect, and reconnect again
        lines = [r.getMessage().split(" ")[0] for r in caplog.records]
        assert lines == [
            "hsm.library_reinitialized",
            "hsm.library_reinitialized",
            "hsm.unavailable",
        ], lines
    finally:
        away.rename(sub)
    assert hsm.unseal(blob, AAD) == b"kept"


def test_a_planted_key_labelled_v0_is_never_used(hsm: Hsm, raw_session: Any) -> None:
    """Version 0 is out of range even when a key labelled ``custody-seal-v0`` is on the
    token (planted by anyone holding the PIN): a blob forged under it with a version-0
    header (which the header parser accepts) is ``unknown_key_version``, never its
    attacker-chosen plaintext; it cannot be sealed under nor destroyed as a version."""
    from pkcs11 import Mechanism
    from pkcs11.mechanisms import GCMParams

    from hsm.blob import gcm_aad
    from hsm.errors import UnsealError

    planted = raw_session.generate_key(KeyType.AES, 256, label=seal_key_label(0), store=True)
    nonce = bytes(12)
    body = planted.encrypt(
        b"attacker's share",
        mechanism=Mechanism.AES_GCM,
        mechanism_param=GCMParams(nonce, gcm_aad(0, AAD), 128),
    )
    forged = b"TPS1" + bytes(4) + nonce + bytes(body)
    with pytest.raises(UnsealError) as e:
        hsm.unseal(forged, AAD)
    assert e.value.code == "hsm.unseal.unknown_key_version", e.value
    with pytest.raises(SealKeyMissing, match=r"\(versions are 1\.\.2\^32-1\)"):
        hsm.seal(b"x", AAD, version=0)
    with pytest.raises(SealKeyMissing, match="seal key version 0 is not on token"):
        hsm.destroy_seal_key(0)
    assert raw_session.get_key(label=seal_key_label(0)) is not None  # not destroyed


def test_a_stale_key_handle_is_resolved_again_by_label(hsm: Hsm, raw_session: Any) -> None:
    """The cached handle of v1 is destroyed under the Hsm (another session) and a new key
    labelled v1 made: the next seal meets the stale handle, looks the label up once more
    and seals under the new key (which the raw session can decrypt: AES-GCM, same key)."""
    assert hsm.create_seal_key() == 1
    old_blob = hsm.seal(b"first", AAD, version=1)  # caches v1's handle
    new = raw_session.generate_key(KeyType.AES, 256, label="custody-seal-new", store=True)
    raw_session.get_key(label=seal_key_label(1)).destroy()
    assert new[Attribute.LABEL] == "custody-seal-new"
    replacement = raw_session.generate_key(
        KeyType.AES, 256, label=seal_key_label(1), store=True, id=(1).to_bytes(4, "big")
    )
    new.destroy()
    blob = hsm.seal(b"second", AAD, version=1)
    assert hsm.unseal(blob, AAD) == b"second"
    with pytest.raises(HsmError):  # the old key is gone: its blob is unreadable
        hsm.unseal(old_blob, AAD)
    assert replacement[Attribute.LABEL] == seal_key_label(1)


def test_no_seal_key_on_a_vanished_token_is_not_taken_for_none(
    hsm: Hsm, hsm_config: HsmConfig
) -> None:
    """A token with no seal key vanishes (its directory moved out of SoftHSM2's token
    directory): the empty object search is probed with C_GetTokenInfo, so the listing
    fails closed instead of answering "no seal keys" (on which a caller would create v1)."""
    sub = token_subdir(hsm_config)
    away = sub.parent.parent / f"{sub.name}.away"
    sub.rename(away)
    try:
        with pytest.raises(HsmUnavailable):
            hsm.seal_key_versions()
    finally:
        away.rename(sub)
    assert hsm.seal_key_versions() == []


def test_a_stale_signing_key_handle_is_resolved_again_by_label(
    hsm: Hsm, hsm_config: HsmConfig, raw_session: Any
) -> None:
    """The cached handle of signing key ``rot`` is destroyed under the Hsm (another
    session) and a new ``rot`` made by a second Hsm: the next signature meets the stale
    handle, finds the key again by label and signs with the new key (pynacl verifies it
    under the new public key, not the old)."""
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    old = hsm.create_signing_key("rot")
    VerifyKey(old).verify(b"one", hsm.sign_ed25519("rot", b"one"))  # caches the handle
    filler = raw_session.generate_key(KeyType.AES, 256, label="custody-filler", store=True)
    for obj in raw_session.get_objects({Attribute.LABEL: signing_key_label("rot")}):
        obj.destroy()
    with Hsm.open(hsm_config) as other:
        new = other.create_signing_key("rot")
    filler.destroy()
    assert new != old
    sig = hsm.sign_ed25519("rot", b"two")
    VerifyKey(new).verify(b"two", sig)
    with pytest.raises(BadSignatureError):
        VerifyKey(old).verify(b"two", sig)
