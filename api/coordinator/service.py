"""The coordinator: wires its parts, runs the background sweeps, signs with one retry.

The coordinator relays and aggregates; it never holds a share. Per signature it picks
``t`` healthy nodes, bounds every call by ``round_timeout``, and on a node failure retries
once on another subset without the blamed node. Aggregated signatures are verified before
they are stored, and stored in the same transaction as their audit entry (fail closed).

Several coordinators may share one database (issue 14). Each is one *instance* (an id
new at every start: host name, pid, random part) that signs only what it holds a lease
on (:mod:`api.coordinator.queue`): the request its POST accepted, one its approvals
released, or one its worker (:meth:`Coordinator._worker`) claimed from the queue (left
unclaimed, or by a coordinator that stopped renewing). The leases it holds are renewed
every ``sign_lease / 3`` seconds (:meth:`Coordinator._leases`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
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
from api.coordinator.outcomes import Answer, OutcomeWriter, final_answer
from api.coordinator.pools import Pools
from api.coordinator.psbt import request_message
from api.coordinator.queue import FENCE, Claimed, Fence, JobQueue, LeaseLost
from api.coordinator.receipts import assemble as assemble_receipt
from api.coordinator.registry import NodeRegistry
from api.coordinator.relay import SessionRelay
from api.coordinator.shared_pools import SharedPools, shared_pools_wanted
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
from api.problems import Problem
from api.serializers import sign_out
from api.settings import Settings
from custody import governance as gov
from custody import obs

log = logging.getLogger("api.coordinator")
events = obs.get_logger("api.coordinator")  # the hot path's lines (custody.obs, no LogRecord)

SLOW_SWEEP = 1.0  # seconds between health checks, expiry and re-reading the active keys
ATTEMPTS = 2  # a first attempt and one retry without the blamed
ISOLATION_ATTEMPTS = 4  # attempts in all when a failure names only suspects (DKLs23)
HELD_PER_BATCH = 4  # the worker claims while this instance signs < 4 x queue_batch requests


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
        # issue 14: versions also shared through the database (coordinators on other hosts)
        self.governance = GovernanceStore(settings.data_dir, db)
        self._take_up_governance(publish=True)
        if self.governance.current is not None:
            # the cluster the officers named: nodes sign audit checkpoints for it
            settings.cluster_id = self.governance.current.cluster_id
        self.registry = NodeRegistry(db, caller, self.governance)
        self.relay = SessionRelay(self.registry, settings.round_timeout)
        self.keys = KeyBook(db)
        self.ceremony = KeyCeremony(db, self.registry, self.relay)
        self.activity = Activity()
        self.instance = instance_id(settings.instance_name)
        self.pools: Pools
        if shared_pools_wanted(settings, db):  # several coordinators draw from one pool
            self.pools = SharedPools(
                settings, self.registry, self.relay, self.keys, self.activity, self.spawn,
                db, self.instance,
            )  # fmt: skip
        else:
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
        self.queue = JobQueue(db, self.instance, settings.sign_lease)
        self.held: set[str] = set()  # the sign requests this instance is signing now
        self._queue_tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, *, background: bool = True) -> None:
        """Load the registry; with ``background`` run the sweeps (tests may skip them)."""
        self.registry.load()
        if background:
            self._loop_task = asyncio.create_task(self._background())
            self._queue_tasks = [
                asyncio.create_task(self._worker()),
                asyncio.create_task(self._leases()),
            ]
            self.spawn(self.ceremonies.recover())  # interrupted key ceremonies

    async def stop(self) -> None:
        loops = [*([self._loop_task] if self._loop_task else []), *self._queue_tasks]
        for t in [*loops, *self._tasks]:
            t.cancel()
        await asyncio.gather(*self._tasks, *loops, return_exceptions=True)
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
                    # what another coordinator installed (issue 14): governance versions
                    # in the shared directory, enrolments in the shared database
                    await asyncio.to_thread(self._take_up_shared_state)
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

    # -- the job queue (api.coordinator.queue) -----------------------------------------------
    async def _worker(self) -> None:
        """Every ``queue_poll`` seconds: claim queued requests and expired leases (up to
        ``queue_batch``, none this instance already signs) and sign each in the background.
        A coordinator that died mid-request left its lease to expire: its requests finish
        here without the client resubmitting."""
        while True:
            try:
                # bounded: never more than HELD_PER_BATCH polls' worth in flight here, so a
                # slow coordinator leaves the rest of the queue to the others
                room = HELD_PER_BATCH * self.settings.queue_batch - len(self.held)
                limit = min(self.settings.queue_batch, room)
                got = await self.queue.claim_due(limit, self.held) if limit > 0 else []
                for claim in got:
                    self.resume(claim)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job queue claim failed")
            await asyncio.sleep(self.settings.queue_poll)

    async def _leases(self) -> None:
        """Renew the leases of the requests this instance signs, every ``sign_lease / 3``."""
        while True:
            await asyncio.sleep(self.settings.sign_lease / 3)
            try:
                held = sorted(self.held)
                kept = await self.queue.renew(held)
                if lost := set(held) - kept - {r for r in held if r not in self.held}:
                    log.warning("sign request leases lost", extra={"requests": sorted(lost)})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease renewal failed")

    def resume(self, claim: Claimed) -> None:
        """Sign a request this instance claimed from the queue (its answer stored for the
        Idempotency-Keys in flight that name it, :mod:`api.coordinator.outcomes`)."""
        events.info(
            "sign.claimed", sign_request_id=claim.id, claims=claim.claims,
            attempted=[list(a) for a in claim.attempted],
        )  # fmt: skip
        self.spawn(self._run_claimed(claim))

    async def _run_claimed(self, claim: Claimed) -> None:
        try:
            key = self.keys.get(claim.key_id)
        except Problem as e:  # the key is gone or not active: the request cannot be signed
            await self.outcomes.record(
                claim.id,
                claim.key_id,
                None,
                problem_doc("signing-failed", "Signing failed", e.detail or e.title, 409),
                [],
                answer=self._answer_for(claim.id),
                request_digest=self._resumed_digest(claim),
                attempted=claim.attempted,
            )
            return
        await self.run_sign(
            claim.id,
            claim.body,
            key,
            answer=self._answer_for(claim.id),
            attempted_before=claim.attempted,
        )

    def _resumed_digest(self, claim: Claimed) -> bytes:
        """The request digest the nodes logged for a resumed request whose key is no longer
        active (computed as :meth:`run_sign` does, from the key's public values), so the
        ``sign.attempt`` entries of the sets an earlier holder fenced name the releases the
        nodes' checkpoints look for; empty only when the key row is gone or the body no
        longer yields a message."""
        try:
            key = signing_key(self.keys.get(claim.key_id, any_status=True), claim.body)
            msg = request_message(key, claim.body)
        except (Problem, ValueError):  # no key row, or a body it cannot make a message of
            return b""
        return audit.request_digest(claim.id, key.id, key.scheme, claim.body, msg)

    def _answer_for(self, request_id: str) -> Answer:
        """The POST answer of a request resumed here, from its row and the outcome."""

        def answer(changes: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            with self.db.engine.connect() as conn:
                row = (
                    conn.execute(select(SignRequest.__table__).where(SignRequest.id == request_id))
                    .mappings()
                    .one()
                )
            return final_answer(sign_out({**row, **changes}))

        return answer

    async def sign_claimed(self, request_id: str, body: dict[str, Any], key: KeyInfo) -> bool:
        """Claim a request its approvals just released and sign it in the background;
        False when another coordinator's worker claimed it first (it signs it there)."""
        claim = await self.queue.claim(request_id)
        if claim is None:
            return False
        self.spawn(
            self.run_sign(
                request_id, body, key, answer=self._answer_for(request_id),
                attempted_before=claim.attempted,
            )
        )  # fmt: skip
        return True

    def _take_up_governance(self, *, publish: bool = False) -> None:
        """Take up newer governance versions (files, then ``governance_versions`` rows);
        at start first ``publish`` this copy's versions the table lacks. A refused version
        or row is logged by name and this coordinator stays on its version (fail closed)."""
        try:
            if publish:
                self.governance.publish()
            if taken := self.governance.refresh():
                log.info("governance taken up", extra={"versions": taken})
        except gov.GovernanceError as e:  # stays on its version: fail closed
            cur = self.governance.current
            log.warning(
                "governance version refused",
                extra={
                    "err": str(e),
                    "kind": str(e.kind),
                    "row": getattr(e, "version", None),  # a governance_versions row
                    "installed": None if cur is None else cur.version,
                },
            )

    def _take_up_shared_state(self) -> None:
        self._take_up_governance()
        self.registry.refresh()

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
        attempted_before: tuple[tuple[int, ...], ...] = (),
    ) -> None:
        """Sign one request this instance holds the lease of: first attempt, then one retry
        on a subset without the blamed; then store the outcome (with ``slot`` and
        ``answer``, the POST's idempotent answer with it). ``attempted_before``: the signer
        sets earlier holders fenced (a resumed request). Every signer set is fenced before
        its items leave (:mod:`api.coordinator.queue`); a lost lease ends the attempt with
        nothing stored from here."""
        with structlog.contextvars.bound_contextvars(sign_request_id=request_id):
            self.activity.signing += 1
            self.activity.last_sign = time.monotonic()
            self.held.add(request_id)
            fence = Fence(self.queue, request_id, attempted_before)
            token = FENCE.set(fence)
            start = time.perf_counter()
            signed = False
            outcome = "failed"
            try:
                key = signing_key(key, body)  # derivation_path: the child key (issue 13)
                msg = request_message(key, body)
                result, error, blamed, attempted = await self._attempts(request_id, key, body, msg)
                attempted = [*fence.sets, *attempted]  # every set fenced, earlier holders' too
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
                outcome = "signed" if signed else "failed" if stored or result is None else "lost"
            except LeaseLost:
                outcome = "lease-lost"  # another holder finishes it; nothing sent from here
                log.warning("sign request lease lost", extra={"sign_request_id": request_id})
            finally:
                FENCE.reset(token)
                self.held.discard(request_id)
                self.activity.signing -= 1
                took = time.perf_counter() - start
                metrics.observe_sign(key.scheme, body.get("kind"), signed, took)
                events.info(
                    "sign.outcome",
                    outcome=outcome,
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
            except LeaseLost:
                raise  # nothing more from here (run_sign)
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


def instance_id(name: str = "") -> str:
    """This coordinator process's id in leases: ``name`` (default the host name), the pid
    and a random part, so a restarted process never takes an old lease for its own."""
    host = (name or socket.gethostname())[:60]
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"
