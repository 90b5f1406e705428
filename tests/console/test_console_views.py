"""What the console shows of an intent (api.console.views): amounts with their decimals,
never base units; destinations with their allowlist entry and age, new and time-locked ones
flagged; an ERC-20 token whose decimals the console does not know is flagged, its amount not
shown as units."""

from __future__ import annotations

import time

from api.console.views import NEW_FOR, show
from custody import policy as pol
from tests.custody.policy.helpers import ALICE, BOB, erc20_transfer, evm_tx

OLD = "0x" + "0d" * 20
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"


def _policy(now: int) -> pol.Policy:
    return pol.Policy(
        allowlists=(
            pol.Allowlist(
                "payees",
                (
                    pol.AllowlistEntry(OLD, now - 30 * 86_400, "supplier"),
                    pol.AllowlistEntry(ALICE, now - NEW_FOR // 2, "added this week"),
                    pol.AllowlistEntry(BOB, now + 2 * 86_400, "time-locked"),
                ),
            ),
        )
    )


def test_eth_amounts_destinations_and_their_flags() -> None:
    now = int(time.time())
    p = _policy(now)
    shown = show(evm_tx(OLD, 1234 * 10**15), "evm-tx", {}, p)
    assert (shown.asset, shown.amount) == ("ETH", "1.234 ETH")
    assert shown.chain == "Ethereum mainnet (chain id 1)"
    assert shown.fee == "at most 0.000042 ETH"  # 21 000 gas at 2 gwei
    (d,) = shown.destinations
    assert (d.allowlist, d.label, d.flags) == ("payees", "supplier", [])
    assert d.age == "usable for 30 days"
    (d,) = show(evm_tx(ALICE), "evm-tx", {}, p).destinations
    assert d.flags == ["new destination"] and d.age.startswith("usable for 3 days")
    (d,) = show(evm_tx(BOB), "evm-tx", {}, p).destinations
    assert d.flags == ["time-locked destination"] and d.age.startswith("time-locked: usable in")
    (d,) = show(evm_tx("0x" + "99" * 20), "evm-tx", {}, p).destinations
    assert d.flags == ["new destination: on no allowlist"] and d.allowlist is None


def test_erc20_known_token_in_units_and_unknown_token_flagged() -> None:
    p = _policy(int(time.time()))
    shown = show(erc20_transfer(OLD, 2_500_000, token=USDC), "evm-tx", {}, p)
    assert (shown.asset, shown.amount) == ("USDC", "2.5 USDC")
    d = shown.destinations[0]  # EIP-55 as decoded, matched case-insensitively
    assert d.address.lower() == OLD and d.allowlist == "payees" and not shown.flags
    unknown = show(erc20_transfer(OLD, 2_500_000), "evm-tx", {}, p)
    assert "2500000" not in unknown.amount and "2,500,000" not in unknown.amount
    assert "does not know this token's decimals" in unknown.amount
    assert unknown.flags == ["unknown token"]
