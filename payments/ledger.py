"""The double-entry ledger: accounts per (owner, asset, kind), balanced postings, holds.

Every movement is a ledger transaction of postings that sum to zero per asset, written in
the same database transaction as the event that causes it (:func:`record`), and the
event carries the postings and hold changes so that :mod:`payments.replay` rebuilds every
balance from the events alone.

Balances live in ``accounts.balance`` (posted) and ``accounts.held`` (reserved by
authorized payments). ``CHECK (allow_negative OR balance - held >= 0)`` makes the database
refuse any hold or debit that would overdraw an account; only the designated ``external``
account (the outside world, the source of deposits) may go negative. Concurrency: the
``UPDATE ... SET held = held + :x`` takes the row lock (PostgreSQL) or the write lock
(SQLite, ``BEGIN IMMEDIATE``), so two payments reserving the same funds serialize and the
second one finds the CHECK failing.

System accounts per asset (owner ``system``): ``chain_clearing`` (sent on a rail, not yet
confirmed), ``settlement_clearing`` (confirmed, not yet settled with the counterparty),
``fees`` and ``external``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from payments import events as ev
from payments.db import MAX_AMOUNT, accounts, assets, ledger_transactions, postings

SYSTEM: Final = "system"
SYSTEM_KINDS: Final = ("chain_clearing", "settlement_clearing", "fees", "external")
NEGATIVE_ALLOWED: Final = frozenset({"external"})


class LedgerError(Exception):
    """A movement the ledger refuses; ``field`` names what was wrong."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class InsufficientFunds(LedgerError):
    def __init__(self, account_id: str, asset: str) -> None:
        super().__init__(
            f"account {account_id} has insufficient available {asset} "
            "(the database refused the overdraft)",
            "amount",
        )
        self.account_id = account_id


@dataclass(frozen=True)
class Posting:
    account_id: str
    asset: str
    amount: int


