"""Session relay: drives :class:`mpc.relay.Relay` over HTTP for one multi-party session.

Starts the session on every participant (``POST /v1/sessions``), hands each party's
outgoing envelopes to the sans-IO router, delivers its per-recipient batches
(``POST /v1/sessions/{id}/envelopes``), polls parties still running, and bounds every call
and every silent stretch by ``round_timeout`` (docs/NODE_API.md, SessionState loop).
A malformed state, a reported failure or a routing violation raises
:class:`SessionFailed` blaming the party at fault.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from api.coordinator.registry import NodeRegistry
from api.coordinator.types import SessionFailed
from api.nodes import NodeInfo
from custody.domain import SESSION_STATUSES
from mpc.relay import Envelope, Relay, RelayError

_Call = tuple[str, str, dict[str, Any] | None]  # method, path, body


def _garbage(p: int, why: str) -> SessionFailed:
    return SessionFailed(
        f"party {p} sent a malformed session state: {why}", [(p, "garbage: " + why)]
    )


_Frozen = tuple[tuple[str, Any], ...] | str


def _frozen(e: dict[str, Any]) -> _Frozen:
    """A node's envelope object as the router's hashable payload (equal iff the objects
    are). Its fields are flat (strings, ints, null; ``_check_state`` checked the header):
    a sorted item tuple, which spares a batch's megabytes of hex a JSON encode and decode
    per hop (issue 13); anything nested falls back to canonical JSON."""
    items = tuple(sorted(e.items()))
    if all(isinstance(v, str | int | None) for _, v in items):
        return items
    return json.dumps(e, sort_keys=True)


def _thawed(payload: _Frozen) -> Any:
    return json.loads(payload) if isinstance(payload, str) else dict(payload)


class SessionRelay:
    """Runs sessions (DKG, presign) among nodes of the registry."""

    def __init__(self, registry: NodeRegistry, round_timeout: float) -> None:
        self.registry = registry
        self.timeout = round_timeout

    async def run(self, nodes: list[NodeInfo], body: dict[str, Any]) -> dict[int, Any]:
        """Start a session on ``nodes`` and relay envelopes until all are done.

        Returns each party's ``result``. Raises :class:`SessionFailed` with blame.
        """
        sid: str = body["session_id"]
        by_party = {n.party_id: n for n in nodes}
        parties = set(by_party)
        router: Relay[_Frozen] = Relay(sid, parties)

        states = await self._fan(
            sid, by_party, {p: ("POST", "/v1/sessions", body) for p in parties}
        )
        last_progress = time.monotonic()
        while True:
            for p, st in states.items():
                self._check_state(p, st, sid, parties)
                for e in st.get("envelopes") or []:
                    try:
                        router.submit(Envelope(sid, p, e.get("to"), _frozen(e)))
                    except RelayError:
                        raise _garbage(p, "envelope recipient") from None
                if st["status"] == "done" and p not in router.done:
                    router.mark_done(p)
            if router.finished:
                return {p: st.get("result") for p, st in states.items()}
            outbox = router.take()
            if outbox:
                deliver: dict[int, _Call] = {
                    q: (
                        "POST",
                        f"/v1/sessions/{sid}/envelopes",
                        {"envelopes": [_thawed(e.payload) for e in batch]},
                    )
                    for q, batch in outbox.items()
                }
                states.update(await self._fan(sid, by_party, deliver))
                last_progress = time.monotonic()
                continue
            if time.monotonic() - last_progress > self.timeout:
                waiting = sorted(
                    {
                        w
                        for st in states.values()
                        for w in (st.get("waiting_for") or [])
                        if w in parties
                    }
                )
                raise SessionFailed(
                    "round timed out",
                    [(w, "timeout") for w in waiting] or [(p, "timeout") for p in router.not_done],
                )
            await asyncio.sleep(0.01)
            poll: dict[int, _Call] = {
                p: ("GET", f"/v1/sessions/{sid}", None) for p in router.not_done
            }
            states.update(await self._fan(sid, by_party, poll))

    async def _fan(
        self, sid: str, by_party: Mapping[int, NodeInfo], reqs: Mapping[int, _Call]
    ) -> dict[int, Any]:
        """One call per party at once; any failure fails the session, blaming whom it names."""
        res = await asyncio.gather(
            *(
                asyncio.wait_for(self.registry.caller.call(by_party[p], *r), self.timeout)
                for p, r in reqs.items()
            ),
            return_exceptions=True,
        )
        out: dict[int, Any] = {}
        blame: list[tuple[int, str]] = []
        for p, r in zip(reqs, res, strict=True):
            failed = self.registry.failure_blame(p, r, timeout_marks_down=False)
            if failed is None:
                out[p] = r
            else:
                blame += failed
        if blame:
            raise SessionFailed("session " + sid[:16] + " failed", blame)
        return out

    @staticmethod
    def _check_state(p: int, st: Any, sid: str, parties: set[int]) -> None:
        """A party's SessionState is well formed, else blame it; a reported failure blames
        the culprits it names (or the reporter, when it names none of the participants)."""
        if not isinstance(st, dict) or st.get("status") not in SESSION_STATUSES:
            raise _garbage(p, "status")
        if st.get("session_id") not in (None, sid):
            raise _garbage(p, "session_id")
        if st["status"] == "failed":
            err = st.get("error") or {}
            culprits = err.get("culprits") if isinstance(err, dict) else None
            if not (
                isinstance(culprits, list)
                and culprits
                and all(type(c) is int and c in parties for c in culprits)
            ):
                culprits = [p]
            detail = err.get("detail", "") if isinstance(err, dict) else ""
            raise SessionFailed(
                f"party {p} reports failure: {detail}",
                [(c, f"reported by party {p}: {detail}") for c in culprits],
            )
        envs = st.get("envelopes") or []
        if not isinstance(envs, list):
            raise _garbage(p, "envelopes")
        for e in envs:
            if (
                not isinstance(e, dict)
                or e.get("from") != p
                or not isinstance(e.get("envelope"), str)
            ):
                raise _garbage(p, "envelope header")
            to = e.get("to")
            if to is not None and type(to) is not int:
                raise _garbage(p, "envelope recipient")
