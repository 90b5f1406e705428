"""The signer node: identity, sealed storage, protocol sessions and signing.

A :class:`Node` owns one data directory (:mod:`signer_nodes.config`): an HSM token, the
SQLCipher database and its sealed key file. Every secret at rest is sealed by the HSM with
an AAD naming what it is (:mod:`signer_nodes.vault`); in memory the node keeps only its
two identity keys (needed for every envelope) and never a share longer than one operation.

Signing follows the write-ahead rule (DESIGN.md invariant 3): :meth:`Node.frost_sign`
validates the request, loads and unseals the nonce, marks it used and COMMITs (durable,
see :mod:`signer_nodes.store`; concurrent marks share one group commit, each caller
waiting for the commit that holds its own mark), and only then computes the partial
signature.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey
from nacl.signing import SigningKey
from signer_nodes import logs, protocols, vault
from signer_nodes.config import NODE_ID_RE, ConfigError, NodeConfig, Paths, read_pin
from signer_nodes.envelope import EnvelopeError, Peer, envelope_hash, open_envelope, seal
from signer_nodes.policy import AuthorizationContext, authorize
from signer_nodes.store import KeyRow, NodeStore

from custody.signing import SignRequestError, message_to_sign
from mpc import frost
from mpc.errors import MpcError
from mpc.wire import Message

__all__ = ["Node", "NodeError", "KEY_ID_RE", "MAX_BATCH", "crash_point"]

KEY_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SESSION_ID_RE = re.compile(r"^[0-9a-f]{64}$")
CRASH_ENV = "SIGNER_NODES_CRASH_AT"
MAX_COMMITMENTS = 1000
MAX_BATCH = 256  # sign items per batch call


def hex_field(body: Mapping[str, Any], name: str) -> bytes:
    """A hex string field of a request body as bytes (NodeError 422 otherwise)."""
    value = body.get(name)
    if not isinstance(value, str):
        raise NodeError(422, "bad-request", f"field {name!r} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise NodeError(422, "bad-request", f"field {name!r} is not hex") from None


def crash_point(name: str) -> None:
    """Test hook: if ``$SIGNER_NODES_CRASH_AT`` names this point, die at once (like SIGKILL)."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(137)


class NodeError(Exception):
    """A request the node refuses; maps to an RFC 9457 problem document."""

    def __init__(
        self, status: int, kind: str, detail: str, *, culprits: Sequence[int] = ()
    ) -> None:
        self.status = status
        self.kind = kind
        self.detail = detail
        self.culprits = tuple(culprits)
        super().__init__(f"{kind}: {detail}")

    def problem(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": f"urn:tpwc:node:{self.kind}",
            "title": self.kind.replace("-", " "),
            "status": self.status,
            "detail": self.detail,
        }
        if self.culprits:
            doc["culprits"] = list(self.culprits)
        return doc


def batch_item_request(raw: Any) -> dict[str, Any]:
    """The ``request`` object of a sign call's body or of one sign-batch item (NodeError 422
    otherwise; in a batch it becomes that item's problem)."""
    if not isinstance(raw, dict):
        raise NodeError(422, "bad-request", "each item must be an object")
    req = raw.get("request")
    if not isinstance(req, dict):
        raise NodeError(422, "bad-request", "request must be an object")
    return req


@dataclass
class _FrostItem:
    """One FROST sign item that passed every check; its nonce is unsealed (secret)."""

    key_id: str
    nonce_id: str
    request: Mapping[str, Any]
    package: Any  # frost.SigningPackage
    nonces: Any = field(repr=False)  # frost.SigningNonces


