"""The payment core's schema (SQLAlchemy Core), one engine per database URL.

Portable SQL only: every constraint is a plain ``CHECK``/``UNIQUE``/``FOREIGN KEY`` that
SQLite and PostgreSQL both enforce. The one dialect-specific piece is transaction start on
SQLite (``BEGIN IMMEDIATE``, the pysqlite recipe from the SQLAlchemy docs), so two writers
serialize at ``BEGIN`` instead of failing when a read lock is upgraded; PostgreSQL gets the
same effect from the row lock its ``UPDATE accounts`` takes.

Money columns are ``BIGINT`` LEDGER UNITS (:data:`MAX_AMOUNT` = 2**63 - 1): an amount that
does not fit is refused by :func:`payments.ledger.check_amount` with its value named, never
wrapped.

The amount-unit decision (issue 12): a ``BIGINT`` of wei holds at most ~9.22 ETH, far too
little for a custodian. ``NUMERIC(78,0)`` would be exact on PostgreSQL but NOT on SQLite,
whose NUMERIC affinity stores an integer beyond 64 bits as an 8-byte REAL (checked:
``2**70 + 1`` reads back as ``1.1805916207174113e+21``, typeof ``real``), and a money column
that silently rounds is not acceptable on either engine. So every asset has a LEDGER UNIT
(:class:`payments.ledger.LedgerUnit`), the smallest amount the ledger books, chosen so the
BIGINT range is ample: ETH is ledgered in **gwei** (9 decimals: up to ~9.2 billion ETH);
BTC in satoshi and the ERC-20 test token (6 decimals) in its base unit are exact already.
A transfer's value must be a whole number of ledger units (whole gwei, so the ledger and
the chain agree exactly); a gas fee paid in wei is charged rounded UP to whole gwei to the
fee account, and the rounding (wei) is recorded in the ``PaymentConfirmed`` event. The
``CHECK (allow_negative OR balance - held >= 0)`` overdraft guard keeps working unchanged
because balances stay BIGINT integers.

The chain rails' own state lives here too, keyed by rail: :data:`chain_nonces` (one
:class:`payments.evm.NonceState` per sending address, JSON, updated under the row lock)
and :data:`chain_builds` (the unsigned transaction built for each payment, so a restart
rebuilds nothing and asks custody for the very same bytes, and Bitcoin coin reservations
are re-taken from it at start-up).
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)

MAX_AMOUNT = 2**63 - 1

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
Serial = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only
Ts = DateTime(timezone=True)

assets = Table(
    "assets",
    metadata,
    Column("code", String(16), primary_key=True),
    Column("decimals", Integer, nullable=False),
    CheckConstraint("decimals >= 0 AND decimals <= 36", name="decimals_range"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner", String(64), nullable=False),  # the customer id, or "system"
    Column("asset", String(16), ForeignKey("assets.code"), nullable=False),
    # customer | chain_clearing | settlement_clearing | fees | external
    Column("kind", String(24), nullable=False),
    Column("allow_negative", Boolean, nullable=False),
    Column("balance", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    Column("per_payment_limit", BigInteger, nullable=True),
    Column("daily_limit", BigInteger, nullable=True),
    Column("created_at", Ts, nullable=False),
    UniqueConstraint("owner", "asset", "kind", name="uq_accounts_owner_asset_kind"),
    # THE overdraft guard: a hold or a debit that would take a customer below zero fails
    # in the database, whatever the code above it believed
    CheckConstraint("held >= 0", name="held_not_negative"),
    CheckConstraint("allow_negative OR balance - held >= 0", name="funds_not_negative"),
    CheckConstraint(
        "kind IN ('customer', 'chain_clearing', 'settlement_clearing', 'fees', 'external')",
        name="kind_known",
    ),
)

# The append-only event store: one stream per payment (or account, deposit), seq 1, 2, ...
events = Table(
    "events",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("stream", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("type", String(40), nullable=False),
    Column("data", JSON, nullable=False),
    Column("at", Ts, nullable=False),
    UniqueConstraint("stream", "seq", name="uq_events_stream_seq"),
    CheckConstraint("seq >= 1", name="seq_positive"),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("event_id", BigInteger, ForeignKey("events.id"), nullable=False, unique=True),
    Column("memo", String(200), nullable=False),
    Column("at", Ts, nullable=False),
)

postings = Table(
    "postings",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("txn_id", BigInteger, ForeignKey("ledger_transactions.id"), nullable=False),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("asset", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    CheckConstraint("amount <> 0", name="amount_nonzero"),
)

# The payments read model (rebuilt from events by payments.replay)
payments = Table(
    "payments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("seq", Integer, nullable=False),  # version: the last event's seq
    Column("customer", String(64), nullable=False, index=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("asset", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("destination", String(128), nullable=False),
    Column("rail", String(24), nullable=False),
    Column("end_to_end_id", String(35), nullable=True),
    Column("status", String(24), nullable=False, index=True),
    Column("risk_score", Integer, nullable=True),
    Column("reasons", JSON, nullable=False),
    Column("hold", BigInteger, nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("unsigned", JSON, nullable=True),  # what custody was asked to sign
    Column("sign_request_id", String(40), nullable=True),
    Column("signature", Text, nullable=True),
    Column("signed_raw", Text, nullable=True),
    Column("rail_ref", String(128), nullable=True),
    Column("settlement_id", String(40), nullable=True),
    Column("created_at", Ts, nullable=False),
    Column("updated_at", Ts, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("scope", String(40), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("resource_id", String(40), nullable=False),
    Column("at", Ts, nullable=False),
)

settlements = Table(
    "settlements",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("counterparty", String(64), nullable=False),
    Column("asset", String(16), nullable=False),
    Column("net_amount", BigInteger, nullable=False),
    Column("payment_count", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # created | confirmed
    Column("confirmed_amount", BigInteger, nullable=True),
    Column("confirmation_ref", String(128), nullable=True),
    Column("created_at", Ts, nullable=False),
)

settlement_items = Table(
    "settlement_items",
    metadata,
    Column("settlement_id", String(40), ForeignKey("settlements.id"), primary_key=True),
    Column("payment_id", String(40), ForeignKey("payments.id"), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    UniqueConstraint("payment_id", name="uq_settlement_items_payment_id"),
)

reconciliations = Table(
    "reconciliations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("matched", Integer, nullable=False),
    Column("breaks", JSON, nullable=False),
    Column("created_at", Ts, nullable=False),
)


# The chain rails (payments.evm_rail, payments.btc_rail): state they must not lose
chain_nonces = Table(
    "chain_nonces",
    metadata,
    Column("rail", String(24), primary_key=True),
    Column("address", String(64), primary_key=True),
    Column("state", Text, nullable=False),  # NonceState.to_json()
    Column("updated_at", Ts, nullable=False),
)

chain_builds = Table(
    "chain_builds",
    metadata,
    Column("rail", String(24), primary_key=True),
    Column("payment_id", String(40), primary_key=True),
    Column("asset", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),  # ledger units
    Column("unsigned", JSON, nullable=False),  # payments.rails.Unsigned.to_json()
    # built | broadcast | released
    Column("status", String(16), nullable=False),
    Column("ref", String(128), nullable=True, unique=True),  # tx hash / txid once known
    Column("created_at", Ts, nullable=False),
    Column("updated_at", Ts, nullable=False),
    CheckConstraint("status IN ('built', 'broadcast', 'released')", name="status_known"),
)


def make_engine(url: str, **kw: Any) -> Engine:
    """An engine for ``url``; SQLite gets a busy timeout, WAL (file databases),
    foreign keys on and ``BEGIN IMMEDIATE`` transactions (see the module docstring)."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, **kw)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kw)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


