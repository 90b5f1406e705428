"""Process-wide PKCS#11 state: module loading, SoftHSM2 config binding, locking, logins.

This is the "dangerous layer" under :class:`hsm.Hsm`. It owns everything that is global
to a process when talking to a PKCS#11 module:

* **One library instance per module file.** A module is ``dlopen``-ed and
  ``C_Initialize``-d once per process (python-pkcs11 caches it per path; we key by
  ``realpath`` so symlinks cannot create a second, conflicting instance).
* **One SoftHSM2 config per module.** SoftHSM2 reads ``$SOFTHSM2_CONF`` only inside
  ``C_Initialize``; the config active at that moment is *bound* to the process for the
  life of the library. A later request for a different config raises
  :class:`~hsm.errors.HsmConfigConflict` instead of silently using the wrong token dir.
* **One lock.** python-pkcs11 calls ``C_Initialize(NULL)``; per PKCS#11 v2.40 §5.4
  (``C_Initialize``) a NULL argument means the application promises not to call the
  library from several threads at once, and SoftHSM2 then disables its internal mutexes.
  Every PKCS#11 call in this package therefore runs under :data:`LOCK`.
* **Login bookkeeping.** PKCS#11 login state is per application *and token*, not per
  session (v2.40 §5.6 ``C_Login``): a second ``C_Login`` returns
  ``CKR_USER_ALREADY_LOGGED_IN`` without checking the PIN, and ``C_Logout`` logs out every
  session. We open sessions without logging in, call ``C_Login`` ourselves, never call
  ``C_Logout`` (closing the last session logs out, §5.6 ``C_CloseSession``), and verify a
  second opener's PIN against a keyed digest of the PIN that did log in.

``C_Login`` and ``C_InitToken`` are called through :mod:`ctypes` on the same loaded
library (``dlopen`` of an already-loaded file returns the same instance), because
python-pkcs11 0.10 has no ``C_InitToken`` and couples ``C_Login`` with ``C_Logout``.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pkcs11
from pkcs11 import exceptions as p11e
from pkcs11.constants import TokenFlag

from hsm.config import SOFTHSM_CONF_ENV
from hsm.errors import (
    HsmConfigConflict,
    HsmError,
    HsmModuleMissing,
    HsmTokenMissing,
    HsmWrongPin,
)

__all__ = [
    "LOCK",
    "Library",
    "bound_library",
    "check_session",
    "find_token",
    "free_slot",
    "get_library",
    "is_device_error",
    "login",
    "logout_holder",
    "token_labels",
]

log = logging.getLogger("hsm")

#: The one lock around every PKCS#11 call made by this package (see module docstring).
LOCK = threading.RLock()

# CK_RV values we handle from raw ctypes calls (PKCS#11 v2.40 pkcs11t.h).
CKR_OK = 0x000
CKR_GENERAL_ERROR = 0x005
CKR_FUNCTION_FAILED = 0x006
CKR_DEVICE_ERROR = 0x030
CKR_DEVICE_MEMORY = 0x031
CKR_DEVICE_REMOVED = 0x032
CKR_PIN_INCORRECT = 0x0A0
CKR_PIN_INVALID = 0x0A1
CKR_PIN_LEN_RANGE = 0x0A2
CKR_PIN_EXPIRED = 0x0A3
CKR_PIN_LOCKED = 0x0A4
CKR_SESSION_CLOSED = 0x0B0
CKR_SESSION_HANDLE_INVALID = 0x0B3
CKR_SESSION_EXISTS = 0x0B6
CKR_TOKEN_NOT_PRESENT = 0x0E0
CKR_TOKEN_NOT_RECOGNIZED = 0x0E1
CKR_USER_ALREADY_LOGGED_IN = 0x100
CKR_USER_PIN_NOT_INITIALIZED = 0x102
CKR_USER_ANOTHER_ALREADY_LOGGED_IN = 0x104
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190
CKU_USER = 1
CKS_RW_USER_FUNCTIONS = 3

_RV_TO_DEVICE_EXC: dict[int, type[p11e.PKCS11Error]] = {
    CKR_GENERAL_ERROR: p11e.GeneralError,
    CKR_FUNCTION_FAILED: p11e.FunctionFailed,
    CKR_DEVICE_ERROR: p11e.DeviceError,
    CKR_DEVICE_MEMORY: p11e.DeviceMemory,
    CKR_DEVICE_REMOVED: p11e.DeviceRemoved,
    CKR_SESSION_CLOSED: p11e.SessionClosed,
    CKR_SESSION_HANDLE_INVALID: p11e.SessionHandleInvalid,
    CKR_TOKEN_NOT_PRESENT: p11e.TokenNotPresent,
    CKR_TOKEN_NOT_RECOGNIZED: p11e.TokenNotRecognised,
}

#: PKCS#11 errors meaning "the session, token or device is gone": worth one reconnect.
DEVICE_ERRORS: tuple[type[p11e.PKCS11Error], ...] = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.DeviceError,
    p11e.DeviceRemoved,
    p11e.DeviceMemory,
    p11e.TokenNotPresent,
    p11e.TokenNotRecognised,
    p11e.UserNotLoggedIn,
    p11e.SlotIDInvalid,
    p11e.GeneralError,
    p11e.FunctionFailed,
)

# Slots whose C_GetTokenInfo fails this way are skipped when searching for a token, so
# one broken token (e.g. its directory deleted) does not hide the healthy ones.
_BROKEN_SLOT_ERRORS: tuple[type[p11e.PKCS11Error], ...] = (
    p11e.TokenNotPresent,
    p11e.TokenNotRecognised,
    p11e.GeneralError,
    p11e.DeviceError,
    p11e.DeviceRemoved,
    p11e.FunctionFailed,
)

# Keyed digests of PINs that logged in; the key lives only in this process's memory.
_PIN_DIGEST_KEY = secrets.token_bytes(32)


def _pin_digest(pin: str) -> bytes:
    """Return HMAC-SHA-256(process key, PIN): comparable, useless outside this process."""
    return hmac.new(_PIN_DIGEST_KEY, pin.encode("utf-8"), hashlib.sha256).digest()


@dataclass
class _Login:
    """Who in this process relies on a token's (shared) user login."""

    digest: bytes | None  # None: logged in by code outside this package, PIN unknown
    holders: set[int] = field(default_factory=set)


