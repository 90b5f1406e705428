"""Harness for signer-node tests: real nodes (SoftHSM2 tokens, SQLCipher files) in tmp_path.

* :class:`NodeProc`: one node provisioned with ``python -m signer_nodes init`` and served by
  ``python -m signer_nodes run`` (uvicorn on 127.0.0.1, free port) as a subprocess.
* :class:`Coordinator`: the minimal coordinator the tests need: signs every request
  (``custody.nodeauth``), relays session envelopes between nodes without reading them,
  builds FROST signing packages and aggregates with ``mpc.frost.aggregate`` (public values
  only). The real coordinator lives in ``api/``.
* :class:`InProc`: nodes as in-process objects.
* :class:`Officers`: the security officers of the test cluster (``custody.governance``);
  every harness installs a genesis signed by them whose roster pins its nodes, since a
  node without governance takes part in nothing.
* :func:`relay`: the ONE envelope relay loop both harnesses use.
* :func:`cluster`: a copy of three nodes provisioned once per session
  (:class:`NodeTemplate`), per test; :func:`module_cluster`: one copy for a whole module
  whose tests neither crash, restart nor re-govern a node.
* Crash tests start nodes through ``tests/nodes/crashing_node.py`` (``crash_at=``): the
  real node with a fault hook that exits at the named point.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from custody import governance as gov
from custody import policy as pol
from custody.nodeauth import sign_headers
from custody.signing import message_to_sign
from mpc import frost, keyio
from mpc.groups import ED25519, SECP256K1
from mpc.relay import Envelope as RelayEnvelope
from mpc.relay import Relay
from mpc.shamir import PublicKeyPackage
from signer_nodes import vault
from signer_nodes.envelope import Peer
from signer_nodes.node import Node

REPO = Path(__file__).resolve().parents[2]

#: Key ids the test genesis enables ``kind: raw`` for (every raw-signing test key).
RAW_KEYS = frozenset(
    {"k", "k1", "k2", "k3", "ka", "kb", "bk", "ek", "ke", "fk", "gk", "pk", "rk", "rot"}
    | {"eth-1", "k-ed", "k-ec", "k-tr", "k-ed25519", "k-bip340", "k-ecdsa-secp256k1"}
)

#: The principal the tests' requests name as their initiator (the coordinator sets it).
INITIATOR = "test-requester"
#: The test genesis's policy: the non-raw kinds the harness tests sign are allowed by an
#: explicit rule (every node evaluates it; an empty policy denies all but raw). Policy
#: tests install their own version (``tests/nodes/test_policy_enforcement.py``).
TEST_POLICY = pol.Policy(
    rules=(
        pol.Rule(
            "tests-allow-kinds",
            "allow",
            kinds=frozenset({"payment", "settlement", "message", "evm-tx", "btc-psbt"}),
        ),
    )
)


class Officers:
    """The test cluster's security officers (``custody.governance``): Ed25519 keys held
    in memory, quorum 2 of 3. Builds and signs genesis and successor documents."""

    def __init__(self, n: int = 3, quorum: int = 2, cluster_id: str = "test-cluster") -> None:
        self.keys = {f"officer-{i}": SigningKey.generate() for i in range(1, n + 1)}
        self.quorum = quorum
        self.cluster_id = cluster_id

    @classmethod
    def with_keys(
        cls, keys: Mapping[str, SigningKey], quorum: int = 2, cluster_id: str = "test-cluster"
    ) -> Officers:
        """Officers over the given keys (a copy of the mapping: the caller's is untouched)."""
        out = cls(0, quorum, cluster_id)
        out.keys = dict(keys)
        return out

    def officers(self) -> tuple[gov.Officer, ...]:
        return tuple(gov.Officer(o, bytes(k.verify_key)) for o, k in self.keys.items())

    def sign(self, body: gov.Governance, by: Sequence[str] | None = None) -> bytes:
        doc = gov.unsigned(body)
        for o in by if by is not None else list(self.keys)[: self.quorum]:
            doc = doc.with_signature(self.keys[o], o)
        return doc.encode()

    def genesis_body(
        self,
        identities: Sequence[Mapping[str, Any]],
        raw_keys: frozenset[str] = RAW_KEYS,
        policy: pol.Policy = TEST_POLICY,
    ) -> gov.Governance:
        return gov.Governance(
            cluster_id=self.cluster_id,
            version=1,
            previous=gov.GENESIS_PREVIOUS,
            officers=self.officers(),
            quorum=self.quorum,
            roster=tuple(roster_node(i) for i in identities),
            raw_signing_keys=raw_keys,
            policy=policy,
        )


def roster_node(identity: Mapping[str, Any]) -> gov.RosterNode:
    return gov.RosterNode(
        str(identity["node_id"]),
        int(identity["party_id"]),
        bytes.fromhex(str(identity["sign_pk"])),
        bytes.fromhex(str(identity["box_pk"])),
    )


def slow_short() -> bool:
    return os.environ.get("CUSTODY_SLOW_SHORT") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SOFTHSM2_CONF", "CUSTODY_HSM_PIN")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def node_argv(crash_at: str | None = None) -> list[str]:
    """``python -m signer_nodes``, or the crashing launcher dying at ``crash_at``."""
    if crash_at is None:
        return [sys.executable, "-m", "signer_nodes"]
    return [sys.executable, "-m", "tests.nodes.crashing_node", "--crash-at", crash_at]


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    crash_at: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv
        [*node_argv(crash_at), *args],
        capture_output=True,
        text=True,
        env=node_env(env),
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


Envelope = dict[str, Any]


def relay(
    parties: Sequence[int],
    first: Mapping[int, dict[str, Any]],
    deliver: Callable[[int, list[Envelope]], dict[str, Any]],
    tamper: Callable[[Envelope, int], Envelope | None] | None = None,
) -> dict[int, dict[str, Any]]:
    """THE relay loop of the test harnesses, on the coordinator's own router
    (:class:`mpc.relay.Relay`): route every envelope of ``first`` (each party's state after
    starting the session) and of every answer to its recipient (a broadcast to every other
    party), each envelope once, wave by wave, until no node has anything to send.
    ``tamper(env, target)`` may rewrite or drop (``None``) an envelope on its way.
    Returns each party's last state."""
    states = dict(first)
    router: Relay[str] = Relay("harness", parties)  # the coordinator's router, mpc.relay
    raw: dict[str, Envelope] = {}

    def submit(envelopes: Sequence[Envelope]) -> None:
        for env in envelopes:
            raw[env["envelope"]] = env
            router.submit(RelayEnvelope("harness", env["from"], env["to"], env["envelope"]))

    for p in parties:
        submit(first[p]["envelopes"])
    while router.pending:
        for t, routed in sorted(router.take().items()):
            envs = []
            for r in routed:
                e = tamper(raw[r.payload], t) if tamper else raw[r.payload]
                if e is not None:
                    envs.append(e)
            if not envs:
                continue
            st = deliver(t, envs)
            states[t] = st
            submit(st["envelopes"])
    return states


def unsealed_identity(node: Node) -> tuple[SigningKey, PrivateKey]:
    """A node's identity keys, read back through its own unseal path (tests only)."""
    keys = []
    for kind in ("sign", "box"):
        _, blob, _ = node.store.get_identity(kind)
        keys.append(node.vault.unseal(blob, vault.identity_aad(node.node_id, kind)))
    return SigningKey(keys[0]), PrivateKey(keys[1])


@dataclass
class NodeProc:
    data_dir: Path
    party_id: int
    coordinator: SigningKey
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    log_path: Path | None = None
    #: the last start's (env, crash_at), for a start again on another port (wait_ready)
    _launch: tuple[dict[str, str] | None, str | None] = (None, None)
    _log_start: int = 0

    @property
    def node_id(self) -> str:
        return f"node-{self.party_id}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def init(self) -> None:
        r = cli(
            "init",
            "--data-dir",
            str(self.data_dir),
            "--node-id",
            self.node_id,
            "--party-id",
            str(self.party_id),
            "--coordinator-key",
            bytes(self.coordinator.verify_key).hex(),
        )
        assert r.returncode == 0, r.stderr
        self.info = json.loads(r.stdout.strip().splitlines()[-1])

    def trust(self, genesis: bytes) -> subprocess.CompletedProcess[str]:
        """``python -m signer_nodes trust --governance FILE`` (the node must be stopped)."""
        path = self.data_dir.parent / f"{self.node_id}-genesis.cbor"
        path.write_bytes(genesis)
        return cli("trust", "--data-dir", str(self.data_dir), "--governance", str(path))

    def start(
        self, env: dict[str, str] | None = None, wait: bool = True, crash_at: str | None = None
    ) -> None:
        """Serve the node; with ``crash_at`` through the crashing launcher, which exits
        (code 137) when the node reaches that fault point."""
        self._launch = (env, crash_at)
        self.port = free_port()
        self.log_path = self.data_dir.parent / f"{self.node_id}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self._log_start = log.tell()  # the log is appended to: where this start's begins
        self.proc = subprocess.Popen(  # noqa: S603
            [
                *node_argv(crash_at),
                "run",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--dev",  # the test coordinator speaks plain HTTP (no TLS material)
            ],
            stdout=log,
            stderr=log,
            env=node_env(env),
            cwd=REPO,
        )
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 90) -> None:
        # 90 s as the e2e clusters (Cluster.start): a node's boot is ~1.2 s of CPU, mostly
        # imports, and at a load of 15-20 on two cores (the suite on two workers beside
        # other jobs) three booting at once took longer than 30 s; a hung node still fails.
        # Ready means THIS node answers (its node id and, once known, its identity key):
        # the port comes from free_port(), so between its probe and the node's bind another
        # process on the machine (the other worker's nodes, other jobs) can take it and
        # answer /health; then this node exits "address already in use" and is started
        # again on another port (at most 3 times).
        deadline = time.monotonic() + timeout
        retries = 3
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                if retries and "address already in use" in self._this_starts_log().lower():
                    retries -= 1
                    self._relaunch()
                    continue
                raise RuntimeError(
                    f"{self.node_id} exited {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                r = httpx.get(self.url + "/health", timeout=1)
                if r.status_code == 200 and self._is_me(r.json()):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.node_id} not ready: {self.log_tail()}")

    def _this_starts_log(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_start)
            return f.read().decode(errors="replace")

    def _is_me(self, health: Any) -> bool:
        if not isinstance(health, dict) or health.get("node_id") != self.node_id:
            return False
        return not self.info.get("sign_pk") or health.get("sign_pk") == self.info["sign_pk"]

    def _relaunch(self) -> None:
        env, crash_at = self._launch
        self.start(env=env, wait=False, crash_at=crash_at)

    def log_tail(self) -> str:
        return self.log_path.read_text()[-2000:] if self.log_path and self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class NodeRefused(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status}: {problem}")


