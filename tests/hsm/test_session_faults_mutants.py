"""``hsm.session``'s reconnect and retry paths under PKCS#11 faults SoftHSM2 never gives
for a file token (issue 16, the survivors s22-mutc left open; docs/MUTATION.md).

SoftHSM2 2.6 fails neither ``C_OpenSession`` nor a key's ``C_EncryptInit``/``C_SignInit``
with a device or stale-handle error on demand, and a second creator's key can land between
``C_GenerateKey`` and ``C_FindObjects`` only by chance. So each test runs a fresh
interpreter whose :class:`hsm.Hsm` loads ``tests/hsm/faulty_pkcs11.c``, a PKCS#11 proxy
module compiled here that forwards every call to the real SoftHSM2 and, when the test arms
it, returns one chosen ``CK_RV`` at the C boundary, or makes a second real key of the same
label in the same session right after ours (the concurrent creator). The token, its keys,
the seals and the signatures are SoftHSM2's own; no Python object is replaced. Every seal
is unsealed again, every signature verified by pynacl.

Skipped (with the reason) where no C compiler is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hsm import HsmConfig, provision_dev_token
from hsm.config import resolve_module_path
from tests.hsm.conftest import SO_PIN, USER_PIN, unique_label

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).with_name("faulty_pkcs11.c")

CKR_DEVICE_ERROR = 0x30
CKR_KEY_HANDLE_INVALID = 0x60
CKR_SESSION_COUNT = 0xB1  # not a device error: hsm._backend.DEVICE_ERRORS lacks it
OPEN, ENCRYPT, DECRYPT, SIGN, GENERATE = 0, 1, 2, 3, 4


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler: the PKCS#11 fault proxy cannot be built")
    out = tmp_path_factory.mktemp("faulty-pkcs11") / "faulty_pkcs11.so"
    subprocess.run(  # noqa: S603 - the system compiler on our own source
        [cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    return str(out)


# The child: opens the token through the proxy, runs the scenario named on stdin, prints
# one JSON line. `arm`/`twin`/`calls` reach the proxy's controls through ctypes (the same
# loaded instance as python-pkcs11's).
_CHILD = r"""
import ctypes, json, logging, sys
from hsm import Hsm, HsmConfig, HsmError, _backend, seal_aad

args = json.loads(sys.stdin.readline())
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("hsm").addHandler(Keep())
logging.getLogger("hsm").setLevel(logging.INFO)
proxy = ctypes.CDLL(args["proxy"])
proxy.faulty_arm.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_ulong]
def arm(which, count, rv): proxy.faulty_arm(which, count, rv)
def twin(count): proxy.faulty_twin(count)
def calls(which): return proxy.faulty_calls(which)
def outcome(fn):
    try:
        value = fn()
        return {"ok": value.hex() if isinstance(value, bytes) else value}
    except HsmError as exc:
        return {"error": type(exc).__name__, "code": exc.code, "message": str(exc)}
    except Exception as exc:
        return {"raised": type(exc).__name__, "message": str(exc)}
hsm = Hsm.open(HsmConfig(args["label"], args["pin"], module_path=args["proxy"]))
AAD = seal_aad("key-f", "node-f", 1)
out = {}
exec(args["scenario"])
hsm.close()
print(json.dumps(out))
"""


def run(proxy: str, config: HsmConfig, scenario: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    assert config.softhsm_conf is not None
    env.update(
        SOFTHSM2_CONF=config.softhsm_conf,
        FAULTY_PKCS11_REAL=resolve_module_path(),
        PYTHONPATH=str(REPO_ROOT),
    )
    line = json.dumps(
        {"proxy": proxy, "label": config.token_label, "pin": USER_PIN, "scenario": scenario}
    )
    proc = subprocess.run(  # noqa: S603 - sys.executable with test code
        [sys.executable, "-c", _CHILD],
        input=line + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def token(tmp_path: Path, hsm_process_conf: str) -> HsmConfig:
    return provision_dev_token(tmp_path, unique_label("f"), USER_PIN, SO_PIN)


def test_a_reconnect_that_fails_with_a_device_error_is_tried_once_more(
    proxy: str, token: HsmConfig
) -> None:
    """``_run``: a raw PKCS#11 device error from ``C_OpenSession`` during a reconnect is
    one failed attempt (logged as its reason), and the second reconnect is made. With every
    open failing the call fails closed (``HsmUnavailable``, the reason named); with the
    next open failing once, the call after that reconnects twice and unseals."""
    out = run(
        proxy,
        token,
        """
