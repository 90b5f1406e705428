"""Baseline: the coordinator schema as the models defined it when migrations began.

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-01

The tables are frozen here as SQLAlchemy Core tables (never imported from
:mod:`api.db`, whose models move on with later revisions). ``UTCDateTime`` is the
models' Python-side wrapper over ``DateTime(timezone=True)``: the DDL is that type.

Adoption of a database made before migrations existed (by ``Database.create_all``, which
created missing tables and then ran ``ALTER TABLE ... ADD COLUMN`` for the columns later
releases added): this revision creates only the tables that are missing, adds those
columns where they are missing, creates the indexes the old ``ADD COLUMN`` path never made
(``ix_credentials_principal``, ``ix_keys_label``) and, on PostgreSQL, widens the 32-bit
row ids it made to BIGINT. A new database simply gets every table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Ts = sa.DateTime(timezone=True)
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # 64-bit; SQLite's rowid alias

meta = sa.MetaData()


def col(name: str, type_: sa.types.TypeEngine[Any], *args: Any, **kw: Any) -> sa.Column[Any]:
    """A column NOT NULL unless ``nullable=True`` (the ORM models' default for Mapped[T])."""
    kw.setdefault("nullable", False)
    return sa.Column(name, type_, *args, **kw)


def seq(name: str = "seq") -> sa.Column[Any]:
    return sa.Column(name, Id, primary_key=True, autoincrement=True)


sa.Table(
    "credentials",
    meta,
    col("id", sa.String(40), primary_key=True),
    col("role", sa.String(16)),
    col("principal", sa.String(40), nullable=True, index=True),
    col("token_sha256", sa.String(64), unique=True, index=True),
    col("label", sa.String(100)),
    col("created_at", Ts),
    col("revoked", sa.Boolean()),
    col("scope", sa.JSON(), nullable=True),
    col("rotated_at", Ts, nullable=True),
)
sa.Table(
    "nodes",
    meta,
    col("id", sa.String(64), primary_key=True),
    col("party_id", sa.Integer(), unique=True),
    col("url", sa.String(300)),
    col("sign_pk", sa.String(64)),
    col("box_pk", sa.String(64)),
    col("status", sa.String(16)),
    col("last_seen", Ts, nullable=True),
    col("last_error", sa.Text(), nullable=True),
    col("enrolled_at", Ts),
)
sa.Table(
    "keys",
    meta,
    seq(),
    col("id", sa.String(40), unique=True, index=True),
    col("scheme", sa.String(20)),
    col("threshold", sa.Integer()),
    col("nodes", sa.JSON()),
    col("status", sa.String(16)),
    col("public_key", sa.String(70), nullable=True),
    col("verifying_shares", sa.JSON(), nullable=True),
    col("network", sa.String(10), nullable=True),
    col("label", sa.String(100), nullable=True, index=True),
    col("key_metadata", sa.JSON(), nullable=True),
    col("error", sa.JSON(), nullable=True),
    col("created_at", Ts),
    col("updated_at", Ts),
)
sa.Table(
    "sign_requests",
    meta,
    seq(),
    col("id", sa.String(40), unique=True, index=True),
    col("key_id", sa.String(40), sa.ForeignKey("keys.id"), index=True),
    col("kind", sa.String(16)),
    col("body", sa.JSON()),
    col("status", sa.String(20), index=True),
    col("signature", sa.Text(), nullable=True),
    col("recovery_id", sa.Integer(), nullable=True),
    col("signers", sa.JSON(), nullable=True),
    col("blamed", sa.JSON()),
    col("error", sa.JSON(), nullable=True),
    col("requested_by", sa.String(40)),
    col("created_at", Ts),
    col("updated_at", Ts),
    col("expires_at", Ts, nullable=True),
    col("receipt", sa.JSON(), nullable=True),
)
sa.Table(
    "approvals",
    meta,
    seq("id"),
    col("request_id", sa.String(40), sa.ForeignKey("sign_requests.id"), index=True),
    col("approver_id", sa.String(64)),
    col("decision", sa.String(8)),
    col("approval", sa.Text()),
    col("expires_at", Ts),
    col("received_at", Ts),
    col("received_by", sa.String(40)),
)
sa.Table(
    "idempotency",
    meta,
    seq("id"),
    col("credential_id", sa.String(40)),
    col("key", sa.String(255)),
    col("fingerprint", sa.String(64)),
    col("state", sa.String(12)),
    col("status_code", sa.Integer(), nullable=True),
    col("response", sa.JSON(), nullable=True),
    col("created_at", Ts),
    sa.UniqueConstraint("credential_id", "key"),
)
sa.Table(
    "audit",
    meta,
    seq(),
    col("at", sa.String(40)),
    col("actor", sa.String(64)),
    col("action", sa.String(64)),
    col("subject", sa.String(64), index=True),
    col("data", sa.JSON()),
    col("prev_hash", sa.String(64)),
    col("hash", sa.String(64), unique=True),
)
sa.Table(
    "checkpoints",
    meta,
    seq(),
    col("head", sa.String(64)),
    col("digests", sa.JSON()),
    col("signatures", sa.JSON()),
    col("created_at", Ts),
)
sa.Table(
    "webhooks",
    meta,
    col("id", sa.String(40), primary_key=True),
    col("url", sa.String(2000)),
    col("event_types", sa.JSON()),
    col("description", sa.String(200)),
    col("secret", sa.Text()),
    col("enabled", sa.Boolean()),
    col("created_by", sa.String(40)),
    col("created_at", Ts),
    col("updated_at", Ts),
)
sa.Table(
    "ceremonies",
    meta,
    seq(),
    col("id", sa.String(40), unique=True, index=True),
    col("kind", sa.String(20)),
    col("key_id", sa.String(40), index=True),
    col("status", sa.String(16)),
    col("session_id", sa.String(64)),
    col("participants", sa.JSON()),
    col("share_version", sa.Integer(), nullable=True),
    col("transcript", sa.JSON(), nullable=True),
    col("progress", sa.JSON(), nullable=True),
    col("error", sa.JSON(), nullable=True),
    col("created_by", sa.String(64)),
    col("created_at", Ts),
    col("updated_at", Ts),
)
sa.Table(
    "webhook_messages",
    meta,
    seq(),
    col("id", sa.String(40), unique=True, index=True),
    col("event_type", sa.String(64)),
    col("payload", sa.JSON()),
    col("created_at", Ts),
)
sa.Table(
    "webhook_deliveries",
    meta,
    seq("id"),
    col("message_id", sa.String(40), sa.ForeignKey("webhook_messages.id"), index=True),
    col("webhook_id", sa.String(40), sa.ForeignKey("webhooks.id"), index=True),
    col("status", sa.String(12), index=True),
    col("attempts", sa.Integer()),
    col("next_attempt_at", Ts, nullable=True),
    col("last_status_code", sa.Integer(), nullable=True),
    col("last_error", sa.Text(), nullable=True),
    col("log", sa.JSON()),
    col("created_at", Ts),
    col("updated_at", Ts),
    sa.UniqueConstraint("message_id", "webhook_id"),
)
# api.shadow's tables
sa.Table(
    "policy_shadow",
    meta,
    col("id", sa.Integer(), primary_key=True, autoincrement=True),
    col("document", sa.Text()),
    col("version", sa.Integer()),
    col("digest", sa.String(64)),
    col("base_version", sa.Integer()),
    col("base_digest", sa.String(64)),
    col("installed_by", sa.String(40)),
    col("installed_at", Ts),
)
sa.Table(
    "policy_shadow_disagreements",
    meta,
    col("seq", sa.Integer(), primary_key=True, autoincrement=True),
    col("request_id", sa.String(40), index=True),
    col("key_id", sa.String(40)),
    col("kind", sa.String(16)),
    col("at", Ts),
    col("active", sa.JSON()),
    col("shadow", sa.JSON()),
)

# Columns releases before migrations added with ALTER TABLE ... ADD COLUMN (all nullable)
LEGACY_ADDED = {
    "credentials": ("principal", "scope", "rotated_at"),
    "sign_requests": ("receipt",),
    "keys": ("label", "key_metadata"),
}


def upgrade() -> None:
    bind = op.get_bind()
    have = set(sa.inspect(bind).get_table_names())
    for table in meta.sorted_tables:  # foreign keys' targets first
        if table.name not in have:
            table.create(bind)  # with its indexes
            continue
        _adopt(bind, table)


def _adopt(bind: sa.Connection, table: sa.Table) -> None:
    """Bring one table made by the pre-migration ``create_all`` to this revision."""
    insp = sa.inspect(bind)
    columns = {c["name"] for c in insp.get_columns(table.name)}
    missing = [n for n in LEGACY_ADDED.get(table.name, ()) if n not in columns]
    if missing:
        with op.batch_alter_table(table.name) as batch:
            for name in missing:
                c = table.c[name]
                batch.add_column(sa.Column(name, c.type, nullable=True))
    indexes = {i["name"] for i in insp.get_indexes(table.name)}
    for index in table.indexes:
        if index.name not in indexes:
            index.create(bind)
    if bind.dialect.name == "postgresql":
        for c in table.primary_key.columns:
            if isinstance(c.type, sa.BigInteger):
                op.alter_column(table.name, c.name, type_=sa.BigInteger())
                # a SERIAL's sequence is AS integer: widen it too, or it stops at 2**31 - 1
                seq_name = bind.scalar(
                    sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                    {"t": table.name, "c": c.name},
                )
                if seq_name:
                    op.execute(f"ALTER SEQUENCE {seq_name} AS bigint")


def downgrade() -> None:
    bind = op.get_bind()
    meta.drop_all(bind)
