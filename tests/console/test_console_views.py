"""What the console shows of an intent (api.console.views): amounts with their decimals,
never base units; destinations with their allowlist entry and age, new and time-locked ones
flagged; an ERC-20 token whose decimals the console does not know is flagged, its amount not
shown as units."""

from __future__ import annotations

from typing import Any

from api.console.views import NEW_FOR, Added, show
from custody import policy as pol
from tests.custody.policy.helpers import ALICE, BOB, erc20_transfer, evm_tx

OLD = "0x" + "0d" * 20
CAROL = "0x" + "c0" * 20
DAVE = "0x" + "da" * 20
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
DAY = 86_400
NOW = 1_796_000_000  # 2026-11-30 (Unix seconds), the clock of these tests


def _policy(now: int) -> pol.Policy:
    """Entries without a time lock (``active_from`` 0), one inside its lock, one whose lock
    ended two days ago, one whose addition the console does not know."""
    return pol.Policy(
        allowlists=(
            pol.Allowlist(
                "payees",
                (
                    pol.AllowlistEntry(OLD, 0, "supplier"),
                    pol.AllowlistEntry(ALICE, 0, "added this week"),
                    pol.AllowlistEntry(BOB, now + 2 * DAY, "time-locked"),
                    pol.AllowlistEntry(CAROL, now - 2 * DAY, "lock just ended"),
                    pol.AllowlistEntry(DAVE, 0, "unknown"),
                ),
            ),
        )
    )


ADDED = {
    ("payees", OLD): Added(1, NOW - 30 * DAY),
    ("payees", ALICE): Added(4, NOW - 3 * DAY),
    ("payees", BOB): Added(3, NOW - 10 * DAY),
    ("payees", CAROL): Added(2, NOW - 30 * DAY),
    ("payees", DAVE): Added(5, None),
}


def _dest(to: str) -> Any:
    (d,) = show(evm_tx(to), "evm-tx", {}, _policy(NOW), ADDED, NOW).destinations
    return d


def test_eth_amounts_destinations_and_their_flags() -> None:
    p = _policy(NOW)
    shown = show(evm_tx(OLD, 1234 * 10**15), "evm-tx", {}, p, ADDED, NOW)
    assert (shown.asset, shown.amount) == ("ETH", "1.234 ETH")
    assert shown.chain == "Ethereum mainnet (chain id 1)"
    assert shown.fee == "at most 0.000042 ETH"  # 21 000 gas at 2 gwei
    (d,) = shown.destinations
    assert (d.allowlist, d.label, d.flags) == ("payees", "supplier", [])
    (d,) = show(evm_tx("0x" + "99" * 20), "evm-tx", {}, p, ADDED, NOW).destinations
    assert d.flags == ["new destination: on no allowlist"] and d.allowlist is None
    assert d.age == "not on any allowlist"


def test_an_entry_s_age_is_from_when_it_was_added_not_from_the_unix_epoch() -> None:
    """Entries without a time lock have ``active_from`` 0: their age is the time since the
    governance version that added them was installed (it was "usable for 20788 days")."""
    d = _dest(OLD)
    assert d.age == "added 30 days ago" and d.flags == []  # not "usable for 20788 days"
    d = _dest(ALICE)  # no lock, added three days ago: new, per NEW_FOR
    assert d.age == "added 3 days ago" and d.flags == ["new destination"]
    assert NEW_FOR == 7 * DAY


def test_a_time_lock_is_named_only_while_it_lasts_and_new_counts_from_its_end() -> None:
    d = _dest(BOB)
    assert d.age == "added 10 days ago; inside its time lock until 2026-12-02 00:53 UTC"
    assert d.flags == ["time-locked destination"]
    d = _dest(CAROL)  # added a month ago, but usable for two days only: new
    assert d.age == "added 30 days ago; time lock ended 2 days ago"
    assert d.flags == ["new destination"]
    d = _dest(DAVE)  # the console cannot say when it was added: flagged, no age claimed
    assert d.age == "added at an unknown time (governance version 5)"
    assert d.flags == ["new destination: when it was added is unknown"]
    # a week and a minute after it was added, a lock-free entry is no longer new
    week = {("payees", ALICE): Added(4, NOW - NEW_FOR - 60)}
    (d,) = show(evm_tx(ALICE), "evm-tx", {}, _policy(NOW), week, NOW).destinations
    assert d.flags == [] and d.age == "added 7 days ago"


def test_erc20_known_token_in_units_and_unknown_token_flagged() -> None:
    p = _policy(NOW)
    shown = show(erc20_transfer(OLD, 2_500_000, token=USDC), "evm-tx", {}, p, ADDED, NOW)
    assert (shown.asset, shown.amount) == ("USDC", "2.5 USDC")
    d = shown.destinations[0]  # EIP-55 as decoded, matched case-insensitively
    assert d.address.lower() == OLD and d.allowlist == "payees" and not shown.flags
    unknown = show(erc20_transfer(OLD, 2_500_000), "evm-tx", {}, p)
    assert "2500000" not in unknown.amount and "2,500,000" not in unknown.amount
    assert "does not know this token's decimals" in unknown.amount
    assert unknown.flags == ["unknown token"]