@dataclass
class _Live:
    """A running protocol session in memory (its secret state never leaves the process)."""

    info: dict[str, Any]
    rs: Any  # a RoundSession, or a chain of them (signer_nodes.ecdsa.KeygenChain)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Node:
    """One signer node over its data directory; see the module docstring."""

    def __init__(
        self,
        paths: Paths,
        config: NodeConfig,
        v: vault.Vault,
        store: NodeStore,
    ) -> None:
        self.paths = paths
        self.config = config
        self.vault = v
        self.store = store
        self.node_id = config.node_id
        self.party_id = config.party_id
        self._sign_key = SigningKey(self._unseal_identity("sign"))
        self._box_key = PrivateKey(self._unseal_identity("box"))
        coord = store.get_meta("coordinator_pk")
        if coord is None:
            raise ConfigError("database holds no coordinator key")
        self.coordinator_pk = bytes.fromhex(coord)
        self._live: dict[str, _Live] = {}
        self._live_lock = threading.Lock()
        self._lock_fd: int | None = None

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
    ) -> Node:
        """Provision token, identity keys and database under ``data_dir`` (must be new)."""
        if not NODE_ID_RE.match(node_id):
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
            # Dev only: a random PIN in a 0600 file. Production must use a real PIN source.
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
            for kind, secret, public in _new_identity():
                blob = v.seal(secret, vault.identity_aad(node_id, kind))
                store.put_identity(kind, public, blob, v.blob_version(blob))
            config.save(paths.config)
            logs.event("node.init", node_id=node_id, party_id=party_id)
            node = cls(paths, config, v, store)
            node._lock_fd = _lock(paths)
            return node
        except BaseException:
            store.close()
            raise

    @classmethod
    def open(cls, data_dir: Path, *, pin_file: Path | None = None, exclusive: bool = True) -> Node:
        """Open an initialised node: HSM, DB key, database; finish any pending rotation.

        ``exclusive`` (serving, rotating) takes the data directory's lock file, so two
        processes never run the same node; ``status`` opens without it, read-mostly.
        """
        paths = Paths(Path(data_dir))
        config = NodeConfig.load(paths.config)
        pin = read_pin(paths, pin_file)
        lock_fd = _lock(paths) if exclusive else None
        v = vault.Vault.open(paths, config, pin)
        from signer_nodes import rotation  # late: rotation imports Node types

        store = NodeStore(paths.db, v.read_db_key())
        failed = 0
        if exclusive:
            rotation.recover(v, store, config.node_id)
            failed = store.fail_running_sessions(
                {
                    "type": "urn:tpwc:node:restarted",
                    "title": "node restarted",
                    "status": 409,
                    "detail": "the node restarted; protocol state in memory was lost",
                }
            )
        node = cls(paths, config, v, store)
        node._lock_fd = lock_fd
        logs.event("node.open", node_id=config.node_id, failed_sessions=failed)
        return node

    def close(self) -> None:
        self.store.close()
        self.vault.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def rotate_seal_key(self) -> dict[str, int]:
        from signer_nodes import rotation

        return rotation.rotate(self.vault, self.store, self.node_id)

    # -- identity ------------------------------------------------------------------------
    def _unseal_identity(self, kind: str) -> bytes:
        _, blob, _ = self.store.get_identity(kind)
        return self.vault.unseal(blob, vault.identity_aad(self.node_id, kind))

    @property
    def sign_pk(self) -> bytes:
        return bytes(self._sign_key.verify_key)

    @property
    def box_pk(self) -> bytes:
        return bytes(self._box_key.public_key)

    def peers(self) -> dict[int, Peer]:
        out = {p: Peer(p, n, s, b) for p, n, s, b in self.store.get_peers()}
        out[self.party_id] = Peer(self.party_id, self.node_id, self.sign_pk, self.box_pk)
        return out

    def set_peers(self, peers: Sequence[Peer]) -> int:
        rows = []
        for p in peers:
            if p.party_id == self.party_id:
                if p.sign_pk != self.sign_pk or p.box_pk != self.box_pk:
                    raise NodeError(422, "bad-peer", "own entry does not carry this node's keys")
                continue
            if len(p.sign_pk) != 32 or len(p.box_pk) != 32:
                raise NodeError(422, "bad-peer", f"party {p.party_id}: keys must be 32 bytes")
            rows.append((p.party_id, p.node_id, p.sign_pk, p.box_pk))
        if len({r[0] for r in rows}) != len(rows):
            raise NodeError(422, "bad-peer", "duplicate party id")
        self.store.set_peers(rows)
        logs.event("peers.set", node_id=self.node_id, peers=len(rows))
        return len(rows)

    # -- health / status -----------------------------------------------------------------
    def hsm_health(self) -> str:
        return self.vault.health()

    def health(self) -> dict[str, Any]:
        hsm = self.hsm_health()
        return {
            "node_id": self.node_id,
            "party_id": self.party_id,
            "status": "ok" if hsm == "ok" else "degraded",
            "sign_pk": self.sign_pk.hex(),
            "box_pk": self.box_pk.hex(),
            "hsm": hsm,
        }

    def status(self) -> dict[str, Any]:
        from signer_nodes import rotation

        counts = self.store.ledger_counts()
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
        }

    # -- shares --------------------------------------------------------------------------
    def _key_row(self, key_id: str) -> KeyRow:
        if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
            raise NodeError(
                422, "bad-request", "key_id must be 1-128 characters of [A-Za-z0-9._:-]"
            )
        row = self.store.get_key(key_id)
        if row is None:
            raise NodeError(404, "unknown-key", f"no share of key {key_id!r} on {self.node_id}")
        return row

    def _unseal_share(self, row: KeyRow) -> bytes:
        return self.vault.unseal(
            row.sealed_share, vault.share_aad(row.key_id, self.node_id, row.share_version)
        )

    def store_share(
        self,
        key_id: str,
        scheme: str,
        share_cbor: bytes,
        public_key: bytes,
        public_info: bytes,
        share_version: int = 1,
    ) -> None:
        with self.store.sealing.read():  # seal and insert atomically w.r.t. rotation
            blob = self.vault.seal(share_cbor, vault.share_aad(key_id, self.node_id, share_version))
            self.store.put_key(
                KeyRow(
                    key_id,
                    scheme,
                    share_version,
                    public_key,
                    public_info,
                    blob,
                    self.vault.blob_version(blob),
                )
            )
        logs.event(
            "key.stored",
            node_id=self.node_id,
            key_id=key_id,
            scheme=scheme,
            share_version=share_version,
        )

    # -- sessions ------------------------------------------------------------------------
    def start_session(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        sid = spec.get("session_id")
        if not isinstance(sid, str) or not SESSION_ID_RE.match(sid):
            raise NodeError(422, "bad-request", "session_id must be 64 lower-case hex digits")
        key_id = spec.get("key_id")
        if not isinstance(key_id, str) or not KEY_ID_RE.match(key_id):
            raise NodeError(
                422, "bad-request", "key_id must be 1-128 characters of [A-Za-z0-9._:-]"
            )
        participants = spec.get("participants")
        if (
            not isinstance(participants, list)
            or not all(type(p) is int for p in participants)
            or self.party_id not in participants
        ):
            raise NodeError(
                422, "bad-request", "participants must be a list of party ids including this node"
            )
        peers = self.peers()
        missing = [p for p in participants if p not in peers]
        if missing:
            raise NodeError(
                409, "unknown-peer", f"parties {missing} are not enrolled (PUT /v1/peers)"
            )
        if self.store.get_session(sid) is not None:
            raise NodeError(409, "session-exists", f"session {sid} already exists on this node")
        info = {
            "session_id": sid,
            "kind": spec.get("kind"),
            "key_id": key_id,
            "scheme": spec.get("scheme"),
            "threshold": spec.get("threshold"),
            "participants": sorted(participants),
        }
        try:
            rs = protocols.new_session(self, info)
        except protocols.SetupError as exc:
            raise NodeError(exc.status, exc.kind, exc.detail) from None
        except MpcError as exc:
            raise NodeError(422, "bad-request", str(exc)) from None
        self.store.create_session(info)
        live = _Live(info, rs)
        with self._live_lock:
            self._live[sid] = live
        with live.lock:
            try:
                out = rs.start()
            except MpcError as exc:
                self._fail(live, exc)
                return self.session_state(sid)
            self._emit(live, out)
        logs.event(
            "session.start",
            node_id=self.node_id,
            session_id=sid,
            kind=info["kind"],
            key_id=key_id,
            participants=info["participants"],
        )
        return self.session_state(sid, new_only=out)

    def _emit(self, live: _Live, out: Sequence[Message]) -> None:
        """Seal outgoing messages into envelopes and append them to the session's outbox."""
        peers = self.peers()
        with self.store.tx() as c:
            for m in out:
                to_pk = None if m.recipient is None else peers[m.recipient].box_pk
                env = seal(
                    m, sign_key=self._sign_key, box_key=self._box_key, recipient_box_pk=to_pk
                )
                self.store.add_envelope(
                    c,
                    live.info["session_id"],
                    "out",
                    envelope_hash(env),
                    m.sender,
                    m.recipient,
                    m.round,
                    env,
                )

    def _fail(self, live: _Live, exc: MpcError) -> None:
        culprits: tuple[int, ...] = getattr(exc, "culprits", ()) or (
            (exc.party,) if exc.party is not None else ()
        )
        err = NodeError(409, "protocol-error", str(exc), culprits=culprits).problem()
        pair = getattr(exc, "pair", None)
        if live.info.get("kind") == "ecdsa-presign" and pair is not None and self.party_id in pair:
            from signer_nodes import ecdsa

            ecdsa.retire_ot_pair(self, live.info["key_id"], pair[0] + pair[1] - self.party_id)
        self.store.finish_session(live.info["session_id"], "failed", error=err)
        with self._live_lock:  # drop the protocol object (and its secret state) at once
            self._live.pop(live.info["session_id"], None)
        logs.warn(
            "session.failed",
            node_id=self.node_id,
            session_id=live.info["session_id"],
            error=type(exc).__name__,
            culprits=list(culprits),
        )

    def deliver(self, session_id: str, envelopes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Verify, open and feed relayed envelopes; return the new state and any refusals."""
        info = self.store.get_session(session_id)
        if info is None:
            raise NodeError(404, "unknown-session", f"no session {session_id} on this node")
        with self._live_lock:
            live = self._live.get(session_id)
        refused: list[dict[str, Any]] = []
        produced: list[Message] = []
        if live is None or info["status"] != "running":
            for e in envelopes:
                refused.append(
                    {
                        "from": e.get("from"),
                        "reason": "stale",
                        "detail": f"session is {info['status']}",
                    }
                )
            logs.warn(
                "envelope.refused",
                node_id=self.node_id,
                session_id=session_id,
                reason="stale",
                count=len(envelopes),
            )
            return {**self.session_state(session_id), "refused": refused}
        sid_bytes = bytes.fromhex(session_id)
        peers = {p: peer for p, peer in self.peers().items() if p in live.info["participants"]}
        with live.lock:
            for e in envelopes:
                try:
                    raw = bytes.fromhex(str(e.get("envelope", "")))
                except ValueError:
                    refused.append(
                        {"from": e.get("from"), "reason": "malformed", "detail": "not hex"}
                    )
                    continue
                h = envelope_hash(raw)
                try:
                    if self.store.envelope_seen(session_id, h):
                        raise EnvelopeError("replay", "envelope already delivered")
                    msg = open_envelope(
                        raw,
                        me=self.party_id,
                        box_key=self._box_key,
                        peers=peers,
                        accept=getattr(live.rs, "accepts", None) or {live.rs.protocol: sid_bytes},
                    )
                except EnvelopeError as exc:
                    refused.append(
                        {
                            "from": e.get("from"),
                            "reason": exc.reason,
                            "detail": exc.detail,
                            **({"culprit": exc.party} if exc.party is not None else {}),
                        }
                    )
                    logs.warn(
                        "envelope.refused",
                        node_id=self.node_id,
                        session_id=session_id,
                        reason=exc.reason,
                        claimed_from=e.get("from"),
                        culprit=exc.party,
                    )
                    continue
                with self.store.tx() as c:
                    self.store.add_envelope(
                        c, session_id, "in", h, msg.sender, msg.recipient, msg.round, None
                    )
                try:
                    out = live.rs.receive(msg)
                except MpcError as exc:
                    self._fail(live, exc)
                    break
                self._emit(live, out)
                produced.extend(out)
                if live.rs.done:
                    self._complete(live)
                    break
        return {**self.session_state(session_id, new_only=produced), "refused": refused}

    def _complete(self, live: _Live) -> None:
        sid = live.info["session_id"]
        try:
            result = protocols.finish(self, live.info, live.rs)
        except (MpcError, NodeError) as exc:
            if isinstance(exc, MpcError):
                self._fail(live, exc)
            else:
                self.store.finish_session(sid, "failed", error=exc.problem())
            return
        self.store.finish_session(sid, "done", result=result)
        with self._live_lock:
            self._live.pop(sid, None)
        logs.event(
            "session.done",
            node_id=self.node_id,
            session_id=sid,
            kind=live.info["kind"],
            key_id=live.info["key_id"],
        )

    def session_state(
        self, session_id: str, new_only: Sequence[Message] | None = None
    ) -> dict[str, Any]:
        info = self.store.get_session(session_id)
        if info is None:
            raise NodeError(404, "unknown-session", f"no session {session_id} on this node")
        with self._live_lock:
            live = self._live.get(session_id)
        out = self.store.outbox(session_id)
        if new_only is not None:
            out = out[len(out) - len(new_only) :] if new_only else []
        return {
            "session_id": session_id,
            "status": info["status"],
            "envelopes": [{"from": s, "to": r, "envelope": e.hex()} for s, r, e in out],
            "waiting_for": list(live.rs.waiting_for())
            if live and info["status"] == "running"
            else [],
            "result": info["result"],
            "error": info["error"],
        }

    # -- FROST ---------------------------------------------------------------------------
    def frost_commitments(self, key_id: str, count: int) -> list[dict[str, str]]:
        """RFC 9591 s5.1 ahead of time: seal each nonce pair in the ledger, publish commitments."""
        if type(count) is not int or not 1 <= count <= MAX_COMMITMENTS:
            raise NodeError(
                422, "bad-request", f"count must be an integer in [1, {MAX_COMMITMENTS}]"
            )
        row = self._key_row(key_id)
        suite = protocols.frost_suite(row.scheme)
        kp = protocols.load_key_package(self._unseal_share(row))
        batch = frost.preprocess(suite, kp, count)
        del kp
        items = []
        out = []
        with self.store.sealing.read():  # seal and insert atomically w.r.t. rotation
            for nonces, comm in batch:
                nonce_id = secrets.token_hex(16)
                blob = self.vault.seal(
                    nonces.to_bytes(), vault.ledger_aad(key_id, self.node_id, "nonce", nonce_id)
                )
                pub = comm.to_bytes()
                items.append((nonce_id, "nonce", key_id, pub, blob, self.vault.blob_version(blob)))
                out.append({"nonce_id": nonce_id, "commitments": pub.hex()})
            self.store.add_ledger(items)
        logs.event("nonces.added", node_id=self.node_id, key_id=key_id, count=count)
        return out

    def frost_sign(
        self,
        key_id: str,
        nonce_id: str,
        request: Mapping[str, Any],
        package_bytes: bytes,
        *,
        coordinator_verified: bool,
    ) -> bytes:
        """RFC 9591 s5.2 with the write-ahead rule; returns the CBOR SignatureShare.

        Concurrent calls run in parallel (the service runs each in a worker thread). Each
        holds :attr:`NodeStore.sealing` as a reader from reading the key row to the durable
        mark, so a seal-key rotation never interleaves with load, unseal and mark; the mark
        goes through the ledger's group commit (:meth:`NodeStore.mark_used`) and the share
        is computed only after the commit holding it has returned."""
        keys: dict[str, Any] = {}
        with self.store.sealing.read():
            item = self._frost_prepare(
                key_id, nonce_id, request, package_bytes, coordinator_verified, keys, set()
            )
            crash_point("sign-before-mark")
            if not self.store.mark_used(nonce_id, str(request.get("id"))):
                raise NodeError(409, "nonce-used", f"nonce {nonce_id} was already used")
            # Durable now: the nonce can never be handed out again, even after a crash.
        crash_point("sign-after-mark")
        return self._frost_share(item, keys)

    def frost_sign_batch(
        self, items: Sequence[Any], *, coordinator_verified: bool
    ) -> list[dict[str, Any]]:
        """:meth:`frost_sign` for many requests in one call; one result per item, in order:
        ``{"signature_share": hex}`` or ``{"problem": problem document}``.

        Every item is checked on its own exactly as :meth:`frost_sign` checks it (its own
        recomputed message and authorization, its own nonce; a nonce named twice in the
        batch is refused the second time), so a bad item fails alone. The nonces of all
        items that passed are marked used in ONE durable commit
        (:meth:`NodeStore.mark_used_many`); only after it returned is any share computed
        (write-ahead rule, DESIGN.md invariant 3). A key's share is unsealed once per batch.
        A failing commit fails the whole batch closed (nothing released)."""
        results: list[dict[str, Any] | None] = [None] * len(items)
        ready: list[tuple[int, _FrostItem]] = []
        keys: dict[str, Any] = {}
        seen: set[str] = set()
        with self.store.sealing.read():
            for i, raw in enumerate(items):
                try:
                    req = batch_item_request(raw)
                    ready.append(
                        (
                            i,
                            self._frost_prepare(
                                raw.get("key_id"),
                                raw.get("nonce_id"),
                                req,
                                hex_field(raw, "signing_package"),
                                coordinator_verified,
                                keys,
                                seen,
                            ),
                        )
                    )
                except Exception as exc:  # noqa: BLE001 - becomes this item's problem
                    results[i] = {"problem": self._item_problem(exc)}
            crash_point("sign-before-mark")
            marked = self.store.mark_used_many(
                [(it.nonce_id, str(it.request.get("id"))) for _, it in ready]
            )
            # Durable now: none of these nonces can ever be handed out again.
        crash_point("sign-after-mark")
        for (i, it), ok in zip(ready, marked, strict=True):
            try:
                if not ok:
                    raise NodeError(409, "nonce-used", f"nonce {it.nonce_id} was already used")
                results[i] = {"signature_share": self._frost_share(it, keys).hex()}
            except Exception as exc:  # noqa: BLE001
                results[i] = {"problem": self._item_problem(exc)}
        keys.clear()
        return [
            r
            if r is not None
            else {"problem": NodeError(500, "internal", "item not processed").problem()}
            for r in results
        ]

    def _item_problem(self, exc: Exception) -> dict[str, Any]:
        """The problem document of one failed batch item (what the single route answers)."""
        if isinstance(exc, NodeError):
            return exc.problem()
        from hsm.errors import HsmError

        if isinstance(exc, HsmError):
            logs.warn("hsm.error", node_id=self.node_id, code=exc.code)
            status = 500 if exc.code.startswith("hsm.unseal") else 503
            return NodeError(
                status, exc.code.replace(".", "-").replace("_", "-"), exc.message
            ).problem()
        logs.event(
            "item.crashed", level=logging.ERROR, node_id=self.node_id, error=type(exc).__name__
        )
        return NodeError(
            500, "internal", "the node hit an unexpected error; nothing was released"
        ).problem()

    def _frost_prepare(
        self,
        key_id: Any,
        nonce_id: Any,
        request: Mapping[str, Any],
        package_bytes: bytes,
        coordinator_verified: bool,
        keys: dict[str, Any],
        seen: set[str],
    ) -> _FrostItem:
        """Every check of RFC 9591 s5.2 signing that precedes the mark, in order: key, the
        message recomputed from the request, the package, authorization, the nonce (known,
        for this key, unused, not named earlier in this batch, matching the package), then
        unseal nonce and (once per ``keys`` cache) the key package. Caller holds
        ``sealing`` as reader."""
        row = self._key_row(key_id)
        suite = protocols.frost_suite(row.scheme)
        try:
            message = message_to_sign(row.scheme, request)
        except SignRequestError as exc:
            raise NodeError(422, "bad-request", f"request {exc}") from None
        try:
            package = frost.SigningPackage.from_bytes(package_bytes, suite=suite)
        except MpcError as exc:
            raise NodeError(422, "bad-signing-package", str(exc)) from None
        self._authorize(row, request, message, package.message, coordinator_verified)
        if not isinstance(nonce_id, str) or not re.fullmatch(r"[0-9a-f]{32}", nonce_id):
            raise NodeError(422, "bad-request", "nonce_id must be 32 lower-case hex digits")
        item = self.store.get_ledger(nonce_id)
        if item is None or item.kind != "nonce" or item.key_id != key_id:
            raise NodeError(404, "unknown-nonce", f"no nonce {nonce_id} for key {key_id!r}")
        if item.used or nonce_id in seen:
            logs.warn(
                "nonce.reuse_refused",
                node_id=self.node_id,
                key_id=key_id,
                nonce_id=nonce_id,
                request_id=request.get("id"),
            )
            by = item.used_by if item.used else "an earlier item of this batch"
            raise NodeError(409, "nonce-used", f"nonce {nonce_id} was already used (by {by})")
        try:
            mine = package.commitment_for(self.party_id)
        except MpcError:
            raise NodeError(
                422, "bad-signing-package", "this node is not in the signing package"
            ) from None
        if mine.to_bytes() != item.public:
            raise NodeError(
                422,
                "bad-signing-package",
                "package carries commitments for this node that are not those of the nonce",
            )
        nonces = frost.SigningNonces.from_bytes(
            self.vault.unseal(
                item.sealed, vault.ledger_aad(key_id, self.node_id, "nonce", nonce_id)
            ),
            suite=suite,
        )
        if key_id not in keys:
            keys[key_id] = protocols.load_key_package(self._unseal_share(row))
        seen.add(nonce_id)
        return _FrostItem(key_id, nonce_id, request, package, nonces)

    def _frost_share(self, item: _FrostItem, keys: dict[str, Any]) -> bytes:
        """RFC 9591 s5.2 ``sign`` for a prepared item whose nonce mark is durable."""
        try:
            share = frost.sign(item.package, item.nonces, keys[item.key_id])
        except MpcError as exc:
            raise NodeError(
                422, "bad-signing-package", str(exc), culprits=getattr(exc, "culprits", ())
            ) from None
        logs.event(
            "frost.signed",
            node_id=self.node_id,
            key_id=item.key_id,
            nonce_id=item.nonce_id,
            request_id=item.request.get("id"),
        )
        return share.to_bytes()

    def ecdsa_sign(
        self,
        key_id: str,
        presignature_id: str,
        request: Mapping[str, Any],
        *,
        coordinator_verified: bool,
        requested: bytes | None = None,
    ) -> bytes:
        """DKLs23 online round (see :func:`signer_nodes.ecdsa.sign`)."""
        from signer_nodes import ecdsa

        return ecdsa.sign(
            self,
            key_id,
            presignature_id,
            request,
            coordinator_verified=coordinator_verified,
            requested=requested,
        )

    def ecdsa_sign_batch(
        self, items: Sequence[Any], *, coordinator_verified: bool
    ) -> list[dict[str, Any]]:
        """DKLs23 online round for many items (see :func:`signer_nodes.ecdsa.sign_batch`)."""
        from signer_nodes import ecdsa

        return ecdsa.sign_batch(self, items, coordinator_verified=coordinator_verified)

    def _authorize(
        self,
        row: KeyRow,
        request: Mapping[str, Any],
        recomputed: bytes,
        requested: bytes,
        coordinator_verified: bool,
    ) -> None:
        from signer_nodes.policy import NotAuthorized

        try:
            authorize(
                AuthorizationContext(
                    node_id=self.node_id,
                    key_id=row.key_id,
                    scheme=row.scheme,
                    request=request,
                    recomputed_message=recomputed,
                    requested_message=requested,
                    coordinator_verified=coordinator_verified,
                )
            )
        except NotAuthorized as exc:
            logs.warn(
                "sign.refused",
                node_id=self.node_id,
                key_id=row.key_id,
                reason=exc.reason,
                request_id=request.get("id"),
            )
            raise NodeError(403, exc.reason, exc.detail) from None


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


def _new_identity() -> list[tuple[str, bytes, bytes]]:
    sk = SigningKey.generate()
    bk = PrivateKey.generate()
    return [("sign", bytes(sk), bytes(sk.verify_key)), ("box", bytes(bk), bytes(bk.public_key))]
