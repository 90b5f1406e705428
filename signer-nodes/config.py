"""Layout of a node's data directory and its public bootstrap file ``node.json``.

::

    D/node.json      public: node id, party id, token label, PKCS#11 module, SoftHSM2 conf
    D/token/         SoftHSM2 token directory (dev/tests) and D/token/softhsm2.conf
    D/hsm.pin        dev only: the user PIN, mode 0600 (prod: a real PIN source)
    D/node.db        SQLCipher database (+ -wal / -shm while open)
    D/node.dbkey     the random 32-byte database key, sealed by the HSM

``node.json`` holds nothing secret and nothing an attacker gains by editing: the
coordinator key, peers and key metadata live in the encrypted, authenticated database.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["NodeConfig", "Paths", "PIN_ENV", "NODE_ID_RE", "ConfigError", "read_pin"]

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
