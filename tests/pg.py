"""A real PostgreSQL server for the tests, shared by every test package that needs one.

:func:`server` starts one throw-away cluster per test process the first time it is asked
for (``initdb`` + ``pg_ctl``, found on PATH or where Debian's packages put them, as the
``postgres`` user when the tests run as root; trust authentication on 127.0.0.1 only;
``fsync=off``: a test server, nothing to survive) and stops it when the process exits.
``None`` when the server programs are not installed, unless ``CUSTODY_REQUIRE_POSTGRES=1``
(CI, ``.ci/run``), which makes that a failure.

:func:`fresh_database` gives a new empty database on it and its URL;
:func:`drop_database` removes one (open connections are closed by the server).

``CUSTODY_TEST_DATABASE=postgresql`` (:func:`coordinator_on_postgres`) switches every
coordinator the tests/api fixtures build to its own fresh database on this server.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# the launcher's helpers are the harness's (simulations.pgserver): one copy of each
from simulations.pgserver import _as_postgres, _free_port, pg_tool

USER = "pay"  # the superuser initdb makes (the payment tests' name, kept)


def coordinator_on_postgres() -> bool:
    """The test-wide switch: ``CUSTODY_TEST_DATABASE=postgresql`` (else SQLite)."""
    value = os.environ.get("CUSTODY_TEST_DATABASE", "sqlite")
    if value not in ("sqlite", "postgresql"):
        raise pytest.UsageError(f"CUSTODY_TEST_DATABASE={value!r}: sqlite or postgresql")
    return value == "postgresql"


class _Server:
    def __init__(self, initdb: str, pg_ctl: str) -> None:
        self.pg_ctl = pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="custody-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data, port = self.dir / "data", _free_port()
        subprocess.run(  # noqa: S603 - fixed argv of the installed PostgreSQL tools
            _as_postgres([initdb, "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        options = (
            f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c synchronous_commit=off -c max_connections=400"
        )
        log = str(self.dir / "log")
        subprocess.run(  # noqa: S603 - fixed argv of the installed PostgreSQL tools
            _as_postgres([pg_ctl, "-D", str(self.data), "-w", "-l", log, "-o", options, "start"]),
            check=True,
            capture_output=True,
        )
        self.url = f"postgresql+psycopg://{USER}@127.0.0.1:{port}/postgres"
        self._admin = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_size=1)
        self._names = itertools.count(1)
        self._lock = threading.Lock()

    def fresh_database(self, prefix: str, template: str | None = None) -> str:
        """A new database (``template``: a copy of that database, which nobody may be
        connected to); its URL."""
        with self._lock:
            name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        like = f' TEMPLATE "{template}"' if template else ""
        with self._admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"{like}'))
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with self._admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def stop(self) -> None:
        self._admin.dispose()
        subprocess.run(  # noqa: S603 - fixed argv of the installed PostgreSQL tools
            _as_postgres([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


_server: _Server | None = None
_started = False
_start_lock = threading.Lock()


def server() -> _Server | None:
    """The test process's PostgreSQL server, started on first use; None if not installed
    (a failure when ``CUSTODY_REQUIRE_POSTGRES=1`` or the coordinator switch is on)."""
    global _server, _started
    with _start_lock:
        if not _started:
            _started = True
            initdb, pg_ctl = pg_tool("initdb"), pg_tool("pg_ctl")
            if initdb and pg_ctl:
                _server = _Server(initdb, pg_ctl)
                atexit.register(_server.stop)
        if _server is None and (
            os.environ.get("CUSTODY_REQUIRE_POSTGRES") == "1" or coordinator_on_postgres()
        ):
            pytest.fail(
                "PostgreSQL is required (CUSTODY_REQUIRE_POSTGRES=1 or "
                "CUSTODY_TEST_DATABASE=postgresql) but its initdb/pg_ctl are not found"
            )
        return _server


def server_url() -> str | None:
    """The URL of the server's ``postgres`` database (None: not installed)."""
    s = server()
    return None if s is None else s.url


def fresh_database(prefix: str = "t") -> str:
    """A new empty database on the server; its SQLAlchemy URL (psycopg 3)."""
    s = server()
    if s is None:
        pytest.skip("PostgreSQL (initdb) is not installed")
    return s.fresh_database(prefix)


def drop_database(url: str) -> None:
    s = server()
    if s is not None:
        s.drop_database(url)


