"""Nonce management for one sending address: every payment gets its own nonce, none twice.

An Ethereum account's transactions run in nonce order (the yellow paper's validity rule
``T_n = σ[S(T)]_n``): a nonce can be used once, and a transaction whose nonce is above the
account's next one waits in the pool until the gap below it is filled. The
:class:`NonceState` of an address is a small immutable value that the payment service
stores in its own database (:meth:`NonceState.to_json` / :meth:`NonceState.from_json`) and
passes back in, so it survives restarts; every operation returns the new state, and the
service persists it in the same transaction as the payment's own state change, under a
row lock on the address (one writer per address at a time; this module does no I/O and
holds no lock).

Life of a nonce:

1. :meth:`NonceState.reserve` (payment id, the chain's *pending* transaction count): the
   payment gets the lowest free nonce at or above the chain's count; the same payment id
   asking again gets the same nonce (idempotent across retries and restarts). Reconciling
   with the chain: the chain's count is a floor (nonces below it are used, by us or by
   anyone else holding the key), so ``next`` jumps up to it and freed nonces below it are
   forgotten.
2. :meth:`NonceState.signed`: a transaction at this nonce is submitted to custody for
   signing (recorded BEFORE the sign request is sent: after a crash custody may have signed
   it whether or not the answer was seen). From here on the nonce stays with the payment
   until it is consumed on chain: a signed transaction is a
   bearer instrument (anyone holding the bytes, the coordinator included, can broadcast
   them) that stays valid until its nonce is used. Were the nonce handed to another
   payment after a refusal that is not permanent (fee under the base fee, funds short),
   the old bytes could still be mined later and the payment retried elsewhere would pay
   twice. So a refused payment is retried AT THE SAME NONCE (rebuilt with fresh fees,
   signed again): all its versions share one nonce, and at most one of them can ever be
   mined.
3. :meth:`NonceState.broadcast`: the node accepted the transaction (it stays in flight
   until mined, so after a crash the same bytes are simply sent again: harmless).
4. :meth:`NonceState.release`: only for a payment that has no signature and never will:
   never submitted (the build failed, cancelled before signing), or, with
   ``never_signed=True``, every sign request of it is terminal without a signature in
   custody's own answer (denied, rejected, failed, expired; one still awaiting approvals
   must be rejected first, or it may yet be signed). The nonce goes back to the free pool
   and the next payment reuses it, lowest first. A send whose outcome is unknown
   (:class:`payments.evm.chain.ChainUnavailable`) is not a refusal either: re-broadcast the
   same bytes.
5. :meth:`NonceState.consumed`: the nonce is used on chain: the payment's transaction is in
   a block (whatever its status: a reverted transaction spends its nonce too), or the node
   answers "nonce too low" for its bytes (another transaction took the nonce: the bytes are
   dead, and the payment, if not paid, may reserve a new nonce).

Broadcast in nonce order (:meth:`NonceState.ready`): a real node queues a transaction whose
nonce is above the account's next one, but eth-tester refuses it ("Invalid transaction
nonce"); so a payment's transaction is sent once every lower in-flight nonce of the
address is broadcast and no free nonce leaves a gap below it.

Gap handling: a released nonce below ``next`` is a gap; later transactions of the address
(higher nonces) wait behind it in every node's pool. Gaps are refilled first (lowest free
nonce wins), so the next payment closes the gap; :meth:`NonceState.gaps` lists the free
nonces that block in-flight ones so the service can alert when no payment comes to fill
them (an operator then sends a zero-value transfer to fill it, which custody's policy must
allow). A payment signed but abandoned (cancelled after signing) still holds its nonce: it
ends only by being consumed, by its own bytes or by a replacement at that nonce.
A reservation neither broadcast nor released (a crash between reserve and broadcast) is
listed by :meth:`NonceState.stale`: finish it (sign, broadcast) or, if never signed,
release it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from eth_utils.address import to_checksum_address

__all__ = ["NonceError", "NonceState", "Reservation"]

Stage = Literal["reserved", "signed", "broadcast"]


class NonceError(ValueError):
    """An operation the state does not allow (unknown payment, a second use, bad JSON)."""


@dataclass(frozen=True)
class Reservation:
    nonce: int
    stage: Stage


@dataclass(frozen=True)
class NonceState:
    """The nonces of one address (module docstring). ``next_nonce``: lowest never handed
    out; ``free``: released nonces below it, reused first; ``inflight``: payment id to its
    reservation."""

    address: str
    next_nonce: int = 0
    free: frozenset[int] = frozenset()
    inflight: Mapping[str, Reservation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", to_checksum_address(self.address))
        used = [r.nonce for r in self.inflight.values()]
        if len(set(used)) != len(used):
            raise NonceError(f"{self.address}: two payments hold one nonce")
        if set(used) & self.free:
            raise NonceError(f"{self.address}: a nonce both free and in flight")
        if any(not 0 <= n < self.next_nonce for n in (*used, *self.free)):
            raise NonceError(f"{self.address}: a nonce at or above next_nonce")

    # -- operations (each returns the new state) -----------------------------------------
    def reserve(self, payment_id: str, chain_pending: int) -> tuple[int, NonceState]:
        """The nonce for ``payment_id`` (the same one if it already holds one), given the
        chain's pending transaction count of the address."""
        if not isinstance(chain_pending, int) or chain_pending < 0:
            raise NonceError("chain_pending must be a non-negative integer")
        held = self.inflight.get(payment_id)
        if held is not None:
            return held.nonce, self
        nxt = max(self.next_nonce, chain_pending)
        free = {n for n in self.free if n >= chain_pending}
        if free:
            nonce = min(free)
            free.discard(nonce)
        else:
            nonce = nxt
            nxt += 1
        inflight = {**self.inflight, payment_id: Reservation(nonce, "reserved")}
        return nonce, replace(self, next_nonce=nxt, free=frozenset(free), inflight=inflight)

    def signed(self, payment_id: str) -> NonceState:
        """A transaction of the payment at its nonce goes to custody for signing (module
        docstring, 2: record it before the sign request is sent)."""
        held = self._held(payment_id)
        if held.stage != "reserved":
            return self
        inflight = {**self.inflight, payment_id: Reservation(held.nonce, "signed")}
        return replace(self, inflight=inflight)

    def broadcast(self, payment_id: str) -> NonceState:
        """The node accepted the payment's transaction."""
        held = self._held(payment_id)
        inflight = {**self.inflight, payment_id: Reservation(held.nonce, "broadcast")}
        return replace(self, inflight=inflight)

    def release(self, payment_id: str, *, never_signed: bool = False) -> NonceState:
        """The payment has no signature and never will: its nonce is free again (module
        docstring, 4). A submitted payment only with ``never_signed`` (custody's terminal
        answer without a signature for every request of it); never once broadcast."""
        held = self._held(payment_id)
        if held.stage == "broadcast" or (held.stage == "signed" and not never_signed):
            raise NonceError(
                f"{payment_id}: nonce {held.nonce} is {held.stage}: signed bytes may exist, so "
                "it stays with the payment until consumed (retry at the same nonce)"
            )
        inflight = {k: v for k, v in self.inflight.items() if k != payment_id}
        if held.nonce == self.next_nonce - 1 and not self._above(held.nonce, inflight):
            # the top nonce: hand it out again as next, and any free ones just below too
            nxt, free = held.nonce, set(self.free)
            while nxt - 1 in free:
                nxt -= 1
                free.discard(nxt)
            return replace(self, next_nonce=nxt, free=frozenset(free), inflight=inflight)
        return replace(self, free=self.free | {held.nonce}, inflight=inflight)

    def consumed(self, payment_id: str) -> NonceState:
        """The payment's nonce is used on chain (module docstring, 5); its entry is dropped."""
        self._held(payment_id)
        inflight = {k: v for k, v in self.inflight.items() if k != payment_id}
        return replace(self, inflight=inflight)

    # -- reading ------------------------------------------------------------------------
    def nonce_of(self, payment_id: str) -> int | None:
        held = self.inflight.get(payment_id)
        return None if held is None else held.nonce

    def gaps(self, chain_pending: int) -> list[int]:
        """Free nonces at or above the chain's count with an in-flight nonce above them:
        the holes that keep those transactions waiting."""
        top = max((r.nonce for r in self.inflight.values()), default=-1)
        return sorted(n for n in self.free if chain_pending <= n < top)

    def ready(self, payment_id: str, chain_pending: int) -> bool:
        """Whether the payment may be broadcast now (module docstring: nonce order): every
        in-flight nonce below its own is broadcast, and no free nonce between the chain's
        pending count and its own leaves a gap."""
        held = self._held(payment_id)
        lower = [r for r in self.inflight.values() if r.nonce < held.nonce]
        gap = any(chain_pending <= n < held.nonce for n in self.free)
        return not gap and all(r.stage == "broadcast" for r in lower)

    def stale(self) -> list[str]:
        """Payments holding a nonce they never broadcast (finish them; release only one
        that was never signed)."""
        return sorted(k for k, v in self.inflight.items() if v.stage != "broadcast")

    def _held(self, payment_id: str) -> Reservation:
        held = self.inflight.get(payment_id)
        if held is None:
            raise NonceError(f"{payment_id}: holds no nonce of {self.address}")
        return held

    @staticmethod
    def _above(nonce: int, inflight: Mapping[str, Reservation]) -> bool:
        return any(r.nonce > nonce for r in inflight.values())

    # -- persistence ---------------------------------------------------------------------
    def to_json(self) -> str:
        doc = {
            "address": self.address,
            "next_nonce": self.next_nonce,
            "free": sorted(self.free),
            "inflight": {
                k: {"nonce": v.nonce, "stage": v.stage} for k, v in sorted(self.inflight.items())
            },
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> NonceState:
        try:
            doc: Any = json.loads(text)
            inflight = {
                str(k): Reservation(_nat(v["nonce"], f"inflight.{k}.nonce"), _stage(v["stage"]))
                for k, v in doc["inflight"].items()
            }
            return cls(
                address=str(doc["address"]),
                next_nonce=_nat(doc["next_nonce"], "next_nonce"),
                free=frozenset(_nat(n, "free") for n in doc["free"]),
                inflight=inflight,
            )
        except NonceError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise NonceError(f"nonce state: malformed ({type(e).__name__}: {e})") from None


def _nat(v: object, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise NonceError(f"nonce state: {what} must be a non-negative integer")
    return v


def _stage(v: object) -> Stage:
    if v == "reserved":
        return "reserved"
    if v == "signed":
        return "signed"
    if v == "broadcast":
        return "broadcast"
    raise NonceError(f"nonce state: stage must be reserved, signed or broadcast, not {v!r}")
