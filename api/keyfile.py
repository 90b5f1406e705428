"""The coordinator's Ed25519 request-signing key: seed hex in ``coordinator_key``, 0600."""

from __future__ import annotations

import os

from nacl.signing import SigningKey

from api.settings import Settings


def load_or_create_key(settings: Settings) -> SigningKey:
    """The key at ``settings.key_path``, created (mode 0600, never overwritten) if absent."""
    path = settings.key_path
    if path.exists():
        return SigningKey(bytes.fromhex(path.read_text().strip()))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex())
    return key
