"""Real local clusters (coordinator + 3 signer-node processes on loopback): one per test
module (``live``), or one the session shares among modules that only make their own keys
and sign (``shared_live``).

Its genesis has the demo policy and, because these tests sign ``raw`` bytes, raw signing
enabled for every key (``custody up --allow-raw``)."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import nacl.signing
import pytest

from api.settings import Settings
from custody import governance as gov
from custody import policy as pol
from custody.client import CustodyClient
from custody.cluster import Cluster, free_port_block, write_private_json
from custody.models import KeyOut
from tests import pg


def collection_rng(name: str) -> random.Random:
    """A random source for a test point drawn at collection (a random delay given as a
    parameter, so its value is in the test id). Under pytest-xdist every worker collects
    the suite and their test ids must agree: it is seeded by ``name`` and the run's id
    (``PYTEST_XDIST_TESTRUNUID``: the same in every worker, new each run); in a serial run,
    by the OS."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return random.Random(f"{run}:{name}" if run else None)  # noqa: S311 - a test point


# -- signing with a coordinator's key in its own token (the attacks on the nodes) ----------
#: The subprocess :func:`token_sign` runs: it opens a coordinator's PKCS#11 token as a thief
#: on the coordinator host would (the dev PIN file next to it) and signs each hex payload of
#: its stdin with the coordinator's Ed25519 key (the key never leaves the token).
_SIGNER_SCRIPT = """
import json, sys
from pathlib import Path
from hsm import Hsm, HsmConfig
d = Path(sys.argv[1])
state = json.loads((d / "hsm.json").read_text())
pin = (d / "hsm.pin").read_text().strip()
hsm = Hsm.open(HsmConfig(state["token_label"], pin, softhsm_conf=state["softhsm_conf"]))
out = [hsm.sign_ed25519("coordinator", bytes.fromhex(x)).hex() for x in json.load(sys.stdin)]
hsm.close()
print(json.dumps(out))
"""

_ROOT = Path(__file__).resolve().parents[2]


def token_sign(coordinator_dir: Path, payloads: list[bytes]) -> list[bytes]:
    """Signatures of ``payloads`` by the coordinator key in the token of
    ``coordinator_dir`` (a coordinator's data directory: its ``hsm.json`` and dev
    ``hsm.pin``), made by a subprocess: SoftHSM2 binds a process to one token directory,
    so the test process (which may hold another token) cannot open it itself. Used by
    tests/e2e/test_cluster.py, tests/e2e/test_coordinator_identities.py and
    tests/multi/test_chaos.py to send nodes requests past the coordinator."""
    done = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-c", _SIGNER_SCRIPT, str(coordinator_dir)],
        input=json.dumps([p.hex() for p in payloads]),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=_ROOT,
        check=True,
    )
    return [bytes.fromhex(x) for x in json.loads(done.stdout)]


class Live:
    def __init__(self, cluster: Cluster, doc: dict) -> None:
        self.cluster = cluster
        self.doc = doc
        creds = doc["credentials"]
        self.admin = CustodyClient(doc["api_url"], creds["admin"])
        self.requester = CustodyClient(doc["api_url"], creds["requester"])
        self.auditor = CustodyClient(doc["api_url"], creds["auditor"])
        self.keys: dict[str, KeyOut] = {}

    def key(self, scheme: str) -> KeyOut:
        if scheme not in self.keys:
            k = self.admin.create_key(scheme, 2)
            assert k.status == "active", k
            self.keys[scheme] = k
        return self.keys[scheme]

    def close(self) -> None:
        for c in (self.admin, self.requester, self.auditor):
            c.close()


def current_governance(live: Live) -> tuple[gov.Governance, bytes]:
    """The active governance version (and its document) as the coordinator holds it."""
    doc = live.admin.http.get("/v1/governance").json()
    raw = bytes.fromhex(doc["document"])
    return gov.decode(raw).body, raw


def dev_officers(live: Live) -> dict[str, nacl.signing.SigningKey]:
    """The dev cluster's officers' keys (``custody up`` writes them under DIR/officers)."""
    d = live.cluster.data_dir / "officers"
    passphrase = (d / "passphrase").read_bytes()
    out = {}
    for f in sorted(d.glob("*.key")):
        officer, signer = gov.open_officer_key(f.read_bytes(), passphrase)
        out[officer.officer_id] = signer
    return out


