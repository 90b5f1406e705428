"""Node registry and health: who is enrolled, who is healthy, whom to pick and blame.

Enrolment reads a node's identity from its ``GET /health`` and pushes the peer list to
every node; the health sweep and every failed call keep ``status`` current (a node failing
a transport call is marked down at once).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select

from api import audit
from api.coordinator.types import NodesRefused, SessionFailed
from api.db import Database, Node, utcnow
from api.governance import GovernanceStore
from api.nodes import NodeCaller, NodeFailure, NodeInfo
from api.problems import Problem
from custody import governance as gov
from custody.domain import NodeStatus

log = logging.getLogger("api.coordinator")


def _log_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("node health not persisted", extra={"err": repr(fut.exception())})


class NodeRegistry:
    """The enrolled nodes (in memory, mirrored in the ``nodes`` table) and their health."""

    def __init__(self, db: Database, caller: NodeCaller, governance: GovernanceStore) -> None:
        self.governance = governance
        self._boots: dict[str, str] = {}
        # called with a party id when that node restarted (its pooled items are stale)
        self.restart_listeners: list[Callable[[int], int]] = []
        self.db = db
        self.caller = caller
        self.nodes: dict[str, NodeInfo] = {}
        self._last_seen_written: dict[str, float] = {}

    def load(self) -> None:
        with self.db.session() as s:
            for n in s.scalars(select(Node)):
                self.nodes[n.id] = NodeInfo(n.id, n.party_id, n.url, n.sign_pk, n.box_pk)

    def refresh(self) -> list[str]:
        """Pick up enrolments another coordinator on the same database made (issue 14:
        several coordinators behind one address). A new row, or a row whose URL or identity
        changed, replaces this coordinator's entry; its health starts unknown until the
        next check. A row that does not match the identity governance pins is ignored and
        logged (the coordinator that wrote it checked the pin; a row written around it is
        not trusted). Returns the node ids taken up."""
        with self.db.session() as s:
            rows = [(n.id, n.party_id, n.url, n.sign_pk, n.box_pk) for n in s.scalars(select(Node))]
        taken: list[str] = []
        for node_id, party, url, sign_pk, box_pk in rows:
            cur = self.nodes.get(node_id)
            if cur is not None and (cur.party_id, cur.url, cur.sign_pk, cur.box_pk) == (
                party,
                url,
                sign_pk,
                box_pk,
            ):
                continue
            try:
                self._check_pin(node_id, party, sign_pk, box_pk)
            except Problem as e:
                log.warning("enrolled node ignored", extra={"node": node_id, "err": e.detail})
                continue
            self.nodes[node_id] = NodeInfo(node_id, party, url, sign_pk, box_pk)
            taken.append(node_id)
        return taken

    # -- health ---------------------------------------------------------------------------
    async def check_health(self) -> None:
        await asyncio.gather(*(self._check(n) for n in list(self.nodes.values())))

    async def _check(self, node: NodeInfo) -> None:
        before = node.status
        try:
            h = await self.caller.health(node)
            self._saw_boot(node, h.get("boot_id"))
            node.status = "healthy" if h.get("status") == "ok" else "degraded"
            node.last_error = None if node.status == "healthy" else f"hsm: {h.get('hsm')}"
            node.last_seen = time.time()
        except NodeFailure as e:
            node.status = "down"
            node.last_error = e.detail
        now = time.time()
        if before != node.status or now - self._last_seen_written.get(node.id, 0) > 5:
            self._last_seen_written[node.id] = now
            self._persist(node)

    def _saw_boot(self, node: NodeInfo, boot_id: object) -> None:
        """A new boot id: the node restarted and its outstanding nonces and presignatures
        (memory only, NODE_API v2.0) are gone; tell the listeners (the pools)."""
        if not isinstance(boot_id, str):
            return
        before = self._boots.get(node.id)
        self._boots[node.id] = boot_id
        if before is not None and before != boot_id:
            for listener in self.restart_listeners:
                dropped = listener(node.party_id)
                log.info("node restarted", extra={"node": node.id, "dropped": dropped})

    def _persist(self, node: NodeInfo) -> None:
        """Mirror the node's health into its row, in a worker thread (never a database
        write on the event loop: a held write lock must not freeze the API)."""
        snap = (node.id, node.status, node.last_error, node.last_seen)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write_health(*snap)
            return
        fut = loop.run_in_executor(None, self._write_health, *snap)
        fut.add_done_callback(_log_failure)

    def _write_health(
        self, node_id: str, status: str, last_error: str | None, last_seen: float | None
    ) -> None:
        with self.db.session() as s:
            row = s.scalar(select(Node).where(Node.id == node_id))
            if row is None:
                return
            row.status = status
            row.last_error = last_error
            if last_seen:
                row.last_seen = dt.datetime.fromtimestamp(last_seen, dt.UTC)

    def mark_down(self, party: int, detail: str) -> None:
        for n in self.nodes.values():
            if n.party_id == party and n.status != "down":
                n.status = "down"
                n.last_error = detail
                self._persist(n)

    @property
    def healthy(self) -> int:
        return sum(n.eligible for n in self.nodes.values())

    def by_party(self, party: int) -> NodeInfo | None:
        for n in self.nodes.values():
            if n.party_id == party:
                return n
        return None

    def boot_of(self, party: int) -> str:
        """The boot id the node of ``party`` last reported ("" before its first check)."""
        n = self.by_party(party)
        return "" if n is None else self._boots.get(n.id, "")

    def eligible_party(self, party: int) -> bool:
        n = self.by_party(party)
        return n is not None and n.eligible

    def by_party_order(self) -> list[str]:
        """Enrolled node ids by party id (the default share holders of a new key)."""
        return sorted(self.nodes, key=lambda n: self.nodes[n].party_id)

    # -- picking and blame ------------------------------------------------------------------
    def pick(self, node_ids: list[str], t: int, excluded: set[int]) -> list[NodeInfo]:
        """``t`` healthy nodes of ``node_ids`` at random, none of ``excluded``, by party."""
        eligible = [
            self.nodes[n]
            for n in node_ids
            if n in self.nodes and self.nodes[n].eligible and self.nodes[n].party_id not in excluded
        ]
        if len(eligible) < t:
            down = [n for n in node_ids if n not in self.nodes or not self.nodes[n].eligible]
            raise SessionFailed(
                f"only {len(eligible)} healthy nodes for threshold {t} (unavailable: {down})", []
            )
        random.shuffle(eligible)
        return sorted(eligible[:t], key=lambda n: n.party_id)

    def eligible_of(self, node_ids: list[str]) -> list[NodeInfo]:
        return [self.nodes[n] for n in node_ids if n in self.nodes and self.nodes[n].eligible]

    def blame_entry(self, party: int, reason: str) -> dict[str, Any]:
        """A ``Blame`` as stored on a key or sign request."""
        n = self.by_party(party)
        return {"node_id": n.id if n else None, "party_id": party, "reason": reason[:300]}

    def failure_blame(
        self, p: int, r: object, *, timeout_marks_down: bool
    ) -> list[tuple[int, str]] | None:
        """The blame for party ``p``'s fan-out result ``r``, or None when ``r`` is an answer.

        A failed call blames the culprits it names (and marks the node down when the
        transport failed); a timeout blames ``p``; any other exception is re-raised."""
        if isinstance(r, NodeFailure):
            if r.transport:
                self.mark_down(p, r.detail)
            return [(c, f"{r.reason}: {r.detail}") for c in r.culprits]
        if isinstance(r, TimeoutError):
            if timeout_marks_down:
                self.mark_down(p, "timeout")
            return [(p, "timeout")]
        if isinstance(r, BaseException):
            raise r
        return None

    # -- enrolment ----------------------------------------------------------------------------
    async def enrol(self, node_id: str, url: str, actor: str) -> NodeInfo:
        """Fetch the node's identity from its /health, store it, push peers to every node."""
        probe = NodeInfo(node_id, 0, url, "", "")
        try:
            h = await self.caller.health(probe)
        except NodeFailure as e:
            raise Problem(502, "node-unreachable", "Node unreachable", e.detail) from None
        if h.get("node_id") != node_id:
            raise Problem(
                409,
                "node-id-mismatch",
                "Node id mismatch",
                f"the node at {url} says it is {h.get('node_id')!r}",
            )
        try:
            party = int(h["party_id"])
            sign_pk, box_pk = str(h["sign_pk"]), str(h["box_pk"])
            bytes.fromhex(sign_pk), bytes.fromhex(box_pk)
        except (KeyError, ValueError, TypeError):
            raise Problem(
                502, "node-garbage", "Node answered garbage", "health lacks party_id/sign_pk/box_pk"
            ) from None
        self._check_pin(node_id, party, sign_pk, box_pk)
        status: NodeStatus = "healthy" if h.get("status") == "ok" else "degraded"
        await asyncio.to_thread(
            self._store_enrolment, node_id, url, party, sign_pk, box_pk, status, actor
        )
        info = NodeInfo(node_id, party, url, sign_pk, box_pk, status=status, last_seen=time.time())
        self.nodes[node_id] = info
        self._saw_boot(info, h.get("boot_id"))
        await self._push_peers()
        return info

    def _check_pin(self, node_id: str, party: int, sign_pk: str, box_pk: str) -> None:
        """Enrol only a roster node whose identity is the one the officers pinned."""
        cur = self.governance.current
        if cur is None:
            raise Problem(
                409,
                "governance-missing",
                "No governance installed",
                "the coordinator enrols only nodes of an officer-signed roster: install the "
                "genesis first (python -m api trust --governance FILE)",
            )
        pinned = cur.node(node_id)
        if pinned is None:
            raise Problem(
                403,
                "not-in-roster",
                "Node not in the roster",
                f"{node_id} is not in governance version {cur.version}'s roster",
            )
        if (pinned.party_id, pinned.sign_pk.hex(), pinned.box_pk.hex()) != (
            party,
            sign_pk,
            box_pk,
        ):
            raise Problem(
                409,
                "identity-mismatch",
                "Node identity differs from its pin",
                f"the node at this URL is not the {node_id} that governance version "
                f"{cur.version} pins (party or identity keys differ)",
            )

    def _store_enrolment(
        self,
        node_id: str,
        url: str,
        party: int,
        sign_pk: str,
        box_pk: str,
        status: NodeStatus,
        actor: str,
    ) -> None:
        with self.db.session() as s:
            clash = s.scalar(select(Node).where(Node.party_id == party, Node.id != node_id))
            if clash is not None:
                raise Problem(
                    409,
                    "party-id-taken",
                    "Party id taken",
                    f"party {party} already belongs to {clash.id}",
                )
            row = s.scalar(select(Node).where(Node.id == node_id))
            if row is None:
                row = Node(id=node_id, party_id=party, url=url, sign_pk=sign_pk, box_pk=box_pk)
                s.add(row)
            row.url, row.party_id, row.sign_pk, row.box_pk = url, party, sign_pk, box_pk
            row.status = status
            row.last_seen = utcnow()
            audit.append(
                s,
                actor,
                "node.enrol",
                node_id,
                {"url": url, "party_id": party, "sign_pk": sign_pk, "box_pk": box_pk},
            )

    async def _push_peers(self) -> None:
        peers = [
            {"node_id": n.id, "party_id": n.party_id, "sign_pk": n.sign_pk, "box_pk": n.box_pk}
            for n in sorted(self.nodes.values(), key=lambda n: n.party_id)
        ]
        results = await asyncio.gather(
            *(
                self.caller.call(n, "PUT", "/v1/peers", {"peers": peers})
                for n in self.nodes.values()
            ),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, NodeFailure):
                log.warning("peer push failed", extra={"node": r.node.id, "err": r.detail})

    # -- governance -----------------------------------------------------------------------------
    async def install_governance(self, data: bytes, actor: str) -> dict[str, Any]:
        """Verify the next governance version, relay it to every enrolled node, keep it.

        Each node verifies it itself (the coordinator cannot make a version); the
        coordinator keeps it only when no node refused it (an unreachable node installs it
        later, when it is relayed again). Answer: the version and each node's outcome.
        """
        try:
            new = self.governance.check_successor(data)
        except gov.GovernanceError as exc:
            raise _governance_problem(exc) from None
        body = {"document": data.hex()}
        nodes = sorted(self.nodes.values(), key=lambda n: n.party_id)
        results = await asyncio.gather(
            *(self.caller.call(n, "PUT", "/v1/governance", body) for n in nodes),
            return_exceptions=True,
        )
        outcome: dict[str, str] = {}
        refused = []
        for n, r in zip(nodes, results, strict=True):
            if isinstance(r, NodeFailure):
                outcome[n.id] = "refused" if r.status is not None and r.status < 500 else r.reason
                if r.status is not None and r.status < 500:
                    refused.append(f"{n.id}: {r.detail}")
            elif isinstance(r, BaseException):
                raise r
            else:
                outcome[n.id] = "installed"
        if refused:
            raise Problem(
                409,
                "governance-refused-by-nodes",
                "Nodes refused the governance version",
                "; ".join(refused),
                nodes=outcome,
            )
        await asyncio.to_thread(self._store_governance, data, new, actor)
        return {"version": new.version, "digest": new.digest.hex(), "nodes": outcome}

    def _store_governance(self, data: bytes, new: gov.Governance, actor: str) -> None:
        self.governance.advance(data)
        with self.db.session() as s:
            audit.append(
                s,
                actor,
                "governance.install",
                new.cluster_id,
                {"version": new.version, "digest": new.digest.hex()},
            )


_GOVERNANCE_STATUS = {
    gov.GovernanceErrorKind.MALFORMED: 422,
    gov.GovernanceErrorKind.UNDER_SIGNED: 403,
    gov.GovernanceErrorKind.UNCHAINED: 409,
    gov.GovernanceErrorKind.ROLLBACK: 409,
    gov.GovernanceErrorKind.WRONG_CLUSTER: 409,
}


def _governance_problem(exc: gov.GovernanceError) -> Problem:
    return Problem(
        _GOVERNANCE_STATUS[exc.kind], str(exc.kind), "Governance version refused", exc.detail
    )


def raise_refusal(results: Iterable[tuple[int, object]]) -> None:
    """A node's 403 is its own authorization refusing the request (``signer_nodes.policy``):
    raise :class:`NodesRefused` (no blame, no retry) for the first one."""
    for p, r in results:
        if isinstance(r, NodeFailure) and r.status == 403:
            raise NodesRefused(p, r.node.id, r.code, r.detail)


def receipt_part(answer: dict[str, Any]) -> Any:
    """The node's receipt part of a sign answer (``{"body", "node"}``), or None."""
    part = answer.get("receipt")
    return part if isinstance(part, dict) else None