# -- a provisioned cluster's coordinator, moved to PostgreSQL -----------------------------
# The node clusters the tests start are copies of a provisioned template (tests/e2e/
# conftest.py ``clone_cluster``) whose coordinator database is its SQLite file (what ``api
# init`` wrote: the bootstrap credentials). Under CUSTODY_TEST_DATABASE=postgresql a copy's
# coordinator gets a fresh database of its own on this worker's server holding the same
# rows: the template file's rows are copied once per worker into a template database, and
# each cluster's database is made from it with ``CREATE DATABASE ... TEMPLATE`` (a file copy
# on the server, no migration run). The copy's coordinator.db is removed, so nothing in that
# cluster can keep using SQLite unnoticed.

_cluster_templates: dict[str, str] = {}  # sha-256 of a template's coordinator.db: its URL


def _database_from_sqlite(sqlite_file: Path) -> str:
    """A migrated database on the server with every row of ``sqlite_file`` (a coordinator
    database at the same revision), serial sequences moved past the copied ids."""
    from api.db import Base, Database, current_revision  # noqa: PLC0415 - tests/pg stays light

    src = create_engine(f"sqlite:///{sqlite_file}")
    url = fresh_coordinator_database("tmpl")
    dst = Database(url)
    try:
        have = current_revision(src)
        assert have == current_revision(dst.engine), (
            f"{sqlite_file} is at revision {have}, the PostgreSQL copy at "
            f"{current_revision(dst.engine)}"
        )
        with src.connect() as r, dst.engine.begin() as w:
            for table in Base.metadata.sorted_tables:
                rows = [dict(m) for m in r.execute(table.select()).mappings()]
                if rows:
                    w.execute(table.insert(), rows)
                for col in table.primary_key.columns:
                    if col.autoincrement is True and rows:
                        # our own table and column names, no input
                        seq = f"pg_get_serial_sequence('{table.name}', '{col.name}')"
                        top = f"(SELECT max({col.name}) FROM {table.name})"  # noqa: S608
                        w.execute(text(f"SELECT setval({seq}, {top})"))  # noqa: S608
    finally:
        dst.close()
        src.dispose()
    return url


def cluster_database_env(cluster_dir: Path) -> dict[str, str]:
    """The environment a copied cluster under ``cluster_dir`` needs for its coordinator:
    under CUSTODY_TEST_DATABASE=postgresql, ``CUSTODY_DATABASE_URL`` of a fresh database of
    its own with the rows of the copy's coordinator.db (which is then removed); else none.
    A cluster whose coordinator.db is already gone keeps no database to copy: an error."""
    if not coordinator_on_postgres():
        return {}
    s = server()
    assert s is not None  # server() fails the test when the switch is on and none exists
    db_file = cluster_dir / "coordinator" / "coordinator.db"
    digest = hashlib.sha256(db_file.read_bytes()).hexdigest()
    with s._lock:
        template = _cluster_templates.get(digest)
    if template is None:
        template = _database_from_sqlite(db_file)
        with s._lock:
            _cluster_templates[digest] = template
    url = s.fresh_database("cluster", template=make_url(template).database)
    for f in db_file.parent.glob("coordinator.db*"):  # the file and any -wal/-shm beside it
        f.unlink()
    return {"CUSTODY_DATABASE_URL": url}


_migrated: dict[int, str] = {}  # this process's migrated, empty coordinator database (name)


def fresh_coordinator_database(prefix: str = "coord") -> str:
    """A new coordinator database at the newest schema revision, copied (``CREATE DATABASE
    ... TEMPLATE``) from one this process migrated once: the same schema and
    ``alembic_version`` row ``python -m api db upgrade`` leaves, without running the
    migrations per coordinator. Its coordinator's own ``migrate`` then finds it at head."""
    from api.db import Database  # noqa: PLC0415 - tests/pg stays light for its other users

    s = server()
    if s is None:
        pytest.skip("PostgreSQL (initdb) is not installed")
    with s._lock:
        template = _migrated.get(os.getpid())
    if template is None:
        url = s.fresh_database("migrated")
        db = Database(url)
        try:
            db.migrate(apply=True)
        finally:
            db.close()  # a template has no connections
        template = make_url(url).database
        assert template is not None
        with s._lock:
            _migrated[os.getpid()] = template
    return s.fresh_database(prefix, template=template)