def install_policy(live: Live, policy: pol.Policy) -> gov.Governance:
    """Propose the next governance version with ``policy``, sign it with a quorum of the
    dev officers and install it through the coordinator on every node."""
    cur, _ = current_governance(live)
    nxt = gov.unsigned(cur.successor(policy=policy))
    keys = dev_officers(live)
    for oid in sorted(keys)[: cur.quorum]:
        nxt = nxt.with_signature(keys[oid], oid)
    put = live.admin.http.put("/v1/governance", json={"document": nxt.encode().hex()})
    assert put.status_code == 200, put.text
    assert set(put.json()["nodes"].values()) == {"installed"}, put.json()
    return nxt.body


#: What every test cluster runs with: fast pool/health sweeps, short rounds, and a small
#: ECDSA presignature pool (4 per key, refilled at once below 1; api/settings.py): a test
#: signs a handful of times, and a full default pool (16) costs every ECDSA key, and every
#: refresh of one, a dozen presign sessions the test never uses, run in the background
#: while it runs. An empty pool presigns on demand. Modules that kill or restart nodes while
#: ECDSA keys sign keep the default pool (:func:`live_default_pool`).
CLUSTER_ENV = {
    "CUSTODY_POOL_INTERVAL": "0.3",
    "CUSTODY_ROUND_TIMEOUT": "5",
    "CUSTODY_PRESIG_TARGET": "4",
}

# -- a provisioned cluster, copied ---------------------------------------------------------
# Provisioning a cluster (``custody.cluster.Cluster.provision``) is eleven short-lived
# processes (``api init``, ``signer_nodes init`` / ``identity`` / ``trust`` per node, ``api
# trust``) and six key files: most of a cluster's start-up. It runs once per test session,
# into a template directory never started; each cluster a test starts runs a copy of it, so
# each still starts from a freshly provisioned state of its own (its own databases and
# SoftHSM2 tokens). The copies share identities and credentials, which no test compares
# across clusters.

#: The files of a provisioned cluster that name its directory (``hsm.provision``'s dev
#: SoftHSM2 configs, the coordinator's ``hsm.json``); a copy points them at itself.
_PATH_FILES = (
    re.compile(r"coordinator/hsm\.json"),
    re.compile(r"(coordinator|node-\d+)/token/softhsm2\.conf"),
)
#: The session's provisioned templates, by genesis: raw signing for every key (``allow_raw``,
#: the e2e clusters) or the demo policy alone (``custody up`` as users run it: the payment
#: clusters, tests/payments/conftest.py).
_templates: dict[bool, Path] = {}

_XDIST_BASETEMP = re.compile(r"popen-gw\d+")


def _run_root(dst: Path) -> Path | None:
    """Under pytest-xdist, the run's own temp directory that every worker's basetemp sits
    in (``.../pytest-N/popen-gw0``: ``.../pytest-N``), found from a cluster directory
    ``dst`` made under a worker's basetemp; None in a serial run."""
    for parent in dst.parents:
        if _XDIST_BASETEMP.fullmatch(parent.name):
            return parent.parent
    return None


def _provision_template(d: Path, allow_raw: bool) -> None:
    template = Cluster(d, nodes=3, allow_raw=allow_raw)
    creds = template.provision()
    # the part of what a first start writes that a later start reads back (a copy's
    # start rewrites the whole file): with the coordinator's public key, a copy's start
    # skips `api init` (Cluster._provisioned)
    keys = {n: k.hex() for n, k in template.coordinator_keys.items()}
    write_private_json(
        template.cluster_file,
        {"api_url": "", "credentials": creds, "coordinator_public_keys": keys},
    )


