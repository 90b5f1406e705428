"""Audit checkpoints: ask every node to co-sign the chain head, store what they signed.

Each node (``POST /v1/audit/checkpoint``, NODE_API.md) gets ``{seq, head, entries}``:
the entries, in the node's wire form (:func:`api.audit.wire`, :mod:`custody.auditchain`),
since the last checkpoint THAT node signed (its ``checkpoint_seq`` in ``GET /v1/status``),
and answers ``{"signature": hex}``: its identity key's Ed25519 signature over
:func:`api.audit.checkpoint_statement` ``(cluster, node_id, seq, head)``. A node signs only
if the entries chain from its last checkpoint and hold every signature it released since.

A node answering ``checkpoint-missing-releases`` is asked once more with the then current
head (a release whose outcome was still being written). If it still refuses, the releases
it names were made behind the coordinator's back: an ``audit.releases-missing`` entry
records the node's answer (``GET /v1/audit/verify`` reports it), and the answer to the
route names them too.

Each signature is verified under the node's pinned ``sign_pk`` before it is stored; the
checkpoint is stored (with the wire entries it covers since the previous stored
checkpoint, and an ``audit.checkpoint`` entry) only when at least one node signed it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from api import audit, crypto
from api.coordinator.registry import NodeRegistry
from api.db import AuditEntry, Checkpoint, Database
from api.integrity import MISSING_RELEASES
from api.nodes import NodeFailure, NodeInfo
from api.problems import Problem

PATH = "/v1/audit/checkpoint"
MISSING = "checkpoint missing releases"  # the title of the node's problem (its code)
RETRY_WAIT = 0.2  # seconds before the one retry: outcomes being written land meanwhile

Answer = tuple[str, str | None, str]  # status, detail, signature ("" when none)


class Checkpointer:
    def __init__(self, db: Database, registry: NodeRegistry, cluster: str, timeout: float):
        self.db = db
        self.registry = registry
        self.cluster = cluster
        self.timeout = timeout
        self._lock = asyncio.Lock()

    async def create(self, actor: str) -> dict[str, Any]:
        """One checkpoint at the current head; raises a problem when no node signed."""
        async with self._lock:
            nodes = list(self.registry.nodes.values())
            if not nodes:
                raise Problem(409, "no-nodes", "No nodes", "no node is enrolled to co-sign")
            seq, head, wires, prev_seq, answers = await self._round(nodes)
            if any(st == "refused" and d and MISSING in d for st, d, _ in answers):
                await asyncio.sleep(RETRY_WAIT)
                seq, head, wires, prev_seq, answers = await self._round(nodes)
            sigs = {n.id: sig for n, (_, _, sig) in zip(nodes, answers, strict=True) if sig}
            report = [
                {"node_id": n.id, "status": st, "detail": d}
                for n, (st, d, _) in zip(nodes, answers, strict=True)
            ]
            missing = {
                n.id: d
                for n, (st, d, _) in zip(nodes, answers, strict=True)
                if st == "refused" and d and MISSING in d
            }
            if missing:
                for r in report:
                    if r["node_id"] in missing:
                        r["status"] = "missing-releases"
                await asyncio.to_thread(self._record_missing, actor, seq, missing)
            if not sigs:
                raise Problem(
                    502,
                    "checkpoint-unsigned",
                    "No node signed the checkpoint",
                    f"checkpoint at entry {seq} was not stored"
                    + (
                        "; signatures released behind the coordinator's back: "
                        + "; ".join(f"{n}: {d}" for n, d in missing.items())
                        if missing
                        else ""
                    ),
                    seq=seq,
                    head=head,
                    nodes=report,
                )
            covered = [w for w in wires if w["seq"] > prev_seq]
            await asyncio.to_thread(self._store, seq, head, covered, sigs, actor, prev_seq)
            return {"seq": seq, "head": head, "signatures": sigs, "nodes": report}

    async def _round(
        self, nodes: list[NodeInfo]
    ) -> tuple[int, str, list[dict[str, Any]], int, list[Answer]]:
        """Ask every node once at the current head: ``(seq, head, wire entries, previous
        stored checkpoint's seq, answers)``."""
        since = await asyncio.gather(*(self._checkpoint_seq(n) for n in nodes))
        prev_seq = await asyncio.to_thread(self._last_stored)
        frm = min([prev_seq, *(s for s in since if s is not None)])
        wires = await asyncio.to_thread(self._wires, frm)
        if not wires or wires[-1]["seq"] <= prev_seq:
            raise Problem(409, "nothing-to-checkpoint", "Nothing to checkpoint", "no new entries")
        seq, head = wires[-1]["seq"], wires[-1]["hash"]

        async def ask(n: NodeInfo, s: int | None) -> Answer:
            if s is None:
                return "unreachable", "GET /v1/status failed (its checkpoint_seq is unknown)", ""
            body = {"seq": seq, "head": head, "entries": [w for w in wires if w["seq"] > s]}
            return await self._ask(n, body)

        answers = await asyncio.gather(*(ask(n, s) for n, s in zip(nodes, since, strict=True)))
        return seq, head, wires, prev_seq, list(answers)

    async def _checkpoint_seq(self, node: NodeInfo) -> int | None:
        try:
            doc = await asyncio.wait_for(
                self.registry.caller.call(node, "GET", "/v1/status"), self.timeout
            )
        except (NodeFailure, TimeoutError):
            return None
        s = doc.get("checkpoint_seq", 0)
        return s if type(s) is int and s >= 0 else None

    def _last_stored(self) -> int:
        with self.db.session() as s:
            last = s.scalar(select(Checkpoint.seq).order_by(Checkpoint.seq.desc()).limit(1))
            return 0 if last is None else int(last)

    def _wires(self, after: int) -> list[dict[str, Any]]:
        with self.db.session() as s:
            rows = s.scalars(
                select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq)
            )
            return [audit.wire(r) for r in rows]

    def _store(
        self,
        seq: int,
        head: str,
        covered: list[dict[str, Any]],
        sigs: dict[str, str],
        actor: str,
        prev_seq: int,
    ) -> None:
        with self.db.session() as s:
            s.add(Checkpoint(seq=seq, head=head, digests=covered, signatures=sigs))
            audit.append(
                s,
                actor,
                "audit.checkpoint",
                f"checkpoint-{seq}",
                {"seq": seq, "head": head, "after": prev_seq, "signers": sorted(sigs)},
            )

    def _record_missing(self, actor: str, seq: int, missing: dict[str, str]) -> None:
        with self.db.session() as s:
            for node_id, detail in sorted(missing.items()):
                audit.append(
                    s, actor, MISSING_RELEASES, node_id, {"at_seq": seq, "detail": detail[:2000]}
                )

    async def _ask(self, node: NodeInfo, body: dict[str, Any]) -> Answer:
        """``(status, detail, signature or "")`` of one node."""
        try:
            doc = await asyncio.wait_for(
                self.registry.caller.call(node, "POST", PATH, body), self.timeout
            )
        except NodeFailure as e:
            if e.status in (404, 405):
                return "unsupported", f"the node has no {PATH} yet ({e.status})", ""
            return ("unreachable" if e.transport else "refused"), e.detail[:2000], ""
        except TimeoutError:
            return "unreachable", "timeout", ""
        sig = doc.get("signature")
        stmt = audit.checkpoint_statement(self.cluster, node.id, body["seq"], body["head"])
        if not isinstance(sig, str) or not crypto.verify_ed25519(node.sign_pk, stmt, sig):
            return "invalid", "the signature does not verify under the node's sign_pk", ""
        return "signed", None, sig
