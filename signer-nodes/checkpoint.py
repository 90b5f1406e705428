"""Audit checkpoints the node co-signs, and its release log as served to auditors.

``POST /v1/audit/checkpoint`` brings ``{seq, head, entries}``: the coordinator's audit-log
entries (:mod:`custody.auditchain`, minimal canonical form) since the last checkpoint this
node signed. The node signs ``{cluster, node_id, seq, head}`` with its identity key only if

1. the entries chain, link by link, from its last signed checkpoint (seq, head) to the
   new (seq, head) (each entry's hash recomputed from its fields), and
2. every entry of its own release log since that checkpoint has a signing entry among
   them with the same request digest, key id and signer set.

Otherwise it refuses (``checkpoint-unchained`` / ``checkpoint-missing-releases``, naming
the entry or the releases), so a signature released behind the coordinator's back (a
stolen coordinator key driving the node directly) is caught at the next checkpoint. The
last signed checkpoint is stored durably (``meta``). A release made while the coordinator
compiled its entries shows as missing too: retry with the current head; a release that
stays missing is the alarm.

Imports: :mod:`signer_nodes.anchor`, ``.errors``, ``.logs``, ``.store``;
:mod:`custody.auditchain` (the one definition the coordinator uses too).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import cbor2

from custody import auditchain as audit
from signer_nodes import logs
from signer_nodes.anchor import Anchor
from signer_nodes.errors import Kind, NodeError
from signer_nodes.store import NodeStore

__all__ = ["Checkpoints", "MAX_ENTRIES", "MAX_RELEASES_PAGE"]

MAX_ENTRIES = 5000
MAX_RELEASES_PAGE = 1000
META = "audit-checkpoint"


def release_wire(seq: int, entry: bytes, h: bytes) -> dict[str, Any]:
    """A release-log entry for the wire: its fields (bytes as hex) and its hash."""
    fields = cbor2.loads(entry)
    return {**_hexed(fields), "seq": seq, "hash": h.hex()}


def _hexed(value: Any) -> Any:
    """Byte strings as hex, at any depth (an entry's approvals hold digests)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _hexed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hexed(v) for v in value]
    return value


class Checkpoints:
    """This node's checkpoint signing and release-log view (see the module docstring)."""

    def __init__(
        self,
        store: NodeStore,
        anchor: Anchor,
        node_id: str,
        sign: Callable[[bytes], bytes],
    ) -> None:
        self.store = store
        self.anchor = anchor
        self.node_id = node_id
        self.sign = sign
        self._lock = threading.Lock()

    def last(self) -> dict[str, Any]:
        raw = self.store.get_meta(META)
        if raw is None:
            return {"seq": 0, "head": audit.ZERO.hex(), "release_seq": 0, "signature": None}
        return dict(json.loads(raw))

    def releases(self, after: int, limit: int) -> dict[str, Any]:
        rows = self.store.releases_after(after, min(limit, MAX_RELEASES_PAGE))
        seq, head = self.store.release_head()
        return {
            "node_id": self.node_id,
            "entries": [release_wire(r.seq, r.entry, r.hash) for r in rows],
            "head": {"seq": seq, "hash": head.hex()},
            "signature": self.sign(audit.releases_statement(self.node_id, seq, head)).hex(),
        }

    def checkpoint(self, seq: object, head: object, entries: object) -> dict[str, Any]:
        cluster = self.anchor.require().cluster_id
        if type(seq) is not int or seq < 0:
            raise NodeError(Kind.BAD_REQUEST, "seq must be a non-negative integer")
        if not isinstance(head, str) or len(head) != 64:
            raise NodeError(Kind.BAD_REQUEST, "head must be 64 hex digits")
        try:
            head_b = bytes.fromhex(head)
        except ValueError:
            raise NodeError(Kind.BAD_REQUEST, "head must be 64 hex digits") from None
        if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
            raise NodeError(Kind.BAD_REQUEST, f"entries must be a list of at most {MAX_ENTRIES}")
        with self._lock:
            last = self.last()
            if (seq, head) == (last["seq"], last["head"]) and last["signature"]:
                return self._answer(cluster, last)
            if seq <= last["seq"]:
                raise NodeError(
                    Kind.CHECKPOINT_UNCHAINED,
                    f"checkpoint seq {seq} does not extend the last one this node signed "
                    f"(seq {last['seq']}, head {last['head'][:16]}...)",
                )
            try:
                parsed = audit.chain(
                    [audit.parse_audit_entry(e) for e in entries],
                    last["seq"],
                    bytes.fromhex(last["head"]),
                )
            except audit.AuditFormatError as exc:
                raise NodeError(
                    Kind.CHECKPOINT_UNCHAINED,
                    f"entries do not chain from this node's last checkpoint (seq {last['seq']}):"
                    f" {exc}",
                ) from None
            if not parsed or parsed[-1].seq != seq or parsed[-1].hash != head_b:
                raise NodeError(
                    Kind.CHECKPOINT_UNCHAINED,
                    f"entries end at seq {parsed[-1].seq if parsed else last['seq']}, not at the "
                    f"checkpoint (seq {seq}, head {head[:16]}...)",
                )
            release_seq = self.store.release_head()[0]
            self._require_releases(last["release_seq"], parsed, upto=release_seq)
            sig = self.sign(audit.checkpoint_statement(cluster, self.node_id, seq, head_b))
            record = {"seq": seq, "head": head, "release_seq": release_seq, "signature": sig.hex()}
            self.store.set_meta(META, json.dumps(record))
        logs.event("audit.checkpoint", node_id=self.node_id, seq=seq, release_seq=release_seq)
        return self._answer(cluster, record)

    def _answer(self, cluster: str, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "cluster": cluster,
            "node_id": self.node_id,
            "seq": record["seq"],
            "head": record["head"],
            "signature": record["signature"],
        }

    def _require_releases(
        self, after: int, entries: Sequence[audit.AuditEntry], upto: int | None = None
    ) -> None:
        have = {
            (e.request_digest, e.key_id, tuple(sorted(e.signers or ())))
            for e in entries
            if e.request_digest is not None
        }
        missing = []
        cursor = after
        while True:
            rows = self.store.releases_after(cursor, MAX_RELEASES_PAGE)
            for r in rows:
                if upto is not None and r.seq > upto:
                    break
                f = cbor2.loads(r.entry)
                if (f["request_digest"], f["key_id"], tuple(sorted(f["signers"]))) not in have:
                    missing.append((r.seq, f))
            if len(rows) < MAX_RELEASES_PAGE or (upto is not None and rows[-1].seq >= upto):
                break
            cursor = rows[-1].seq
        if missing:
            logs.warn(
                "audit.missing_releases",
                node_id=self.node_id,
                releases=[s for s, _ in missing][:50],
            )
            named = ", ".join(
                f"release {s} (key {f['key_id']}, request {f['request_id']}, digest "
                f"{f['request_digest'].hex()[:16]}..., {f['item_id']})"
                for s, f in missing[:20]
            )
            raise NodeError(
                Kind.CHECKPOINT_MISSING_RELEASES,
                f"the audit log lacks {len(missing)} signature(s) this node released: {named}",
            )
