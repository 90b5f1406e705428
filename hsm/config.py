"""HSM connection settings and PKCS#11 module discovery.

:class:`HsmConfig` names one token (by its PKCS#11 ``CKA_LABEL``-style token label), the
user PIN, the PKCS#11 module and, for SoftHSM2, the config file to use. The PIN is held
only in memory and is hidden from ``repr``/``str``.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from hsm.errors import HsmModuleMissing

__all__ = [
    "MODULE_ENV",
    "SOFTHSM_CONF_ENV",
    "STANDARD_MODULE_PATHS",
    "HsmConfig",
    "resolve_module_path",
    "softhsm_env",
]

#: Environment variable that overrides the PKCS#11 module location.
MODULE_ENV = "CUSTODY_PKCS11_MODULE"
#: Environment variable SoftHSM2 reads (once, at ``C_Initialize``) to find its config.
SOFTHSM_CONF_ENV = "SOFTHSM2_CONF"


def _standard_module_paths() -> tuple[str, ...]:
    """Return the usual install locations of ``libsofthsm2.so``, most common first."""
    machine = platform.machine() or "x86_64"
    multiarch = {
        "x86_64": "x86_64-linux-gnu",
        "aarch64": "aarch64-linux-gnu",
        "arm64": "aarch64-linux-gnu",
    }.get(machine, f"{machine}-linux-gnu")
    return (
        "/usr/lib/softhsm/libsofthsm2.so",  # Debian / Ubuntu (package softhsm2)
        f"/usr/lib/{multiarch}/softhsm/libsofthsm2.so",  # Debian multiarch
        "/usr/lib64/pkcs11/libsofthsm2.so",  # Fedora / RHEL
        "/usr/lib/pkcs11/libsofthsm2.so",  # Arch, Alpine
        "/usr/lib64/softhsm/libsofthsm2.so",  # openSUSE
        "/usr/local/lib/softhsm/libsofthsm2.so",  # built from source
        "/opt/homebrew/lib/softhsm/libsofthsm2.so",  # macOS, Apple silicon Homebrew
        "/usr/local/lib/softhsm/libsofthsm2.dylib",  # macOS, Intel Homebrew
    )


#: Locations searched, in order, when neither the config nor ``CUSTODY_PKCS11_MODULE``
#: names a module.
STANDARD_MODULE_PATHS: tuple[str, ...] = _standard_module_paths()


@dataclass(frozen=True)
class HsmConfig:
    """Which token to open and how.

    Attributes:
        token_label: the token label (at most 32 UTF-8 bytes, PKCS#11 ``CK_TOKEN_INFO.label``).
        pin: the user PIN. Never shown by ``repr``/``str``, never logged.
        module_path: the PKCS#11 module; ``None`` means ``$CUSTODY_PKCS11_MODULE``, then
            :data:`STANDARD_MODULE_PATHS` (see :func:`resolve_module_path`).
        softhsm_conf: SoftHSM2 config file to use (``SOFTHSM2_CONF``); ``None`` means the
            process environment / SoftHSM2 default. Ignored by non-SoftHSM modules.
    """

    token_label: str
    pin: str = field(repr=False)
    module_path: str | None = None
    softhsm_conf: str | None = None


def resolve_module_path(config: HsmConfig | None = None) -> str:
    """Return the absolute path of the PKCS#11 module to load.

    Resolution order: ``config.module_path`` -> ``$CUSTODY_PKCS11_MODULE`` -> the first
    existing entry of :data:`STANDARD_MODULE_PATHS`. An explicit choice (config or env)
    that does not exist is an error; it never silently falls through to a default.

    Raises:
        HsmModuleMissing: nothing usable was found; the message lists what was tried.
    """
    explicit = config.module_path if config is not None else None
    if explicit:
        if not Path(explicit).is_file():
            raise HsmModuleMissing(
                f"PKCS#11 module {explicit!r} (from HsmConfig.module_path) does not exist"
            )
        return os.path.abspath(explicit)
    from_env = os.environ.get(MODULE_ENV)
    if from_env:
        if not Path(from_env).is_file():
            raise HsmModuleMissing(
                f"PKCS#11 module {from_env!r} (from ${MODULE_ENV}) does not exist"
            )
        return os.path.abspath(from_env)
    for candidate in STANDARD_MODULE_PATHS:
        if Path(candidate).is_file():
            return candidate
    raise HsmModuleMissing(
        "no PKCS#11 module found: set HsmConfig.module_path or $"
        + MODULE_ENV
        + ", or install SoftHSM2 (Debian: apt-get install softhsm2); searched "
        + ", ".join(STANDARD_MODULE_PATHS)
    )


def softhsm_env(config: HsmConfig) -> dict[str, str]:
    """Return the environment variables a subprocess needs to open ``config``'s token.

    That is ``{"SOFTHSM2_CONF": <absolute path>}`` when the config names a SoftHSM2
    config file, else ``{}`` (the child then inherits whatever the parent has). Merge it
    into the child's environment: ``env={**os.environ, **softhsm_env(cfg)}``. The PIN is
    deliberately *not* included; pass it over a pipe or a file descriptor.
    """
    if config.softhsm_conf is None:
        return {}
    return {SOFTHSM_CONF_ENV: os.path.abspath(config.softhsm_conf)}
