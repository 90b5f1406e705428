"""docker-compose.yml, the Dockerfile and deploy/ (issue 14 item 8).

No Docker engine runs here and the ``docker compose`` plugin is not installed, so the file
is parsed (PyYAML) and its invariants checked; ``docker compose config`` runs too where the
plugin exists. Then the deploy scripts themselves run as processes on this machine: the
``init`` step against a real PostgreSQL server, the officers' genesis, the nodes and two
coordinators started by ``deploy/entrypoint.sh`` exactly as the compose services start
them (TLS everywhere, no ``--dev``), the ``enrol`` step, and signatures through each
coordinator checked by pynacl and coincurve. (HAProxy in front of the same topology:
``tests/lb/test_multi.py``.)
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import coincurve
import httpx
import nacl.signing
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from custody import cluster, governance, tls
from custody.client import CustodyClient
from simulations import haproxy as lbcfg
from simulations import pgserver
from tests.lb.conftest import require_topology

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
SH = shutil.which("sh") or "/bin/sh"
PROVISION = ROOT / "deploy" / "provision.py"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svcs: dict[str, dict[str, Any]] = compose["services"]
    return svcs


ONE_SHOTS = {"init", "enrol"}


def test_topology(compose: dict[str, Any]) -> None:
    svcs = _services(compose)
    assert set(svcs) == {
        "postgres", "init", "enrol", "node-1", "node-2", "node-3",
        "coordinator-1", "coordinator-2", "lb",
    }  # fmt: skip
    # each coordinator its own identity: its own data volume, sealed key and PIN secret
    c1, c2 = svcs["coordinator-1"], svcs["coordinator-2"]
    assert c1["command"] == ["coordinator"]
    assert c2["command"] == ["coordinator", "coordinator-2"]
    assert "coordinator-data:/srv/coordinator" in c1["volumes"]
    assert "coordinator-2-data:/srv/coordinator-2" in c2["volumes"]
    assert not any("coordinator-data:" in v for v in c2["volumes"])  # not the first one's
    for c, pin in ((c1, "coordinator_pin"), (c2, "coordinator_2_pin")):
        assert "pg_password" in c["secrets"] and pin in c["secrets"]
    # after coordinator-1 (the genesis installed once) and after the enrolment (a
    # coordinator reads the enrolled nodes when it starts)
    assert svcs["coordinator-2"]["depends_on"] == {
        "coordinator-1": {"condition": "service_healthy"},
        "enrol": {"condition": "service_completed_successfully"},
    }
    for i in (1, 2, 3):
        n = svcs[f"node-{i}"]
        assert n["command"] == ["node", str(i)] and n["secrets"] == [f"node_{i}_pin"]
        assert n["volumes"][0] == f"node-{i}-data:/srv/node-{i}"  # its own volume
        assert n["depends_on"]["init"] == {"condition": "service_completed_successfully"}
    # only HAProxy is published, on loopback
    published = {n: s["ports"] for n, s in svcs.items() if "ports" in s}
    assert published == {"lb": ["127.0.0.1:8443:8443"]}
    pg_env = svcs["postgres"]["environment"]
    assert pg_env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/pg_password"  # noqa: S105


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, s in _services(compose).items():
        if name in ONE_SHOTS:
            assert s["restart"] == "no" and s["healthcheck"] == {"disable": True}, name
            continue
        assert s["restart"] == "unless-stopped", name
        test = s["healthcheck"]["test"]
        assert test[0] == "CMD" and len(test) > 1, name


def test_no_dev_flags_anywhere() -> None:
    """No line that runs anything says --dev (comments may say there is none)."""
    for f in ("docker-compose.yml", "Dockerfile", "deploy/entrypoint.sh", "deploy/provision.py"):
        for n, line in enumerate((ROOT / f).read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not re.search(r"--dev\b", code), f"{f}:{n}: {line}"


def test_services_run_as_the_service_user_with_writable_volumes(compose: dict[str, Any]) -> None:
    """Every custody service runs as uid 10001 and mounts each named volume at the path the
    Dockerfile pre-creates owned by 10001 (a new named volume takes that ownership), the
    same path in every service that mounts it (the token configurations name it)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "chown -R 10001:10001 /srv" in dockerfile and "USER 10001:10001" in dockerfile
    where: dict[str, set[str]] = {}
    for name, s in _services(compose).items():
        if name == "postgres":
            continue
        assert s["user"] == "10001:10001", name
        for v in s.get("volumes", []):
            src, dst, *_ = v.split(":")
            if src.startswith("./"):
                assert v.endswith(":ro"), v  # bind mounts (the genesis) are read-only
                continue
            where.setdefault(src, set()).add(dst)
    for vol, paths in where.items():
        assert len(paths) == 1, (vol, paths)
        (path,) = paths
        assert path.startswith("/srv/") and path in dockerfile, (vol, path)
    assert set(where) | {"postgres-data"} == set(compose["volumes"])


