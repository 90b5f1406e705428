"""Seal keys: non-extractable on the token, versions, rotation, destruction, persistence."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from pkcs11 import Attribute, KeyType, MechanismFlag
from pkcs11 import exceptions as p11e

from hsm import (
    Hsm,
    HsmConfig,
    SealKeyMissing,
    UnsealError,
    _backend,
    seal_aad,
    seal_key_label,
    sealed_key_version,
)
from tests.hsm.conftest import tokendir_of

AAD = seal_aad("key-rot", "node-1", 1)


@pytest.fixture
def raw_session(hsm: Hsm, hsm_config: HsmConfig) -> Iterator[Any]:
    """A second, raw python-pkcs11 session on the token (the attacker's view).

    The token is already logged in by ``hsm`` (login is per application), so this
    session sees private objects without a PIN.
    """
    assert hsm_config.module_path is not None
    library = _backend.get_library(hsm_config.module_path, hsm_config.softhsm_conf)
    session = _backend.find_token(library, hsm_config.token_label).open(rw=True)
    try:
        yield session
    finally:
        session.close()


def test_fresh_token_has_no_seal_key_until_current_is_asked(hsm: Hsm) -> None:
    assert hsm.seal_key_versions() == []
    assert hsm.current_seal_version() == 1
    assert hsm.seal_key_versions() == [1]
    assert hsm.current_seal_version() == 1  # does not create another


def test_seal_key_attributes(hsm: Hsm, raw_session: Any) -> None:
    hsm.current_seal_version()
    key = raw_session.get_key(label=seal_key_label(1))
    assert key.key_type == KeyType.AES
    assert key[Attribute.VALUE_LEN] == 32  # AES-256
    assert key[Attribute.TOKEN] is True
    assert key[Attribute.PRIVATE] is True
    assert key[Attribute.SENSITIVE] is True
    assert key[Attribute.ALWAYS_SENSITIVE] is True
    assert key[Attribute.EXTRACTABLE] is False
    assert key[Attribute.NEVER_EXTRACTABLE] is True
    assert key[Attribute.LOCAL] is True  # generated on the token, never imported
    assert key[Attribute.WRAP] is False
    assert key[Attribute.UNWRAP] is False
    assert key[Attribute.ID] == (1).to_bytes(4, "big")


def test_seal_key_value_cannot_be_read_or_exported(hsm: Hsm, raw_session: Any) -> None:
    hsm.current_seal_version()
    key = raw_session.get_key(label=seal_key_label(1))

    with pytest.raises(p11e.AttributeSensitive):
        key[Attribute.VALUE]  # noqa: B018 - the read itself is the test

    wrapping_key = raw_session.generate_key(
        KeyType.AES, 256, store=False, capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP
    )
    with pytest.raises((p11e.KeyUnextractable, p11e.KeyNotWrappable)):
        wrapping_key.wrap_key(key)

    with pytest.raises(p11e.PKCS11Error):  # CKA_EXTRACTABLE can never go FALSE -> TRUE
        key[Attribute.EXTRACTABLE] = True
    with pytest.raises(p11e.PKCS11Error):
        key[Attribute.SENSITIVE] = False
    with pytest.raises(p11e.PKCS11Error):  # nor via a copy with other attributes
        key.copy({Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False})

    assert key[Attribute.EXTRACTABLE] is False
    assert hsm.unseal(hsm.seal(b"still works", AAD), AAD) == b"still works"


def test_no_plaintext_reaches_the_disk(hsm: Hsm, hsm_config: HsmConfig) -> None:
    secret = os.urandom(32)
    blob = hsm.seal(secret, AAD)
    assert hsm.unseal(blob, AAD) == secret
    for root, _dirs, files in os.walk(tokendir_of(hsm_config)):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                assert secret not in fh.read()


def test_rotation_old_blobs_unseal_until_destroyed(hsm: Hsm) -> None:
    old = hsm.seal(b"sealed under v1", AAD)
    assert sealed_key_version(old) == 1

    assert hsm.create_seal_key() == 2
    assert hsm.current_seal_version() == 2
    assert hsm.seal_key_versions() == [1, 2]

    new = hsm.seal(b"sealed under v2", AAD)
    assert sealed_key_version(new) == 2
    assert hsm.unseal(old, AAD) == b"sealed under v1"  # still readable

    pinned = hsm.seal(b"pinned to v1", AAD, version=1)
    assert sealed_key_version(pinned) == 1

    resealed = hsm.reseal(old, AAD)
    assert sealed_key_version(resealed) == 2
    assert hsm.unseal(resealed, AAD) == b"sealed under v1"

    hsm.destroy_seal_key(1)
    assert hsm.seal_key_versions() == [2]
    for blob in (old, pinned):
        with pytest.raises(UnsealError) as info:
            hsm.unseal(blob, AAD)
        assert info.value.reason == "unknown_key_version"
        assert info.value.code == "hsm.unseal.unknown_key_version"
        assert "version 1" in info.value.message
    assert hsm.unseal(new, AAD) == b"sealed under v2"
    assert hsm.unseal(resealed, AAD) == b"sealed under v1"


def test_versions_are_never_reused(hsm: Hsm) -> None:
    assert hsm.create_seal_key() == 1
    assert hsm.create_seal_key() == 2
    assert hsm.create_seal_key() == 3
    hsm.destroy_seal_key(2)
    assert hsm.seal_key_versions() == [1, 3]
    assert hsm.create_seal_key() == 4
    blob_v4 = hsm.seal(b"x", AAD)
    hsm.destroy_seal_key(4)
    hsm.destroy_seal_key(3)
    assert hsm.current_seal_version() == 1
    # A destroyed version number is never reused, so its blobs stay "unknown version"
    # (not a misleading tag failure under a new key that took the same number).
    assert hsm.create_seal_key() == 5
    hsm.destroy_seal_key(1)
    hsm.destroy_seal_key(5)
    assert hsm.seal_key_versions() == []
    assert hsm.current_seal_version() == 6
    with pytest.raises(UnsealError) as info:
        hsm.unseal(blob_v4, AAD)
    assert info.value.reason == "unknown_key_version"


def test_seal_and_destroy_with_missing_version(hsm: Hsm) -> None:
    hsm.current_seal_version()
    for version in (0, 2, 99, 2**32):
        with pytest.raises(SealKeyMissing) as info:
            hsm.seal(b"x", AAD, version=version)
        assert info.value.exit_code == 26
        assert f"version {version}" in info.value.message
    with pytest.raises(SealKeyMissing):
        hsm.destroy_seal_key(7)
    hsm.destroy_seal_key(1)
    with pytest.raises(SealKeyMissing):
        hsm.destroy_seal_key(1)
    with pytest.raises(TypeError):
        hsm.seal(b"x", AAD, version="1")  # type: ignore[arg-type]


def test_blob_of_never_created_version(hsm: Hsm) -> None:
    blob = bytearray(hsm.seal(b"x", AAD))
    blob[4:8] = (77).to_bytes(4, "big")
    with pytest.raises(UnsealError) as info:
        hsm.unseal(bytes(blob), AAD)
    assert info.value.reason == "unknown_key_version"


def test_keys_persist_across_sessions(hsm_config: HsmConfig) -> None:
    with Hsm.open(hsm_config) as first:
        first.create_seal_key()
        first.create_seal_key()
        blob = first.seal(b"persisted", AAD)
    with Hsm.open(hsm_config) as second:
        assert second.seal_key_versions() == [1, 2]
        assert second.unseal(blob, AAD) == b"persisted"


def test_destroy_by_another_session_is_seen(hsm_config: HsmConfig) -> None:
    """A cached key handle made stale by another session maps to unknown version."""
    with Hsm.open(hsm_config) as a, Hsm.open(hsm_config) as b:
        blob = a.seal(b"x", AAD)
        assert a.unseal(blob, AAD) == b"x"  # handle cached in a
        a.create_seal_key()
        b.destroy_seal_key(1)
        with pytest.raises(UnsealError) as info:
            a.unseal(blob, AAD)
        assert info.value.reason == "unknown_key_version"
        assert a.current_seal_version() == 2  # picks up b's view, never cached


def test_other_aes_keys_on_the_token_are_ignored(hsm: Hsm, raw_session: Any) -> None:
    raw_session.generate_key(KeyType.AES, 256, label="custody-seal-vX", store=True)
    raw_session.generate_key(KeyType.AES, 256, label="custody-seal-v01", store=True)
    raw_session.generate_key(KeyType.AES, 256, label="sqlcipher-wrap", store=True)
    assert hsm.seal_key_versions() == []
    assert hsm.current_seal_version() == 1


def test_random(hsm: Hsm) -> None:
    assert hsm.random(0) == b""
    values = {hsm.random(32) for _ in range(50)}
    assert len(values) == 50 and all(len(v) == 32 for v in values)
    assert len(hsm.random(1000)) == 1000
    with pytest.raises(ValueError):
        hsm.random(-1)
    with pytest.raises(TypeError):
        hsm.random(1.5)  # type: ignore[arg-type]
