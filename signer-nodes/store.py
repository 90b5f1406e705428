"""The node database: one SQLCipher file holding sealed shares, the hash-chained release
log, the governance versions, session state and the pending seal-key rotation record.
(Nonces and presignatures are NOT here: they live in memory only, :mod:`signer_nodes.pool`;
the ``ledger`` and ``peers`` tables of schema 1 stay empty.)

Every secret in here is *also* sealed by the HSM (the ``sealed`` columns); SQLCipher
(AES-256 page encryption with per-page HMAC, key from the HSM-sealed key file) protects
the metadata and makes tampering with rows detectable.

Durability (DESIGN.md invariant 3, the write-ahead rule). The database runs in WAL mode
with ``synchronous=FULL``: SQLite fsyncs the WAL at every commit, so once ``COMMIT``
returns, the release-log entry of a nonce survives SIGKILL and power loss. (With WAL,
``synchronous=NORMAL`` would *not* be enough: the last commits may roll back on power loss.
A rollback journal with FULL would also be correct; WAL was chosen because readers do not
block the writer and commits cost one fsync of an append-only file.)

Threads: one connection, ``check_same_thread=False``, every use under one re-entrant lock
(:meth:`NodeStore.tx` / :meth:`NodeStore.read`), held only for the statements themselves.

Group commit (:meth:`NodeStore.release_many`). Concurrent signing requests each need
their release-log entry *durable* before their share is computed. One thread at a time
leads: it takes every entry queued so far, chains and inserts them in one transaction and
COMMITs once (one fsync), then wakes each waiter with its own sequence number.
Marks that arrive during that fsync form the next batch. Each caller still returns only
after the commit holding *its* mark has returned, so the write-ahead rule holds per share;
under load one fsync covers many shares instead of one.

Seal-key rotation (:mod:`signer_nodes.rotation`) takes :attr:`NodeStore.sealing` as
writer; every path that seals, or unseals and then uses, a blob takes it as reader. So
signing requests run concurrently with each other but never interleave with a rotation.

Migrations are versioned: ``schema_version`` holds the applied version and
:data:`MIGRATIONS` is the ordered list; :meth:`NodeStore.migrate` applies the missing
ones, each in its own transaction.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlcipher3

__all__ = [
    "MIGRATIONS",
    "StoreError",
    "NodeStore",
    "KeyRow",
    "ReleaseRow",
    "ReleaseBuilder",
    "RWLock",
]

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
            """CREATE TABLE identity (
                kind TEXT PRIMARY KEY, public BLOB NOT NULL,
                sealed BLOB NOT NULL, seal_version INTEGER NOT NULL)""",
            """CREATE TABLE keys (
                key_id TEXT PRIMARY KEY, scheme TEXT NOT NULL, share_version INTEGER NOT NULL,
                public_key BLOB NOT NULL, public_info BLOB NOT NULL,
                sealed_share BLOB NOT NULL, seal_version INTEGER NOT NULL,
                created_at REAL NOT NULL)""",
            """CREATE TABLE ledger (
                item_id TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('nonce','presig')),
                key_id TEXT NOT NULL REFERENCES keys(key_id), public BLOB NOT NULL,
                sealed BLOB NOT NULL, seal_version INTEGER NOT NULL,
                used INTEGER NOT NULL DEFAULT 0, used_by TEXT,
                created_at REAL NOT NULL, used_at REAL)""",
            "CREATE INDEX ledger_key ON ledger(key_id, kind, used)",
            """CREATE TABLE sessions (
                session_id TEXT PRIMARY KEY, kind TEXT NOT NULL, key_id TEXT NOT NULL,
                scheme TEXT NOT NULL, threshold INTEGER NOT NULL, participants TEXT NOT NULL,
                status TEXT NOT NULL, result TEXT, error TEXT,
                created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
            """CREATE TABLE envelopes (
                session_id TEXT NOT NULL, direction TEXT NOT NULL CHECK (direction IN ('in','out')),
                hash BLOB NOT NULL, sender INTEGER NOT NULL, recipient INTEGER,
                round INTEGER NOT NULL, envelope BLOB, created_at REAL NOT NULL,
                PRIMARY KEY (session_id, direction, hash))""",
            """CREATE TABLE peers (
                party_id INTEGER PRIMARY KEY, node_id TEXT NOT NULL,
                sign_pk BLOB NOT NULL, box_pk BLOB NOT NULL)""",
            """CREATE TABLE rotation (
                id INTEGER PRIMARY KEY CHECK (id = 1), from_version INTEGER NOT NULL,
                to_version INTEGER NOT NULL, step TEXT NOT NULL, started_at REAL NOT NULL)""",
        ],
    ),
    (
        2,
        [
            # Issue 9: nonce and presignature secrets live in memory only (signer_nodes.pool);
            # any sealed one an older version left on disk is dropped here.
            "DELETE FROM ledger",
            "DELETE FROM peers",  # peers come from the governance roster now
            """CREATE TABLE governance (
                version INTEGER PRIMARY KEY, digest BLOB NOT NULL, document BLOB NOT NULL,
                installed_at REAL NOT NULL)""",
            """CREATE TABLE releases (
                seq INTEGER PRIMARY KEY, item_id TEXT NOT NULL UNIQUE,
                item_kind TEXT NOT NULL CHECK (item_kind IN ('nonce','presig')), prev BLOB NOT NULL,
                hash BLOB NOT NULL, entry BLOB NOT NULL, created_at REAL NOT NULL)""",
        ],
    ),
    (
        3,
        [
            # Issue 10 (nodes decide): velocity windows are counted from the node's own
            # release log; the window is rebuilt at open from the entries since its start,
            # found through this index (never a scan of the whole log).
            "CREATE INDEX releases_time ON releases(created_at)",
        ],
    ),
    (
        4,
        [
            # Issue 15: the last WebAuthn signature counter this node accepted per passkey
            # credential (WebAuthn L3 section 6.1.1), and the assertion that set it.
            """CREATE TABLE passkey_counters (
                credential_id BLOB PRIMARY KEY, sign_count INTEGER NOT NULL,
                assertion_digest BLOB NOT NULL, updated_at REAL NOT NULL)""",
        ],
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]


