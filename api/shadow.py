"""Policy dry runs and shadow mode on the coordinator.

**Dry run** (:func:`dry_run`): a sign request is evaluated against the active governance
version, or a submitted document, with :func:`custody.policy_explain.dry_run`; nothing is
created, no node is called.

**Shadow mode**: an admin installs a *shadow* version (``PUT /v1/policy/shadow``); on every
live sign request the coordinator evaluates it beside the active version
(:func:`observe`, called once by the sign-request route right after the request row is
inserted) and records each disagreement (a different action, or a different approval
requirement) in the table ``policy_shadow_disagreements`` and as a structured log line
(logger ``api.shadow``, message ``policy shadow disagreement``).

A shadow is an **unsigned draft** of the next version: canonical CBOR that
:func:`custody.governance.decode` accepts, chained to the active version (same cluster,
version + 1, ``previous`` = the active digest), carrying **no officer signature**. A
signed successor is refused on purpose. A shadow must authorize nothing, in any form: a
document that officers signed is, for anyone holding it, the next version ready to install
(``PUT /v1/governance``), so asking officers to sign a policy "only to try it" would hand
every admin a standing authorization to activate it. An unsigned draft can never become
active (every node refuses it), so whatever an admin installs here can only produce
records. Trying a policy goes: shadow the draft, read the disagreements, then the officers
sign that same draft (its digest does not change with signatures) and it is installed.

The shadow's decisions are never used: :func:`observe` writes disagreements and logs, and
any failure in it is logged and swallowed, so shadow mode cannot change, delay beyond its
own evaluation, or fail a live request.

Velocity windows count the coordinator's own signed requests (:func:`history`), for the
dry run and for both sides of a shadow comparison alike. (Each node counts its own release
log when it decides; the coordinator's view is what it stored.)

Tables are declared here, on :class:`api.db.Base`, so ``Database.create_all`` makes them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from api import audit
from api.coordinator import Coordinator, KeyInfo
from api.db import Base, Database, Key, SignRequest, UTCDateTime, utcnow
from api.pagination import PageOf, paginate
from api.problems import Problem
from custody import governance as gov
from custody import policy as pol
from custody.approvals import request_intent
from custody.policy_explain import dry_run as explain_request
from custody.policy_explain import explanation_json
from custody.policy_file import describe_requirement
from custody.signing import SignRequestError

log = logging.getLogger("api.shadow")
MAX_HISTORY = 100_000  # signed requests read for one velocity computation, newest first


class PolicyShadow(Base):
    """The installed shadow version (at most one row, ``id`` 1)."""

    __tablename__ = "policy_shadow"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[str] = mapped_column(Text)  # base64 of the draft, as submitted
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    base_version: Mapped[int] = mapped_column(Integer)
    base_digest: Mapped[str] = mapped_column(String(64))
    installed_by: Mapped[str] = mapped_column(String(40))
    installed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ShadowDisagreement(Base):
    """A live request on which the shadow and the active version decided differently."""

    __tablename__ = "policy_shadow_disagreements"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(40), index=True)
    key_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    active: Mapped[dict[str, Any]] = mapped_column(JSON)
    shadow: Mapped[dict[str, Any]] = mapped_column(JSON)


@dataclass(frozen=True)
class ShadowState:
    body: gov.Governance
    document: str
    base_version: int
    base_digest: bytes
    installed_by: str
    installed_at: dt.datetime


def decode_document(data: str, field: str) -> gov.SignedGovernance:
    """A base64 governance document, strictly decoded; 422 problem naming ``field``."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(
            422, "invalid-governance", "Invalid governance document", "not base64", field=field
        ) from None
    try:
        return gov.decode(raw)
    except gov.GovernanceError as exc:
        raise Problem(
            422,
            "invalid-governance",
            "Invalid governance document",
            str(exc),
            field=field,
            kind=str(exc.kind),
        ) from None


def history(
    db: Database, policies: Sequence[pol.Policy], now: int, exclude: str = ""
) -> list[pol.Release]:
    """What the coordinator signed inside the longest velocity window of ``policies``, as
    release entries (empty when no rule has a velocity limit), but request ``exclude``."""
    window = max((v.window for p in policies for r in p.rules for v in r.velocity), default=0)
    if not window:
        return []
    since = dt.datetime.fromtimestamp(now - window, dt.UTC)
    q = (
        select(SignRequest.key_id, SignRequest.body, SignRequest.updated_at, Key.scheme)
        .join(Key, Key.id == SignRequest.key_id)
        .where(
            SignRequest.status == "signed",
            SignRequest.updated_at > since,
            SignRequest.id != exclude,
        )
        .order_by(SignRequest.seq.desc())
        .limit(MAX_HISTORY)
    )
    out: list[pol.Release] = []
    with db.session() as s:
        rows = s.execute(q).all()
    for key_id, body, at, scheme in rows:
        try:
            intent, _ = request_intent(scheme, body)
            facts = pol.facts_of(intent, key_id=key_id, initiator="")
        except (SignRequestError, pol.PolicyError):
            continue  # a kind that moves nothing, or one the policy cannot state
        if facts.asset is None:
            continue
        t = int(at.timestamp())
        out += [
            pol.Release(t, key_id, facts.asset, x.destination, x.amount) for x in facts.transfers
        ]
    return out


