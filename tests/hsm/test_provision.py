"""Dev token provisioning, several tokens per process, subprocess hand-off, seal_aad."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm import (
    Hsm,
    HsmConfig,
    HsmWrongPin,
    UnsealError,
    _backend,
    provision_dev_token,
    seal_aad,
    softhsm_env,
)
from hsm.provision import DEV_CONF_MARKER
from tests.hsm.conftest import SO_PIN, USER_PIN, run_py, tokendir_of, unique_label

AAD = seal_aad("key-p", "node-p", 1)


def test_provision_is_idempotent(hsm_config: HsmConfig, tmp_path: Path) -> None:
    again = provision_dev_token(tmp_path, hsm_config.token_label, USER_PIN, SO_PIN)
    assert again == hsm_config
    with Hsm.open(again) as opened:
        labels = _backend.token_labels(opened._library)
    assert labels.count(hsm_config.token_label) == 1


def test_reprovision_with_another_user_pin_is_refused(hsm_config: HsmConfig) -> None:
    with pytest.raises(HsmWrongPin) as info:
        provision_dev_token("/unused", hsm_config.token_label, "another-pin-000", SO_PIN)
    assert "another-pin-000" not in str(info.value)


def test_bound_process_adds_tokens_to_the_bound_directory(
    hsm_process_conf: str, tmp_path: Path
) -> None:
    config = provision_dev_token(tmp_path / "ignored", unique_label(), USER_PIN, SO_PIN)
    assert config.softhsm_conf == hsm_process_conf
    assert not (tmp_path / "ignored").exists()
    assert config.module_path is not None and Path(config.module_path).is_file()


def test_dev_conf_file(hsm_process_conf: str, hsm_config: HsmConfig) -> None:
    conf = Path(hsm_process_conf)
    lines = conf.read_text().splitlines()
    assert lines[0] == DEV_CONF_MARKER
    assert "objectstore.backend = file" in lines
    assert "log.level = ERROR" in lines
    tokendir = tokendir_of(hsm_config)
    assert tokendir == conf.parent / "tokens"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert stat.S_IMODE(tokendir.stat().st_mode) == 0o700
    assert USER_PIN not in conf.read_text() and SO_PIN not in conf.read_text()


def test_many_tokens_in_one_process(tmp_path: Path) -> None:
    configs = [
        provision_dev_token(tmp_path / str(i), unique_label(f"n{i}"), USER_PIN, SO_PIN)
        for i in range(3)
    ]
    assert len({c.softhsm_conf for c in configs}) == 1
    handles = [Hsm.open(c) for c in configs]
    try:
        blobs = [h.seal(f"share of node {i}".encode(), AAD) for i, h in enumerate(handles)]
        for i, handle in enumerate(handles):
            assert handle.seal_key_versions() == [1]
            for j, blob in enumerate(blobs):
                if i == j:
                    assert handle.unseal(blob, AAD) == f"share of node {i}".encode()
                else:  # every token has its own seal key
                    with pytest.raises(UnsealError) as info:
                        handle.unseal(blob, AAD)
                    assert info.value.reason == "authentication_failed"
    finally:
        for handle in handles:
            handle.close()


_UNBOUND_SCRIPT = r"""
import json, os, sys
from pathlib import Path
from hsm import Hsm, HsmConfig, HsmError, UnsealError, provision_dev_token, seal_aad
from hsm import _backend

P, S = "user-pin-1234", "so-pin-5678"
base = Path(sys.stdin.readline().strip())
out = {}

def attempt(name, fn):
    try:
        fn()
        out[name] = "no error"
    except HsmError as exc:
        out[name] = [type(exc).__name__, exc.code]

attempt("init", lambda: Hsm.open(
    HsmConfig("x", P, softhsm_conf=str(base / "missing" / "softhsm2.conf"))))
out["env_after_init_failure"] = os.environ.get("SOFTHSM2_CONF")

(base / "foreign").mkdir(parents=True)
(base / "foreign" / "softhsm2.conf").write_text("directories.tokendir = /x\n")
attempt("foreign", lambda: provision_dev_token(base / "foreign", "f", P, S))

a = provision_dev_token(base / "a", "tok-a", P, S)
b = provision_dev_token(base / "b", "tok-b", P, S)
out["a_conf"], out["b_conf"] = a.softhsm_conf, b.softhsm_conf
out["bound_before_open"] = _backend.bound_library(a.module_path) is not None
ha = Hsm.open(a)
out["env_after_open"] = os.environ.get("SOFTHSM2_CONF")
attempt("b_open", lambda: Hsm.open(b))
c = provision_dev_token(base / "c", "tok-c", P, S)
out["c_conf"] = c.softhsm_conf
out["c_dir_exists"] = (base / "c").exists()
hc = Hsm.open(c)
hc.current_seal_version()  # c gets its own v1
aad = seal_aad("k", "n", 1)
blob = ha.seal(b"a-secret", aad)
try:
    hc.unseal(blob, aad)
    out["cross"] = "no error"
except UnsealError as exc:
    out["cross"] = exc.reason
