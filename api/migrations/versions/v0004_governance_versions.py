"""Governance versions in the shared database (issue 14, several coordinator identities).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

One table, ``governance_versions`` (:class:`api.db.GovernanceVersion`), so that
coordinators on separate hosts (each its own data directory) share the versions the
officers installed through any of them. A row holds the signed document (canonical CBOR),
its digest (hex) and when it was written (Unix milliseconds); each coordinator verifies a
row as the successor of its current version before it takes it up (api.governance).
Frozen here as Core DDL (never imported from :mod:`api.db`). A database that already has
the table (made by ``create_all`` from today's models) keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "governance_versions"


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("installed_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )


def downgrade() -> None:
    op.drop_table(TABLE)
