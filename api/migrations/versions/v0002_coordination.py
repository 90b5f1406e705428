"""Several coordinators on one database: the durable job queue of sign requests.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Issue 14 (item 2). ``sign_requests`` gets its lease columns: ``claimed_by`` (the
coordinator instance that holds the request), ``lease_until`` (after which any coordinator
may claim it again), ``claims`` (how often it was claimed) and ``attempted`` (every signer
set asked to sign, written before the sign items leave, so that whoever finishes the
request records them in the audit log for the nodes' checkpoints). A ``signing`` request
made by an earlier release has no lease: the first worker to look claims it, which
resumes requests a coordinator left behind before this revision.

The shared preprocessing pools (public data only): ``pool_commitments`` (one row per
FROST nonce commitment of one node for one key) and ``pool_presignatures`` (one row per
DKLs23 presignature of one key and derivation path, ``path`` empty for the root key), handed
out by claim-and-delete; ``pool_refills``: one row per pool while a coordinator refills it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Ts = sa.DateTime(timezone=True)
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # 64-bit; SQLite's rowid alias


def upgrade() -> None:
    with op.batch_alter_table("sign_requests") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("lease_until", Ts, nullable=True))
        batch.add_column(sa.Column("claims", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("attempted", sa.JSON(), nullable=True))
    op.create_table(
        "pool_commitments",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("party_id", sa.Integer(), nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=False),
        sa.Column("nonce_id", sa.String(80), nullable=False, unique=True),
        sa.Column("commitments", sa.Text(), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
    )
    op.create_index("ix_pool_commitments_key_party", "pool_commitments", ["key_id", "party_id"])
    op.create_table(
        "pool_presignatures",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("path", sa.String(200), nullable=False),
        sa.Column("presignature_id", sa.String(80), nullable=False, unique=True),
        sa.Column("parties", sa.JSON(), nullable=False),
        sa.Column("boot_ids", sa.JSON(), nullable=False),
        sa.Column("r_point", sa.String(70), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
    )
    op.create_index("ix_pool_presignatures_key_path", "pool_presignatures", ["key_id", "path"])
    op.create_table(
        "pool_refills",
        sa.Column("pool", sa.String(300), primary_key=True),
        sa.Column("holder", sa.String(100), nullable=False),
        sa.Column("until", Ts, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pool_refills")
    op.drop_index("ix_pool_presignatures_key_path", "pool_presignatures")
    op.drop_table("pool_presignatures")
    op.drop_index("ix_pool_commitments_key_party", "pool_commitments")
    op.drop_table("pool_commitments")
    with op.batch_alter_table("sign_requests") as batch:
        for name in ("attempted", "claims", "lease_until", "claimed_by"):
            batch.drop_column(name)
