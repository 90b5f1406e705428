"""Signer nodes as separate hosts (issue 14 part 3): the coordinator and each node in its
own network namespace (simulations/netns.py), the real processes, faults made by the
kernel: a node's link pulled (partition), latency and loss on a link (tc netem, or where
the kernel lacks netem the userspace link model, labelled as such).

Every signature is checked by a verifier that is not ours (pynacl, coincurve)."""

from __future__ import annotations

import hashlib
import time
import warnings

import pytest

from custody.demo import verify_independently
from custody.models import SignRequestOut
from simulations.netns import NetnsCluster, netem_support
from tests.e2e.conftest import Live
from tests.netns.conftest import need

SCHEMES = ("ed25519", "bip340", "ecdsa-secp256k1")


def msg(scheme: str, text: str) -> bytes:
    m = text.encode()
    return hashlib.sha256(m).digest() if scheme == "ecdsa-secp256k1" else m


def cluster_of(live: Live) -> NetnsCluster:
    c = live.cluster
    assert isinstance(c, NetnsCluster)
    return c


def signed_and_verified(live: Live, scheme: str, text: str) -> SignRequestOut:
    key = live.key(scheme)
    m = msg(scheme, text)
    sr = live.requester.sign(key.id, m, timeout=90)
    assert sr.status == "signed", (sr.status, sr.error, sr.blamed, sr.signers)
    assert sr.signature is not None and key.public_key is not None, sr
    ok, by = verify_independently(scheme, key.public_key, m, sr.signature, sr.recovery_id)
    assert ok, f"{scheme} signature refused by {by}"
    return sr


#: A healthy node's stale keep-alive connection: the coordinator keeps idle connections to
#: the nodes for 30 s (api/nodes.py, aiohttp ``keepalive_timeout=30``), the nodes close
#: theirs after 5 s (custody/serving.py ``keep_alive_s``), so a call can go out on a
#: connection the node is closing. Seen here as a second fault beside the cut node (the
#: one retry then has no third node); reported to the coordinator's owners, until fixed
#: the client resubmits such a request once, as the SDK tells it to for a transient error.
STALE = ("ServerDisconnectedError", "ClientOSError")


def signed_despite_the_cut(live: Live, scheme: str, text: str, cut: str) -> SignRequestOut:
    key = live.key(scheme)
    m = msg(scheme, text)
    sr = live.requester.sign(key.id, m, timeout=90)
    stale = [b for b in sr.blamed if b.node_id != cut and any(e in b.reason for e in STALE)]
    if sr.status == "failed" and stale:
        warnings.warn(f"resubmitted once after a stale connection: {stale}", stacklevel=2)
        sr = live.requester.sign(key.id, m, timeout=90)
    assert sr.status == "signed", (sr.status, sr.error, sr.blamed, sr.signers)
    assert sr.signature is not None and key.public_key is not None, sr
    ok, by = verify_independently(scheme, key.public_key, m, sr.signature, sr.recovery_id)
    assert ok, f"{scheme} signature refused by {by}"
    return sr


def wait_status(live: Live, want: dict[str, str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        nodes = {n.id: n for n in live.auditor.nodes()}
        if all(nodes[k].status == v for k, v in want.items()):
            return
        assert time.monotonic() < deadline, f"not {want} after {timeout} s: {nodes}"
        time.sleep(0.2)


def test_the_processes_run_in_their_own_namespaces(netns_live: Live) -> None:
    """Each process's network namespace is its own (not the host's, not another's), and
    every key signs across the namespaces before any fault."""
    c = cluster_of(netns_live)
    inodes = {}
    for name, proc in c.procs.items():
        if name == "coordinator" or name.startswith("node-"):
            assert proc.popen is not None and proc.alive, name
            inodes[name] = (f"/proc/{proc.popen.pid}/ns/net", proc.popen.pid)
    import os

    host = os.stat("/proc/self/ns/net").st_ino
    seen = {name: os.stat(path).st_ino for name, (path, _) in inodes.items()}
    assert host not in seen.values()
    assert len(set(seen.values())) == len(seen) == 4, seen
    for s in SCHEMES:
        sr = signed_and_verified(netns_live, s, f"before any fault {s}")
        assert sr.signers is not None and len(sr.signers) == 2


def test_a_partitioned_node_of_a_2_of_3_does_not_stop_signing(netns_live: Live) -> None:
    c = cluster_of(netns_live)
    for s in SCHEMES:
        netns_live.key(s)
    c.net.partition(3)
    try:
        for s in SCHEMES:
            for j in range(3):  # right after the cut the coordinator may still pick node-3
                sr = signed_despite_the_cut(netns_live, s, f"one node cut {s} {j}", "node-3")
                assert sr.signers is not None and 3 not in sr.signers, sr
                assert {b.node_id for b in sr.blamed} <= {"node-3"}, sr.blamed
        wait_status(netns_live, {"node-3": "down", "node-1": "healthy", "node-2": "healthy"})
    finally:
        c.net.heal(3)
    wait_status(netns_live, {"node-3": "healthy"}, timeout=30)


def test_two_partitioned_nodes_stop_signing_with_a_problem_naming_them_then_it_resumes(
    netns_live: Live,
) -> None:
    c = cluster_of(netns_live)
    key = netns_live.key("ed25519")
    c.net.partition(2)
    c.net.partition(3)
    try:
        wait_status(netns_live, {"node-2": "down", "node-3": "down", "node-1": "healthy"})
        sr = netns_live.requester.sign(key.id, b"two nodes cut", timeout=90)
        assert sr.status == "failed", sr
        assert sr.signature is None
        err = sr.error
        assert err is not None
        assert err.type.endswith("signing-failed"), err
        assert err.status == 502, err
        detail = err.detail or ""
        assert "node-2" in detail and "node-3" in detail, detail
        assert "threshold 2" in detail, detail
        assert "node-1" not in detail, detail
    finally:
        c.net.heal(2)
        c.net.heal(3)
    wait_status(netns_live, {"node-2": "healthy", "node-3": "healthy"}, timeout=30)
    for s in SCHEMES:
        signed_and_verified(netns_live, s, f"healed {s}")


def _latency_and_loss(live: Live) -> None:
    c = cluster_of(live)
    if c.proxied:
        c.route(live.admin.http, 3, via_proxy=True)
    c.set_link(3, rtt_ms=80, loss_pct=5, seed=14)
    try:
        for s in SCHEMES:
            for j in range(3):
                signed_and_verified(live, s, f"slow lossy link {s} {j}")
        wait_status(live, {"node-1": "healthy", "node-2": "healthy", "node-3": "healthy"})
    finally:
        c.set_link(3, rtt_ms=0, loss_pct=0)
        if c.proxied:
            c.route(live.admin.http, 3, via_proxy=False)


def test_latency_and_loss_on_one_link_still_signs_netem(netns_live: Live) -> None:
    """80 ms round trip and 5 % loss each way on node-3's link, made by tc netem."""
    need(netem_support(), "CUSTODY_REQUIRE_NETEM")
    _latency_and_loss(netns_live)


def test_latency_and_loss_on_one_link_still_signs_link_model(netns_live: Live) -> None:
    """The same through the userspace link model (simulations.netns.LinkProxy), where the
    kernel has no netem: a model of the link, not the kernel's (its docstring)."""
    c = cluster_of(netns_live)
    if not c.proxied:
        pytest.skip("netem is available here: the netem test covers the link")
    _latency_and_loss(netns_live)