def _verdict(decision: pol.Decision, policy: pol.Policy) -> dict[str, Any]:
    req = decision.requirement
    return {
        "version": decision.policy_version,
        "digest": decision.governance_digest.hex(),
        "action": decision.action,
        "rule": decision.rule_id,
        "reason": str(decision.reason),
        "requirement": None if req is None else describe_requirement(req, policy),
    }


class Shadow:
    """The shadow version of one coordinator: kept in its database, cached in memory."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._loaded = False
        self._state: ShadowState | None = None

    # -- state --------------------------------------------------------------------------------
    def current(self) -> ShadowState | None:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._state = self._read()
                    self._loaded = True
        return self._state

    @property
    def loaded(self) -> bool:
        return self._loaded

    def cached(self) -> ShadowState | None:
        """The shadow as last read or installed (no database read)."""
        return self._state

    def _read(self) -> ShadowState | None:
        with self.db.session() as s:
            row = s.scalar(select(PolicyShadow).where(PolicyShadow.id == 1))
        if row is None:
            return None
        doc = gov.decode(base64.b64decode(row.document))
        return ShadowState(
            doc.body,
            row.document,
            row.base_version,
            bytes.fromhex(row.base_digest),
            row.installed_by,
            row.installed_at,
        )

    def install(self, document: str, active: gov.Governance | None, actor: str) -> ShadowState:
        """Verify ``document`` as a shadow of ``active`` (see the module docstring) and keep
        it, audited (``policy.shadow.install``), in place of any earlier shadow."""
        doc = decode_document(document, "document")
        if doc.signatures:
            signers = ", ".join(sig.officer_id for sig in doc.signatures)
            raise Problem(
                422,
                "shadow-signed",
                "A shadow is an unsigned draft",
                f"the document carries signatures of {signers}: a signed version can be "
                "installed as the next version by anyone holding it, "
                "so a shadow must carry none (officers sign the same draft once it is adopted)",
                field="document",
            )
        if active is None:
            raise Problem(
                409,
                "governance-missing",
                "No governance installed",
                "a shadow follows the active version; install a genesis first",
            )
        body = doc.body
        if body.cluster_id != active.cluster_id:
            raise Problem(
                409,
                "shadow-unchained",
                "Shadow does not follow the active version",
                f"the draft is for cluster {body.cluster_id}, not {active.cluster_id}",
            )
        if body.version != active.version + 1 or body.previous != active.digest:
            raise Problem(
                409,
                "shadow-unchained",
                "Shadow does not follow the active version",
                f"the draft is version {body.version} naming previous "
                f"{body.previous.hex()[:16]}...; the active version is {active.version} "
                f"({active.digest.hex()[:16]}...): a shadow is its next version",
            )
        now = utcnow()
        state = ShadowState(body, document, active.version, active.digest, actor, now)
        with self._lock, self.db.session() as s:
            s.execute(delete(PolicyShadow))
            s.add(
                PolicyShadow(
                    id=1,
                    document=document,
                    version=body.version,
                    digest=body.digest.hex(),
                    base_version=active.version,
                    base_digest=active.digest.hex(),
                    installed_by=actor,
                    installed_at=now,
                )
            )
            audit.append(
                s,
                actor,
                "policy.shadow.install",
                f"governance-v{body.version}",
                {
                    "digest": body.digest.hex(),
                    "base_version": active.version,
                    "base_digest": active.digest.hex(),
                },
            )
            self._state, self._loaded = state, True
        log.info(
            "policy shadow installed",
            extra={"shadow_version": body.version, "shadow_digest": body.digest.hex()},
        )
        return state

    def remove(self, actor: str) -> bool:
        """Remove the shadow (audited ``policy.shadow.remove``); False when none is installed."""
        with self._lock, self.db.session() as s:
            row = s.scalar(select(PolicyShadow).where(PolicyShadow.id == 1))
            if row is None:
                self._state, self._loaded = None, True
                return False
            s.delete(row)
            audit.append(
                s,
                actor,
                "policy.shadow.remove",
                f"governance-v{row.version}",
                {"digest": row.digest},
            )
            self._state, self._loaded = None, True
        log.info("policy shadow removed", extra={"shadow_digest": row.digest})
        return True

    def disagreements(self, limit: int, cursor: str | None) -> PageOf[ShadowDisagreement]:
        with self.db.session() as s:
            return paginate(
                s,
                ShadowDisagreement,
                select(ShadowDisagreement),
                ShadowDisagreement.seq,
                limit=limit,
                cursor=cursor,
            )

    # -- the live hook --------------------------------------------------------------------------
    def compare(
        self,
        active: gov.Governance,
        state: ShadowState,
        canonical: dict[str, Any],
        key: KeyInfo,
        initiator: str,
        now: int,
    ) -> dict[str, Any] | None:
        """The disagreement row for a live request, or None when both decide alike."""
        public_key = bytes.fromhex(key.public_key) if key.public_key else None
        intent, _ = request_intent(key.scheme, canonical, public_key=public_key)
        shadow = state.body
        releases = history(self.db, (active.policy, shadow.policy), now, str(canonical["id"]))
        args: dict[str, Any] = {
            "key_id": key.id,
            "initiator": initiator,
            "now": now,
            "history": releases,
        }
        a = pol.decide(active, intent, **args)
        b = pol.decide(shadow, intent, **args)
        if (a.action, a.requirement) == (b.action, b.requirement):
            return None
        return {
            "request_id": str(canonical["id"]),
            "key_id": key.id,
            "kind": str(canonical["kind"]),
            "at": dt.datetime.fromtimestamp(now, dt.UTC),
            "active": _verdict(a, active.policy),
            "shadow": _verdict(b, shadow.policy),
        }

    def record(self, row: dict[str, Any]) -> None:
        with self.db.session() as s:
            s.add(ShadowDisagreement(**row))


def shadow_of(app: Any) -> Shadow:
    """The app's :class:`Shadow` (made on first use, over the app's database)."""
    found: Shadow | None = getattr(app.state, "policy_shadow", None)
    if found is None:
        found = app.state.policy_shadow = Shadow(app.state.db)
    return found


async def observe(
    app: Any, canonical: dict[str, Any], key: KeyInfo, initiator: str, created: dt.datetime
) -> None:
    """Shadow mode's one hook into live sign requests: evaluate the shadow version beside
    the active one for the request just inserted (``canonical``, the body the nodes are
    sent) and record a disagreement. Never raises: a failure is logged, the live request
    goes on as if no shadow were installed."""
    try:
        shadow = shadow_of(app)
        state = shadow.cached() if shadow.loaded else await asyncio.to_thread(shadow.current)
        c: Coordinator = app.state.coordinator
        active = c.governance.current
        if state is None or active is None:
            return
        now = int(created.timestamp())
        row = await asyncio.to_thread(shadow.compare, active, state, canonical, key, initiator, now)
        if row is None:
            return
        await asyncio.to_thread(shadow.record, row)
        log.info(
            "policy shadow disagreement",
            extra={
                "request_id": row["request_id"],
                "key_id": row["key_id"],
                "active_version": row["active"]["version"],
                "active_action": row["active"]["action"],
                "active_rule": row["active"]["rule"],
                "shadow_version": row["shadow"]["version"],
                "shadow_action": row["shadow"]["action"],
                "shadow_rule": row["shadow"]["rule"],
            },
        )
    except Exception:  # noqa: BLE001 - shadow mode never fails a live request
        log.exception("policy shadow evaluation failed", extra={"request_id": canonical.get("id")})


def dry_run(
    db: Database,
    governance: gov.Governance,
    key: KeyInfo,
    request: dict[str, Any],
    *,
    initiator: str,
    now: int,
) -> dict[str, Any]:
    """The dry-run answer (``PolicyDryRunOut``'s fields but ``source``/``signed_by``)."""
    releases = history(db, (governance.policy,), now)
    try:
        expl = explain_request(
            governance,
            key.scheme,
            request,
            initiator=initiator,
            now=now,
            history=releases,
            public_key=bytes.fromhex(key.public_key) if key.public_key else None,
        )
    except SignRequestError as e:
        raise Problem(
            422, "invalid-sign-request", "Invalid sign request", str(e), field=e.field
        ) from None
    return explanation_json(expl)


__all__ = [
    "PolicyShadow",
    "Shadow",
    "ShadowDisagreement",
    "ShadowState",
    "decode_document",
    "dry_run",
    "history",
    "observe",
    "shadow_of",
]
