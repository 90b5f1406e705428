"""Benchmark suite ``node``: one FROST partial signature on a signer node, in process.

Three in-process nodes in a temporary directory (each its own SoftHSM2 dev token and
SQLCipher file) install a governance genesis, run a DKG through their envelope layer and
pool nonces; then node 1 is timed on two paths:

* ``unseal+sign``: unseal the share (one CKM_AES_GCM decrypt in the token), decode it and
  compute the RFC 9591 signature share with an in-memory nonce (the brief's target,
  <= 2 ms median);
* ``node.frost_sign``: the whole node path: recompute the message from the request, decode
  and check the signing package, authorize, unseal the share, take the nonce, append the
  release-log entry and COMMIT (synchronous=FULL: an fsync), compute the share.

``python -m simulations.bench node [--json]``; ``CUSTODY_BENCH_DIR`` puts the data
directory on a given filesystem (the commit's fsync dominates the full path).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from custody import governance as gov
from custody.signing import message_to_sign
from mpc import frost
from mpc.relay import Envelope, Relay
from signer_nodes.node import Node
from signer_nodes.protocols import load_key_package
from simulations.timing import time_calls


def _genesis(nodes: dict[int, Node]) -> bytes:
    """A bench genesis: one officer (held in memory: a benchmark, not a cluster)."""
    officer = SigningKey.generate()
    roster = []
    for nd in nodes.values():
        info = nd.identity_info()
        roster.append(
            gov.RosterNode(
                info["node_id"],
                int(info["party_id"]),
                bytes.fromhex(info["sign_pk"]),
                bytes.fromhex(info["box_pk"]),
            )
        )
    body = gov.Governance(
        cluster_id="bench",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(gov.Officer("bench-officer", bytes(officer.verify_key)),),
        quorum=1,
        roster=tuple(roster),
        raw_signing_keys=frozenset({"k"}),
    )
    return gov.unsigned(body).with_signature(officer, "bench-officer").encode()


def _dkg(nodes: dict[int, Node], scheme: str) -> None:
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "dkg",
        "key_id": "k",
        "scheme": scheme,
        "threshold": 2,
        "participants": sorted(nodes),
    }
    relay: Relay[str] = Relay(spec["session_id"], nodes)
    raw: dict[str, dict[str, Any]] = {}

    def submit(envelopes: list[dict[str, Any]]) -> None:
        for e in envelopes:
            raw[e["envelope"]] = e
            relay.submit(Envelope(spec["session_id"], e["from"], e["to"], e["envelope"]))

    for nd in nodes.values():
        submit(nd.start_session(spec)["envelopes"])
    while relay.pending:
        for party, batch in relay.take().items():
            submit(
                nodes[party].deliver(spec["session_id"], [raw[b.payload] for b in batch])[
                    "envelopes"
                ]
            )


def _run_scheme(root: Path, scheme: str, runs: int) -> list[dict[str, Any]]:
    coord = SigningKey.generate()
    nodes = {
        i: Node.init(
            root / scheme / f"n{i}",
            node_id=f"node-{i}",
            party_id=i,
            coordinator_key=bytes(coord.verify_key),
        )
        for i in (1, 2, 3)
    }
    try:
        genesis = _genesis(nodes)
        for nd in nodes.values():
            nd.trust(genesis)
        _dkg(nodes, scheme)
        suite = frost.ciphersuite(scheme)
        n1, n2 = nodes[1], nodes[2]
        c1, c2 = n1.frost_commitments("k", 2 * runs + 2), n2.frost_commitments("k", 2 * runs + 2)
        row = n1.store.get_key("k")
        if row is None:
            raise RuntimeError("the DKG stored no key on node 1")
        jobs = []
        for i in range(2 * runs + 2):
            req = {"id": f"b{i}", "key_id": "k", "kind": "raw", "message": f"{i:08x}"}
            comms = [
                frost.SigningCommitments.from_bytes(bytes.fromhex(c["commitments"]), suite=suite)
                for c in (c1[i], c2[i])
            ]
            pkg = frost.signing_package(comms, message_to_sign(scheme, req))
            jobs.append((req, pkg, c1[i]["nonce_id"]))
        core_jobs, full_jobs = iter(jobs[: runs + 1]), iter(jobs[runs + 1 :])

        def core() -> None:
            _req, pkg, nonce_id = next(core_jobs)
            item = n1.shares.pool.get(nonce_id)
            if item is None:
                raise RuntimeError(f"nonce {nonce_id} is not in node 1's pool")
            frost.sign(pkg, item.secret, load_key_package(n1.shares.unseal_share(row)))

        def full() -> None:
            req, pkg, nonce_id = next(full_jobs)
            n1.frost_sign("k", nonce_id, req, pkg.to_bytes(), coordinator_verified=True)

        timings = {"unseal+sign": time_calls(core, runs), "node.frost_sign": time_calls(full, runs)}
    finally:
        for nd in nodes.values():
            nd.close()
    return [
        {
            "suite": "node",
            "scheme": scheme,
            "t": 2,
            "n": 3,
            "op": op,
            "median_ms": t.median_ms,
            "p95_ms": t.p95_ms,
            "runs": t.runs,
        }
        for op, t in timings.items()
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    runs = 10 if quick else 300
    root = Path(tempfile.mkdtemp(prefix="bench-node-", dir=os.environ.get("CUSTODY_BENCH_DIR")))
    try:
        return [row for scheme in ("ed25519", "bip340") for row in _run_scheme(root, scheme, runs)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
