"""Layout of a node's data directory and its public bootstrap file ``node.json``.

::

    D/node.json      public: node id, party id, token label, PKCS#11 module, SoftHSM2 conf
    D/token/         SoftHSM2 token directory (dev/tests) and D/token/softhsm2.conf
    D/hsm.pin        dev only: the user PIN, mode 0600 (prod: a real PIN source)
    D/node.db        SQLCipher database (+ -wal / -shm while open)
    D/node.dbkey     the random 32-byte database key, sealed by the HSM
    D/tls/node.key   the node's TLS key (ECDSA P-256), PKCS#8 PEM encrypted under a random
                     passphrase (0600) kept HSM-sealed in node.db (identity row "tls")
    D/tls/node.csr   its CSR (SAN urn:tpwc:node:<id>, identity binding: custody.tls)
    D/tls/node.crt   the CA's certificate for it; D/tls/ca.pem the CA the node trusts for
                     client certificates (the coordinator's): both written by the provisioner

``node.json`` holds nothing secret and nothing an attacker gains by editing: the
coordinator key, peers and key metadata live in the encrypted, authenticated database.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import ssl
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from custody import tls
from hsm.blob import seal_aad

__all__ = [
    "NodeConfig",
    "Paths",
    "PIN_ENV",
    "NODE_ID_RE",
    "ConfigError",
    "read_pin",
    "TLS_IDENTITY_KIND",
    "tls_passphrase_aad",
    "new_tls_passphrase",
    "provision_tls",
    "server_tls",
]

PIN_ENV = "CUSTODY_HSM_PIN"
NODE_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ConfigError(Exception):
    """The data directory is missing, not initialised, or the PIN cannot be found."""

    exit_code = 2


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "node.json"

    @property
    def token_dir(self) -> Path:
        return self.root / "token"

    @property
    def softhsm_conf(self) -> Path:
        return self.root / "token" / "softhsm2.conf"

    @property
    def pin_file(self) -> Path:
        return self.root / "hsm.pin"

    @property
    def db(self) -> Path:
        return self.root / "node.db"

    @property
    def db_key(self) -> Path:
        return self.root / "node.dbkey"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def tls_key(self) -> Path:
        return self.root / "tls" / "node.key"

    @property
    def tls_csr(self) -> Path:
        return self.root / "tls" / "node.csr"

    @property
    def tls_cert(self) -> Path:
        return self.root / "tls" / "node.crt"

    @property
    def tls_ca(self) -> Path:
        return self.root / "tls" / "ca.pem"


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    party_id: int
    token_label: str
    module_path: str | None = None
    softhsm_conf: str | None = None
    format: int = 1

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        if not path.is_file():
            raise ConfigError(f"{path.parent} is not an initialised node (no node.json); run init")
        try:
            raw = json.loads(path.read_text())
            return cls(
                node_id=str(raw["node_id"]),
                party_id=int(raw["party_id"]),
                token_label=str(raw["token_label"]),
                module_path=raw.get("module_path"),
                softhsm_conf=raw.get("softhsm_conf"),
                format=int(raw.get("format", 1)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is malformed ({type(exc).__name__})") from None


def read_pin(paths: Paths, pin_file: Path | None = None) -> str:
    """The HSM user PIN: ``--pin-file``, else ``$CUSTODY_HSM_PIN``, else the dev file D/hsm.pin."""
    if pin_file is not None:
        try:
            return Path(pin_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read PIN file {pin_file}: {exc.strerror}") from None
    env = os.environ.get(PIN_ENV)
    if env:
        return env.strip()
    if paths.pin_file.is_file():
        return paths.pin_file.read_text().strip()
    raise ConfigError(f"no HSM PIN: pass --pin-file, set ${PIN_ENV}, or create {paths.pin_file}")


# -- TLS (docs/SECURITY.md "Transport: mutual TLS") -------------------------------------------
#: The TLS key's passphrase is kept as the identity row of this kind in the SQLCipher
#: database, sealed by the HSM like the identity keys, so seal-key rotation rewraps it.
TLS_IDENTITY_KIND = "tls"


def tls_passphrase_aad(node_id: str) -> bytes:
    """The passphrase's AAD: ``vault.identity_aad(node_id, "tls")`` (the identity table's
    AAD, which seal-key rotation recomputes for every row of that table)."""
    return seal_aad(TLS_IDENTITY_KIND, node_id, 0, "identity")


def new_tls_passphrase() -> bytes:
    return secrets.token_hex(32).encode()


def provision_tls(
    paths: Paths,
    node_id: str,
    passphrase: bytes,
    sign_pk: bytes,
    sign: Callable[[bytes], bytes],
    hosts: Sequence[str],
) -> bytes:
    """Make this node's TLS key and its CSR (PEM, returned and kept in D/tls/node.csr).

    The key is written encrypted (PKCS#8, ``BestAvailableEncryption``, 0600) under
    ``passphrase``, which the node keeps sealed by its HSM (:data:`TLS_IDENTITY_KIND`), so
    the key at rest is protected like the shares; OpenSSL needs the key in process memory
    to serve, which a PKCS#11 token would avoid only through an OpenSSL provider we do not
    ship. ``sign`` is the node's identity key (the roster's ``sign_pk``): it signs the
    binding of the TLS key to this node (:func:`custody.tls.node_csr`). Each call makes a
    new key (re-keying: the CA must then issue a new certificate)."""
    paths.tls_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(paths.tls_dir, 0o700)
    key = tls.new_key()
    tls.write_private(paths.tls_key, tls.key_pem(key, passphrase))
    csr = tls.node_csr(node_id, key, sign_pk, sign, hosts)
    data = csr.public_bytes(serialization.Encoding.PEM)
    tls.write_public(paths.tls_csr, data)
    paths.tls_cert.unlink(missing_ok=True)  # a certificate of the old key is useless
    return data


def server_tls(paths: Paths, passphrase: Callable[[], bytes]) -> ssl.SSLContext | None:
    """The node's TLS 1.3 server context requiring a client certificate of D/tls/ca.pem's
    CA, or ``None`` when the data directory has no certificate (plain HTTP: ``run --dev``
    only). ``passphrase`` unseals the key's passphrase. :class:`ConfigError` names the
    missing, too open or unreadable file."""
    if not paths.tls_cert.exists():
        return None
    for f in (paths.tls_key, paths.tls_ca):
        if not f.is_file():
            raise ConfigError(f"{paths.tls_cert} exists but {f} is missing")
    mode = paths.tls_key.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{paths.tls_key} is mode {mode:o}: it must be 0600")
    try:
        return tls.server_context(paths.tls_cert, paths.tls_key, paths.tls_ca, passphrase())
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"TLS material in {paths.tls_dir} does not load: {exc}") from None
