"""Authorization rules and the risk score (pure: the caller gathers the facts).

Hard rules decline whatever the score: a sanctioned destination, the per-payment and the
daily limit of the customer's account. Scored rules add up to a score out of 100:

=================  =====  ===========================================================
rule               adds   when
=================  =====  ===========================================================
velocity            30    more than ``velocity_max`` payments in ``velocity_window_s``
new destination     15    the customer never paid this destination before
behaviour (z)       20/45 the amount is more than 2 / 3 standard deviations above the
                          mean of the customer's past amounts in this asset (at least
                          ``zscore_min_history`` of them; z = (x - mean) / stdev, the
                          sample standard deviation)
=================  =====  ===========================================================

A payment scoring ``decline_score`` or more is declined. Every reason is a sentence a
person can read, with the numbers that led to it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from payments.sanctions import Entry


@dataclass(frozen=True)
class Facts:
    amount: int
    asset: str
    decimals: int
    destination: str
    sanctioned: Entry | None
    per_payment_limit: int | None
    daily_limit: int | None
    spent_today: int  # authorized and not failed/cancelled in the last 24 h
    recent_count: int  # payments in the velocity window
    known_destination: bool
    history: Sequence[int]  # the customer's past authorized amounts in this asset


@dataclass(frozen=True)
class Settings:
    decline_score: int = 70
    velocity_window_s: int = 600
    velocity_max: int = 5
    zscore_min_history: int = 5


@dataclass
class Assessment:
    score: int = 0
    reasons: list[str] = field(default_factory=list)
    hard: bool = False

    def declined(self, s: Settings) -> bool:
        return self.hard or self.score >= s.decline_score


def fmt(amount: int | float, decimals: int, asset: str) -> str:
    """``amount`` base units as a decimal number of ``asset`` (for reasons only)."""
    if decimals == 0:
        return f"{amount:,.0f} {asset}"
    text = f"{amount / 10**decimals:,.{min(decimals, 8)}f}".rstrip("0").rstrip(".")
    return f"{text} {asset}"


def zscore(amount: int, history: Sequence[int]) -> float | None:
    if len(history) < 2:
        return None
    sd = statistics.stdev(history)
    if sd == 0:
        return None
    return (amount - statistics.fmean(history)) / sd


def assess(f: Facts, s: Settings) -> Assessment:
    a = Assessment()

    def money(x: int | float) -> str:
        return fmt(x, f.decimals, f.asset)

    if f.sanctioned is not None:
        e = f.sanctioned
        a.hard = True
        a.score = 100
        where = f", {e.country}" if e.country else ""
        a.reasons.append(
            f"destination {f.destination} is on the sanctions list: {e.name} "
            f"(SDN entry {e.ent_num}, programs {', '.join(e.programs) or '-'}{where})"
        )
    if f.per_payment_limit is not None and f.amount > f.per_payment_limit:
        a.hard = True
        a.reasons.append(
            f"amount {money(f.amount)} is above the per-payment limit {money(f.per_payment_limit)}"
        )
    if f.daily_limit is not None and f.spent_today + f.amount > f.daily_limit:
        a.hard = True
        a.reasons.append(
            f"amount {money(f.amount)} with {money(f.spent_today)} already sent in the last 24 "
            f"hours is above the daily limit {money(f.daily_limit)}"
        )
    if f.recent_count >= s.velocity_max:
        a.score += 30
        a.reasons.append(
            f"{f.recent_count} payments in the last {s.velocity_window_s // 60} minutes "
            f"(more than {s.velocity_max - 1} is unusual)"
        )
    if not f.known_destination:
        a.score += 15
        a.reasons.append(f"first payment to destination {f.destination}")
    if len(f.history) >= s.zscore_min_history:
        z = zscore(f.amount, f.history)
        if z is not None and z > 2:
            add = 45 if z > 3 else 20
            a.score += add
            mean = statistics.fmean(f.history)
            a.reasons.append(
                f"amount {money(f.amount)} is {z:.1f} standard deviations above this "
                f"customer's mean of {money(mean)} over {len(f.history)} payments"
            )
    a.score = min(a.score, 100)
    return a