def _cluster_template(allow_raw: bool = True, dst: Path | None = None) -> Path:
    """The session's provisioned 3-node cluster (built on first use). Provisioned only: no
    key, nonce or presignature exists in it, so no two copies can ever share one (a copy
    is like a restored disk snapshot).

    Under pytest-xdist the workers of one run share one template of each genesis: the
    first to need it provisions it in the run's temp directory (``dst``'s, see
    :func:`_run_root`) under a file lock, the other waits and copies it (a template is
    ~14 s of CPU: eleven processes); pytest removes it with the run's other temp dirs. A
    serial run keeps its own, removed at exit."""
    if allow_raw in _templates:
        return _templates[allow_raw]
    root = _run_root(dst) if dst is not None else None
    name = "cluster-template-raw" if allow_raw else "cluster-template-demo"
    if root is None:
        top = Path(tempfile.mkdtemp(prefix="custody-cluster-template-"))
        atexit.register(shutil.rmtree, top, ignore_errors=True)
        _provision_template(top / "cluster", allow_raw)
        _templates[allow_raw] = top / "cluster"
        return _templates[allow_raw]
    d, ready = root / name / "cluster", root / name / "provisioned"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not ready.exists():
            shutil.rmtree(d.parent, ignore_errors=True)  # a worker's failed attempt
            d.parent.mkdir(mode=0o700)
            _provision_template(d, allow_raw)
            ready.touch()
    _templates[allow_raw] = d
    return d


def clone_cluster(dst: Path, *, allow_raw: bool = True) -> None:
    """Copy the session's provisioned cluster (with or without raw signing in its genesis)
    to ``dst`` (an empty or missing directory), pointing its token configs at the copy. Any
    other file naming the template fails the copy loudly: the layout changed and the copy
    would share state with the template."""
    dst = dst.resolve()
    src = _cluster_template(allow_raw, dst)
    if dst.exists():
        dst.rmdir()  # empty, or this raises: never copy over a cluster
    shutil.copytree(src, dst, symlinks=True)
    old, new = str(src).encode(), str(dst).encode()
    for path in dst.rglob("*"):
        if not path.is_file() or old not in (data := path.read_bytes()):
            continue
        rel = path.relative_to(dst).as_posix()
        if not any(rx.fullmatch(rel) for rx in _PATH_FILES):
            raise RuntimeError(f"{path} names the template cluster {src}: cannot copy it")
        path.write_bytes(data.replace(old, new))


@contextlib.contextmanager
def running_cluster(d: Path, env: Mapping[str, str] | None = None) -> Iterator[Live]:
    """A real 3-node cluster under ``d``, stopped on the way out (setup failures too).
    An empty ``d`` gets a copy of the session's provisioned cluster (above); ``env`` adds
    to :data:`CLUSTER_ENV` (e.g. a test that needs a full presignature pool)."""
    if not d.exists() or not any(d.iterdir()):
        clone_cluster(d)
        env = {**pg.cluster_database_env(d), **(env or {})}  # the PostgreSQL pass: tests/pg.py
    cluster = Cluster(
        d,
        nodes=3,
        port=free_port_block(3),
        env={**CLUSTER_ENV, **(env or {})},
        allow_raw=True,
    )
    try:
        doc = cluster.start(timeout=90)
    except BaseException:
        cluster.stop()
        raise
    lv = Live(cluster, doc)
    try:
        yield lv
    finally:
        lv.close()
        cluster.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A cluster of this module's own (modules that kill, restart or re-govern nodes)."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as lv:
        yield lv


#: The coordinator's default presignature pool (api/settings.py ``presig_target``).
DEFAULT_POOL = {"CUSTODY_PRESIG_TARGET": str(Settings.model_fields["presig_target"].default)}


@pytest.fixture(scope="module")
def live_default_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A cluster of this module's own with the coordinator's default presignature pool:
    for modules that kill or restart nodes while ECDSA keys sign, where pooled
    presignatures route around the dead node and presigning on demand on a loaded machine
    can outlast the round timeout (CLUSTER_ENV)."""
    with running_cluster(tmp_path_factory.mktemp("cluster"), env=DEFAULT_POOL) as lv:
        yield lv


@pytest.fixture(scope="session")
def _session_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with running_cluster(tmp_path_factory.mktemp("shared-cluster")) as lv:
        yield lv


@pytest.fixture(scope="module")
def shared_live(_session_cluster: Live) -> Iterator[Live]:
    """This module's own :class:`Live` (its own clients and keys) on the session's one
    shared cluster. Only for modules that create their own keys and sign: they neither
    kill, restart nor re-enrol nodes, install governance, nor read state they did not make
    (a module overrides ``live`` with it; see tests/e2e/test_kinds.py)."""
    lv = Live(_session_cluster.cluster, _session_cluster.doc)
    try:
        yield lv
    finally:
        lv.close()
