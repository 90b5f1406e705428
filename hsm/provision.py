"""Dev/test-only SoftHSM2 token provisioning.

:func:`provision_dev_token` writes a private ``softhsm2.conf`` and initialises a token
(``C_InitToken`` with the SO PIN, then ``C_InitPIN`` for the user PIN, PKCS#11 v2.40 base
§5.6). It never puts a PIN on a command line or on disk: when it needs another process,
the PINs travel over a pipe.

Where the token ends up depends on the process (SoftHSM2 reads its config only at
``C_Initialize``, once per process -- see the :mod:`hsm` package docstring):

* **Module not yet initialised in this process** (e.g. a launcher that provisions tokens
  for node subprocesses): the token is created in ``token_dir/tokens`` with config
  ``token_dir/softhsm2.conf``, by a short-lived child Python process, so this process
  stays unbound and each token keeps its own directory.
* **Module already initialised here with a dev config** (e.g. a test process that has
  opened a token): the token is added *in-process* to that config's token directory
  (``token_dir`` is then not used) and the returned config names the bound config. So
  any number of dev tokens can be provisioned and opened in one process.
* **Module initialised here with a config not written by this function**: refused with
  :class:`~hsm.errors.HsmConfigConflict`; dev tokens are never added to a token
  directory we did not create.

Provisioning is idempotent: if a token with ``label`` already exists, its user PIN is
checked (:class:`~hsm.errors.HsmWrongPin` if it differs) and the same config is returned.
"""

from __future__ import annotations

import json
import os
import subprocess  # noqa: S404 - fixed argv, no shell; used to keep this process unbound
import sys
from pathlib import Path
from typing import Any

from pkcs11 import exceptions as p11e

from hsm import _backend, errors
from hsm._backend import LOCK
from hsm.config import SOFTHSM_CONF_ENV, HsmConfig, resolve_module_path
from hsm.errors import HsmConfigConflict, HsmError, HsmTokenMissing

__all__ = ["DEV_CONF_MARKER", "provision_dev_token"]

#: First line of every config written here; only such configs get tokens added.
DEV_CONF_MARKER = (
    "# tp-wallet-custody dev SoftHSM2 config (hsm.provision_dev_token); not for production"
)

_CHILD_TIMEOUT_S = 60.0


def _validate(label: str, user_pin: str, so_pin: str) -> None:
    """Check label and PIN shapes SoftHSM2 accepts (label <= 32 bytes, PIN 4..255 bytes)."""
    if not isinstance(label, str) or not label:
        raise ValueError("token label must be a non-empty str")
    if len(label.encode("utf-8")) > 32:
        raise ValueError(f"token label {label!r} is longer than 32 UTF-8 bytes (PKCS#11 limit)")
    if label != label.strip() or not label.isprintable():
        raise ValueError(f"token label {label!r} must be printable without outer blanks")
    for name, pin in (("user_pin", user_pin), ("so_pin", so_pin)):
        if not isinstance(pin, str) or not 4 <= len(pin.encode("utf-8")) <= 255:
            raise ValueError(f"{name} must be a str of 4..255 UTF-8 bytes")


def _conf_text(tokens: Path) -> str:
    """Return the dev config for token directory ``tokens``."""
    return (
        f"{DEV_CONF_MARKER}\n"
        f"directories.tokendir = {tokens}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
        "slots.mechanisms = ALL\n"
        "library.reset_on_fork = false\n"
    )


def _is_dev_conf(conf: str) -> bool:
    """True if ``conf`` was written by :func:`provision_dev_token`."""
    try:
        with open(conf, encoding="utf-8") as fh:
            return fh.readline().rstrip("\n") == DEV_CONF_MARKER
    except OSError:
        return False


def _write_dev_conf(token_dir: Path) -> str:
    """Create ``token_dir/tokens`` (0700) and ``token_dir/softhsm2.conf``; return its path."""
    token_dir = token_dir.resolve()
    if any(c in str(token_dir) for c in "\r\n"):
        raise ValueError("token_dir must not contain line breaks")
    tokens = token_dir / "tokens"
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = token_dir / "softhsm2.conf"
    text = _conf_text(tokens)
    if conf.exists():
        if not _is_dev_conf(str(conf)):
            raise HsmConfigConflict(
                f"{str(conf)!r} exists and was not written by provision_dev_token; refusing "
                "to overwrite it"
            )
        if conf.read_text(encoding="utf-8") == text:
            return str(conf)
    tmp = conf.with_name(conf.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(conf)
    return str(conf)


def _check_user_pin(library: _backend.Library, token: Any, user_pin: str) -> None:
    """Open a session and ``C_Login`` with ``user_pin``; raise :class:`HsmWrongPin` if wrong."""
    session = token.open(rw=True)
    holder = id(session)
    try:
        _backend.login(library, session, token, user_pin, holder)
    finally:
        try:
            session.close()
        finally:
            _backend.logout_holder(library, bytes(token.serial), holder)


def _init_user_pin(token: Any, user_pin: str, so_pin: str) -> None:
    """Log in as SO and ``C_InitPIN`` the user PIN."""
    session = token.open(rw=True, so_pin=so_pin)
    try:
        session.init_pin(user_pin)
    finally:
        session.close()


def _provision_here(library: _backend.Library, label: str, user_pin: str, so_pin: str) -> bool:
    """Provision ``label`` through ``library`` in this process; True if it was created."""
    with LOCK:
        try:
            token = _backend.find_token(library, label)
        except HsmTokenMissing as exc:
            if exc.code != "hsm.token_missing":
                raise
            token = None
        if token is not None:
            try:
                _check_user_pin(library, token, user_pin)
            except HsmTokenMissing as exc:
                if exc.code != "hsm.token_not_provisioned":
                    raise
                _init_user_pin(token, user_pin, so_pin)  # half-provisioned: finish it
            return False
        _backend.init_token(library, _backend.free_slot(library), label, so_pin)
        _init_user_pin(_backend.find_token(library, label), user_pin, so_pin)
        return True


_ERROR_CLASSES: dict[str, type[HsmError]] = {
    name: cls
    for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, HsmError) and cls is not errors.UnsealError
}


