"""In-process runners, in-memory ledgers and seeded randomness: for tests and benchmarks only.

.. danger::

   This module is full of land mines, dragons, and dinosaurs with laser guns. Nothing here
   belongs on a signing node or in the coordinator.

   * :func:`run_local` and the ``run_*_local`` helpers run *every* party of a protocol in one
     process: the one process then holds every share of the key. That is fine for a test,
     and the opposite of what a threshold scheme is for.
   * :class:`MemoryLedger` forgets every used presignature when the process exits. A node
     that signed with it could sign twice with one presignature after a restart, which
     reveals its key share (DKLs23 section 3: presignatures are single use).
   * :func:`seeded_rng` is a deterministic byte stream: sessions driven by it draw the same
     "random" secrets on every run. It exists to record and replay our own test vectors.

Not I/O: messages are passed between objects in memory. ``order="random"`` shuffles
delivery (with a seeded RNG) to show that a protocol completes in any order; ``drop``
removes every message from the given senders to simulate a party that crashed.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mpc.dkg import DkgSession
from mpc.dkls23.keygen import EcdsaKeyShare, OtSetupSession
from mpc.dkls23.params import GROUP as _SECP256K1
from mpc.groups import Group
from mpc.session import Rng, RoundSession
from mpc.shamir import KeyPackage
from mpc.wire import Message, decode, encode

__all__ = [
    "run_local",
    "route",
    "run_dkg_local",
    "run_ot_setup_local",
    "run_keygen_local",
    "MemoryLedger",
    "seeded_rng",
]

Tamper = Callable[[Message], Message | None]


def route(msg: Message, parties: Sequence[int], drop: frozenset[int] = frozenset()) -> list[int]:
    """The parties ``msg`` is delivered to: its recipient, or every other party (broadcast).

    The one routing rule of the in-process runner; parties in ``drop`` (crashed) and
    recipients outside ``parties`` receive nothing.
    """
    if msg.recipient is not None:
        targets = [msg.recipient]
    else:
        targets = [p for p in parties if p != msg.sender]
    return [t for t in targets if t in parties and t not in drop]


def run_local(
    sessions: Mapping[int, RoundSession[Any]],
    *,
    order: str = "fifo",
    seed: int = 0,
    wire: bool = False,
    drop: frozenset[int] = frozenset(),
    tamper: Tamper | None = None,
) -> dict[int, Any]:
    """Drive ``sessions`` (party id -> session) to completion; return party id -> result.

    ``wire=True`` round-trips every message through the CBOR encoding. ``tamper`` may be a
    function ``Message -> Message | None`` applied to each message before delivery (attack
    tests). Raises whatever error a party raises first.
    """
    shuffle = random.Random(seed)
    parties = list(sessions)
    queue: list[Message] = []
    for pid, s in sessions.items():
        if pid not in drop:
            queue.extend(s.start())
    while queue:
        msg = queue.pop(shuffle.randrange(len(queue)) if order == "random" else 0)
        if tamper is not None:
            maybe = tamper(msg)
            if maybe is None:
                continue
            msg = maybe
        if wire:
            msg = decode(encode(msg))
        for t in route(msg, parties, drop):
            queue.extend(sessions[t].receive(msg))
    return {pid: s.result for pid, s in sessions.items() if pid not in drop}


def run_dkg_local(
    group: Group,
    t: int,
    n: int,
    *,
    context: bytes = b"",
    order: str = "fifo",
    seed: int = 0,
    wire: bool = False,
) -> list[KeyPackage]:
    """Run a ``t``-of-``n`` DKG with parties ``1..n`` in this process (tests, benchmarks)."""
    sid = secrets.token_bytes(32)
    ids = list(range(1, n + 1))
    sessions = {i: DkgSession(group, sid, i, ids, t, context) for i in ids}
    results = run_local(sessions, order=order, seed=seed, wire=wire)
    return [results[i] for i in ids]


def run_ot_setup_local(
    keys: Sequence[KeyPackage], *, order: str = "fifo", seed: int = 0
) -> dict[int, EcdsaKeyShare]:
    """Run :class:`~mpc.dkls23.OtSetupSession` for all holders of one key in this process."""
    sid = secrets.token_bytes(32)
    sessions = {k.identifier: OtSetupSession(k, sid) for k in keys}
    res: dict[int, EcdsaKeyShare] = run_local(sessions, order=order, seed=seed)
    return res


def run_keygen_local(t: int, n: int) -> dict[int, EcdsaKeyShare]:
    """DKG (:func:`run_dkg_local`) plus all pairwise OT setups, in one process.

    Nodes run :class:`mpc.dkg.DkgSession` and :class:`~mpc.dkls23.OtSetupSession` over the
    network instead.
    """
    return run_ot_setup_local(run_dkg_local(_SECP256K1, t, n))


class MemoryLedger:
    """An in-memory presignature ledger (not durable: never use on a node, see above)."""

    def __init__(self) -> None:
        self.used: set[bytes] = set()

    def __call__(self, presignature_id: bytes) -> bool:
        if presignature_id in self.used:
            return False
        self.used.add(presignature_id)
        return True


def seeded_rng(seed: bytes) -> Rng:
    """A deterministic byte stream: block ``k`` is ``SHA-512(domain || seed || k)``.

    For recorded test vectors only (see :func:`mpc.hazmat.set_rng`).
    """
    counter = 0
    buffer = b""

    def rng(n: int) -> bytes:
        nonlocal counter, buffer
        while len(buffer) < n:
            block = b"TPWC-v1/testing/seeded-rng" + seed + counter.to_bytes(8, "big")
            buffer += hashlib.sha512(block).digest()
            counter += 1
        out, buffer = buffer[:n], buffer[n:]
        return out

    return rng
