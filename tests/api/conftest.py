"""Fixtures: a coordinator app on a temporary SQLite file (or, with
``CUSTODY_TEST_DATABASE=postgresql``, a fresh database of its own on the tests' PostgreSQL
server, :mod:`tests.pg`), one credential per role, and a governance genesis installed on
it (as ``custody up`` installs one): the ``api`` fixture's policy needs two treasury
approvals for raw, payment and settlement requests and is the demo policy otherwise;
``dev_api`` lists every key in ``raw_signing_keys`` (raw is signed at once, as
``custody up --allow-raw``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from nacl.signing import SigningKey

from api.app import create_app
from api.auth import create_credential
from api.db import Key
from api.governance import GovernanceStore
from api.settings import Settings
from custody import governance as gov
from custody import policy as pol
from custody.cluster import APPROVERS, TREASURY, demo_policy, free_port_block
from custody.domain import ROLES
from mpc.groups import SECP256K1
from tests import pg

# The treasury approvers' keys (fixed seeds: tests sign approvals with them)
APPROVER_KEYS = {
    a: SigningKey(hashlib.sha256(b"tpwc test approver " + a.encode()).digest()) for a in APPROVERS
}
PRINCIPALS = {"requester": "payments-bot", "approver": "treasury-desk"}


def treasury() -> tuple[pol.Approver, ...]:
    return tuple(pol.Approver(a, bytes(k.verify_key)) for a, k in APPROVER_KEYS.items())


def test_policy() -> pol.Policy:
    """The demo policy, after one rule: raw, payment and settlement need 2 of treasury."""
    demo = demo_policy(treasury())
    two = pol.Requirement("all", (pol.GroupQuorum(TREASURY, 2),))
    other = pol.Rule(
        "other-kinds-approved",
        "approve",
        kinds=frozenset({"raw", "payment", "settlement"}),
        approvals=two,
    )
    return pol.Policy((other, *demo.rules), demo.allowlists, demo.wallets, demo.approver_groups)


def install_genesis(data_dir: Path, policy: pol.Policy, raw: bool = False) -> gov.Governance:
    """Install a genesis (one test officer, no roster) on a coordinator's data directory."""
    officer = SigningKey.generate()
    body = gov.Governance(
        cluster_id="tpwc-dev",  # the default cluster id (tests sign checkpoints for it)
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(gov.Officer("test-officer", bytes(officer.verify_key)),),
        quorum=1,
        roster=(),
        raw_signing_keys=frozenset({gov.ALL_KEYS}) if raw else frozenset(),
        policy=policy,
    )
    doc = gov.unsigned(body).with_signature(officer, "test-officer")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return GovernanceStore(data_dir).install_genesis(doc.encode())


def nothing_up_my_sleeve_point(label: bytes) -> bytes:
    """A secp256k1 point nobody knows the discrete log of (try-and-increment from a hash)."""
    ctr = 0
    while True:
        x = hashlib.sha256(label + ctr.to_bytes(4, "big")).digest()
        try:
            return SECP256K1.lift_x(x).encode()
        except Exception:
            ctr += 1


class Api:
    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client = client
        self.tokens = tokens

    def h(self, role: str | None, idem: str | None = None) -> dict[str, str]:
        out = {}
        if role:
            out["Authorization"] = f"Bearer {self.tokens[role]}"
        if idem:
            out["Idempotency-Key"] = idem
        return out

    @property
    def app(self):  # noqa: ANN201
        return self.client.app

    def add_key(self, scheme: str = "ecdsa-secp256k1", status: str = "active") -> str:
        """Insert a key row as a finished DKG would leave it (public data only)."""
        pk = nothing_up_my_sleeve_point(scheme.encode())
        if scheme != "ecdsa-secp256k1":
            pk = pk[1:]
        kid = "key_" + hashlib.sha256(pk + status.encode()).hexdigest()[:32]
        with self.app.state.db.session() as s:
            s.add(
                Key(
                    id=kid,
                    scheme=scheme,
                    threshold=2,
                    nodes=["node-1", "node-2", "node-3"],
                    status=status,
                    public_key=pk.hex(),
                    verifying_shares={},
                )
            )
        return kid

    def add_signing_key(self) -> tuple[str, object]:
        """An active ed25519 key row whose public key belongs to a test-only single key
        (pynacl), standing in for a DKG result so tests can store real signatures."""
        sk = SigningKey.generate()
        kid = "key_" + bytes(sk.verify_key).hex()[:32]
        with self.app.state.db.session() as s:
            s.add(
                Key(
                    id=kid,
                    scheme="ed25519",
                    threshold=2,
                    nodes=["node-1", "node-2", "node-3"],
                    status="active",
                    public_key=bytes(sk.verify_key).hex(),
                    verifying_shares={},
                )
            )
        return kid, sk


