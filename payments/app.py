"""The payment service's HTTP API (FastAPI): ``/v1/accounts``, ``/v1/payments``,
``/v1/settlements``, ``/v1/reconciliations``.

Conventions of the coordinator (``docs/DESIGN.md``, API conventions): JSON, OpenAPI at
``/openapi.json``; every error an RFC 9457 ``application/problem+json`` document whose
``type`` is ``urn:tpwc:problem:payments.<slug>`` and which names the ``field`` at fault;
bearer authentication (``PAYMENTS_TOKEN``); ``Idempotency-Key`` required on the POSTs that
create (accounts, deposits, payments: the same key and body answer with the same
resource, the same key with another body is a 422); opaque cursor pagination (``cursor``,
``next_cursor``). Logs are :mod:`custody.obs`'s JSON lines (service ``payments``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hmac
import json
import re
import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from sqlalchemy import Engine, Row, Table, and_, or_, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from custody import obs
from custody import problem_types as pt
from custody.domain import ID_PATTERN
from custody.models import NO_CONTROLS_PATTERN, ProblemModel
from payments import events as ev
from payments import lifecycle, reconcile, replay
from payments.core import CoreError, PaymentCore
from payments.db import accounts, payments, reconciliations, settlement_items, settlements
from payments.events import ConcurrencyError
from payments.lifecycle import IllegalTransition
from payments.rails import BatchParser

PROBLEM = "application/problem+json"
TYPE_PREFIX = pt.TYPE_PREFIX + "payments."
log = obs.get_logger("payments.api")
Id = Annotated[str, Field(min_length=1, max_length=40, pattern=ID_PATTERN)]
# Every string a request carries refuses the C0 controls and DEL, or is stricter: PostgreSQL
# cannot store a NUL in a text column (psycopg's DataError would be a 500 where a 422 naming
# the field is due; the coordinator's API had that bug), and the rest have no place in an
# ISO 20022 text, a destination or a log line.
Text = Annotated[str, Field(pattern=NO_CONTROLS_PATTERN)]
PathId = Annotated[str, Path(min_length=1, max_length=40, pattern=ID_PATTERN)]
Cursor = Annotated[str | None, Query(max_length=200, pattern=NO_CONTROLS_PATTERN)]
Amount = Annotated[int, Field(gt=0, le=2**63 - 1, description="base units of the asset")]


class AccountIn(BaseModel):
    owner: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+$")]
    asset: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9]+$")]
    decimals: Annotated[int, Field(ge=0, le=36)]
    per_payment_limit: Amount | None = None
    daily_limit: Amount | None = None


class AccountOut(BaseModel):
    id: str
    owner: str
    asset: str
    kind: str
    balance: int
    held: int
    available: int
    per_payment_limit: int | None
    daily_limit: int | None
    created_at: dt.datetime


class DepositIn(BaseModel):
    amount: Amount
    reference: Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9._:-]+$")]


class PaymentIn(BaseModel):
    account_id: Id
    amount: Amount
    destination: Annotated[Text, Field(min_length=1, max_length=128)]
    rail: Annotated[Text, Field(min_length=1, max_length=24)]
    end_to_end_id: Annotated[Text, Field(min_length=1, max_length=35)] | None = None


class PaymentOut(BaseModel):
    id: str
    status: lifecycle.Status
    customer: str
    account_id: str
    asset: str
    amount: int
    destination: str
    rail: str
    end_to_end_id: str | None
    risk_score: int | None
    reasons: list[str]
    hold: int
    fee: int
    sign_request_id: str | None
    rail_ref: str | None
    settlement_id: str | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class EventOut(BaseModel):
    seq: int
    type: str
    at: dt.datetime
    data: dict[str, Any]


class CancelIn(BaseModel):
    reason: Annotated[Text, Field(min_length=1, max_length=200)] = "cancelled by the customer"


class SettlementOut(BaseModel):
    id: str
    counterparty: str
    asset: str
    net_amount: int
    payment_count: int
    status: str
    confirmed_amount: int | None
    confirmation_ref: str | None
    payments: list[str]
    created_at: dt.datetime


class SettlementConfirmIn(BaseModel):
    amount: Annotated[int, Field(ge=0, le=2**63 - 1)]
    reference: Annotated[Text, Field(min_length=1, max_length=128)]


class BreakOut(BaseModel):
    kind: str
    source: str
    payment_id: str | None
    ref: str | None
    expected_amount: int | None
    actual_amount: int | None
    detail: str


class ReconciliationOut(BaseModel):
    id: str
    matched: int
    breaks: list[BreakOut]
    reconciled: list[str] = []
    created_at: dt.datetime


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None


class PaymentList(Page):
    items: list[PaymentOut]


class AccountList(Page):
    items: list[AccountOut]


class SettlementMessageOut(BaseModel):
    """A pacs.008 of the ISO 20022 rail: ``signing``, ``pending_approval`` (custody's
    policy wants approvals: ``sign_request_id``), ``sent`` (signed, its payments settled;
    the file at ``/v1/settlements/{id}/file``), ``failed`` or ``void``."""

    id: str
    counterparty: str
    asset: str
    net_amount: int
    payment_count: int
    status: str
    uetr: str
    sign_request_id: str | None
    detail: str | None
    created_at: dt.datetime


class SettlementList(BaseModel):
    items: list[SettlementOut]
    messages: list[SettlementMessageOut] = []


class ReconciliationList(BaseModel):
    items: list[ReconciliationOut]


class ImportOut(BaseModel):
    payments: list[PaymentOut]


def problem(
    status: int, slug: str, title: str, detail: str | None = None, **extra: Any
) -> JSONResponse:
    doc: dict[str, Any] = {"type": TYPE_PREFIX + slug, "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    doc.update({k: v for k, v in extra.items() if v not in (None, "")})
    return JSONResponse(doc, status_code=status, media_type=PROBLEM)


TITLES = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed",
          409: "Conflict", 422: "Unprocessable content", 501: "Not implemented"}  # fmt: skip


def _cursor(at: dt.datetime, rid: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([at.isoformat(), rid]).encode()).decode()


def _uncursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        at, rid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return dt.datetime.fromisoformat(at), str(rid)
    except (ValueError, TypeError, binascii.Error):
        raise CoreError(
            400, "invalid-cursor", "cursor is not one this API returned", "cursor"
        ) from None


def _utc(v: dt.datetime) -> dt.datetime:
    return v if v.tzinfo else v.replace(tzinfo=dt.UTC)


def _page(
    engine: Engine, table: Table, where: list[Any], limit: int, cursor: str | None
) -> tuple[list[Row[Any]], str | None]:
    """One page of ``table``'s rows matching ``where``, in (created_at, id) order after
    ``cursor`` (keyset pagination), and the cursor of the next page (``None`` at the end)."""
    q = select(table).order_by(table.c.created_at, table.c.id).limit(limit + 1)
    for clause in where:
        q = q.where(clause)
    if cursor:
        at, rid = _uncursor(cursor)
        q = q.where(or_(table.c.created_at > at, and_(table.c.created_at == at, table.c.id > rid)))
    with engine.connect() as c:
        rows = list(c.execute(q).all())
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _cursor(_utc(last.created_at), last.id)


def payment_out(p: dict[str, Any]) -> PaymentOut:
    doc = {k: p.get(k) for k in PaymentOut.model_fields}
    doc.update(version=p["seq"], created_at=_utc(p["created_at"]), updated_at=_utc(p["updated_at"]))
    return PaymentOut.model_validate(doc)


def account_out(r: Any) -> AccountOut:
    return AccountOut(
        id=r.id, owner=r.owner, asset=r.asset, kind=r.kind, balance=r.balance, held=r.held,
        available=r.balance - r.held, per_payment_limit=r.per_payment_limit,
        daily_limit=r.daily_limit, created_at=_utc(r.created_at),
    )  # fmt: skip


def auth(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Bearer authentication against the service's token (constant-time comparison)."""
    token: str = request.app.state.token
    scheme, _, cred = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(cred.encode(), token.encode()):
        raise CoreError(401, "unauthorized", "a valid bearer token is required", "Authorization")


