"""The signer node: provisioning, the data-directory lock, and the composition of its parts.

A :class:`Node` owns one data directory (:mod:`signer_nodes.config`): an HSM token, the
SQLCipher database and its sealed key file. It provisions (:meth:`Node.init`) or opens
(:meth:`Node.open`, which finishes any interrupted seal-key rotation and fails the
sessions a restart lost) and composes, each with one job:

* :class:`~signer_nodes.identity.Identity`: identity keys, peers, envelopes;
* :class:`~signer_nodes.shares.ShareStore`: sealed shares and ledger items;
* :class:`~signer_nodes.sessions.SessionHost`: protocol sessions (DKG, key setup, presign,
  and through :class:`~signer_nodes.ceremonies.CeremonyFactory` the key ceremonies);
* :class:`~signer_nodes.ceremonies.Ceremonies`: commit a ceremony's pending share;
* :class:`~signer_nodes.pipeline.SigningPipeline`: the one write-ahead signing pipeline;
* :class:`~signer_nodes.anchor.Anchor`: the governance trust anchor (roster, raw keys);
* :class:`~signer_nodes.checkpoint.Checkpoints`: release log view, audit checkpoints.

The thin methods below are the node's API for the service, the CLI, tests and benchmarks.
Fault hooks (:mod:`signer_nodes.faults`) are passed in; production passes none.

Imports: every other module of the package but ``service`` and ``cli``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from signer_nodes import logs, rotation, vault
from signer_nodes.anchor import Anchor
from signer_nodes.ceremonies import Ceremonies, CeremonyFactory
from signer_nodes.checkpoint import Checkpoints
from signer_nodes.config import NODE_ID_RE, ConfigError, NodeConfig, Paths, read_pin
from signer_nodes.envelope import Peer
from signer_nodes.faults import NO_FAULTS, FaultHooks
from signer_nodes.identity import Identity
from signer_nodes.pipeline import Outcome, SigningPipeline, SignItem
from signer_nodes.protocols import Protocols
from signer_nodes.sessions import RESTARTED, SessionHost
from signer_nodes.shares import ShareStore
from signer_nodes.store import NodeStore

__all__ = ["Node"]


#: Where the accepted coordinator key comes from before governance pins a list (issue 14).
INIT_KEY_SOURCE = "the node's --coordinator-key"


class Node:
    """One signer node over its data directory; see the module docstring."""

    def __init__(
        self,
        paths: Paths,
        config: NodeConfig,
        v: vault.Vault,
        store: NodeStore,
        *,
        faults: FaultHooks = NO_FAULTS,
        lock_fd: int | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.vault = v
        self.store = store
        self.faults = faults
        self.node_id = config.node_id
        self.party_id = config.party_id
        # new at every start: its in-memory nonces and presignatures are gone, and the
        # coordinator, seeing a new boot id in /health, drops what it pooled from this node
        self.boot_id = secrets.token_hex(8)
        coord = store.get_meta("coordinator_pk")
        if coord is None:
            raise ConfigError("database holds no coordinator key")
        self.coordinator_pk = bytes.fromhex(coord)
        self.identity = Identity(v, store, self.node_id, self.party_id)
        own = Peer(self.party_id, self.node_id, self.identity.sign_pk, self.identity.box_pk)
        self.anchor = Anchor(store, self.node_id, self.party_id, own)
        self.identity.roster = self.anchor.peers
        self.shares = ShareStore(v, store, self.node_id)
        self.sessions = SessionHost(
            self.identity,
            store,
            CeremonyFactory(
                Protocols(self.party_id, self.shares),
                self.shares,
                self.anchor,
                self.identity.sign_statement,
                faults,
            ),
            self.anchor,
        )
        self.ceremonies = Ceremonies(self.shares, self.anchor, faults)
        self.pipeline = SigningPipeline(
            self.shares,
            self.party_id,
            self.anchor,
            faults=faults,
            sign=self.identity.sign_statement,
        )
        self.checkpoints = Checkpoints(
            store, self.anchor, self.node_id, self.identity.sign_statement
        )
        self._lock_fd = lock_fd

    # -- lifecycle -----------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        data_dir: Path,
        *,
        node_id: str,
        party_id: int,
        coordinator_key: bytes,
        pin_file: Path | None = None,
        module_path: str | None = None,
        faults: FaultHooks = NO_FAULTS,
    ) -> Node:
        """Provision token, identity keys and database under ``data_dir`` (must be new)."""
        if not NODE_ID_RE.fullmatch(node_id):
            raise ConfigError("node id must be 1-64 characters of [A-Za-z0-9._-]")
        if type(party_id) is not int or not 1 <= party_id <= 255:
            raise ConfigError("party id must be an integer in [1, 255]")
        if len(coordinator_key) != 32:
            raise ConfigError(
                "coordinator key must be a 32-byte Ed25519 public key (64 hex digits)"
            )
        paths = Paths(Path(data_dir))
        if paths.config.exists():
            raise ConfigError(f"{paths.root} is already initialised")
        paths.root.mkdir(parents=True, exist_ok=True)
        os.chmod(paths.root, 0o700)
        if pin_file is not None or os.environ.get("CUSTODY_HSM_PIN"):
            pin = read_pin(paths, pin_file)
        else:
            # Dev only: a random PIN in a 0600 file next to the token it unlocks. Production
            # passes --pin-file (a secret file outside the data directory) or the environment.
            logs.warn("pin.dev_only", node_id=node_id, pin_file=str(paths.pin_file))
            pin = secrets.token_hex(16)
            fd = os.open(paths.pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pin + "\n")
        config = NodeConfig(
            node_id=node_id,
            party_id=party_id,
            token_label=f"{node_id[:22]}-{secrets.token_hex(4)}",
            module_path=module_path,
        )
        v, conf = vault.Vault.provision(paths, config, pin)
        if conf and Path(conf).resolve().is_relative_to(paths.root.resolve()):
            conf = str(Path(conf).resolve().relative_to(paths.root.resolve()))
        config = dataclasses.replace(config, softhsm_conf=conf or None)
        db_key = secrets.token_bytes(32)
        v.write_db_key(db_key)
        store = NodeStore(paths.db, db_key)
        del db_key
        try:
            store.set_meta("node_id", node_id)
            store.set_meta("party_id", str(party_id))
            store.set_meta("coordinator_pk", coordinator_key.hex())
            Identity.provision(v, store, node_id)
            config.save(paths.config)
            logs.event("node.init", node_id=node_id, party_id=party_id)
            return cls(paths, config, v, store, faults=faults, lock_fd=_lock(paths))
        except BaseException:
            store.close()
            raise

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        pin_file: Path | None = None,
        exclusive: bool = True,
        faults: FaultHooks = NO_FAULTS,
    ) -> Node:
        """Open an initialised node: HSM, DB key, database; finish any pending rotation.

        ``exclusive`` (serving, rotating) takes the data directory's lock file, so two
        processes never run the same node; ``status`` opens without it, read-mostly.
        """
        paths = Paths(Path(data_dir))
        config = NodeConfig.load(paths.config)
        pin = read_pin(paths, pin_file)
        lock_fd = _lock(paths) if exclusive else None
        v = vault.Vault.open(paths, config, pin)
        store = NodeStore(paths.db, v.read_db_key())
        failed = 0
        if exclusive:
            rotation.recover(v, store, config.node_id, faults)
            failed = store.fail_running_sessions(RESTARTED.to_record())
        node = cls(paths, config, v, store, faults=faults, lock_fd=lock_fd)
        logs.event("node.open", node_id=config.node_id, failed_sessions=failed)
        return node

    def close(self) -> None:
        self.store.close()
        self.vault.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def rotate_seal_key(self) -> dict[str, int]:
        return rotation.rotate(self.vault, self.store, self.node_id, self.faults)

    # -- identity, health, status ----------------------------------------------------------
    @property
    def sign_pk(self) -> bytes:
        return self.identity.sign_pk

    @property
    def box_pk(self) -> bytes:
        return self.identity.box_pk

    def identity_info(self) -> dict[str, Any]:
        """The public identity a governance roster pins (node_id, party_id, sign_pk, box_pk)."""
        return {
            "node_id": self.node_id,
            "party_id": self.party_id,
            "sign_pk": self.sign_pk.hex(),
            "box_pk": self.box_pk.hex(),
        }

    def peers(self) -> dict[int, Peer]:
        return self.identity.peers()

    def set_peers(self, peers: Sequence[Peer]) -> int:
        """Peers come from governance: refuse any not matching the roster; nothing stored."""
        return self.anchor.check_peers(peers)

    # -- who may drive this node (issue 14) ------------------------------------------------
    def coordinator_keys(self) -> tuple[dict[bytes, str], str]:
        """The coordinator identity keys this node accepts now, each with its name, and
        where that set comes from (for errors and logs).

        The ``coordinators`` list of the CURRENT verified governance when it has one (the
        whole truth: the init key does not widen it; a coordinator a newer version retires
        is refused from the moment that version is installed); otherwise, and before any
        governance, the key of ``init --coordinator-key`` (the behaviour before issue 14).
        Read on every request, so an installed version takes effect at once.
        """
        cur = self.anchor.current
        if cur is not None and cur.coordinators is not None:
            return (
                {c.public_key: c.name for c in cur.coordinators},
                f"governance version {cur.version}",
            )
        return {self.coordinator_pk: "init"}, INIT_KEY_SOURCE

    # -- governance, release log, audit checkpoints ---------------------------------------
    def trust(self, genesis: bytes, successors: Sequence[bytes] = ()) -> dict[str, Any]:
        """Install the governance genesis (once, with its successors for a node that joins
        later): the node's trust anchor."""
        self.anchor.install_genesis(genesis, successors)
        return self.anchor.describe()

    def install_governance(self, document: bytes) -> dict[str, Any]:
        """Verify and install the next governance version (``PUT /v1/governance``)."""
        _, new = self.anchor.advance(document)
        return {**self.anchor.describe(), "changed": new}

    def governance(self) -> dict[str, Any]:
        return self.anchor.describe()

    def releases(self, after: int, limit: int = 1000) -> dict[str, Any]:
        return self.checkpoints.releases(after, limit)

    def checkpoint(self, seq: object, head: object, entries: object) -> dict[str, Any]:
        return self.checkpoints.checkpoint(seq, head, entries)

    def hsm_health(self) -> str:
        return self.vault.health()

    def health(self) -> dict[str, Any]:
        hsm = self.hsm_health()
        return {
            "node_id": self.node_id,
            "party_id": self.party_id,
            "boot_id": self.boot_id,
            "status": "ok" if hsm == "ok" else "degraded",
            "sign_pk": self.sign_pk.hex(),
            "box_pk": self.box_pk.hex(),
            "hsm": hsm,
        }

    def status(self) -> dict[str, Any]:
        released = self.store.release_counts()
        counts = {
            "nonces_unused": self.shares.pool.count("nonce"),
            "nonces_used": released.get("nonce", 0),
            "presignatures_unused": self.shares.pool.count("presig"),
            "presignatures_used": released.get("presig", 0),
        }
        return {
            "node_id": self.node_id,
            "party_id": self.party_id,
            "keys": len(self.store.key_ids()),
            "key_ids": self.store.key_ids(),
            **counts,
            "seal_key_version": self.vault.current_version(),
            "seal_key_versions": self.vault.versions(),
            "rotation_pending": rotation.pending(self.store),
            "schema_version": self.store.schema_version(),
            "hsm": self.hsm_health(),
            "governance": self.anchor.describe(),
            "release_head": self.store.release_head()[0],
            "checkpoint_seq": self.checkpoints.last()["seq"],
        }

    # -- sessions --------------------------------------------------------------------------
    def start_session(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return self.sessions.start(spec)

    def deliver(self, session_id: str, envelopes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return self.sessions.deliver(session_id, envelopes)

    def session_state(self, session_id: str) -> dict[str, Any]:
        return self.sessions.state(session_id)

    def commit_share(self, key_id: object, body: Mapping[str, Any]) -> dict[str, Any]:
        """Switch ``key_id`` to the share of a finished ceremony (:mod:`.ceremonies`)."""
        self.anchor.require()
        return self.ceremonies.commit(
            key_id, body.get("session_id"), body.get("signatures"), body.get("retire")
        )

    # -- signing (all through the one pipeline) ----------------------------------------------
    def frost_commitments(self, key_id: object, count: object) -> list[dict[str, str]]:
        return self.pipeline.frost.commitments(key_id, count)

    def frost_sign(
        self,
        key_id: object,
        nonce_id: object,
        request: Mapping[str, Any],
        package_bytes: bytes,
        *,
        coordinator_verified: bool,
    ) -> bytes:
        """RFC 9591 s5.2 through the write-ahead pipeline; returns the CBOR SignatureShare."""
        item = SignItem(key_id, nonce_id, request, package=package_bytes)
        return self.pipeline.sign_one(
            self.pipeline.frost, item, coordinator_verified=coordinator_verified
        )

    def ecdsa_sign(
        self,
        key_id: object,
        presignature_id: object,
        request: Mapping[str, Any],
        *,
        coordinator_verified: bool,
        requested: bytes | None = None,
    ) -> bytes:
        """DKLs23 online round through the pipeline; returns the CBOR PartialSignature."""
        item = SignItem(key_id, presignature_id, request, requested=requested)
        return self.pipeline.sign_one(
            self.pipeline.ecdsa, item, coordinator_verified=coordinator_verified
        )

    def frost_sign_batch(
        self, items: Sequence[Any], *, coordinator_verified: bool
    ) -> list[Outcome]:
        return self.pipeline.sign_batch(
            self.pipeline.frost, items, coordinator_verified=coordinator_verified
        )

    def ecdsa_sign_batch(
        self, items: Sequence[Any], *, coordinator_verified: bool
    ) -> list[Outcome]:
        return self.pipeline.sign_batch(
            self.pipeline.ecdsa, items, coordinator_verified=coordinator_verified
        )


def _lock(paths: Paths) -> int:
    fd = os.open(paths.root / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(
            f"node in {paths.root} is in use by another process (stop it first)"
        ) from None
    return fd