@dataclass
class Library:
    """One loaded PKCS#11 module and the SoftHSM2 config bound to it in this process.

    Attributes:
        path: ``realpath`` of the module file (the python-pkcs11 cache key).
        conf: ``realpath`` of the SoftHSM2 config used at ``C_Initialize``, or ``None``
            when ``$SOFTHSM2_CONF`` was unset (SoftHSM2's compiled-in default).
        lib: the python-pkcs11 library object.
        cdll: the same library through :mod:`ctypes`, for ``C_Login``/``C_InitToken``.
    """

    path: str
    conf: str | None
    lib: Any  # pkcs11._pkcs11.lib (no public type)
    cdll: ctypes.CDLL
    logins: dict[bytes, _Login] = field(default_factory=dict)

    def ensure_initialized(self) -> None:
        """``C_Initialize`` again if someone called ``C_Finalize`` (under :data:`LOCK`).

        ``$SOFTHSM2_CONF`` is reset to the bound config first, because SoftHSM2 re-reads
        it. All logins are forgotten: ``C_Finalize`` ended them.

        Raises:
            HsmTokenMissing: ``hsm.init_failed`` when ``C_Initialize`` fails.
        """
        with LOCK:
            if self.lib.initialized:
                return
            self.logins.clear()
            _set_conf_env(self.conf)
            try:
                self.lib.initialize()
            except p11e.PKCS11Error as exc:
                raise _init_failed(self.path, self.conf, exc) from exc

    def reinitialize(self) -> None:
        """``C_Finalize`` then ``C_Initialize``: make the module read its tokens afresh.

        SoftHSM2 reads its token directory at ``C_Initialize``; a token it failed to read
        then (say, the process was out of file descriptors under a connection flood) stays
        missing until the module is initialised again. Every session of the process ends;
        each :class:`~hsm.Hsm` reconnects on its next call.

        Raises:
            HsmTokenMissing: ``hsm.init_failed`` when ``C_Initialize`` fails.
        """
        with LOCK:
            if self.lib.initialized:
                try:
                    self.lib.finalize()
                except p11e.PKCS11Error:
                    pass  # finalising a module in a bad state: initialise it anyway
            self.ensure_initialized()


_LIBRARIES: dict[str, Library] = {}


