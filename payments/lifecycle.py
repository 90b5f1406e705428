"""The payment lifecycle: an event-sourced state machine with one explicit transition table.

::

    created -> authorized | declined | cancelled
    authorized -> awaiting_approval | signed | cancelled | failed
    awaiting_approval -> signed | cancelled | failed
    signed -> broadcast | failed
    broadcast -> confirmed | failed
    confirmed -> settled
    settled -> reconciled

``declined``, ``cancelled``, ``failed`` and ``reconciled`` are terminal. Each state change
is one event type (:data:`EVENT_STATE`); a few events record progress without changing the
state (:data:`PROGRESS_EVENTS`: what was prepared for custody, which sign request carries
it). :func:`project` folds one event into the payment's read-model row, live and in
replay alike; :func:`check` refuses an illegal step with :class:`IllegalTransition` naming
the payment, its state and the step.

Cancelling is refused from ``signed`` on: a signed payment may already be on its rail.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

Status = Literal[
    "created",
    "authorized",
    "declined",
    "awaiting_approval",
    "signed",
    "broadcast",
    "confirmed",
    "settled",
    "reconciled",
    "failed",
    "cancelled",
]
STATUSES: Final[tuple[Status, ...]] = get_args(Status)
TERMINAL: Final = frozenset({"declined", "cancelled", "failed", "reconciled"})

TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "created": frozenset({"authorized", "declined", "cancelled"}),
    "authorized": frozenset({"awaiting_approval", "signed", "cancelled", "failed"}),
    "awaiting_approval": frozenset({"signed", "cancelled", "failed"}),
    "signed": frozenset({"broadcast", "failed"}),
    "broadcast": frozenset({"confirmed", "failed"}),
    "confirmed": frozenset({"settled"}),
    "settled": frozenset({"reconciled"}),
    "declined": frozenset(),
    "cancelled": frozenset(),
    "failed": frozenset(),
    "reconciled": frozenset(),
}

EVENT_STATE: Final[dict[str, str]] = {
    "PaymentCreated": "created",
    "PaymentAuthorized": "authorized",
    "PaymentDeclined": "declined",
    "PaymentAwaitingApproval": "awaiting_approval",
    "PaymentSigned": "signed",
    "PaymentBroadcast": "broadcast",
    "PaymentConfirmed": "confirmed",
    "PaymentSettled": "settled",
    "PaymentReconciled": "reconciled",
    "PaymentFailed": "failed",
    "PaymentCancelled": "cancelled",
}
STATE_EVENT: Final = {s: e for e, s in EVENT_STATE.items()}
# events that record progress inside a state: the states they may happen in
PROGRESS_EVENTS: Final[dict[str, frozenset[str]]] = {
    "SignPrepared": frozenset({"authorized"}),
    "SignSubmitted": frozenset({"authorized", "awaiting_approval"}),
}


class IllegalTransition(Exception):
    """``payment_id`` in ``state`` cannot take ``step``."""

    def __init__(self, payment_id: str, state: str, step: str) -> None:
        allowed = sorted(TRANSITIONS.get(state, ()))
        super().__init__(
            f"payment {payment_id} is {state}: it cannot become {step} "
            f"(from {state} it may become: {', '.join(allowed) or 'nothing, it is final'})"
        )
        self.payment_id = payment_id
        self.state = state
        self.step = step


def check(payment_id: str, state: str, event_type: str) -> None:
    """Refuse ``event_type`` for a payment in ``state`` unless the table allows it."""
    if event_type in PROGRESS_EVENTS:
        if state not in PROGRESS_EVENTS[event_type]:
            raise IllegalTransition(payment_id, state, event_type)
        return
    target = EVENT_STATE.get(event_type)
    if target is None:
        raise ValueError(f"unknown payment event {event_type!r}")
    if event_type == "PaymentCreated":
        if state != "":
            raise IllegalTransition(payment_id, state, "created")
        return
    if target not in TRANSITIONS.get(state, frozenset()):
        raise IllegalTransition(payment_id, state, target)


# which read-model columns each event sets from its data
_COPIED: Final[dict[str, tuple[str, ...]]] = {
    "PaymentCreated": (
        "customer",
        "account_id",
        "asset",
        "amount",
        "destination",
        "rail",
        "end_to_end_id",
    ),
    "PaymentAuthorized": ("risk_score", "reasons", "hold", "fee"),
    "PaymentDeclined": ("risk_score", "reasons"),
    "SignPrepared": ("unsigned",),
    "SignSubmitted": ("sign_request_id",),
    "PaymentAwaitingApproval": ("sign_request_id",),
    "PaymentSigned": ("signature", "signed_raw", "sign_request_id"),
    "PaymentBroadcast": ("rail_ref",),
    "PaymentConfirmed": ("fee",),  # the fee actually paid, when the rail reports it
    "PaymentSettled": ("settlement_id",),
    "PaymentFailed": ("reasons",),
    "PaymentCancelled": ("reasons",),
}


def project(
    row: dict[str, Any] | None, event_type: str, seq: int, data: dict[str, Any], at: Any
) -> dict[str, Any]:
    """The payment's read-model row after one event (``row`` None before the first)."""
    if row is None:
        row = {
            "reasons": [],
            "hold": 0,
            "fee": 0,
            "status": "created",
            "created_at": at,
            "end_to_end_id": None,
        }
    else:
        row = dict(row)
    for col in _COPIED.get(event_type, ()):
        if col in data:
            row[col] = data[col]
    if event_type in ("PaymentBroadcast", "PaymentFailed", "PaymentCancelled"):
        row["hold"] = 0
    if event_type in EVENT_STATE:
        row["status"] = EVENT_STATE[event_type]
    row["seq"] = seq
    row["updated_at"] = at
    return row
