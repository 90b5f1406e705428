"""The payment state machine: the explicit table, illegal steps refused with precise errors."""

from __future__ import annotations

import pytest

from payments import lifecycle as lc


def test_table_covers_every_state_and_terminal_states_go_nowhere() -> None:
    assert set(lc.TRANSITIONS) == set(lc.STATUSES)
    for s in lc.TERMINAL:
        assert lc.TRANSITIONS[s] == frozenset()
    for targets in lc.TRANSITIONS.values():
        assert targets <= set(lc.STATUSES)
    assert set(lc.EVENT_STATE.values()) == set(lc.STATUSES)


def test_the_happy_path_is_allowed_step_by_step() -> None:
    path = [
        "created",
        "authorized",
        "awaiting_approval",
        "signed",
        "broadcast",
        "confirmed",
        "settled",
        "reconciled",
    ]
    lc.check("pay_1", "", "PaymentCreated")
    for a, b in zip(path, path[1:], strict=False):
        lc.check("pay_1", a, lc.STATE_EVENT[b])
    lc.check("pay_1", "authorized", "PaymentSigned")  # no approval needed


@pytest.mark.parametrize(
    ("state", "event"),
    [
        ("created", "PaymentSigned"),
        ("declined", "PaymentAuthorized"),
        ("signed", "PaymentCancelled"),  # may already be on its rail
        ("broadcast", "PaymentCancelled"),
        ("reconciled", "PaymentFailed"),
        ("confirmed", "PaymentBroadcast"),
        ("cancelled", "PaymentAuthorized"),
        ("created", "PaymentCreated"),
        ("signed", "SignPrepared"),
        ("broadcast", "SignSubmitted"),
    ],
)
def test_illegal_steps_are_refused_naming_payment_state_and_step(state: str, event: str) -> None:
    with pytest.raises(lc.IllegalTransition) as info:
        lc.check("pay_x", state, event)
    msg = str(info.value)
    assert "pay_x" in msg and state in msg
    assert info.value.state == state


def test_every_pair_outside_the_table_is_refused() -> None:
    for state in lc.STATUSES:
        for event, target in lc.EVENT_STATE.items():
            if event == "PaymentCreated":
                continue
            if target in lc.TRANSITIONS[state]:
                lc.check("p", state, event)
            else:
                with pytest.raises(lc.IllegalTransition):
                    lc.check("p", state, event)


def test_unknown_event_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown payment event"):
        lc.check("p", "created", "PaymentTeleported")


def test_project_releases_the_hold_when_funds_move_or_return() -> None:
    row = lc.project(None, "PaymentCreated", 1, {"amount": 5, "asset": "ETH"}, "t0")
    row = lc.project(row, "PaymentAuthorized", 2, {"hold": 5, "fee": 0, "reasons": []}, "t1")
    assert (row["status"], row["hold"], row["seq"]) == ("authorized", 5, 2)
    row = lc.project(row, "PaymentCancelled", 3, {"reasons": ["x"]}, "t2")
    assert (row["status"], row["hold"]) == ("cancelled", 0)
