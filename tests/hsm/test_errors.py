"""Typed, secret-free errors: wrong PIN, missing token, missing module, config conflict."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import hsm.config
from hsm import (
    Hsm,
    HsmConfig,
    HsmConfigConflict,
    HsmError,
    HsmModuleMissing,
    HsmTokenMissing,
    HsmUnavailable,
    HsmWrongPin,
    SealKeyMissing,
    UnsealError,
    provision_dev_token,
    resolve_module_path,
    seal_aad,
    softhsm_env,
)
from tests.hsm.conftest import SO_PIN, USER_PIN, unique_label

WRONG_PIN = "wrong-pin-98765"  # noqa: S105 - the PIN that must never show up anywhere


def _assert_secret_free(exc: BaseException, *secrets: str) -> None:
    for text in (str(exc), repr(exc), *(str(a) for a in exc.args)):
        for secret in secrets:
            assert secret not in text


def test_exit_codes_and_codes() -> None:
    expected = {
        HsmModuleMissing: (20, "hsm.module_missing"),
        HsmTokenMissing: (21, "hsm.token_missing"),
        HsmWrongPin: (22, "hsm.wrong_pin"),
        HsmUnavailable: (23, "hsm.unavailable"),
        HsmConfigConflict: (25, "hsm.conf_conflict"),
        SealKeyMissing: (26, "hsm.seal_key_missing"),
    }
    for cls, (exit_code, code) in expected.items():
        err = cls("message")
        assert isinstance(err, HsmError)
        assert (err.exit_code, err.code) == (exit_code, code)
        assert err.to_dict() == {"code": code, "exit_code": exit_code, "message": "message"}
        assert str(err) == f"{code}: message"
    unseal = UnsealError("bad_header", "m")
    assert (unseal.exit_code, unseal.code) == (24, "hsm.unseal.bad_header")
    assert unseal.reason == "bad_header"


def test_config_repr_hides_pin() -> None:
    config = HsmConfig("node-1", WRONG_PIN)
    assert WRONG_PIN not in repr(config)
    assert WRONG_PIN not in str(config)
    assert "node-1" in repr(config)


def test_wrong_pin(hsm_config: HsmConfig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hsm")
    bad = HsmConfig(hsm_config.token_label, WRONG_PIN, softhsm_conf=hsm_config.softhsm_conf)
    with pytest.raises(HsmWrongPin) as info:
        Hsm.open(bad)
    assert info.value.exit_code == 22
    assert info.value.code == "hsm.wrong_pin"
    assert hsm_config.token_label in info.value.message
    _assert_secret_free(info.value, WRONG_PIN, USER_PIN)
    assert WRONG_PIN not in caplog.text and USER_PIN not in caplog.text
    # the right PIN still works afterwards
    with Hsm.open(hsm_config) as ok:
        assert ok.seal_key_versions() == []


@pytest.mark.parametrize("pin", ["", "12", "x" * 300])
def test_odd_pins_are_wrong_pins(hsm_config: HsmConfig, pin: str) -> None:
    with pytest.raises(HsmWrongPin):
        Hsm.open(HsmConfig(hsm_config.token_label, pin))


def test_wrong_pin_while_token_already_logged_in(hsm: Hsm, hsm_config: HsmConfig) -> None:
    """PKCS#11 skips the PIN check for a second C_Login; the package must not."""
    bad = HsmConfig(hsm_config.token_label, WRONG_PIN)
    with pytest.raises(HsmWrongPin) as info:
        Hsm.open(bad)
    _assert_secret_free(info.value, WRONG_PIN, USER_PIN)
    with Hsm.open(hsm_config) as second:  # the right PIN shares the login
        blob = second.seal(b"x", b"aad")
    assert hsm.unseal(blob, b"aad") == b"x"  # closing the second did not log out the first


def test_missing_token_label(hsm_config: HsmConfig) -> None:
    missing = HsmConfig("no-such-token", USER_PIN, softhsm_conf=hsm_config.softhsm_conf)
    with pytest.raises(HsmTokenMissing) as info:
        Hsm.open(missing)
    assert info.value.exit_code == 21
    assert info.value.code == "hsm.token_missing"
    assert "'no-such-token'" in info.value.message
    assert hsm_config.token_label in info.value.message  # lists what is there
    _assert_secret_free(info.value, USER_PIN)


def test_overlong_label_is_missing_token(hsm_config: HsmConfig) -> None:
    with pytest.raises(HsmTokenMissing):
        Hsm.open(HsmConfig("x" * 40, USER_PIN))