def _set_conf_env(conf: str | None) -> None:
    """Point ``$SOFTHSM2_CONF`` at ``conf`` (``None``: unset it)."""
    if conf is None:
        os.environ.pop(SOFTHSM_CONF_ENV, None)
    else:
        os.environ[SOFTHSM_CONF_ENV] = conf


def _real(path: str | None) -> str | None:
    """Return ``os.path.realpath(path)``, passing ``None`` through."""
    return os.path.realpath(path) if path else None


def _init_failed(module: str, conf: str | None, exc: BaseException) -> HsmTokenMissing:
    """Build the error for a failed ``C_Initialize`` (no secrets involved)."""
    where = conf if conf is not None else "the SoftHSM2 default config"
    return HsmTokenMissing(
        f"C_Initialize of PKCS#11 module {module!r} failed ({type(exc).__name__}) using "
        f"{SOFTHSM_CONF_ENV}={where!r}: the config file or its token directory is missing "
        "or unreadable",
        code="hsm.init_failed",
    )


def _bind_ctypes(path: str) -> ctypes.CDLL:
    """Open ``path`` with ctypes (same instance as python-pkcs11's) and declare prototypes."""
    cdll = ctypes.CDLL(path)
    ulong, char_p = ctypes.c_ulong, ctypes.c_char_p
    cdll.C_Login.argtypes = [ulong, ulong, char_p, ulong]
    cdll.C_Login.restype = ulong
    cdll.C_InitToken.argtypes = [ulong, char_p, ulong, char_p]
    cdll.C_InitToken.restype = ulong
    cdll.C_GetSessionInfo.argtypes = [ulong, ctypes.POINTER(_CkSessionInfo)]
    cdll.C_GetSessionInfo.restype = ulong
    return cdll


class _CkSessionInfo(ctypes.Structure):
    """``CK_SESSION_INFO`` (PKCS#11 v2.40 base §3.6)."""

    _fields_ = [
        ("slotID", ctypes.c_ulong),
        ("state", ctypes.c_ulong),
        ("flags", ctypes.c_ulong),
        ("ulDeviceError", ctypes.c_ulong),
    ]


def check_session(library: Library, session: Any) -> None:
    """``C_GetSessionInfo``: raise a device error unless ``session`` is alive and logged in.

    Probing first keeps a dead session from failing *inside* a python-pkcs11 object
    search, whose cleanup would then raise from ``__del__``.

    Raises:
        pkcs11.exceptions.PKCS11Error: ``SessionHandleInvalid`` & co. (see
            :func:`is_device_error`), or ``UserNotLoggedIn`` if the login was lost.
    """
    info = _CkSessionInfo()
    with LOCK:
        rv = library.cdll.C_GetSessionInfo(session.handle, ctypes.byref(info))
    if rv == CKR_OK:
        if info.state != CKS_RW_USER_FUNCTIONS:
            raise p11e.UserNotLoggedIn()
        return
    if rv == CKR_CRYPTOKI_NOT_INITIALIZED:
        raise p11e.PKCS11Error("Initialisation error (not initialized)")
    raise _RV_TO_DEVICE_EXC.get(rv, p11e.SessionHandleInvalid)()


def bound_library(module_path: str) -> Library | None:
    """Return the library already loaded by this package for ``module_path``, if any."""
    with LOCK:
        return _LIBRARIES.get(os.path.realpath(module_path))


def get_library(module_path: str, conf: str | None) -> Library:
    """Load (once per process) and initialise the module, binding it to ``conf``.

    Args:
        module_path: the PKCS#11 module file.
        conf: SoftHSM2 config to use, or ``None`` for "whatever ``$SOFTHSM2_CONF`` or the
            SoftHSM2 default says" (and, once loaded, "whatever is bound").

    Raises:
        HsmModuleMissing: the file cannot be loaded as a PKCS#11 module.
        HsmTokenMissing: ``hsm.init_failed``, ``C_Initialize`` failed.
        HsmConfigConflict: the module is already bound to a different config.
    """
    path = os.path.realpath(module_path)
    want = _real(conf)
    with LOCK:
        loaded = _LIBRARIES.get(path)
        if loaded is None:
            loaded = _load(path, want)
            _LIBRARIES[path] = loaded
        if want is not None and want != loaded.conf:
            raise HsmConfigConflict(
                f"this process already initialised PKCS#11 module {path!r} with "
                f"{SOFTHSM_CONF_ENV}={loaded.conf!r}; SoftHSM2 reads its config only once, so "
                f"{want!r} cannot be used here. Provision all dev tokens of one process with "
                "hsm.provision_dev_token (they then share one config), or use a subprocess "
                "with hsm.softhsm_env(config)"
            )
        loaded.ensure_initialized()
        return loaded


