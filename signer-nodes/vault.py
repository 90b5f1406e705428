"""The node's view of its HSM: seal/unseal with the node's AADs, the sealed DB key file,
seal key versions for rotation.

Every sealed item's AAD is :func:`hsm.blob.seal_aad` with a ``purpose`` naming its kind,
so a blob is accepted only as what it was sealed as, for this node, this key id and this
share version:

==============  ==========================  ==============================================
purpose         key_id                      share_version
==============  ==========================  ==============================================
``share``       the key id                  the share version (refresh bumps it)
``nonce``       ``<key id>/<nonce id>``     0
``presig``      ``<key id>/<presig id>``    0
``identity``    ``sign`` or ``box``         0
``sqlcipher-key`` ``node.db``               0
==============  ==========================  ==============================================
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from hsm.blob import seal_aad, sealed_key_version
from hsm.config import HsmConfig
from hsm.errors import HsmError, HsmTokenMissing
from hsm.provision import provision_dev_token
from hsm.session import Hsm
from signer_nodes.config import NodeConfig, Paths

__all__ = ["Vault", "share_aad", "ledger_aad", "identity_aad", "db_key_aad", "atomic_write"]


def share_aad(key_id: str, node_id: str, share_version: int) -> bytes:
    return seal_aad(key_id, node_id, share_version, "share")


def ledger_aad(key_id: str, node_id: str, kind: str, item_id: str) -> bytes:
    return seal_aad(f"{key_id}/{item_id}", node_id, 0, kind)


def identity_aad(node_id: str, kind: str) -> bytes:
    return seal_aad(kind, node_id, 0, "identity")


def db_key_aad(node_id: str) -> bytes:
    return seal_aad("node.db", node_id, 0, "sqlcipher-key")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (tmp file, fsync, rename, fsync dir)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Vault:
    """One logged-in HSM session for one node (thin: the crypto is all in :mod:`hsm`)."""

    def __init__(self, paths: Paths, node_id: str, hsm: Hsm) -> None:
        self.paths = paths
        self.node_id = node_id
        self.hsm = hsm

    @classmethod
    def provision(cls, paths: Paths, config: NodeConfig, pin: str) -> tuple[Vault, str]:
        """Create the node's dev SoftHSM2 token (under D/token) and open it.

        Returns the vault and the SoftHSM2 config path that holds the token (it is another
        directory when this process had already bound SoftHSM2 to one; see hsm.provision).
        """
        so_pin = secrets.token_hex(16)  # dev token: the SO PIN is not kept anywhere
        hcfg = provision_dev_token(
            paths.token_dir, config.token_label, pin, so_pin, module_path=config.module_path
        )
        del so_pin
        return cls(paths, config.node_id, Hsm.open(hcfg)), str(hcfg.softhsm_conf or "")

    @classmethod
    def open(cls, paths: Paths, config: NodeConfig, pin: str) -> Vault:
        conf = config.softhsm_conf
        if conf and not Path(conf).is_absolute():
            conf = str(paths.root / conf)  # relative to the data directory
        if conf and not Path(conf).is_file():
            raise HsmTokenMissing(
                f"SoftHSM2 config {conf} is missing (token directory deleted or moved?)",
                code="hsm.token_missing",
            )
        hcfg = HsmConfig(
            config.token_label, pin, module_path=config.module_path, softhsm_conf=conf or None
        )
        return cls(paths, config.node_id, Hsm.open(hcfg))

    def close(self) -> None:
        self.hsm.close()

    # -- seal / unseal -------------------------------------------------------------------
    def seal(self, plaintext: bytes, aad: bytes, version: int | None = None) -> bytes:
        return self.hsm.seal(plaintext, aad, version)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        return self.hsm.unseal(blob, aad)

    @staticmethod
    def blob_version(blob: bytes) -> int:
        return sealed_key_version(blob)

    def current_version(self) -> int:
        return self.hsm.current_seal_version()

    def versions(self) -> list[int]:
        return self.hsm.seal_key_versions()

    def health(self) -> str:
        try:
            self.hsm.seal_key_versions()
        except HsmError as exc:
            return exc.code
        return "ok"

    # -- the database key file -----------------------------------------------------------
    def write_db_key(self, db_key: bytes, version: int | None = None) -> None:
        atomic_write(self.paths.db_key, self.seal(db_key, db_key_aad(self.node_id), version))

    def read_db_key(self) -> bytes:
        return self.unseal(self.paths.db_key.read_bytes(), db_key_aad(self.node_id))
