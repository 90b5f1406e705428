"""Audit checkpoints: ask every node to co-sign the chain head, store what they signed.

A node (``POST /v1/audit/checkpoint``, NODE_API.md) gets ``{seq, head, entries}`` (the
entries since the last stored checkpoint, as :func:`api.audit.row_entry` gives them) and
answers ``{"signature": hex}``: its identity key's Ed25519 signature over
:func:`api.audit.checkpoint_statement` ``(cluster, node_id, seq, head)``. Each signature is
verified under the node's pinned ``sign_pk`` before it is stored; the checkpoint is stored
(with the digest of every entry it covers, and an ``audit.checkpoint`` entry) only when at
least one node signed it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from api import audit, crypto
from api.coordinator.registry import NodeRegistry
from api.db import AuditEntry, Checkpoint, Database
from api.nodes import NodeFailure, NodeInfo
from api.problems import Problem

PATH = "/v1/audit/checkpoint"


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
            prev_seq, prev_head, entries = await asyncio.to_thread(self._pending)
            if not entries:
                raise Problem(
                    409, "nothing-to-checkpoint", "Nothing to checkpoint", "no new entries"
                )
            digests = [audit.entry_digest(e) for e in entries]
            seq, head = entries[-1]["seq"], audit.fold(prev_head, digests)
            nodes = list(self.registry.nodes.values())
            if not nodes:
                raise Problem(409, "no-nodes", "No nodes", "no node is enrolled to co-sign")
            body = {"seq": seq, "head": head, "entries": entries}
            answers = await asyncio.gather(*(self._ask(n, body) for n in nodes))
            sigs = {n.id: sig for n, (_, _, sig) in zip(nodes, answers, strict=True) if sig}
            report = [
                {"node_id": n.id, "status": st, "detail": d}
                for n, (st, d, _) in zip(nodes, answers, strict=True)
            ]
            if not sigs:
                raise Problem(
                    502,
                    "checkpoint-unsigned",
                    "No node signed the checkpoint",
                    f"checkpoint at entry {seq} was not stored",
                    seq=seq,
                    head=head,
                    nodes=report,
                )
            await asyncio.to_thread(self._store, seq, head, digests, sigs, actor, prev_seq)
            return {"seq": seq, "head": head, "signatures": sigs, "nodes": report}

    def _pending(self) -> tuple[int, str, list[dict[str, Any]]]:
        with self.db.session() as s:
            last = s.execute(
                select(Checkpoint.seq, Checkpoint.head).order_by(Checkpoint.seq.desc()).limit(1)
            ).first()
            prev_seq, prev_head = (0, audit.GENESIS) if last is None else (last[0], last[1])
            rows = s.scalars(
                select(AuditEntry).where(AuditEntry.seq > prev_seq).order_by(AuditEntry.seq)
            )
            return prev_seq, prev_head, [audit.row_entry(r) for r in rows]

    def _store(
        self,
        seq: int,
        head: str,
        digests: list[str],
        sigs: dict[str, str],
        actor: str,
        prev_seq: int,
    ) -> None:
        with self.db.session() as s:
            s.add(Checkpoint(seq=seq, head=head, digests=digests, signatures=sigs))
            audit.append(
                s,
                actor,
                "audit.checkpoint",
                f"checkpoint-{seq}",
                {"seq": seq, "head": head, "after": prev_seq, "signers": sorted(sigs)},
            )

    async def _ask(self, node: NodeInfo, body: dict[str, Any]) -> tuple[str, str | None, str]:
        """``(status, detail, signature or "")`` of one node."""
        try:
            doc = await asyncio.wait_for(
                self.registry.caller.call(node, "POST", PATH, body), self.timeout
            )
        except NodeFailure as e:
            if e.status in (404, 405):
                return "unsupported", f"the node has no {PATH} yet ({e.status})", ""
            return ("unreachable" if e.transport else "refused"), e.detail[:300], ""
        except TimeoutError:
            return "unreachable", "timeout", ""
        sig = doc.get("signature")
        stmt = audit.checkpoint_statement(self.cluster, node.id, body["seq"], body["head"])
        if not isinstance(sig, str) or not crypto.verify_ed25519(node.sign_pk, stmt, sig):
            return "invalid", "the signature does not verify under the node's sign_pk", ""
        return "signed", None, sig
