"""The interface every payment rail implements, and what the payment core hands it.

A rail turns an authorized payment into exactly the bytes custody decodes and signs for
its request ``kind``, attaches custody's signature, broadcasts the result and reports its
confirmation; it also lists what it has accepted so reconciliation can match the ledger
against it. The rails (``payments/evm``, ``payments/btc``, ``payments/iso20022``) each
implement :class:`Rail`; :mod:`payments.book` is the internal book-transfer rail.

Contract (what the worker relies on for "never pays twice"):

- :meth:`Rail.build` is called once per payment and its :class:`Unsigned` is persisted
  before custody is asked, so a restart re-submits the same bytes (a rail with state, like
  EVM nonces, allocates it inside ``build``);
- :meth:`Rail.broadcast` is idempotent: the same :class:`Signed` broadcast again returns
  the same reference and moves nothing a second time (a chain refuses a known
  transaction; the book keys its journal on the instruction digest);
- :meth:`Rail.status` is a read;
- :class:`RailError` means a definitive refusal (nothing was or can be accepted: a bad
  signature, an invalid transaction): the worker fails the payment and returns its funds.
  Any other exception (a node down, a timeout) is retried on the next pass, so a rail must
  never raise :class:`RailError` for a broadcast whose outcome it does not know.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from custody.domain import Kind, Scheme


@dataclass(frozen=True)
class Instruction:
    """What the payment core asks a rail to move."""

    payment_id: str
    asset: str
    amount: int  # base units
    destination: str
    end_to_end_id: str | None = None


@dataclass(frozen=True)
class Unsigned:
    """What custody is asked to sign: ``kind`` and ``payload`` as the coordinator takes
    them; ``state`` is the rail's own (JSON) to finish the job in :meth:`Rail.attach`."""

    kind: Kind
    payload: dict[str, Any]
    fee: int = 0
    state: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "payload": self.payload, "fee": self.fee, "state": self.state}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Unsigned:
        return cls(doc["kind"], doc["payload"], int(doc.get("fee", 0)), dict(doc.get("state", {})))


@dataclass(frozen=True)
class CustodySignature:
    """What custody returned for the request (from ``SignRequestOut``): the rail checks it
    and builds the signed form from it."""

    signature: str  # hex: 64 bytes (ed25519, bip340, ecdsa r||s); btc-psbt: 64 per input
    recovery_id: int | None = None  # ecdsa-secp256k1
    signed_tx: str | None = None  # evm-tx / btc-psbt: custody's result.signed_tx
    sign_request_id: str | None = None


@dataclass(frozen=True)
class Signed:
    raw: str  # hex: the signed transaction / instruction as it goes on the rail
    ref: str  # the rail's reference for it (tx hash, txid, book digest, message id)


@dataclass(frozen=True)
class Status:
    state: Literal["pending", "confirmed", "failed"]
    confirmations: int = 0
    detail: str = ""
    # confirmed: the fee the rail actually charged, in the payment asset's ledger units
    # (None: no fee in that asset); the worker books the difference to the authorized fee
    # back to the customer. ``facts``: recorded with the PaymentConfirmed event (e.g. the
    # fee in wei and its rounding to ledger units)
    fee: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RailRecord:
    """One movement the rail reports (for reconciliation)."""

    ref: str
    payment_id: str | None
    asset: str
    amount: int


class RailError(Exception):
    """The rail refused (``field`` names what, when it is one field of the instruction)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@runtime_checkable
class Rail(Protocol):
    name: str
    scheme: Scheme  # the custody key's scheme this rail signs with
    key_id: str  # the custody key

    def validate(self, instruction: Instruction) -> list[str]:
        """Readable reasons the rail cannot carry ``instruction`` (empty: it can)."""
        ...

    def fee_estimate(self, instruction: Instruction) -> int:
        """The most the rail's fee may be (reserved with the amount at authorization)."""
        ...

    def build(self, instruction: Instruction) -> Unsigned: ...

    def attach(self, unsigned: Unsigned, signature: CustodySignature, public_key: str) -> Signed:
        """The signed form, from what custody returned and the key's public key (hex, as
        ``KeyOut.public_key``); raises :class:`RailError` when the signature does not
        verify (checked with an independent library, not by our code)."""
        ...

    def broadcast(self, signed: Signed) -> str: ...

    def status(self, ref: str) -> Status: ...

    def records(self) -> Iterable[RailRecord]: ...


@dataclass(frozen=True)
class IntakeTransaction:
    """One credit transfer of an intake batch (a pain.001 ``CdtTrfTxInf``), mapped onto
    this ledger by the parser: the debtor's account here, the creditor as a destination."""

    end_to_end_id: str
    account_id: str
    amount: int  # base units of the account's asset
    destination: str
    rail: str


class BatchParser(Protocol):
    """An intake format (``payments/iso20022``: pain.001.001.09 validated against its XSD)."""

    def parse(self, document: bytes) -> tuple[str, list[IntakeTransaction]]:
        """``(message id, transactions)``; raises ``ValueError`` naming the line and the
        field of the first error of a malformed document."""
        ...
