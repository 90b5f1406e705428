"""Core baseline: the ledger database's tables as they were when migrations began.

Revision ID: core0001
Revises: (none; the first of branch ``core``)
Create Date: 2026-12-01

:data:`payments.db.metadata` (ledger, events, read models, chain rails) and
:data:`payments.settlement.iso_metadata` (ISO 20022 settlements), frozen here as Core
tables with their constraint names as the naming convention made them. A database made
by ``create_all`` before migrations existed is adopted: only missing tables (and missing
indexes of existing ones) are created; a new database gets every table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "core0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("core",)
depends_on: str | Sequence[str] | None = None

meta = sa.MetaData()

sa.Table(
    "assets",
    meta,
    sa.Column("code", sa.String(length=16), nullable=False),
    sa.Column("decimals", sa.Integer(), nullable=False),
    sa.CheckConstraint("decimals >= 0 AND decimals <= 36", name="ck_assets_decimals_range"),
    sa.PrimaryKeyConstraint("code", name="pk_assets"),
)

sa.Table(
    "chain_builds",
    meta,
    sa.Column("rail", sa.String(length=24), nullable=False),
    sa.Column("payment_id", sa.String(length=40), nullable=False),
    sa.Column("asset", sa.String(length=16), nullable=False),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    sa.Column("unsigned", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("ref", sa.String(length=128), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(
        "status IN ('built', 'broadcast', 'released')", name="ck_chain_builds_status_known"
    ),
    sa.PrimaryKeyConstraint("rail", "payment_id", name="pk_chain_builds"),
    sa.UniqueConstraint("ref", name="uq_chain_builds_ref"),
)

sa.Table(
    "chain_nonces",
    meta,
    sa.Column("rail", sa.String(length=24), nullable=False),
    sa.Column("address", sa.String(length=64), nullable=False),
    sa.Column("state", sa.Text(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("rail", "address", name="pk_chain_nonces"),
)

sa.Table(
    "events",
    meta,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        autoincrement=True,
        nullable=False,
    ),
    sa.Column("stream", sa.String(length=64), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("type", sa.String(length=40), nullable=False),
    sa.Column("data", sa.JSON(), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("seq >= 1", name="ck_events_seq_positive"),
    sa.PrimaryKeyConstraint("id", name="pk_events"),
    sa.UniqueConstraint("stream", "seq", name="uq_events_stream_seq"),
)

sa.Table(
    "idempotency",
    meta,
    sa.Column("scope", sa.String(length=40), nullable=False),
    sa.Column("key", sa.String(length=255), nullable=False),
    sa.Column("body_hash", sa.String(length=64), nullable=False),
    sa.Column("resource_id", sa.String(length=40), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency"),
)

sa.Table(
    "reconciliations",
    meta,
    sa.Column("id", sa.String(length=40), nullable=False),
    sa.Column("matched", sa.Integer(), nullable=False),
    sa.Column("breaks", sa.JSON(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id", name="pk_reconciliations"),
)

sa.Table(
    "settlements",
    meta,
    sa.Column("id", sa.String(length=40), nullable=False),
    sa.Column("counterparty", sa.String(length=64), nullable=False),
    sa.Column("asset", sa.String(length=16), nullable=False),
    sa.Column("net_amount", sa.BigInteger(), nullable=False),
    sa.Column("payment_count", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("confirmed_amount", sa.BigInteger(), nullable=True),
    sa.Column("confirmation_ref", sa.String(length=128), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id", name="pk_settlements"),
)

sa.Table(
    "accounts",
    meta,
    sa.Column("id", sa.String(length=40), nullable=False),
    sa.Column("owner", sa.String(length=64), nullable=False),
    sa.Column("asset", sa.String(length=16), nullable=False),
    sa.Column("kind", sa.String(length=24), nullable=False),
    sa.Column("allow_negative", sa.Boolean(), nullable=False),
    sa.Column("balance", sa.BigInteger(), nullable=False),
    sa.Column("held", sa.BigInteger(), nullable=False),
    sa.Column("per_payment_limit", sa.BigInteger(), nullable=True),
    sa.Column("daily_limit", sa.BigInteger(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(
        "kind IN ('customer', 'chain_clearing', 'settlement_clearing', 'fees', 'external')",
        name="ck_accounts_kind_known",
    ),
    sa.CheckConstraint(
        "allow_negative OR balance - held >= 0", name="ck_accounts_funds_not_negative"
    ),
    sa.CheckConstraint("held >= 0", name="ck_accounts_held_not_negative"),
    sa.ForeignKeyConstraint(["asset"], ["assets.code"], name="fk_accounts_asset_assets"),
    sa.PrimaryKeyConstraint("id", name="pk_accounts"),
    sa.UniqueConstraint("owner", "asset", "kind", name="uq_accounts_owner_asset_kind"),
)

sa.Table(
    "ledger_transactions",
    meta,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        autoincrement=True,
        nullable=False,
    ),
    sa.Column("event_id", sa.BigInteger(), nullable=False),
    sa.Column("memo", sa.String(length=200), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(
        ["event_id"], ["events.id"], name="fk_ledger_transactions_event_id_events"
    ),
    sa.PrimaryKeyConstraint("id", name="pk_ledger_transactions"),
    sa.UniqueConstraint("event_id", name="uq_ledger_transactions_event_id"),
)

sa.Table(
    "payments",
    meta,
    sa.Column("id", sa.String(length=40), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("customer", sa.String(length=64), nullable=False),
    sa.Column("account_id", sa.String(length=40), nullable=False),
    sa.Column("asset", sa.String(length=16), nullable=False),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    sa.Column("destination", sa.String(length=128), nullable=False),
    sa.Column("rail", sa.String(length=24), nullable=False),
    sa.Column("end_to_end_id", sa.String(length=35), nullable=True),
    sa.Column("status", sa.String(length=24), nullable=False),
    sa.Column("risk_score", sa.Integer(), nullable=True),
    sa.Column("reasons", sa.JSON(), nullable=False),
    sa.Column("hold", sa.BigInteger(), nullable=False),
    sa.Column("fee", sa.BigInteger(), nullable=False),
    sa.Column("unsigned", sa.JSON(), nullable=True),
    sa.Column("sign_request_id", sa.String(length=40), nullable=True),
    sa.Column("signature", sa.Text(), nullable=True),
    sa.Column("signed_raw", sa.Text(), nullable=True),
    sa.Column("rail_ref", sa.String(length=128), nullable=True),
    sa.Column("settlement_id", sa.String(length=40), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
    sa.ForeignKeyConstraint(
        ["account_id"], ["accounts.id"], name="fk_payments_account_id_accounts"
    ),
    sa.PrimaryKeyConstraint("id", name="pk_payments"),
    sa.Index("ix_payments_customer", "customer"),
    sa.Index("ix_payments_status", "status"),
)

sa.Table(
    "postings",
    meta,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        autoincrement=True,
        nullable=False,
    ),
    sa.Column("txn_id", sa.BigInteger(), nullable=False),
    sa.Column("account_id", sa.String(length=40), nullable=False),
    sa.Column("asset", sa.String(length=16), nullable=False),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    sa.CheckConstraint("amount <> 0", name="ck_postings_amount_nonzero"),
    sa.ForeignKeyConstraint(
        ["account_id"], ["accounts.id"], name="fk_postings_account_id_accounts"
    ),
    sa.ForeignKeyConstraint(
        ["txn_id"], ["ledger_transactions.id"], name="fk_postings_txn_id_ledger_transactions"
    ),
    sa.PrimaryKeyConstraint("id", name="pk_postings"),
    sa.Index("ix_postings_account_id", "account_id"),
)

sa.Table(
    "settlement_items",
    meta,
    sa.Column("settlement_id", sa.String(length=40), nullable=False),
    sa.Column("payment_id", sa.String(length=40), nullable=False),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(
        ["payment_id"], ["payments.id"], name="fk_settlement_items_payment_id_payments"
    ),
    sa.ForeignKeyConstraint(
        ["settlement_id"], ["settlements.id"], name="fk_settlement_items_settlement_id_settlements"
    ),
    sa.PrimaryKeyConstraint("settlement_id", "payment_id", name="pk_settlement_items"),
    sa.UniqueConstraint("payment_id", name="uq_settlement_items_payment_id"),
)

sa.Table(
    "iso_settlements",
    meta,
    sa.Column("id", sa.String(length=40), nullable=False),
    sa.Column("counterparty", sa.String(length=11), nullable=False),
    sa.Column("asset", sa.String(length=16), nullable=False),
    sa.Column("net_amount", sa.String(length=40), nullable=False),
    sa.Column("uetr", sa.String(length=36), nullable=False),
    sa.Column("document", sa.Text(), nullable=False),
    sa.Column("unsigned", sa.Text(), nullable=False),
    sa.Column("status", sa.String(length=20), nullable=False),
    sa.Column("sign_request_id", sa.String(length=40), nullable=True),
    sa.Column("signed", sa.Text(), nullable=True),
    sa.Column("detail", sa.Text(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
)

sa.Table(
    "iso_settlement_items",
    meta,
    sa.Column("settlement_id", sa.String(length=40), nullable=False),
    sa.Column("payment_id", sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(
        ["settlement_id"],
        ["iso_settlements.id"],
    ),
    sa.PrimaryKeyConstraint("payment_id"),
)


def upgrade() -> None:
    bind = op.get_bind()
    insp = sa.inspect(bind)
    have = set(insp.get_table_names())
    for table in meta.sorted_tables:  # foreign keys' targets first
        if table.name not in have:
            table.create(bind)  # with its indexes
            continue
        indexes = {i["name"] for i in insp.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade() -> None:
    meta.drop_all(op.get_bind())
