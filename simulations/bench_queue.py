"""What the job queue and the shared pools cost per signature, in-process (issue 14).

``python -m simulations.bench_queue [--db sqlite|postgresql] [--runs N]``: one coordinator
database (SQLite with WAL and ``synchronous=FULL`` as the service runs it, or a throw-away
PostgreSQL server from :mod:`simulations.pgserver`), the coordinator's own group-commit
writer, and the statements the signing path adds: the fence (one conditional UPDATE per
signer set, before its items leave), a shared-pool commitment take (claim-and-delete with
``FOR UPDATE SKIP LOCKED``) and a presignature take, each alone (concurrency 1) and 32 at
once (what the group writer batches). Rows: ``{"suite": "queue", "db", "op",
"concurrency", "median_ms", "p99_ms", "per_s", "runs"}``. The end-to-end figure over HTTP
is ``python -m simulations.bench e2e`` (docs/PERFORMANCE.md "Shared pools (issue 14)").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, insert

from api.coordinator.queue import JobQueue
from api.coordinator.shared_pools import CHUNK
from api.db import Database, Key, PoolCommitment, PoolPresignature, SignRequest, utcnow
from mpc import frost
from mpc.groups import ED25519


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _seed(db: Database, n: int) -> None:
    now = utcnow()
    suite = frost.ciphersuite("ed25519")
    comm = frost.SigningCommitments(suite, 1, ED25519.base_mul(5), ED25519.base_mul(7))
    with db.engine.begin() as conn:
        conn.execute(
            insert(Key).values(
                id="key_b", scheme="ed25519", threshold=2, nodes=["node-1", "node-2"],
                status="active", public_key="00" * 32, verifying_shares={},
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
        conn.execute(
            insert(SignRequest),
            [
                {"id": f"sr_{i}", "key_id": "key_b", "kind": "raw", "body": {"id": f"sr_{i}"},
                 "status": "signing", "requested_by": "c", "blamed": [], "created_at": now,
                 "updated_at": now, "claimed_by": "bench", "claims": 1,
                 "lease_until": now}
                for i in range(n)
            ],
        )  # fmt: skip
        conn.execute(
            insert(PoolCommitment),
            [
                {"key_id": "key_b", "party_id": 1, "boot_id": "b", "nonce_id": f"n{i}",
                 "commitments": comm.to_bytes().hex(), "created_at": now}
                for i in range(2 * n + 2 * CHUNK * n)
            ],
        )  # fmt: skip
        conn.execute(
            insert(PoolPresignature),
            [
                {"key_id": "key_b", "path": "", "presignature_id": f"p{i}", "parties": [1, 2],
                 "boot_ids": ["b", "b"], "r_point": ED25519.base_mul(9).encode().hex(),
                 "created_at": now}
                for i in range(2 * n)
            ],
        )  # fmt: skip


async def _measure(
    op: Callable[[int], Awaitable[Any]], runs: int, conc: int
) -> tuple[list[float], float]:
    lat: list[float] = []
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            await op(i)
            lat.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(runs)))
    return lat, time.perf_counter() - t0


def run(db_kind: str = "sqlite", runs: int = 400) -> list[dict[str, Any]]:
    from sqlalchemy import delete, select  # noqa: PLC0415 - the statements measured

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as d:
        pg = None
        if db_kind == "postgresql":
            from simulations.pgserver import PgServer  # noqa: PLC0415

            pg = PgServer(durable=True).start()
            url = pg.create_database("bench")
        else:
            url = f"sqlite:///{Path(d) / 'coordinator.db'}"
        db = Database(url)
        try:
            db.migrate()
            _seed(db, runs * 2)
            q = JobQueue(db, "bench", 60)
            pc, pp = cast(Table, PoolCommitment.__table__), cast(Table, PoolPresignature.__table__)

            async def fence(i: int) -> None:
                await q.fence(f"sr_{i}", [(1, 2)])

            async def take_commitment(_i: int) -> None:
                def job(conn: Any) -> Any:
                    oldest = (
                        select(pc.c.id).where(pc.c.key_id == "key_b", pc.c.party_id == 1)
                        .order_by(pc.c.id).limit(1).with_for_update(skip_locked=True)
                        .scalar_subquery()
                    )  # fmt: skip
                    return conn.execute(
                        delete(pc).where(pc.c.id == oldest).returning(pc.c.nonce_id)
                    ).first()

                assert await db.write(job) is not None

            async def take_chunk(_i: int) -> None:  # what SharedPools does: CHUNK rows at once
                def job(conn: Any) -> Any:
                    chunk = (
                        select(pc.c.id).where(pc.c.key_id == "key_b", pc.c.party_id == 1)
                        .order_by(pc.c.id).limit(CHUNK).with_for_update(skip_locked=True)
                    )  # fmt: skip
                    return conn.execute(
                        delete(pc).where(pc.c.id.in_(chunk.scalar_subquery()))
                        .returning(pc.c.nonce_id)
                    ).all()  # fmt: skip

                assert len(await db.write(job)) == CHUNK

            async def take_presignature(_i: int) -> None:
                def job(conn: Any) -> Any:
                    first = (
                        select(pp.c.id).where(pp.c.key_id == "key_b", pp.c.path == "")
                        .order_by(pp.c.id).limit(1).with_for_update(skip_locked=True)
                        .scalar_subquery()
                    )  # fmt: skip
                    return conn.execute(
                        delete(pp).where(pp.c.id == first).returning(pp.c.presignature_id)
                    ).first()

                assert await db.write(job) is not None

            offset = 0
            for name, op in (
                ("fence", fence),
                ("take commitment", take_commitment),
                ("take presignature", take_presignature),
                (f"take commitments, chunk of {CHUNK}", take_chunk),
            ):
                for conc in (1, 32):
                    base = offset

                    async def shifted(i: int, op: Any = op, base: int = base) -> None:
                        await op(base + i)

                    lat, took = asyncio.run(_measure(shifted, runs, conc))
                    offset += runs
                    rows.append(
                        {"suite": "queue", "db": db_kind, "op": name, "concurrency": conc,
                         "median_ms": round(statistics.median(lat), 3),
                         "p99_ms": round(_pct(lat, 0.99), 3),
                         "per_s": round(runs / took, 1), "runs": runs}
                    )  # fmt: skip
        finally:
            db.close()
            if pg is not None:
                pg.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulations.bench_queue")
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--runs", type=int, default=400)
    a = p.parse_args(argv)
    print(json.dumps(run(a.db, a.runs), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
