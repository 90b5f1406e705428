"""The coordinator: wires its parts, runs the background sweeps, signs with one retry.

The coordinator relays and aggregates; it never holds a share. Per signature it picks
``t`` healthy nodes, bounds every call by ``round_timeout``, and on a node failure retries
once on another subset without the blamed node. Aggregated signatures are verified before
they are stored, and stored in the same transaction as their audit entry (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine
from typing import Any

import structlog
from sqlalchemy import select, update

from api import audit, idempotency, metrics, webhooks
from api.coordinator.approvals import ApprovalDesk
from api.coordinator.ceremonies import Ceremonies
from api.coordinator.checkpoints import Checkpointer
from api.coordinator.hd import signing_key
from api.coordinator.keys import KeyBook, KeyCeremony
from api.coordinator.outcomes import Answer, OutcomeWriter
from api.coordinator.pools import Pools
from api.coordinator.psbt import request_message
from api.coordinator.receipts import assemble as assemble_receipt
from api.coordinator.registry import NodeRegistry
from api.coordinator.relay import SessionRelay
from api.coordinator.signers import signers_by_scheme
from api.coordinator.types import (
    Activity,
    KeyInfo,
    NodesRefused,
    SessionFailed,
    SignResult,
    problem_doc,
)
from api.db import Database, SignRequest, utcnow
from api.governance import GovernanceStore
from api.nodes import NodeCaller
from api.settings import Settings
from custody import obs

log = logging.getLogger("api.coordinator")
events = obs.get_logger("api.coordinator")  # the hot path's lines (custody.obs, no LogRecord)

SLOW_SWEEP = 1.0  # seconds between health checks, expiry and re-reading the active keys
ATTEMPTS = 2  # a first attempt and one retry without the blamed
ISOLATION_ATTEMPTS = 4  # attempts in all when a failure names only suspects (DKLs23)


class _Isolation:
    """Who spoiled a DKLs23 signature, from which signer sets failed and which worked.

    DKLs23 cannot attribute a bad partial (``mpc.dkls23.combine_signature``), so a failed
    set only makes its members suspects. A party is named only when (a) it was never in a
    set that worked, (b) every other member of each failed set it was in was in a set that
    worked, and (c) it failed in at least two different sets. A node that misbehaves
    selectively to frame an honest partner therefore gets nobody named: the honest partner
    is cleared by a set that worked, and the rest stay suspects."""

    def __init__(self) -> None:
        self.failed: list[frozenset[int]] = []
        self.ok: set[int] = set()
        self.steer: set[int] = set()

    def failed_with(self, signers: tuple[int, ...]) -> None:
        self.failed.append(frozenset(signers))
        counts = {p: sum(p in f for f in self.failed) for p in signers}
        top = max(counts.values())
        self.steer = {random.choice([p for p in signers if counts[p] == top])}

    def succeeded_with(self, signers: list[int]) -> None:
        self.ok.update(signers)

    def _candidates(self) -> dict[int, list[frozenset[int]]]:
        out: dict[int, list[frozenset[int]]] = {}
        for p in {p for f in self.failed for p in f} - self.ok:
            sets = [f for f in self.failed if p in f]
            if all(f - {p} <= self.ok for f in sets):
                out[p] = sets
        return out

    def confirmed(self, culprits: set[int]) -> list[tuple[int, str]]:
        return [
            (p, ", ".join(str(sorted(f)) for f in sets))
            for p, sets in sorted(self._candidates().items())
            if p not in culprits and len(set(sets)) >= 2
        ]

    def confirming_set(self, t: int) -> set[int] | None:
        """A signer set of ``t`` for a candidate failed once: it and cleared partners, not
        a set that already failed; None when there is no candidate or no such set."""
        for p, sets in sorted(self._candidates().items()):
            if len(set(sets)) >= 2:
                continue
            partners = sorted(self.ok - set().union(*sets)) + sorted(self.ok & set().union(*sets))
            want = {p, *partners[: t - 1]}
            if len(want) == t and frozenset(want) not in self.failed:
                return want
        return None

    def suspects(self, culprits: set[int]) -> list[int]:
        """Members of every failed set that no named culprit explains."""
        return sorted({p for f in self.failed if not f & culprits for p in f})


class Coordinator:
    """One coordinator: node registry, session relay, key book and ceremony, pools,
    per-scheme signers, outcome writer, and the background tasks."""

    def __init__(self, settings: Settings, db: Database, caller: NodeCaller) -> None:
        self.settings = settings
        self.db = db
        self.caller = caller
        self.governance = GovernanceStore(settings.data_dir)
        if self.governance.current is not None:
            # the cluster the officers named: nodes sign audit checkpoints for it
            settings.cluster_id = self.governance.current.cluster_id
        self.registry = NodeRegistry(db, caller, self.governance)
        self.relay = SessionRelay(self.registry, settings.round_timeout)
        self.keys = KeyBook(db)
        self.ceremony = KeyCeremony(db, self.registry, self.relay)
        self.activity = Activity()
        self.pools = Pools(
            settings, self.registry, self.relay, self.keys, self.activity, self.spawn
        )
        self.registry.restart_listeners.append(self.pools.forget_party)
        self.ceremonies = Ceremonies(
            db, self.registry, self.relay, self.keys, self.pools, settings.round_timeout
        )
        self.signers = signers_by_scheme(self.registry, self.pools, settings.round_timeout)
        self.outcomes = OutcomeWriter(db)
        self.approvals = ApprovalDesk(db, self.governance)
        self.checkpoints = Checkpointer(
            db, self.registry, settings.cluster_id, settings.round_timeout
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, *, background: bool = True) -> None:
        """Load the registry; with ``background`` run the sweeps (tests may skip them)."""
        self.registry.load()
        if background:
            self._loop_task = asyncio.create_task(self._background())
            self.spawn(self.ceremonies.recover())  # interrupted key ceremonies

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(
            *self._tasks, *([self._loop_task] if self._loop_task else []), return_exceptions=True
        )
        await self.caller.aclose()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task the coordinator cancels on stop."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _background(self) -> None:
        """Pool top-ups every ``pool_interval``; health checks, request expiry and the list
        of active keys at most every :data:`SLOW_SWEEP` (each is a database query or a
        call per node: at a 0.2 s interval they cost as much as 30 signatures a second).
        A node failing a call is marked down at once anyway."""
        last_slow = -SLOW_SWEEP
        while True:
            try:
                if time.monotonic() - last_slow >= SLOW_SWEEP:
                    last_slow = time.monotonic()
                    await self.registry.check_health()
                    await asyncio.to_thread(self.expire_requests)
                    await asyncio.to_thread(
                        idempotency.sweep, self.db, self.settings.idempotency_ttl
                    )
                    self.keys.forget_list()
                self.pools.top_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background sweep failed")
            await asyncio.sleep(self.settings.pool_interval)

    # -- keys -----------------------------------------------------------------------------
    async def run_dkg(self, key_id: str) -> None:
        if await self.ceremony.run_dkg(key_id):
            self.keys.forget_list()
            self.pools.top_up()

    # -- sign requests ----------------------------------------------------------------------
    def expire_requests(self) -> None:
        """Pending approvals past ``expires_at`` become ``expired`` (audited); the update
        is conditional on the status, so a request an approval just moved on stays moved."""
        now = utcnow()
        with self.db.session() as s:
            ids = s.scalars(
                select(SignRequest.id).where(
                    SignRequest.status == "pending_approval", SignRequest.expires_at < now
                )
            ).all()
            for rid in ids:
                done = s.execute(
                    update(SignRequest)
                    .where(SignRequest.id == rid, SignRequest.status == "pending_approval")
                    .values(status="expired", updated_at=now)
                )
                if done.rowcount:  # type: ignore[attr-defined]
                    audit.append(s, "coordinator", "sign.expired", rid, {})
                    webhooks.enqueue(s, "sign_request.expired", {"id": rid, "status": "expired"})
                    idempotency.release_request(s, rid)  # a retry may use the same key

    async def run_sign(
        self,
        request_id: str,
        body: dict[str, Any],
        key: KeyInfo,
        *,
        answer: Answer | None = None,
        slot: idempotency.Slot | None = None,
    ) -> None:
        """Sign one request: first attempt, then one retry on a subset without the blamed;
        then store the outcome (with ``slot`` and ``answer``, the POST's idempotent answer
        with it)."""
        with structlog.contextvars.bound_contextvars(sign_request_id=request_id):
            self.activity.signing += 1
            self.activity.last_sign = time.monotonic()
            start = time.perf_counter()
            signed = False
            try:
                key = signing_key(key, body)  # derivation_path: the child key (issue 13)
                msg = request_message(key, body)
                result, error, blamed, attempted = await self._attempts(request_id, key, body, msg)
                for b in blamed:
                    metrics.record_blame(b)
                digest = audit.request_digest(request_id, key.id, key.scheme, body, msg)
                stored = await self.outcomes.record(
                    request_id,
                    key.id,
                    result,
                    error,
                    blamed,
                    slot,
                    answer,
                    request_digest=digest,
                    attempted=attempted,
                    receipt=None if result is None else assemble_receipt(key, body, result),
                )
                signed = result is not None and stored  # a withheld signature: failed
            finally:
                self.activity.signing -= 1
                took = time.perf_counter() - start
                metrics.observe_sign(key.scheme, body.get("kind"), signed, took)
                events.info(
                    "sign.outcome",
                    outcome="signed" if signed else "failed",
                    scheme=key.scheme,
                    kind=body.get("kind"),
                    key_id=key.id,
                    ms=round(took * 1000, 2),
                )

    async def _attempts(
        self, request_id: str, key: KeyInfo, body: dict[str, Any], msg: bytes
    ) -> tuple[
        SignResult | None, dict[str, Any] | None, list[dict[str, Any]], list[tuple[int, ...]]
    ]:
        """The attempts at one signature: the result or the error, who was blamed, and
        every signer set that was asked to sign (their nodes may have released shares)."""
        signer = self.signers[key.scheme]
        attempted: list[tuple[int, ...]] = []
        blamed: list[dict[str, Any]] = []
        culprits: set[int] = set()  # attributed: left out of every later attempt
        iso = _Isolation()  # unattributable failures (DKLs23): isolate by other signer sets
        error: dict[str, Any] | None = None
        result: SignResult | None = None
        attempt = 0
        while attempt < (ISOLATION_ATTEMPTS if iso.failed else ATTEMPTS):
            attempt += 1
            if result is None:
                excluded = culprits | iso.steer
            else:  # signed; confirm a candidate culprit with another, cleared partner
                want = iso.confirming_set(key.threshold)
                if want is None:
                    break
                parties = {n.party_id for n in self.registry.eligible_of(key.nodes)}
                excluded = parties - want
            try:
                got = await signer.sign(key, body, msg, excluded)
            except NodesRefused as e:
                if e.signers:
                    attempted.append(e.signers)
                if result is None:
                    error = problem_doc(
                        "refused-by-node",
                        "Refused by a signer node",
                        e.detail,
                        403,
                        code=e.code,
                        node_id=e.node_id,
                    )
                break
            except SessionFailed as e:
                if e.signers:
                    attempted.append(e.signers)
                for party, reason in e.blame:
                    blamed.append(self.registry.blame_entry(party, reason))
                    culprits.add(party)
                if e.suspects:
                    iso.failed_with(e.suspects)
                if result is None:
                    extra: dict[str, Any] = {"culprits": sorted(culprits)}
                    if suspects := iso.suspects(culprits):
                        extra["suspects"] = suspects  # one or more of them, nobody named
                    error = problem_doc("signing-failed", "Signing failed", e.detail, **extra)
                continue
            except Exception as e:
                log.exception("signing crashed", extra={"sign_request_id": request_id})
                if result is None:
                    error = problem_doc("signing-failed", "Signing failed", type(e).__name__, 500)
                break
            attempted.append(tuple(sorted(got.signers)))
            iso.succeeded_with(got.signers)
            if result is None:
                result = got
            if not iso.failed:
                break
        for party, sets in iso.confirmed(culprits):
            culprits.add(party)
            blamed.append(
                self.registry.blame_entry(
                    party,
                    "invalid partial: every signer set with it failed (" + sets + ") and its "
                    "partners signed without it",
                )
            )
        if result is not None:
            if left := iso.suspects(culprits):
                log.warning(
                    "signed, but a failed signer set stays unattributed",
                    extra={"sign_request_id": request_id, "suspects": left},
                )
            return result, None, blamed, attempted
        return None, error, blamed, attempted