def test_missing_module_explicit_path(tmp_path: Path) -> None:
    path = str(tmp_path / "libnothere.so")
    with pytest.raises(HsmModuleMissing) as info:
        Hsm.open(HsmConfig("node-1", WRONG_PIN, module_path=path))
    assert info.value.exit_code == 20
    assert info.value.code == "hsm.module_missing"
    assert path in info.value.message
    _assert_secret_free(info.value, WRONG_PIN)


def test_missing_module_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "libgone.so")
    monkeypatch.setenv("CUSTODY_PKCS11_MODULE", path)
    with pytest.raises(HsmModuleMissing) as info:
        Hsm.open(HsmConfig("node-1", WRONG_PIN))
    assert "CUSTODY_PKCS11_MODULE" in info.value.message and path in info.value.message


def test_module_not_installed_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUSTODY_PKCS11_MODULE", raising=False)
    monkeypatch.setattr(hsm.config, "STANDARD_MODULE_PATHS", ("/nonexistent/libsofthsm2.so",))
    with pytest.raises(HsmModuleMissing) as info:
        resolve_module_path(HsmConfig("node-1", WRONG_PIN))
    assert "apt-get install softhsm2" in info.value.message
    assert "/nonexistent/libsofthsm2.so" in info.value.message


def test_module_file_that_is_not_a_pkcs11_library(tmp_path: Path) -> None:
    fake = tmp_path / "libfake.so"
    fake.write_bytes(b"\x7fELF this is not a shared object")
    with pytest.raises(HsmModuleMissing) as info:
        Hsm.open(HsmConfig("node-1", WRONG_PIN, module_path=str(fake)))
    assert info.value.code == "hsm.module_invalid"
    assert str(fake) in info.value.message


def test_module_env_var_is_used(hsm_config: HsmConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hsm_config.module_path is not None
    monkeypatch.setenv("CUSTODY_PKCS11_MODULE", hsm_config.module_path)
    assert resolve_module_path(HsmConfig("x", "y")) == hsm_config.module_path
    with Hsm.open(HsmConfig(hsm_config.token_label, USER_PIN)) as opened:
        assert opened.token_label == hsm_config.token_label


def test_second_config_in_one_process_is_a_conflict(hsm_config: HsmConfig, tmp_path: Path) -> None:
    other = tmp_path / "other.conf"
    other.write_text("directories.tokendir = /nonexistent\n")
    with pytest.raises(HsmConfigConflict) as info:
        Hsm.open(HsmConfig(hsm_config.token_label, USER_PIN, softhsm_conf=str(other)))
    assert info.value.exit_code == 25
    assert str(other) in info.value.message
    assert "provision_dev_token" in info.value.message
    # the bound config is untouched
    with Hsm.open(hsm_config):
        pass


def test_closed_hsm(hsm_config: HsmConfig) -> None:
    opened = Hsm.open(hsm_config)
    opened.close()
    opened.close()  # idempotent
    assert opened.closed and "closed" in repr(opened)
    with pytest.raises(HsmError) as info:
        opened.seal(b"x", b"aad")
    assert info.value.code == "hsm.closed"


def test_hsm_cannot_be_constructed_directly() -> None:
    with pytest.raises(TypeError):
        Hsm()


def test_repr_and_env_hide_pin(hsm: Hsm, hsm_config: HsmConfig) -> None:
    assert USER_PIN not in repr(hsm)
    env = softhsm_env(hsm_config)
    assert env == {"SOFTHSM2_CONF": hsm_config.softhsm_conf}
    assert USER_PIN not in str(env)
    assert softhsm_env(HsmConfig("x", USER_PIN)) == {}


def test_provision_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        provision_dev_token(tmp_path, "", USER_PIN, SO_PIN)
    with pytest.raises(ValueError):
        provision_dev_token(tmp_path, "x" * 33, USER_PIN, SO_PIN)
    with pytest.raises(ValueError):
        provision_dev_token(tmp_path, " padded", USER_PIN, SO_PIN)
    with pytest.raises(ValueError):
        provision_dev_token(tmp_path, unique_label(), "123", SO_PIN)
    with pytest.raises(ValueError):
        provision_dev_token(tmp_path, unique_label(), USER_PIN, "x" * 256)


def test_seal_aad_validation() -> None:
    with pytest.raises(TypeError):
        seal_aad("k", "n", True)
    with pytest.raises(TypeError):
        seal_aad(b"k", "n", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        seal_aad("", "n", 1)
    with pytest.raises(ValueError):
        seal_aad("k", "n", -1)
    with pytest.raises(ValueError):
        seal_aad("k", "n", 2**64)
    with pytest.raises(ValueError):
        seal_aad("k\ud800", "n", 1)
    with pytest.raises(ValueError):
        seal_aad("k", "n", 1, purpose="")
