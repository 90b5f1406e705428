"""End to end over real processes on loopback: DKG and signing for all three schemes,
verified by independent libraries; a killed node; a node that answers garbage; audit
checkpoints co-signed by the real nodes, and the attacks they catch (a signature released
behind the coordinator's back, a rewritten and re-chained coordinator database)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api import audit
from custody.client import AsyncCustodyClient
from custody.cluster import free_port_block
from custody.demo import verify_independently
from custody.models import SignRequestOut
from custody.nodeauth import SIGNATURE_HEADER, sign_headers
from custody.signing import message_to_sign
from mpc import dkls23, frost
from mpc.dkls23.params import Q
from tests.e2e.conftest import Live, running_cluster, token_sign

SCHEMES = ["ed25519", "bip340", "ecdsa-secp256k1"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live(live_default_pool: Live) -> Live:
    """This module's own cluster, with the default presignature pool: it kills or restarts
    nodes while ECDSA keys sign (tests/e2e/conftest.py ``live_default_pool``)."""
    return live_default_pool


def msg_for(scheme: str, i: int = 0) -> bytes:
    m = b"e2e message %d" % i
    return hashlib.sha256(m).digest() if scheme == "ecdsa-secp256k1" else m


@pytest.mark.parametrize("scheme", SCHEMES)
def test_sign_and_verify_independently(live: Live, scheme: str) -> None:
    key = live.key(scheme)
    assert len(bytes.fromhex(key.public_key)) == (33 if scheme == "ecdsa-secp256k1" else 32)
    for i in range(3):
        sr = live.requester.sign(key.id, msg_for(scheme, i))
        assert sr.status == "signed", sr
        assert len(bytes.fromhex(sr.signature)) == 64 and len(sr.signers) == 2
        ok, by = verify_independently(
            scheme, key.public_key, msg_for(scheme, i), sr.signature, sr.recovery_id
        )
        assert ok, by
        if scheme == "ecdsa-secp256k1":
            assert sr.recovery_id in (0, 1, 2, 3)
    # the audit chain holds every step and verifies
    assert live.auditor.verify_audit().ok is True


@pytest.mark.parametrize(
    ("scheme", "conc"), [("ed25519", 32), ("bip340", 32), ("ecdsa-secp256k1", 12)]
)
def test_concurrent_signatures_each_verify_independently(
    live: Live, scheme: str, conc: int
) -> None:
    """Many requests at once (the coordinator batches node calls): every signature is
    for its own message and verifies with an independent library."""
    key = live.key(scheme)
    msgs = [msg_for(scheme, 1000 + i) for i in range(conc)]

    async def run() -> list[SignRequestOut]:
        async with AsyncCustodyClient(
            live.doc["api_url"], live.doc["credentials"]["requester"]
        ) as c:
            return list(await asyncio.gather(*(c.sign(key.id, m) for m in msgs)))

    out = asyncio.run(run())
    assert [sr.status for sr in out] == ["signed"] * conc, out
    assert len({sr.signature for sr in out}) == conc
    for m, sr in zip(msgs, out, strict=True):
        ok, by = verify_independently(scheme, key.public_key, m, sr.signature, sr.recovery_id)
        assert ok, (by, sr)
    # the audit chain, written by group commits of many signatures each, still verifies
    assert live.auditor.verify_audit().ok is True


def _spoil_partials(doc: dict) -> dict:
    """A malicious co-signer: each partial well-formed, for the right presignature and R,
    but with ``w`` off by one, so only the combined signature fails (DKLs23 cannot say
    whose partial it was)."""
    out = []
    for item in doc["results"]:
        if "partial" in item:
            p = dkls23.PartialSignature.from_bytes(bytes.fromhex(item["partial"]), sender=2)
            bad = dataclasses.replace(p, w=(p.w + 1) % Q)
            item = {**item, "partial": bad.to_bytes().hex()}
        out.append(item)
    return {**doc, "results": out}


class GarbageProxy:
    """A 'node' that forwards to a real node but corrupts its signing answers."""

    def __init__(self, upstream: str, mode: str) -> None:
        self.upstream = upstream
        self.mode = mode
        self.port = free_port_block(0)
        self.http = httpx.AsyncClient(base_url=upstream, timeout=10)
        app = Starlette(
            routes=[Route("/{path:path}", self.forward, methods=["GET", "POST", "PUT"])]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        r = await self.http.request(request.method, request.url.path, content=body, headers=headers)
        content = r.content
        if self.mode == "wrong-partial":
            if "/ecdsa/sign" in request.url.path and r.status_code == 200:
                content = json.dumps(_spoil_partials(r.json())).encode()
        elif request.url.path.endswith(("/sign", "/sign-batch")) and r.status_code == 200:
            if self.mode == "not-json":
                content = b"<html>oops</html>"
            else:  # well-formed JSON, a share that is not a share
                field = "partial" if "ecdsa" in request.url.path else "signature_share"
                if request.url.path.endswith("/sign-batch"):
                    n = len(r.json()["results"])
                    content = json.dumps({"results": [{field: "a1" * 40}] * n}).encode()
                else:
                    content = json.dumps({field: "a1" * 40}).encode()
        return Response(
            content, status_code=r.status_code, media_type=r.headers.get("content-type")
        )

    def __enter__(self) -> GarbageProxy:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.mark.parametrize("mode", ["bad-share", "not-json"])
def test_garbage_node_is_blamed_and_routed_around(live: Live, mode: str) -> None:
    key = live.key("ed25519")
    real = live.cluster.node_url(2)
    with GarbageProxy(real, mode) as proxy:
        live.admin.enrol_node("node-2", proxy.url)
        try:
            blamed = []
            # The coordinator picks 2 of 3 at random, and node-2 is eligible again only once
            # its commitment pool behind the proxy is refilled: sign until it is picked and
            # blamed (at most 40 tries, a few seconds), checking every signature on the way.
            for i in range(40):
                sr = live.requester.sign(key.id, b"garbage %s %d" % (mode.encode(), i))
                assert sr.status == "signed", sr
                assert 2 not in sr.signers or not sr.blamed
                ok, _ = verify_independently(
                    "ed25519",
                    key.public_key,
                    b"garbage %s %d" % (mode.encode(), i),
                    sr.signature,
                    None,
                )
                assert ok
                blamed += sr.blamed
                if blamed and i >= 7:
                    break
                time.sleep(0.05)
            assert blamed, "node-2 was never picked in 40 tries"
            assert {b.node_id for b in blamed} == {"node-2"}
            assert all(b.party_id == 2 for b in blamed)
        finally:
            live.admin.enrol_node("node-2", real)


@pytest.mark.parametrize("scheme", ["ed25519", "ecdsa-secp256k1"])
def test_killed_node_is_routed_around_and_reported(live: Live, scheme: str) -> None:
    key = live.key(scheme)
    name = "node-3"
    live.cluster.stop_proc(name, sig=signal.SIGKILL)
    try:
        blamed = []
        for i in range(6):  # right after the kill: the coordinator may still pick node-3
            sr = live.requester.sign(key.id, msg_for(scheme, 100 + i))
            assert sr.status == "signed", sr
            assert 3 not in sr.signers
            ok, by = verify_independently(
                scheme,
                key.public_key,
                msg_for(scheme, 100 + i),
                sr.signature,
                sr.recovery_id,
            )
            assert ok, by
            blamed += sr.blamed
        assert {b.node_id for b in blamed} <= {name}
        deadline = time.monotonic() + 5  # reported by blame at once, else by the health sweep
        while (nodes := {n.id: n for n in live.auditor.nodes()})[name].status != "down":
            assert time.monotonic() < deadline, nodes[name]
            time.sleep(0.1)
        assert nodes[name].last_error
        assert nodes["node-1"].status == nodes["node-2"].status == "healthy"
    finally:
        live.cluster.start_node(3)
        deadline = time.monotonic() + 30
        while {n.id: n for n in live.auditor.nodes()}[name].status != "healthy":
            assert time.monotonic() < deadline, "node-3 did not come back"
            time.sleep(0.2)


def test_demo_signs_every_scheme_and_every_signature_verifies(live: Live) -> None:
    """What `custody demo` (the README's first command) shows, on the live cluster."""
    from custody.demo import SCHEMES, sign_and_verify_all

    rows = sign_and_verify_all(live.admin, live.requester)
    assert [r["scheme"] for r in rows] == list(SCHEMES)
    for r in rows:
        assert r["verified"] is True, r
        assert len(bytes.fromhex(r["signature"])) == 64
        assert r["latency_ms"] > 0 and r["warm_latency_ms"] > 0
        assert ("recovery_id" in r) and (r["recovery_id"] is not None) == (
            r["scheme"] == "ecdsa-secp256k1"
        )


def test_malicious_ecdsa_cosigner_is_isolated_and_honest_nodes_never_blamed(live: Live) -> None:
    key = live.key("ecdsa-secp256k1")
    real = live.cluster.node_url(2)
    with GarbageProxy(real, "wrong-partial") as proxy:
        live.admin.enrol_node("node-2", proxy.url)
        try:
            blamed, failed = [], []
            for i in range(12):
                m = hashlib.sha256(b"malicious co-signer %d" % i).digest()
                sr = live.requester.sign(key.id, m)
                blamed += sr.blamed
                if sr.status == "signed":
                    assert 2 not in (sr.signers or [])
                    ok, by = verify_independently(
                        "ecdsa-secp256k1", key.public_key, m, sr.signature, sr.recovery_id
                    )
                    assert ok, by
                else:  # not isolated in this request: suspects, nobody honest named
                    failed.append(sr)
                    assert sr.error is not None
                    extra = sr.error.model_extra or {}
                    assert set(extra.get("culprits", [])) <= {2}
                    assert 2 in extra.get("suspects", [2]) or extra.get("culprits") == [2]
                if len(blamed) >= 2 and i >= 5:
                    break
            assert blamed, "node-2 was never isolated"
            assert {b.node_id for b in blamed} == {"node-2"}, blamed
            assert all(b.party_id == 2 for b in blamed)
        finally:
            live.admin.enrol_node("node-2", real)


def verify_cli(live: Live) -> subprocess.CompletedProcess[str]:
    """``custody audit verify --json`` against the live cluster (what an auditor runs)."""
    return subprocess.run(  # noqa: S603 - our own argv
        [
            sys.executable,
            "-m",
            "custody.cli",
            "audit",
            "verify",
            "--json",
            "--cluster",
            str(live.cluster.cluster_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_checkpoint_route_asks_every_node_and_verify_cli(live: Live) -> None:
    """Issue 9 item 4 (a): after signatures in every scheme, all three real nodes co-sign
    the checkpoint (each checked the chain in its own encoding and found every signature
    it released), and the auditor's CLI verifies the chain against it."""
    for scheme in SCHEMES:
        assert live.requester.sign(live.key(scheme).id, msg_for(scheme, 500)).status == "signed"
    r = live.admin.http.post("/v1/audit/checkpoints", headers={"Idempotency-Key": "cp-1"})
    doc = r.json()
    assert r.status_code == 201, json.dumps(doc)
    assert set(doc["signatures"]) == {"node-1", "node-2", "node-3"}, doc
    assert {n["status"] for n in doc["nodes"]} == {"signed"}
    status = {n.id: n for n in live.auditor.nodes()}
    assert set(status) == {"node-1", "node-2", "node-3"}
    v = live.auditor.verify_audit()
    assert v.ok is True and v.checkpoints.anchored >= 1 and v.checkpoints.last_seq == doc["seq"]
    # more signatures, a second checkpoint: each node is sent what follows its own last one
    key = live.key("ed25519")
    assert live.requester.sign(key.id, msg_for("ed25519", 501)).status == "signed"
    second = live.admin.checkpoint_audit(idempotency_key="cp-2")
    assert second.seq > doc["seq"] and set(second.signatures) == {"node-1", "node-2", "node-3"}
    out = verify_cli(live)
    assert out.returncode == 0, out.stdout + out.stderr
    v = json.loads(out.stdout)
    assert v["ok"] is True and v["findings"] == [] and v["entries"] > 0
    assert v["checkpoints"]["anchored"] >= 2


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Live]:
    """A cluster of its own: the attacks below leave it in an alarmed state for good."""
    with running_cluster(tmp_path) as lv:
        yield lv


def _token_sign(live: Live, payloads: list[bytes]) -> list[bytes]:
    """Signatures by the coordinator's key, made in the coordinator's own PKCS#11 token
    opened as a thief on the coordinator host would (the dev PIN file next to it): the
    key never leaves the token, but it signs. (A subprocess: SoftHSM2 binds a process to
    one token directory.)"""
    return token_sign(live.cluster.data_dir / "coordinator", payloads)


def _direct(live: Live, calls: list[tuple[int, str, dict]]) -> list[dict]:
    """Node requests signed with the coordinator's key, sent past the coordinator."""
    prepared = []
    for party, path, body in calls:
        data = json.dumps(body).encode()
        seen: list[bytes] = []
        headers = sign_headers(
            lambda b, seen=seen: seen.append(b) or bytes(64),  # type: ignore[func-returns-value]
            "POST",
            path,
            data,
            recipient=f"node-{party}",
        )
        prepared.append((party, path, data, headers, seen[0]))
    sigs = _token_sign(live, [p[4] for p in prepared])
    out = []
    for (party, path, data, headers, _), sig in zip(prepared, sigs, strict=True):
        headers = {**headers, SIGNATURE_HEADER: sig.hex(), "content-type": "application/json"}
        r = httpx.post(
            live.cluster.node_url(party) + path, content=data, headers=headers, timeout=30
        )
        assert r.status_code == 200, r.text
        out.append(dict(r.json()))
    return out


def test_a_signature_released_behind_the_coordinators_back_is_named_by_the_next_checkpoint(
    fresh: Live,
) -> None:
    """Issue 9 item 4 (b): the coordinator's credentials (its HSM token) drive nodes 1 and
    2 directly, outside the coordinator: they release a valid signature the audit log never
    saw. The next checkpoint is refused by exactly those nodes, naming the release; the
    coordinator records the refusal and ``custody audit verify`` reports it."""
    live = fresh
    key = live.key("ed25519")
    assert live.requester.sign(key.id, msg_for("ed25519", 1)).status == "signed"
    first = live.admin.checkpoint_audit(idempotency_key="before")
    assert set(first.signatures) == {"node-1", "node-2", "node-3"}
    req = {"id": "behind-the-back", "key_id": key.id, "kind": "raw", "message": "ee" * 8}
    suite = frost.ciphersuite("ed25519")
    got = _direct(
        live, [(p, "/v1/frost/commitments", {"key_id": key.id, "count": 1}) for p in (1, 2)]
    )
    nonces = {p: g["commitments"][0] for p, g in zip((1, 2), got, strict=True)}
    comms = [
        frost.SigningCommitments.from_bytes(bytes.fromhex(n["commitments"]), suite=suite)
        for n in nonces.values()
    ]
    pkg = frost.signing_package(comms, message_to_sign("ed25519", req))
    shares = _direct(
        live,
        [
            (
                p,
                "/v1/frost/sign",
                {
                    "key_id": key.id,
                    "nonce_id": n["nonce_id"],
                    "request": req,
                    "signing_package": pkg.to_bytes().hex(),
                },
            )
            for p, n in nonces.items()
        ],
    )
    assert all(s["signature_share"] for s in shares)  # released, in each release log
    assert live.requester.sign(key.id, msg_for("ed25519", 2)).status == "signed"
    r = live.admin.http.post("/v1/audit/checkpoints", headers={"Idempotency-Key": "after"})
    doc = r.json()
    nodes = {n["node_id"]: n for n in doc["nodes"]}
    # node 3 released nothing behind the back: it signs; nodes 1 and 2 refuse, naming it
    assert r.status_code == 201 and set(doc["signatures"]) == {"node-3"}, doc
    for n in ("node-1", "node-2"):
        assert nodes[n]["status"] == "missing-releases", nodes[n]
        assert "behind-the-back" in nodes[n]["detail"] and key.id in nodes[n]["detail"]
    v = live.auditor.verify_audit()
    found = {f.subject: f for f in v.findings if f.kind == "releases-missing"}
    assert v.ok is False and set(found) == {"node-1", "node-2"}, v
    assert "behind-the-back" in found["node-1"].detail
    out = verify_cli(live)
    assert out.returncode != 0
    rep = json.loads(out.stdout)
    assert {f["subject"] for f in rep["findings"] if f["kind"] == "releases-missing"} == {
        "node-1",
        "node-2",
    }


def test_rewrite_and_rechain_of_the_coordinator_db_after_a_checkpoint_is_named(
    fresh: Live,
) -> None:
    """Issue 9 item 4 (c): after a checkpoint all three nodes signed, the coordinator's
    database is edited and re-chained (every hash recomputed with the one definition, as
    anyone with the database could): the chain alone looks fine, verify names the entry
    against the node signatures, and the nodes refuse to sign the rewritten history."""
    live = fresh
    key = live.key("ed25519")
    for i in range(3):
        assert live.requester.sign(key.id, msg_for("ed25519", 10 + i)).status == "signed"
    cp = live.admin.checkpoint_audit(idempotency_key="cp")
    assert set(cp.signatures) == {"node-1", "node-2", "node-3"}
    assert live.auditor.verify_audit().ok is True
    db = sqlite3.connect(live.cluster.data_dir / "coordinator" / "coordinator.db")
    try:
        with db:
            seq, data = db.execute(
                "SELECT seq, data FROM audit WHERE action = 'sign.signed' ORDER BY seq LIMIT 1"
            ).fetchone()
            edited = {**json.loads(data), "blamed": [{"node_id": "node-1", "reason": "x"}]}
            db.execute("UPDATE audit SET data = ? WHERE seq = ?", (json.dumps(edited), seq))
            prev = db.execute("SELECT hash FROM audit WHERE seq = ?", (seq - 1,)).fetchone()[0]
            cols = "seq, at, actor, action, subject, data"
            for row in db.execute(
                f"SELECT {cols} FROM audit WHERE seq >= ? ORDER BY seq",  # noqa: S608
                (seq,),
            ).fetchall():
                rec = dict(zip(cols.split(", "), row, strict=True))
                rec["data"] = json.loads(rec["data"])
                h = audit.entry_hash(prev, rec)
                db.execute(
                    "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, h, rec["seq"])
                )
                prev = h
    finally:
        db.close()
    v = live.auditor.verify_audit()
    assert v.ok is False and [(f.kind, f.seq) for f in v.findings] == [("rewritten", seq)], v
    assert v.first_bad_seq == seq
    out = verify_cli(live)
    assert out.returncode != 0 and json.loads(out.stdout)["first_bad_seq"] == seq
    # the nodes will not co-sign the rewritten history either
    assert live.requester.sign(key.id, msg_for("ed25519", 20)).status == "signed"
    r = live.admin.http.post("/v1/audit/checkpoints", headers={"Idempotency-Key": "cp-after"})
    doc = r.json()
    assert r.status_code == 502 and doc["type"].endswith("checkpoint-unsigned"), doc
    assert {n["status"] for n in doc["nodes"]} == {"refused"}
    assert all("does not chain" in n["detail"] for n in doc["nodes"]), doc
