"""ISO 20022 for the payment core: pain.001 intake and pacs.008 settlement files.

- :func:`parse_pain001` (pain.001.001.09): a customer credit transfer initiation file
  validated against the XSD, each transaction a :class:`PaymentInstruction`; a refused file
  raises :class:`IsoError` whose ``problems`` name line and field (XPath).
- :func:`build_settlement` (pacs.008.001.08): one message per counterparty's net settlement,
  with its Business Application Header, XSD-validated, signed through custody as
  ``iso20022`` (an Ed25519 key) and placed as an XML signature
  (:meth:`SettlementMessage.signed`).
- :func:`verify_settlement`: what a receiving bank runs on a signed file
  (:func:`custody.xmldsig.verify_settlement` with the packaged pacs.008 XSD applied).

The XSDs are the ISO 20022 message definitions, packaged under ``schemas/``.

May import: ``custody`` only.
"""

from __future__ import annotations

from custody.xmldsig import SettlementReport
from custody.xmldsig import verify_settlement as _verify
from payments.iso20022._xml import IsoError, Problem, schema
from payments.iso20022.pacs008 import (
    NetSettlement,
    Party,
    SettlementMessage,
    build_settlement,
    build_settlements,
)
from payments.iso20022.pain001 import Pain001, PaymentInstruction, parse_pain001

__all__ = [
    "IsoError",
    "Problem",
    "Pain001",
    "PaymentInstruction",
    "parse_pain001",
    "Party",
    "NetSettlement",
    "SettlementMessage",
    "build_settlement",
    "build_settlements",
    "SettlementReport",
    "verify_settlement",
]


def verify_settlement(xml: bytes | str, public_key: bytes) -> SettlementReport:
    """:func:`custody.xmldsig.verify_settlement` with the pacs.008.001.08 XSD applied."""
    return _verify(xml, public_key, schema=schema("pacs.008.001.08"))
