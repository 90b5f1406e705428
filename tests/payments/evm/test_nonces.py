"""Nonce state: no two payments ever share a nonce, a refused transaction's nonce is reused,
the state survives a round trip through its JSON (a restart), the chain's count is a floor."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.evm.nonces import NonceError, NonceState

ADDR = "0x00000000000000000000000000000000000DEaD1"


def test_reserve_is_sequential_and_idempotent_per_payment() -> None:
    s = NonceState(ADDR)
    a, s = s.reserve("pay-a", 0)
    b, s = s.reserve("pay-b", 0)
    again, s2 = s.reserve("pay-a", 0)
    assert (a, b, again) == (0, 1, 0) and s2 == s
    assert s.nonce_of("pay-b") == 1 and s.nonce_of("pay-x") is None


def test_chain_count_is_a_floor() -> None:
    s = NonceState(ADDR)
    n, s = s.reserve("p1", 5)  # five transactions already on chain (sent elsewhere)
    assert n == 5 and s.next_nonce == 6
    n, s = s.reserve("p2", 0)  # a stale (lower) chain count never lowers anything
    assert n == 6


def test_release_reuses_the_nonce_lowest_first() -> None:
    s = NonceState(ADDR)
    for p in ("a", "b", "c"):
        _, s = s.reserve(p, 0)
    s = s.broadcast("c")
    s = s.release("a")  # a gap under b and c
    assert s.free == {0} and s.gaps(0) == [0]
    n, s = s.reserve("d", 0)
    assert n == 0 and s.gaps(0) == []
    # the top one released: handed out again as next
    _, s = s.reserve("e", 0)
    assert s.nonce_of("e") == 3
    s = s.release("e")
    assert s.next_nonce == 3 and s.free == frozenset()


def test_released_nonce_under_the_chain_count_is_forgotten() -> None:
    s = NonceState(ADDR)
    for p in ("a", "b"):
        _, s = s.reserve(p, 0)
    s = s.broadcast("b").release("a")
    # someone else used nonce 0 meanwhile: the chain counts 2
    n, s = s.reserve("c", 2)
    assert n == 2 and s.free == frozenset()


def test_a_signed_nonce_is_never_released_and_consumed_ends_it() -> None:
    s = NonceState(ADDR)
    _, s = s.reserve("a", 0)
    s = s.signed("a")
    with pytest.raises(NonceError, match="a: nonce 0 is signed: signed bytes may exist"):
        s.release("a")
    assert s.reserve("a", 0)[0] == 0  # the retry of the payment: the same nonce
    # custody's final answer was "no" (denied): nothing signed, the nonce is free again
    assert s.release("a", never_signed=True).next_nonce == 0
    s = s.broadcast("a")
    assert s.signed("a") == s  # a later signature does not step back
    with pytest.raises(NonceError, match="a: nonce 0 is broadcast"):
        s.release("a", never_signed=True)
    s = s.consumed("a")
    assert s.inflight == {} and s.next_nonce == 1
    n, s = s.reserve("b", 1)
    assert n == 1
    with pytest.raises(NonceError, match="zz: holds no nonce"):
        s.broadcast("zz")


def test_stale_reservations_are_listed() -> None:
    s = NonceState(ADDR)
    _, s = s.reserve("a", 0)
    _, s = s.reserve("b", 0)
    s = s.broadcast("b")
    assert s.stale() == ["a"]


def test_ready_means_every_lower_nonce_is_broadcast() -> None:
    s = NonceState(ADDR)
    for p in ("a", "b", "c"):
        _, s = s.reserve(p, 0)
    assert [s.ready(p, 0) for p in "abc"] == [True, False, False]
    s = s.broadcast("a")
    assert [s.ready(p, 0) for p in "abc"] == [True, True, False]
    s = s.consumed("a").release("b")
    # b's nonce is free: a gap under c until the next payment fills it
    assert not s.ready("c", 1) and s.gaps(1) == [1]
    n, s = s.reserve("d", 1)
    assert n == 1 and s.ready("d", 1) and not s.ready("c", 1)
    s = s.broadcast("d")
    assert s.ready("c", 2)
    # a free nonce under the chain's count (used elsewhere) is no gap
    t = NonceState(ADDR)
    for p in ("x", "y"):
        _, t = t.reserve(p, 0)
    t = t.release("x")
    assert not t.ready("y", 0) and t.ready("y", 1)


def test_json_round_trip_and_malformed_state() -> None:
    s = NonceState(ADDR.lower())
    for p in ("a", "b", "c"):
        _, s = s.reserve(p, 0)
    s = s.broadcast("b").release("a")
    text = s.to_json()
    back = NonceState.from_json(text)
    assert back == s and back.address == ADDR and back.to_json() == text
    for bad, what in [
        ("{}", "malformed"),
        ("not json", "malformed"),
        (text.replace('"next_nonce":3', '"next_nonce":-1'), "next_nonce"),
        (text.replace('"stage":"broadcast"', '"stage":"mined"'), "stage"),
        (text.replace('"free":[0]', '"free":[1]'), "both free and in flight"),
        (text.replace('"free":[0]', '"free":[7]'), "at or above next_nonce"),
        (text.replace('"nonce":2', '"nonce":1'), "two payments hold one nonce"),
    ]:
        with pytest.raises(NonceError, match=what):
            NonceState.from_json(bad)


ops = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "signed", "broadcast", "release", "consumed", "restart"]),
        st.integers(0, 7),  # payment
        st.integers(0, 3),  # chain count advance
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_no_two_payments_ever_share_a_nonce(steps: list[tuple[str, int, int]]) -> None:
    """Random reserve / broadcast / release / mined / restart sequences against a model chain:
    every nonce handed out is unique among live payments and never one the chain has used,
    except for a payment that already held it."""
    s = NonceState(ADDR)
    chain_count = 0
    spent: dict[int, str] = {}  # nonce -> payment whose tx the model chain accepted
    signed_at: dict[int, str] = {}  # nonce -> the payment that has signed bytes at it
    for op, p, advance in steps:
        pid = f"p{p}"
        try:
            if op == "reserve":
                held = s.nonce_of(pid)
                n, s = s.reserve(pid, chain_count)
                assert held is None or n == held
                assert n not in spent or spent[n] == pid
                # a nonce with signed bytes of another payment is never handed out
                assert n not in signed_at or signed_at[n] == pid or held is not None
            elif op == "broadcast":
                n_or_none = s.nonce_of(pid)
                s = s.broadcast(pid)
                assert n_or_none is not None
                spent.setdefault(n_or_none, pid)
                chain_count = max(chain_count, min(n_or_none + 1, chain_count + advance))
            elif op == "signed":
                s = s.signed(pid)
                n_or_none = s.nonce_of(pid)
                assert n_or_none is not None
                signed_at[n_or_none] = pid
            elif op == "release":
                held = s.nonce_of(pid)
                s = s.release(pid)
                assert held not in signed_at or signed_at[held] != pid  # never once signed
            elif op == "consumed":
                s = s.consumed(pid)
            else:
                s = NonceState.from_json(s.to_json())
        except NonceError:
            continue
        live = [r.nonce for r in s.inflight.values()]
        assert len(live) == len(set(live))
        assert not set(live) & s.free
