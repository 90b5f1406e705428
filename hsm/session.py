"""The :class:`Hsm` object: one logged-in PKCS#11 session, seal keys, seal/unseal.

Sealing is AES-256-GCM computed *inside the token* with ``CKM_AES_GCM`` (PKCS#11 Current
Mechanisms v2.40/v3.0, "AES GCM and CCM"), under a seal key generated on the token with
``CKM_AES_KEY_GEN`` and the attributes ``CKA_TOKEN=TRUE, CKA_PRIVATE=TRUE,
CKA_SENSITIVE=TRUE, CKA_EXTRACTABLE=FALSE`` (PKCS#11 v2.40 base §4.9 "Secret key
objects"): its value never leaves the HSM, not even wrapped. Seal keys are versioned by
label, ``custody-seal-v{n}``; blobs name their version (see :mod:`hsm.blob`).

Failure policy (fail closed): a PKCS#11 call that fails with a session/token/device error
(:data:`hsm._backend.DEVICE_ERRORS`, or the library having been finalised) triggers one
reconnect -- close the session, re-initialise the library if needed, find the token by
label, open and log in again -- and one retry of the whole operation. If that fails too,
:class:`~hsm.errors.HsmUnavailable` is raised and no result is returned (no blob, no
plaintext, no version). The next call starts again with a reconnect. A SoftHSM2 token
whose directory vanished stays unavailable until the process restarts: SoftHSM2 only
rescans its token directory in ``C_Initialize``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import encode_named_curve_parameters

from hsm import _backend
from hsm._backend import LOCK
from hsm.blob import (
    HEADER_LEN,
    MAX_KEY_VERSION,
    NONCE_LEN,
    TAG_LEN,
    encode_header,
    gcm_aad,
    parse_sealed_header,
)
from hsm.config import HsmConfig, resolve_module_path
from hsm.errors import HsmError, HsmTokenMissing, HsmUnavailable, SealKeyMissing, UnsealError

__all__ = ["HIGH_WATER_LABEL", "SEAL_KEY_LABEL_PREFIX", "Hsm", "seal_key_label"]

log = logging.getLogger("hsm")

T = TypeVar("T")

#: Seal keys are labelled ``custody-seal-v{n}``, n >= 1, no leading zeros.
SEAL_KEY_LABEL_PREFIX = "custody-seal-v"
_LABEL_RE = re.compile(r"custody-seal-v([1-9][0-9]{0,9})")
#: Label of the private CKO_DATA object recording the highest version ever created.
HIGH_WATER_LABEL = "custody-seal-high-water"

# Errors C_Decrypt with CKM_AES_GCM returns for a bad tag, depending on the module:
# CKR_ENCRYPTED_DATA_INVALID (spec), CKR_GENERAL_ERROR (SoftHSM2 2.6), and others seen in
# the wild. A failure of one of these is reported as authentication failure only after a
# health probe shows the token is still there.
_DECRYPT_REJECTS: tuple[type[p11e.PKCS11Error], ...] = (
    p11e.EncryptedDataInvalid,
    p11e.EncryptedDataLenRange,
    p11e.SignatureInvalid,
    p11e.DataInvalid,
    p11e.DataLenRange,
    p11e.GeneralError,
    p11e.FunctionFailed,
)

_STALE_HANDLE = (p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid)
SIGNING_KEY_LABEL_PREFIX = "custody-ed25519-"
_ED25519_OID = "1.3.101.112"  # id-Ed25519, RFC 8410 section 3


def seal_key_label(version: int) -> str:
    """Return the token label of seal key ``version`` (``"custody-seal-v3"``)."""
    return f"{SEAL_KEY_LABEL_PREFIX}{version}"


def _seal_key_template(version: int) -> dict[Attribute, Any]:
    """Attributes of a new seal key (PKCS#11 v2.40 base §4.9, secret key objects)."""
    return {
        Attribute.TOKEN: True,  # persistent, on the token
        Attribute.PRIVATE: True,  # only visible after C_Login
        Attribute.SENSITIVE: True,  # CKA_VALUE can never be read
        Attribute.EXTRACTABLE: False,  # cannot be wrapped out, ever
        Attribute.MODIFIABLE: False,
        Attribute.COPYABLE: False,
        Attribute.ENCRYPT: True,
        Attribute.DECRYPT: True,
        Attribute.WRAP: False,
        Attribute.UNWRAP: False,
        Attribute.SIGN: False,
        Attribute.VERIFY: False,
        Attribute.DERIVE: False,
        Attribute.LABEL: seal_key_label(version),
        Attribute.ID: version.to_bytes(4, "big"),
    }


def _as_bytes(name: str, value: object) -> bytes:
    """Return ``value`` as ``bytes`` if it is bytes-like, else raise ``TypeError``."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, got {type(value).__name__}")


class Hsm:
    """A logged-in session on one token; thread-safe (all calls serialise on one lock).

    Create with :meth:`open`; use as a context manager or call :meth:`close`.
    """

    _config: HsmConfig
    _module: str
    _library: _backend.Library
    _session: Any
    _token_serial: bytes | None
    _keys: dict[int, Any]
    _signing_keys: dict[str, Any]
    _closed: bool

    def __init__(self) -> None:
        """Do not call; use :meth:`Hsm.open`."""
        raise TypeError("use Hsm.open(config)")

    # -- lifecycle -----------------------------------------------------------------

    @classmethod
    def open(cls, config: HsmConfig) -> Hsm:
        """Load the module, find the token by label, open an R/W session and log in.

        Raises:
            HsmModuleMissing: module not found / not loadable (exit 20).
            HsmTokenMissing: no (unique, provisioned) token with that label, or
                ``C_Initialize`` failed (exit 21).
            HsmWrongPin: PIN rejected (exit 22).
            HsmConfigConflict: another SoftHSM2 config is already bound in this process.
            HsmError: ``hsm.pkcs11_error`` for anything else.
        """
        module = resolve_module_path(config)
        self = cls.__new__(cls)
        self._config = config
        self._module = module
        self._session = None
        self._token_serial = None
        self._keys = {}
        self._signing_keys = {}
        self._closed = False
        with LOCK:
            self._library = _backend.get_library(module, config.softhsm_conf)
            try:
                self._connect()
            except p11e.PKCS11Error as exc:
                raise self._unexpected("open", exc) from exc
        return self

    @property
    def token_label(self) -> str:
        """Label of the token this object is bound to."""
        return self._config.token_label

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def close(self) -> None:
        """Close the session (idempotent). The token login ends with its last session."""
        with LOCK:
            if self._closed:
                return
            self._disconnect()
            self._closed = True

    def __enter__(self) -> Hsm:
        """Return self."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the session."""
        self.close()

    def __repr__(self) -> str:
        """Show token label and state (never the PIN)."""
        state = "closed" if self._closed else "open"
        return f"<Hsm token={self._config.token_label!r} {state}>"

    def _connect(self) -> None:
        """Open a session on the token and log in (caller holds LOCK)."""
        token = _backend.find_token(self._library, self._config.token_label)
        session = token.open(rw=True)
        try:
            _backend.login(self._library, session, token, self._config.pin, id(self))
        except BaseException:
            self._close_quietly(session)
            raise
        self._session = session
        self._token_serial = bytes(token.serial)
        self._keys.clear()
        self._signing_keys.clear()

    @staticmethod
    def _close_quietly(session: Any) -> None:
        """``C_CloseSession`` ignoring errors (the session may already be gone)."""
        try:
            session.close()
        except p11e.PKCS11Error:
            pass

    def _disconnect(self) -> None:
        """Drop the session and cached handles (caller holds LOCK)."""
        if self._session is not None:
            self._close_quietly(self._session)
        if self._token_serial is not None:
            _backend.logout_holder(self._library, self._token_serial, id(self))
        self._session = None
        self._token_serial = None
        self._keys.clear()
        self._signing_keys.clear()

    def _reconnect(self) -> None:
        """Drop the session, re-initialise the library if finalised, log in again.

        When the token is not found, the module is initialised afresh once and the token
        looked up again, so a node whose token was unreadable for a while (file descriptors
        exhausted, a volume remounted) recovers on its own instead of until a restart.
        """
        self._disconnect()
        self._library = _backend.get_library(self._module, self._config.softhsm_conf)
        try:
            self._connect()
        except HsmTokenMissing as exc:
            if exc.code != "hsm.token_missing":
                raise
            log.warning(
                "hsm.library_reinitialized token=%s reason=%s", self._config.token_label, exc.code
            )
            self._library.reinitialize()
            self._connect()

    # -- the retry wrapper ---------------------------------------------------------

    def _unexpected(self, op: str, exc: p11e.PKCS11Error) -> HsmError:
        """Wrap a PKCS#11 error that is not a device/session error."""
        return HsmError(
            f"{op} on token {self._config.token_label!r} failed: PKCS#11 {type(exc).__name__}",
            code="hsm.pkcs11_error",
        )

    def _run(self, op: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(session)`` under LOCK with one reconnect + retry on device errors."""
        with LOCK:
            if self._closed:
                raise HsmError(
                    f"{op}: Hsm for token {self._config.token_label!r} is closed",
                    code="hsm.closed",
                )
            reason = "unknown"
            for attempt in (1, 2):
                if attempt == 2 or self._session is None:
                    try:
                        self._reconnect()
                    except HsmError as exc:
                        reason = f"reconnect failed: {exc.code}"
                        continue
                    except p11e.PKCS11Error as exc:
                        if not _backend.is_device_error(exc, self._library):
                            raise self._unexpected(op, exc) from exc
                        reason = f"reconnect failed: {type(exc).__name__}"
                        continue
                try:
                    _backend.check_session(self._library, self._session)
                    return fn(self._session)
                except p11e.PKCS11Error as exc:
                    if not _backend.is_device_error(exc, self._library):
                        raise self._unexpected(op, exc) from exc
                    reason = type(exc).__name__
                    log.warning(
                        "hsm.session_lost op=%s token=%s reason=%s attempt=%d",
                        op,
                        self._config.token_label,
                        reason,
                        attempt,
                    )
            self._disconnect()
            log.error(
                "hsm.unavailable op=%s token=%s reason=%s", op, self._config.token_label, reason
            )
            raise HsmUnavailable(
                f"{op} on token {self._config.token_label!r} failed: HSM session/device gone "
                f"({reason}); one reconnect and retry failed; fail closed, no result returned"
            )

    # -- seal keys -----------------------------------------------------------------

    def _check_token(self, session: Any) -> None:
        """Health probe: ``C_GetTokenInfo`` on our slot; raises a device error if gone."""
        session.token.slot.get_token()

    def _versions(self, session: Any) -> list[int]:
        """Sorted seal key versions on the token (probe the token if none are seen)."""
        versions: set[int] = set()
        for obj in session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
        ):
            match = _LABEL_RE.fullmatch(obj[Attribute.LABEL])
            if match:
                versions.add(int(match.group(1)))
        if not versions:
            # A vanished SoftHSM2 token answers C_FindObjects with "no objects": make
            # sure "no seal key" is real before anyone acts on it (e.g. creates v1).
            self._check_token(session)
        return sorted(v for v in versions if v <= MAX_KEY_VERSION)

    def _lookup(self, session: Any, version: int) -> Any | None:
        """Return the key object of ``version`` (cached handle), or ``None``."""
        key = self._keys.get(version)
        if key is not None:
            return key
        if not 1 <= version <= MAX_KEY_VERSION:
            return None
        found = list(
            session.get_objects(
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: seal_key_label(version)}
            )
        )
        if not found:
            self._check_token(session)
            return None
        if len(found) > 1:
            raise HsmError(
                f"token {self._config.token_label!r} holds {len(found)} keys labelled "
                f"{seal_key_label(version)!r}; refusing to guess",
                code="hsm.seal_key_duplicate",
            )
        self._keys[version] = found[0]
        return found[0]

    def _with_key(
        self,
        session: Any,
        version: int,
        op: Callable[[Any], T],
        missing: Callable[[], HsmError],
    ) -> T:
        """Run ``op(key)``; re-resolve a stale handle once; ``missing()`` if absent."""
        for _ in range(2):
            key = self._lookup(session, version)
            if key is None:
                raise missing()
            try:
                return op(key)
            except _STALE_HANDLE:
                # Destroyed by another session/process, or the token vanished.
                self._keys.pop(version, None)
                self._check_token(session)
        raise missing()

    def _high_water(self, session: Any) -> tuple[int, list[Any]]:
        """Return (highest seal key version ever created, its CKO_DATA records).

        The record (label :data:`HIGH_WATER_LABEL`, a private token data object holding a
        u32) makes versions monotonic: a destroyed version number is never reused, so a
        blob of a destroyed key always reports ``unknown_key_version``.
        """
        records = list(
            session.get_objects(
                {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: HIGH_WATER_LABEL}
            )
        )
        values = [int.from_bytes(r[Attribute.VALUE], "big") for r in records]
        return max(values, default=0), records

    def _record_high_water(self, session: Any, old: list[Any], version: int) -> None:
        """Store ``version`` as the high-water mark: write the new record, drop the old.

        (SoftHSM2 refuses C_SetAttributeValue on CKA_VALUE; if we die between create and
        destroy, :meth:`_high_water` takes the maximum of the records.)
        """
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.LABEL: HIGH_WATER_LABEL,
                Attribute.APPLICATION: "tp-wallet-custody",
                Attribute.VALUE: version.to_bytes(4, "big"),
            }
        )
        for record in old:
            record.destroy()

    def _create(self, session: Any) -> int:
        """Generate a seal key as version max(existing, high-water)+1; return it."""
        for _ in range(3):
            high_water, records = self._high_water(session)
            version = max(max(self._versions(session), default=0), high_water) + 1
            if version > MAX_KEY_VERSION:
                raise HsmError("seal key versions exhausted", code="hsm.seal_key_exhausted")
            key = session.generate_key(
                KeyType.AES,
                256,
                label=seal_key_label(version),
                id=version.to_bytes(4, "big"),
                store=True,
                template=_seal_key_template(version),
            )
            same = list(
                session.get_objects(
                    {
                        Attribute.CLASS: ObjectClass.SECRET_KEY,
                        Attribute.LABEL: seal_key_label(version),
                    }
                )
            )
            if len(same) == 1:
                self._record_high_water(session, records, version)
                self._keys[version] = key
                log.info(
                    "hsm.seal_key_created token=%s version=%d", self._config.token_label, version
                )
                return version
            # Another process created the same version concurrently: back off, retry.
            key.destroy()
        raise HsmError(
            "could not allocate a seal key version (concurrent creators)",
            code="hsm.seal_key_race",
        )

    def _current(self, session: Any) -> int:
        """Highest seal key version, creating v1 on a token that has none."""
        versions = self._versions(session)
        return versions[-1] if versions else self._create(session)

    def seal_key_versions(self) -> list[int]:
        """Return the seal key versions on the token, ascending (``[]`` if none).

        Raises:
            HsmUnavailable: the token is gone (an absent token is never reported as empty).
        """
        return self._run("seal_key_versions", self._versions)

    def current_seal_version(self) -> int:
        """Return the highest seal key version; generate v1 if the token has none.

        The answer is read from the token on every call (never cached), so a rotation
        made by another process is picked up by the next :meth:`seal`.
        """
        return self._run("current_seal_version", self._current)

    def create_seal_key(self) -> int:
        """Generate a new seal key (``CKM_AES_KEY_GEN``, AES-256) as the next version.

        Versions only grow: the next one is above every version ever created on the
        token (destroyed ones included), so a destroyed version number is never reused.

        The key is a token object with ``CKA_SENSITIVE=TRUE``, ``CKA_EXTRACTABLE=FALSE``,
        ``CKA_PRIVATE=TRUE``, encrypt/decrypt only. Returns the new version, which becomes
        the default for :meth:`seal`. Blobs sealed under older versions still unseal until
        those versions are destroyed.
        """
        return self._run("create_seal_key", self._create)

    def destroy_seal_key(self, version: int) -> None:
        """Destroy seal key ``version`` (``C_DestroyObject``). Irreversible.

        Every blob sealed under it becomes permanently unreadable
        (:class:`~hsm.errors.UnsealError` ``unknown_key_version``): re-seal those first
        (:meth:`reseal`, :func:`hsm.sealed_key_version`) and stop writers that might
        still seal under it.

        Raises:
            SealKeyMissing: no such version on the token.
        """
        _check_version_type(version)

        def destroy(session: Any) -> None:
            self._with_key(
                session,
                version,
                lambda key: key.destroy(),
                lambda: SealKeyMissing(
                    f"seal key version {version} is not on token {self._config.token_label!r}"
                ),
            )
            self._keys.pop(version, None)
            log.info(
                "hsm.seal_key_destroyed token=%s version=%d", self._config.token_label, version
            )

        self._run("destroy_seal_key", destroy)

    # -- seal / unseal -------------------------------------------------------------

    def seal(self, plaintext: bytes, aad: bytes, version: int | None = None) -> bytes:
        """Encrypt ``plaintext`` with AES-256-GCM inside the HSM, binding ``aad``.

        A fresh 96-bit nonce comes from the token's RNG (``C_GenerateRandom``) for every
        call, the tag is 128 bits (NIST SP 800-38D §5.2.1.1, §8.2.2). ``version=None``
        uses :meth:`current_seal_version` (creating v1 on a fresh token). Returns
        ``b"TPS1" || u32 version || nonce || ciphertext || tag`` (see :mod:`hsm.blob`).

        Args:
            plaintext: the secret to seal (any length, including empty).
            aad: context to bind, normally :func:`hsm.seal_aad` output.
            version: seal key version to use; default the current one.

        Raises:
            SealKeyMissing: ``version`` is not on the token.
            HsmUnavailable: the HSM is gone (nothing was sealed).
        """
        data = _as_bytes("plaintext", plaintext)
        context = _as_bytes("aad", aad)
        if version is not None:
            _check_version_type(version)
            if not 1 <= version <= MAX_KEY_VERSION:
                raise SealKeyMissing(
                    f"seal key version {version} is not on token {self._config.token_label!r} "
                    "(versions are 1..2^32-1)"
                )

        def do_seal(session: Any) -> bytes:
            use = version if version is not None else self._current(session)
            nonce = session.generate_random(NONCE_LEN * 8)
            params = GCMParams(nonce, gcm_aad(use, context), TAG_LEN * 8)
            body: bytes = self._with_key(
                session,
                use,
                lambda key: key.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=params),
                lambda: SealKeyMissing(
                    f"seal key version {use} is not on token {self._config.token_label!r}"
                ),
            )
            if len(body) != len(data) + TAG_LEN:
                raise HsmError(
                    f"CKM_AES_GCM returned {len(body)} bytes for {len(data)} bytes of input",
                    code="hsm.gcm_output",
                )
            return encode_header(use, nonce) + body

        return self._run("seal", do_seal)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt and authenticate a blob from :meth:`seal` inside the HSM.

        Raises:
            UnsealError: with ``reason`` ``bad_header`` (malformed/short/not TPS1),
                ``unknown_key_version`` (never created or destroyed) or
                ``authentication_failed`` (tampered blob, or ``aad`` differs from the one
                used to seal: other key id, node id, share version or purpose).
            HsmUnavailable: the HSM is gone.
        """
        header = parse_sealed_header(blob)
        raw = bytes(blob)
        context = _as_bytes("aad", aad)
        body = raw[HEADER_LEN:]
        version = header.key_version
        params = GCMParams(header.nonce, gcm_aad(version, context), TAG_LEN * 8)

        def do_unseal(session: Any) -> bytes:
            def decrypt(key: Any) -> bytes:
                try:
                    result: bytes = key.decrypt(
                        body, mechanism=Mechanism.AES_GCM, mechanism_param=params
                    )
                except _DECRYPT_REJECTS:
                    self._check_token(session)  # device gone -> retry path, not "tampered"
                    raise UnsealError(
                        "authentication_failed",
                        "authentication failed: AES-GCM tag mismatch under seal key version "
                        f"{version} (blob tampered with, or AAD differs: key id, node id, "
                        "share version or purpose)",
                    ) from None
                return result

            return self._with_key(
                session,
                version,
                decrypt,
                lambda: UnsealError(
                    "unknown_key_version",
                    f"unknown key version: seal key version {version} is not on token "
                    f"{self._config.token_label!r} (never created, or destroyed by rotation)",
                ),
            )

        return self._run("unseal", do_unseal)

    def reseal(self, blob: bytes, aad: bytes, version: int | None = None) -> bytes:
        """Unseal ``blob`` and seal the plaintext again under ``version`` (default current).

        Runs under the HSM lock so no other caller interleaves; used for seal key
        rotation. Raises what :meth:`unseal` and :meth:`seal` raise.
        """
        with LOCK:
            return self.seal(self.unseal(blob, aad), aad, version)

    def random(self, n: int) -> bytes:
        """Return ``n`` random bytes from the token RNG (``C_GenerateRandom``)."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return b""

        def generate(session: Any) -> bytes:
            return bytes(session.generate_random(n * 8))

        return self._run("random", generate)

    # -- Ed25519 signing keys (the coordinator's identity) ---------------------------

    def create_signing_key(self, name: str) -> bytes:
        """Generate a non-extractable Ed25519 key pair on the token; return the public key.

        ``CKM_EC_EDWARDS_KEY_PAIR_GEN`` with the curve named by OID 1.3.101.112 (PKCS#11
        v3.0 section 2.3.5, RFC 8410): the private key is sensitive and never leaves the
        token. Refuses (``hsm.signing_key_exists``) to make a second key of one name.
        """
        label = signing_key_label(name)

        def generate(session: Any) -> bytes:
            if list(session.get_objects({Attribute.LABEL: label})):
                raise HsmError(
                    f"token {self._config.token_label!r} already has signing key {name!r}",
                    code="hsm.signing_key_exists",
                )
            params = session.create_domain_parameters(
                KeyType.EC_EDWARDS,
                {Attribute.EC_PARAMS: encode_named_curve_parameters(_ED25519_OID)},
                local=True,
            )
            public, _private = params.generate_keypair(
                store=True,
                label=label,
                public_template={Attribute.VERIFY: True, Attribute.TOKEN: True},
                private_template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.SIGN: True,
                },
            )
            return _ed25519_point(public[Attribute.EC_POINT])

        return self._run("create_signing_key", generate)

    def signing_public_key(self, name: str) -> bytes:
        """The 32-byte Ed25519 public key of signing key ``name``."""

        def read(session: Any) -> bytes:
            public = self._find_signing_object(session, name, ObjectClass.PUBLIC_KEY)
            return _ed25519_point(public[Attribute.EC_POINT])

        return self._run("signing_public_key", read)

    def sign_ed25519(self, name: str, data: bytes) -> bytes:
        """Sign ``data`` with signing key ``name`` inside the token (``CKM_EDDSA``, pure)."""
        data = _as_bytes("data", data)

        def sign(session: Any) -> bytes:
            for _ in range(2):
                key = self._signing_keys.get(name)
                if key is None:
                    key = self._find_signing_object(session, name, ObjectClass.PRIVATE_KEY)
                    self._signing_keys[name] = key
                try:
                    return bytes(key.sign(data, mechanism=Mechanism.EDDSA))
                except _STALE_HANDLE:
                    self._signing_keys.pop(name, None)
                    self._check_token(session)
            raise self._no_signing_key(name, 0)

        return self._run("sign_ed25519", sign)

    def _find_signing_object(self, session: Any, name: str, cls: ObjectClass) -> Any:
        """The one public or private key object of signing key ``name``."""
        found = list(
            session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: signing_key_label(name)})
        )
        if len(found) != 1:
            raise self._no_signing_key(name, len(found))
        return found[0]

    def _no_signing_key(self, name: str, count: int) -> HsmError:
        what = "no" if count == 0 else f"{count}"
        return HsmError(
            f"token {self._config.token_label!r} has {what} signing key labelled "
            f"{signing_key_label(name)!r}",
            code="hsm.signing_key_missing" if count == 0 else "hsm.signing_key_duplicate",
        )


def signing_key_label(name: str) -> str:
    """Token label of Ed25519 signing key ``name`` (``"custody-ed25519-coordinator"``)."""
    if not re.fullmatch(r"[a-z0-9-]{1,32}", name):
        raise ValueError("a signing key name is 1-32 characters of [a-z0-9-]")
    return f"{SIGNING_KEY_LABEL_PREFIX}{name}"


def _ed25519_point(ec_point: bytes) -> bytes:
    """The raw key from CKA_EC_POINT: a DER OCTET STRING of 32 bytes (PKCS#11 v3.0 2.3.5)."""
    raw = bytes(ec_point)
    if len(raw) == 34 and raw[:2] == b"\x04\x20":
        return raw[2:]
    if len(raw) == 32:  # some modules return the bare point
        return raw
    raise HsmError(f"unexpected CKA_EC_POINT of {len(raw)} bytes", code="hsm.pkcs11_error")


def _check_version_type(version: object) -> None:
    """Reject non-int seal key versions (``bool`` included) with ``TypeError``."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"seal key version must be int, got {type(version).__name__}")
