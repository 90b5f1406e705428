"""Issue 14: governance versions shared through the database (``governance_versions``), so
coordinators on separate hosts, each its own data directory, take up what the officers
installed through any of them. The table is a transport, never a trust root: a row that
does not chain, is under-signed, forks a version or replaces the genesis is refused by
name and the reader stays on its version. SQLite and a real PostgreSQL server."""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from sqlalchemy import delete

from api.coordinator.service import Coordinator
from api.db import Database, GovernanceVersion
from api.governance import GovernanceStore, RowRefused
from custody import governance as gov
from tests import pg

OFFICERS = {f"officer-{i}": SigningKey.generate() for i in (1, 2, 3)}


def _sign(body: gov.Governance, by: tuple[str, ...] = ("officer-1", "officer-2")) -> bytes:
    doc = gov.unsigned(body)
    for o in by:
        doc = doc.with_signature(OFFICERS[o], o)
    return doc.encode()


def _genesis_body() -> gov.Governance:
    return gov.Governance(
        cluster_id="tpwc-dev",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=tuple(gov.Officer(o, bytes(k.verify_key)) for o, k in OFFICERS.items()),
        quorum=2,
        roster=(),
        coordinators=(gov.PinnedCoordinator("coord-a", bytes(SigningKey.generate().verify_key)),),
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = pg.fresh_database("gov")
    d = Database(url)
    d.migrate()
    try:
        yield d
    finally:
        d.close()
        if request.param == "postgresql":
            pg.drop_database(url)


def _coordinator(tmp: Path, name: str, db: Database | None, genesis: bytes) -> GovernanceStore:
    d = tmp / name
    d.mkdir()
    GovernanceStore(d).install_genesis(genesis)  # ``api trust``: the genesis, out of band
    store = GovernanceStore(d, db)
    store.publish()
    return store


def _insert(db: Database, version: int, data: bytes) -> None:
    with db.session() as s:
        s.add(
            GovernanceVersion(
                version=version,
                document=data,
                digest=bytes(32).hex(),
                installed_ms=int(time.time() * 1000),
            )
        )


def _drop(db: Database, version: int) -> None:
    with db.session() as s:
        s.execute(delete(GovernanceVersion).where(GovernanceVersion.version == version))


def test_a_version_installed_through_one_coordinator_reaches_another_host(
    tmp_path: Path, db: Database
) -> None:
    g1 = _genesis_body()
    genesis = _sign(g1)
    a = _coordinator(tmp_path, "a", db, genesis)
    b = _coordinator(tmp_path, "b", db, genesis)
    key_b = bytes(SigningKey.generate().verify_key)
    assert g1.coordinators is not None
    v2 = g1.successor(coordinators=(*g1.coordinators, gov.PinnedCoordinator("coord-b", key_b)))
    a.advance(_sign(v2))
    assert b.current is not None and b.current.version == 1
    assert b.refresh() == [2]
    assert b.current.version == 2 and b.current.coordinator(key_b) is not None
    assert b.refresh() == []
    # taken up into b's own directory: a restart without the database keeps version 2
    assert GovernanceStore(tmp_path / "b").current.version == 2  # type: ignore[union-attr]
    # and a third coordinator started later reads the whole chain from the table
    c = _coordinator(tmp_path, "c", db, genesis)
    assert c.refresh() == [2] and c.document(2) == a.document(2)
    # file-based install keeps working with no database (one coordinator)
    solo = _coordinator(tmp_path, "solo", None, genesis)
    solo.advance(_sign(v2))
    assert solo.current is not None and solo.current.version == 2


def test_rows_that_do_not_chain_are_under_signed_or_fork_are_refused_by_name(
    tmp_path: Path, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    g1 = _genesis_body()
    genesis = _sign(g1)
    a = _coordinator(tmp_path, "a", db, genesis)
    v2 = g1.successor(raw_signing_keys=frozenset({"k"}))
    a.advance(_sign(v2))
    b = _coordinator(tmp_path, "b", db, genesis)
    assert b.refresh() == [2]
    rogue = gov.PinnedCoordinator("rogue", bytes(SigningKey.generate().verify_key))
    v3 = v2.successor(coordinators=(rogue,))

    cases = [
        (_sign(v3, by=("officer-1",)), gov.GovernanceErrorKind.UNDER_SIGNED),  # 1 of 2
        (_sign(replace(v3, previous=b"\x01" * 32)), gov.GovernanceErrorKind.UNCHAINED),
        (b"\xa0not cbor", gov.GovernanceErrorKind.MALFORMED),
    ]
    for data, kind in cases:
        _insert(db, 3, data)
        with pytest.raises(RowRefused) as e:
            b.refresh()
        assert e.value.kind is kind and e.value.version == 3, e.value
        assert "governance_versions row 3 refused" in str(e.value)
        assert b.current is not None and b.current.version == 2  # stays on its version
        assert b.current.coordinators == g1.coordinators
        _drop(db, 3)

    # a gap (row 4 with no 3) is refused too, naming what is missing
    v4 = v3.successor()
    _insert(db, 4, _sign(v4))
    with pytest.raises(RowRefused) as e:
        b.refresh()
    assert "version 3 is missing" in str(e.value)
    _drop(db, 4)

    # the coordinator logs the refused row and keeps running on its version
    caplog.set_level(logging.WARNING, logger="api.coordinator")
    _insert(db, 3, _sign(v3, by=("officer-3",)))
    Coordinator._take_up_governance(types.SimpleNamespace(governance=b))  # type: ignore[arg-type]
    refused = [r for r in caplog.records if r.getMessage() == "governance version refused"]
    assert refused and refused[-1].row == 3 and refused[-1].installed == 2  # type: ignore[attr-defined]
    assert refused[-1].kind == "governance-under-signed"  # type: ignore[attr-defined]
    _drop(db, 3)

    # a rewritten row of a version b installed is refused (history does not change)
    with db.session() as s:
        row = s.get(GovernanceVersion, 2)
        assert row is not None
        row.document = _sign(replace(v2, raw_signing_keys=frozenset({"other"})))
    with pytest.raises(RowRefused) as e:
        b.refresh()
    assert "differs from the version 2" in str(e.value)


def test_a_fork_and_a_foreign_genesis_in_the_table_are_refused(
    tmp_path: Path, db: Database
) -> None:
    g1 = _genesis_body()
    genesis = _sign(g1)
    a = _coordinator(tmp_path, "a", db, genesis)
    b = _coordinator(tmp_path, "b", db, genesis)
    a.advance(_sign(g1.successor(raw_signing_keys=frozenset({"k"}))))
    # b, not refreshed yet, is handed another (validly signed) version 2: a fork
    other = _sign(g1.successor(raw_signing_keys=frozenset({"other"})))
    with pytest.raises(RowRefused) as e:
        b.advance(other)
    assert "another document of this version" in str(e.value)
    assert b.current is not None and b.current.version == 1
    assert not (tmp_path / "b" / "governance" / "v2.gov").exists()
    assert b.refresh() == [2] and b.document(2) == a.document(2)

    # a coordinator whose own genesis differs from the table's row 1 takes nothing up
    other_genesis = _sign(replace(g1, cluster_id="other-cluster"))
    c = _coordinator(tmp_path, "c", db, other_genesis)
    with pytest.raises(RowRefused) as e:
        c.refresh()
    assert "row 1 refused" in str(e.value) and "differs from the version 1" in str(e.value)
    assert c.current is not None and c.current.cluster_id == "other-cluster"
    # and one with no genesis of its own never takes one from the table
    bare = tmp_path / "bare"
    bare.mkdir()
    store = GovernanceStore(bare, db)
    assert store.refresh() == [] and store.current is None
