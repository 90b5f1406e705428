"""Mutual TLS between the coordinator and the nodes, over real processes (issue 14 item 4).

A real cluster (``custody.cluster.Cluster`` makes a dev CA and each node's certificate,
bound to its roster identity): signatures over mTLS verified by pynacl and coincurve; the
nodes refuse a client without a certificate, a TLS 1.2 client and plain HTTP; the
coordinator refuses, naming the node, a server with a certificate of another CA, one of
the same CA but bound to another identity (unpinned), one that has expired, one that
speaks TLS 1.2 only, and a real node answering for another node's name; plain HTTP is
refused at start-up outside ``--dev``. Impostor servers are real processes
(:data:`IMPOSTOR`) on loopback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from nacl.signing import SigningKey

from custody import tls
from custody.cluster import Cluster, free_port_block, node_port
from custody.demo import verify_independently
from tests.e2e.conftest import CLUSTER_ENV, Live, clone_cluster

ROOT = Path(__file__).resolve().parents[2]

#: A TLS server that answers every request with one JSON body (the real node's /health):
#: an impostor holding some certificate, not requiring client certificates.
IMPOSTOR = r"""
import socket, ssl, sys
cert, key, port, maxv, body_file = sys.argv[1:6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
if maxv == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(cert, key)
body = open(body_file, "rb").read()
srv = socket.create_server(("127.0.0.1", int(port)))
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    try:
        with ctx.wrap_socket(conn, server_side=True) as s:
            s.settimeout(5)
            s.recv(65536)
            s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                      b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
    except (ssl.SSLError, OSError):
        pass
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A TLS cluster of this module's own (it stops a node and re-enrols another): a copy
    of the session's provisioned cluster, to which ``Cluster(tls=True)`` adds the dev CA
    and every certificate on its first start (what ``custody up`` does)."""
    d = tmp_path_factory.mktemp("mtls")
    clone_cluster(d)
    cluster = Cluster(
        d, nodes=3, port=free_port_block(3), env=dict(CLUSTER_ENV), allow_raw=True, tls=True
    )
    try:
        doc = cluster.start(timeout=90)
        lv = Live(cluster, doc)
        try:
            yield lv
        finally:
            lv.close()
    finally:
        cluster.stop()


def _ca(live: Live) -> tls.Ca:
    d = live.cluster.data_dir / "tls"
    return tls.load_ca(d / "ca.pem", d / "ca.key")


def _impostor_cert(
    ca: tls.Ca, node_id: str, *, now: dt.datetime | None = None, days: int = 30
) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) for ``node_id`` issued by ``ca`` and bound to an identity key
    that is not the node's (the impostor's own)."""
    ident, key = SigningKey.generate(), tls.new_key()
    csr = tls.node_csr(
        node_id,
        key,
        bytes(ident.verify_key),
        lambda m: ident.sign(m).signature,
        ["127.0.0.1", "localhost"],
    )
    return tls.pem(tls.issue_node(ca, csr, now=now, days=days)), tls.key_pem(key)


@contextlib.contextmanager
def impostor(
    tmp: Path, cert_key: tuple[bytes, bytes], health: dict, port: int, max_tls: str = "1.3"
) -> Iterator[str]:
    """Run :data:`IMPOSTOR` as a process on ``port``; its https URL."""
    tmp.mkdir(parents=True, exist_ok=True)
    tls.write_public(tmp / "cert.pem", cert_key[0])
    tls.write_private(tmp / "key.pem", cert_key[1])
    (tmp / "health.json").write_text(json.dumps(health))
    p = subprocess.Popen(  # noqa: S603 - our own argv
        [sys.executable, "-c", IMPOSTOR, str(tmp / "cert.pem"), str(tmp / "key.pem"),
         str(port), max_tls, str(tmp / "health.json")],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        yield f"https://127.0.0.1:{port}"
    finally:
        p.kill()
        p.wait(10)


def _health(live: Live, i: int) -> dict:
    with live.cluster.node_http() as h:
        r = h.get(live.cluster.node_url(i) + "/health")
    assert r.status_code == 200, r.text
    return r.json()


def _enrol(live: Live, node: str, url: str) -> httpx.Response:
    return live.admin.http.put(f"/v1/nodes/{node}", json={"url": url})


def _nodes(live: Live) -> dict[str, dict]:
    return {n["id"]: n for n in live.admin.http.get("/v1/nodes").json()["items"]}


def _wait(pred, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- end to end ------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["ed25519", "bip340", "ecdsa-secp256k1"])
def test_signing_end_to_end_over_mtls(live: Live, scheme: str) -> None:
    assert all(n["url"].startswith("https://") for n in live.doc["nodes"])
    assert all(n["url"].startswith("https://") for n in _nodes(live).values())
    key = live.key(scheme)
    for i in range(3):
        m = b"mtls %d" % i
        msg = hashlib.sha256(m).digest() if scheme == "ecdsa-secp256k1" else m
        sr = live.requester.sign(key.id, msg)
        assert sr.status == "signed", sr
        ok, by = verify_independently(scheme, key.public_key, msg, sr.signature, sr.recovery_id)
        assert ok, by
        assert by.startswith("pynacl" if scheme == "ed25519" else "coincurve"), by


def _node_port_sockets(live: Live) -> dict[str, int]:
    """Loopback TCP sockets touching the node ports, by state (ESTABLISHED, TIME_WAIT),
    from /proc/net/tcp: a connection closed by either side leaves a TIME_WAIT."""
    ports = {node_port(live.cluster.port, i) for i in (1, 2, 3)}
    out = {"01": 0, "06": 0}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        local, remote, state = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16), f[3]
        if state in out and (local in ports or remote in ports):
            out[state] += 1
    return {"established": out["01"], "time_wait": out["06"]}


def test_signing_reuses_tls_connections(live: Live) -> None:
    """30 signatures (each at least two node calls) open next to no new connection: the
    coordinator's pools keep their TLS connections alive (a handshake per request would
    leave one TIME_WAIT socket per call)."""
    key = live.key("ed25519")
    live.requester.sign(key.id, b"warm")
    before = _node_port_sockets(live)
    for i in range(30):
        assert live.requester.sign(key.id, b"reuse %d" % i).status == "signed"
    after = _node_port_sockets(live)
    assert after["time_wait"] - before["time_wait"] <= 6, (before, after)
    assert after["established"] > 0, after


def test_key_material_at_rest(live: Live) -> None:
    """Private keys 0600 in 0700 directories; the node's TLS key is encrypted (its
    passphrase sealed by the node's HSM, not on disk)."""
    d = live.cluster.data_dir
    for f in [d / "tls" / "ca.key", d / "coordinator" / "tls" / "client.key"] + [
        d / f"node-{i}" / "tls" / "node.key" for i in (1, 2, 3)
    ]:
        assert f.stat().st_mode & 0o777 == 0o600, f
        assert f.parent.stat().st_mode & 0o777 == 0o700, f.parent
    node_key = (d / "node-1" / "tls" / "node.key").read_bytes()
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in node_key
    assert not list((d / "node-1" / "tls").glob("*pass*"))


# -- the nodes refuse --------------------------------------------------------------------------
def test_node_refuses_a_client_without_certificate(live: Live) -> None:
    ctx = tls.client_context(live.cluster.coordinator_tls_dir / "ca.pem", None, None)
    with pytest.raises(httpx.HTTPError):
        httpx.get(live.cluster.node_url(1) + "/health", verify=ctx, timeout=5)
    assert _health(live, 1)["status"] == "ok"  # and the node still serves its coordinator


def test_node_refuses_a_tls12_client(live: Live) -> None:
    d = live.cluster.coordinator_tls_dir
    ctx = tls.client_context(d / "ca.pem", d / "client.crt", d / "client.key")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    # the node's handshake fails on the TLS 1.2 ClientHello (asyncio closes without an
    # alert: the client sees an EOF during its handshake)
    with pytest.raises(httpx.ConnectError, match=r"\[SSL"):
        httpx.get(live.cluster.node_url(1) + "/health", verify=ctx, timeout=5)
    ctx13 = tls.client_context(d / "ca.pem", d / "client.crt", d / "client.key")
    assert httpx.get(live.cluster.node_url(1) + "/health", verify=ctx13, timeout=5).is_success


def test_node_refuses_plain_http(live: Live) -> None:
    plain = live.cluster.node_url(1).replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/health", timeout=5)


# -- the coordinator refuses, naming the node ---------------------------------------------------
def _refused_enrol(live: Live, url: str) -> str:
    r = _enrol(live, "node-2", url)
    assert r.status_code == 502, r.text
    detail = r.json()["detail"]
    assert "node-2" in detail, detail
    return detail


def test_coordinator_refuses_a_certificate_of_another_ca(live: Live, tmp_path: Path) -> None:
    rogue = tls.make_ca("rogue")
    port = free_port_block(1)
    with impostor(tmp_path, _impostor_cert(rogue, "node-2"), _health(live, 2), port) as url:
        detail = _refused_enrol(live, url)
    assert "certificate refused" in detail and "issuer" in detail, detail


def test_coordinator_refuses_an_unpinned_certificate_of_the_same_ca(
    live: Live, tmp_path: Path
) -> None:
    """Same CA, node-2's name, another key: the impostor even reports node-2's identity."""
    port = free_port_block(1)
    with impostor(tmp_path, _impostor_cert(_ca(live), "node-2"), _health(live, 2), port) as url:
        detail = _refused_enrol(live, url)
    assert "not the one its certificate is bound to" in detail, detail


def test_coordinator_refuses_an_expired_certificate(live: Live, tmp_path: Path) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    cert = _impostor_cert(_ca(live), "node-2", now=past, days=1)
    port = free_port_block(1)
    with impostor(tmp_path, cert, _health(live, 2), port) as url:
        detail = _refused_enrol(live, url)
    assert "certificate has expired" in detail, detail


def test_coordinator_refuses_a_tls12_only_server(live: Live, tmp_path: Path) -> None:
    port = free_port_block(1)
    cert = _impostor_cert(_ca(live), "node-2")
    with impostor(tmp_path, cert, _health(live, 2), port, max_tls="1.2") as url:
        detail = _refused_enrol(live, url)
    assert "handshake failed" in detail and "VERSION" in detail.upper(), detail


def test_coordinator_refuses_a_real_node_answering_for_another(live: Live) -> None:
    """node-3's real certificate (same CA, pinned to node-3) is not node-2's."""
    detail = _refused_enrol(live, live.cluster.node_url(3))
    assert "names node 'node-3', not 'node-2'" in detail, detail


def test_coordinator_refuses_a_plain_http_url(live: Live) -> None:
    plain = live.cluster.node_url(2).replace("https://", "http://")
    assert "plain HTTP" in _refused_enrol(live, plain)


def test_impostor_at_a_pinned_nodes_address_is_refused_and_the_node_comes_back(
    live: Live, tmp_path: Path
) -> None:
    """node-2 stops; an impostor with a CA-signed, unpinned certificate takes its port: the
    coordinator's health check (pinned to the roster's sign_pk) marks node-2 down naming
    the refusal, signing goes on with the others, and the real node-2 is healthy again
    once it is back."""
    assert {n["status"] for n in _nodes(live).values()} == {"healthy"}
    health = _health(live, 2)
    key = live.key("ed25519")
    live.cluster.stop_proc("node-2")
    port = node_port(live.cluster.port, 2)
    with impostor(tmp_path, _impostor_cert(_ca(live), "node-2"), health, port):

        def refused() -> bool:
            n = _nodes(live)["node-2"]
            return n["status"] == "down" and "not the roster's" in (n["last_error"] or "")

        _wait(refused, "node-2 refused")
        assert "node-2" in _nodes(live)["node-2"]["last_error"]
        sr = live.requester.sign(key.id, b"while node-2 is an impostor")
        assert sr.status == "signed" and 2 not in sr.signers, sr
        ok, by = verify_independently(
            "ed25519", key.public_key, b"while node-2 is an impostor", sr.signature, None
        )
        assert ok, by
    live.cluster.start_node(2)
    _wait(lambda: _nodes(live)["node-2"]["status"] == "healthy", "node-2 healthy again")
    assert _nodes(live)["node-2"]["url"] == live.cluster.node_url(2)  # nothing re-enrolled


# -- plain HTTP refused outside --dev -------------------------------------------------------------
def test_node_without_tls_refuses_to_start_outside_dev(tmp_path: Path) -> None:
    d = tmp_path / "node"
    init = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "signer_nodes", "init", "--data-dir", str(d), "--node-id",
         "node-9", "--party-id", "9", "--coordinator-key", "11" * 32],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    run = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "signer_nodes", "run", "--data-dir", str(d), "--port",
         str(free_port_block(1))],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "node.crt missing" in run.stderr and "--dev" in run.stderr, run.stderr


