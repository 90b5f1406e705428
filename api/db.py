"""Coordinator persistence: SQLAlchemy 2 models over SQLite (default) or PostgreSQL, the
engine, and the group writer of the signing hot path. (The queries the routes make are in
:mod:`api.repository`.)

Only portable SQL is used: no SQLite-only pragmas outside :func:`make_engine`, JSON stored
as text, times as timezone-aware UTC, booleans as booleans.

The schema comes from the Alembic migrations in ``api/migrations`` (:func:`migrate`, run
at start and by ``python -m api db upgrade``), never from ``create_all``; the tests compare
the migrated schema with these models on SQLite and PostgreSQL. On PostgreSQL, code that
reads and then writes relying on SQLite's single writer takes a lock first
(:func:`lock_audit_chain`).

The coordinator stores no secret share: keys hold public material only (group public key
and verifying shares). The preprocessing pools (nonce *commitments*, presignature ids and
``R``: public data only) are held in memory by a single coordinator, and in the tables
below when several share a PostgreSQL (:mod:`api.coordinator.pools`). Accepted sign
requests are a durable job queue (the lease columns of ``sign_requests``,
:mod:`api.coordinator.queue`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone on the way back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


# Row ids and sequence numbers: 64-bit on PostgreSQL (an audit log or a request table of a
# busy custodian outgrows a 32-bit INTEGER); SQLite's INTEGER is already 64-bit, and only an
# ``INTEGER PRIMARY KEY`` is its rowid alias that autoincrements, so SQLite keeps that name.
BigSerial = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Credential(Base):
    """A bearer credential bound to exactly one role; only sha256(token) is stored."""

    __tablename__ = "credentials"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    # the named principal the credential belongs to (the id rule of custody.domain); NULL
    # only in rows made before principals existed, read as the credential id
    principal: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # {"keys": [...], "wallets": [...]} the credential may sign with; NULL: every key
    scope: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Node(Base):
    """An enrolled signer node: its public identity and last observed health."""

    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    party_id: Mapped[int] = mapped_column(Integer, unique=True)
    url: Mapped[str] = mapped_column(String(300))
    sign_pk: Mapped[str] = mapped_column(String(64))
    box_pk: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    last_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    enrolled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Key(Base):
    """A threshold key: public key, verifying shares, the nodes holding shares."""

    __tablename__ = "keys"
    seq: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True, index=True)
    scheme: Mapped[str] = mapped_column(String(20))
    threshold: Mapped[int] = mapped_column(Integer)
    nodes: Mapped[list[Any]] = mapped_column(JSON)  # node ids
    status: Mapped[str] = mapped_column(String(16), default="pending")
    public_key: Mapped[str | None] = mapped_column(String(70), nullable=True)
    verifying_shares: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    network: Mapped[str | None] = mapped_column(String(10), nullable=True)  # bip340 keys
    label: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    key_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class SignRequest(Base):
    """A request for one signature and its life: pending_approval -> signing -> signed|..."""

    __tablename__ = "sign_requests"
    seq: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True, index=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("keys.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)  # canonical SignRequest sent to nodes
    status: Mapped[str] = mapped_column(String(20), index=True)
    # hex; a btc-psbt request's is one 64-byte signature per input (up to 16)
    signature: Mapped[str | None] = mapped_column(Text, nullable=True)
    recovery_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    signers: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    blamed: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # the authorization receipt (custody.receipts wire form) of a signed request
    receipt: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # the durable job queue (migration 0002, api.coordinator.queue): a ``signing`` request
    # is queued while ``claimed_by`` is NULL or ``lease_until`` has passed; the coordinator
    # instance that claims it renews the lease while it signs
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claims: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # times claimed
    # every signer set asked to sign, written (fenced by the lease) before the sign items
    # leave: a coordinator resuming the request records them in the audit log
    attempted: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class Approval(Base):
    """One approver's approval or rejection of a sign request, as it was received
    (``approval``: the standard base64 of :meth:`custody.approvals.Approval.encode`).

    The request body's ``approvals`` (what the nodes are sent) is the list of the stored
    approvals that still count, rewritten in the same transaction as each new row."""

    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("sign_requests.id"), index=True)
    approver_id: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(8))  # approve | reject
    approval: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    received_by: Mapped[str] = mapped_column(String(40))  # the credential that posted it


class IdempotencyRecord(Base):
    """One ``Idempotency-Key`` of one credential: the request fingerprint and its answer."""

    __tablename__ = "idempotency"
    __table_args__ = (UniqueConstraint("credential_id", "key"),)
    id: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    credential_id: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(12))  # in_flight | done
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """Hash-chained audit log: ``hash = sha256(prev_hash || sha256(canonical_json(entry)))``
    (:func:`api.audit.entry_hash`)."""

    __tablename__ = "audit"
    seq: Mapped[int] = mapped_column(BigSerial, primary_key=True)
    at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(64), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class Checkpoint(Base):
    """A node-signed audit checkpoint: the chain ``head`` after entry ``seq``, the digest of
    every entry since the previous checkpoint (so verification names the first rewritten
    one), and each co-signing node's Ed25519 signature over
    :func:`api.audit.checkpoint_statement`. Rows are only trusted through those
    signatures, checked under the nodes' pinned identity keys."""

    __tablename__ = "checkpoints"
    seq: Mapped[int] = mapped_column(BigSerial, primary_key=True)
    head: Mapped[str] = mapped_column(String(64))
    digests: Mapped[list[Any]] = mapped_column(JSON)
    signatures: Mapped[dict[str, Any]] = mapped_column(JSON)  # node id -> hex signature
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Webhook(Base):
    """A webhook subscription: where to POST which event types (:mod:`api.webhooks`).
    ``secret`` is the Standard Webhooks secret sealed by the coordinator's HSM token
    (base64 of the :mod:`hsm.blob` form), never stored or logged in the clear."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[list[Any]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(200), default="")
    secret: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Ceremony(Base):
    """A key ceremony (a proactive refresh): ``running`` -> ``committing`` -> ``done``, or
    ``failed`` (with the blamed parties). ``transcript``: the public outcome every party
    signed, each party's Ed25519 signature over its done statement
    (:mod:`custody.ceremonies`) and the new verifying shares; ``progress``: per-party steps
    (api.coordinator.ceremonies)."""

    __tablename__ = "ceremonies"
    seq: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True, index=True)
    kind: Mapped[str] = mapped_column(String(20))
    key_id: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(16))
    session_id: Mapped[str] = mapped_column(String(64))
    participants: Mapped[list[Any]] = mapped_column(JSON)
    share_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transcript: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    progress: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookMessage(Base):
    """The outbox: one event, written in the transaction of the state change it reports;
    ``id`` is the Standard Webhooks ``webhook-id`` (receivers de-duplicate on it)."""

    __tablename__ = "webhook_messages"
    seq: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True, index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One message to one webhook: its state, next attempt and every attempt made."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("message_id", "webhook_id"),)
    id: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("webhook_messages.id"), index=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"), index=True)
    status: Mapped[str] = mapped_column(String(12), index=True)  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log: Mapped[list[Any]] = mapped_column(JSON, default=list)  # the latest attempts
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PoolCommitment(Base):
    """One FROST nonce commitment (RFC 9591 s5.1, public) of node ``party_id`` for key
    ``key_id``, fetched while the node ran as ``boot_id``; handed out once, by
    claim-and-delete (:mod:`api.coordinator.pools`, shared pools). ``commitments``: the
    node's hex as it sent it, checked on entry."""

    __tablename__ = "pool_commitments"
    __table_args__ = (Index("ix_pool_commitments_key_party", "key_id", "party_id"),)
    id: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(40))
    party_id: Mapped[int] = mapped_column(Integer)
    boot_id: Mapped[str] = mapped_column(String(64))
    nonce_id: Mapped[str] = mapped_column(String(80), unique=True)
    commitments: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PoolPresignature(Base):
    """One DKLs23 presignature of ``key_id`` at derivation ``path`` ("" for the root key):
    its id, signer set, the parties' boot ids when it was made, and the instance point
    ``R`` (public data only; the secrets stay in the nodes' memory). Handed out once, by
    claim-and-delete."""

    __tablename__ = "pool_presignatures"
    __table_args__ = (Index("ix_pool_presignatures_key_path", "key_id", "path"),)
    id: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(40))
    path: Mapped[str] = mapped_column(String(200))
    presignature_id: Mapped[str] = mapped_column(String(80), unique=True)
    parties: Mapped[list[Any]] = mapped_column(JSON)
    boot_ids: Mapped[list[Any]] = mapped_column(JSON)
    r_point: Mapped[str] = mapped_column(String(70))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PoolRefill(Base):
    """The claim row of one pool being refilled: one coordinator at a time (``holder``
    until ``until``; an expired claim is taken over)."""

    __tablename__ = "pool_refills"
    pool: Mapped[str] = mapped_column(String(300), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    until: Mapped[dt.datetime] = mapped_column(UTCDateTime)


BUSY_TIMEOUT = 5.0  # default of ``settings.db_busy_timeout`` ($CUSTODY_DB_BUSY_TIMEOUT)


def make_engine(url: str, busy_timeout: float = BUSY_TIMEOUT) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so readers never block.

    ``synchronous=FULL``: with WAL, SQLite then fsyncs the log at every COMMIT, so a
    committed audit row survives power loss. (``NORMAL`` would only survive a process
    crash: the last commits, e.g. the ``sign.signed`` entry of a signature already
    returned, could vanish on power loss, breaking the audit rule of DESIGN.md invariant 6.)
    An fsync of the append-only WAL costs ~0.1 ms here; the signing path makes two commits.

    A writer waits at most ``busy_timeout`` seconds (``settings.db_busy_timeout``,
    ``$CUSTODY_DB_BUSY_TIMEOUT``, default 5) for SQLite's write lock, then fails (503
    problem ``database-busy``); writes run off the event loop, and WAL readers never wait
    for the lock, so the API keeps answering. On PostgreSQL the same bound is its
    ``lock_timeout`` (a lock held by another session).
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy_timeout}
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # PostgreSQL: the same bound on waiting for a lock another session holds
    # (``lock_timeout``; it raises LockNotAvailable, an OperationalError: the same 503
    # problem) - without it a writer behind a table lock waited for ever. The audit chain's
    # and the migration's advisory locks lift it (SET LOCAL): there writers take turns.
    ms = max(1, int(busy_timeout * 1000))
    return create_engine(url, pool_pre_ping=True, connect_args={"options": f"-c lock_timeout={ms}"})