blob = hsm.seal(b"kept", AAD)
arm(0, 100, 0x30)                 # every C_OpenSession: CKR_DEVICE_ERROR
with _backend.LOCK:
    hsm._session.close()          # C_CloseSession behind the Hsm's back
before = calls(0)
out["down"] = outcome(lambda: hsm.unseal(blob, AAD))
out["down_opens"] = calls(0) - before
arm(0, 1, 0x30)                   # the next C_OpenSession fails once
before = calls(0)
out["up"] = outcome(lambda: hsm.unseal(blob, AAD))
out["up_opens"] = calls(0) - before
out["log"] = [m for m in records if m.startswith(("hsm.session_lost", "hsm.unavailable"))]
""",
    )
    assert out["down"]["error"] == "HsmUnavailable", out
    assert "reconnect failed: DeviceError" in out["down"]["message"]
    assert out["down_opens"] == 1  # attempt 1 found the session gone, attempt 2 reconnected
    assert out["up"] == {"ok": b"kept".hex()}, out
    assert out["up_opens"] == 2  # the session was None: two reconnects, the second opened
    assert out["log"] == [
        f"hsm.session_lost op=unseal token={token.token_label} reason=SessionHandleInvalid "
        "attempt=1",
        f"hsm.unavailable op=unseal token={token.token_label} reason=reconnect failed: DeviceError",
    ], out["log"]


def test_a_reconnect_that_fails_with_another_pkcs11_error_is_not_retried(
    proxy: str, token: HsmConfig
) -> None:
    """A PKCS#11 error that is not a device error (``CKR_SESSION_COUNT``) from the
    reconnect's ``C_OpenSession`` is ``hsm.pkcs11_error`` at once, naming the error and
    the operation: no second reconnect, no ``HsmUnavailable``. The next call reconnects."""
    out = run(
        proxy,
        token,
        """
blob = hsm.seal(b"kept", AAD)
arm(0, 1, 0xB1)
with _backend.LOCK:
    hsm._session.close()
before = calls(0)
out["first"] = outcome(lambda: hsm.unseal(blob, AAD))
out["opens"] = calls(0) - before
out["next"] = outcome(lambda: hsm.unseal(blob, AAD))
""",
    )
    assert out["first"]["error"] == "HsmError", out
    assert out["first"]["code"] == "hsm.pkcs11_error"
    assert out["first"]["message"] == (
        f"hsm.pkcs11_error: unseal on token {token.token_label!r} failed: PKCS#11 SessionCount"
    )
    assert out["opens"] == 1
    assert out["next"] == {"ok": b"kept".hex()}, out


def test_a_seal_key_handle_stale_twice_fails_closed_once_recovers(
    proxy: str, token: HsmConfig
) -> None:
    """``_with_key``: a stale key handle (``CKR_KEY_HANDLE_INVALID`` from
    ``C_EncryptInit``) is looked up again by label ONCE. Stale once: the seal is made (and
    unseals); stale twice: ``SealKeyMissing``, nothing sealed, after exactly two tries."""
    out = run(
        proxy,
        token,
        """
