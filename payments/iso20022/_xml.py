"""What intake and settlement share: defused parsing with line numbers, the packaged XSDs,
ISO 4217 exponents, IBAN/BIC checks, and one error type that names line and field."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Final

import iso4217
import schwifty
import schwifty.exceptions
import xmlschema
from lxml import etree

__all__ = [
    "Problem",
    "IsoError",
    "parse_defused",
    "schema",
    "exponent",
    "check_amount",
    "check_iban",
    "check_bic",
    "MAX_FILE",
]

MAX_FILE: Final = 16 * 1024 * 1024  # bytes of one pain.001 file
# A DTD, an entity declaration or a processing instruction other than the XML declaration
_FORBIDDEN: Final = re.compile(rb"<!DOCTYPE|<!ENTITY|<\?(?!xml[ \t\r\n])", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    """One refusal: the 1-based ``line`` (0 when the file has no line to point at), the
    ``field`` as an XPath of local names with 1-based positions (``/Document/
    CstmrCdtTrfInitn/PmtInf[2]/CdtTrfTxInf[1]/PmtId``), and ``reason`` in plain words."""

    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}"


class IsoError(ValueError):
    """A file refused; ``problems`` lists every fault found (at least one)."""

    def __init__(self, problems: list[Problem]) -> None:
        assert problems
        self.problems = tuple(problems)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=False,
    )


def parse_defused(data: bytes) -> etree._Element:
    """Parse ``data`` refusing a DTD, entity declarations and references, processing
    instructions, network access and huge trees (XXE, billion laughs); the error names the
    line. lxml keeps each element's ``sourceline``."""
    if len(data) > MAX_FILE:
        raise IsoError([Problem(0, "/", f"larger than {MAX_FILE} bytes")])
    bad = _FORBIDDEN.search(data)
    if bad:
        line = data.count(b"\n", 0, bad.start()) + 1
        what = bad.group(0).decode("ascii", "replace")
        raise IsoError(
            [
                Problem(
                    line, "/", f"{what!r}: DTDs, entities and processing instructions are refused"
                )
            ]
        )
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise IsoError([Problem(exc.lineno or 0, "/", f"not well-formed XML: {exc.msg}")]) from None
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise IsoError([Problem(1, "/", "DTDs are refused")])
    enc = tree.docinfo.encoding
    if enc and enc.upper() not in ("UTF-8", "UTF8"):
        raise IsoError([Problem(1, "/", f"encoding {enc}: only UTF-8 is accepted")])
    for node in root.iter():
        if isinstance(node.tag, str) or isinstance(node, etree._Comment):
            continue
        line = getattr(node, "sourceline", 0) or 0
        raise IsoError(
            [Problem(line, xpath(node), "entities and processing instructions are refused")]
        )
    return root


def xpath(el: etree._Element) -> str:
    """``el``'s path from the root as local names with positions among same-named siblings
    where there is more than one (XPath 1.0 abbreviated syntax, namespaces left out)."""
    parts = []
    node: etree._Element | None = el
    while node is not None and isinstance(node.tag, str):
        name = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None:
            same = [s for s in parent if s.tag == node.tag]
            if len(same) > 1:
                name += f"[{same.index(node) + 1}]"
        parts.append(name)
        node = parent
    return "/" + "/".join(reversed(parts))


@functools.cache
def schema(name: str) -> xmlschema.XMLSchema:
    """The packaged XSD ``name`` (``pain.001.001.09`` or ``pacs.008.001.08``), copied from the
    ISO 20022 message definitions; loaded once, never from the network."""
    files = resources.files("payments.iso20022") / "schemas" / f"{name}.xsd"
    with resources.as_file(files) as path:
        return xmlschema.XMLSchema(str(path), allow="local")


def exponent(currency: str) -> int:
    """ISO 4217 minor-unit exponent of an active currency code (``iso4217`` data); codes
    without one (XXX, XAU, ...) and unknown codes are refused (``ValueError``)."""
    try:
        exp = iso4217.Currency(currency).exponent
    except ValueError:
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code") from None
    if exp is None:
        raise ValueError(f"{currency!r} has no minor unit (not a currency for payments)")
    return int(exp)


def check_amount(text: str, currency: str) -> Decimal:
    """``text`` as a positive Decimal with at most the currency's ISO 4217 decimals."""
    exp = exponent(currency)
    amount = Decimal(text)
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"{text}: must be a positive amount")
    decimals = -amount.as_tuple().exponent  # type: ignore[operator]
    if decimals > exp:
        raise ValueError(f"{text} {currency}: {currency} has {exp} decimals, not {decimals}")
    return amount


def check_iban(text: str) -> str:
    """An IBAN (country length and ISO 7064 mod-97 check digits, via schwifty)."""
    try:
        return str(schwifty.IBAN(text, validate_bban=False))
    except schwifty.exceptions.SchwiftyException as exc:
        raise ValueError(f"{text}: not a valid IBAN ({exc})") from None


def check_bic(text: str) -> str:
    """A BIC (ISO 9362 structure and country code, via schwifty)."""
    try:
        return str(schwifty.BIC(text))
    except schwifty.exceptions.SchwiftyException as exc:
        raise ValueError(f"{text}: not a valid BIC ({exc})") from None
