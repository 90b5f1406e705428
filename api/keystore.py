"""The coordinator's request-signing key, inside the coordinator's own PKCS#11 token.

The key is a non-extractable Ed25519 key pair made on the token
(:meth:`hsm.Hsm.create_signing_key`); every node request is signed inside the token
(``CKM_EDDSA``) and the private key never exists in this process, on disk or in a backup
of the data directory. In development the token is a SoftHSM2 token under ``D/token``
(:func:`hsm.provision_dev_token`); ``D/hsm.json`` names its label and SoftHSM2 config.

The user PIN comes from ``$CUSTODY_COORDINATOR_PIN_FILE`` (a secret file outside the data
directory: the production layout), else ``$CUSTODY_COORDINATOR_PIN``, else the dev-only
file ``D/hsm.pin`` (0600, created at first start). The key authorises nothing on its own:
it only proves to the nodes that a request came through the coordinator.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from api.settings import Settings
from hsm import Hsm, HsmConfig, provision_dev_token

KEY_NAME = "coordinator"
PIN_FILE_ENV = "CUSTODY_COORDINATOR_PIN_FILE"
PIN_ENV = "CUSTODY_COORDINATOR_PIN"


class LegacyKeyFile(RuntimeError):
    """A ``coordinator_key`` hex file from before the key moved into the token."""


class CoordinatorKey:
    """The coordinator's Ed25519 identity: the public key, and signing in the token."""

    def __init__(self, hsm: Hsm, public_key: bytes) -> None:
        self.hsm = hsm
        self.public_key = public_key

    def sign(self, data: bytes) -> bytes:
        return self.hsm.sign_ed25519(KEY_NAME, data)

    def close(self) -> None:
        self.hsm.close()


def write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (never wider, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def private_files(settings: Settings) -> None:
    """Make the SQLite database files 0600 (they are created with the process umask)."""
    db = settings.data_dir / "coordinator.db"
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if p.exists():
            os.chmod(p, 0o600)


def _pin(settings: Settings) -> str:
    if settings.coordinator_pin_file is not None:  # $CUSTODY_COORDINATOR_PIN_FILE
        return Path(settings.coordinator_pin_file).read_text().strip()
    if settings.coordinator_pin is not None:  # $CUSTODY_COORDINATOR_PIN
        return settings.coordinator_pin.get_secret_value()
    path = settings.data_dir / "hsm.pin"  # dev only: next to the token
    if not path.exists():
        write_private(path, secrets.token_hex(16))
    return path.read_text().strip()


def _label(settings: Settings) -> str:
    """Unique per data directory: one process may hold several coordinators' tokens
    (tests), and SoftHSM2 binds a process to one token directory."""
    return "coord-" + hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:20]


def load_or_create(settings: Settings) -> CoordinatorKey:
    """Open the coordinator's token and key; on first start provision both."""
    private_dir(settings.data_dir)
    if settings.legacy_key_path.exists():
        raise LegacyKeyFile(
            f"{settings.legacy_key_path} holds a coordinator key in a file; the key now lives "
            "in the coordinator's HSM token. Delete the file, start again and re-initialise "
            "the nodes with the new coordinator public key."
        )
    pin = _pin(settings)
    state = settings.data_dir / "hsm.json"
    if state.exists():
        doc = json.loads(state.read_text())
        hsm = Hsm.open(HsmConfig(doc["token_label"], pin, softhsm_conf=doc["softhsm_conf"]))
        return CoordinatorKey(hsm, hsm.signing_public_key(KEY_NAME))
    token_dir = settings.data_dir / "token"
    private_dir(token_dir)
    cfg = provision_dev_token(token_dir, _label(settings), pin, secrets.token_hex(16))
    hsm = Hsm.open(cfg)
    public = hsm.create_signing_key(KEY_NAME)
    write_private(
        state,
        json.dumps({"token_label": cfg.token_label, "softhsm_conf": cfg.softhsm_conf}),
    )
    return CoordinatorKey(hsm, public)