T = TypeVar("T")
log = logging.getLogger("api.db")
_Job = tuple[Callable[[Connection], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _deliver(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class GroupWriter:
    """Group commit for the signing hot path: one thread runs write jobs off the event loop.

    ``await writer.run(job)`` queues ``job(conn)``; the thread takes every job queued at
    that moment (up to ``max_batch``), runs them in ONE transaction and commits once (one
    fsync under ``synchronous=FULL``), then wakes each caller with its job's result. Every
    caller is answered only after the commit that holds its writes has returned, so what a
    caller does next (release a signature) happens after its audit row is durable.

    If any job of a batch raises, the whole transaction rolls back and each job is rerun in
    a transaction of its own, so one failing job (e.g. an Idempotency-Key conflict) fails
    alone. Jobs must therefore be plain database work that can run again.
    """

    def __init__(self, engine: Engine, max_batch: int = 64) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.jobs = 0

    async def run(self, job: Callable[[Connection], T]) -> T:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="db-writer", daemon=True)
                self._thread.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._q.put((job, loop, fut))
        return await fut

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._q.put(None)
            thread.join(10)

    def _main(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Job]) -> None:
        try:
            with self.engine.begin() as conn:
                results = [job(conn) for job, _, _ in batch]
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            if len(batch) > 1:
                for item in batch:
                    self._commit([item])
                return
            _, loop, fut = batch[0]
            self._wake(loop, fut, None, exc)
            return
        self.batches += 1
        self.jobs += len(batch)
        for (_, loop, fut), res in zip(batch, results, strict=True):
            self._wake(loop, fut, res, None)

    @staticmethod
    def _wake(
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[Any],
        res: Any,
        exc: BaseException | None,
    ) -> None:
        try:
            loop.call_soon_threadsafe(_deliver, fut, res, exc)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            log.warning("db writer: caller's event loop is closed")


AUDIT_LOCK = 0x7470_7763_6175  # PostgreSQL advisory lock key of the audit chain ("tpwcau")


def lock_audit_chain(s: Session | Connection) -> None:
    """Inside the caller's transaction, before it reads the audit chain's head to append:
    on PostgreSQL take the chain's transaction-level advisory lock, so transactions that
    append (other threads, other coordinators on the same database) go one after another,
    each reading the head the previous one committed (READ COMMITTED reads the latest
    commit per statement), instead of two taking the same ``seq`` and the loser failing
    on the primary key. Released at COMMIT or ROLLBACK. SQLite needs nothing: its one
    write lock already serialises writers."""
    bind = s.get_bind() if isinstance(s, Session) else s
    if bind.dialect.name == "postgresql":
        # writers take turns here however long the queue (not bounded by lock_timeout,
        # which make_engine sets for locks other sessions hold)
        s.execute(text("SET LOCAL lock_timeout = 0"))
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK})


