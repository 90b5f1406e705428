"""A throw-away PostgreSQL server for the simulations (and tests/lb): Debian's ``initdb`` and
``pg_ctl``, a private socket directory, TCP on 127.0.0.1 only, trust authentication.

The same recipe as ``tests/pg.py`` (which the simulations may not import: it is pytest's),
without pytest and with a stop that always runs (a context manager). ``durable=True`` (the
studies' default) keeps PostgreSQL's own defaults (``fsync``, ``synchronous_commit``), so a
measured commit costs what it costs in production; ``durable=False`` (the tests) turns them
off: nothing on that server needs to survive a crash of the machine.

When the process runs as root (CI), initdb refuses to: the server then runs as the
``postgres`` user Debian's package creates (``runuser``), in a directory owned by it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

USER = "custody"  # the superuser initdb makes


class PgUnavailable(RuntimeError):
    """PostgreSQL's server programs (``initdb``, ``pg_ctl``) are not installed."""


def pg_tool(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, or where Debian's packages put it (newest)."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def available() -> bool:
    """Whether :class:`PgServer` can start here."""
    return pg_tool("initdb") is not None and pg_tool("pg_ctl") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


class PgServer:
    """``with PgServer() as pg: url = pg.create_database("custody")``; gone afterwards
    (server stopped with ``-m immediate``, its directory removed)."""

    def __init__(self, *, durable: bool = True, max_connections: int = 200) -> None:
        initdb, pg_ctl = pg_tool("initdb"), pg_tool("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise PgUnavailable(
                "PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install postgresql)"
            )
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.durable = durable
        self.max_connections = max_connections
        self.dir: Path | None = None
        self.port = 0
        self.running = False

    @property
    def data(self) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "data"

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3) of the server's ``postgres`` database."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> PgServer:
        self.dir = Path(tempfile.mkdtemp(prefix="custody-sim-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = _free_port()
        argv = [self.initdb, "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8"]
        self._run(argv)
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            f" -c max_connections={self.max_connections}"
        )
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        log = str(self.dir / "log")
        self._run([self.pg_ctl, "-D", str(self.data), "-w", "-l", log, "-o", options, "start"])
        self.running = True
        return self

    def _run(self, argv: list[str]) -> None:
        r = subprocess.run(_as_postgres(argv), capture_output=True, text=True, check=False)  # noqa: S603
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip()[-1500:]
            raise RuntimeError(f"{Path(argv[0]).name} failed ({r.returncode}): {tail}")

    def create_database(self, name: str) -> str:
        """A new empty database ``name`` (an identifier: letters, digits, ``_``); its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and _ only")
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')  # noqa: S608 - checked identifier
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{name}"

    def _dsn(self, db: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={db}"

    def query(self, db: str, sql: str) -> list[tuple[object, ...]]:
        """Rows of one read-only statement on database ``db`` (the tests' look at the data)."""
        with psycopg.connect(self._dsn(db), autocommit=True) as c:
            return list(c.execute(sql).fetchall())  # noqa: S608 - the caller's own SQL

    def pids(self) -> dict[str, int]:
        """The postmaster's pid (its first line of ``postmaster.pid``); {} when stopped."""
        if self.dir is None or not self.running:
            return {}
        try:
            return {"postgres": int((self.data / "postmaster.pid").read_text().split()[0])}
        except (OSError, ValueError, IndexError):
            return {}

    def stop(self) -> None:
        if self.dir is None:
            return
        if self.running:
            with contextlib.suppress(RuntimeError):
                self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
