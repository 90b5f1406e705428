"""Book baseline: the book rail's journal (:data:`payments.book.book_metadata`).

Revision ID: book0001
Revises: (none; the first of branch ``book``)
Create Date: 2026-12-01

Its own branch: the journal stands for the receiving bank's book and may live in a
database of its own (``PAYMENTS_BOOK_DATABASE_URL``). A journal made by ``create_all``
before migrations existed is adopted as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "book0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("book",)
depends_on: str | Sequence[str] | None = None

meta = sa.MetaData()

journal = sa.Table(
    "book_journal",
    meta,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("ref", sa.String(64), nullable=False, unique=True),
    sa.Column("payment_id", sa.String(40), nullable=True),
    sa.Column("asset", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    sa.Column("destination", sa.String(128), nullable=False),
    sa.Column("instruction", sa.Text(), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
    sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    if not sa.inspect(bind).has_table(journal.name):
        journal.create(bind)


def downgrade() -> None:
    journal.drop(op.get_bind())