class SchemaError(RuntimeError):
    """The database's schema is not the revision this release runs on."""


MIGRATION_LOCK = 0x7470_7763_6462  # PostgreSQL advisory lock key of a migration ("tpwcdb")
MIGRATIONS = "api:migrations"  # the Alembic environment, shipped inside the package


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration of the coordinator database: no ``alembic.ini``, the
    scripts located in the installed package (``api/migrations``)."""
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """``alembic upgrade revision`` on ``engine``, in one transaction (PostgreSQL: under
    the advisory lock :data:`MIGRATION_LOCK`, so coordinators starting together take turns).

    Every database, new or old, gets its schema from the migration scripts (never from
    ``create_all``), so the schema a service runs on is the one the tests compare with the
    models. A database made before migrations existed (tables, no ``alembic_version``) is
    adopted by the baseline revision, which creates only what is missing."""
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # pysqlite commits before each DDL statement on its own; an explicit BEGIN makes
            # the upgrade one transaction there too (all of it or none, and one fsync)
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:  # coordinators starting together wait for the one migrating (no lock_timeout)
            conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None``: not under migrations yet)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision the installed code ships."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class Database:
    """Engine plus session factory; ``with db.session() as s:`` commits on success;
    ``await db.write(job)`` runs ``job(conn)`` through the :class:`GroupWriter`."""

    def __init__(self, url: str, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self.writer = GroupWriter(self.engine)

    async def write(self, job: Callable[[Connection], T]) -> T:
        return await self.writer.run(job)

    def close(self) -> None:
        self.writer.close()
        self.engine.dispose()  # PostgreSQL: hand the pooled connections back now

    def migrate(self, apply: bool = True) -> None:
        """Bring the schema to the newest revision (:func:`migrate`); ``apply=False``
        (``settings.db_migrate`` off) only checks it is there, else :class:`SchemaError`."""
        if apply:
            migrate(self.engine)
            return
        have, head = current_revision(self.engine), head_revision()
        if have != head:
            raise SchemaError(
                f"the database is at revision {have or 'none (not migrated)'}, this release "
                f"needs {head}: run `python -m api db upgrade` (CUSTODY_DB_MIGRATE is off)"
            )

    # the name callers knew before migrations: it migrates too (nothing calls create_all)
    create_all = migrate

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self._factory()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()


class ConsoleSession(Base):
    """A treasury-console session (api/console/sessions.py), shared by every coordinator on
    this database. Only the SHA-256 of the session token is stored (the token itself is in
    the browser's cookie alone); times are Unix milliseconds; ``ceremony`` is the WebAuthn
    ceremony in progress (challenges, the approval statement asked for), ``version`` its
    compare-and-set counter, so a challenge is taken once across coordinators. Rows past
    ``expires_ms`` are swept."""

    __tablename__ = "console_sessions"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    csrf: Mapped[str] = mapped_column(String(64))
    approver_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    credential_id: Mapped[str | None] = mapped_column(Text, nullable=True)  # base64url
    created_ms: Mapped[int] = mapped_column(BigInteger)
    seen_ms: Mapped[int] = mapped_column(BigInteger)
    signed_in_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    ceremony: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)


class GovernanceVersion(Base):
    """One installed governance version (issue 14), shared by every coordinator on this
    database: the signed document exactly as the officers signed it (canonical CBOR) and
    its body digest. A coordinator writes a row only for a version it verified as the
    successor of the one before (api.governance), and verifies every row again before it
    takes it up: the table is a transport, never a trust root (the genesis each
    coordinator trusts is its own ``api trust`` file)."""

    __tablename__ = "governance_versions"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[bytes] = mapped_column(LargeBinary)
    digest: Mapped[str] = mapped_column(String(64))  # hex SHA-256 (custody.governance)
    installed_ms: Mapped[int] = mapped_column(BigInteger)