def _load(path: str, want: str | None) -> Library:
    """``dlopen`` + ``C_Initialize`` the module with ``$SOFTHSM2_CONF`` = ``want``."""
    preloaded = getattr(pkcs11, "_loaded", {}).get(path)
    if preloaded is not None:
        # Someone loaded it without us: it is bound to whatever the env said then.
        lib = preloaded
        conf = _real(os.environ.get(SOFTHSM_CONF_ENV))
    else:
        previous = os.environ.get(SOFTHSM_CONF_ENV)
        if want is not None:
            _set_conf_env(want)
        try:
            lib = pkcs11.lib(path)
        except p11e.PKCS11Error as exc:
            _set_conf_env(previous)
            if type(exc) is p11e.PKCS11Error and "loading" in str(exc):
                raise HsmModuleMissing(
                    f"{path!r} could not be loaded as a PKCS#11 module "
                    "(not a shared library, wrong architecture, or no C_GetFunctionList)",
                    code="hsm.module_invalid",
                ) from exc
            raise _init_failed(path, want or _real(previous), exc) from exc
        conf = want if want is not None else _real(previous)
    try:
        cdll = _bind_ctypes(path)
    except (OSError, AttributeError) as exc:
        raise HsmModuleMissing(
            f"{path!r} does not export C_Login/C_InitToken", code="hsm.module_invalid"
        ) from exc
    log.debug("hsm.module_loaded module=%s conf=%s", path, conf)
    return Library(path=path, conf=conf, lib=lib, cdll=cdll)


def is_device_error(exc: BaseException, library: Library) -> bool:
    """True if ``exc`` means the session/token/device went away (worth one reconnect).

    Besides :data:`DEVICE_ERRORS`, this is ``CKR_CRYPTOKI_NOT_INITIALIZED`` (someone called
    ``C_Finalize``), which python-pkcs11 raises as a bare ``PKCS11Error``.
    """
    if isinstance(exc, DEVICE_ERRORS):
        return True
    return isinstance(exc, p11e.PKCS11Error) and not library.lib.initialized


def _iter_tokens(library: Library) -> Iterator[Any]:
    """Yield the token of every slot that answers ``C_GetTokenInfo``; skip broken slots."""
    for slot in library.lib.get_slots():
        try:
            yield slot.get_token()
        except _BROKEN_SLOT_ERRORS:
            continue


def token_labels(library: Library) -> list[str]:
    """Labels of the initialised tokens visible to ``library`` (labels are not secret)."""
    with LOCK:
        return [t.label for t in _iter_tokens(library) if t.flags & TokenFlag.TOKEN_INITIALIZED]


def find_token(library: Library, label: str) -> Any:
    """Return the one initialised token labelled ``label``.

    Raises:
        HsmTokenMissing: ``hsm.token_missing`` (listing the labels that do exist) or
            ``hsm.token_ambiguous``.
    """
    with LOCK:
        tokens = [
            t
            for t in _iter_tokens(library)
            if t.flags & TokenFlag.TOKEN_INITIALIZED and t.label == label
        ]
        if len(tokens) == 1:
            return tokens[0]
        if tokens:
            raise HsmTokenMissing(
                f"{len(tokens)} tokens are labelled {label!r}; token labels must be unique",
                code="hsm.token_ambiguous",
            )
        others = token_labels(library)
        where = library.conf if library.conf is not None else "the SoftHSM2 default config"
        raise HsmTokenMissing(
            f"no initialised token labelled {label!r} in module {library.path!r} "
            f"(config {where!r}); tokens present: {others!r}",
            code="hsm.token_missing",
        )


def free_slot(library: Library) -> Any:
    """Return a slot holding an *uninitialised* token (SoftHSM2 always keeps one)."""
    with LOCK:
        for token in _iter_tokens(library):
            if not token.flags & TokenFlag.TOKEN_INITIALIZED:
                return token.slot
        raise HsmError(
            f"module {library.path!r} offers no uninitialised token slot to provision",
            code="hsm.no_free_slot",
        )


