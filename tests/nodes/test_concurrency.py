"""Concurrent signing on one node: group commit of ledger marks, the sealing readers-writer
lock, one-use under racing requests, and problem documents for every error."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient
from nacl.signing import VerifyKey

from custody import auditchain as audit
from custody.nodeauth import sign_headers
from custody.signing import message_to_sign
from mpc import frost
from tests.nodes.conftest import InProc, public_package


def _wait(cond, what: str, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def _entry(item_id: str):  # noqa: ANN202 - a release-entry builder for store tests
    def build(seq: int, prev: bytes) -> tuple[bytes, bytes]:
        enc = audit.encode_release({"seq": seq, "prev": prev, "item_id": item_id})
        return enc, audit.release_hash(enc)

    return build


def test_group_commit_batches_marks_queued_during_a_commit(inproc: InProc) -> None:
    inproc.dkg("ed25519", "gk")
    node = inproc.nodes[1]
    store = node.store
    ids = [c["nonce_id"] for c in node.frost_commitments("gk", 8)]
    results: dict[str, int | None] = {}
    before = (store.commits, store.marks)
    with store.lock:  # the first leader blocks on the database: the rest queue behind it
        threads = [
            threading.Thread(
                target=lambda i=i: results.update({i: store.release(i, "nonce", _entry(i))})
            )
            for i in ids
        ]
        threads[0].start()
        _wait(lambda: store._leading, "no leader")
        for t in threads[1:]:
            t.start()
        _wait(lambda: len(store._marks) == 7, "marks not queued")
    for t in threads:
        t.join(10)
    assert sorted(results.values()) == list(range(1, 9))  # one chain, seq 1..8
    # one commit for the first mark, ONE commit for the seven queued meanwhile
    assert (store.commits - before[0], store.marks - before[1]) == (2, 8)
    rows = store.releases_after(0, 100)
    assert [r.seq for r in rows] == list(range(1, 9))
    prev = bytes(32)
    for r in rows:  # hash-chained: each names its predecessor's hash
        assert r.prev == prev and r.hash == audit.release_hash(r.entry)
        prev = r.hash
    assert store.release(ids[0], "nonce", _entry(ids[0])) is None  # released already


def test_mark_fails_closed_when_the_commit_fails(inproc: InProc) -> None:
    inproc.dkg("ed25519", "fk")
    node = inproc.nodes[1]
    store = node.store
    nonce = node.frost_commitments("fk", 1)[0]["nonce_id"]
    with store.tx() as c:  # a real failure: the release log refuses every insert
        c.execute(
            "CREATE TRIGGER no_marks BEFORE INSERT ON releases BEGIN"
            " SELECT RAISE(ABORT, 'disk says no'); END"
        )
    with pytest.raises(Exception, match="disk says no"):
        store.release(nonce, "nonce", _entry(nonce))
    with store.tx() as c:
        c.execute("DROP TRIGGER no_marks")
    assert store.releases_after(0, 10) == []  # nothing half-done
    assert store.release(nonce, "nonce", _entry(nonce)) == 1


def test_concurrent_signing_racing_for_one_nonce(inproc: InProc) -> None:
    res = inproc.dkg("ed25519", "rk")
    public = public_package(res, "ed25519")
    suite = frost.ciphersuite("ed25519")
    req = {"id": "race", "key_id": "rk", "kind": "raw", "message": "aa" * 8}
    msg = message_to_sign("ed25519", req)
    c1 = inproc.nodes[1].frost_commitments("rk", 1)[0]
    c3 = inproc.nodes[3].frost_commitments("rk", 1)[0]
    comms = [
        frost.SigningCommitments.from_bytes(bytes.fromhex(c["commitments"]), suite=suite)
        for c in (c1, c3)
    ]
    pkg = frost.signing_package(comms, msg).to_bytes()
    outcomes: list[object] = []

    def attempt() -> None:
        try:
            outcomes.append(
                inproc.nodes[1].frost_sign(
                    "rk", c1["nonce_id"], req, pkg, coordinator_verified=True
                )
            )
        except Exception as exc:  # noqa: BLE001 - collected and checked below
            outcomes.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    shares = [o for o in outcomes if isinstance(o, bytes)]
    refused = [o for o in outcomes if not isinstance(o, bytes)]
    assert len(shares) == 1 and len(refused) == 7
    assert all(getattr(e, "kind", None) == "nonce-used" for e in refused), refused
    share3 = inproc.nodes[3].frost_sign("rk", c3["nonce_id"], req, pkg, coordinator_verified=True)
    sig = frost.aggregate(
        frost.SigningPackage.from_bytes(pkg, suite=suite),
        [frost.SignatureShare.from_bytes(s, suite=suite) for s in (shares[0], share3)],
        public,
    )
    VerifyKey(bytes.fromhex(res["public_key"])).verify(msg, sig)


def test_parallel_signatures_all_verify(inproc: InProc) -> None:
    res = inproc.dkg("ed25519", "pk")
    public = public_package(res, "ed25519")
    sigs: dict[int, bytes] = {}

    def one(i: int) -> None:
        req = {"id": f"p{i}", "key_id": "pk", "kind": "raw", "message": f"{i:02x}" * 4}
        sigs[i] = inproc.frost_sign("ed25519", "pk", [1, 2], req, public)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(sigs) == 12
    vk = VerifyKey(bytes.fromhex(res["public_key"]))
    for i, sig in sigs.items():
        req = {"id": f"p{i}", "key_id": "pk", "kind": "raw", "message": f"{i:02x}" * 4}
        vk.verify(message_to_sign("ed25519", req), sig)


def test_rotation_waits_for_signers_and_signers_wait_for_rotation(inproc: InProc) -> None:
    from signer_nodes.store import RWLock

    lock = RWLock()
    order: list[str] = []
    reader_in, reader_go = threading.Event(), threading.Event()

    def reader() -> None:
        with lock.read():
            reader_in.set()
            reader_go.wait(10)
            order.append("reader-out")

    def writer() -> None:
        with lock.write():
            order.append("writer-in")
            with lock.read(), lock.write():  # re-entrant for the writer thread
                pass

    r = threading.Thread(target=reader)
    r.start()
    reader_in.wait(10)
    w = threading.Thread(target=writer)
    w.start()
    _wait(lambda: lock._writers_waiting == 1, "writer not waiting")
    late = threading.Thread(target=lambda: (lock.read().__enter__(), order.append("late-in")))
    late.start()  # a new reader queues behind the waiting writer
    time.sleep(0.05)
    assert order == []
    reader_go.set()
    for t in (r, w, late):
        t.join(10)
    assert order == ["reader-out", "writer-in", "late-in"]
    # and the real thing: rotation under the node's lock rewraps and signing goes on
    res = inproc.dkg("ed25519", "rot")
    node = inproc.nodes[1]
    node.frost_commitments("rot", 2)
    out = node.rotate_seal_key()
    assert out["destroyed"] == 1
    req = {"id": "after", "key_id": "rot", "kind": "raw", "message": "01"}
    sig = inproc.frost_sign("ed25519", "rot", [1, 2], req, public_package(res, "ed25519"))
    VerifyKey(bytes.fromhex(res["public_key"])).verify(message_to_sign("ed25519", req), sig)


def test_every_error_is_a_problem_document(inproc: InProc, monkeypatch) -> None:  # noqa: ANN001
    from signer_nodes.service import create_app

    node = inproc.nodes[1]

    def boom() -> dict:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(node, "status", boom)
    with TestClient(create_app(node), raise_server_exceptions=False) as client:

        def signed(method: str, path: str, body: bytes = b"") -> dict[str, str]:
            return sign_headers(inproc.key, method, path, body, recipient=node.node_id)

        r = client.get("/v1/status", headers=signed("GET", "/v1/status"))
        assert r.status_code == 500
        assert r.headers["content-type"].startswith("application/problem+json")
        doc = r.json()
        assert doc["type"] == "urn:tpwc:node:internal" and doc["status"] == 500
        assert "internals" not in doc["detail"]  # no internals leak
        r = client.get("/v1/nope", headers=signed("GET", "/v1/nope"))
        assert r.status_code == 404 and r.json()["type"] == "urn:tpwc:node:not-found"
        r = client.delete("/v1/status", headers=signed("DELETE", "/v1/status"))
        assert r.status_code == 405 and r.headers["content-type"].startswith(
            "application/problem+json"
        )
        r = client.get("/v1/status")  # unsigned: still a problem document
        assert r.status_code == 401 and r.json()["type"] == "urn:tpwc:node:unauthenticated"
        body = b'{"key_id": "nope", "count": 1}'
        r = client.post(
            "/v1/frost/commitments",
            content=body,
            headers=signed("POST", "/v1/frost/commitments", body),
        )
        assert r.status_code == 404 and r.json()["type"] == "urn:tpwc:node:unknown-key"
