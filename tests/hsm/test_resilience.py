"""HSM gone mid-operation: one reconnect + retry, then fail closed with HsmUnavailable.

All done to real SoftHSM2 state behind the object's back: its session closed, the whole
library finalised, the token's directory deleted (in-process, and -- for the whole
token directory -- in a subprocess, because that kills the process's only config).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from hsm import Hsm, HsmConfig, HsmUnavailable, _backend, provision_dev_token, seal_aad
from tests.hsm.conftest import SO_PIN, USER_PIN, run_py, token_subdir, unique_label

AAD = seal_aad("key-r", "node-r", 1)


def _messages(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


def test_session_closed_behind_our_back_is_reopened(
    hsm: Hsm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hsm")
    blob = hsm.seal(b"before", AAD)
    with _backend.LOCK:
        hsm._session.close()  # C_CloseSession: the handle is now invalid
    assert hsm.unseal(blob, AAD) == b"before"
    lost = _messages(caplog, "hsm.session_lost")
    assert len(lost) == 1 and "op=unseal" in lost[0] and "SessionHandleInvalid" in lost[0]
    assert hsm.unseal(hsm.seal(b"after", AAD), AAD) == b"after"
    assert len(_messages(caplog, "hsm.session_lost")) == 1  # no further reconnects
    assert USER_PIN not in caplog.text


def test_library_finalized_behind_our_back(
    hsm: Hsm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """C_Finalize ends every session in the process; each Hsm recovers on its own."""
    caplog.set_level(logging.WARNING, logger="hsm")
    other_config = provision_dev_token(tmp_path / "b", unique_label(), USER_PIN, SO_PIN)
    with Hsm.open(other_config) as other:
        blob, other_blob = hsm.seal(b"a", AAD), other.seal(b"b", AAD)
        bound = hsm._library.conf
        with _backend.LOCK:
            hsm._library.lib.finalize()
            os.environ["SOFTHSM2_CONF"] = "/nonexistent/softhsm2.conf"  # someone meddles
        assert not hsm._library.lib.initialized
        assert hsm.unseal(blob, AAD) == b"a"
        assert other.unseal(other_blob, AAD) == b"b"
        assert os.environ["SOFTHSM2_CONF"] == bound  # re-initialised with the bound config
    assert len(_messages(caplog, "hsm.session_lost")) == 2


def test_token_directory_deleted_fails_closed(
    hsm_config: HsmConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hsm")
    opened = Hsm.open(hsm_config)
    blob = opened.seal(b"share", AAD)
    opened.create_seal_key()
    shutil.rmtree(token_subdir(hsm_config))

    operations: list[tuple[str, Callable[[], object]]] = [
        ("seal", lambda: opened.seal(b"x", AAD)),
        ("unseal", lambda: opened.unseal(blob, AAD)),
        ("seal_key_versions", opened.seal_key_versions),  # must not answer "[]"
        ("current_seal_version", opened.current_seal_version),  # must not create v1
        ("create_seal_key", opened.create_seal_key),
        ("destroy_seal_key", lambda: opened.destroy_seal_key(1)),
        ("seal", lambda: opened.seal(b"x", AAD, version=2)),
    ]
    for name, operation in operations:
        with pytest.raises(HsmUnavailable) as info:
            operation()
        assert info.value.exit_code == 23
        assert info.value.code == "hsm.unavailable"
        assert f"{name} on token {hsm_config.token_label!r}" in info.value.message
        assert "fail closed" in info.value.message
        assert USER_PIN not in str(info.value)

    # Exactly one reconnect per call: the first call saw the live session fail once
    # (one warning), then its reconnect failed; later calls fail at reconnect.
    assert len(_messages(caplog, "hsm.session_lost")) == 1
    assert len(_messages(caplog, "hsm.unavailable")) == len(operations)
    opened.close()

    # Other tokens in the same (shared) token directory are unaffected.
    survivor = provision_dev_token(tmp_path, unique_label(), USER_PIN, SO_PIN)
    with Hsm.open(survivor) as alive:
        assert alive.unseal(alive.seal(b"ok", AAD), AAD) == b"ok"


_WHOLE_DIR_SCRIPT = r"""
import json, shutil, sys
from pathlib import Path
from hsm import Hsm, HsmError, provision_dev_token, seal_aad
from hsm import _backend

