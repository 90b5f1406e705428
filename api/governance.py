"""The coordinator's copy of the governance chain: whom it may enrol, what it relays.

The nodes are the trust root: each verifies every governance version itself
(``custody.governance``) and the coordinator cannot make one. The coordinator keeps its own
verified copy only so that it refuses what honest nodes would refuse anyway, before it
costs anything: enrolling a node outside the roster, or a node whose identity differs from
the roster's pin (a rogue or re-pointed node), and relaying a version that does not chain.

Versions are files ``DIR/governance/v{N}.gov`` (canonical CBOR, as officers signed them).
At start the whole chain is verified again from the genesis; a gap, a forged or an
unchained file stops the start. ``python -m api trust --governance GENESIS`` installs the
genesis (once); later versions arrive through ``PUT /v1/governance``, which relays them to
every node first and keeps them only when every reachable node installed them.

Issue 14 (several coordinators, each its own host and data directory): with a database,
every version this coordinator installs is also a row of ``governance_versions``
(:class:`api.db.GovernanceVersion`), written only after it verified as the successor, and
:meth:`GovernanceStore.refresh` takes up the newer rows another coordinator wrote, each
verified as the successor of the one before. The table is a transport, never a trust root:
the genesis comes only from this coordinator's own ``api trust`` file, a row 1 that is not
that genesis is refused, and a row that does not chain or is under-signed is refused by
name (:class:`RowRefused`) while this copy stays on its version (fail closed). The nodes
verify every version themselves anyway.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.db import GovernanceVersion
from custody import governance as gov

if TYPE_CHECKING:
    from api.db import Database

_FILE = re.compile(r"^v([1-9][0-9]*)\.gov$")


class RowRefused(gov.GovernanceError):
    """A ``governance_versions`` row this coordinator does not take up; names the row."""

    def __init__(self, version: int, exc: gov.GovernanceError) -> None:
        super().__init__(exc.kind, f"governance_versions row {version} refused: {exc.detail}")
        self.version = version

    @classmethod
    def unchained(cls, version: int, why: str) -> RowRefused:
        """Row ``version`` refused because it does not chain onto this copy: ``why``."""
        return cls(version, gov.GovernanceError(gov.GovernanceErrorKind.UNCHAINED, why))


class GovernanceStore:
    """The verified governance chain of one coordinator (see the module docstring)."""

    def __init__(self, data_dir: Path, db: Database | None = None) -> None:
        self.dir = Path(data_dir) / "governance"
        self.db = db
        self._lock = threading.Lock()
        self._state: gov.GovernanceState | None = None
        self._documents: dict[int, bytes] = {}
        self._load()

    def _load(self) -> None:
        if not self.dir.is_dir():
            return
        versions = sorted(
            int(m.group(1)) for p in self.dir.iterdir() if (m := _FILE.fullmatch(p.name))
        )
        if versions and versions != list(range(1, len(versions) + 1)):
            raise gov.GovernanceError(
                gov.GovernanceErrorKind.UNCHAINED,
                f"{self.dir} holds versions {versions}: a gap in the chain",
            )
        for version in versions:
            data = (self.dir / f"v{version}.gov").read_bytes()
            doc = gov.decode(data)
            if self._state is None:
                self._state = gov.GovernanceState.from_genesis(doc)
            else:
                self._state.advance(doc)
            self._documents[version] = data

    @property
    def current(self) -> gov.Governance | None:
        return None if self._state is None else self._state.current

    def document(self, version: int | None = None) -> bytes | None:
        cur = self.current
        if cur is None:
            return None
        return self._documents.get(cur.version if version is None else version)

    def _write(self, version: int, data: bytes) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        tmp = self.dir / f".v{version}.tmp"
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.rename(self.dir / f"v{version}.gov")
        self._documents[version] = data

    # -- the shared table (issue 14) ------------------------------------------------------
    def _insert_row(self, body: gov.Governance, data: bytes) -> None:
        """Record a version this coordinator verified; a row of that version already there
        (another coordinator installed it) must hold the same document, else
        :class:`RowRefused` (two different versions N: the officers signed a fork)."""
        if self.db is None:
            return
        row = GovernanceVersion(
            version=body.version,
            document=data,
            digest=body.digest.hex(),
            installed_ms=int(time.time() * 1000),
        )
        try:
            with self.db.session() as s:
                s.add(row)
        except IntegrityError:
            with self.db.session() as s:
                have = s.get(GovernanceVersion, body.version)
            if have is None or bytes(have.document) != data:
                raise RowRefused.unchained(
                    body.version, "the table holds another document of this version"
                ) from None

    def publish(self) -> None:
        """Write every version of this copy the table lacks (at start: a chain installed
        from files before the table existed, or the genesis of ``api trust``)."""
        if self.db is None or self._state is None:
            return
        with self.db.session() as s:
            have = set(s.scalars(select(GovernanceVersion.version)).all())
        for version, data in sorted(self._documents.items()):
            if version not in have:
                self._insert_row(gov.decode(data).body, data)

    def _rows_after(self, version: int) -> list[tuple[int, bytes]]:
        assert self.db is not None
        with self.db.session() as s:
            rows = s.execute(
                select(GovernanceVersion.version, GovernanceVersion.document)
                .where(GovernanceVersion.version >= version)
                .order_by(GovernanceVersion.version)
            ).all()
        return [(int(v), bytes(d)) for v, d in rows]

    def _take_up_rows(self) -> list[int]:
        """Verify and take up the table's rows newer than this copy, in order; the first
        refused one stops it (:class:`RowRefused`), keeping what verified before it."""
        if self.db is None or self._state is None:
            return []  # the genesis comes from this coordinator's own file, never a row
        cur = self._state.current
        taken: list[int] = []
        for version, data in self._rows_after(cur.version):
            have = self._documents.get(version)
            if have is not None:
                if have != data:
                    raise RowRefused.unchained(
                        version, f"differs from the version {version} this coordinator installed"
                    )
                continue
            expected = self._state.current.version + 1
            if version != expected:
                raise RowRefused.unchained(version, f"version {expected} is missing before it")
            try:
                doc = gov.decode(data)
                if doc.body.version != version:
                    raise gov.GovernanceError(
                        gov.GovernanceErrorKind.UNCHAINED,
                        f"the document inside is version {doc.body.version}",
                    )
                self._state.advance(doc)
            except gov.GovernanceError as exc:
                raise RowRefused(version, exc) from None
            self._write(version, data)  # a restart finds it in its own directory
            taken.append(version)
        return taken

    def install_genesis(self, data: bytes) -> gov.Governance:
        """Install version 1 (refused when a chain is already installed)."""
        with self._lock:
            if self._state is not None:
                if self._documents.get(1) == data:
                    return self._state.current
                raise gov.GovernanceError(
                    gov.GovernanceErrorKind.ROLLBACK, "a genesis is installed already"
                )
            state = gov.GovernanceState.from_genesis(gov.decode(data))
            self._write(1, data)
            self._state = state
            self._insert_row(state.current, data)
            return state.current

    def refresh(self) -> list[int]:
        """Take up the versions another coordinator sharing this directory installed since
        (issue 14: coordinators behind one address; a version arrives through one of them).
        Each is verified as the successor of the one before, as at start; a file that does
        not chain raises :class:`custody.governance.GovernanceError` and this copy stays
        on the version it had (fail closed). With a database, then the newer rows of
        ``governance_versions`` (issue 14: coordinators on separate hosts), each verified
        the same way; a refused row raises :class:`RowRefused` naming it. Returns the
        versions taken up."""
        with self._lock:
            taken = self._refresh_files()
            return taken + self._take_up_rows()

    def _refresh_files(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        taken: list[int] = []
        version = 1 if self._state is None else self._state.current.version + 1
        while (path := self.dir / f"v{version}.gov").is_file():
            data = path.read_bytes()
            doc = gov.decode(data)
            if self._state is None:
                self._state = gov.GovernanceState.from_genesis(doc)
            else:
                self._state.advance(doc)
            self._documents[version] = data
            taken.append(version)
            version += 1
        return taken

    def check_successor(self, data: bytes) -> gov.Governance:
        """Verify ``data`` as the next version without installing it."""
        cur = self.current
        if cur is None:
            raise gov.GovernanceError(
                gov.GovernanceErrorKind.UNCHAINED, "no genesis installed on the coordinator"
            )
        return gov.verify_successor(cur, gov.decode(data))

    def advance(self, data: bytes) -> gov.Governance:
        """Verify and install the next version."""
        with self._lock:
            new = self.check_successor(data)
            assert self._state is not None  # check_successor refused otherwise
            self._insert_row(new, data)  # first: a fork (another version N) is refused here
            self._write(new.version, data)
            self._state.current = new
            return new
