"""Key ceremonies on an active key: proactive refresh, resharing and the OT re-setup of an
ECDSA key, commit when all done.

:meth:`Ceremonies.refresh` runs one ``refresh`` session (docs/NODE_API.md) among **every**
member of the key's committee through the :class:`SessionRelay`; :meth:`Ceremonies.reshare`
runs one ``reshare`` session among the healthy members of the key's committee (the dealers,
at least its threshold of them) and every member of the new committee (receivers that hold
no share yet take part too); :meth:`Ceremonies.ot_resetup` runs one ``ot-resetup`` session
among every member of an ECDSA key's committee (fresh base OTs for every pair, which also
re-enables pairs retired after a failed check). Each carries the officers' authorization
(:class:`custody.governance.CeremonyAuthorization`), which the coordinator checks against
its own governance copy and the request before it calls any node (a clear 403 early), and
which every node verifies again for itself (the coordinator's check decides nothing). Then:

1. checks that every party reports the same outcome (same public key as the key's, same
   new verifying shares, same share version) and that each party's done statement
   (:func:`custody.ceremonies.done_statement`) is signed by that party's identity key as
   enrolled (:func:`custody.ceremonies.verify_transcript`); a party that disagrees, or
   whose signature fails, is named and nothing is committed;
2. records the ceremony as ``committing`` with its transcript (outcome + every party's
   signature), durably, **before** any node switches;
3. sends ``POST /v1/keys/{id}/commit`` with the signatures to every node (each node checks
   them itself), and once every node answered ``committed``, stores the key's new verifying
   shares, drops what the pools held for it and records the ceremony ``done`` (audited).

A refresh that fails before step 2 leaves every node on its active share (nodes keep the
new one only as pending). A commit that does not reach every node (a node down, the
coordinator killed) leaves the ceremony ``committing``: :meth:`Ceremonies.resume` (``POST
/v1/ceremonies/{id}/resume``) sends the commits again; nodes that switched already answer
``committed`` (idempotent). Until then the old committee members that did not switch still
sign with the old share, and signing sets that mix versions fail naming the stale party.

A committed resharing also records the key's new threshold and committee (``keys.threshold``,
``keys.nodes``): the nodes take them from the authorization the officers signed, the
coordinator from the outcome every party signed, and departing members have deleted their
shares.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from sqlalchemy import select

from api import audit, crypto
from api.coordinator.keys import KeyBook
from api.coordinator.pools import Pools
from api.coordinator.registry import NodeRegistry
from api.coordinator.relay import SessionRelay
from api.coordinator.types import KeyInfo, SessionFailed, problem_doc
from api.db import Ceremony, Database, Key, utcnow
from api.problems import Problem
from custody import governance as gov
from custody.ceremonies import OUTCOME_FIELDS, verify_transcript
from custody.domain import SessionKind, new_id

log = logging.getLogger("api.coordinator")

__all__ = ["Ceremonies", "ceremony_out"]

#: the audit action of each committed ceremony kind
_AUDIT_ACTIONS = {
    "refresh": "key.refreshed",
    "reshare": "key.reshared",
    "ot-resetup": "key.ot_resetup",
}
RECOVER_TRIES = 30  # commits of interrupted ceremonies, at coordinator start
RECOVER_PAUSE = 1.0  # seconds between those tries


def _unretired(cer: dict[str, Any]) -> list[int]:
    """The parties of a resharing whose last commit or retirement notice failed: old
    holders leaving the committee that have not deleted their share yet."""
    last: dict[int, bool] = {}
    for e in cer.get("progress") or []:
        last[int(e["party_id"])] = bool(e["ok"])
    return sorted(p for p, ok in last.items() if not ok)


def ceremony_out(row: Ceremony) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "key_id": row.key_id,
        "status": row.status,
        "session_id": row.session_id,
        "share_version": row.share_version,
        "participants": row.participants,
        "transcript": row.transcript,
        "progress": row.progress or [],
        "error": row.error,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


class Ceremonies:
    """Runs and records key ceremonies (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        registry: NodeRegistry,
        relay: SessionRelay,
        keys: KeyBook,
        pools: Pools,
        timeout: float,
    ) -> None:
        self.db = db
        self.registry = registry
        self.relay = relay
        self.keys = keys
        self.pools = pools
        self.timeout = timeout
        self._locks: dict[str, asyncio.Lock] = {}

    # -- reading ---------------------------------------------------------------------------
    def get(self, ceremony_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            row = s.scalar(select(Ceremony).where(Ceremony.id == ceremony_id))
            if row is None:
                raise Problem(404, "not-found", "Not found", f"no ceremony {ceremony_id!r}")
            return ceremony_out(row)

    def of_key(self, key_id: str) -> dict[str, Any]:
        """``key_id``'s ceremonies (newest first) and its current share version: 1 after
        the DKG, one more for each committed ceremony (what an authorization names)."""
        self.keys.get(key_id)
        with self.db.session() as s:
            rows = list(
                s.scalars(
                    select(Ceremony).where(Ceremony.key_id == key_id).order_by(Ceremony.seq.desc())
                )
            )
            items = [ceremony_out(r) for r in rows]
        done = [int(c["share_version"]) for c in items if c["status"] == "done"]
        return {"key_id": key_id, "share_version": max(done, default=1), "items": items}

    # -- authorization -----------------------------------------------------------------------
    def check_authorization(
        self,
        authorization: str | None,
        kind: str,
        key: KeyInfo,
        committee: list[str],
        threshold: int,
    ) -> gov.CeremonyAuthorization:
        """The officers' authorization as the coordinator's governance copy sees it, and
        that it is for this ceremony (nodes check it again; this only fails early)."""
        if not authorization:
            raise Problem(
                403,
                gov.CeremonyAuthErrorKind.MISSING.value,
                "Ceremony not authorized",
                f"a {kind} needs an authorization signed by the officer quorum",
            )
        cur = self.registry.governance.current
        if cur is None:
            raise Problem(503, "governance-missing", "No governance", "no governance installed")
        try:
            a = gov.verify_ceremony_authorization(
                bytes.fromhex(authorization), cur, int(time.time())
            )
        except ValueError:
            raise Problem(
                403,
                gov.CeremonyAuthErrorKind.MALFORMED.value,
                "Ceremony not authorized",
                "authorization: not hex",
            ) from None
        except gov.CeremonyAuthError as e:
            raise Problem(403, e.kind.value, "Ceremony not authorized", e.detail) from None
        t_old = key.threshold
        for field, asked, signed in (
            ("kind", kind, a.kind),
            ("key_id", key.id, a.key_id),
            ("scheme", key.scheme, a.scheme),
            ("public_key", key.public_key, a.public_key.hex()),
            ("committee", sorted(committee), list(a.committee)),
            ("threshold", threshold, a.threshold),
            ("previous_threshold", t_old, a.previous_threshold),
        ):
            if asked != signed:
                raise Problem(
                    403,
                    gov.CeremonyAuthErrorKind.MISMATCH.value,
                    "Ceremony not authorized",
                    f"{field}: the request is for {asked!r}, the officers authorized {signed!r}",
                )
        return a

    # -- refresh and reshare -----------------------------------------------------------------
    async def refresh(
        self, key_id: str, principal: str, authorization: str | None = None
    ) -> dict[str, Any]:
        """Refresh ``key_id``'s shares on every committee member; the ceremony record."""
        key = self.keys.get(key_id)
        self.check_authorization(authorization, "refresh", key, key.nodes, key.threshold)
        nodes = [self.registry.nodes[n] for n in key.nodes]
        down = [n.id for n in nodes if not n.eligible]
        if down:
            raise Problem(
                503,
                "nodes-unavailable",
                "Nodes unavailable",
                f"a refresh needs every share holder; not healthy: {down}",
            )
        kind: SessionKind = "refresh"
        body: dict[str, Any] = {
            "session_id": secrets.token_hex(32),
            "kind": kind,
            "key_id": key_id,
            "scheme": key.scheme,
            "threshold": key.threshold,
            "participants": sorted(n.party_id for n in nodes),
            "authorization": authorization,
        }
        return await self._run(key, body, nodes, principal, key.nodes)

    async def ot_resetup(
        self, key_id: str, principal: str, authorization: str | None = None
    ) -> dict[str, Any]:
        """Set up the base OTs of every pair of ``key_id`` (an ECDSA key) again: an
        ``ot-resetup`` session among every committee member (the refresh of the Shamir part,
        then a fresh OT setup: :class:`mpc.dkls23.resetup.OtResetupChain`), committed like a
        refresh; each node installs its result with ``signer_nodes.ecdsa.resetup_pairs``,
        which re-enables the pairs retired after a failed check."""
        key = self.keys.get(key_id)
        if key.scheme != "ecdsa-secp256k1":
            raise Problem(
                422,
                "validation",
                "Invalid request",
                f"an OT re-setup is for ECDSA (DKLs23) keys; key {key_id!r} is {key.scheme}",
            )
        self.check_authorization(authorization, "ot-resetup", key, key.nodes, key.threshold)
        nodes = [self.registry.nodes[n] for n in key.nodes]
        down = [n.id for n in nodes if not n.eligible]
        if down:
            raise Problem(
                503,
                "nodes-unavailable",
                "Nodes unavailable",
                f"an OT re-setup needs every share holder; not healthy: {down}",
            )
        body: dict[str, Any] = {
            "session_id": secrets.token_hex(32),
            "kind": "ot-resetup",
            "key_id": key_id,
            "scheme": key.scheme,
            "threshold": key.threshold,
            "participants": sorted(n.party_id for n in nodes),
            "authorization": authorization,
        }
        return await self._run(key, body, nodes, principal, key.nodes)

    async def reshare(
        self,
        key_id: str,
        principal: str,
        threshold: int,
        committee: list[str],
        authorization: str | None,
    ) -> dict[str, Any]:
        """Reshare ``key_id`` to ``committee`` (node ids) with ``threshold``; the record."""
        key = self.keys.get(key_id)
        unknown = sorted(set(committee) - set(self.registry.nodes))
        if unknown:
            raise Problem(
                422,
                "unknown-node",
                "Unknown node",
                f"not enrolled (join the roster through governance first): {unknown}",
            )
        if len(set(committee)) != len(committee):
            raise Problem(422, "validation", "Invalid request", "nodes: node ids repeat")
        self.check_authorization(authorization, "reshare", key, committee, threshold)
        new = [self.registry.nodes[n] for n in sorted(committee)]
        down = [n.id for n in new if not n.eligible]
        if down:
            raise Problem(
                503,
                "nodes-unavailable",
                "Nodes unavailable",
                f"every member of the new committee takes part; not healthy: {down}",
            )
        dealers = [
            n for nid in key.nodes if (n := self.registry.nodes.get(nid)) is not None and n.eligible
        ]
        if len(dealers) < key.threshold:
            raise Problem(
                503,
                "nodes-unavailable",
                "Nodes unavailable",
                f"a resharing needs {key.threshold} healthy holders of the key to deal; "
                f"healthy: {sorted(n.id for n in dealers)}",
            )
        by_party = {n.party_id: n for n in [*dealers, *new]}
        kind: SessionKind = "reshare"
        body: dict[str, Any] = {
            "session_id": secrets.token_hex(32),
            "kind": kind,
            "key_id": key_id,
            "scheme": key.scheme,
            "threshold": threshold,
            "participants": sorted(by_party),
            "old_verifying_shares": key.verifying_shares,
            "authorization": authorization,
        }
        if key.network is not None:
            body["network"] = key.network
        return await self._run(key, body, list(by_party.values()), principal, sorted(committee))

    async def _run(
        self,
        key: KeyInfo,
        body: dict[str, Any],
        nodes: list[Any],
        principal: str,
        committee: list[str],
    ) -> dict[str, Any]:
        key_id = key.id
        what = {"refresh": "Refresh", "reshare": "Resharing", "ot-resetup": "OT re-setup"}[
            body["kind"]
        ]
        lock = self._locks.setdefault(key_id, asyncio.Lock())
        if lock.locked():
            raise Problem(
                409, "ceremony-running", "Ceremony running", f"key {key_id!r} has one running"
            )
        async with lock:
            if busy := await asyncio.to_thread(self._unfinished, key_id):
                raise Problem(
                    409,
                    "ceremony-unfinished",
                    "Ceremony unfinished",
                    f"ceremony {busy} of key {key_id!r} is committing: resume it first",
                    ceremony_id=busy,
                )
            cid = new_id("cer")
            await asyncio.to_thread(self._create, cid, key, body, principal)
            try:
                results = await self.relay.run(nodes, body)
                outcome, shares, sigs = self._agree(key, body, results)
            except SessionFailed as e:
                error = problem_doc(
                    "ceremony-failed",
                    f"{what} failed",
                    e.detail,
                    culprits=sorted({c for c, _ in e.blame}),
                    blamed=[self.registry.blame_entry(c, r) for c, r in e.blame],
                )
                await asyncio.to_thread(self._fail, cid, error)
                return await asyncio.to_thread(self.get, cid)
            except Exception as e:  # never leave a ceremony running forever
                log.exception("ceremony crashed", extra={"key_id": key_id})
                error = problem_doc(
                    "ceremony-failed", f"{what} failed", type(e).__name__, status=500
                )
                await asyncio.to_thread(self._fail, cid, error)
                return await asyncio.to_thread(self.get, cid)
            transcript = {
                "outcome": outcome,
                "signatures": sigs,
                "verifying_shares": shares,
                "committee": committee,
                "threshold": body["threshold"],
                "authorization": body["authorization"],
                "previous_committee": list(key.nodes),
            }
            await asyncio.to_thread(self._committing, cid, outcome["share_version"], transcript)
            await self._commit_all(cid)
            return await asyncio.to_thread(self.get, cid)

    async def resume(self, ceremony_id: str) -> dict[str, Any]:
        """Send the commits of a ``committing`` ceremony again (see the module docstring),
        or, for a ``done`` resharing, the commits and retirement notices that did not reach
        the old holders leaving the committee."""
        cer = await asyncio.to_thread(self.get, ceremony_id)
        if cer["status"] == "done" and _unretired(cer):
            async with self._locks.setdefault(cer["key_id"], asyncio.Lock()):
                await self._commit_all(ceremony_id)
            return await asyncio.to_thread(self.get, ceremony_id)
        if cer["status"] != "committing":
            raise Problem(
                409, "ceremony-not-committing", "Nothing to resume", f"ceremony is {cer['status']}"
            )
        async with self._locks.setdefault(cer["key_id"], asyncio.Lock()):
            await self._commit_all(ceremony_id)
        return await asyncio.to_thread(self.get, ceremony_id)

    async def recover(self) -> None:
        """At coordinator start: a ceremony left ``running`` by a restart failed (the nodes'
        sessions lived in their memory; their active shares are untouched); one left
        ``committing`` is resumed (rolled forward: every node already signed done)."""
        running, committing = await asyncio.to_thread(self._interrupted)
        for cid in running:
            error = problem_doc(
                "ceremony-failed",
                "Ceremony interrupted",
                "the coordinator restarted before every party reported done; no share changed",
            )
            await asyncio.to_thread(self._fail, cid, error)
        for _ in range(RECOVER_TRIES):  # nodes may not answer yet right after a start
            left = []
            for cid in committing:
                try:
                    if (await self.resume(cid))["status"] == "committing":
                        left.append(cid)
                except Exception:  # `custody ceremony resume` later
                    log.exception("ceremony resume failed", extra={"ceremony_id": cid})
            if not left:
                return
            committing = left
            await asyncio.sleep(RECOVER_PAUSE)

    # -- steps -------------------------------------------------------------------------------
    def _agree(
        self, key: KeyInfo, body: dict[str, Any], results: dict[int, Any]
    ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
        """One outcome from every party, the key's public key, each party's signature."""
        parsed: dict[int, tuple[dict[str, Any], dict[str, str]]] = {}
        sigs: dict[str, str] = {}
        for p, r in results.items():
            try:
                outcome = {f: r["outcome"][f] for f in OUTCOME_FIELDS}
                vs = {str(k): str(v) for k, v in dict(r["verifying_shares"]).items()}
                crypto.check_public_key(key.scheme, str(r["public_key"]), vs, body["threshold"])
                sigs[str(p)] = str(r["signature"])
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise SessionFailed(
                    f"party {p} gave a malformed refresh result", [(p, f"garbage: {e}")]
                ) from None
            if (
                outcome["public_key"] != key.public_key
                or r["public_key"] != key.public_key
                or outcome["session_id"] != body["session_id"]
                or outcome["key_id"] != key.id
                or outcome["participants"] != body["participants"]
                or outcome["threshold"] != body["threshold"]
                or outcome["ceremony"] != body["kind"]
            ):
                raise SessionFailed(
                    f"party {p} reports a refresh outcome for another key or ceremony",
                    [(p, "wrong refresh outcome")],
                )
            parsed[p] = (outcome, vs)
        groups: dict[str, list[int]] = {}
        for p, (o, vs) in parsed.items():
            groups.setdefault(repr((sorted(o.items()), sorted(vs.items()))), []).append(p)
        if len(groups) != 1:
            ordered = sorted(groups.values(), key=len)
            minority = [p for g in ordered[:-1] for p in g]
            raise SessionFailed(
                "parties disagree on the refresh outcome",
                [(p, "inconsistent refresh outcome") for p in minority],
            )
        outcome, vs = next(iter(parsed.values()))
        pks = {
            p: bytes.fromhex(n.sign_pk)
            for p in body["participants"]
            if (n := self.registry.by_party(p)) is not None
        }
        bad = verify_transcript(outcome, sigs, pks)
        if bad:
            raise SessionFailed(
                f"parties {bad} did not sign the refresh outcome with their identity key",
                [(p, "bad done-statement signature") for p in bad],
            )
        return outcome, vs, sigs

    async def _commit_all(self, cid: str) -> None:
        """Send the commits (see the module docstring). The ceremony is ``done`` once every
        member of the committee after it has switched. A resharing's old holders that leave
        the committee only delete their share, so they do not hold it up: a departing dealer
        that died after its done statement gets its commit again from ``resume``, and a
        holder that did not deal (down, or not needed) is told to retire its share with the
        transcript (the outcome every participant signed and the officers' authorization),
        which it verifies itself (``POST /v1/keys/{id}/commit`` with ``retire``)."""
        cer = await asyncio.to_thread(self.get, cid)
        key_id = cer["key_id"]
        tr = cer["transcript"]
        body = {"session_id": cer["session_id"], "signatures": tr["signatures"]}
        parties = list(cer["participants"])
        members = set(parties)
        retire_ids: list[str] = []
        if cer["kind"] == "reshare":
            committee = set(tr["committee"])
            members = {n.party_id for nid in committee if (n := self.registry.nodes.get(nid))}
            retire_ids = [
                nid
                for nid in tr.get("previous_committee") or []
                if nid not in committee
                and (n := self.registry.nodes.get(nid)) is not None
                and n.party_id not in parties
            ]
        calls: list[tuple[Any, str, dict[str, Any]]] = [
            (n, "commit", body) for p in parties if (n := self.registry.by_party(p)) is not None
        ]
        notice = {
            **body,
            "retire": {"outcome": tr["outcome"], "authorization": tr["authorization"]},
        }
        calls += [(self.registry.nodes[nid], "retire", notice) for nid in retire_ids]
        if cer["status"] == "done":  # only what did not reach a departing holder yet
            unretired = set(_unretired(cer))
            calls = [c for c in calls if c[0].party_id in unretired]
        res = await asyncio.gather(
            *(
                asyncio.wait_for(
                    self.registry.caller.call(n, "POST", f"/v1/keys/{key_id}/commit", b),
                    self.timeout,
                )
                for n, _, b in calls
            ),
            return_exceptions=True,
        )
        progress = []
        pending = []
        for (n, step, _), r in zip(calls, res, strict=True):
            ok = isinstance(r, dict) and r.get("status") in ("committed", "retired")
            progress.append(
                {
                    "party_id": n.party_id,
                    "node_id": n.id,
                    "step": step,
                    "ok": ok,
                    **({} if ok else {"detail": f"{type(r).__name__}: {r}"[:300]}),
                }
            )
            if not ok and n.party_id in members:
                pending.append(n.party_id)
        await asyncio.to_thread(self._progress, cid, progress)
        if pending:
            log.warning("ceremony commit incomplete", extra={"key_id": key_id, "parties": pending})
            return
        if cer["status"] == "done":
            return
        await asyncio.to_thread(self._done, cid)
        self.keys.forget(key_id)
        self.pools.forget_key(key_id)
        if left := [e["node_id"] for e in progress if not e["ok"]]:
            log.warning(
                "ceremony done; old holders not told to retire yet (resume later)",
                extra={"key_id": key_id, "nodes": left},
            )

    # -- records ---------------------------------------------------------------------------
    def _interrupted(self) -> tuple[list[str], list[str]]:
        with self.db.session() as s:
            rows = s.execute(
                select(Ceremony.id, Ceremony.status).where(
                    Ceremony.status.in_(("running", "committing"))
                )
            ).all()
        return [r.id for r in rows if r.status == "running"], [
            r.id for r in rows if r.status == "committing"
        ]

    def _unfinished(self, key_id: str) -> str | None:
        with self.db.session() as s:
            return s.scalar(
                select(Ceremony.id).where(
                    Ceremony.key_id == key_id, Ceremony.status == "committing"
                )
            )

    def _create(self, cid: str, key: KeyInfo, body: dict[str, Any], principal: str) -> None:
        with self.db.session() as s:
            s.add(
                Ceremony(
                    id=cid,
                    kind=body["kind"],
                    key_id=key.id,
                    status="running",
                    session_id=body["session_id"],
                    participants=body["participants"],
                    created_by=principal,
                )
            )
            audit.append(
                s,
                principal,
                "ceremony.started",
                key.id,
                {"ceremony_id": cid, "kind": body["kind"], "participants": body["participants"]},
            )
            s.commit()

    def _fail(self, cid: str, error: dict[str, Any]) -> None:
        with self.db.session() as s:
            row = s.scalar(select(Ceremony).where(Ceremony.id == cid))
            assert row is not None
            row.status, row.error, row.updated_at = "failed", error, utcnow()
            audit.append(
                s,
                "coordinator",
                "ceremony.failed",
                row.key_id,
                {"ceremony_id": cid, "error": error},
            )
            s.commit()

    def _committing(self, cid: str, version: int, transcript: dict[str, Any]) -> None:
        with self.db.session() as s:
            row = s.scalar(select(Ceremony).where(Ceremony.id == cid))
            assert row is not None
            row.status, row.share_version, row.transcript = "committing", version, transcript
            row.updated_at = utcnow()
            s.commit()

    def _progress(self, cid: str, progress: list[dict[str, Any]]) -> None:
        with self.db.session() as s:
            row = s.scalar(select(Ceremony).where(Ceremony.id == cid))
            assert row is not None
            row.progress = [*(row.progress or []), *progress]
            row.updated_at = utcnow()
            s.commit()

    def _done(self, cid: str) -> None:
        with self.db.session() as s:
            row = s.scalar(select(Ceremony).where(Ceremony.id == cid))
            assert row is not None and row.transcript is not None
            key = s.scalar(select(Key).where(Key.id == row.key_id))
            assert key is not None
            tr = row.transcript
            key.verifying_shares = tr["verifying_shares"]
            detail: dict[str, Any] = {}
            if row.kind == "reshare":
                detail = {
                    "threshold": [key.threshold, tr["threshold"]],
                    "nodes": [list(key.nodes), tr["committee"]],
                }
                key.threshold, key.nodes = int(tr["threshold"]), list(tr["committee"])
            key.updated_at = utcnow()
            row.status, row.updated_at = "done", utcnow()
            audit.append(
                s,
                "coordinator",
                _AUDIT_ACTIONS[row.kind],
                row.key_id,
                {
                    "ceremony_id": cid,
                    "share_version": row.share_version,
                    "public_key": key.public_key,
                    "participants": row.participants,
                    **detail,
                },
            )
            s.commit()
