"""Coordinator persistence: SQLAlchemy 2 models over SQLite (default) or PostgreSQL.

Only portable SQL is used: no SQLite-only pragmas outside :func:`make_engine`, JSON stored
as text, times as timezone-aware UTC, booleans as booleans, claims of pool items by a
conditional ``UPDATE ... WHERE used = false`` whose row count tells who won (works the same
on PostgreSQL, where ``SELECT ... FOR UPDATE SKIP LOCKED`` can later replace it).

The coordinator stores no secret share: keys hold public material only (group public key
and verifying shares), pools hold nonce *commitments* and presignature ids.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
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


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Credential(Base):
    """A bearer credential bound to exactly one role; only sha256(token) is stored."""

    __tablename__ = "credentials"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


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
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True, index=True)
    scheme: Mapped[str] = mapped_column(String(20))
    threshold: Mapped[int] = mapped_column(Integer)
    nodes: Mapped[list[Any]] = mapped_column(JSON)  # node ids
    status: Mapped[str] = mapped_column(String(16), default="pending")
    public_key: Mapped[str | None] = mapped_column(String(70), nullable=True)
    verifying_shares: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class SignRequest(Base):
    """A request for one signature and its life: pending_approval -> signing -> signed|..."""

    __tablename__ = "sign_requests"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True, index=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("keys.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)  # canonical SignRequest sent to nodes
    status: Mapped[str] = mapped_column(String(20), index=True)
    signature: Mapped[str | None] = mapped_column(String(140), nullable=True)
    recovery_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    signers: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    blamed: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IdempotencyRecord(Base):
    """One ``Idempotency-Key`` of one credential: the request fingerprint and its answer."""

    __tablename__ = "idempotency"
    __table_args__ = (UniqueConstraint("credential_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    credential_id: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(12))  # in_flight | done
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PoolItem(Base):
    """Preprocessed signing material handed out once: FROST nonce commitments of one node
    (``kind='frost'``, ``party_id`` set) or a DKLs23 presignature of a participant set
    (``kind='presig'``, ``participants`` set). Public data only."""

    __tablename__ = "pool"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("keys.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    party_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    participants: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    ref: Mapped[str] = mapped_column(String(100))  # nonce_id / presignature_id
    data: Mapped[str | None] = mapped_column(Text, nullable=True)  # hex commitments
    used: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """Hash-chained audit log: ``hash = sha256(prev_hash || canonical_json(entry))``."""

    __tablename__ = "audit"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so readers never block."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """Engine plus session factory; ``with db.session() as s:`` commits on success."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        Base.metadata.create_all(self.engine)

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
