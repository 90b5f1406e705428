"""The treasury console's sessions in the database (issue 15).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

One table, ``console_sessions`` (:class:`api.db.ConsoleSession`), so that several
coordinators behind one load balancer serve one browser and a restart signs nobody out.
It holds the SHA-256 of each session token (never the token), the CSRF secret, the approver
and credential once signed in, the times (Unix milliseconds, ``expires_ms`` indexed for the
sweep) and the WebAuthn ceremony in progress with its compare-and-set ``version``. Frozen
here as Core DDL (never imported from :mod:`api.db`). A database that already has the
table (made by ``create_all`` from today's models) keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "console_sessions"


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("approver_id", sa.String(64), nullable=True),
        sa.Column("credential_id", sa.Text(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("signed_in_ms", sa.BigInteger(), nullable=True),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("ceremony", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("token_sha256"),
    )
    op.create_index("ix_console_sessions_expires_ms", TABLE, ["expires_ms"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_expires_ms", table_name=TABLE)
    op.drop_table(TABLE)
