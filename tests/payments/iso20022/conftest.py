"""A 2-of-3 FROST(Ed25519) key from an in-process DKG: settlement files are signed by a
threshold of shares, never by a whole key (the rule holds in tests too)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import pytest

from mpc import frost
from mpc.shamir import KeyPackage
from mpc.testing import run_dkg_local
from payments.iso20022 import NetSettlement, Party

OURS = Party("TP Wallet Custody AG", "DEUTDEFFXXX", "DE89370400440532013000")
BOB = Party("Banque Bob SA", "BNPAFRPP", "FR1420041010050500013M02606")


@dataclass
class ThresholdKey:
    keys: dict[int, KeyPackage]

    @property
    def public_key(self) -> bytes:
        suite = frost.ciphersuite("ed25519")
        return suite.encode_public_key(self.keys[1].public.group_public_key)

    def sign(self, message: bytes, signers: tuple[int, int] = (1, 3)) -> bytes:
        """RFC 9591 section 5: commit, sign and aggregate by two of the three holders."""
        suite = frost.ciphersuite("ed25519")
        pairs = {i: frost.commit(suite, self.keys[i]) for i in signers}
        pkg = frost.signing_package([pairs[i][1] for i in signers], message)
        shares = [frost.sign(pkg, pairs[i][0], self.keys[i]) for i in signers]
        return frost.aggregate(pkg, shares, self.keys[signers[0]].public)


@pytest.fixture(scope="session")
def threshold_key() -> ThresholdKey:
    group = frost.ciphersuite("ed25519").group
    return ThresholdKey({kp.identifier: kp for kp in run_dkg_local(group, 2, 3)})


def net(
    amount: str = "1500.25",
    ccy: str = "EUR",
    ids: tuple[str, ...] = ("E2E-1", "E2E-2"),
    counterparty: Party = BOB,
    sid: str = "SET-20261201-BOB",
) -> NetSettlement:
    return NetSettlement(
        settlement_id=sid,
        currency=ccy,
        net_amount=Decimal(amount),
        ours=OURS,
        counterparty=counterparty,
        end_to_end_ids=ids,
        settlement_date=dt.date(2026, 12, 1),
    )


CREATED = dt.datetime(2026, 12, 1, 17, 0, tzinfo=dt.UTC)
