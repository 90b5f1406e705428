"""Time locks and velocity windows, at their exact boundaries and as properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from custody import policy as pol
from tests.custody.policy.helpers import ALICE, BOB, T0, facts

F = frozenset
ETH = 10**18


def allowlisted(active_from: int) -> pol.Policy:
    return pol.check_policy(
        pol.Policy(
            rules=(pol.Rule("payees", "allow", allowlists=F({"payees"})),),
            allowlists=(pol.Allowlist("payees", (pol.AllowlistEntry(ALICE, active_from),)),),
        )
    )


def test_time_lock_opens_exactly_at_active_from() -> None:
    policy = allowlisted(T0)
    assert pol.evaluate(policy, facts(to=ALICE), now=T0 - 1).rule_id == "default-deny"
    assert pol.evaluate(policy, facts(to=ALICE), now=T0).action == "allow"
    assert pol.evaluate(policy, facts(to=BOB), now=T0 + 10**6).rule_id == "default-deny"


def test_every_destination_must_be_allowlisted() -> None:
    policy = allowlisted(0)
    two = pol.Facts(
        "btc-psbt",
        "k",
        "i",
        "transfer",
        "BTC",
        "bitcoin:mainnet",
        (pol.Transfer(ALICE, 1), pol.Transfer(BOB, 1)),
    )
    assert pol.evaluate(policy, two, now=T0).rule_id == "default-deny"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_a_destination_is_never_allowed_before_active_from(active_from: int, now: int) -> None:
    allowed = pol.evaluate(allowlisted(active_from), facts(to=ALICE), now=now).action == "allow"
    assert allowed == (now >= active_from)


def velocity_policy(scope: str, window: int, limit: int) -> pol.Policy:
    return pol.check_policy(
        pol.Policy(rules=(pol.Rule("v", "allow", velocity=(pol.Velocity(scope, window, limit),)),))
    )


def test_key_velocity_window_boundary() -> None:
    policy = velocity_policy("key", 3600, 10)
    history = [pol.Release(T0, "key-1", "ETH", "x", 7)]
    f = facts(amount=4)
    # the release at T0 counts while now - 3600 < T0, i.e. up to T0 + 3599
    assert pol.evaluate(policy, f, now=T0 + 3599, history=history).action == "deny"
    assert pol.evaluate(policy, f, now=T0 + 3600, history=history).action == "allow"
    assert pol.evaluate(policy, facts(amount=3), now=T0 + 1, history=history).action == "allow"
    # other keys and other assets do not count; a future-dated entry does (fail closed)
    other = [pol.Release(T0, "key-2", "ETH", "x", 7), pol.Release(T0, "key-1", "BTC", "x", 7)]
    assert pol.evaluate(policy, f, now=T0, history=other).action == "allow"
    future = [pol.Release(T0 + 100, "key-1", "ETH", "x", 7)]
    assert pol.evaluate(policy, f, now=T0, history=future).action == "deny"


def test_destination_velocity_counts_every_key_per_destination() -> None:
    policy = velocity_policy("destination", 60, 10)
    history = [pol.Release(T0, "key-2", "ETH", ALICE, 8), pol.Release(T0, "key-1", "ETH", BOB, 9)]
    assert pol.evaluate(policy, facts(to=ALICE, amount=3), now=T0, history=history).action == "deny"
    assert (
        pol.evaluate(policy, facts(to=ALICE, amount=2), now=T0, history=history).action == "allow"
    )
    assert (
        pol.evaluate(policy, facts(to=ALICE, amount=3), now=T0 + 60, history=history).action
        == "allow"
    )


def test_over_the_limit_falls_through_to_the_next_rule() -> None:
    policy = pol.check_policy(
        pol.Policy(
            rules=(
                pol.Rule("auto", "allow", velocity=(pol.Velocity("key", 86_400, 5 * ETH),)),
                pol.Rule("fallback", "deny"),
            )
        )
    )
    history = [pol.Release(T0 - 10, "key-1", "ETH", ALICE, 5 * ETH)]
    assert pol.evaluate(policy, facts(amount=1), now=T0, history=history).rule_id == "fallback"


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["key", "destination"]),
    st.integers(1, 500),
    st.integers(0, 1000),
    st.lists(
        st.tuples(st.integers(0, 300), st.integers(0, 400), st.sampled_from([ALICE, BOB])),
        max_size=40,
    ),
)
def test_allowed_amounts_in_any_window_never_exceed_the_limit(
    scope, window, limit, requests
) -> None:
    """Feed a stream of requests (time gaps, amounts) through a velocity rule, logging what
    it allows as a node logs its releases; then no window holds more than the limit."""
    policy = velocity_policy(scope, window, limit)
    history: list[pol.Release] = []
    now = T0
    for gap, amount, dest in requests:
        now += gap
        if (
            pol.evaluate(policy, facts(to=dest, amount=amount), now=now, history=history).action
            == "allow"
        ):
            history.append(pol.Release(now, "key-1", "ETH", pol.normalize_address(dest), amount))
    for end in {r.time for r in history}:
        in_window = [r for r in history if end - window < r.time <= end]
        groups = (
            [in_window]
            if scope == "key"
            else [
                [r for r in in_window if r.destination == d]
                for d in {r.destination for r in in_window}
            ]
        )
        for g in groups:
            assert sum(r.amount for r in g) <= limit
