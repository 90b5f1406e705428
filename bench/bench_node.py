"""Benchmark: one FROST partial signature on a signer node (in-process, real SoftHSM2).

Sets up three in-process nodes in a temporary directory (SoftHSM2 dev tokens, SQLCipher
files), runs a DKG through their envelope layer, pre-generates nonces, then times on node 1:

* ``unseal+sign``: unseal the share and the nonce (two CKM_AES_GCM decrypts in the token),
  decode, and compute the RFC 9591 signature share -- the brief's target (<= 2 ms median);
* ``node.frost_sign``: the whole node path: recompute the message from the request, decode
  and check the signing package, authorize, unseal share and nonce, mark the nonce used
  and COMMIT (synchronous=FULL: an fsync), compute the share.

Usage::

    python bench/bench_node.py [--runs 300] [--scheme ed25519|bip340] [--dir DIR]

``--dir`` puts the data directory on a given filesystem (the commit's fsync dominates the
full path; on tmpfs it is nearly free, on a disk it is the disk's flush latency).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nacl.signing import SigningKey  # noqa: E402
from signer_nodes import protocols, vault  # noqa: E402
from signer_nodes.envelope import Peer  # noqa: E402
from signer_nodes.node import Node  # noqa: E402

from custody.signing import message_to_sign  # noqa: E402
from mpc import frost  # noqa: E402


def _row(name: str, samples: list[float]) -> str:
    s = sorted(samples)
    p95 = s[int(len(s) * 0.95) - 1]
    med, mean = statistics.median(s), statistics.fmean(s)
    return f"{name:<18} {med:9.3f} {p95:9.3f} {mean:9.3f}  (n={len(s)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--scheme", default="ed25519", choices=["ed25519", "bip340"])
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-node-", dir=args.dir))
    coord = SigningKey.generate()
    nodes = {
        i: Node.init(
            root / f"n{i}", node_id=f"node-{i}", party_id=i, coordinator_key=bytes(coord.verify_key)
        )
        for i in (1, 2, 3)
    }
    peers = [Peer(i, n.node_id, n.sign_pk, n.box_pk) for i, n in nodes.items()]
    for n in nodes.values():
        n.set_peers(peers)
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "dkg",
        "key_id": "k",
        "scheme": args.scheme,
        "threshold": 2,
        "participants": [1, 2, 3],
    }
    queue = [e for n in nodes.values() for e in n.start_session(spec)["envelopes"]]
    while queue:
        e = queue.pop(0)
        for t in [e["to"]] if e["to"] else [p for p in nodes if p != e["from"]]:
            queue += nodes[t].deliver(spec["session_id"], [e])["envelopes"]
    suite = frost.ciphersuite(args.scheme)
    n1, n2 = nodes[1], nodes[2]
    c1 = n1.frost_commitments("k", args.runs)
    c2 = n2.frost_commitments("k", args.runs)
    row = n1.store.get_key("k")
    assert row is not None

    jobs = []
    for i in range(args.runs):
        req = {"id": f"b{i}", "key_id": "k", "kind": "raw", "message": f"{i:08x}"}
        comms = [
            frost.SigningCommitments.from_bytes(bytes.fromhex(c["commitments"]), suite=suite)
            for c in (c1[i], c2[i])
        ]
        pkg = frost.signing_package(comms, message_to_sign(args.scheme, req))
        jobs.append((req, pkg, c1[i]["nonce_id"]))

    # unseal + sign only (no ledger write): on a copy of the sealed nonce blobs
    core: list[float] = []
    for _req, pkg, nonce_id in jobs[: args.runs // 2]:
        item = n1.store.get_ledger(nonce_id)
        assert item is not None
        t0 = time.perf_counter_ns()
        kp = protocols.load_key_package(n1.shares.unseal_share(row))
        nonces = frost.SigningNonces.from_bytes(
            n1.vault.unseal(item.sealed, vault.ledger_aad("k", n1.node_id, "nonce", nonce_id)),
            suite=suite,
        )
        frost.sign(pkg, nonces, kp)
        core.append((time.perf_counter_ns() - t0) / 1e6)

    full: list[float] = []
    for req, pkg, nonce_id in jobs[args.runs // 2 :]:
        raw = pkg.to_bytes()
        t0 = time.perf_counter_ns()
        n1.frost_sign("k", nonce_id, req, raw, coordinator_verified=True)
        full.append((time.perf_counter_ns() - t0) / 1e6)

    print(f"FROST {args.scheme} partial signature on a node, ms   data dir: {root}")
    print(f"{'':<18} {'median':>9} {'p95':>9} {'mean':>9}")
    print(_row("unseal+sign", core))
    print(_row("node.frost_sign", full))
    for n in nodes.values():
        n.close()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