class StoreError(Exception):
    """The database cannot be opened (wrong key, corrupt file) or a migration failed."""


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    scheme: str
    share_version: int
    public_key: bytes
    public_info: bytes
    sealed_share: bytes
    seal_version: int


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no starvation).

    The writer side is re-entrant for its owning thread, and a thread holding the writer
    side may also take the reader side (rotation calls code that reads).
    """

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._writer == me:
            yield
            return
        with self._cv:
            while self._writer is not None or self._writers_waiting:
                self._cv.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cv:
                self._readers -= 1
                if not self._readers:
                    self._cv.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cv:
            if self._writer == me:
                self._depth += 1
            else:
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cv.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._cv:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cv.notify_all()


#: Builds a release entry at commit time: (seq, prev hash) -> (entry bytes, entry hash).
ReleaseBuilder = Callable[[int, bytes], tuple[bytes, bytes]]


@dataclass(frozen=True)
class ReleaseRow:
    seq: int
    item_id: str
    prev: bytes
    hash: bytes
    entry: bytes


@dataclass
class _Mark:
    item_id: str
    item_kind: str
    build: ReleaseBuilder
    done: bool = False
    seq: int = 0
    ok: bool = False
    error: BaseException | None = None


class NodeStore:
    """The node's SQLCipher database (see the module docstring)."""

    def __init__(self, path: Path, db_key: bytes) -> None:
        if len(db_key) != 32:
            raise StoreError("database key must be 32 bytes")
        self.path = Path(path)
        self.lock = threading.RLock()
        self.sealing = RWLock()
        self._marks: list[_Mark] = []
        self._marks_cv = threading.Condition(threading.Lock())
        self._leading = False
        self.commits = 0  # release-log transactions committed (group commit statistics)
        self.marks = 0
        conn = sqlcipher3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            # Raw 256-bit key (no KDF: the key is random, not a passphrase).
            conn.execute(f"PRAGMA key = \"x'{db_key.hex()}'\"")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")
        except sqlcipher3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"cannot open node database {self.path.name}: {exc}") from None
        self._conn = conn
        os.chmod(self.path, 0o600)
        self.migrate()

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    # -- transactions ------------------------------------------------------------------
    @contextmanager
    def tx(self) -> Iterator[sqlcipher3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT), durable when it returns."""
        with self.lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlcipher3.Connection]:
        with self.lock:
            yield self._conn

    def schema_version(self) -> int:
        with self.read() as c:
            row = c.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
            ).fetchone()
            if row is None:
                return 0
            (v,) = c.execute("SELECT version FROM schema_version").fetchone()
            return int(v)

    def migrate(self) -> None:
        """Apply every migration newer than the database's ``schema_version``, in order."""
        with self.tx() as c:
            c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            if c.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
                c.execute("INSERT INTO schema_version VALUES (0)")
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"database schema {current} is newer than this code ({SCHEMA_VERSION})"
            )
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            with self.tx() as c:
                for sql in statements:
                    c.execute(sql)
                c.execute("UPDATE schema_version SET version = ?", (version,))

    # -- passkey counters (issue 15) ---------------------------------------------------------
    def passkey_floor(self, credential_id: bytes, assertion_digest: bytes) -> int:
        """The counter an assertion of ``credential_id`` must exceed: the last one accepted,
        or one less when that one was accepted for this very assertion (a retry of the same
        approval, e.g. another item or signer subset of one request); 0 if none."""
        with self.read() as c:
            row = c.execute(
                "SELECT sign_count, assertion_digest FROM passkey_counters WHERE credential_id = ?",
                (credential_id,),
            ).fetchone()
        if row is None:
            return 0
        count, digest = int(row[0]), bytes(row[1])
        return max(0, count - 1) if digest == assertion_digest else count

    def record_passkey_counter(
        self, credential_id: bytes, sign_count: int, assertion_digest: bytes
    ) -> bool:
        """Durably record an accepted assertion's counter, unless another assertion got there
        first (compare and set in one transaction). False: the counter no longer exceeds the
        recorded one, refuse. A counter of 0 beside a recorded 0 is an authenticator that
        keeps none (WebAuthn L3 section 6.1.1) and always records."""
        with self.tx() as c:
            row = c.execute(
                "SELECT sign_count, assertion_digest FROM passkey_counters WHERE credential_id = ?",
                (credential_id,),
            ).fetchone()
            if row is not None:
                count, digest = int(row[0]), bytes(row[1])
                fresh = sign_count > count or (sign_count == count == 0)
                if not fresh and not (sign_count == count and digest == assertion_digest):
                    return False
            c.execute(
                "INSERT INTO passkey_counters VALUES (?, ?, ?, ?) ON CONFLICT(credential_id)"
                " DO UPDATE SET sign_count = excluded.sign_count,"
                " assertion_digest = excluded.assertion_digest, updated_at = excluded.updated_at",
                (credential_id, sign_count, assertion_digest, time.time()),
            )
        return True

    # -- meta ----------------------------------------------------------------------------
    def get_meta(self, k: str) -> str | None:
        with self.read() as c:
            row = c.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
            return None if row is None else str(row[0])

    def set_meta(self, k: str, v: str) -> None:
        sql = "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v"
        with self.tx() as c:
            c.execute(sql, (k, v))

    # -- identity ------------------------------------------------------------------------
    def put_identity(self, kind: str, public: bytes, sealed: bytes, seal_version: int) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO identity (kind, public, sealed, seal_version) VALUES (?,?,?,?)",
                (kind, public, sealed, seal_version),
            )

    def get_identity(self, kind: str) -> tuple[bytes, bytes, int]:
        with self.read() as c:
            row = c.execute(
                "SELECT public, sealed, seal_version FROM identity WHERE kind = ?", (kind,)
            ).fetchone()
        if row is None:
            raise StoreError(f"identity key {kind!r} missing")
        return bytes(row[0]), bytes(row[1]), int(row[2])

    # -- keys ----------------------------------------------------------------------------
    def put_key(self, row: KeyRow) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO keys (key_id, scheme, share_version, public_key, public_info,"
                " sealed_share, seal_version, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    row.key_id,
                    row.scheme,
                    row.share_version,
                    row.public_key,
                    row.public_info,
                    row.sealed_share,
                    row.seal_version,
                    time.time(),
                ),
            )

    def get_key(self, key_id: str) -> KeyRow | None:
        with self.read() as c:
            r = c.execute(
                "SELECT key_id, scheme, share_version, public_key, public_info, sealed_share,"
                " seal_version FROM keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        if r is None:
            return None
        return KeyRow(r[0], r[1], int(r[2]), bytes(r[3]), bytes(r[4]), bytes(r[5]), int(r[6]))

    def key_ids(self) -> list[str]:
        with self.read() as c:
            return [r[0] for r in c.execute("SELECT key_id FROM keys ORDER BY key_id")]

    # -- release log ---------------------------------------------------------------------
    def release(self, item_id: str, item_kind: str, build: ReleaseBuilder) -> int | None:
        """Append one release-log entry for ``item_id`` durably; its seq, or None if the
        item has a release entry already. Returns only after the COMMIT holding it has
        returned (group commit, see the module docstring)."""
        return self.release_many([(item_id, item_kind, build)])[0]

    def release_many(self, marks: Sequence[tuple[str, str, ReleaseBuilder]]) -> list[int | None]:
        """:meth:`release` for several items at once (a signing batch).

        All of them are queued together, so one leader takes them into the same
        transaction: one COMMIT for the whole batch. The leader assigns each entry its
        sequence number and the previous entry's hash (the release log is one hash chain)
        and calls its builder. Returns, in order, each new entry's seq (None: the item was
        released already, also by an earlier entry of ``marks``); returns only after that
        COMMIT has returned. A failed COMMIT raises for every mark."""
        mine = [_Mark(item_id, kind, build) for item_id, kind, build in marks]
        if not mine:
            return []
        with self._marks_cv:
            self._marks.extend(mine)
            while not all(m.done for m in mine):
                if self._leading:
                    self._marks_cv.wait()
                    continue
                self._leading = True
                batch, self._marks = self._marks, []
                self._marks_cv.release()
                try:
                    self._commit_marks(batch)
                finally:
                    self._marks_cv.acquire()
                    self._leading = False
                    self._marks_cv.notify_all()
        for m in mine:
            if m.error is not None:
                raise m.error
        return [m.seq if m.ok else None for m in mine]

    def _commit_marks(self, batch: list[_Mark]) -> None:
        now = time.time()
        try:
            with self.tx() as c:
                row = c.execute(
                    "SELECT seq, hash FROM releases ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, head = (0, bytes(32)) if row is None else (int(row[0]), bytes(row[1]))
                done: list[tuple[int, bool]] = []
                for m in batch:
                    if c.execute(
                        "SELECT 1 FROM releases WHERE item_id = ?", (m.item_id,)
                    ).fetchone():
                        done.append((0, False))
                        continue
                    entry, h = m.build(seq + 1, head)
                    c.execute(
                        "INSERT INTO releases (seq, item_id, item_kind, prev, hash, entry,"
                        " created_at) VALUES (?,?,?,?,?,?,?)",
                        (seq + 1, m.item_id, m.item_kind, head, h, entry, now),
                    )
                    seq, head = seq + 1, h
                    done.append((seq, True))
        except BaseException as exc:  # nothing was committed: every waiter fails closed
            for m in batch:
                m.error, m.done = exc, True
            return
        self.commits += 1
        self.marks += len(batch)
        for m, (s, ok) in zip(batch, done, strict=True):
            m.seq, m.ok, m.done = s, ok, True

    def released(self, item_id: str) -> bool:
        with self.read() as c:
            return (
                c.execute("SELECT 1 FROM releases WHERE item_id = ?", (item_id,)).fetchone()
                is not None
            )

    def releases_after(self, after: int, limit: int) -> list[ReleaseRow]:
        with self.read() as c:
            return [
                ReleaseRow(int(r[0]), r[1], bytes(r[2]), bytes(r[3]), bytes(r[4]))
                for r in c.execute(
                    "SELECT seq, item_id, prev, hash, entry FROM releases WHERE seq > ?"
                    " ORDER BY seq LIMIT ?",
                    (after, limit),
                )
            ]

    def releases_since(self, created_at: float) -> list[bytes]:
        """The entries committed after ``created_at`` (Unix seconds), in log order (index
        ``releases_time``): what a velocity window is rebuilt from."""
        with self.read() as c:
            return [
                bytes(r[0])
                for r in c.execute(
                    "SELECT entry FROM releases WHERE created_at > ? ORDER BY seq", (created_at,)
                )
            ]

    def release_head(self) -> tuple[int, bytes]:
        with self.read() as c:
            row = c.execute("SELECT seq, hash FROM releases ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, bytes(32)) if row is None else (int(row[0]), bytes(row[1]))

    def release_counts(self) -> dict[str, int]:
        """Released items by kind (``nonce``, ``presig``)."""
        with self.read() as c:
            return {
                str(k): int(n)
                for k, n in c.execute("SELECT item_kind, count(*) FROM releases GROUP BY item_kind")
            }

    # -- governance ----------------------------------------------------------------------
    def add_governance(self, version: int, digest: bytes, document: bytes) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO governance (version, digest, document, installed_at) VALUES (?,?,?,?)",
                (version, digest, document, time.time()),
            )

    def governance_documents(self) -> list[bytes]:
        """Every installed version's document, oldest first."""
        with self.read() as c:
            return [
                bytes(r[0]) for r in c.execute("SELECT document FROM governance ORDER BY version")
            ]

    # -- sessions ------------------------------------------------------------------------
    def create_session(self, info: dict[str, Any]) -> None:
        now = time.time()
        with self.tx() as c:
            c.execute(
                "INSERT INTO sessions (session_id, kind, key_id, scheme, threshold, participants,"
                " status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    info["session_id"],
                    info["kind"],
                    info["key_id"],
                    info["scheme"],
                    info["threshold"],
                    json.dumps(info["participants"]),
                    "running",
                    now,
                    now,
                ),
            )

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        with self.read() as c:
            r = c.execute(
                "SELECT session_id, kind, key_id, scheme, threshold, participants, status, result,"
                " error FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        if r is None:
            return None
        return {
            "session_id": r[0],
            "kind": r[1],
            "key_id": r[2],
            "scheme": r[3],
            "threshold": r[4],
            "participants": json.loads(r[5]),
            "status": r[6],
            "result": json.loads(r[7]) if r[7] else None,
            "error": json.loads(r[8]) if r[8] else None,
        }

    def finish_session(
        self,
        session_id: str,
        status: str,
        *,
        result: Any = None,
        error: Any = None,
    ) -> None:
        sql = (
            "UPDATE sessions SET status = ?, result = ?, error = ?, updated_at = ?"
            " WHERE session_id = ?"
        )
        args = (
            status,
            json.dumps(result) if result is not None else None,
            json.dumps(error) if error is not None else None,
            time.time(),
            session_id,
        )
        with self.tx() as c:
            c.execute(sql, args)

    def fail_running_sessions(self, reason: dict[str, Any]) -> int:
        """At startup: in-memory protocol state is gone, so every running session failed."""
        with self.tx() as c:
            cur = c.execute(
                "UPDATE sessions SET status = 'failed', error = ?, updated_at = ?"
                " WHERE status = 'running'",
                (json.dumps(reason), time.time()),
            )
            return int(cur.rowcount)

    def envelope_seen(self, session_id: str, h: bytes) -> bool:
        with self.read() as c:
            return (
                c.execute(
                    "SELECT 1 FROM envelopes"
                    " WHERE session_id = ? AND direction = 'in' AND hash = ?",
                    (session_id, h),
                ).fetchone()
                is not None
            )

    def add_envelope(
        self,
        conn: Any,
        session_id: str,
        direction: str,
        h: bytes,
        sender: int,
        recipient: int | None,
        rnd: int,
        envelope: bytes | None,
    ) -> None:
        conn.execute(
            "INSERT INTO envelopes (session_id, direction, hash, sender, recipient, round,"
            " envelope, created_at) VALUES (?,?,?,?,?,?,?,?)",
            (session_id, direction, h, sender, recipient, rnd, envelope, time.time()),
        )

    def outbox(self, session_id: str) -> list[tuple[int, int | None, bytes]]:
        with self.read() as c:
            return [
                (int(s), r, bytes(e))
                for s, r, e in c.execute(
                    "SELECT sender, recipient, envelope FROM envelopes WHERE session_id = ?"
                    " AND direction = 'out' ORDER BY created_at, rowid",
                    (session_id,),
                )
            ]
