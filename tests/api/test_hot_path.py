"""Mechanisms of the signing hot path: group commit, presignature results, pool report."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from api.coordinator import Coordinator, SessionFailed
from api.db import AuditEntry, Database
from api.nodes import NodeInfo


def _row(seq: int) -> dict:
    return {
        "seq": seq,
        "at": "t",
        "actor": "a",
        "action": "x",
        "subject": "s",
        "data": {},
        "prev_hash": "0" * 64,
        "hash": f"{seq:064x}",
    }


async def test_group_writer_commits_queued_jobs_together_and_fails_one_alone(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    db.create_all()
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(db.write(lambda c: gate.wait(10)))
        await asyncio.sleep(0.05)  # the writer thread now blocks inside the first batch

        def add(seq: int):  # noqa: ANN202
            return lambda c: c.execute(insert(AuditEntry).values(**_row(seq))).rowcount

        def clash(c):  # noqa: ANN001, ANN202 - same seq as job 1: IntegrityError
            return c.execute(insert(AuditEntry).values(**{**_row(1), "hash": "f" * 64}))

        queued = [asyncio.ensure_future(db.write(add(i))) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        gate.set()
        await first
        assert await asyncio.gather(*queued) == [1] * 5
        assert (db.writer.batches, db.writer.jobs) == (2, 6)  # 5 queued jobs, one commit

        gate.clear()
        first = asyncio.ensure_future(db.write(lambda c: gate.wait(10)))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(db.write(add(i))) for i in (6, 7)]
        bad = asyncio.ensure_future(db.write(clash))
        queued.append(asyncio.ensure_future(db.write(add(8))))
        await asyncio.sleep(0.05)
        gate.set()
        await first
        assert await asyncio.gather(*queued) == [1, 1, 1]
        with pytest.raises(Exception, match="UNIQUE"):
            await bad
        with db.engine.connect() as c:
            assert c.execute(
                select(AuditEntry.seq).order_by(AuditEntry.seq)
            ).scalars().all() == list(range(1, 9))
    finally:
        gate.set()
        db.close()


def _coordinator(api) -> Coordinator:  # noqa: ANN001
    return api.app.state.coordinator


@pytest.mark.parametrize("bad", ["no-R", "disagree", "not-a-point"])
async def test_presign_results_must_carry_the_same_valid_R(api, bad: str) -> None:  # noqa: ANN001
    c = _coordinator(api)
    from tests.api.conftest import nothing_up_my_sleeve_point

    R = nothing_up_my_sleeve_point(b"R").hex()
    good = {"presignature_id": "ab" * 32, "R": R}
    results = {1: dict(good), 2: dict(good)}
    if bad == "no-R":
        del results[2]["R"]
    elif bad == "disagree":
        results[2]["R"] = nothing_up_my_sleeve_point(b"other").hex()
    else:
        results[1]["R"] = results[2]["R"] = "02" + "00" * 32

    async def fake_session(nodes, body):  # noqa: ANN001, ANN202
        return results

    c.run_session = fake_session  # type: ignore[method-assign]
    nodes = [NodeInfo(f"node-{i}", i, "http://127.0.0.1:1", "", "") for i in (1, 2)]
    with pytest.raises(SessionFailed) as e:
        await c._presign("key", nodes)
    culprits = {p for p, _ in e.value.blame}
    assert culprits == ({2} if bad == "no-R" else {1, 2})
    results[1], results[2] = dict(good), dict(good)
    assert await c._presign("key", nodes) == ("ab" * 32, (1, 2), R)


def test_ready_reports_pools_and_presign_refill_waits_for_idle(api) -> None:  # noqa: ANN001
    r = api.client.get("/ready").json()
    assert r["pools"] == {"frost_commitments": 0, "presignatures": 0}
    c = _coordinator(api)
    from collections import deque

    s = c.settings
    q = deque(range(s.presig_low_water))  # at low water, not below
    assert c._presig_wanted(q) is True  # idle: refill
    import time

    c.last_sign = time.monotonic()
    assert c._presig_wanted(q) is False  # a signature just started: not idle yet
    c.last_sign = 0.0
    c.signing = 1
    assert c._presig_wanted(q) is False  # busy signing: wait
    assert c._presig_wanted(deque(range(s.presig_low_water - 1))) is True  # below: at once
    assert c._presig_wanted(deque(range(s.presig_target))) is False
    c.signing = 0


def test_pooled_commitments_are_checked_once_on_entry_and_blame_their_node() -> None:
    """Commitments enter the pool decoded and checked (api.crypto.frost_commitments);
    the signing package built from them carries them byte for byte."""
    from api import crypto
    from mpc import frost
    from mpc.groups import ED25519

    suite = frost.ciphersuite("ed25519")
    comm = frost.SigningCommitments(suite, 2, ED25519.base_mul(5), ED25519.base_mul(7))
    other = frost.SigningCommitments(suite, 3, ED25519.base_mul(11), ED25519.base_mul(13))
    dec = crypto.frost_commitments("ed25519", 2, comm.to_bytes().hex())
    assert dec == comm
    pkg = crypto.frost_signing_package("ed25519", b"m", {2: dec, 3: other})
    assert pkg.commitment_for(2).to_bytes() == comm.to_bytes()
    assert frost.SigningPackage.from_bytes(pkg.to_bytes(), suite=suite) == pkg
    # another node's commitments, an off-curve point, not hex: each blames the sender
    bad_point = comm.to_bytes().replace(ED25519.base_mul(5).encode(), b"\x02" + b"\xff" * 31)
    for party, raw in ((3, comm.to_bytes().hex()), (2, bad_point.hex()), (2, "zz")):
        with pytest.raises(crypto.Blame) as e:
            crypto.frost_commitments("ed25519", party, raw)
        assert e.value.culprits == (party,)
    with pytest.raises(crypto.Blame):
        crypto.frost_signing_package("ed25519", b"m", {3: dec})  # filed under another party


async def test_audit_appends_grouped_in_one_transaction_keep_the_chain(tmp_path: Path) -> None:
    """Appends queued together share one transaction; each links to the one before it
    (the chain head is read once per transaction), and a failed batch rerun alone still
    links correctly."""
    from api import audit

    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.create_all()
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(db.write(lambda c: gate.wait(10)))
        await asyncio.sleep(0.05)

        def job(i: int, fail: bool = False):  # noqa: ANN202
            def run(c):  # noqa: ANN001, ANN202
                seq = audit.append(c, "t", "x", f"s{i}", {"i": i})
                if fail:
                    raise RuntimeError("job fails after its append")
                return seq

            return run

        jobs = [asyncio.ensure_future(db.write(job(i, fail=i == 3))) for i in range(6)]
        await asyncio.sleep(0.05)
        gate.set()
        await first
        res = await asyncio.gather(*jobs, return_exceptions=True)
        assert isinstance(res[3], RuntimeError)
        assert sorted(r for r in res if isinstance(r, int)) == [1, 2, 3, 4, 5]
        with db.session() as s:
            assert audit.verify_chain(s) == (True, 5, None)
    finally:
        gate.set()
        db.close()
