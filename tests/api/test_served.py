"""The coordinator as a real process (``python -m api serve``, under custody.serving):
an oversized body is refused before authentication, and a write lock held on its
database by another connection does not freeze the API (SQLite's database lock; under
CUSTODY_TEST_DATABASE=postgresql its twin, an EXCLUSIVE lock on the idempotency table,
which every POST writes first and no read takes)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.api.conftest import coordinator_database_url, init_coordinator, serve_coordinator

BUSY = 2.0  # the coordinator's busy timeout (SQLite) or lock_timeout (PostgreSQL) here


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict]]:
    d = tmp_path_factory.mktemp("served") / "coord"
    env = {**os.environ, "CUSTODY_DB_BUSY_TIMEOUT": str(BUSY), "CUSTODY_POOL_INTERVAL": "0.2"}
    creds = init_coordinator(d, env)
    with serve_coordinator(d, env) as url:
        yield url, d, creds


def test_oversized_body_is_413_before_authentication(served: tuple[str, Path, dict]) -> None:
    url, _, _ = served
    r = httpx.post(url + "/v1/keys", content=b"x" * (2 * 1024 * 1024), timeout=10)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"


def test_a_held_write_lock_does_not_freeze_the_api(served: tuple[str, Path, dict]) -> None:
    url, d, creds = served
    admin = {"Authorization": f"Bearer {creds['admin']}"}
    url_db = coordinator_database_url(d)
    lock: sqlite3.Connection | psycopg.Connection
    if url_db.startswith("postgresql"):
        u = make_url(url_db)
        lock = psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database)
        lock.execute("LOCK TABLE idempotency IN EXCLUSIVE MODE")  # a transaction, held
    else:
        lock = sqlite3.connect(d / "coordinator.db", isolation_level=None, timeout=0)
        lock.execute("BEGIN EXCLUSIVE")
    result: dict[str, httpx.Response] = {}

    def write() -> None:  # needs the write lock: it waits, then gets a 503 problem
        result["r"] = httpx.post(
            url + "/v1/keys",
            headers={**admin, "Idempotency-Key": "locked"},
            json={"scheme": "ed25519", "threshold": 2},
            timeout=30,
        )

    try:
        t = threading.Thread(target=write)
        t.start()
        time.sleep(0.3)
        for path in ("/health", "/v1/keys", "/v1/audit/verify", "/ready"):
            start = time.monotonic()
            r = httpx.get(url + path, headers=admin, timeout=BUSY)
            took = time.monotonic() - start
            assert r.status_code == 200 and took < 1.0, (path, r.status_code, took)
        t.join(BUSY + 10)
        r = result["r"]
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("database-busy") and r.headers["retry-after"] == "1"
    finally:
        if isinstance(lock, sqlite3.Connection):
            lock.execute("ROLLBACK")
        else:
            lock.rollback()
        lock.close()
    r = httpx.post(  # the lock is gone: the same key works again (no node: 422 problem)
        url + "/v1/keys",
        headers={**admin, "Idempotency-Key": "locked"},
        json={"scheme": "ed25519", "threshold": 2},
        timeout=10,
    )
    assert r.status_code == 422 and r.json()["type"].endswith("invalid-threshold"), r.text
