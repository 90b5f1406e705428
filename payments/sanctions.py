"""Sanctions screening from a list in the OFAC SDN CSV layout (``sdn.csv`` + ``add.csv``).

The layout is OFAC's published one (see ``payments/lists/sanctions/README.md``): a row per
designated party, ``-0- `` for empty fields; the identifiers screened are the
``Digital Currency Address - <TICKER> <address>`` items of the Remarks column (as OFAC
writes them) and ``IBAN <iban>`` items. A destination is normalized before matching
(EVM addresses lower-cased, bech32 lower-cased, IBANs without spaces, upper-cased), so a
change of case or spacing does not slip through.

A malformed row is refused at load with the file, line and field named.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

SDN_FIELDS = 12
ADD_FIELDS = 6
EMPTY = "-0-"
_DIGITAL = re.compile(r"Digital Currency Address - ([A-Z0-9]+)\s+([A-Za-z0-9]+)")
_IBAN = re.compile(r"IBAN\s+([A-Z]{2}[0-9]{2}(?:\s?[A-Z0-9]){10,30})")


class SanctionsListError(ValueError):
    def __init__(self, path: Path, line: int, field: str, why: str) -> None:
        super().__init__(f"{path.name} line {line}, field {field}: {why}")
        self.path, self.line, self.field = path, line, field


@dataclass(frozen=True)
class Entry:
    ent_num: int
    name: str
    sdn_type: str
    programs: tuple[str, ...]
    country: str | None
    identifier: str  # as listed
    id_type: str  # e.g. "ETH", "XBT", "IBAN"


def normalize(identifier: str) -> str:
    s = "".join(identifier.split())
    if s.lower().startswith(("0x", "bc1", "tb1", "bcrt1")):
        return s.lower()
    if re.fullmatch(r"[A-Za-z]{2}[0-9]{2}[A-Za-z0-9]{10,30}", s):
        return s.upper()
    return s


def _blank(v: str) -> str | None:
    v = v.strip()
    return None if v in ("", EMPTY) else v


class SanctionsList:
    def __init__(self, entries: list[Entry], source: str) -> None:
        self.source = source
        self.by_id: dict[str, Entry] = {normalize(e.identifier): e for e in entries}

    def __len__(self) -> int:
        return len(self.by_id)

    def match(self, destination: str) -> Entry | None:
        return self.by_id.get(normalize(destination))

    @classmethod
    def load(cls, directory: Path) -> SanctionsList:
        sdn, add = directory / "sdn.csv", directory / "add.csv"
        countries: dict[int, str] = {}
        if add.exists():
            with add.open(newline="", encoding="utf-8") as f:
                for n, row in enumerate(csv.reader(f), 1):
                    if not row or row == ["\x1a"]:
                        continue
                    if len(row) != ADD_FIELDS:
                        raise SanctionsListError(
                            add, n, "row", f"{len(row)} fields, not {ADD_FIELDS}"
                        )
                    ent = _int(add, n, "ent_num", row[0])
                    country = _blank(row[4])
                    if country:
                        countries.setdefault(ent, country)
        entries: list[Entry] = []
        with sdn.open(newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row or row == ["\x1a"]:  # OFAC files end with a SUB character
                    continue
                if len(row) != SDN_FIELDS:
                    raise SanctionsListError(sdn, n, "row", f"{len(row)} fields, not {SDN_FIELDS}")
                ent = _int(sdn, n, "ent_num", row[0])
                name = _blank(row[1])
                if not name:
                    raise SanctionsListError(sdn, n, "SDN_Name", "empty")
                programs = tuple(p.strip() for p in re.split(r"\]\s*\[", row[3]) if p.strip())
                remarks = row[11] or ""
                found = [(t, a) for t, a in _DIGITAL.findall(remarks)]
                found += [("IBAN", i) for i in _IBAN.findall(remarks)]
                for id_type, ident in found:
                    entries.append(
                        Entry(
                            ent,
                            name,
                            _blank(row[2]) or "entity",
                            programs,
                            countries.get(ent),
                            ident.strip(),
                            id_type,
                        )
                    )
        return cls(entries, str(sdn))


def _int(path: Path, line: int, field: str, v: str) -> int:
    try:
        return int(v.strip())
    except ValueError:
        raise SanctionsListError(path, line, field, f"{v!r} is not an integer") from None
