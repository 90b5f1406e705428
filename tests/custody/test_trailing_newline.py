"""A value with a trailing newline is refused by every anchored-pattern check.

``re.match(r"^...$", s)`` accepts ``s + "\\n"`` (``$`` also matches before a final newline),
and ``bytes.fromhex`` skips the whitespace, so ``"00\\n"`` once signed the same bytes as
``"00"`` (found by mutation testing, docs/MUTATION.md). The checks now use ``fullmatch``;
each is pinned here with the accepted value beside the refused one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from custody import governance, policy, policy_file

CASES: list[tuple[str, Callable[[str], Any], str]] = [
    ("governance id", lambda v: governance._ident(v, "officer"), "officer-1"),
    ("policy id", lambda v: policy._ident(v, "rule"), "rule-1"),
    ("policy file id", lambda v: policy_file._ident(v, "rules[0].id"), "rule-1"),
    ("duration", lambda v: policy_file.parse_duration(v), "1d2h"),
    ("instant", lambda v: policy_file.parse_instant(v), "2026-12-01T10:00Z"),
    ("clock", lambda v: policy_file._clock_in(v, "window.start"), "09:30"),
    ("amount", lambda v: policy_file._amount_in(v, "limit"), "100"),
    ("chain", lambda v: policy_file._chain(v, "chain"), "evm:1"),
    ("asset", lambda v: policy_file._asset(v, "asset"), "ETH"),
]


@pytest.mark.parametrize(("what", "check", "good"), CASES, ids=[c[0] for c in CASES])
def test_trailing_newline_is_refused(what: str, check: Callable[[str], Any], good: str) -> None:
    check(good)  # the value itself is accepted
    with pytest.raises((ValueError, governance.GovernanceError)):
        check(good + "\n")