hsm.seal(b"warm", AAD)            # v1 created, its handle cached
arm(1, 1, 0x60)
before = calls(1)
once = outcome(lambda: hsm.seal(b"once", AAD))
out["once_tries"] = calls(1) - before
out["once"] = outcome(lambda: hsm.unseal(bytes.fromhex(once["ok"]), AAD)) if "ok" in once else once
arm(1, 2, 0x60)
before = calls(1)
out["twice"] = outcome(lambda: hsm.seal(b"twice", AAD))
out["twice_tries"] = calls(1) - before
out["after"] = outcome(lambda: hsm.unseal(hsm.seal(b"after", AAD), AAD))
""",
    )
    assert out["once"] == {"ok": b"once".hex()} and out["once_tries"] == 2, out
    assert out["twice"]["error"] == "SealKeyMissing", out
    assert out["twice"]["message"].endswith(
        f"seal key version 1 is not on token {token.token_label!r}"
    ), out["twice"]
    assert out["twice_tries"] == 2
    assert out["after"] == {"ok": b"after".hex()}


def test_a_signing_key_handle_stale_twice_fails_closed_once_recovers(
    proxy: str, token: HsmConfig
) -> None:
    """``sign_ed25519``: the same rule for a signing key (``C_SignInit``): stale once, the
    signature is made and verifies under pynacl; stale twice, ``hsm.signing_key_missing``
    after exactly two tries, no signature."""
    from nacl.signing import VerifyKey

    out = run(
        proxy,
        token,
        """
pk = hsm.create_signing_key("faulty")
out["pk"] = pk.hex()
hsm.sign_ed25519("faulty", b"warm")   # handle cached
arm(3, 1, 0x60)
before = calls(3)
out["once"] = outcome(lambda: hsm.sign_ed25519("faulty", b"once"))
out["once_tries"] = calls(3) - before
arm(3, 2, 0x60)
before = calls(3)
out["twice"] = outcome(lambda: hsm.sign_ed25519("faulty", b"twice"))
out["twice_tries"] = calls(3) - before
""",
    )
    VerifyKey(bytes.fromhex(out["pk"])).verify(b"once", bytes.fromhex(out["once"]["ok"]))
    assert out["once_tries"] == 2
    assert out["twice"]["error"] == "HsmError", out
    assert out["twice"]["code"] == "hsm.signing_key_missing"
    assert out["twice"]["message"].endswith(
        f"token {token.token_label!r} has no signing key labelled 'custody-ed25519-faulty'"
    ), out["twice"]
    assert out["twice_tries"] == 2


def test_a_seal_key_version_taken_by_a_concurrent_creator_is_retried_up_to_three_times(
    proxy: str, token: HsmConfig
) -> None:
    """``_create``: when another creator's key of the same label exists right after ours
    (two objects under ``custody-seal-vN``), ours is destroyed and the next version tried,
    three tries in all. Two conflicts: version 3 is ours (1 and 2 the other creator's,
    left as they are); three conflicts: ``hsm.seal_key_race``, none of ours left."""
    out = run(
        proxy,
        token,
        """
twin(2)
before = calls(4)
out["two"] = outcome(hsm.create_seal_key)
out["two_tries"] = calls(4) - before
out["after_two"] = outcome(hsm.seal_key_versions)
out["sealed"] = outcome(lambda: hsm.unseal(hsm.seal(b"v3", AAD, version=3), AAD))
twin(3)
before = calls(4)
out["three"] = outcome(hsm.create_seal_key)
out["three_tries"] = calls(4) - before
out["after_three"] = outcome(hsm.seal_key_versions)
""",
    )
    assert out["two"] == {"ok": 3} and out["two_tries"] == 3, out
    assert out["after_two"] == {"ok": [1, 2, 3]}
    assert out["sealed"] == {"ok": b"v3".hex()}
    assert out["three"]["error"] == "HsmError" and out["three"]["code"] == "hsm.seal_key_race"
    assert out["three_tries"] == 3
    assert out["after_three"] == {"ok": [1, 2, 3, 4, 5, 6]}  # the other creator's 4, 5, 6
