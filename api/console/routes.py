"""The treasury console's routes, under ``/console`` (issue 15; docs/CONSOLE.md).

Pages (GET, server-rendered jinja2; htmx refreshes the queue): ``/console`` (sign in),
``/console/register``, ``/console/queue``, ``/console/requests/{id}``, ``/console/history``,
``/console/keys``. JSON endpoints the console's own script calls (POST, each with the
session's CSRF token in ``X-CSRF-Token``):

- ``/console/register/options`` and ``/verify``: WebAuthn registration (W3C WebAuthn L3
  section 7.1, py_webauthn ``generate_registration_options`` /
  ``verify_registration_response``). The approver proves who they are once with their
  approver API token; the new credential is recorded as **pending governance**: it counts
  for nothing until the officer quorum signs a governance version that puts it in an
  approver group (``custody policy`` with the entry the console shows).
- ``/console/login/options`` and ``/verify``: sign-in with a passkey of an approver in the
  active governance (or pending), user verification required; a new session id.
- ``/console/requests/{id}/challenge`` then ``/decide``: the console builds the request's
  :class:`custody.approvals.ApprovalStatement` (decoded here from the request body the nodes
  get), keeps it in the session and asks the authenticator for an assertion whose challenge
  is SHA-256 of it (:func:`custody.passkeys.challenge_for`); ``decide`` wraps that assertion
  into a :class:`custody.approvals.PasskeyApproval` and hands it to the same approval desk
  as ``POST /v1/sign-requests/{id}/approvals``. No approval is possible by session alone:
  every decision takes a fresh assertion over that request's statement, and every node
  verifies it itself.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qs

import webauthn
from eth_utils.crypto import keccak
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, options_to_json
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidRegistrationResponse,
)
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from api import logs
from api.auth import _authenticate  # the bearer check the API runs, for registration
from api.console.registrations import Registrations
from api.console.sessions import COOKIE, Session, Sessions, csrf_ok
from api.console.views import Added, AddedTimes, show
from api.coordinator import Coordinator
from api.db import AuditEntry, Webhook, WebhookDelivery, WebhookMessage
from api.problems import Problem, problem_response
from api.serializers import addresses, sign_out
from api.shadow import dry_run
from custody import approvals as ap
from custody import governance as gov
from custody import passkeys as pk
from custody import policy as pol
from custody import policy_file as pf
from custody import problem_types
from custody.policy_explain import explanation_lines
from custody.signing import SignRequestError

__all__ = ["router", "ConsoleError", "problem_handler", "STATEMENT_TTL"]

STATEMENT_TTL: Final = 600  # seconds an approval made in the console counts
CEREMONY_TTL: Final = 300  # seconds a WebAuthn challenge stays usable
MAX_JSON: Final = 16 * 1024

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


# -- plumbing -------------------------------------------------------------------------------


class ConsoleError(Problem):
    """An error of the console: an RFC 9457 problem whose type, title and status are the
    catalogue's (:mod:`custody.problem_types`, ``console-*`` and a few shared slugs).
    :func:`problem_handler` renders it: ``error.html`` for a browser page, else the
    ``application/problem+json`` document :mod:`api.problems` makes (what the console's
    script reads)."""

    def __init__(self, status: int, slug: str, detail: str) -> None:
        entry = problem_types.lookup(slug)
        if entry is None or entry.status != status:
            raise AssertionError(f"console problem {slug!r} ({status}) is not catalogued")
        super().__init__(status, slug, entry.title, detail)


def wants_html(request: Request) -> bool:
    """A browser navigating to a page (``Accept`` names ``text/html``), not a script."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept.lower()


async def problem_handler(request: Request, exc: Exception) -> Response:
    """The one handler of :class:`ConsoleError` (installed by :func:`api.console.install`)."""
    assert isinstance(exc, ConsoleError)
    if wants_html(request):
        s, new = await _session(request)
        return _page(
            request, "error.html", s, new, status=exc.status, title=exc.title, problem=exc,
            type=exc.document()["type"],
        )  # fmt: skip
    return problem_response(exc, request.url.path)