def check_amount(value: Any, field: str = "amount", *, positive: bool = True) -> int:
    """An integer amount in base units within the ledger's BIGINT range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LedgerError(f"{field} must be an integer number of base units", field)
    if positive and value <= 0:
        raise LedgerError(f"{field} must be positive, got {value}", field)
    if abs(value) > MAX_AMOUNT:
        raise LedgerError(f"{field} {value} exceeds the ledger maximum {MAX_AMOUNT}", field)
    return value


@dataclass(frozen=True)
class LedgerUnit:
    """How an asset's chain amounts map onto the ledger's BIGINT units (:mod:`payments.db`
    docstring: the amount-unit decision). ``decimals``: the ledger's; ``chain_decimals``:
    the chain's base unit (ETH: 9 and 18, one ledger unit is one gwei)."""

    asset: str
    decimals: int
    chain_decimals: int

    @property
    def scale(self) -> int:
        return int(10 ** (self.chain_decimals - self.decimals))

    def to_chain(self, amount: int) -> int:
        """Ledger units to chain base units (exact)."""
        return int(check_amount(amount)) * self.scale

    def from_chain(self, value: int, field: str = "amount") -> int:
        """Chain base units to ledger units; refused unless exact (a value of wei that is
        not whole gwei cannot be booked without rounding somebody's money)."""
        units, rest = divmod(value, self.scale)
        if rest:
            raise LedgerError(
                f"{field} {value} is not a whole number of {self.asset} ledger units "
                f"(1 unit = {self.scale} base units on chain)",
                field,
            )
        return units

    def charge(self, value: int) -> tuple[int, int]:
        """A fee of ``value`` chain base units as ledger units rounded UP, and the rounding
        (base units charged above the fee paid): ``(units, rounding)``."""
        units = -(-value // self.scale)
        return units, units * self.scale - value


ETH_GWEI: Final = LedgerUnit("ETH", 9, 18)
BTC_SAT: Final = LedgerUnit("BTC", 8, 8)


def new_account_id() -> str:
    return "acct_" + os.urandom(16).hex()


def ensure_asset(conn: Connection, code: str, decimals: int) -> None:
    row = conn.execute(select(assets).where(assets.c.code == code)).first()
    if row is None:
        with conn.begin_nested():
            conn.execute(insert(assets).values(code=code, decimals=decimals))
    elif row.decimals != decimals:
        raise LedgerError(f"asset {code} has {row.decimals} decimals, not {decimals}", "decimals")


def account(conn: Connection, account_id: str) -> Any:
    return conn.execute(select(accounts).where(accounts.c.id == account_id)).first()


def open_account(
    conn: Connection,
    owner: str,
    asset: str,
    kind: str = "customer",
    *,
    per_payment_limit: int | None = None,
    daily_limit: int | None = None,
    account_id: str | None = None,
) -> Any:
    """Open an account (an ``AccountOpened`` event in its own stream)."""
    for name, lim in (("per_payment_limit", per_payment_limit), ("daily_limit", daily_limit)):
        if lim is not None:
            check_amount(lim, name)
    aid = account_id or new_account_id()
    data = {
        "owner": owner,
        "asset": asset,
        "kind": kind,
        "allow_negative": kind in NEGATIVE_ALLOWED,
        "per_payment_limit": per_payment_limit,
        "daily_limit": daily_limit,
    }
    e = ev.append(conn, f"account:{aid}", 0, "AccountOpened", data)
    conn.execute(insert(accounts).values(id=aid, balance=0, held=0, created_at=e.at, **data))
    return account(conn, aid)


def system_account(conn: Connection, asset: str, kind: str) -> str:
    """The id of the system account ``kind`` for ``asset`` (opened on first use)."""
    if kind not in SYSTEM_KINDS:
        raise LedgerError(f"unknown system account kind {kind!r}", "kind")
    aid = f"sys:{kind}:{asset}"
    if account(conn, aid) is None:
        open_account(conn, SYSTEM, asset, kind, account_id=aid)
    return aid


def _check_balanced(items: Sequence[Posting]) -> None:
    sums: dict[str, int] = defaultdict(int)
    for p in items:
        check_amount(p.amount, "posting amount", positive=False)
        if p.amount == 0:
            raise LedgerError(f"a posting to {p.account_id} is zero", "amount")
        sums[p.asset] += p.amount
    unbalanced = {a: s for a, s in sums.items() if s != 0}
    if unbalanced:
        raise LedgerError(f"postings do not balance: {unbalanced} (sum per asset must be 0)")


def _apply_balance(conn: Connection, account_id: str, asset: str, column: str, delta: int) -> None:
    acct = account(conn, account_id)
    if acct is None:
        raise LedgerError(f"no account {account_id}", "account_id")
    if acct.asset != asset:
        raise LedgerError(f"account {account_id} holds {acct.asset}, not {asset}", "asset")
    col = accounts.c[column]
    try:
        with conn.begin_nested():
            conn.execute(
                update(accounts).where(accounts.c.id == account_id).values({col: col + delta})
            )
    except IntegrityError:
        raise InsufficientFunds(account_id, asset) from None


def record(
    conn: Connection,
    stream: str,
    expected: int,
    type_: str,
    data: dict[str, Any],
    *,
    posts: Iterable[Posting] = (),
    holds: Iterable[Posting] = (),
    memo: str = "",
) -> ev.Event:
    """Append an event and apply its ledger effects in the caller's transaction: balanced
    ``posts`` (a ledger transaction) and ``holds`` (changes of reserved funds).

    Raises :class:`InsufficientFunds` (the database refused) or :class:`LedgerError`; the
    caller's transaction must then be rolled back or the savepoint discarded."""
    posts, holds = list(posts), list(holds)
    _check_balanced(posts)
    data = {
        **data,
        "postings": [[p.account_id, p.asset, p.amount] for p in posts],
        "holds": [[h.account_id, h.asset, h.amount] for h in holds],
    }
    e = ev.append(conn, stream, expected, type_, data)
    for h in holds:
        _apply_balance(conn, h.account_id, h.asset, "held", h.amount)
    if posts:
        txn = conn.execute(
            insert(ledger_transactions)
            .values(event_id=e.id, memo=(memo or type_)[:200], at=e.at)
            .returning(ledger_transactions.c.id)
        ).scalar_one()
        for p in posts:
            _apply_balance(conn, p.account_id, p.asset, "balance", p.amount)
            conn.execute(
                insert(postings).values(
                    txn_id=txn, account_id=p.account_id, asset=p.asset, amount=p.amount
                )
            )
    return e


def deposit(conn: Connection, account_id: str, amount: int, reference: str) -> ev.Event:
    """Fund a customer account from the outside world (demo/test intake of funds)."""
    check_amount(amount)
    acct = account(conn, account_id)
    if acct is None:
        raise LedgerError(f"no account {account_id}", "account_id")
    if acct.kind != "customer":
        raise LedgerError(f"account {account_id} is a system account", "account_id")
    ext = system_account(conn, acct.asset, "external")
    stream = f"deposit:{reference}"
    return record(
        conn,
        stream,
        0,
        "Deposited",
        {"account_id": account_id, "amount": amount, "reference": reference},
        posts=[Posting(ext, acct.asset, -amount), Posting(account_id, acct.asset, amount)],
        memo=f"deposit {reference}",
    )


def balances(conn: Connection) -> dict[str, tuple[int, int]]:
    """``{account id: (balance, held)}`` as the database holds them."""
    return {r.id: (r.balance, r.held) for r in conn.execute(select(accounts))}
