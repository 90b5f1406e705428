"""Composition of the payment service from its settings: database, sanctions list,
rails, custody client, worker, app."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import Connection

from custody.client import CustodyClient
from payments import ledger, risk
from payments.app import create_app
from payments.book import BookRail
from payments.core import PaymentCore
from payments.db import create_schema, make_engine
from payments.intake import Pain001Intake
from payments.iso20022 import Party
from payments.rails import Instruction, Rail
from payments.sanctions import SanctionsList
from payments.settings import PaymentsSettings
from payments.settlement import SettlementRail, Settler, load_counterparties
from payments.worker import Worker


def book_destination_check(conn: Connection, i: Instruction) -> list[str]:
    """A book transfer goes to another customer account of the same asset in this ledger."""
    acct = ledger.account(conn, i.destination)
    if acct is None or acct.kind != "customer":
        return [f"destination {i.destination} is not a customer account of this book"]
    if acct.asset != i.asset:
        return [f"destination account {i.destination} holds {acct.asset}, not {i.asset}"]
    return []


def build(settings: PaymentsSettings) -> tuple[FastAPI, PaymentCore]:
    engine = make_engine(settings.database_url)
    create_schema(engine)
    rails: dict[str, Rail] = {}
    custody = None
    if settings.custody_token is not None:
        custody = CustodyClient(settings.custody_url, settings.custody_token.get_secret_value())
        if settings.book_key_id:
            key = custody.get_key(settings.book_key_id)
            if key.scheme != "ed25519" or not key.public_key:
                raise SystemExit(
                    f"PAYMENTS_BOOK_KEY_ID {key.id}: an active ed25519 key is needed, "
                    f"not {key.scheme} {key.status}"
                )
            book_engine = make_engine(settings.book_database_url)
            rails["book"] = BookRail(book_engine, key.id, key.public_key)
    settlement_rail, settlement_pk = None, ""
    if custody is not None and settings.settlement_key_id:
        skey = custody.get_key(settings.settlement_key_id)
        if skey.scheme != "ed25519" or not skey.public_key:
            raise SystemExit(
                f"PAYMENTS_SETTLEMENT_KEY_ID {skey.id}: an active ed25519 key is needed, "
                f"not {skey.scheme} {skey.status}"
            )
        settlement_pk = skey.public_key
        settlement_rail = SettlementRail(skey.id, load_counterparties(settings.counterparties_file))
    core = PaymentCore(
        engine,
        SanctionsList.load(settings.sanctions_dir),
        risk.Settings(
            settings.decline_score,
            settings.velocity_window_s,
            settings.velocity_max,
            settings.zscore_min_history,
        ),
        rails,
        {"book": book_destination_check},
        {settlement_rail.name: settlement_rail} if settlement_rail else {},
    )
    settler = None
    if custody is not None and settlement_rail is not None:
        ours = Party(settings.bank_name, settings.bank_bic, settings.bank_iban)
        try:
            settler = Settler(core, custody, settlement_rail, settlement_pk, ours)
        except ValueError as exc:
            raise SystemExit(f"PAYMENTS_BANK_BIC / PAYMENTS_BANK_IBAN: {exc}") from None
    worker = None
    if custody is not None and settings.worker:
        worker = Worker(
            core, custody, pause_at=settings.fault_pause_at, marker=settings.fault_marker
        )
    if settings.token is None:
        raise SystemExit(
            "PAYMENTS_TOKEN is not set: the service needs a bearer token for its clients"
        )
    app = create_app(
        core,
        settings.token.get_secret_value(),
        worker,
        settings.worker_interval,
        intake=Pain001Intake(engine, settings.bank_bic),
        settler=settler,
    )
    return app, core