class Coordinator:
    """Signs requests to nodes and relays their envelopes (never reads them)."""

    officers: Officers
    genesis: bytes = b""

    def __init__(self, key: SigningKey, nodes: Sequence[NodeProc]) -> None:
        self.key = key
        self.nodes = {n.party_id: n for n in nodes}
        self.http = httpx.Client(timeout=60)

    def call(
        self,
        node: NodeProc,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: SigningKey | None = None,
    ) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        headers = sign_headers(key or self.key, method, path, data, recipient=node.node_id)
        headers["content-type"] = "application/json"
        r = self.http.request(method, node.url + path, content=data, headers=headers)
        if r.status_code >= 400:
            raise NodeRefused(r.status_code, r.json())
        return r.json()

    def govern(self, body: gov.Governance, by: Sequence[str] | None = None) -> bytes:
        """Sign ``body`` by the officers (``by``, default a quorum) and PUT it on every node."""
        doc = self.officers.sign(body, by)
        for n in self.nodes.values():
            self.call(n, "PUT", "/v1/governance", {"document": doc.hex()})
        return doc

    def enroll(self) -> None:
        peers = [
            {
                "node_id": n.node_id,
                "party_id": n.party_id,
                "sign_pk": n.info["sign_pk"],
                "box_pk": n.info["box_pk"],
            }
            for n in self.nodes.values()
        ]
        for n in self.nodes.values():
            assert self.call(n, "PUT", "/v1/peers", {"peers": peers})["peers"] == len(peers) - 1

    def run_session(
        self, spec: dict[str, Any], parties: Sequence[int] | None = None, tamper: Any = None
    ) -> dict[int, dict[str, Any]]:
        """Start a session on every participant and relay envelopes until all finish."""
        parties = list(parties or spec["participants"])
        sid = spec["session_id"]
        first = {p: self.call(self.nodes[p], "POST", "/v1/sessions", spec) for p in parties}

        def deliver(t: int, envs: list[Envelope]) -> dict[str, Any]:
            return dict(
                self.call(
                    self.nodes[t], "POST", f"/v1/sessions/{sid}/envelopes", {"envelopes": envs}
                )
            )

        states = relay(parties, first, deliver, tamper)
        return {
            p: self.call(self.nodes[p], "GET", f"/v1/sessions/{sid}")
            | {"refused": states[p].get("refused", [])}
            for p in parties
        }

    def dkg(
        self,
        scheme: str,
        key_id: str,
        threshold: int,
        parties: Sequence[int],
        network: str | None = None,
    ) -> dict[str, Any]:
        spec = {
            "session_id": secrets.token_hex(32),
            "kind": "dkg",
            "key_id": key_id,
            "scheme": scheme,
            "threshold": threshold,
            "participants": sorted(parties),
        }
        if network is not None:  # a bip340 key's Bitcoin network, recorded by each node
            spec["network"] = network
        res = self.run_session(spec)
        results = [r["result"] for r in res.values()]
        assert all(r["status"] == "done" for r in res.values()), res
        assert all(r == results[0] for r in results)
        return results[0]

    def commitments(self, party: int, key_id: str, count: int = 1) -> list[dict[str, str]]:
        out = self.call(
            self.nodes[party], "POST", "/v1/frost/commitments", {"key_id": key_id, "count": count}
        )["commitments"]
        return list(out)

    def frost_sign(
        self,
        scheme: str,
        key_id: str,
        parties: Sequence[int],
        request: dict[str, Any],
        public: Any,
        nonces: dict[int, dict[str, str]] | None = None,
    ) -> bytes:
        """One FROST signature through the nodes; aggregated here from public values."""
        suite = frost.ciphersuite(scheme)
        nonces = nonces or {p: self.commitments(p, key_id)[0] for p in parties}
        comms = [
            frost.SigningCommitments.from_bytes(
                bytes.fromhex(nonces[p]["commitments"]), suite=suite
            )
            for p in parties
        ]
        pkg = frost.signing_package(comms, message_to_sign(scheme, request))
        shares = []
        for p in parties:
            r = self.call(
                self.nodes[p],
                "POST",
                "/v1/frost/sign",
                {
                    "key_id": key_id,
                    "nonce_id": nonces[p]["nonce_id"],
                    "request": request,
                    "signing_package": pkg.to_bytes().hex(),
                },
            )
            shares.append(
                frost.SignatureShare.from_bytes(bytes.fromhex(r["signature_share"]), suite=suite)
            )
        return frost.aggregate(pkg, shares, public)


