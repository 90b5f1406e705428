"""pain.001 intake: the :class:`payments.rails.BatchParser` that turns a customer credit
transfer initiation file (pain.001.001.09, :func:`payments.iso20022.parse_pain001`:
defused parse, XSD, IBAN/BIC/ISO 4217 checks) into payments of this ledger.

How a transaction maps onto the ledger (decided here, documented in
``docs/ARCHITECTURE.md``, payments):

- the debtor: ``PmtInf/DbtrAgt`` must be this bank (``PAYMENTS_BANK_BIC``) and
  ``PmtInf/DbtrAcct`` the IBAN that owns a customer account here in the transaction's
  currency (a customer's ``owner`` is the IBAN its bank gave it); the amount in the
  account's base units (``InstdAmt`` times 10**decimals, exactly);
- the creditor: when ``CdtrAgt`` is this bank, ``CdtrAcct`` must be a customer account
  here in that currency and the payment goes on the ``book`` rail to that account (an
  internal transfer, final at once); any other creditor agent makes it an ``iso20022``
  payment to ``BIC/IBAN`` (:func:`destination`), reserved now and paid in the next
  settlement window's net pacs.008 to that bank (:mod:`payments.settlement`).

Every fault of the file is reported at once, each with its line and field (an XPath), as
:class:`payments.iso20022.IsoError` (a ``ValueError``); nothing of a refused file is
imported.
"""

from __future__ import annotations

from sqlalchemy import Engine, and_, select

from payments.db import accounts, assets
from payments.iso20022 import IsoError, PaymentInstruction, Problem, parse_pain001
from payments.iso20022._xml import check_bic, check_iban
from payments.rails import IntakeTransaction

BOOK, SETTLEMENT = "book", "iso20022"
_TX = "/Document/CstmrCdtTrfInitn/PmtInf[{b}]/CdtTrfTxInf[{t}]"
_BLOCK = "/Document/CstmrCdtTrfInitn/PmtInf[{b}]"


def bic11(bic: str) -> str:
    """A BIC in its 11-character form (a BIC8 is the head office, branch ``XXX``)."""
    b = check_bic(bic).upper()
    return b + "XXX" if len(b) == 8 else b


def destination(bic: str, iban: str) -> str:
    """The ``iso20022`` destination of a creditor: ``BIC11/IBAN``."""
    return f"{bic11(bic)}/{iban}"


def split_destination(dest: str) -> tuple[str, str]:
    """``(BIC11, IBAN)`` of an ``iso20022`` destination; ``ValueError`` if malformed."""
    bic, sep, iban = dest.partition("/")
    if not sep or not bic or not iban:
        raise ValueError(f"destination {dest!r} is not BIC/IBAN")
    return bic11(bic), check_iban(iban)


class Pain001Intake:
    """The pain.001.001.09 :class:`~payments.rails.BatchParser` of this ledger."""

    def __init__(self, engine: Engine, bank_bic: str) -> None:
        self.engine = engine
        self.bank_bic = bic11(bank_bic)

    def _account(self, owner: str, asset: str) -> tuple[str, int] | None:
        with self.engine.connect() as c:
            r = c.execute(
                select(accounts.c.id, assets.c.decimals)
                .join(assets, assets.c.code == accounts.c.asset)
                .where(
                    and_(
                        accounts.c.owner == owner,
                        accounts.c.asset == asset,
                        accounts.c.kind == "customer",
                    )
                )
            ).first()
        return (str(r.id), int(r.decimals)) if r else None

    def parse(self, document: bytes) -> tuple[str, list[IntakeTransaction]]:
        """``(GrpHdr/MsgId, one transaction per CdtTrfTxInf)``; :class:`IsoError` listing
        every problem (line and field) of a refused file."""
        doc = parse_pain001(document)
        problems: list[Problem] = []
        out: list[IntakeTransaction] = []
        blocks: dict[str, int] = {}
        in_block: dict[str, int] = {}
        for p in doc.payments:
            b = blocks.setdefault(p.payment_info_id, len(blocks) + 1)
            in_block[p.payment_info_id] = t = in_block.get(p.payment_info_id, 0) + 1
            tx = self._one(p, b, t, problems)
            if tx is not None:
                out.append(tx)
        if problems:
            raise IsoError(problems)
        return doc.message_id, out

    def _one(
        self, p: PaymentInstruction, b: int, t: int, problems: list[Problem]
    ) -> IntakeTransaction | None:
        tx, block = _TX.format(b=b, t=t), _BLOCK.format(b=b)
        ok = True
        if bic11(p.debtor_agent) != self.bank_bic:
            problems.append(
                Problem(
                    p.line,
                    block + "/DbtrAgt/FinInstnId/BICFI",
                    f"debtor agent {p.debtor_agent} is not this bank ({self.bank_bic}): "
                    "only this bank's customers initiate payments here",
                )
            )
            ok = False
        debtor = self._account(p.debtor_account, p.currency)
        if debtor is None:
            problems.append(
                Problem(
                    p.line,
                    block + "/DbtrAcct/Id/IBAN",
                    f"no {p.currency} customer account of this bank for IBAN {p.debtor_account}",
                )
            )
            return None
        account_id, decimals = debtor
        units = p.amount.scaleb(decimals)
        if units != units.to_integral_value() or units <= 0:
            problems.append(
                Problem(
                    p.line,
                    tx + "/Amt/InstdAmt",
                    f"{p.amount} {p.currency} is not a whole number of the account's base "
                    f"units ({decimals} decimals)",
                )
            )
            ok = False
        if bic11(p.creditor_agent) == self.bank_bic:
            creditor = self._account(p.creditor_account, p.currency)
            if creditor is None:
                problems.append(
                    Problem(
                        p.line,
                        tx + "/CdtrAcct/Id/IBAN",
                        f"the creditor agent is this bank, but IBAN {p.creditor_account} is "
                        f"no {p.currency} customer account of it",
                    )
                )
                return None
            rail, dest = BOOK, creditor[0]
        else:
            rail, dest = SETTLEMENT, destination(p.creditor_agent, p.creditor_account)
        if not ok:
            return None
        return IntakeTransaction(
            end_to_end_id=p.end_to_end_id,
            account_id=account_id,
            amount=int(units.to_integral_value()),
            destination=dest,
            rail=rail,
        )


__all__ = ["Pain001Intake", "destination", "split_destination", "bic11", "BOOK", "SETTLEMENT"]