MIGRATION_LOCK = 0x7470_7763_7061  # PostgreSQL advisory lock key of a migration ("tpwcpa")
MIGRATIONS = "payments:migrations"  # the Alembic environment, shipped inside the package
Branch = Literal["core", "book"]


def alembic_config(branch: Branch = "core", url: str | None = None) -> Config:
    """The Alembic configuration of one payment-core database (``core``: the ledger's,
    ``book``: the book rail's journal); no ``alembic.ini``, the scripts in the package."""
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.attributes["branch"] = branch
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine, branch: Branch = "core", revision: str = "head") -> None:
    """``alembic upgrade <branch>@<revision>`` on ``engine`` in one transaction (SQLite:
    ``BEGIN IMMEDIATE``, :func:`make_engine`; PostgreSQL: under :data:`MIGRATION_LOCK`).

    Every database gets its schema from the migration scripts, never from ``create_all``,
    so what runs is what ``tests/payments/test_migrations.py`` compares with the tables. A
    database made by ``create_all`` before migrations existed is adopted by the baseline,
    which creates only the tables that are missing."""
    cfg = alembic_config(branch)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, f"{branch}@{revision}")


def revisions(engine: Engine) -> set[str]:
    """The revisions the database is at, one per branch it carries (empty: none)."""
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def create_schema(engine: Engine) -> None:
    """The ledger database at its newest revision (:func:`migrate`, branch ``core``)."""
    migrate(engine, "core")