def public_package(result: dict[str, Any], scheme: str) -> Any:
    """Rebuild the PublicKeyPackage from a DKG result (public values only)."""
    g = ED25519 if scheme == "ed25519" else SECP256K1
    return PublicKeyPackage(
        g,
        result["min_signers"],
        g.decode_point(bytes.fromhex(result["group_public_key"])),
        {int(i): g.decode_point(bytes.fromhex(v)) for i, v in result["verifying_shares"].items()},
    )


_ = keyio  # re-exported for tests that decode stored packages


@dataclass(frozen=True)
class HarnessKeys:
    """The test session's coordinator key and officers' keys (public-key identities, no
    share): what a node harness provisions its nodes and genesis with."""

    coordinator: SigningKey
    officers: Mapping[str, SigningKey]


@pytest.fixture(scope="session")
def harness_keys() -> HarnessKeys:
    return HarnessKeys(SigningKey.generate(), dict(Officers().keys))


@pytest.fixture
def coordinator_key(harness_keys: HarnessKeys) -> SigningKey:
    """The coordinator key of this test's nodes (the session's: :func:`node_template`'s
    nodes are provisioned with it)."""
    return harness_keys.coordinator


@pytest.fixture
def officers(harness_keys: HarnessKeys) -> Officers:
    """This test's own :class:`Officers` object over the session's officer keys (the
    template genesis is signed by them); a test may change its object freely."""
    return Officers.with_keys(harness_keys.officers)