def idem(idempotency_key: Annotated[str | None, Header()] = None) -> str:
    if (
        not idempotency_key
        or len(idempotency_key) > 255
        or not re.fullmatch(NO_CONTROLS_PATTERN, idempotency_key)
    ):
        raise CoreError(
            400,
            "idempotency-key-required",
            "this POST needs an Idempotency-Key header (1-255 characters, no control character)",
            "Idempotency-Key",
        )
    return idempotency_key


Auth = Depends(auth)
Idem = Annotated[str, Depends(idem)]


def create_app(
    core: PaymentCore,
    token: str,
    worker: Any = None,
    interval: float = 0.2,
    intake: BatchParser | None = None,
    settler: Any = None,
) -> FastAPI:
    """The ASGI app over ``core``; with ``worker`` (a :class:`payments.worker.Worker`) its
    loop runs in a thread for the app's lifetime; ``intake`` parses pain.001 batches and
    ``settler`` (a :class:`payments.settlement.Settler`) runs the ISO 20022 settlement
    windows."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = None
        if worker is not None:
            thread = threading.Thread(
                target=worker.run, args=(stop, interval), name="payments-worker", daemon=True
            )
            thread.start()
        log.info("payments.started", rails=sorted(core.rails), worker=worker is not None)
        yield
        stop.set()
        if thread is not None:
            thread.join(timeout=10)

    # Swagger UI and ReDoc from fastapi-offline's packaged copy, never a CDN
    app = FastAPIOffline(
        title="TP Wallet Custody: payment core",
        version="0.1.0",
        description=__doc__,
        lifespan=lifespan,
        responses={
            code: {"model": ProblemModel, "description": TITLES[code]}
            for code in (400, 401, 404, 409, 422)
        },
        **obs.fastapi_options(),
    )
    app.state.token = token
    app.state.intake = intake

    @app.exception_handler(CoreError)
    async def _core(_: Request, exc: CoreError) -> JSONResponse:
        return problem(
            exc.status, exc.slug, TITLES.get(exc.status, "Error"), exc.detail, field=exc.field
        )

    @app.exception_handler(ConcurrencyError)
    async def _raced(_: Request, exc: ConcurrencyError) -> JSONResponse:
        return problem(
            409, "concurrent-update", "Conflict",
            f"{exc}; the request changed nothing, try it again", field="version",
        )  # fmt: skip

    @app.exception_handler(IllegalTransition)
    async def _illegal(_: Request, exc: IllegalTransition) -> JSONResponse:
        return problem(
            409, "illegal-transition", "Conflict", str(exc), field="status", state=exc.state
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem(
            exc.status_code, "http-error", TITLES.get(exc.status_code, "HTTP error"), detail
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(x) for x in e["loc"][1:]) or str(e["loc"][0]),
                "message": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        first = errors[0]["field"] if errors else None
        return problem(
            422,
            "invalid-request",
            "Unprocessable content",
            f"{len(errors)} invalid field(s)",
            field=first,
            errors=errors,
        )

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.error("payments.unexpected_error", error_type=type(exc).__name__)
        return problem(500, "internal-error", "Internal server error")

    @app.get("/health", tags=["ops"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # -- accounts ---------------------------------------------------------------------------
    def _account(aid: str) -> Any:
        with core.engine.connect() as c:
            r = c.execute(select(accounts).where(accounts.c.id == aid)).first()
        if r is None:
            raise CoreError(404, "account-not-found", f"no account {aid}", "account_id")
        return r

    @app.post(
        "/v1/accounts",
        status_code=201,
        response_model=AccountOut,
        dependencies=[Auth],
        tags=["accounts"],
    )
    def create_account(body: AccountIn, key: Idem) -> Any:
        aid, created = core.open_account(body.model_dump(), key)
        out = account_out(_account(aid))
        return out if created else JSONResponse(out.model_dump(mode="json"), status_code=200)

    @app.get("/v1/accounts", response_model=AccountList, dependencies=[Auth], tags=["accounts"])
    def list_accounts(
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Cursor = None,
        owner: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROLS_PATTERN)] = None,
        include_system: bool = False,
    ) -> AccountList:
        where = [] if include_system else [accounts.c.kind == "customer"]
        if owner:
            where.append(accounts.c.owner == owner)
        rows, nxt = _page(core.engine, accounts, where, limit, cursor)
        return AccountList(items=[account_out(r) for r in rows], next_cursor=nxt)

    @app.get(
        "/v1/accounts/{account_id}",
        response_model=AccountOut,
        dependencies=[Auth],
        tags=["accounts"],
    )
    def get_account(account_id: PathId) -> AccountOut:
        return account_out(_account(account_id))

    @app.post(
        "/v1/accounts/{account_id}/deposits",
        status_code=201,
        response_model=AccountOut,
        dependencies=[Auth],
        tags=["accounts"],
    )
    def deposit(account_id: PathId, body: DepositIn, key: Idem) -> Any:
        """Fund an account from outside (demo and tests): one balanced posting from the
        ``external`` system account; the ``reference`` books once."""
        booked = core.deposit(account_id, body.amount, body.reference)
        out = account_out(_account(account_id))
        return out if booked else JSONResponse(out.model_dump(mode="json"), status_code=200)

    @app.get("/v1/ledger/check", dependencies=[Auth], tags=["accounts"])
    def ledger_check() -> dict[str, Any]:
        """The ledger's invariants now: the sum per asset (always 0) and where the tables
        differ from a replay of the events (always nothing)."""
        with core.engine.connect() as c:
            rows = c.execute(select(accounts)).all()
            diffs = replay.differences(c)
        sums: dict[str, int] = {}
        for r in rows:
            sums[r.asset] = sums.get(r.asset, 0) + r.balance
        return {"sum_per_asset": sums, "replay_differences": diffs}

    # -- payments -----------------------------------------------------------------------------
    @app.post(
        "/v1/payments",
        status_code=201,
        response_model=PaymentOut,
        dependencies=[Auth],
        tags=["payments"],
    )
    def create_payment(body: PaymentIn, key: Idem) -> Any:
        """Create a payment and authorize it (limits, sanctions, risk, funds reserved) in one
        transaction: it answers ``authorized`` or ``declined`` with readable ``reasons``."""
        pid, created = core.create_payment(body.model_dump(), key)
        out = payment_out(core.get(pid))
        log.info(
            "payments.created" if created else "payments.replayed",
            payment_id=pid,
            status=out.status,
        )
        return out if created else JSONResponse(out.model_dump(mode="json"), status_code=200)

    @app.get("/v1/payments", response_model=PaymentList, dependencies=[Auth], tags=["payments"])
    def list_payments(
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Cursor = None,
        status: lifecycle.Status | None = None,
        customer: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROLS_PATTERN)] = None,
    ) -> PaymentList:
        where = []
        if status:
            where.append(payments.c.status == status)
        if customer:
            where.append(payments.c.customer == customer)
        rows, nxt = _page(core.engine, payments, where, limit, cursor)
        return PaymentList(items=[payment_out(r._asdict()) for r in rows], next_cursor=nxt)

    @app.get(
        "/v1/payments/{payment_id}",
        response_model=PaymentOut,
        dependencies=[Auth],
        tags=["payments"],
    )
    def get_payment(payment_id: PathId) -> PaymentOut:
        return payment_out(core.get(payment_id))

    @app.get(
        "/v1/payments/{payment_id}/events",
        response_model=list[EventOut],
        dependencies=[Auth],
        tags=["payments"],
    )
    def payment_events(payment_id: PathId) -> list[EventOut]:
        core.get(payment_id)
        with core.engine.connect() as c:
            return [
                EventOut(seq=e.seq, type=e.type, at=e.at, data=e.data)
                for e in ev.load(c, f"payment:{payment_id}")
            ]

    @app.post(
        "/v1/payments/{payment_id}/cancel",
        response_model=PaymentOut,
        dependencies=[Auth],
        tags=["payments"],
    )
    def cancel_payment(payment_id: PathId, body: CancelIn | None = None) -> PaymentOut:
        """Cancel a payment not yet signed (its reserved funds are released); cancelling a
        cancelled payment answers it again; a signed one is a 409."""
        return payment_out(core.cancel(payment_id, (body or CancelIn()).reason))

    @app.post(
        "/v1/payments/imports",
        status_code=201,
        response_model=ImportOut,
        dependencies=[Auth],
        tags=["payments"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/xml": {"schema": {"type": "string"}}},
                "description": "a pain.001.001.09 document",
            }
        },
    )
    async def import_batch(request: Request) -> Any:
        """A pain.001.001.09 batch (``application/xml``): each transaction a payment, each
        idempotent on (message id, end-to-end id): the same file again answers the same
        payments. A refused file imports nothing: a 422 problem whose ``errors`` list each
        problem (``line``, ``path``: the field as an XPath, ``message``)."""
        parser = request.app.state.intake
        if parser is None:
            raise CoreError(
                501,
                "not-available",
                "pain.001 import is not available in this build "
                "(this service was composed without the pain.001 intake parser)",
            )
        try:
            message_id, txs = await run_in_threadpool(parser.parse, await request.body())
        except ValueError as exc:
            problems = getattr(exc, "problems", ())
            return problem(
                422, "invalid-batch", "Unprocessable content",
                f"the batch is refused, nothing was imported: {exc}",
                field=problems[0].field if problems else "document",
                errors=[
                    {"field": f"line {x.line}: {x.field}", "line": x.line, "path": x.field,
                     "message": x.reason}
                    for x in problems
                ] or None,
            )  # fmt: skip
        ids = await run_in_threadpool(core.import_batch, message_id, txs)
        return ImportOut(payments=[payment_out(core.get(pid)) for pid in ids])

    # -- settlements ------------------------------------------------------------------------------
    def _settlement(c: Any, r: Any) -> SettlementOut:
        pids = (
            c.execute(
                select(settlement_items.c.payment_id).where(
                    settlement_items.c.settlement_id == r.id
                )
            )
            .scalars()
            .all()
        )
        return SettlementOut(
            id=r.id, counterparty=r.counterparty, asset=r.asset, net_amount=r.net_amount,
            payment_count=r.payment_count, status=r.status, confirmed_amount=r.confirmed_amount,
            confirmation_ref=r.confirmation_ref, payments=sorted(pids),
            created_at=_utc(r.created_at),
        )  # fmt: skip

    @app.post(
        "/v1/settlements",
        status_code=201,
        response_model=SettlementList,
        dependencies=[Auth],
        tags=["settlements"],
    )
    def run_settlement() -> SettlementList:
        """Close a settlement window: every confirmed payment netted per (counterparty,
        asset) into one settlement; with the ISO 20022 rail, the authorized ``iso20022``
        payments netted per counterparty bank into one signed pacs.008 each (those
        waiting for approvals picked up again). Answers the settlements made now and the
        pacs.008 messages touched (none: empty lists)."""
        ids = core.settle()
        touched = settler.run() if settler is not None else []
        messages = [_message(sid) for sid in touched]
        ids += [m.id for m in messages if m.status == "sent"]
        with core.engine.connect() as c:
            rows = c.execute(select(settlements).where(settlements.c.id.in_(ids))).all()
            return SettlementList(items=[_settlement(c, r) for r in rows], messages=messages)

    def _message(sid: str) -> SettlementMessageOut:
        m = settler.get(sid) if settler is not None else None
        if m is None:
            raise CoreError(
                404, "settlement-not-found", f"no pacs.008 settlement {sid}", "settlement_id"
            )
        return SettlementMessageOut(
            id=m["id"], counterparty=m["counterparty"], asset=m["asset"],
            net_amount=int(m["net_amount"]), payment_count=m["payment_count"],
            status=m["status"], uetr=m["uetr"], sign_request_id=m["sign_request_id"],
            detail=m["detail"], created_at=_utc(m["created_at"]),
        )  # fmt: skip

    @app.get(
        "/v1/settlements/{settlement_id}/message",
        response_model=SettlementMessageOut,
        dependencies=[Auth],
        tags=["settlements"],
    )
    def get_settlement_message(settlement_id: PathId) -> SettlementMessageOut:
        """The pacs.008 of an ISO 20022 settlement: its signing status."""
        return _message(settlement_id)

    @app.get(
        "/v1/settlements/{settlement_id}/file",
        dependencies=[Auth],
        tags=["settlements"],
        responses={200: {"content": {"application/xml": {}}, "description": "the signed file"}},
    )
    def get_settlement_file(settlement_id: PathId) -> Response:
        """The signed pacs.008 file (``application/xml``) a settlement released: what
        ``custody pay verify-settlement`` checks; 409 while it is not signed."""
        m = _message(settlement_id)
        if m.status != "sent":
            raise CoreError(
                409, "settlement-not-signed",
                f"settlement {settlement_id} is {m.status}: no file was released",
                "status",
            )  # fmt: skip
        doc = settler.get(settlement_id)
        return Response(doc["signed"], media_type="application/xml")

    @app.get(
        "/v1/settlements", response_model=SettlementList, dependencies=[Auth], tags=["settlements"]
    )
    def list_settlements() -> SettlementList:
        """Every settlement, and every pacs.008 message (signing, waiting, sent, failed,
        void)."""
        # read before opening the core's connection: a SQLite connection holds the lock
        messages = [_message(i) for i in (settler.ids() if settler is not None else [])]
        with core.engine.connect() as c:
            rows = c.execute(select(settlements).order_by(settlements.c.created_at)).all()
            return SettlementList(items=[_settlement(c, r) for r in rows], messages=messages)

    @app.get(
        "/v1/settlements/{settlement_id}",
        response_model=SettlementOut,
        dependencies=[Auth],
        tags=["settlements"],
    )
    def get_settlement(settlement_id: PathId) -> SettlementOut:
        with core.engine.connect() as c:
            r = c.execute(select(settlements).where(settlements.c.id == settlement_id)).first()
            if r is None:
                raise CoreError(
                    404, "settlement-not-found", f"no settlement {settlement_id}", "settlement_id"
                )
            return _settlement(c, r)

    @app.post(
        "/v1/settlements/{settlement_id}/confirmations",
        response_model=SettlementOut,
        dependencies=[Auth],
        tags=["settlements"],
    )
    def confirm_settlement(settlement_id: PathId, body: SettlementConfirmIn) -> SettlementOut:
        """The counterparty's confirmation of a settlement (the amount it booked)."""
        core.confirm_settlement(settlement_id, body.amount, body.reference)
        return get_settlement(settlement_id)

    # -- reconciliations -------------------------------------------------------------------
    @app.post(
        "/v1/reconciliations",
        status_code=201,
        response_model=ReconciliationOut,
        dependencies=[Auth],
        tags=["reconciliations"],
    )
    def run_reconciliation() -> ReconciliationOut:
        return ReconciliationOut.model_validate(reconcile.run(core))

    @app.get(
        "/v1/reconciliations",
        response_model=ReconciliationList,
        dependencies=[Auth],
        tags=["reconciliations"],
    )
    def list_reconciliations() -> ReconciliationList:
        with core.engine.connect() as c:
            rows = c.execute(select(reconciliations).order_by(reconciliations.c.created_at)).all()
        return ReconciliationList(
            items=[
                ReconciliationOut(
                    id=r.id, matched=r.matched, breaks=r.breaks, created_at=_utc(r.created_at)
                )
                for r in rows
            ]
        )

    @app.get(
        "/v1/reconciliations/{reconciliation_id}",
        response_model=ReconciliationOut,
        dependencies=[Auth],
        tags=["reconciliations"],
    )
    def get_reconciliation(reconciliation_id: PathId) -> ReconciliationOut:
        with core.engine.connect() as c:
            r = c.execute(
                select(reconciliations).where(reconciliations.c.id == reconciliation_id)
            ).first()
        if r is None:
            raise CoreError(
                404,
                "reconciliation-not-found",
                f"no reconciliation {reconciliation_id}",
                "reconciliation_id",
            )
        return ReconciliationOut(
            id=r.id, matched=r.matched, breaks=r.breaks, created_at=_utc(r.created_at)
        )

    app.add_middleware(obs.HttpObserve, routes=app.router.routes)
    return app