out["a_roundtrip"] = ha.unseal(blob, aad).decode()
out["labels"] = sorted(_backend.token_labels(ha._library))
print(json.dumps(out))
"""


def test_unbound_process_keeps_tokens_apart_until_it_binds(tmp_path: Path) -> None:
    """A launcher-like process: separate dirs until the first open, then shared."""
    out = run_py(_UNBOUND_SCRIPT, stdin=f"{tmp_path}\n")
    assert out["init"] == ["HsmTokenMissing", "hsm.init_failed"]
    assert out["env_after_init_failure"] is None  # a failed bind leaves no trace
    assert out["foreign"] == ["HsmConfigConflict", "hsm.conf_conflict"]
    assert out["a_conf"] == str(tmp_path / "a" / "softhsm2.conf")
    assert out["b_conf"] == str(tmp_path / "b" / "softhsm2.conf")
    assert out["bound_before_open"] is False  # provisioning ran in a child process
    assert out["env_after_open"] == out["a_conf"]
    assert out["b_open"] == ["HsmConfigConflict", "hsm.conf_conflict"]
    assert out["c_conf"] == out["a_conf"]  # added to the bound directory
    assert out["c_dir_exists"] is False
    assert out["cross"] == "authentication_failed"
    assert out["a_roundtrip"] == "a-secret"
    assert out["labels"] == ["tok-a", "tok-c"]
    assert (tmp_path / "b" / "tokens").is_dir()


_FOREIGN_BOUND_SCRIPT = r"""
import json, os, sys
from pathlib import Path
from hsm import Hsm, HsmConfig, HsmError, provision_dev_token

base = Path(sys.stdin.readline().strip())
(base / "tokens").mkdir(parents=True)
conf = base / "hand-made.conf"
conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\n")
out = {}
try:
    Hsm.open(HsmConfig("none", "user-pin-1234", softhsm_conf=str(conf)))
except HsmError as exc:
    out["open"] = exc.code
try:
    provision_dev_token(base / "dev", "t", "user-pin-1234", "so-pin-5678")
    out["provision"] = "no error"
except HsmError as exc:
    out["provision"] = [type(exc).__name__, exc.code]
print(json.dumps(out))
"""


def test_no_dev_tokens_in_a_foreign_token_directory(tmp_path: Path) -> None:
    out = run_py(_FOREIGN_BOUND_SCRIPT, stdin=f"{tmp_path}\n")
    assert out["open"] == "hsm.token_missing"
    assert out["provision"] == ["HsmConfigConflict", "hsm.conf_conflict"]
    assert list((tmp_path / "tokens").iterdir()) == []


_CHILD_SEALER = r"""
import json, sys
from hsm import Hsm, HsmConfig, seal_aad
request = json.loads(sys.stdin.readline())
with Hsm.open(HsmConfig(request["label"], request["pin"])) as hsm:
    version = hsm.create_seal_key()
    blob = hsm.seal(b"sealed by the child", seal_aad("key-p", "node-p", 1))
print(json.dumps({"version": version, "blob": blob.hex()}))
"""


def test_subprocess_hand_off_with_softhsm_env(hsm: Hsm, hsm_config: HsmConfig) -> None:
    """A node subprocess opens the same token via softhsm_env; the PIN goes over stdin."""
    hsm.current_seal_version()
    request = json.dumps({"label": hsm_config.token_label, "pin": hsm_config.pin})
    out = run_py(_CHILD_SEALER, stdin=request + "\n", env=softhsm_env(hsm_config))
    assert out["version"] == 2
    assert hsm.seal_key_versions() == [1, 2]  # the child's key is visible here
    assert hsm.unseal(bytes.fromhex(out["blob"]), AAD) == b"sealed by the child"


def test_seal_aad_known_answer() -> None:
    def field(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    expected = (
        field(b"tp-custody/seal-aad/v1")
        + field(b"share")
        + field(b"key-1")
        + field("nœud-2".encode())
        + (7).to_bytes(8, "big")
    )
    assert seal_aad("key-1", "nœud-2", 7) == expected
    assert seal_aad("key-1", "nœud-2", 7, purpose="share") == expected


def test_seal_aad_is_not_ambiguous() -> None:
    assert seal_aad("ab", "c", 1) != seal_aad("a", "bc", 1)
    assert seal_aad("k", "n", 1, purpose="share") != seal_aad("k", "n", 1, purpose="sharf")
    assert seal_aad("1", "n", 2) != seal_aad("1", "n", 3)


@settings(max_examples=300, deadline=None)
@given(
    a=st.tuples(
        st.text(min_size=1, max_size=8),
        st.text(min_size=1, max_size=8),
        st.integers(0, 2**64 - 1),
        st.text(min_size=1, max_size=8),
    ),
    b=st.tuples(
        st.text(min_size=1, max_size=8),
        st.text(min_size=1, max_size=8),
        st.integers(0, 2**64 - 1),
        st.text(min_size=1, max_size=8),
    ),
)
def test_seal_aad_is_injective(a: tuple[str, str, int, str], b: tuple[str, str, int, str]) -> None:
    try:
        aad_a, aad_b = seal_aad(*a), seal_aad(*b)
    except ValueError:  # lone surrogates are refused
        return
    assert (aad_a == aad_b) == (a == b)
