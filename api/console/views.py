"""What the console shows of a sign request: the intent decoded from the payload the nodes
will decode (``custody.approvals.request_intent`` through the coordinator's approval desk),
in plain words. Amounts are never shown in base units: ETH with its 18 decimals, BTC with 8,
ERC-20 tokens with the decimals of a token the console knows (otherwise the amount is not
shown as units and the request is flagged). The destination is looked up in the active
policy's allowlists: its entry, its label and its age.

An allowlist entry has two instants: when it was **added** (when the governance version
that first listed it, and every version since, was installed: :class:`Added`, found by the
console from the governance chain and the audit log) and its **time lock**
(``active_from``: the entry counts for the policy from then; ``0`` is no lock). The age
shown is the time since it was added; "inside its time lock until ..." only while the lock
is ahead. A destination is **new** while it has been usable (added, and its lock passed)
for less than :data:`NEW_FOR`; a destination on no list, inside its time lock or new is
flagged. When the console cannot say when an entry was added, it is flagged new (it does
not claim an age it cannot show).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from custody import policy as pol
from custody.approve_cli import CHAINS, format_units
from custody.kinds import Intent
from custody.kinds.btc import BtcPsbt
from custody.kinds.evm import EvmTx
from custody.kinds.iso20022 import Pacs008
from custody.kinds.message import Message

NEW_FOR: Final = 7 * 86_400  # a destination usable for less than a week is "new"


@dataclass(frozen=True)
class Added:
    """When an allowlist entry was added: the governance ``version`` that first listed it
    (and every later one), installed at ``at`` (Unix seconds; None when unknown)."""

    version: int
    at: int | None


#: (allowlist name, normalized address) -> when that entry was added
AddedTimes = Mapping[tuple[str, str], Added]

#: ERC-20 tokens whose decimals the console knows (Ethereum mainnet contracts).
TOKENS: Final = {
    "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48": ("USDC", 6),
    "0xdac17f958d2ee523a2206206994597c13d831ec7": ("USDT", 6),
    "0x6b175474e89094c44da98b954eedeac495271d0f": ("DAI", 18),
}


@dataclass
class Destination:
    address: str
    allowlist: str | None = None
    label: str = ""
    active_from: int | None = None
    added: Added | None = None
    now: int = 0
    flags: list[str] = field(default_factory=list)

    @property
    def age(self) -> str:
        """When the entry was added and, while it lasts, its time lock, in words."""
        if self.active_from is None:
            return "not on any allowlist"
        if self.added is None or self.added.at is None:
            version = f" (governance version {self.added.version})" if self.added else ""
            parts = [f"added at an unknown time{version}"]
        else:
            parts = [f"added {_ago(self.now - self.added.at)}"]
        if self.active_from > self.now:
            parts.append(f"inside its time lock until {_instant(self.active_from)}")
        elif self.added is not None and self.added.at is not None:
            if self.active_from > self.added.at:
                parts.append(f"time lock ended {_ago(self.now - self.active_from)}")
        return "; ".join(parts)


@dataclass
class Shown:
    """A decoded request: ``lines`` of (label, text), its destinations and its flags."""

    chain: str
    asset: str
    amount: str
    lines: list[tuple[str, str]]
    destinations: list[Destination]
    fee: str = ""
    memo: str = ""
    flags: list[str] = field(default_factory=list)


def _ago(seconds: int) -> str:
    if seconds < 60:
        return "just now"
    return f"{_duration(seconds)} ago"


def _instant(t: int) -> str:
    try:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):  # a lock past year 9999: never, in practice
        return f"Unix time {t} (never, in practice)"


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86_400)
    if days:
        return f"{days} day{'s' if days != 1 else ''}"
    hours = rest // 3600
    if hours:
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{max(rest // 60, 1)} min"


def destination(
    address: str, policy: pol.Policy, now: int, added: AddedTimes | None = None
) -> Destination:
    """``address`` looked up in ``policy``'s allowlists (the entry whose time lock ends
    first, as the policy engine counts it), its age and flags (module docstring)."""
    want = pol.normalize_address(address)
    d = Destination(address, now=now)
    for al in policy.allowlists:
        for e in al.entries:
            if pol.normalize_address(e.address) == want and (
                d.active_from is None or e.active_from < d.active_from
            ):
                d.allowlist, d.label, d.active_from = al.name, e.label, e.active_from
                d.added = (added or {}).get((al.name, want))
    if d.active_from is None:
        d.flags.append("new destination: on no allowlist")
    elif d.active_from > now:
        d.flags.append("time-locked destination")
    elif d.added is None or d.added.at is None:
        d.flags.append("new destination: when it was added is unknown")
    elif now - max(d.added.at, d.active_from) < NEW_FOR:
        d.flags.append("new destination")
    return d


def show(
    intent: Intent | str,
    kind: str,
    body: dict[str, Any],
    policy: pol.Policy,
    added: AddedTimes | None = None,
    now: int | None = None,
) -> Shown:
    """What the console shows of ``intent``; ``added``: when each allowlist entry of
    ``policy`` was added (:class:`Added`), ``now``: the time (default: the clock's)."""
    now = int(time.time()) if now is None else now
    if isinstance(intent, EvmTx):
        chain = f"{CHAINS.get(intent.chain_id, 'EVM chain')} (chain id {intent.chain_id})"
        fee = f"at most {format_units(intent.max_fee_per_gas * intent.gas_limit, 18)} ETH"
        lines = [("nonce", str(intent.nonce)), ("gas limit", f"{intent.gas_limit:,}")]
        flags: list[str] = []
        if intent.erc20 is not None:
            e = intent.erc20
            token = TOKENS.get(e.token.lower())
            if token is None:
                asset = f"ERC-20 token {e.token}"
                amount = "not shown: the console does not know this token's decimals"
                flags.append("unknown token")
            else:
                asset, amount = token[0], f"{format_units(e.amount, token[1])} {token[0]}"
            if e.method != "transfer":
                flags.append(f"ERC-20 {e.method}: grants spending, moves nothing now")
            dests = [destination(e.recipient, policy, now, added)]
            memo = ""
        else:
            asset, amount = "ETH", f"{format_units(intent.value, 18)} ETH"
            dests = [destination(intent.to, policy, now, added)]
            memo = "0x" + intent.data.hex() if intent.data else ""
            if intent.data:
                flags.append("carries contract call data")
        return Shown(chain, asset, amount, lines, dests, fee, memo, flags)
    if isinstance(intent, BtcPsbt):
        dests = [
            destination(o.address or o.script.hex(), policy, now, added) for o in intent.outputs
        ]
        total = sum(o.amount for o in intent.outputs)
        lines = [
            (f"output {i}", f"{format_units(o.amount, 8)} BTC to {o.address or 'a script'}")
            for i, o in enumerate(intent.outputs)
        ]
        return Shown(
            f"Bitcoin {intent.network}",
            "BTC",
            f"{format_units(total, 8)} BTC (all outputs)",
            lines,
            dests,
            f"{format_units(intent.fee, 8)} BTC",
        )
    if isinstance(intent, Pacs008):
        dests = [destination(intent.creditor_account, policy, now, added)]
        return Shown(
            "ISO 20022 pacs.008",
            intent.currency,
            f"{intent.amount} {intent.currency}",
            [("creditor", intent.creditor_name or ""), ("debtor", intent.debtor_name or "")],
            dests,
            memo=", ".join(intent.remittance) if intent.remittance else "",
        )
    if isinstance(intent, Message):
        text = intent.text if intent.text is not None else "0x" + intent.message.hex()
        return Shown("", "", "no transfer", [("message", text)], [], flags=["message signing"])
    return Shown(
        "",
        "",
        "unknown",
        [("bytes", str(body.get("message", "")))],
        [],
        flags=["raw bytes: no decoder can say what they do"],
    )