def _provision_in_child(module: str, conf: str, label: str, user_pin: str, so_pin: str) -> None:
    """Run :func:`_child_main` in a fresh interpreter with ``SOFTHSM2_CONF=conf``."""
    root = str(Path(__file__).resolve().parent.parent)
    code = (
        f"import sys; sys.path.insert(0, {root!r}); "
        "from hsm.provision import _child_main; raise SystemExit(_child_main())"
    )
    env = {**os.environ, SOFTHSM_CONF_ENV: conf}
    request = json.dumps({"module": module, "label": label, "user_pin": user_pin, "so_pin": so_pin})
    try:
        proc = subprocess.run(  # noqa: S603 - argv is sys.executable + constant code
            [sys.executable, "-P", "-c", code],
            input=request,
            capture_output=True,
            text=True,
            env=env,
            timeout=_CHILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HsmError(
            f"provisioning child for token {label!r} failed to run: {type(exc).__name__}",
            code="hsm.provision_failed",
        ) from None
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        tail = proc.stderr.strip().splitlines()[-3:]
        raise HsmError(
            f"provisioning child for token {label!r} exited {proc.returncode} without a "
            f"result; stderr tail: {tail!r}",
            code="hsm.provision_failed",
        )
    if not result.get("ok"):
        cls = _ERROR_CLASSES.get(str(result.get("class")), HsmError)
        raise cls(str(result.get("message")), code=str(result.get("code")))


def _child_main() -> int:
    """Entry point of the provisioning child: JSON request on stdin, JSON result on stdout."""
    request = json.loads(sys.stdin.read())
    result: dict[str, object]
    try:
        library = _backend.get_library(request["module"], os.environ[SOFTHSM_CONF_ENV])
        created = _provision_here(library, request["label"], request["user_pin"], request["so_pin"])
        result = {"ok": True, "created": created}
    except HsmError as exc:
        result = {
            "ok": False,
            "class": type(exc).__name__,
            "code": exc.code,
            "message": exc.message,
        }
    except p11e.PKCS11Error as exc:
        result = {
            "ok": False,
            "class": "HsmError",
            "code": "hsm.pkcs11_error",
            "message": f"provisioning failed: PKCS#11 {type(exc).__name__}",
        }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def provision_dev_token(
    token_dir: Path | str,
    label: str,
    user_pin: str,
    so_pin: str,
    *,
    module_path: str | None = None,
) -> HsmConfig:
    """Create (or find) a SoftHSM2 dev token and return the :class:`HsmConfig` to open it.

    For development and tests only. See the module docstring for where the token is
    stored: in ``token_dir`` if this process has not initialised the module yet,
    otherwise in the token directory of the config already bound in this process.
    The returned config's ``softhsm_conf`` always names the config that holds the token;
    pass :func:`hsm.softhsm_env` of it to subprocesses.

    Args:
        token_dir: directory for ``softhsm2.conf`` and ``tokens/`` (created, mode 0700).
        label: token label, 1..32 UTF-8 bytes, unique within the token directory.
        user_pin: user PIN, 4..255 bytes (also the PIN in the returned config).
        so_pin: security-officer PIN, 4..255 bytes (not kept anywhere).
        module_path: SoftHSM2 module; default as :func:`hsm.config.resolve_module_path`.

    Raises:
        ValueError: bad label or PIN shape.
        HsmModuleMissing: SoftHSM2 not installed.
        HsmWrongPin: the token exists and ``user_pin`` is not its PIN.
        HsmConfigConflict: this process is bound to a config not written here, or
            ``token_dir/softhsm2.conf`` exists and is not ours.
        HsmError: ``hsm.provision_failed`` / ``hsm.init_token_failed`` / ``hsm.pkcs11_error``.
    """
    _validate(label, user_pin, so_pin)
    module = resolve_module_path(HsmConfig(label, user_pin, module_path=module_path))
    with LOCK:
        library = _backend.bound_library(module)
        if library is None:
            conf = _write_dev_conf(Path(token_dir))
            _provision_in_child(module, conf, label, user_pin, so_pin)
        else:
            if library.conf is None or not _is_dev_conf(library.conf):
                raise HsmConfigConflict(
                    f"this process initialised {library.path!r} with "
                    f"{SOFTHSM_CONF_ENV}={library.conf!r}, which provision_dev_token did not "
                    "write; dev tokens are only added to dev configs. Provision every token "
                    "of this process with provision_dev_token, or do it in a subprocess"
                )
            conf = library.conf
            library.ensure_initialized()
            try:
                _provision_here(library, label, user_pin, so_pin)
            except p11e.PKCS11Error as exc:
                raise HsmError(
                    f"provisioning token {label!r} failed: PKCS#11 {type(exc).__name__}",
                    code="hsm.pkcs11_error",
                ) from exc
    return HsmConfig(token_label=label, pin=user_pin, module_path=module, softhsm_conf=conf)