def provision(nodes: Sequence[NodeProc], officers: Officers) -> bytes:
    """``init`` every node, then ``trust`` the genesis whose roster pins them all. The
    nodes are provisioned in parallel (each ``init`` is two short-lived processes)."""
    with ThreadPoolExecutor(len(nodes) or 1) as pool:
        list(pool.map(NodeProc.init, nodes))
    genesis = officers.sign(officers.genesis_body([n.info for n in nodes]))
    with ThreadPoolExecutor(len(nodes) or 1) as pool:
        results = list(pool.map(lambda n: n.trust(genesis), nodes))
    for r in results:
        assert r.returncode == 0, r.stderr
    return genesis


@dataclass(frozen=True)
class NodeTemplate:
    """Three nodes (parties 1..3) provisioned once per session (``init``, then ``trust``
    of a genesis pinning them) and never started: each test's :func:`cluster` runs a copy
    of their data directories (:func:`clone_node`), so every test still starts from
    freshly provisioned nodes of its own, without the nine provisioning processes."""

    root: Path
    keys: HarnessKeys
    infos: Mapping[int, Mapping[str, Any]]
    genesis: bytes

    def node_dir(self, party: int) -> Path:
        return self.root / f"node-{party}"


@pytest.fixture(scope="session")
def node_template(
    tmp_path_factory: pytest.TempPathFactory, harness_keys: HarnessKeys
) -> NodeTemplate:
    root = tmp_path_factory.mktemp("node-template")
    nodes = [NodeProc(root / f"node-{i}", i, harness_keys.coordinator) for i in (1, 2, 3)]
    genesis = provision(nodes, Officers.with_keys(harness_keys.officers))
    return NodeTemplate(root, harness_keys, {n.party_id: dict(n.info) for n in nodes}, genesis)


