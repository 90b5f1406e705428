"""Run every party of a protocol in one process: an in-memory router for tests and benchmarks.

Not I/O: messages are passed between objects in memory. ``order="random"`` shuffles
delivery (with a seeded RNG) to show that a protocol completes in any order; ``drop``
removes every message from the given senders to simulate a party that crashed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from mpc.session import RoundSession
from mpc.wire import Message, decode, encode


def run_local(
    sessions: Mapping[int, RoundSession[Any]],
    *,
    order: str = "fifo",
    seed: int = 0,
    wire: bool = False,
    drop: frozenset[int] = frozenset(),
    tamper: Any = None,
) -> dict[int, Any]:
    """Drive ``sessions`` (party id -> session) to completion; return party id -> result.

    ``wire=True`` round-trips every message through the CBOR encoding. ``tamper`` may be a
    function ``Message -> Message | None`` applied to each message before delivery (attack
    tests). Raises whatever error a party raises first.
    """
    rng = random.Random(seed)
    queue: list[Message] = []
    for pid, s in sessions.items():
        if pid not in drop:
            queue.extend(s.start())
    while queue:
        i = rng.randrange(len(queue)) if order == "random" else 0
        msg = queue.pop(i)
        if tamper is not None:
            maybe = tamper(msg)
            if maybe is None:
                continue
            msg = maybe
        if wire:
            msg = decode(encode(msg))
        targets = (
            [msg.recipient]
            if msg.recipient is not None
            else [p for p in sessions if p != msg.sender]
        )
        for t in targets:
            if t in drop or t not in sessions:
                continue
            queue.extend(sessions[t].receive(msg))
    return {pid: s.result for pid, s in sessions.items() if pid not in drop}