def login(library: Library, session: Any, token: Any, pin: str, holder: int) -> None:
    """``C_Login(CKU_USER)`` on ``session``, sharing the token login with other holders.

    ``holder`` is an opaque id (of an :class:`hsm.Hsm`) recorded so that the PIN of the
    next opener of the same token can be checked (see module docstring).

    Raises:
        HsmWrongPin: PIN incorrect, of invalid length, expired or locked, or differing
            from the PIN this process already logged in to the token with.
        HsmTokenMissing: ``hsm.token_not_provisioned``, the user PIN was never set.
        pkcs11.exceptions.PKCS11Error: a device/session error, for the caller's retry.
    """
    label = token.label
    pin_bytes = pin.encode("utf-8")
    with LOCK:
        rv = library.cdll.C_Login(session.handle, CKU_USER, pin_bytes, len(pin_bytes))
        key = bytes(token.serial)
        if rv == CKR_OK:
            library.logins[key] = _Login(_pin_digest(pin), {holder})
            return
        if rv == CKR_USER_ALREADY_LOGGED_IN:
            entry = library.logins.get(key)
            if entry is None:
                library.logins[key] = _Login(None, {holder})
                log.warning("hsm.login_unverified token=%s (logged in outside hsm)", label)
                return
            if entry.digest is not None and not hmac.compare_digest(entry.digest, _pin_digest(pin)):
                raise HsmWrongPin(f"incorrect user PIN for token {label!r}")
            entry.holders.add(holder)
            return
    raise _login_error(rv, label)


def _login_error(rv: int, label: str) -> Exception:
    """Map a failed ``C_Login`` return value to an exception."""
    if rv == CKR_PIN_INCORRECT:
        return HsmWrongPin(f"incorrect user PIN for token {label!r}")
    if rv in (CKR_PIN_LEN_RANGE, CKR_PIN_INVALID):
        return HsmWrongPin(
            f"user PIN for token {label!r} has an invalid length or characters",
            code="hsm.pin_length",
        )
    if rv == CKR_PIN_LOCKED:
        return HsmWrongPin(f"user PIN of token {label!r} is locked", code="hsm.pin_locked")
    if rv == CKR_PIN_EXPIRED:
        return HsmWrongPin(f"user PIN of token {label!r} has expired", code="hsm.pin_expired")
    if rv == CKR_USER_PIN_NOT_INITIALIZED:
        return HsmTokenMissing(
            f"token {label!r} has no user PIN (initialise it with provision_dev_token)",
            code="hsm.token_not_provisioned",
        )
    if rv == CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
        return HsmError(
            f"token {label!r} has a security-officer login open in this process",
            code="hsm.so_logged_in",
        )
    if rv == CKR_CRYPTOKI_NOT_INITIALIZED:
        return p11e.PKCS11Error("Initialisation error (not initialized)")
    device_exc = _RV_TO_DEVICE_EXC.get(rv)
    if device_exc is not None:
        return device_exc()
    return HsmError(f"C_Login on token {label!r} failed with CKR 0x{rv:X}", code="hsm.pkcs11_error")


def logout_holder(library: Library, token_serial: bytes, holder: int) -> None:
    """Forget that ``holder`` relies on the token login (no ``C_Logout``, see docstring)."""
    with LOCK:
        entry = library.logins.get(token_serial)
        if entry is None:
            return
        entry.holders.discard(holder)
        if not entry.holders:
            del library.logins[token_serial]


def init_token(library: Library, slot: Any, label: str, so_pin: str) -> None:
    """``C_InitToken`` (PKCS#11 v2.40 §5.6) on ``slot`` with ``label`` and the SO PIN.

    Raises:
        HsmError: ``hsm.init_token_failed`` with the CKR code.
    """
    pin = so_pin.encode("utf-8")
    raw_label = label.encode("utf-8").ljust(32, b" ")
    with LOCK:
        rv = library.cdll.C_InitToken(slot.slot_id, pin, len(pin), raw_label)
    if rv != CKR_OK:
        raise HsmError(
            f"C_InitToken for token {label!r} failed with CKR 0x{rv:X}",
            code="hsm.init_token_failed",
        )
