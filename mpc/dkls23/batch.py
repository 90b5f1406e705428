"""Batched presigning: ``count`` independent DKLs23 presignatures sharing one session's rounds.

DKLs23 (ePrint 2023/765) Protocol 3.6 is message independent up to its last round, so its
rounds 1-2 and the local part of round 3 can run ahead (:class:`~mpc.dkls23.PresignSession`).
This module runs ``count`` such instances side by side and carries their messages of one
round towards one peer in one message (issue 13: per-session overhead over HTTP, i.e. the
round trips, the envelope signing and boxing, the node's session bookkeeping, is paid once
per batch instead of once per presignature). Nothing of the protocol is shared:

* instance ``k`` is a complete :class:`~mpc.dkls23.PresignSession` under its own session
  id ``sid_k = H("DKLs23 batch instance", sid, count, k)`` (:func:`instance_session_id`),
  so its context, presignature id, commitments and every hash are its own, as if it had
  been started alone with ``sid_k``;
* every instance draws its own fresh randomness (its ``rho_i``, ``r_i``, ``phi_i``, the
  ephemeral zero-share key, Bob's choice bits, Alice's check pads) from the session's RNG,
  so no two instances share a secret, a pad or an OT-extension correlation (every
  extension runs on fresh choice bits under a context bound to both parties' fresh
  ``rho``, as :mod:`mpc.dkls23.mul` requires of every run);
* every instance runs every check of Protocol 3.6 and F_RVOLE (KOS15 consistency, DKLs19
  Protocol 1 step 6, both Gamma checks, decommitments, ``sum pk_j = pk``) exactly as the
  single session does, and the first failing check fails the *whole* batch with that
  instance's error (its culprits and its ``pair``, the message prefixed with the instance
  number): the caller retires the pair's base OTs exactly as for a single presign (DKLs18
  errata, ePrint 2018/499, 2023 revision: base OTs whose extension failed a check are never
  extended again), and no presignature of a failed batch is ever handed out.

Wire: round ``r`` from ``i`` to ``j`` is one direct message of protocol
:data:`PROTOCOL_PRESIGN_BATCH` with payload ``{"batch": [p_0, ..., p_{count-1}]}``, ``p_k``
being instance ``k``'s round-``r`` payload to ``j`` (decoded strictly by the instance, which
names the sender and the field). A payload with another shape or length is refused naming
the sender. Single-use of every presignature stays the node's durable release-log check
(:func:`~mpc.dkls23.sign_with_presignature` and its ledger), per presignature id.

Why by hand: no library runs DKLs23; this is only the multiplexing of its instances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from mpc.dkls23.keygen import EcdsaKeyShare
from mpc.dkls23.params import GROUP, WIDTH, XI, h
from mpc.dkls23.sign import PROTOCOL_PRESIGN, Presignature, PresignSession
from mpc.errors import DecodeError, MpcError, UsageError
from mpc.session import RoundSession
from mpc.shamir import check_identifiers
from mpc.wire import Message

__all__ = [
    "PROTOCOL_PRESIGN_BATCH",
    "MAX_BATCH",
    "BatchPresignSession",
    "instance_session_id",
    "max_batch_for",
]

PROTOCOL_PRESIGN_BATCH: Final = "dkls23-presign-batch"
#: most instances one batch session may carry (bounds a node's memory per session)
MAX_BATCH: Final = 32
#: bytes one instance adds to one round-2 message towards one peer (tau, XI x 4 scalars,
#: plus the points and hashes of PresignRound2), before envelope and transport encoding
ROUND2_BYTES_PER_INSTANCE: Final = XI * WIDTH * 32 + 600


def instance_session_id(session_id: bytes, count: int, index: int) -> bytes:
    """``sid_k = H("DKLs23 batch instance", sid, count, k)``: instance ``k``'s own session id.

    Distinct for every ``(sid, count, k)`` (collision resistance of SHA-256), so a batch's
    presignature ids (:func:`~mpc.dkls23.presignature_id_of` of ``sid_k``) are distinct
    from each other and from every other batch's; a session id the coordinator repeats does
    not repeat any correlation either, because every instance binds its parties' fresh
    ``rho`` (:mod:`mpc.dkls23.mul`).
    """
    return h(b"DKLs23 batch instance", session_id, count, index)


def max_batch_for(signers: int, budget_bytes: int) -> int:
    """The largest batch whose round-2 delivery to one node fits ``budget_bytes`` of raw
    payload (a node receives one round-2 message from each of the ``signers - 1`` peers)."""
    if signers < 2:
        raise UsageError("a presignature needs at least two signers")
    return max(1, min(MAX_BATCH, budget_bytes // ((signers - 1) * ROUND2_BYTES_PER_INSTANCE)))


class BatchPresignSession(RoundSession[tuple[Presignature, ...]]):
    """``count`` DKLs23 Protocol 3.6 presign instances for party ``me`` in one session.

    Same rounds as :class:`~mpc.dkls23.PresignSession` (1 and 2, direct messages); the
    result is the instances' presignatures in instance order (module docstring).
    """

    protocol = PROTOCOL_PRESIGN_BATCH
    rounds = (1, 2)

    def __init__(
        self, share: EcdsaKeyShare, session_id: bytes, signers: Sequence[int], count: int
    ) -> None:
        if type(count) is not int or not 1 <= count <= MAX_BATCH:
            raise UsageError(f"batch size must be 1..{MAX_BATCH}, not {count!r}")
        ids = tuple(sorted(check_identifiers(GROUP, signers)))
        super().__init__(session_id=session_id, me=share.identifier, participants=ids)
        self.count = count
        self.instances = [
            PresignSession(share, instance_session_id(session_id, count, k), ids)
            for k in range(count)
        ]

    def expected_kind(self, round: int) -> str:
        return "direct"

    def _start(self) -> list[Message]:
        """Round 1 of every instance (each with its own fresh randomness), one message per peer."""
        for inst in self.instances:
            inst._rng = self._rng  # the session's RNG (mpc.hazmat.set_rng), drawn per instance
        per_peer: dict[int, list[object]] = {j: [] for j in self.others}
        for k, inst in enumerate(self.instances):
            self._collect(k, inst.start(), per_peer)
        return [self._msg(1, {"batch": per_peer[j]}, j) for j in self.others]

    def _collect(self, k: int, out: list[Message], per_peer: dict[int, list[object]]) -> None:
        if sorted(m.recipient for m in out if m.recipient is not None) != list(self.others):
            raise UsageError(f"batch instance {k} did not produce one message per peer")
        for m in sorted(out, key=lambda m: m.recipient or 0):
            assert m.recipient is not None
            per_peer[m.recipient].append(m.payload)

    def _process_round(self, round: int, msgs: dict[int, Message]) -> list[Message]:
        """Feed instance ``k`` its part of every peer's message of ``round``; re-batch."""
        parts: dict[int, list[dict[str, Any]]] = {}
        for j, m in sorted(msgs.items()):
            payload = m.payload
            if not isinstance(payload, dict) or set(payload) != {"batch"}:
                raise DecodeError("a batch message has exactly the field 'batch'", party=j)
            items = payload["batch"]
            if not isinstance(items, list) or len(items) != self.count:
                raise DecodeError(
                    f"expected a list of {self.count} instance payloads", field="batch", party=j
                )
            if not all(isinstance(p, dict) for p in items):
                raise DecodeError("every instance payload must be a map", field="batch", party=j)
            parts[j] = items
        per_peer: dict[int, list[object]] = {j: [] for j in self.others}
        for k, inst in enumerate(self.instances):
            out: list[Message] = []
            for j in sorted(parts):
                inner = Message(PROTOCOL_PRESIGN, inst.session_id, round, j, self.me, parts[j][k])
                try:
                    out.extend(inst.receive(inner))
                except MpcError as exc:
                    raise _in_instance(exc, k, self.count) from None
            if round == 1:
                self._collect(k, out, per_peer)
            elif not inst.done:
                raise UsageError(f"batch instance {k} did not finish with round {round}")
        if round == 1:
            return [self._msg(2, {"batch": per_peer[j]}, j) for j in self.others]
        self._finish(tuple(inst.result for inst in self.instances))
        self.instances = []
        return []


def _in_instance(exc: MpcError, k: int, count: int) -> MpcError:
    """``exc`` (type, culprits, pair, field kept) with its message naming the instance."""
    exc.args = (f"batch instance {k} of {count}: {exc.args[0] if exc.args else exc}",)
    return exc