def _sessions(request: Request) -> Sessions:
    s: Sessions | None = getattr(request.app.state, "console_sessions", None)
    if s is None:
        s = request.app.state.console_sessions = Sessions(request.app.state.db)
    return s


def _registrations(request: Request) -> Registrations:
    r: Registrations | None = getattr(request.app.state, "console_registrations", None)
    if r is None:
        settings = request.app.state.settings
        r = request.app.state.console_registrations = Registrations(
            Path(settings.data_dir) / "console-passkeys.json"
        )
    return r


def _coordinator(request: Request) -> Coordinator:
    return request.app.state.coordinator  # type: ignore[no-any-return]


async def _session(request: Request) -> tuple[Session, bool]:
    """The visitor's live session, or a new anonymous one (True: set the cookie). The
    store is the database: its calls run in a worker thread, off the event loop."""
    sessions = _sessions(request)
    s = await asyncio.to_thread(sessions.get, request.cookies.get(COOKIE))
    if s is None:
        return await asyncio.to_thread(sessions.new), True
    return s, False


def _set_cookie(resp: Response, s: Session, sessions: Sessions) -> None:
    resp.set_cookie(
        COOKIE,
        s.sid,
        max_age=int(sessions.lifetime),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def rp_id(request: Request) -> str:
    """The WebAuthn RP id: ``CUSTODY_CONSOLE_RP_ID`` (default: ``localhost``)."""
    return str(
        getattr(request.app.state, "console_rp_id", None)
        or request.app.state.settings.console_rp_id
    )


def origins(request: Request) -> list[str]:
    """The origins the console accepts ceremonies from: ``CUSTODY_CONSOLE_ORIGINS``
    (comma-separated), else the origin this request came to when its host is the RP id
    (development on http://localhost:PORT)."""
    configured = request.app.state.settings.console_origins
    if configured:
        return [o.strip() for o in configured.split(",") if o.strip()]
    host = request.headers.get("host", "")
    if host.split(":", 1)[0] != rp_id(request):
        return []
    return [f"{request.url.scheme}://{host}"]


async def _json(request: Request, s: Session) -> dict[str, Any]:
    """A state-changing call: the CSRF token, then a small JSON object."""
    if not csrf_ok(s, request.headers.get("x-csrf-token")):
        raise ConsoleError(403, "console-csrf", "missing or wrong CSRF token (reload the page)")
    raw = await request.body()
    if len(raw) > MAX_JSON:
        raise ConsoleError(413, "too-large", f"body over {MAX_JSON} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise ConsoleError(400, "console-bad-json", "body: not JSON") from None
    if not isinstance(body, dict):
        raise ConsoleError(400, "console-bad-json", "body: a JSON object")
    return body


def _page(
    request: Request, name: str, s: Session, new: bool, status: int = 200, **ctx: Any
) -> HTMLResponse:
    resp = templates.TemplateResponse(
        request, name, {"session": s, "csrf": s.csrf, **ctx}, status_code=status
    )
    if new:
        _set_cookie(resp, s, _sessions(request))
    return resp


async def _need_sign_in(request: Request) -> tuple[Session, bool] | RedirectResponse:
    s, new = await _session(request)
    if not s.signed_in:
        resp = RedirectResponse("/console", status_code=303)
        if new:
            _set_cookie(resp, s, _sessions(request))
        return resp
    return s, new


def _governance(request: Request) -> gov.Governance | None:
    return _coordinator(request).governance.current


def _passkey_of(request: Request, credential_id: bytes) -> tuple[str, pk.PasskeyCredential, bool]:
    """The approver holding ``credential_id`` and its credential: in the active governance
    (True) or only registered, pending governance (False)."""
    g = _governance(request)
    if g is not None:
        for group in g.policy.approver_groups:
            for a in group.approvers:
                if a.passkey is not None and a.passkey.credential_id == credential_id:
                    return a.approver_id, a.passkey, True
    reg = _registrations(request).by_credential(credential_id)
    if reg is None:
        raise ConsoleError(403, "console-unknown-passkey", "this passkey is not registered")
    return reg.approver_id, reg.credential, False


def _assertion(cred: Mapping[str, Any]) -> pk.PasskeyAssertion:
    """The browser's ``PublicKeyCredential.toJSON()`` of an assertion, as bytes."""
    try:
        r = cred["response"]
        return pk.PasskeyAssertion(
            base64url_to_bytes(str(cred["rawId"])),
            base64url_to_bytes(str(r["authenticatorData"])),
            base64url_to_bytes(str(r["clientDataJSON"])),
            base64url_to_bytes(str(r["signature"])),
        )
    except (KeyError, TypeError, ValueError):
        raise ConsoleError(
            400, "console-bad-credential", "credential: not a WebAuthn assertion"
        ) from None


async def _ceremony(request: Request, s: Session, kind: str) -> dict[str, Any]:
    """The ceremony ``kind`` in progress, taken once (a second take finds none)."""
    c = await asyncio.to_thread(_sessions(request).take_ceremony, s, kind)
    if c is None or time.time() > c["until"]:
        raise ConsoleError(400, "console-no-ceremony", f"no {kind} in progress (start again)")
    return c


# -- pages ----------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def sign_in_page(request: Request) -> Response:
    s, new = await _session(request)
    if s.signed_in:
        return RedirectResponse("/console/queue", status_code=303)
    return _page(request, "login.html", s, new, title="Sign in")


@router.get("/register", response_class=HTMLResponse)
async def register_page(request: Request) -> Response:
    s, new = await _session(request)
    return _page(request, "register.html", s, new, title="Register a passkey")


# -- registration ---------------------------------------------------------------------------


@router.post("/register/options")
async def register_options(request: Request) -> Response:
    s, _ = await _session(request)
    body = await _json(request, s)
    token = body.get("token")
    if not isinstance(token, str) or not token:
        raise ConsoleError(400, "console-token-missing", "token: your approver API token")

    try:
        p = _authenticate(request, HTTPAuthorizationCredentials(scheme="Bearer", credentials=token))
    except Problem:
        raise ConsoleError(401, "console-token-refused", "unknown or revoked token") from None
    if p.role != "approver":
        raise ConsoleError(403, "console-not-approver", f"a {p.role} token cannot register")
    existing = [
        PublicKeyCredentialDescriptor(id=r.credential.credential_id)
        for r in _registrations(request).of(p.principal_id)
    ]
    options = webauthn.generate_registration_options(
        rp_id=rp_id(request),
        rp_name="TP Wallet Custody console",
        user_id=p.principal_id.encode(),
        user_name=p.principal_id,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        supported_pub_key_algs=[
            COSEAlgorithmIdentifier.ECDSA_SHA_256,
            COSEAlgorithmIdentifier.EDDSA,
        ],
        exclude_credentials=existing,
    )
    s.ceremony["register"] = {
        "challenge": options.challenge,
        "approver_id": p.principal_id,
        "until": time.time() + CEREMONY_TTL,
    }
    await asyncio.to_thread(_sessions(request).save, s)
    return Response(options_to_json(options), media_type="application/json")


@router.post("/register/verify")
async def register_verify(request: Request) -> Response:
    s, _ = await _session(request)
    body = await _json(request, s)
    c = await _ceremony(request, s, "register")
    allowed = origins(request)
    try:
        v = webauthn.verify_registration_response(
            credential=body,
            expected_challenge=c["challenge"],
            expected_rp_id=rp_id(request),
            expected_origin=allowed,
            require_user_verification=True,
        )
    except InvalidRegistrationResponse as exc:
        raise ConsoleError(400, "console-registration-refused", str(exc)) from None
    cd = json.loads(base64url_to_bytes(str(body["response"]["clientDataJSON"])))
    credential = pk.PasskeyCredential(
        v.credential_id, v.credential_public_key, rp_id(request), (str(cd["origin"]),)
    )
    try:
        pk.check_credential(credential)
    except pk.PasskeyError as exc:
        raise ConsoleError(400, "console-registration-refused", str(exc)) from None
    reg = _registrations(request).add(c["approver_id"], credential)
    logs.info(
        "console.passkey.registered",
        approver_id=reg.approver_id,
        credential_id=bytes_to_base64url(credential.credential_id),
    )
    return JSONResponse(
        {
            "status": "pending-governance",
            "approver_id": reg.approver_id,
            "credential_id": bytes_to_base64url(credential.credential_id),
            "policy_entry": reg.policy_entry(),
            "detail": "registered: it counts once the officers sign a governance version"
            " that puts it in an approver group",
        }
    )


# -- sign-in --------------------------------------------------------------------------------


@router.post("/login/options")
async def login_options(request: Request) -> Response:
    s, new = await _session(request)
    await _json(request, s)
    options = webauthn.generate_authentication_options(
        rp_id=rp_id(request), user_verification=UserVerificationRequirement.REQUIRED
    )
    s.ceremony["login"] = {"challenge": options.challenge, "until": time.time() + CEREMONY_TTL}
    await asyncio.to_thread(_sessions(request).save, s)
    return Response(options_to_json(options), media_type="application/json")


@router.post("/login/verify")
async def login_verify(request: Request) -> Response:
    s, _ = await _session(request)
    body = await _json(request, s)
    c = await _ceremony(request, s, "login")
    a = _assertion(body)
    approver_id, credential, active = _passkey_of(request, a.credential_id)
    try:
        webauthn.verify_authentication_response(
            credential=body,
            expected_challenge=c["challenge"],
            expected_rp_id=credential.rp_id,
            expected_origin=[o for o in origins(request) if o in credential.origins],
            credential_public_key=credential.public_key,
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    except InvalidAuthenticationResponse as exc:
        raise ConsoleError(403, "console-sign-in-refused", str(exc)) from None
    sessions = _sessions(request)
    fresh = await asyncio.to_thread(sessions.sign_in, s, approver_id, a.credential_id)
    logs.info("console.signed_in", approver_id=approver_id, in_governance=active)
    resp = JSONResponse({"next": "/console/queue", "approver_id": approver_id})
    _set_cookie(resp, fresh, sessions)
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    s, _ = await _session(request)
    await _json(request, s)
    await asyncio.to_thread(_sessions(request).end, s)
    resp = JSONResponse({"next": "/console"})
    resp.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return resp


# -- the queue and one request --------------------------------------------------------------


def _decoded(request: Request, r: Any) -> dict[str, Any] | None:
    """A sign request row as the console shows it (None: it does not decode)."""
    c = _coordinator(request)
    now = int(time.time())
    try:
        key = c.keys.get(r.key_id)
        ev = c.approvals.evaluate(key, r.body, now)
    except (Problem, SignRequestError, KeyError):
        return None
    g = ev.governance
    policy = g.policy if g is not None else None
    view = (
        c.approvals.view(ev, r.body, _repo(request).approvals(r.id), now) if g is not None else None
    )
    shown = (
        show(ev.intent, ev.kind, r.body, policy, _added_times(request, g), now)
        if policy is not None and g is not None
        else None
    )
    groups: set[str] = (
        set(ev.decision.requirement.groups()) if ev.decision.requirement is not None else set()
    )
    return {
        "tx_hash": _tx_hash(r),
        "risk": _risk_report(request, r.id),
        "id": r.id,
        "key_id": r.key_id,
        "kind": ev.kind,
        "status": r.status,
        "initiator": r.body.get("initiator"),
        "created_at": r.created_at,
        "shown": shown,
        "rule": ev.decision.rule_id,
        "action": ev.decision.action,
        "groups": groups,
        "view": view,
        "ev": ev,
        "key": key,
    }


def _installed_at(request: Request) -> dict[int, int]:
    """When each governance version was installed on this coordinator (Unix seconds): the
    ``governance.install`` audit entries (versions 2 and later), and for the genesis (which
    ``python -m api trust`` installs before there is a database) its file's time."""
    out: dict[int, int] = {}
    with request.app.state.db.session() as db:
        for at, data in db.execute(
            select(AuditEntry.at, AuditEntry.data).where(AuditEntry.action == "governance.install")
        ):
            version = data.get("version") if isinstance(data, dict) else None
            if isinstance(version, int) and version not in out:
                out[version] = int(dt.datetime.fromisoformat(at).timestamp())
    store = _coordinator(request).governance
    try:
        out.setdefault(1, int((Path(store.dir) / "v1.gov").stat().st_mtime))
    except OSError:
        pass
    return out


def _added_times(request: Request, g: gov.Governance) -> AddedTimes:
    """When each allowlist entry of ``g`` was added (:class:`api.console.views.Added`): the
    earliest version from which every version up to ``g`` lists it, and when that version
    was installed. Versions never change, so the answer is kept per governance digest."""
    cache: dict[bytes, AddedTimes] | None = getattr(request.app.state, "console_added", None)
    if cache is None:
        cache = request.app.state.console_added = {}
    hit = cache.get(g.digest)
    if hit is not None:
        return hit
    store = _coordinator(request).governance

    def entries(policy: Any) -> set[tuple[str, str]]:
        return {
            (al.name, pol.normalize_address(e.address))
            for al in policy.allowlists
            for e in al.entries
        }

    first = {k: g.version for k in entries(g.policy)}
    missing = set(first)
    for version in range(g.version - 1, 0, -1):
        if not missing:
            break
        data = store.document(version)
        if data is None:
            break
        present = entries(gov.decode(data).body.policy)
        for k in list(missing):
            if k in present:
                first[k] = version
            else:
                missing.discard(k)
    installed = _installed_at(request)
    out = {k: Added(v, installed.get(v)) for k, v in first.items()}
    cache[g.digest] = out
    return out


def _risk_report(request: Request, request_id: str) -> dict[str, Any] | None:
    """The risk report the requester sent with the request (``risk``,
    :class:`custody.models.RiskReport`), kept in its ``sign.request`` audit entry: shown as
    the payment core's, never decided on. None when it sent none."""
    with request.app.state.db.session() as db:
        data = db.scalar(
            select(AuditEntry.data)
            .where(AuditEntry.subject == request_id, AuditEntry.action == "sign.request")
            .limit(1)
        )
    risk = data.get("risk") if isinstance(data, dict) else None
    if not isinstance(risk, dict):
        return None
    flags = risk.get("flags")
    score = risk.get("score")
    return {
        "score": score if isinstance(score, int) else None,
        "flags": [f for f in flags if isinstance(f, str)] if isinstance(flags, list) else [],
    }


def _tx_hash(r: Any) -> str | None:
    """A signed ``evm-tx``'s transaction hash (keccak256 of the signed transaction, what a
    chain and its explorers call it), else None."""
    if r.status != "signed" or r.kind != "evm-tx":
        return None
    result = sign_out(r).get("result") or {}
    signed_tx = result.get("signed_tx")
    if not isinstance(signed_tx, str):
        return None
    return "0x" + keccak(bytes.fromhex(signed_tx.removeprefix("0x"))).hex()


def _repo(request: Request) -> Any:
    return request.app.state.repository


def _in_groups(g: gov.Governance | None, approver_id: str, groups: set[str]) -> bool:
    if g is None:
        return False
    return any(
        grp.group_id in groups and grp.member(approver_id) is not None
        for grp in g.policy.approver_groups
    )


def _queue(request: Request, s: Session) -> list[dict[str, Any]]:
    repo = _repo(request)
    rows = repo.sign_requests(200, None, status="pending_approval").rows
    g = _governance(request)
    out = []
    for r in rows:
        d = _decoded(request, r)
        if d is None or not _in_groups(g, str(s.approver_id), d["groups"]):
            continue
        mine = [
            a for a in (d["view"] or {}).get("approvals", []) if a["approver_id"] == s.approver_id
        ]
        d["decided"] = mine[0]["decision"] if mine else None
        out.append(d)
    return out


@router.get("/queue", response_class=HTMLResponse)
async def queue_page(request: Request) -> Response:
    got = await _need_sign_in(request)
    if isinstance(got, RedirectResponse):
        return got
    s, new = got
    items = await asyncio.to_thread(_queue, request, s)
    g = _governance(request)
    active = g is not None and g.approver(str(s.approver_id)) is not None
    return _page(request, "queue.html", s, new, title="Approval queue", items=items, active=active)


@router.get("/queue/rows", response_class=HTMLResponse)
async def queue_rows(request: Request) -> Response:
    """The queue's table body (htmx refreshes it)."""
    got = await _need_sign_in(request)
    if isinstance(got, RedirectResponse):
        return Response(status_code=401)
    s, new = got
    items = await asyncio.to_thread(_queue, request, s)
    return _page(request, "queue_rows.html", s, new, items=items)


def _request_row(request: Request, request_id: str) -> Any:
    r = _repo(request).sign_request(request_id)
    if r is None:
        raise ConsoleError(404, "not-found", f"no sign request {request_id!r}")
    return r


@router.get("/requests/{request_id}", response_class=HTMLResponse)
async def request_page(request: Request, request_id: str) -> Response:
    got = await _need_sign_in(request)
    if isinstance(got, RedirectResponse):
        return got
    s, new = got
    r = await asyncio.to_thread(_request_row, request, request_id)
    d = await asyncio.to_thread(_decoded, request, r)
    if d is None:
        raise ConsoleError(
            422,
            "console-cannot-decode",
            f"request {request_id} does not decode: nothing to approve",
        )
    may = (
        r.status == "pending_approval"
        and _in_groups(_governance(request), str(s.approver_id), d["groups"])
        and d["initiator"] != s.approver_id
    )
    return _page(request, "request.html", s, new, title=f"Request {r.id}", d=d, may=may)


def _statement(
    request: Request, s: Session, request_id: str, decision: Literal["approve", "reject"]
) -> tuple[ap.ApprovalStatement, Any, Any]:
    r = _request_row(request, request_id)
    if r.status != "pending_approval":
        raise ConsoleError(409, "request-not-pending", f"request {r.id} is {r.status}")
    d = _decoded(request, r)
    if d is None or d["action"] != "approve":
        raise ConsoleError(409, "console-no-approval-needed", f"request {r.id} needs no approval")
    g = d["ev"].governance
    assert g is not None
    if not _in_groups(g, str(s.approver_id), d["groups"]):
        raise ConsoleError(
            403, "console-not-in-group", f"{s.approver_id} is in no group rule {d['rule']} names"
        )
    st = ap.ApprovalStatement(
        intent_digest=d["ev"].request.intent_digest,
        request_id=r.id,
        policy_version=g.version,
        governance_digest=g.digest,
        expires_at=int(time.time()) + STATEMENT_TTL,
        approver_id=str(s.approver_id),
        decision=decision,
        initiator=str(r.body.get("initiator", "")),
    )
    return st, r, d


def _decision(body: Mapping[str, Any]) -> Literal["approve", "reject"]:
    dec = body.get("decision")
    if dec not in ("approve", "reject"):
        raise ConsoleError(400, "console-bad-decision", "decision: approve or reject")
    return "approve" if dec == "approve" else "reject"


@router.post("/requests/{request_id}/challenge")
async def decision_challenge(request: Request, request_id: str) -> Response:
    """The assertion request for this approver's decision on this request: its challenge is
    SHA-256 of the statement (kept in the session until ``decide``)."""
    s, _ = await _session(request)
    body = await _json(request, s)
    if not s.signed_in or s.credential_id is None:
        raise ConsoleError(401, "console-signed-out", "sign in first")
    decision = _decision(body)
    st, _r, _d = await asyncio.to_thread(_statement, request, s, request_id, decision)
    challenge = pk.challenge_for(st.signed_bytes())
    s.ceremony[f"decide:{request_id}"] = {
        "statement": st,
        "until": time.time() + CEREMONY_TTL,
    }
    await asyncio.to_thread(_sessions(request).save, s)
    options = webauthn.generate_authentication_options(
        rp_id=rp_id(request),
        challenge=challenge,
        allow_credentials=[PublicKeyCredentialDescriptor(id=s.credential_id)],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return Response(options_to_json(options), media_type="application/json")


@router.post("/requests/{request_id}/decide")
async def decide(request: Request, request_id: str) -> Response:
    """Forward the approver's fresh assertion as a passkey approval (or rejection)."""
    s, _ = await _session(request)
    try:
        body = await _json(request, s)
        if not s.signed_in:
            raise ConsoleError(401, "console-signed-out", "sign in first")
        decision = _decision(body)
        cred = body.get("credential")
        if not isinstance(cred, dict):
            raise ConsoleError(
                400,
                "console-assertion-missing",
                "credential: a fresh passkey assertion is required",
            )
        c = await _ceremony(request, s, f"decide:{request_id}")
        st: ap.ApprovalStatement = c["statement"]
        if st.decision != decision or st.approver_id != s.approver_id:
            raise ConsoleError(
                400, "console-other-decision", "the assertion was asked for another decision"
            )
        a = _assertion(cred)
        if a.credential_id != s.credential_id:
            raise ConsoleError(
                403, "console-other-passkey", "sign with the passkey you signed in with"
            )
        wire = base64.b64encode(ap.PasskeyApproval(st, a).encode()).decode()
        coordinator = _coordinator(request)
        r = await asyncio.to_thread(_request_row, request, request_id)
        if r.status != "pending_approval":
            raise ConsoleError(409, "request-not-pending", f"request {r.id} is {r.status}")
        key = coordinator.keys.get(r.key_id)
        done = await coordinator.approvals.submit(
            request_id, wire, decision, key, r.body, f"console:{s.approver_id}"
        )
        if done.status == "signing":
            coordinator.spawn(coordinator.run_sign(request_id, done.body, key))
    except Problem as e:  # ConsoleError too: logged, then answered by the handlers
        logs.warn(
            "console.decision.refused",
            approver_id=s.approver_id,
            request_id=request_id,
            reason=e.slug,
        )
        raise
    logs.info(
        "console.decision",
        approver_id=s.approver_id,
        request_id=request_id,
        decision=decision,
        status=done.status,
    )
    return JSONResponse({"status": done.status, "request_id": request_id, "decision": decision})


# -- history and keys -----------------------------------------------------------------------


@router.get("/history", response_class=HTMLResponse)
async def history_page(request: Request) -> Response:
    got = await _need_sign_in(request)
    if isinstance(got, RedirectResponse):
        return got
    s, new = got

    def rows() -> list[dict[str, Any]]:
        page = _repo(request).sign_requests(100, None)
        out = []
        for r in page.rows:
            if r.status == "pending_approval":
                continue
            d = _decoded(request, r)
            if d is not None and d["action"] == "approve":
                out.append(d)
        return out

    items = await asyncio.to_thread(rows)
    return _page(request, "history.html", s, new, title="History", items=items)


@router.get("/keys", response_class=HTMLResponse)
async def keys_page(request: Request) -> Response:
    got = await _need_sign_in(request)
    if isinstance(got, RedirectResponse):
        return got
    s, new = got

    def rows() -> list[dict[str, Any]]:
        page = _repo(request).keys(200, None)
        return [
            {
                "id": k.id,
                "scheme": k.scheme,
                "status": k.status,
                "threshold": k.threshold,
                "nodes": len(k.nodes or []),
                "addresses": addresses(k.scheme, k.public_key, getattr(k, "network", None)),
            }
            for k in page.rows
        ]

    items = await asyncio.to_thread(rows)
    return _page(request, "keys.html", s, new, title="Keys", items=items)


# -- policies (with a dry run), the audit log, webhook deliveries ----------------------------


@router.get("/policies", response_class=HTMLResponse)
async def policies_page(request: Request) -> Response:
    """The active governance version's policy in words, its approver groups, a dry-run form
    (and the shadow draft's version when one is installed)."""
    got = await _need_sign_in(request)
    if isinstance(got, RedirectResponse):
        return got
    s, new = got
    g = _governance(request)
    rules = [] if g is None else [pf.describe_rule(r, g.policy) for r in g.policy.rules]
    keys = await asyncio.to_thread(lambda: [k.id for k in _repo(request).keys(200, None).rows])
    return _page(request, "policies.html", s, new, title="Policies", g=g, rules=rules, keys=keys)


@router.post("/policies/dry-run", response_class=HTMLResponse)
async def policies_dry_run(request: Request) -> Response:
    """What the active policy decides for a sign request (nothing created or signed): the
    form's key, kind and payload, as the approver (or the initiator given)."""
    s, new = await _session(request)
    if not csrf_ok(s, request.headers.get("x-csrf-token")):
        return HTMLResponse("<p class='flag'>missing or wrong CSRF token</p>", status_code=403)
    if not s.signed_in:
        return HTMLResponse("<p class='flag'>sign in first</p>", status_code=401)
    raw = await request.body()
    if len(raw) > MAX_JSON:
        return HTMLResponse("<p class='flag'>form too large</p>", status_code=413)
    # application/x-www-form-urlencoded, as htmx posts a form (no multipart parser needed)
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    c = _coordinator(request)
    g = _governance(request)
    lines: list[str]
    try:
        if g is None:
            raise ConsoleError(409, "governance-missing", "no governance version is installed")
        key = c.keys.get(str(form.get("key_id", "")))
        kind = str(form.get("kind", "evm-tx"))
        payload_field = str(form.get("payload", "")).strip()
        req: dict[str, Any] = {"key_id": key.id, "kind": kind}
        if kind == "evm-tx":
            req["payload"] = {"tx": payload_field}
        elif kind in ("message", "raw"):
            req["message"] = payload_field.lower()
        else:
            req["payload"] = json.loads(payload_field or "{}")
        initiator = str(form.get("initiator") or s.approver_id)
        now = int(time.time())
        out = await asyncio.to_thread(
            dry_run, request.app.state.db, g, key, req, initiator=initiator, now=now
        )
        lines = explanation_lines(out)
    except (ConsoleError, Problem, ValueError) as e:
        detail = e.detail if isinstance(e, (ConsoleError, Problem)) else str(e)
        lines = [f"refused: {detail}"]
    return _page(request, "dry_run.html", s, new, lines=lines)


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request) -> Response:
    """The newest audit entries and the chain's verification against the node-signed
    checkpoints (``GET /v1/audit/verify``)."""
    got = await _need_sign_in(request)
    if isinstance(got, RedirectResponse):
        return got
    s, new = got
    settings = request.app.state.settings

    def load() -> tuple[dict[str, Any], list[Any]]:
        repo = _repo(request)
        report = repo.verify_audit(settings.cluster_id)
        with request.app.state.db.session() as db:
            entries = list(db.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(50)))
            db.expunge_all()
        return report, entries

    report, entries = await asyncio.to_thread(load)
    return _page(request, "audit.html", s, new, title="Audit log", report=report, entries=entries)


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks_page(request: Request) -> Response:
    """The newest webhook deliveries: event, endpoint, status, attempts, last answer."""
    got = await _need_sign_in(request)
    if isinstance(got, RedirectResponse):
        return got
    s, new = got

    def load() -> list[dict[str, Any]]:
        with request.app.state.db.session() as db:
            rows = db.execute(
                select(WebhookDelivery, WebhookMessage.event_type, Webhook.url)
                .join(WebhookMessage, WebhookMessage.id == WebhookDelivery.message_id)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .order_by(WebhookDelivery.id.desc())
                .limit(50)
            ).all()
            return [
                {
                    "message_id": d.message_id,
                    "event": event,
                    "url": url,
                    "status": d.status,
                    "attempts": d.attempts,
                    "last": d.last_status_code or d.last_error or "",
                }
                for d, event, url in rows
            ]

    items = await asyncio.to_thread(load)
    return _page(request, "webhooks.html", s, new, title="Webhook deliveries", items=items)
