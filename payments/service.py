"""Composition of the payment service from its settings: database, sanctions list,
rails (``book``; ``ethereum`` and ``bitcoin`` when their key ids are set), custody client,
worker, app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from fastapi import FastAPI
from sqlalchemy import Connection, Engine

from custody import obs
from custody.client import CustodyClient
from custody.models import KeyOut
from payments import ledger, risk
from payments.app import create_app
from payments.book import BookRail
from payments.btc import BitcoinChain, FeeRate, Regtest, TxStatus, Utxo
from payments.btc_rail import BitcoinCoreRpc, BitcoinPayRail
from payments.core import PaymentCore
from payments.db import create_schema, make_engine
from payments.evm import Chain, EthTesterChain, JsonRpcChain, deploy_test_token, give_tokens
from payments.evm.tx import parse_address
from payments.evm_rail import EthereumRail, Token
from payments.evm_rail import checks as evm_checks
from payments.intake import Pain001Intake
from payments.iso20022 import Party
from payments.rails import Instruction, Rail
from payments.sanctions import SanctionsList
from payments.settings import PaymentsSettings
from payments.settlement import SettlementRail, Settler, load_counterparties
from payments.worker import Worker

log = obs.get_logger("payments.service")


def book_destination_check(conn: Connection, i: Instruction) -> list[str]:
    """A book transfer goes to another customer account of the same asset in this ledger."""
    acct = ledger.account(conn, i.destination)
    if acct is None or acct.kind != "customer":
        return [f"destination {i.destination} is not a customer account of this book"]
    if acct.asset != i.asset:
        return [f"destination account {i.destination} holds {acct.asset}, not {i.asset}"]
    return []


DEV_ERC20_ADDRESS: Final = (
    "0xF2E246BB76DF876Cef8b38ae84130F4F55De395b"  # genesis account 0's 1st tx
)
DEV_ETH_FUNDING: Final = 100 * 10**18  # wei
DEV_TOKEN_FUNDING: Final = 1_000_000 * 10**6  # test token base units (6 decimals)
DEV_BTC_FUNDING: Final = (50_000_000, 20_000_000, 10_000_000, 5_000_000)  # sat


def parse_tokens(text: str) -> list[Token]:
    """``ASSET:0xaddress:decimals[,...]``; a malformed entry is named."""
    out = []
    for n, item in enumerate(x.strip() for x in text.split(",") if x.strip()):
        parts = item.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise SystemExit(
                f"PAYMENTS_EVM_TOKENS entry {n} {item!r}: want ASSET:0xaddress:decimals"
            )
        out.append(
            Token(parts[0], parse_address(parts[1], f"PAYMENTS_EVM_TOKENS[{n}]"), int(parts[2]))
        )
    return out


class AutoMiningRegtest:
    """The in-process regtest set with a block mined after every accepted transaction
    (development: nobody else mines it), as eth-tester auto-mines."""

    def __init__(self, chain: Regtest) -> None:
        self.chain = chain

    @property
    def height(self) -> int:
        return self.chain.height

    def utxos(self, script: bytes) -> list[Utxo]:
        return self.chain.utxos(script)

    def accept(self, tx_hex: str) -> str:
        txid = self.chain.accept(tx_hex)
        self.chain.mine(1)
        return txid

    def status(self, txid: str) -> TxStatus:
        return self.chain.status(txid)


def _active(custody: CustodyClient, key_id: str, scheme: str, setting: str) -> KeyOut:
    key = custody.get_key(key_id)
    if key.scheme != scheme or key.status != "active" or not key.public_key:
        raise SystemExit(
            f"{setting} {key.id}: an active {scheme} key is needed, not {key.scheme} {key.status}"
        )
    return key


def chain_rails(
    settings: PaymentsSettings, engine: Engine, custody: CustodyClient
) -> tuple[list[Rail], dict[str, Callable[[Connection, Instruction], list[str]]]]:
    """The ``ethereum`` and ``bitcoin`` rails the settings ask for (module docstring of
    :mod:`payments.settings`), and their authorization checks."""
    rails: list[Rail] = []
    checks: dict[str, Callable[[Connection, Instruction], list[str]]] = {}
    dev = settings.dev_chains
    if dev and (settings.evm_rpc_url or settings.btc_rpc_url):
        raise SystemExit(
            "PAYMENTS_DEV_CHAINS funds keys on the in-process chains only; it is refused "
            "with PAYMENTS_EVM_RPC_URL or PAYMENTS_BTC_RPC_URL set"
        )
    if settings.evm_key_id:
        key = _active(custody, settings.evm_key_id, "ecdsa-secp256k1", "PAYMENTS_EVM_KEY_ID")
        tokens = parse_tokens(settings.evm_tokens)
        chain: Chain
        if settings.evm_rpc_url:
            chain = JsonRpcChain(settings.evm_rpc_url)
        else:
            tester = EthTesterChain()
            if dev:  # development only (settings docstring): genesis -> the key's address
                token = deploy_test_token(tester)  # genesis account 0's first transaction
                if token != DEV_ERC20_ADDRESS:
                    raise SystemExit(f"the test token deployed at {token}, not {DEV_ERC20_ADDRESS}")
                address = key.addresses["ethereum"]
                tester.fund(address, DEV_ETH_FUNDING)
                give_tokens(tester, token, address, DEV_TOKEN_FUNDING)
                tokens.append(Token("TPT", token, 6))
                log.warning("payments.dev_chain_funded", rail="ethereum", address=address)
            chain = tester
        eth = EthereumRail(
            engine,
            chain,
            key,
            tokens=tokens,
            chain_id=settings.evm_chain_id,
            required_confirmations=settings.evm_confirmations,
            fresh_chain=settings.evm_rpc_url is None,  # the in-process chain starts empty
        )
        rails.append(eth)
        checks.update(evm_checks(eth))
    if settings.btc_key_id:
        key = _active(custody, settings.btc_key_id, "bip340", "PAYMENTS_BTC_KEY_ID")
        btc_chain: BitcoinChain
        if settings.btc_rpc_url:
            btc_chain = BitcoinCoreRpc(settings.btc_rpc_url)
        else:
            regtest = Regtest(key.network or "regtest")
            if dev:  # development only: a coinbase to the key's BIP-86 address
                regtest.fund(key.addresses["bitcoin"], list(DEV_BTC_FUNDING))
                log.warning(
                    "payments.dev_chain_funded", rail="bitcoin", address=key.addresses["bitcoin"]
                )
            btc_chain = AutoMiningRegtest(regtest)
        rails.append(
            BitcoinPayRail(
                engine,
                custody,
                key,
                btc_chain,
                fee_rate=FeeRate.sat_per_vb(settings.btc_fee_rate),
                required_confirmations=settings.btc_confirmations,
            )
        )
    return rails, checks


def build(settings: PaymentsSettings) -> tuple[FastAPI, PaymentCore]:
    engine = make_engine(settings.database_url)
    create_schema(engine)
    rails: dict[str, Rail] = {}
    custody = None
    chain_checks: dict[str, Callable[[Connection, Instruction], list[str]]] = {}
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
        more, chain_checks = chain_rails(settings, engine, custody)
        rails.update({r.name: r for r in more})
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
        {"book": book_destination_check, **chain_checks},
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
