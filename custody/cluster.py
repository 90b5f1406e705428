"""A local cluster as processes: one coordinator (``python -m api``) and n signer nodes
(``python -m signer_nodes``), all under one data directory.

Layout of ``DIR``::

    coordinator/        coordinator.db (0600), token/ (its PKCS#11 token, coordinator key inside)
    node-1/ ...         each node's own SQLCipher file and SoftHSM2 token (signer_nodes init)
    officers/           dev officer key files and their passphrase (development only)
    approvers/          dev approver key files (the treasury group) and their passphrase
    governance/v1.gov   the dev genesis every node installed as its trust anchor
    tls/                the dev CA (ca.key 0600, ca.pem): ``tls=True`` (``custody up``)
    coordinator/tls/    its client certificate for the node calls (client.key 0600,
                        client.crt, ca.pem); node-N/tls/ each node's (custody.tls)
    logs/               one JSON-lines log per process
    cluster.json        {"api_url", "nodes": [{"id", "url"}], "credentials": {role: token},
                         "principals": {role: name}, "dev_governance": {key file paths}} (0600)

First run provisions everything (``api init``, ``signer_nodes init``); later runs reuse it.

Mutual TLS (``tls=True``, what ``custody up`` runs unless ``--dev``): the provisioner makes
a dev CA, the coordinator's client certificate, and each node's server certificate from a
CSR the node makes itself
(``signer_nodes tls-request``: its key stays in its directory, encrypted under an
HSM-sealed passphrase, and is bound to its roster identity key); nodes and coordinator
then serve and call only over TLS 1.3, node URLs are ``https://``. ``tls=False`` (the
dataclass default, for the test harness) starts both with ``--dev`` over plain HTTP
(development only; docs/PERFORMANCE.md has the cost); a directory once provisioned with
TLS stays TLS.

The genesis carries the **demo policy** (:func:`demo_policy`, README "Demo policy"): ETH,
the demo ERC-20 token and BTC transfers to the allowlisted demo destinations are signed up
to a limit, above it they wait for two approvals of the ``treasury`` group (three dev
approvers), ``message`` requests are signed, ``raw`` is denied. ``allow_raw``
(``custody up --allow-raw``) lists every key in the genesis's ``raw_signing_keys``, for
the tests and benchmarks that sign raw bytes; it is chosen when the genesis is made (the
first run of a data directory).
This module only starts processes and speaks HTTP: it imports neither ``api`` nor
``signer_nodes``.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from custody import governance, tls
from custody.cli_support import ClusterFileError, read_cluster_file
from custody.policy import (
    Allowlist,
    AllowlistEntry,
    Approver,
    ApproverGroup,
    GroupQuorum,
    Policy,
    Requirement,
    Rule,
)

DEFAULT_PORT = 7100
# The principals of the dev credentials (the requester's is every request's initiator).
DEV_PRINCIPALS = {
    "admin": "dev-admin",
    "requester": "payments-bot",
    "approver": "treasury-desk",
    "auditor": "dev-auditor",
}
APPROVERS = ("dev-approver-1", "dev-approver-2", "dev-approver-3")
TREASURY = "treasury"
ALLOWLIST = "demo-destinations"
# Demo destinations (allowlisted from the genesis on): two Ethereum accounts (EIP-55), BIP-86
# taproot addresses of two nothing-up-my-sleeve keys (x = SHA-256("tpwc demo destination
# N"), rehashed until on the curve) on mainnet and regtest.
DEMO_ETH_DESTINATIONS = (
    "0x00000000000000000000000000000000000DEaD1",
    "0x00000000000000000000000000000000000dead2",
)
DEMO_BTC_DESTINATIONS = (
    "bc1pcrq3cyuk8lpfsfr7kflww2w9gdwvetkvhazcs4tjtacd5h3n06jsdrz7g7",
    "bc1pqy6unhhmhhl9nnw0uur9x4vf045vpht7ttgkk63sy3wtk7lu4snqwk4dxj",
    "bcrt1pcrq3cyuk8lpfsfr7kflww2w9gdwvetkvhazcs4tjtacd5h3n06jshj7h8t",
    "bcrt1pqy6unhhmhhl9nnw0uur9x4vf045vpht7ttgkk63sy3wtk7lu4snq58fyf8",
)
# A demo ERC-20 token (USDC's mainnet contract, 6 decimals), its amounts in base units.
DEMO_ERC20 = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
# The payment service's in-process dev chain deploys the Vyper test token as genesis account
# 0's first transaction, so it is always here (payments.evm.token.contract_address)
DEV_ERC20 = "0xF2E246BB76DF876Cef8b38ae84130F4F55De395b"
ETH_LIMIT = 10**18  # wei: 1 ETH
TOKEN_LIMIT = 10_000 * 10**6  # 10 000 tokens of 6 decimals
BTC_LIMIT = 10_000_000  # satoshi: 0.1 BTC
EUR_SETTLEMENT_LIMIT = 1_000_000  # cents: 10 000.00 EUR per pacs.008 settlement


def demo_policy(approvers: tuple[Approver, ...]) -> Policy:
    """The dev cluster's policy (first match wins, deny by default):

    1. ``eth-under-limit``: evm-tx ETH transfers of at most 1 ETH to the allowlist: allow;
    2. ``eth-over-limit``: larger ones to the allowlist: 2 approvals of ``treasury``;
    3. ``token-under-limit`` / 4. ``token-over-limit``: the same for ERC-20 ``transfer`` of
       the demo token (and of the payment service's dev-chain test token), limit
       10 000 tokens (10 000 * 10**6 base units);
    5. ``btc-under-limit`` / 6. ``btc-over-limit``: btc-psbt spends of at most 0.1 BTC
       (10 000 000 sat, summed over the outputs not back to the key) to the allowlist;
    7. ``eur-settlement`` / ``eur-settlement-large``: ``iso20022`` pacs.008 settlements in
       EUR of at most 10 000.00 (1 000 000 cents): allow; larger: 2 approvals of
       ``treasury``;
    8. ``messages``: ``message`` requests (EIP-191 / off-chain attestations): allow;
    9. ``raw-denied``: ``raw``: deny (unless the genesis lists the key in
       ``raw_signing_keys``, which :func:`custody.policy.decide` checks first).

    Everything else (another destination, a contract call, an ERC-20 approve, payment
    kinds) is denied by default.
    """
    two = Requirement("all", (GroupQuorum(TREASURY, 2),))
    dest = frozenset({ALLOWLIST})
    evm, btc = frozenset({"evm-tx"}), frozenset({"btc-psbt"})
    transfer = frozenset({"transfer"})
    eth, token = frozenset({"ETH"}), frozenset({DEMO_ERC20.lower(), DEV_ERC20.lower()})
    return Policy(
        rules=(
            Rule(
                "eth-under-limit",
                "allow",
                kinds=evm,
                operations=transfer,
                assets=eth,
                allowlists=dest,
                max_amount=ETH_LIMIT,
            ),
            Rule(
                "eth-over-limit",
                "approve",
                kinds=evm,
                operations=transfer,
                assets=eth,
                allowlists=dest,
                min_amount=ETH_LIMIT + 1,
                approvals=two,
            ),
            Rule(
                "token-under-limit",
                "allow",
                kinds=evm,
                operations=transfer,
                assets=token,
                allowlists=dest,
                max_amount=TOKEN_LIMIT,
            ),
            Rule(
                "token-over-limit",
                "approve",
                kinds=evm,
                operations=transfer,
                assets=token,
                allowlists=dest,
                min_amount=TOKEN_LIMIT + 1,
                approvals=two,
            ),
            Rule(
                "btc-under-limit",
                "allow",
                kinds=btc,
                assets=frozenset({"BTC"}),
                allowlists=dest,
                max_amount=BTC_LIMIT,
            ),
            Rule(
                "btc-over-limit",
                "approve",
                kinds=btc,
                assets=frozenset({"BTC"}),
                allowlists=dest,
                min_amount=BTC_LIMIT + 1,
                approvals=two,
            ),
            Rule(
                "eur-settlement",
                "allow",
                kinds=frozenset({"iso20022"}),
                assets=frozenset({"EUR"}),
                max_amount=EUR_SETTLEMENT_LIMIT,
            ),
            Rule(
                "eur-settlement-large",
                "approve",
                kinds=frozenset({"iso20022"}),
                assets=frozenset({"EUR"}),
                min_amount=EUR_SETTLEMENT_LIMIT + 1,
                approvals=two,
            ),
            Rule("messages", "allow", kinds=frozenset({"message"})),
            Rule("raw-denied", "deny", kinds=frozenset({"raw"})),
        ),  # fmt: skip
        allowlists=(
            Allowlist(
                ALLOWLIST,
                tuple(
                    AllowlistEntry(a, 0, f"demo destination {i}")
                    for i, a in enumerate(DEMO_ETH_DESTINATIONS + DEMO_BTC_DESTINATIONS, 1)
                ),
            ),
        ),
        approver_groups=(ApproverGroup(TREASURY, approvers),),
    )


class PortInUse(RuntimeError):
    """A port the cluster needs is taken (another ``custody up``, or another program)."""

    def __init__(self, port: int, role: str) -> None:
        super().__init__(
            f"port {port} is in use ({role}): another `custody up` or another program "
            "listens there; stop it, or pass another --port"
        )
        self.port = port


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (a bind with ``SO_REUSEADDR``, as uvicorn
    binds, fails only then; connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def node_id(i: int) -> str:
    return f"node-{i}"


def node_port(api_port: int, i: int) -> int:
    return api_port + i


PAYMENTS_PORT_OFFSET = 50  # the payment service (``payments=True``) listens on port+50


def payments_port(api_port: int) -> int:
    return api_port + PAYMENTS_PORT_OFFSET


def free_port_block(n: int) -> int:
    """A base port such that ``base .. base+n`` are free on loopback (best effort)."""
    for _ in range(50):
        base = random.randrange(20000, 40000)  # noqa: S311 - not security relevant
        ok = True
        for p in range(base, base + n + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port block")


def write_private_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_private_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` with mode 0600 (it holds bearer tokens)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Cluster:
    """Start/stop a dev cluster. ``progress(msg)`` is called at each step."""

    data_dir: Path
    nodes: int = 3
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    allow_raw: bool = False  # the genesis enables raw signing for every key (tests, benches)
    # also start the payment service (python -m payments) with an Ed25519 book key; its URL
    # and token go into cluster.json's "payments" member (``custody up --with-payments``)
    payments: bool = False
    # mutual TLS 1.3 between coordinator and nodes (a dev CA made on first run; `custody up`
    # turns it on unless --dev). False: plain HTTP, both processes started with --dev: the
    # test harness's default while tests reach nodes directly or put plain-HTTP proxies in
    # front of them (docs/PERFORMANCE.md "Mutual TLS" has the cost and the list)
    tls: bool = False
    python: str = sys.executable
    # issue 14: more coordinators, each its own data directory DIR/<name> (own sealed key,
    # own TLS client certificate); the dev genesis then pins every coordinator's key in
    # its ``coordinators`` list ("coordinator" is DIR/coordinator). simulations/multi.py.
    more_coordinators: tuple[str, ...] = ()
    coordinator_keys: dict[str, bytes] = field(default_factory=dict)  # name: identity key
    progress: Callable[[str], None] = lambda _msg: None
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        if (self.data_dir / "tls" / "ca.pem").exists():
            self.tls = True  # provisioned with TLS: its processes no longer serve plain HTTP

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def node_url(self, i: int) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{node_port(self.port, i)}"

    @property
    def coordinator_tls_dir(self) -> Path:
        return self.data_dir / "coordinator" / "tls"

    def node_ssl_context(self) -> ssl.SSLContext | None:
        """A TLS 1.3 client context with the coordinator's certificate (what the
        provisioner, tests and tools use to reach a node directly), or None without TLS."""
        if not self.tls:
            return None
        d = self.coordinator_tls_dir
        return tls.client_context(d / "ca.pem", d / "client.crt", d / "client.key")

    def node_http(self, timeout: float = 10.0) -> httpx.Client:
        """An httpx client for direct node calls (mutual TLS when the cluster has it)."""
        ctx = self.node_ssl_context()
        return httpx.Client(timeout=timeout, verify=ctx if ctx is not None else True)

    @property
    def cluster_file(self) -> Path:
        return self.data_dir / "cluster.json"

    # -- provisioning -------------------------------------------------------------------
    def _run(self, argv: list[str]) -> str:
        r = subprocess.run(  # noqa: S603 - our own argv, no shell
            argv, capture_output=True, text=True, env=self._env(), check=False, cwd=self._cwd()
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[1:4])} failed ({r.returncode}): {r.stderr.strip()[-2000:]}"
            )
        return r.stdout

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    @staticmethod
    def _cwd() -> str:
        return str(Path(__file__).resolve().parent.parent)

    def provision(self) -> dict[str, str]:
        """Initialise coordinator and nodes on first run; returns the credentials."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        (self.data_dir / "logs").mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.data_dir / "logs", 0o700)
        known = self._provisioned()
        if known is not None:  # every part provisioned on an earlier run
            self.coordinator_keys, creds = known
            if self.tls:
                self._dev_tls()
            self._dev_governance()
            return creds
        self.progress("provisioning coordinator")
        out = json.loads(
            self._run(
                [self.python, "-m", "api", "init", "--data-dir", str(self.data_dir / "coordinator")]
                + [f"--principal={r}={n}" for r, n in DEV_PRINCIPALS.items()]
            )
        )
        coord_pk = out["coordinator_public_key"]
        creds = out["credentials"]
        self.coordinator_keys = {"coordinator": bytes.fromhex(coord_pk)}
        for name in self.more_coordinators:  # after the first: its credentials are the ones
            more = json.loads(
                self._run(
                    [self.python, "-m", "api", "init", "--data-dir", str(self.data_dir / name)]
                )
            )
            self.coordinator_keys[name] = bytes.fromhex(more["coordinator_public_key"])
        if creds is None:
            if not self.cluster_file.exists():
                raise RuntimeError(
                    f"{self.data_dir} has a coordinator but no cluster.json: "
                    "its credentials are lost; use a fresh --data-dir"
                )
            creds = read_cluster_file(
                self.cluster_file,
                "it holds this cluster's credentials: restore it, or use a fresh --data-dir",
            )["credentials"]
        for i in range(1, self.nodes + 1):
            d = self.data_dir / node_id(i)
            if d.exists() and any(d.iterdir()):
                continue  # provisioned on an earlier run
            self.progress(f"provisioning {node_id(i)} (HSM token, database)")
            self._run(
                [
                    self.python,
                    "-m",
                    "signer_nodes",
                    "init",
                    "--data-dir",
                    str(d),
                    "--node-id",
                    node_id(i),
                    "--party-id",
                    str(i),
                    "--coordinator-key",
                    coord_pk,
                ]
            )
        if self.tls:
            self._dev_tls()
        self._dev_governance()
        return dict(creds)

    def _provisioned(self) -> tuple[dict[str, bytes], dict[str, str]] | None:
        """The coordinator keys and credentials of a cluster an earlier run provisioned
        whole, from its ``cluster.json``; None when any part is missing (then ``api init``
        and ``signer_nodes init`` run, as on a first run).

        ``api init`` on a provisioned coordinator changes nothing (its key and credentials
        exist) but costs a process start, about 3 s of CPU, on every start of a copied
        cluster; what it would print is public and recorded in ``cluster.json`` by
        :meth:`start`. The database is migrated by ``api serve`` at start all the same. A
        recorded key that is not the token's makes every node refuse the coordinator: it
        fails closed."""
        if not self.cluster_file.exists():
            return None
        try:
            doc = read_cluster_file(self.cluster_file)
        except ClusterFileError:
            return None
        recorded = doc.get("coordinator_public_keys")
        names = ("coordinator", *self.more_coordinators)
        if not isinstance(recorded, dict) or set(recorded) != set(names):
            return None
        if not all((self.data_dir / n / "hsm.json").exists() for n in names):
            return None
        if not self._env().get("CUSTODY_DATABASE_URL") and not all(
            (self.data_dir / n / "coordinator.db").exists() for n in names
        ):
            return None  # its database is gone: init makes a new one (and new credentials)
        for i in range(1, self.nodes + 1):
            d = self.data_dir / node_id(i)
            if not (d.exists() and any(d.iterdir())):
                return None
        try:
            keys = {n: bytes.fromhex(recorded[n]) for n in names}
        except (TypeError, ValueError):
            return None
        return keys, dict(doc["credentials"])

    def _dev_tls(self) -> None:
        """The dev CA (first run), the coordinator's client certificate and a server
        certificate for every node lacking one, issued from the node's own CSR
        (``signer_nodes tls-request``), which binds its TLS key to its identity key."""
        ca_dir = self.data_dir / "tls"
        ca_dir.mkdir(mode=0o700, exist_ok=True)
        if not (ca_dir / "ca.pem").exists():
            self.progress("dev CA: certificates for the coordinator and the nodes")
            fresh = tls.make_ca(self.data_dir.name)
            tls.write_private(ca_dir / "ca.key", tls.key_pem(fresh.key))
            tls.write_public(ca_dir / "ca.pem", tls.pem(fresh.cert))
        ca = tls.load_ca(ca_dir / "ca.pem", ca_dir / "ca.key")
        ca_pem = tls.pem(ca.cert)
        for name in ("coordinator", *self.more_coordinators):  # each its own certificate
            cd = self.data_dir / name / "tls"
            if not (cd / "client.crt").exists():
                cd.mkdir(mode=0o700, exist_ok=True)
                key = tls.new_key()
                tls.write_private(cd / "client.key", tls.key_pem(key))
                tls.write_public(cd / "ca.pem", ca_pem)
                tls.write_public(cd / "client.crt", tls.pem(tls.issue_coordinator(ca, key)))
        hosts = sorted({self.host, "localhost", "127.0.0.1"})
        for i in range(1, self.nodes + 1):
            nd = self.data_dir / node_id(i)
            if (nd / "tls" / "node.crt").exists():
                continue
            argv = [self.python, "-m", "signer_nodes", "tls-request", "--data-dir", str(nd)]
            csr = self._run(argv + [a for h in hosts for a in ("--host", h)])
            cert = tls.issue_node(ca, tls.load_csr(csr.encode()))
            tls.write_public(nd / "tls" / "ca.pem", ca_pem)
            tls.write_public(nd / "tls" / "node.crt", tls.pem(cert))

    def _dev_governance(self) -> None:
        """A development genesis: dev officers, every node pinned, the demo policy with its
        three dev approvers, and raw signing for every key only with ``allow_raw``.

        Three officer key files (quorum 2) under ``DIR/officers/`` and three approver key
        files under ``DIR/approvers/``, each set sealed with a dev passphrase kept beside
        it (``passphrase``, 0600): a development cluster only, and ``cluster.json`` says
        so. The genesis, signed by two officers, is installed on each node as its trust
        anchor (``signer_nodes trust``) and on the coordinator, which then enrols only the
        nodes it pins (``api trust``).
        """
        genesis_file = self.data_dir / "governance" / "v1.gov"
        if genesis_file.exists():
            return
        self.progress("dev governance: officers sign a genesis pinning every node")
        officer_dir = self.data_dir / "officers"
        officer_dir.mkdir(mode=0o700, exist_ok=True)
        passphrase = os.urandom(16).hex().encode()
        write_private_bytes(officer_dir / "passphrase", passphrase)
        officers, signers = [], {}
        for i in (1, 2, 3):
            officer, blob = governance.create_officer_key(
                f"dev-officer-{i}", passphrase, cost=governance.INTERACTIVE
            )
            write_private_bytes(officer_dir / f"dev-officer-{i}.key", blob)
            officers.append(officer)
            signers[officer.officer_id] = governance.open_officer_key(blob, passphrase)[1]
        approver_dir = self.data_dir / "approvers"
        approver_dir.mkdir(mode=0o700, exist_ok=True)
        approver_pass = os.urandom(16).hex().encode()
        write_private_bytes(approver_dir / "passphrase", approver_pass)
        approvers = []
        for approver_id in APPROVERS:
            approver, blob = governance.create_approver_key(
                approver_id, approver_pass, cost=governance.INTERACTIVE
            )
            write_private_bytes(approver_dir / f"{approver_id}.key", blob)
            approvers.append(approver)
        roster = []
        for i in range(1, self.nodes + 1):
            ident = json.loads(
                self._run(
                    [
                        self.python,
                        "-m",
                        "signer_nodes",
                        "identity",
                        "--data-dir",
                        str(self.data_dir / node_id(i)),
                    ]
                )  # fmt: skip
            )
            roster.append(
                governance.RosterNode(
                    ident["node_id"],
                    int(ident["party_id"]),
                    bytes.fromhex(ident["sign_pk"]),
                    bytes.fromhex(ident["box_pk"]),
                )
            )
        body = governance.Governance(
            cluster_id=f"dev-{os.urandom(4).hex()}",
            version=1,
            previous=governance.GENESIS_PREVIOUS,
            officers=tuple(officers),
            quorum=2,
            roster=tuple(roster),
            raw_signing_keys=frozenset({governance.ALL_KEYS}) if self.allow_raw else frozenset(),
            policy=demo_policy(tuple(approvers)),
            coordinators=(
                tuple(governance.PinnedCoordinator(n, k) for n, k in self.coordinator_keys.items())
                if self.more_coordinators
                else None
            ),
        )
        doc = governance.unsigned(body)
        for officer_id in ("dev-officer-1", "dev-officer-2"):
            doc = doc.with_signature(signers[officer_id], officer_id)
        genesis_file.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = genesis_file.with_suffix(".tmp")
        tmp.write_bytes(doc.encode())
        for i in range(1, self.nodes + 1):
            self._run(
                [self.python, "-m", "signer_nodes", "trust", "--data-dir",
                 str(self.data_dir / node_id(i)), "--governance", str(tmp)]
            )  # fmt: skip
        for name in ("coordinator", *self.more_coordinators):
            self._run(
                [self.python, "-m", "api", "trust", "--data-dir",
                 str(self.data_dir / name), "--governance", str(tmp)]
            )  # fmt: skip
        tmp.rename(genesis_file)

    # -- processes ----------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        path = self.data_dir / "logs" / f"{name}.log"
        log = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        os.chmod(path, 0o600)
        p = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=self._cwd(),
            start_new_session=True,
        )
        log.close()
        self.procs[name] = Proc(name, argv, p)

    def start_node(self, i: int) -> None:
        argv = [
            self.python,
            "-m",
            "signer_nodes",
            "run",
            "--data-dir",
            str(self.data_dir / node_id(i)),
            "--host",
            self.host,
            "--port",
            str(node_port(self.port, i)),
        ]
        self._spawn(node_id(i), argv if self.tls else [*argv, "--dev"])

    def start_coordinator(
        self, port: int | None = None, name: str = "coordinator", data_dir: str = "coordinator"
    ) -> None:
        """Spawn the coordinator process (``start``, or a test restarting it); ``port`` and
        ``name``: another coordinator process on the same database (``simulations/multi.py``
        runs several behind HAProxy); ``data_dir``: its own directory (one of
        :attr:`more_coordinators`: its own key and certificate), else DIR/coordinator."""
        argv = [
            self.python,
            "-m",
            "api",
            "serve",
            "--data-dir",
            str(self.data_dir / data_dir),
            "--host",
            self.host,
            "--port",
            str(self.port if port is None else port),
        ]
        self._spawn(name, argv if self.tls else [*argv, "--dev"])

    def start_payments(self, admin_token: str, requester_token: str) -> dict[str, str]:
        """Spawn ``python -m payments`` under DIR/payments (its database, the book's journal,
        its token, the id of its Ed25519 book key, made by a DKG on first run) and wait for
        its health; returns cluster.json's ``payments`` member."""
        d = self.data_dir / "payments"
        d.mkdir(mode=0o700, exist_ok=True)
        token_file = d / "token"
        if not token_file.exists():
            write_private_bytes(token_file, secrets.token_urlsafe(32).encode())
        # the rails' keys, each made by a DKG on first run: the book's Ed25519 key, the
        # ethereum rail's ECDSA key, the bitcoin rail's BIP-340 key (regtest addresses)
        wanted = {
            "book": {"scheme": "ed25519"},
            "ethereum": {"scheme": "ecdsa-secp256k1"},
            "bitcoin": {"scheme": "bip340", "network": "regtest"},
            # the settlement key signs the pacs.008 files (iso20022, Ed25519)
            "settlement": {"scheme": "ed25519"},
        }
        key_ids = {}
        for rail, spec in wanted.items():
            key_file = d / f"{rail}-key-id"
            if not key_file.exists():
                self.progress(f"creating the payment service's {rail} key")
                write_private_bytes(key_file, self._payments_key(admin_token, rail, spec).encode())
            key_ids[rail] = key_file.read_text().strip()
        token = token_file.read_text().strip()
        port = payments_port(self.port)
        self.env.update(
            {
                "PAYMENTS_DATABASE_URL": f"sqlite:///{d / 'payments.db'}",
                "PAYMENTS_BOOK_DATABASE_URL": f"sqlite:///{d / 'book.db'}",
                "PAYMENTS_TOKEN": token,
                "PAYMENTS_HOST": self.host,
                "PAYMENTS_PORT": str(port),
                "PAYMENTS_CUSTODY_URL": self.api_url,
                "PAYMENTS_CUSTODY_TOKEN": requester_token,
                "PAYMENTS_BOOK_KEY_ID": key_ids["book"],
                "PAYMENTS_EVM_KEY_ID": key_ids["ethereum"],
                "PAYMENTS_BTC_KEY_ID": key_ids["bitcoin"],
                "PAYMENTS_SETTLEMENT_KEY_ID": key_ids["settlement"],
                # development cluster: the in-process chains, the keys funded on them
                "PAYMENTS_DEV_CHAINS": "true",
            }
        )
        self._spawn("payments", [self.python, "-m", "payments"])
        url = f"http://{self.host}:{port}"
        self._wait_health(url, time.monotonic() + 60, "payments")
        return {"url": url, "token": token}

    def _payments_key(self, admin_token: str, rail: str, spec: dict[str, str]) -> str:
        """Create one of the payment service's keys (2 of the nodes) and wait until it is
        active; its id."""
        label = "payments-book" if rail == "book" else f"payments-{rail}"
        with httpx.Client(
            base_url=self.api_url,
            timeout=120,
            headers={"Authorization": f"Bearer {admin_token}"},
        ) as c:
            r = c.post(
                "/v1/keys",
                json={**spec, "threshold": 2, "label": label},
                headers={"Idempotency-Key": f"{label}-{self.data_dir.name}"},
            )
            if r.status_code not in (200, 201, 202):
                raise RuntimeError(f"creating the payments {rail} key failed: {r.text}")
            key_id = str(r.json()["id"])
            deadline = time.monotonic() + 120
            while r.json().get("status") != "active":
                if r.json().get("status") == "failed" or time.monotonic() > deadline:
                    raise RuntimeError(f"the payments {rail} key did not become active: {r.text}")
                time.sleep(0.2)
                r = c.get(f"/v1/keys/{key_id}")
        return key_id

    def check_ports(self) -> None:
        """:class:`PortInUse` naming the first port of the cluster already taken."""
        wanted = [(self.port, "the coordinator's port")]
        wanted += [
            (node_port(self.port, i), f"{node_id(i)}'s port") for i in range(1, self.nodes + 1)
        ]
        if self.payments:
            wanted.append((payments_port(self.port), "the payment service's port"))
        for port, role in wanted:
            if port_in_use(self.host, port):
                raise PortInUse(port, role)

    def start(self, timeout: float = 60.0) -> dict[str, Any]:
        """Check the ports are free, provision, start every process, enrol the nodes,
        write cluster.json."""
        self.check_ports()
        creds = self.provision()
        self.progress("starting coordinator and nodes")
        self.start_coordinator()
        for i in range(1, self.nodes + 1):
            self.start_node(i)
        deadline = time.monotonic() + timeout
        self._wait_health(self.api_url, deadline, "coordinator")
        node_ctx = self.node_ssl_context()
        for i in range(1, self.nodes + 1):
            self._wait_health(self.node_url(i), deadline, node_id(i), node_ctx)
        self.progress("enrolling nodes")
        with httpx.Client(
            base_url=self.api_url, timeout=30, headers={"Authorization": f"Bearer {creds['admin']}"}
        ) as c:
            for i in range(1, self.nodes + 1):
                r = c.put(f"/v1/nodes/{node_id(i)}", json={"url": self.node_url(i)})
                if r.status_code != 200:
                    raise RuntimeError(f"enrolling {node_id(i)} failed: {r.text}")
            while True:
                ready = c.get("/ready").json()
                if ready.get("nodes_healthy") == self.nodes:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nodes not healthy in time: {ready}")
                time.sleep(0.1)
        doc = {
            "api_url": self.api_url,
            "nodes": [
                {"id": node_id(i), "url": self.node_url(i)} for i in range(1, self.nodes + 1)
            ],
            "credentials": creds,
            "coordinator_public_keys": {n: k.hex() for n, k in self.coordinator_keys.items()},
            "principals": dict(DEV_PRINCIPALS),
            "dev_policy": "demo (README: Demo policy)",
            "dev_governance": self._governance_files(),
        }
        if self.tls:  # what a tool needs to reach a node directly (the coordinator's files)
            cd = self.coordinator_tls_dir
            doc["tls"] = {
                "ca": str(cd / "ca.pem"),
                "client_cert": str(cd / "client.crt"),
                "client_key": str(cd / "client.key"),
            }
        if self.payments:
            self.progress("starting the payment service")
            doc["payments"] = self.start_payments(creds["admin"], creds["requester"])
        doc["pids"] = {n: p.popen.pid for n, p in self.procs.items() if p.popen}
        write_private_json(self.cluster_file, doc)
        self.progress("ready")
        return doc

    def _governance_files(self) -> dict[str, Any]:
        """The dev genesis and key files, for cluster.json (paths only; the passphrase
        files are 0600 beside the keys, development only)."""
        genesis = self.data_dir / "governance" / "v1.gov"
        body = governance.decode(genesis.read_bytes()).body
        officers, approvers = self.data_dir / "officers", self.data_dir / "approvers"
        return {
            "genesis": str(genesis),
            "officers": sorted(str(p) for p in officers.glob("*.key")),
            "officer_passphrase_file": str(officers / "passphrase"),
            "passphrase_file": str(officers / "passphrase"),
            "approvers": sorted(str(p) for p in approvers.glob("*.key")),
            "approver_passphrase_file": str(approvers / "passphrase"),
            "approver_group": TREASURY,
            "raw_signing": "every key (development only)"
            if governance.ALL_KEYS in body.raw_signing_keys
            else "denied (demo policy)",
        }

    def _wait_health(
        self, url: str, deadline: float, name: str, ctx: ssl.SSLContext | None = None
    ) -> None:
        while True:
            proc = self.procs.get(name)
            if proc is not None and not proc.alive:
                tail = (self.data_dir / "logs" / f"{name}.log").read_bytes()[-1500:]
                text = tail.decode(errors="replace")
                raise RuntimeError(f"{name} exited during start-up:\n{text}")
            try:
                verify: ssl.SSLContext | bool = ctx if ctx is not None else True
                if httpx.get(url + "/health", timeout=1, verify=verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer /health at {url}")
            time.sleep(0.1)

    def stop_proc(self, name: str, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
        """Stop one process (by the pid we started): ``sig``, then SIGKILL after ``wait``."""
        proc = self.procs.get(name)
        if proc is None or proc.popen is None:
            return
        p = proc.popen
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def stop(self) -> None:
        """Stop every process: the coordinator first, then the nodes."""
        for name in ["coordinator", *[n for n in self.procs if n != "coordinator"]]:
            self.stop_proc(name)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