def test_coordinator_without_tls_refuses_to_start_outside_dev(tmp_path: Path) -> None:
    r = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "api", "serve", "--data-dir", str(tmp_path / "c"), "--port",
         str(free_port_block(1))],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "refused: no TLS material" in r.stderr and "--dev" in r.stderr, r.stderr


def _node_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "signer_nodes", *args],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip


def test_a_provisioned_node_serves_mtls_after_seal_key_rotation(tmp_path: Path) -> None:
    """The node's own CSR flow end to end: ``tls-request`` (key encrypted, passphrase
    sealed by the HSM), a CA signs, the seal key is rotated (the sealed passphrase is
    rewrapped with the identity keys), and ``run`` serves mutual TLS to the coordinator's
    certificate; the CSR's binding is the identity ``identity`` reports."""
    d = tmp_path / "node"
    r = _node_cli("init", "--data-dir", str(d), "--node-id", "node-7", "--party-id", "7",
                  "--coordinator-key", "22" * 32)  # fmt: skip
    assert r.returncode == 0, r.stderr
    sign_pk = bytes.fromhex(json.loads(r.stdout)["sign_pk"])
    r = _node_cli("tls-request", "--data-dir", str(d), "--host", "127.0.0.1")
    assert r.returncode == 0, r.stderr
    ca = tls.make_ca("t")
    cert = tls.issue_node(ca, tls.load_csr(r.stdout.encode()))
    der = cert.public_bytes(serialization.Encoding.DER)
    assert tls.check_node_certificate(der, "node-7", sign_pk) == sign_pk
    tls.write_public(d / "tls" / "node.crt", tls.pem(cert))
    tls.write_public(d / "tls" / "ca.pem", tls.pem(ca.cert))
    assert b"ENCRYPTED" in (d / "tls" / "node.key").read_bytes()
    r = _node_cli("rotate-seal-key", "--data-dir", str(d))
    assert r.returncode == 0, r.stderr
    coord = tls.new_key()
    tls.write_public(tmp_path / "c.crt", tls.pem(tls.issue_coordinator(ca, coord)))
    tls.write_private(tmp_path / "c.key", tls.key_pem(coord))
    tls.write_public(tmp_path / "ca.pem", tls.pem(ca.cert))
    port = free_port_block(1)
    p = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "signer_nodes", "run", "--data-dir", str(d), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        ctx = tls.client_context(tmp_path / "ca.pem", tmp_path / "c.crt", tmp_path / "c.key")
        end, health = time.monotonic() + 60, None
        while health is None:
            assert p.poll() is None, p.stderr.read() if p.stderr else ""
            try:
                health = httpx.get(f"https://127.0.0.1:{port}/health", verify=ctx, timeout=2)
            except httpx.HTTPError:
                assert time.monotonic() < end, "node did not serve TLS"
                time.sleep(0.2)
        assert health.status_code == 200 and health.json()["node_id"] == "node-7"
    finally:
        p.terminate()
        p.wait(10)
