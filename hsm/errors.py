"""Typed errors raised by :mod:`hsm`.

Every failure that leaves this package is an :class:`HsmError` (or a subclass) carrying

* ``code``: a stable, dotted machine-readable identifier (``"hsm.wrong_pin"``),
* ``exit_code``: the process exit status a CLI should use for it,
* a human message that names what went wrong and what to check.

Messages and reprs never contain PINs, key material or plaintext; they may contain the
token label, the module path, the config path and key *version numbers*, which are not
secret. Raw ``pkcs11`` exceptions are never allowed to escape: they are mapped to one of
these classes, and only the PKCS#11 error *name* (``CKR_...`` class name) is kept.

Exit codes (contract with the ``custody`` CLI):

====================  ====  ===============================================================
class                 exit  meaning
====================  ====  ===============================================================
HsmModuleMissing       20   PKCS#11 module (``libsofthsm2.so``) not found or not loadable
HsmTokenMissing        21   no initialised token with the configured label
HsmWrongPin            22   user PIN rejected (incorrect, wrong length, locked)
HsmUnavailable         23   token/session gone mid-operation; reconnect + one retry failed
UnsealError            24   blob header bad, key version unknown/destroyed, or GCM tag bad
HsmConfigConflict      25   a second SoftHSM2 config requested in one process (see package doc)
SealKeyMissing         26   seal/destroy asked for a seal key version not on the token
HsmError (other)       29   any other PKCS#11 failure (code ``hsm.pkcs11_error``) or misuse
====================  ====  ===============================================================
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "HsmConfigConflict",
    "HsmError",
    "HsmModuleMissing",
    "HsmTokenMissing",
    "HsmUnavailable",
    "HsmWrongPin",
    "SealKeyMissing",
    "UnsealError",
    "UnsealReason",
]


class HsmError(Exception):
    """Base class of every error raised by :mod:`hsm`.

    Attributes:
        code: stable dotted identifier, e.g. ``"hsm.module_missing"``.
        exit_code: process exit status the CLI maps this error to.
        message: human-readable explanation; never contains secrets.
    """

    default_code: ClassVar[str] = "hsm.error"
    exit_code: int = 29

    def __init__(self, message: str, *, code: str | None = None) -> None:
        """Create the error with a secret-free ``message`` and an optional specific ``code``."""
        super().__init__(message)
        self.message: str = message
        self.code: str = code or self.default_code

    def __str__(self) -> str:
        """Return ``"<code>: <message>"``."""
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        """Return a repr with class, code and message (no secrets are ever stored)."""
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def to_dict(self) -> dict[str, str | int]:
        """Return a structured form for logs and problem+json bodies."""
        return {"code": self.code, "exit_code": self.exit_code, "message": self.message}


class HsmModuleMissing(HsmError):
    """The PKCS#11 module could not be found or loaded (exit 20)."""

    default_code = "hsm.module_missing"
    exit_code = 20


class HsmTokenMissing(HsmError):
    """No usable token with the configured label (exit 21).

    Codes: ``hsm.token_missing`` (no such label), ``hsm.token_ambiguous`` (label not
    unique), ``hsm.token_not_provisioned`` (no user PIN set), ``hsm.init_failed``
    (C_Initialize failed, e.g. the SoftHSM2 config or its token directory is missing).
    """

    default_code = "hsm.token_missing"
    exit_code = 21


class HsmWrongPin(HsmError):
    """The user PIN was rejected (exit 22).

    Codes: ``hsm.wrong_pin``, ``hsm.pin_length``, ``hsm.pin_locked``.
    """

    default_code = "hsm.wrong_pin"
    exit_code = 22


class HsmUnavailable(HsmError):
    """The HSM went away mid-operation and one reconnect + retry failed (exit 23).

    The operation did not happen (fail closed). A later call tries to reconnect again.
    """

    default_code = "hsm.unavailable"
    exit_code = 23


UnsealReason = Literal["bad_header", "unknown_key_version", "authentication_failed"]


class UnsealError(HsmError):
    """A sealed blob could not be opened (exit 24).

    ``reason`` says why, and ``code`` is ``"hsm.unseal." + reason``:

    * ``bad_header``: too short, wrong magic (not ``b"TPS1"``) or malformed;
    * ``unknown_key_version``: the seal key version named in the header is not on the
      token (never created, or destroyed by rotation);
    * ``authentication_failed``: the AES-GCM tag did not verify, i.e. the blob was
      tampered with or the AAD (key id, node id, share version, purpose) differs.
    """

    default_code = "hsm.unseal"
    exit_code = 24

    def __init__(self, reason: UnsealReason, message: str) -> None:
        """Create the error for ``reason`` with a secret-free ``message``."""
        super().__init__(message, code=f"hsm.unseal.{reason}")
        self.reason: UnsealReason = reason


class HsmConfigConflict(HsmError):
    """A second, different SoftHSM2 config was requested in one process (exit 25).

    SoftHSM2 reads ``SOFTHSM2_CONF`` once, at ``C_Initialize``; see the :mod:`hsm`
    package docstring for how several tokens share one process.
    """

    default_code = "hsm.conf_conflict"
    exit_code = 25


class SealKeyMissing(HsmError):
    """``seal``/``destroy_seal_key`` named a seal key version that is not on the token (exit 26)."""

    default_code = "hsm.seal_key_missing"
    exit_code = 26