#: The one file of a node's data directory naming its absolute path (``hsm.provision``:
#: the dev SoftHSM2 config's ``directories.tokendir``).
_PATH_FILES = frozenset({Path("token/softhsm2.conf")})


def clone_node(src: Path, dst: Path) -> None:
    """Copy a stopped node's data directory (SQLCipher file, sealed database key, SoftHSM2
    token: modes kept) to ``dst`` and point its SoftHSM2 config at the copy's token
    directory. Any other file naming ``src`` fails the copy loudly: the layout changed
    and a clone would share state with its template."""
    src, dst = src.resolve(), dst.resolve()
    shutil.copytree(src, dst, symlinks=True)
    old, new = str(src).encode(), str(dst).encode()
    for path in dst.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if old not in data:
            continue
        if path.relative_to(dst) not in _PATH_FILES:
            raise RuntimeError(f"{path} names the template directory {src}: cannot clone")
        path.write_bytes(data.replace(old, new))


def start_nodes(
    nodes: Sequence[NodeProc],
    key: SigningKey,
    officers: Officers,
    genesis: bytes,
    env: Callable[[NodeProc], dict[str, str] | None] = lambda _n: None,
) -> Coordinator:
    """Start provisioned ``nodes`` (all at once, then wait for each), enrol them with each
    other and return the test coordinator over them; a failed start stops them all."""
    try:
        for n in nodes:
            n.start(env=env(n), wait=False)
        for n in nodes:
            n.wait_ready()
        coord = Coordinator(key, nodes)
        coord.officers, coord.genesis = officers, genesis
        coord.enroll()
    except BaseException:
        for n in nodes:
            n.stop()
        raise
    return coord


def cloned_cluster(
    base: Path,
    template: NodeTemplate,
    officers: Officers,
    env: Callable[[NodeProc], dict[str, str] | None] = lambda _n: None,
) -> Coordinator:
    """A running copy of ``template`` under ``base`` (see :class:`NodeTemplate`); stop it
    with :func:`stop_cluster`."""
    nodes = []
    for i, info in sorted(template.infos.items()):
        clone_node(template.node_dir(i), base / f"node-{i}")
        n = NodeProc(base / f"node-{i}", i, template.keys.coordinator)
        n.info = dict(info)
        nodes.append(n)
    return start_nodes(nodes, template.keys.coordinator, officers, template.genesis, env)


def stop_cluster(coord: Coordinator) -> None:
    for n in coord.nodes.values():
        n.stop()
    coord.http.close()


def uses_harness_keys(keys: HarnessKeys, coordinator_key: SigningKey, officers: Officers) -> bool:
    """Whether a test's ``coordinator_key`` and ``officers`` are the session's (a module may
    override those fixtures; its nodes are then provisioned from scratch)."""
    return (
        coordinator_key is keys.coordinator
        and officers.keys.keys() == keys.officers.keys()
        and all(officers.keys[o] is k for o, k in keys.officers.items())
    )


@pytest.fixture
def cluster(
    tmp_path: Path,
    coordinator_key: SigningKey,
    officers: Officers,
    harness_keys: HarnessKeys,
    request: pytest.FixtureRequest,
) -> Iterator[Coordinator]:
    """Three running nodes (parties 1..3) under one genesis, enrolled with each other: this
    test's own copy of the session's :class:`NodeTemplate`, so no state is shared."""
    if uses_harness_keys(harness_keys, coordinator_key, officers):
        template: NodeTemplate = request.getfixturevalue("node_template")
        coord = cloned_cluster(tmp_path, template, officers)
    else:
        nodes = [NodeProc(tmp_path / f"node-{i}", i, coordinator_key) for i in (1, 2, 3)]
        coord = start_nodes(nodes, coordinator_key, officers, provision(nodes, officers))
    try:
        yield coord
    finally:
        stop_cluster(coord)