def make_api(
    tmp_path: Path,
    *,
    raw: bool = False,
    policy: pol.Policy | None = None,
    genesis: bytes | None = None,
    **kw,  # noqa: ANN003
) -> Iterator[Api]:
    """An app with a genesis of ``policy`` (default :func:`test_policy`), or the signed
    ``genesis`` document given (``b""``: none at all); ``raw``: raw signing enabled for every
    key."""
    pg_url = None
    if pg.coordinator_on_postgres() and "database_url" not in kw:
        kw["database_url"] = pg_url = pg.fresh_coordinator_database("coord")
    settings = Settings(data_dir=tmp_path / "coord", **{"sync_wait": 2.0, **kw})
    if genesis is None:
        install_genesis(settings.data_dir, test_policy() if policy is None else policy, raw)
    elif genesis:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        GovernanceStore(settings.data_dir).install_genesis(genesis)
    app = create_app(settings, background=False)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            tokens = {
                r: create_credential(app.state.db, r, principal=PRINCIPALS.get(r))[1] for r in ROLES
            }
            yield Api(client, tokens)
    finally:
        if pg_url is not None:
            app.state.db.engine.dispose()
            pg.drop_database(pg_url)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path)


@pytest.fixture
def dev_api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path, raw=True)


ROOT = Path(__file__).resolve().parents[2]

_PG_DATABASES: dict[Path, str] = {}


def coordinator_env(d: Path, env: Mapping[str, str] | None) -> dict[str, str] | None:
    """The environment of a coordinator process on data directory ``d``: ``env`` (None: this
    process's), plus, under ``CUSTODY_TEST_DATABASE=postgresql``, ``CUSTODY_DATABASE_URL``
    of a fresh database of ``d``'s own (the same one for every process on ``d``)."""
    if not pg.coordinator_on_postgres():
        return None if env is None else dict(env)
    if d not in _PG_DATABASES:
        _PG_DATABASES[d] = pg.fresh_coordinator_database("proc")
    return {**(os.environ if env is None else env), "CUSTODY_DATABASE_URL": _PG_DATABASES[d]}


def coordinator_database_url(d: Path) -> str:
    """The database URL of the coordinator processes on data directory ``d``: its fresh
    PostgreSQL database under ``CUSTODY_TEST_DATABASE=postgresql``, else its SQLite file."""
    env = coordinator_env(d, {})
    return (env or {}).get("CUSTODY_DATABASE_URL") or f"sqlite:///{d / 'coordinator.db'}"


def init_coordinator(d: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``python -m api init --data-dir d`` in its own process: the bootstrap credentials."""
    out = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "api", "init", "--data-dir", str(d)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=coordinator_env(d, env),
        check=True,
        timeout=120,
    )
    creds: dict[str, str] = json.loads(out.stdout)["credentials"]
    return creds


@contextlib.contextmanager
def serve_coordinator(d: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``python -m api serve`` on a free port until healthy (its log beside ``d``); yields
    its URL and terminates it on the way out."""
    port = free_port_block(1)
    log = open(d.parent / "coordinator.log", "wb")  # noqa: SIM115
    p = subprocess.Popen(  # noqa: S603 - our own argv
        [sys.executable, "-m", "api", "serve", "--data-dir", str(d), "--port", str(port)]
        + ["--dev"],  # no TLS material: plain HTTP to nodes (docs/SECURITY.md)
        cwd=ROOT,
        env=coordinator_env(d, env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and p.poll() is None, "coordinator did not start"
            time.sleep(0.2)
        yield url
    finally:
        p.terminate()
        p.wait(10)
        log.close()
