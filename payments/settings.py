"""Every setting of the payment service, from ``PAYMENTS_*`` environment variables.

=================================  ========================================================
``PAYMENTS_DATABASE_URL``          SQLAlchemy URL (``sqlite:///payments.db``; or
                                   ``postgresql+psycopg://...``)
``PAYMENTS_BOOK_DATABASE_URL``     the internal book's own journal (the counterparty side)
``PAYMENTS_TOKEN``                 the bearer token clients present (required)
``PAYMENTS_HOST`` / ``_PORT``      where it listens (127.0.0.1:7300)
``PAYMENTS_CUSTODY_URL``           the coordinator; the core signs only through
                                   :class:`custody.client.CustodyClient`
``PAYMENTS_CUSTODY_TOKEN``         a ``requester`` credential of the coordinator (no
                                   token: no rails, no worker; the API still serves)
``PAYMENTS_BOOK_KEY_ID``           the custody Ed25519 key that signs book transfers
``PAYMENTS_SETTLEMENT_KEY_ID``     the custody Ed25519 key that signs pacs.008 settlement
                                   files (``iso20022``; no key: no settlement rail)
``PAYMENTS_BANK_BIC`` / ``_NAME``  this bank in ISO 20022 files: its BIC (a creditor agent
``PAYMENTS_BANK_IBAN``             of this BIC is a book transfer), name and the IBAN of
                                   its settlement account (the pacs.008 debtor)
``PAYMENTS_COUNTERPARTIES_FILE``   JSON ``{BIC: {"name", "iban"}}``: the banks this one
                                   settles with (default: the fictitious demo list)
``PAYMENTS_WORKER``                run the worker in the service (default true)
``PAYMENTS_WORKER_INTERVAL``       seconds between worker passes (0.2)
``PAYMENTS_SANCTIONS_DIR``         a directory with ``sdn.csv`` and ``add.csv`` (OFAC
                                   layout; default: the fictitious fixture)
``PAYMENTS_DECLINE_SCORE``         risk score from which a payment is declined (70)
``PAYMENTS_VELOCITY_WINDOW_S``     the velocity window (600) and
``PAYMENTS_VELOCITY_MAX``          the payments in it from which velocity scores (5)
``PAYMENTS_ZSCORE_MIN_HISTORY``    past payments needed before the z-score counts (5)
``PAYMENTS_EVM_KEY_ID``            the custody ``ecdsa-secp256k1`` key of the ``ethereum``
                                   rail (unset: no ethereum rail)
``PAYMENTS_EVM_RPC_URL``           an Ethereum JSON-RPC endpoint; unset: the in-process
                                   eth-tester chain (development only: it lives and dies
                                   with the process)
``PAYMENTS_EVM_CHAIN_ID``          the chain id the rail must find at the endpoint
``PAYMENTS_EVM_CONFIRMATIONS``     confirmations before ``confirmed`` (1)
``PAYMENTS_EVM_TOKENS``            ERC-20s paid, ``ASSET:0xaddress:decimals`` comma
                                   separated (with ``PAYMENTS_DEV_CHAINS``: the test token
                                   ``TPT`` is added)
``PAYMENTS_BTC_KEY_ID``            the custody ``bip340`` key of the ``bitcoin`` rail
``PAYMENTS_BTC_RPC_URL``           a Bitcoin Core JSON-RPC endpoint; unset: the in-process
                                   regtest UTXO set (development only, mines a block per
                                   accepted transaction)
``PAYMENTS_BTC_FEE_RATE``          sat/vB paid (``2``)
``PAYMENTS_BTC_CONFIRMATIONS``     confirmations before ``confirmed`` (1)
``PAYMENTS_DEV_CHAINS``            DEVELOPMENT ONLY: at start, fund the rails' keys on the
                                   IN-PROCESS chains (tester genesis -> the key's address,
                                   the test token deployed and some given to it; a regtest
                                   coinbase -> the key's BIP-86 address); refused with an
                                   RPC URL (never silently on a real chain)
``PAYMENTS_FAULT_PAUSE_AT``        TESTS ONLY: the worker stops at this step
                                   (``after-prepare``, ``after-sign-submit``,
                                   ``after-broadcast``) and writes ``PAYMENTS_FAULT_MARKER``
=================================  ========================================================
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DATA = Path(__file__).resolve().parent / "lists"


class PaymentsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    database_url: str = "sqlite:///payments.db"
    # the internal book's own journal (the counterparty's side of a book transfer)
    book_database_url: str = "sqlite:///payments-book.db"
    token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 7300
    custody_url: str = "http://127.0.0.1:7100"
    custody_token: SecretStr | None = None
    book_key_id: str | None = None
    # ISO 20022: the settlement key, this bank, the counterparties it settles with
    settlement_key_id: str | None = None
    bank_bic: str = "DEUTDEFFXXX"
    bank_name: str = "TP Wallet Custody AG"
    bank_iban: str = "DE89370400440532013000"
    counterparties_file: Path = PACKAGE_DATA / "counterparties.json"
    worker: bool = True
    worker_interval: float = Field(default=0.2, gt=0)
    sanctions_dir: Path = PACKAGE_DATA / "sanctions"
    # risk
    decline_score: int = 70
    velocity_window_s: int = 600
    velocity_max: int = 5
    zscore_min_history: int = 5
    # chain rails (payments.evm_rail, payments.btc_rail)
    evm_key_id: str | None = None
    evm_rpc_url: str | None = None
    evm_chain_id: int | None = None
    evm_confirmations: int = Field(default=1, ge=1)
    evm_tokens: str = ""
    btc_key_id: str | None = None
    btc_rpc_url: str | None = None
    btc_fee_rate: str = "2"
    btc_confirmations: int = Field(default=1, ge=1)
    dev_chains: bool = False
    # tests only: the worker stops (sleeps) at this step, so a test can SIGKILL the process
    # at a known point of a payment ("after-sign-submit", "after-broadcast")
    fault_pause_at: str | None = None
    fault_marker: Path | None = None
