"""What the chain rails (:mod:`payments.evm_rail`, :mod:`payments.btc_rail`) share: their
persisted builds (:data:`payments.db.chain_builds`), the authorized fee of a payment, and the
rule for giving back a nonce or coins.

A chain rail's :meth:`~payments.rails.Rail.build` is idempotent per payment: the first call
allocates (a nonce, coins) and stores the unsigned transaction in the same database
transaction as the allocation; every later call (a retry, a restart after a SIGKILL before
the worker recorded ``SignPrepared``) returns the stored bytes. So custody is only ever
asked to sign one transaction per payment, and a reservation is never made twice.

Giving an allocation back (:func:`dead_unsigned`): only for a payment that is terminal
(failed, cancelled, declined) and has no signature and never will (a payment cancelled
while custody holds its sign request is not: it may still be approved); a payment whose
signature was refused by the rail's own check (custody did return something) is NOT
released, since bytes signed at that nonce / over those coins may exist; its nonce then
waits for an operator (:meth:`payments.evm.NonceState.gaps`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update

from payments import events as ev
from payments.db import chain_builds, payments
from payments.rails import Unsigned

TERMINAL = ("failed", "cancelled", "declined")


class NotYet(Exception):  # noqa: N818 - a state, not a failure: the worker retries
    """The step cannot be done now (a lower nonce not broadcast, fees above the hold, the
    chain busy): NOT a :class:`~payments.rails.RailError`, so the worker retries it."""


def authorized_fee(conn: Connection, payment_id: str) -> int:
    """The fee reserved for the payment at authorization (the most it may pay)."""
    fee = conn.execute(select(payments.c.fee).where(payments.c.id == payment_id)).scalar()
    if fee is None:
        raise NotYet(f"payment {payment_id} is not in the payments table")
    return int(fee)


def stored_build(conn: Connection, rail: str, payment_id: str) -> Unsigned | None:
    row = conn.execute(
        select(chain_builds.c.unsigned).where(
            chain_builds.c.rail == rail, chain_builds.c.payment_id == payment_id
        )
    ).first()
    return None if row is None else Unsigned.from_json(row.unsigned)


def store_build(
    conn: Connection, rail: str, payment_id: str, asset: str, amount: int, u: Unsigned
) -> None:
    at = ev.now()
    conn.execute(
        insert(chain_builds).values(
            rail=rail,
            payment_id=payment_id,
            asset=asset,
            amount=amount,
            unsigned=u.to_json(),
            status="built",
            ref=None,
            created_at=at,
            updated_at=at,
        )
    )


def set_build(conn: Connection, rail: str, payment_id: str, status: str, ref: str | None) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": ev.now()}
    if ref is not None:
        values["ref"] = ref
    conn.execute(
        update(chain_builds)
        .where(chain_builds.c.rail == rail, chain_builds.c.payment_id == payment_id)
        .values(**values)
    )


def build_by_ref(conn: Connection, rail: str, ref: str) -> Any:
    return conn.execute(
        select(chain_builds).where(chain_builds.c.rail == rail, chain_builds.c.ref == ref)
    ).first()


def builds(conn: Connection, rail: str, *statuses: str) -> list[Any]:
    q = select(chain_builds).where(chain_builds.c.rail == rail)
    if statuses:
        q = q.where(chain_builds.c.status.in_(statuses))
    return list(conn.execute(q.order_by(chain_builds.c.created_at)).all())


def dead_unsigned(conn: Connection, payment_ids: list[str]) -> set[str]:
    """Of ``payment_ids``, those terminal with no signature that can ever exist (module
    docstring)."""
    if not payment_ids:
        return set()
    rows = conn.execute(
        select(
            payments.c.id,
            payments.c.status,
            payments.c.signature,
            payments.c.sign_request_id,
            payments.c.reasons,
        ).where(payments.c.id.in_(payment_ids), payments.c.status.in_(TERMINAL))
    ).all()
    dead = set()
    for r in rows:
        refused = any("signature refused" in str(x) for x in (r.reasons or []))
        # cancelled while custody still holds its request (awaiting approvals): it may yet
        # be signed, so it is not dead; failed: custody's answer was final
        live_request = r.status == "cancelled" and r.sign_request_id is not None
        if r.signature is None and not refused and not live_request:
            dead.add(str(r.id))
    return dead