base = Path(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.readline().strip())
config = provision_dev_token(base, "only-token", "user-pin-1234", "so-pin-5678")
aad = seal_aad("k", "n", 1)
out = {}
with Hsm.open(config) as hsm:
    blob = hsm.seal(b"share", aad)
    out["before"] = hsm.unseal(blob, aad).decode()
    shutil.rmtree(base)  # the config file and every token are gone
    for name, op in [("seal", lambda: hsm.seal(b"x", aad)),
                     ("unseal", lambda: hsm.unseal(blob, aad)),
                     ("versions", hsm.seal_key_versions)]:
        try:
            op()
            out[name] = "no error"
        except HsmError as exc:
            out[name] = [type(exc).__name__, exc.exit_code, exc.message]
    with _backend.LOCK:
        hsm._library.lib.finalize()  # now C_Initialize itself must fail on reconnect
    try:
        hsm.unseal(blob, aad)
        out["after_finalize"] = "no error"
    except HsmError as exc:
        out["after_finalize"] = [type(exc).__name__, exc.exit_code, exc.message]
print(json.dumps(out))
"""


def test_whole_token_directory_deleted_in_a_node_process(tmp_path: Path) -> None:
    """A node process (one token, own directory) whose token dir vanishes fails closed."""
    out = run_py(_WHOLE_DIR_SCRIPT, stdin=str(tmp_path / "node") + "\n")
    assert out["before"] == "share"
    for name in ("seal", "unseal", "versions", "after_finalize"):
        cls, exit_code, message = out[name]
        assert (cls, exit_code) == ("HsmUnavailable", 23), (name, message)
    assert "hsm.init_failed" in out["after_finalize"][2]


_RECOVERY_SCRIPT = r"""
import json, resource, shutil, socket, sys
from pathlib import Path
from hsm import Hsm, HsmError, provision_dev_token, seal_aad

base = Path(sys.stdin.readline().strip())
config = provision_dev_token(base, "only-token", "user-pin-1234", "so-pin-5678")
aad = seal_aad("k", "n", 1)
out = {"during": [], "after": []}

def attempt(where):
    try:
        out[where].append(hsm.unseal(blob, aad).decode())
    except HsmError as exc:
        out[where].append([type(exc).__name__, exc.code, exc.message])

with Hsm.open(config) as hsm:
    blob = hsm.seal(b"share", aad)
    if sys.argv[1] == "fd-flood":
        # a connection flood: every file descriptor of the process taken
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        held = []
        try:
            while True:
                held.append(socket.socket())
        except OSError:
            pass
        attempt("during")
        for s in held:
            s.close()
    else:
        # the token's volume away for a while (unmounted, moved)
        tokens = next(p for p in base.iterdir() if p.is_dir())
        shutil.move(str(tokens), str(base / "away"))
        attempt("during")
        shutil.move(str(base / "away"), str(tokens))
    attempt("after")
    attempt("after")
print(json.dumps(out))
"""


@pytest.mark.parametrize("outage", ["fd-flood", "token-dir-away"])
def test_node_process_recovers_without_restart_after_the_token_was_unreadable(
    tmp_path: Path, outage: str
) -> None:
    """SoftHSM2 reads its tokens at C_Initialize: a token unreadable once stayed missing
    until restart. Now the HSM fails closed while it is unreadable, then the next call
    re-initialises the module and succeeds, in the same process."""
    out = run_py(_RECOVERY_SCRIPT.replace("sys.argv[1]", repr(outage)), stdin=str(tmp_path) + "\n")
    ((cls, code, message),) = out["during"]
    assert (cls, code) == ("HsmUnavailable", "hsm.unavailable") and "fail closed" in message
    assert out["after"] == ["share", "share"]