@pytest.fixture(scope="module")
def module_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    harness_keys: HarnessKeys,
    node_template: NodeTemplate,
) -> Iterator[Coordinator]:
    """One running copy of the :class:`NodeTemplate` for a whole module. Only for modules
    whose tests neither crash, restart nor roll back a node nor install governance, use
    key ids of their own, and count node state as differences (``/v1/status`` before and
    after): such a module overrides ``cluster`` with it (tests/nodes/test_hostile_clients.py)."""
    coord = cloned_cluster(
        tmp_path_factory.mktemp("module-cluster"),
        node_template,
        Officers.with_keys(harness_keys.officers),
    )
    try:
        yield coord
    finally:
        stop_cluster(coord)


# -- in-process nodes ---------------------------------------------------------------------
# SoftHSM2 binds one config per process (hsm package docstring): in-process nodes all get
# their tokens in the token directory bound first in this process (hsm.provision).


class InProc:
    """Nodes as in-process objects with a direct-call relay (fast tests, benchmarks)."""

    def __init__(
        self, root: Path, key: SigningKey, n: int = 3, officers: Officers | None = None
    ) -> None:
        self.key = key
        self.officers = officers or Officers()
        self.nodes = {
            i: Node.init(
                root / f"node-{i}",
                node_id=f"node-{i}",
                party_id=i,
                coordinator_key=bytes(key.verify_key),
            )
            for i in range(1, n + 1)
        }
        self.genesis = self.officers.sign(
            self.officers.genesis_body([nd.identity_info() for nd in self.nodes.values()])
        )
        peers = [Peer(i, nd.node_id, nd.sign_pk, nd.box_pk) for i, nd in self.nodes.items()]
        for nd in self.nodes.values():
            nd.trust(self.genesis)
            nd.set_peers(peers)

    def close(self) -> None:
        for nd in self.nodes.values():
            nd.close()

    def run_session(self, spec: dict[str, Any], tamper: Any = None) -> dict[int, dict[str, Any]]:
        parties = spec["participants"]
        sid = spec["session_id"]
        first = {p: self.nodes[p].start_session(spec) for p in parties}

        def deliver(t: int, envs: list[Envelope]) -> dict[str, Any]:
            st: dict[str, Any] = {}
            out: list[Envelope] = []
            for e in envs:  # one at a time, as a direct-call transport would
                st = self.nodes[t].deliver(sid, [e])
                out.extend(st["envelopes"])
            return {**st, "envelopes": out}

        return relay(parties, first, deliver, tamper)

    def dkg(
        self, scheme: str, key_id: str, t: int = 2, parties: Sequence[int] = (1, 2, 3)
    ) -> dict[str, Any]:
        spec = {
            "session_id": secrets.token_hex(32),
            "kind": "dkg",
            "key_id": key_id,
            "scheme": scheme,
            "threshold": t,
            "participants": sorted(parties),
        }
        states = self.run_session(spec)
        assert all(
            self.nodes[p].session_state(spec["session_id"])["status"] == "done" for p in parties
        ), states
        return dict(self.nodes[parties[0]].session_state(spec["session_id"])["result"])

    def frost_sign(
        self, scheme: str, key_id: str, parties: Sequence[int], request: dict[str, Any], public: Any
    ) -> bytes:
        suite = frost.ciphersuite(scheme)
        nonces = {p: self.nodes[p].frost_commitments(key_id, 1)[0] for p in parties}
        comms = [
            frost.SigningCommitments.from_bytes(
                bytes.fromhex(nonces[p]["commitments"]), suite=suite
            )
            for p in parties
        ]
        pkg = frost.signing_package(comms, message_to_sign(scheme, request))
        shares = [
            frost.SignatureShare.from_bytes(
                self.nodes[p].frost_sign(
                    key_id,
                    nonces[p]["nonce_id"],
                    request,
                    pkg.to_bytes(),
                    coordinator_verified=True,
                ),
                suite=suite,
            )
            for p in parties
        ]
        return frost.aggregate(pkg, shares, public)


@pytest.fixture
def inproc(tmp_path: Path, coordinator_key: SigningKey) -> Iterator[InProc]:
    c = InProc(tmp_path, coordinator_key)
    try:
        yield c
    finally:
        c.close()