def test_secrets_stay_out_of_the_image(compose: dict[str, Any]) -> None:
    files = {s["file"] for s in compose["secrets"].values()}
    assert all(f.startswith("./secrets/") for f in files), files
    ignore = (ROOT / ".dockerignore").read_text().split()
    for d in ("secrets/", "governance/", "bootstrap/", ".env"):
        assert d in ignore
    copies = re.findall(r"^COPY (\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert not {"secrets", "governance", "bootstrap", "."} & {c.rstrip("/") for c in copies}
    env_blob = json.dumps([s.get("environment", {}) for s in _services(compose).values()])
    assert "PASSWORD=" not in env_blob and "postgresql+psycopg://" not in env_blob


def test_haproxy_config_is_the_rendered_one() -> None:
    """deploy/haproxy.cfg is what simulations/haproxy.py renders for compose (the harness
    renders the same function for its processes), and HAProxy accepts it."""
    committed = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert committed == lbcfg.compose_config(), (
        "regenerate: python -m simulations.haproxy --compose"
    )
    if lbcfg.haproxy_binary() is None:
        pytest.skip("haproxy not installed: the syntax check needs it")


def test_haproxy_accepts_the_compose_config(tmp_path: Path) -> None:
    require_topology()
    ca = tls.make_ca("compose-test")
    key = tls.new_key()
    pem = tmp_path / "frontend.pem"
    pem.write_bytes(tls.pem(tls.issue_frontend(ca, key, ["localhost"])) + tls.key_pem(key))
    cfg = lbcfg.compose_config().replace(lbcfg.COMPOSE_PEM, str(pem))
    h = lbcfg.Haproxy(tmp_path, cfg, tmp_path / "log", tmp_path / "sock")
    h.check()


def test_commands_are_the_harness_commands() -> None:
    """The entrypoint runs the commands custody up / simulations.multi run (Cluster)."""
    ep = ENTRYPOINT.read_text()
    prov = PROVISION.read_text()
    src = "".join(inspect.getsource(cluster.Cluster).split())
    for argv in ('"-m","api","serve"', '"-m","signer_nodes","run"', '"-m","signer_nodes","init"',
                 '"-m","api","init"', '"-m","signer_nodes","trust"', '"-m","api","trust"',
                 '"tls-request"', '"identity"'):  # fmt: skip
        assert argv in src, argv
    assert '-m api serve --data-dir "$d"' in ep and '-m signer_nodes run --data-dir "$d"' in ep
    assert '-m api trust --data-dir "$d"' in ep and "-m signer_nodes trust --data-dir" in ep
    assert '"api", "init"' in prov and '"signer_nodes", "init"' in prov
    assert '"tls-request"' in prov and '"identity"' in prov
    assert "haproxy -db -f" in ep  # as simulations.haproxy.Haproxy.start runs it
    assert '"-db","-f"' in "".join(inspect.getsource(lbcfg.Haproxy.start).split())
    r = subprocess.run([SH, "-n", str(ENTRYPOINT)], capture_output=True, text=True)  # noqa: S603
    assert r.returncode == 0, r.stderr
    assert os.access(ENTRYPOINT, os.X_OK)


def test_docker_compose_config_where_the_plugin_exists() -> None:
    docker = shutil.which("docker")
    probe = [docker, "compose", "version"] if docker else None
    ok = probe and subprocess.run(probe, capture_output=True).returncode == 0  # noqa: S603
    if not ok:
        pytest.skip("the docker compose plugin is not installed (the YAML is checked above)")
    assert docker is not None
    r = subprocess.run([docker, "compose", "config", "-q"], cwd=ROOT, capture_output=True)  # noqa: S603
    assert r.returncode == 0, r.stderr


# -- the deploy scripts as processes ------------------------------------------------------


def _sh(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(  # noqa: S603
        [SH, str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, cwd=ROOT
    )
    if check and r.returncode != 0:
        raise AssertionError(f"entrypoint {args} failed ({r.returncode}): {r.stderr[-3000:]}")
    return r


class Deployed:
    def __init__(self, root: Path, env: dict[str, str], base: int) -> None:
        self.root, self.env, self.base = root, env, base
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, *args: str, **extra: str) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed after Popen
        self.procs.append(
            subprocess.Popen(  # noqa: S603
                [SH, str(ENTRYPOINT), *args],
                env={**self.env, **extra},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )  # fmt: skip
        )
        log.close()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


def _genesis(root: Path, officers_dir: Path, coordinators: dict[str, str]) -> bytes:
    """The officers' step (docs/DEPLOY.md step 2): a genesis pinning the identities init
    printed (the three nodes and both coordinators' keys), signed by 2 of 3 officers (their
    keys are theirs: made here, outside the deployment's directories), raw signing on for
    the test's keys."""
    officers_dir.mkdir()
    officers, signers = [], {}
    for i in (1, 2, 3):
        officer, blob = governance.create_officer_key(
            f"officer-{i}", b"passphrase", cost=governance.INTERACTIVE
        )
        officers.append(officer)
        signers[officer.officer_id] = governance.open_officer_key(blob, b"passphrase")[1]
    roster = []
    for i in (1, 2, 3):
        ident = json.loads((root / "bootstrap" / "identities" / f"node-{i}.json").read_text())
        roster.append(
            governance.RosterNode(
                ident["node_id"],
                int(ident["party_id"]),
                bytes.fromhex(ident["sign_pk"]),
                bytes.fromhex(ident["box_pk"]),
            )  # fmt: skip
        )
    body = governance.Governance(
        cluster_id="compose-test",
        version=1,
        previous=governance.GENESIS_PREVIOUS,
        officers=tuple(officers),
        quorum=2,
        roster=tuple(roster),
        raw_signing_keys=frozenset({governance.ALL_KEYS}),
        coordinators=tuple(
            governance.PinnedCoordinator(name, bytes.fromhex(pk))
            for name, pk in sorted(coordinators.items())
        ),
    )
    doc = governance.unsigned(body)
    for oid in ("officer-1", "officer-2"):
        doc = doc.with_signature(signers[oid], oid)
    return doc.encode()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployed, dict[str, Any]]]:
    require_topology()
    base = cluster.free_port_block(5)
    top = tmp_path_factory.mktemp("compose")
    root, secrets = top / "srv", top / "secrets"
    root.mkdir(mode=0o700)
    secrets.mkdir(mode=0o700)
    # compose's secrets: coordinator-2 has its own PIN, so init gives it its own identity
    for name in ("coordinator_pin", "coordinator_2_pin", "node_1_pin", "node_2_pin", "node_3_pin"):
        (secrets / name).write_text(os.urandom(8).hex())
    with pgserver.PgServer(durable=False) as pg:
        url = pg.create_database("custody")
        env = {
            **os.environ,
            "PYTHON": sys.executable,
            "PYTHONPATH": str(ROOT),
            "CUSTODY_DEPLOY_ROOT": str(root),
            "CUSTODY_SECRETS_DIR": str(secrets),
            "CUSTODY_DATABASE_URL": url,
            "CUSTODY_COORDINATOR_PIN_FILE": str(secrets / "coordinator_pin"),
            "CUSTODY_API_PORT": str(base),
            "CUSTODY_LISTEN_HOST": "127.0.0.1",
            "CUSTODY_NODE_HOST_PATTERN": "localhost",  # compose: node-{i}
            "CUSTODY_COORDINATOR_HOST": "127.0.0.1",
            "CUSTODY_GENESIS": str(top / "governance" / "v1.gov"),
            "CUSTODY_POOL_INTERVAL": "0.3",
            "CUSTODY_PRESIG_TARGET": "4",
        }
        first = json.loads(_sh(env, "init").stdout)
        again = json.loads(_sh(env, "init").stdout)  # idempotent
        d = Deployed(root, env, base)
        try:
            for i in (1, 2, 3):  # started before the genesis exists: they wait for it
                d.spawn(f"node-{i}", "node", str(i))
            (top / "governance").mkdir()
            gov_file = top / "governance" / "v1.gov"
            gov_file.write_bytes(_genesis(root, top / "officers", first["coordinator_public_keys"]))
            d.spawn("coordinator-1", "coordinator")
            _wait(f"http://127.0.0.1:{base}/health", d)
            enrol = _sh(env, "enrol")  # compose: coordinator-2 starts after enrol
            d.spawn(  # compose: command ["coordinator", "coordinator-2"], its own PIN secret
                "coordinator-2",
                "coordinator",
                "coordinator-2",
                CUSTODY_LISTEN_PORT=str(base + 4),
                CUSTODY_COORDINATOR_PIN_FILE=str(secrets / "coordinator_2_pin"),
            )
            _wait(f"http://127.0.0.1:{base + 4}/health", d)
            yield d, {"first": first, "again": again, "enrol": enrol, "pg": pg}
        finally:
            d.stop()


