"""The internal book-transfer rail: a transfer between two accounts of this custodian.

A real rail, not a stand-in for a chain: the instruction is a canonical statement
(:func:`instruction_bytes`, UTF-8 JSON with sorted keys, prefixed by a domain tag) that
custody signs as a ``message`` with the Ed25519 book key; the book (its own journal, in its
own database, as a counterparty would keep it) accepts an instruction only with a
signature that verifies under the book key (checked with pynacl, independently of custody)
and keys its journal on the instruction's SHA-256, so broadcasting the same instruction
twice records it once. An accepted instruction is final: confirmed with one confirmation.

The destination is the id of a customer account of the same asset in the payment ledger;
the payment core credits it when the payment settles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from typing import Any, Final

import nacl.exceptions
import nacl.signing
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)

from custody.domain import Scheme
from payments.db import migrate
from payments.rails import (
    CustodySignature,
    Instruction,
    RailError,
    RailRecord,
    Signed,
    Status,
    Unsigned,
)

TAG: Final = b"tp-custody/book-transfer/v1\n"

book_metadata = MetaData()
journal = Table(
    "book_journal",
    book_metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("ref", String(64), nullable=False, unique=True),  # sha256 of the instruction
    Column("payment_id", String(40), nullable=True),
    Column("asset", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("destination", String(128), nullable=False),
    Column("instruction", Text, nullable=False),
    Column("signature", String(128), nullable=False),
    Column("accepted_at", DateTime(timezone=True), nullable=False),
)


def instruction_bytes(i: Instruction, key_id: str) -> bytes:
    doc = {
        "amount": str(i.amount),
        "asset": i.asset,
        "end_to_end_id": i.end_to_end_id,
        "from_key": key_id,
        "payment_id": i.payment_id,
        "to_account": i.destination,
    }
    return TAG + json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class BookRail:
    name = "book"
    scheme: Scheme = "ed25519"

    def __init__(
        self,
        engine: Engine,
        key_id: str,
        public_key: str,
    ) -> None:
        """``public_key``: the book key's Ed25519 public key (hex), as the book was told it
        out of band; every instruction it accepts must verify under it."""
        self.engine = engine
        self.key_id = key_id
        self.public_key = _hex(public_key, "public_key", 32)
        migrate(engine, "book")  # its journal's schema (payments/migrations, branch book)

    def validate(self, instruction: Instruction) -> list[str]:
        return []  # the destination is an account of the ledger: the core checks it

    def fee_estimate(self, instruction: Instruction) -> int:
        return 0  # book transfers carry no fee

    def build(self, instruction: Instruction) -> Unsigned:
        msg = instruction_bytes(instruction, self.key_id)
        return Unsigned("message", {"message": "0x" + msg.hex()}, 0, {})

    def attach(self, unsigned: Unsigned, signature: CustodySignature, public_key: str) -> Signed:
        msg = bytes.fromhex(unsigned.payload["message"].removeprefix("0x"))
        sig = _hex(signature.signature, "signature", 64)
        _verify(_hex(public_key, "public_key", 32), msg, sig)
        raw = (sig + msg).hex()
        return Signed(raw, hashlib.sha256(msg).hexdigest())

    def _verify_raw(self, raw: str) -> tuple[bytes, bytes, dict[str, Any]]:
        blob = bytes.fromhex(raw)
        sig, msg = blob[:64], blob[64:]
        if not msg.startswith(TAG):
            raise RailError("not a book instruction (domain tag missing)", "instruction")
        _verify(self.public_key, msg, sig)  # the book checks for itself, whatever attach did
        return sig, msg, json.loads(msg[len(TAG) :])

    def broadcast(self, signed: Signed) -> str:
        sig, msg, doc = self._verify_raw(signed.raw)
        ref = hashlib.sha256(msg).hexdigest()
        with self.engine.begin() as conn:
            if conn.execute(select(journal.c.id).where(journal.c.ref == ref)).first():
                return ref  # already accepted: the same instruction is recorded once
            conn.execute(
                insert(journal).values(
                    ref=ref,
                    payment_id=doc["payment_id"],
                    asset=doc["asset"],
                    amount=int(doc["amount"]),
                    destination=doc["to_account"],
                    instruction=msg.hex(),
                    signature=sig.hex(),
                    accepted_at=dt.datetime.now(dt.UTC),
                )
            )
        return ref

    def status(self, ref: str) -> Status:
        with self.engine.connect() as conn:
            row = conn.execute(select(journal.c.id).where(journal.c.ref == ref)).first()
        if row is None:
            return Status("pending", 0, "not in the book's journal")
        return Status("confirmed", 1, "accepted into the book")

    def records(self) -> Iterable[RailRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(journal).order_by(journal.c.id)).all()
        return [RailRecord(r.ref, r.payment_id, r.asset, r.amount) for r in rows]


def _verify(public_key: bytes, msg: bytes, sig: bytes) -> None:
    """Ed25519 (RFC 8032) verification by libsodium through pynacl, not by our code."""
    try:
        nacl.signing.VerifyKey(public_key).verify(msg, sig)
    except (nacl.exceptions.BadSignatureError, ValueError):
        raise RailError(
            "the book refuses the instruction: its signature does not verify under the book key",
            "signature",
        ) from None


def _hex(value: str, field: str, length: int) -> bytes:
    try:
        b = bytes.fromhex(value)
    except (ValueError, TypeError):
        raise RailError(f"{field} is not hex", field) from None
    if len(b) != length:
        raise RailError(f"{field} is {len(b)} bytes, not {length}", field)
    return b
