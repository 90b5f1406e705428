"""The coordinator enrols only what the officers pinned, and relays what they sign.

Against a real cluster (``custody up``'s dev genesis): a rogue node process is refused
enrolment, a process claiming an existing node id with other keys is refused, a new
governance version signed by the dev officers reaches every node, and a forged one is
refused by the coordinator before any node sees it. Also: a restarted node's pooled nonces
and presignatures are dropped (its boot id changed), so signing goes on without it being
blamed.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nacl.signing
import pytest

from custody import governance as gov
from custody.client import CustodyError
from custody.cluster import free_port_block
from tests.e2e.conftest import Live


@pytest.fixture(scope="module")
def live(live_default_pool: Live) -> Live:
    """This module's own cluster, with the default presignature pool: it kills or restarts
    nodes while ECDSA keys sign (tests/e2e/conftest.py ``live_default_pool``)."""
    return live_default_pool


def _rogue(live: Live, tmp: Path, node_id: str, party: int) -> Iterator[str]:
    """A real signer node process the officers never pinned, serving /health."""
    c = live.cluster
    d = tmp / node_id
    init = [c.python, "-m", "signer_nodes", "init", "--data-dir", str(d), "--node-id", node_id,
            "--party-id", str(party), "--coordinator-key", "00" * 32]  # fmt: skip
    subprocess.run(init, check=True, capture_output=True, env=c._env(), cwd=c._cwd())  # noqa: S603
    port = free_port_block(0)
    proc = subprocess.Popen(  # noqa: S603
        [c.python, "-m", "signer_nodes", "run", "--data-dir", str(d), "--port", str(port), "--dev"],
        env=c._env(),
        cwd=c._cwd(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def rogue4(live: Live, tmp_path: Path) -> Iterator[str]:
    yield from _rogue(live, tmp_path, "node-4", 4)


@pytest.fixture
def fake2(live: Live, tmp_path: Path) -> Iterator[str]:
    yield from _rogue(live, tmp_path, "node-2", 2)


def test_rogue_node_is_refused_enrolment(live: Live, rogue4: str) -> None:
    with pytest.raises(CustodyError) as err:
        live.admin.enrol_node("node-4", rogue4)
    assert err.value.status == 403 and err.value.problem["type"].endswith("not-in-roster")
    assert {n.id for n in live.admin.nodes()} == {"node-1", "node-2", "node-3"}


def test_re_pointing_a_node_id_to_other_keys_is_refused(live: Live, fake2: str) -> None:
    with pytest.raises(CustodyError) as err:
        live.admin.enrol_node("node-2", fake2)
    assert err.value.status == 409 and err.value.problem["type"].endswith("identity-mismatch")
    real = next(n for n in live.admin.nodes() if n.id == "node-2")
    assert real.url == live.cluster.node_url(2)  # still the pinned node


def _officers(live: Live) -> dict[str, nacl.signing.SigningKey]:
    d = live.cluster.data_dir / "officers"
    passphrase = (d / "passphrase").read_bytes()
    keys = {}
    for f in sorted(d.glob("*.key")):
        officer, signer = gov.open_officer_key(f.read_bytes(), passphrase)
        keys[officer.officer_id] = signer
    return keys


def _admin(live: Live) -> httpx.Client:
    token = live.doc["credentials"]["admin"]
    return httpx.Client(base_url=live.doc["api_url"], headers={"Authorization": f"Bearer {token}"})


def _current(live: Live) -> gov.Governance:
    with _admin(live) as c:
        doc = c.get("/v1/governance").json()
    return gov.decode(bytes.fromhex(doc["document"])).body


def test_a_new_version_reaches_every_node_and_a_forged_one_none(live: Live) -> None:
    keys = _officers(live)
    cur = _current(live)
    forged = gov.unsigned(cur.successor(quorum=1)).with_signature(
        nacl.signing.SigningKey.generate(), "dev-officer-1"
    )
    http = _admin(live)
    r = http.put("/v1/governance", json={"document": forged.encode().hex()})
    assert r.status_code == 403 and r.json()["type"].endswith("governance-under-signed")
    nxt = gov.unsigned(cur.successor(quorum=2))
    for oid in ("dev-officer-2", "dev-officer-3"):
        nxt = nxt.with_signature(keys[oid], oid)
    r = http.put("/v1/governance", json={"document": nxt.encode().hex()})
    assert r.status_code == 200, r.text
    assert r.json()["nodes"] == {f"node-{i}": "installed" for i in (1, 2, 3)}
    assert r.json()["version"] == cur.version + 1
    again = http.put("/v1/governance", json={"document": nxt.encode().hex()})
    http.close()
    assert again.status_code == 409 and again.json()["type"].endswith("governance-rollback")


def test_a_restarted_node_is_not_blamed_for_its_lost_pool(live: Live) -> None:
    key = live.key("ecdsa-secp256k1")
    live.requester.sign(key.id, hashlib.sha256(b"warm the pool").digest())
    c = live.cluster
    c.stop_proc("node-3")
    c.start_node(3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(c.node_url(3) + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    time.sleep(1.5)  # one health sweep sees the new boot id
    blamed = []
    for i in range(6):
        sr = live.requester.sign(key.id, hashlib.sha256(b"after restart %d" % i).digest())
        assert sr.status == "signed", sr
        blamed += sr.blamed
    assert blamed == []