def _wait(url: str, d: Deployed, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        dead = [p.args for p in d.procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = {f.name: f.read_text()[-1500:] for f in d.root.glob("*.log")}
            raise AssertionError(f"{url} not up (exited: {dead}): {logs}")
        time.sleep(0.2)


def test_init_makes_every_secret_once_with_tight_modes(deployed: tuple[Deployed, dict]) -> None:  # type: ignore[type-arg]
    d, out = deployed
    first, again = out["first"], out["again"]
    assert first["coordinator_public_key"] == again["coordinator_public_key"]
    assert first["identities"] == again["identities"]
    creds = json.loads((d.root / "bootstrap" / "credentials.json").read_text())
    assert set(creds) == {"admin", "requester", "approver", "auditor"}
    for f in ("bootstrap/credentials.json", "pki/ca.key", "lb/frontend.pem",
              "coordinator/tls/client.key"):  # fmt: skip
        mode = stat.S_IMODE((d.root / f).stat().st_mode)
        assert mode == 0o600, (f, oct(mode))
    # the CA key is only in pki/ (the volume only init mounts)
    assert [p.relative_to(d.root) for p in d.root.rglob("ca.key")] == [Path("pki/ca.key")]
    ca = x509.load_pem_x509_certificate((d.root / "pki" / "ca.pem").read_bytes())
    for i in (1, 2, 3):
        der = x509.load_pem_x509_certificate(
            (d.root / f"node-{i}" / "tls" / "node.crt").read_bytes()
        )
        der.verify_directly_issued_by(ca)
        sign_pk = bytes.fromhex(first["identities"][f"node-{i}"]["sign_pk"])
        tls.check_node_certificate(der.public_bytes(Encoding.DER), f"node-{i}", sign_pk)
    front = x509.load_pem_x509_certificate((d.root / "lb" / "frontend.pem").read_bytes())
    front.verify_directly_issued_by(ca)
    assert (d.root / "bootstrap" / "coordinator.pub").read_text().strip() == first[
        "coordinator_public_key"
    ]


def test_init_gives_coordinator_2_its_own_identity(deployed: tuple[Deployed, dict]) -> None:  # type: ignore[type-arg]
    """With compose's ``coordinator_2_pin`` secret, init gives coordinator-2 its own key in
    its own token, its own client certificate and ``bootstrap/coordinator-2.pub``; the
    printed next step pins both keys; the second run changed nothing (issue 14)."""
    d, out = deployed
    first, again = out["first"], out["again"]
    keys = first["coordinator_public_keys"]
    assert set(keys) == {"coordinator-1", "coordinator-2"}
    assert keys["coordinator-1"] == first["coordinator_public_key"]
    assert keys["coordinator-1"] != keys["coordinator-2"]
    assert again["coordinator_public_keys"] == keys  # idempotent: the same two identities
    pub2 = (d.root / "bootstrap" / "coordinator-2.pub").read_text().strip()
    assert pub2 == keys["coordinator-2"]
    for c in ("coordinator", "coordinator-2"):
        assert (d.root / c / "tls" / "client.crt").is_file()
        mode = stat.S_IMODE((d.root / c / "tls" / "client.key").stat().st_mode)
        assert mode == 0o600, (c, oct(mode))
    crt1 = (d.root / "coordinator" / "tls" / "client.crt").read_bytes()
    assert crt1 != (d.root / "coordinator-2" / "tls" / "client.crt").read_bytes()
    for name, key in keys.items():
        assert f"--coordinator {name}={key}" in first["next"]


def test_two_coordinators_from_the_entrypoint_sign_verified(
    deployed: tuple[Deployed, dict],  # type: ignore[type-arg]
) -> None:
    """Nodes and coordinators started by deploy/entrypoint.sh (mutual TLS, PostgreSQL),
    enrolled by the enrol step: a key made through coordinator 1 signs through both; the
    signatures verify under pynacl and coincurve."""
    d, out = deployed
    assert "every node healthy" in out["enrol"].stderr
    creds = json.loads((d.root / "bootstrap" / "credentials.json").read_text())
    urls = [f"http://127.0.0.1:{d.base}", f"http://127.0.0.1:{d.base + 4}"]
    for u in urls:
        ready = httpx.get(u + "/ready", timeout=10).json()
        assert ready["nodes_healthy"] == 3 and ready["nodes_enrolled"] == 3, ready
    with CustodyClient(urls[0], creds["admin"]) as admin:
        ed = admin.create_key("ed25519", 2)
        ec = admin.create_key("ecdsa-secp256k1", 2)
    assert ed.public_key and ec.public_key
    for u in urls:
        with CustodyClient(u, creds["requester"]) as req:
            m = f"compose {u}".encode()
            sr = req.sign(ed.id, m)
            assert sr.status == "signed" and sr.signature
            nacl.signing.VerifyKey(bytes.fromhex(ed.public_key)).verify(
                m, bytes.fromhex(sr.signature)
            )
            digest = bytes(range(32))
            sr = req.sign(ec.id, digest)
            assert sr.status == "signed" and sr.signature and sr.recovery_id is not None
            rec = coincurve.PublicKey.from_signature_and_message(
                bytes.fromhex(sr.signature) + bytes([sr.recovery_id]), digest, hasher=None
            )
            assert rec.format() == bytes.fromhex(ec.public_key)
    # the nodes serve mutual TLS only: plain HTTP to a node is refused
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{d.base + 1}/health", timeout=5)
