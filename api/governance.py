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
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from custody import governance as gov

_FILE = re.compile(r"^v([1-9][0-9]*)\.gov$")


class GovernanceStore:
    """The verified governance chain of one coordinator (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "governance"
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
            return state.current

    def refresh(self) -> list[int]:
        """Take up the versions another coordinator sharing this directory installed since
        (issue 14: coordinators behind one address; a version arrives through one of them).
        Each is verified as the successor of the one before, as at start; a file that does
        not chain raises :class:`custody.governance.GovernanceError` and this copy stays
        on the version it had (fail closed). Returns the versions taken up."""
        with self._lock:
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
            self._write(new.version, data)
            self._state.current = new
            return new
