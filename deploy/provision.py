"""The compose topology's one-shot steps and health checks (docs/DEPLOY.md).

``python /app/deploy/provision.py init|enrol|wait-governance|health ROLE [N]``, run by
``deploy/entrypoint.sh`` in the image, as the service user (uid 10001), never as root.

Every service mounts its volume at the **same** path (``ROOT/coordinator``,
``ROOT/node-N``, ``ROOT/lb``, ``ROOT/pki``, ``ROOT/bootstrap``; ``ROOT`` is
``$CUSTODY_DEPLOY_ROOT``, ``/srv`` in the image, where the Dockerfile pre-creates each
directory owned by uid 10001 so named volumes start writable by it): the SoftHSM2
configurations the tokens are made with name their directories, and ``init`` makes them
for services that later run elsewhere.

``init`` (idempotent: each step skipped when its output exists; what
:meth:`custody.cluster.Cluster.provision` does for ``custody up``, with the compose host
names and no dev governance):

1. the CA (``ROOT/pki/ca.key``, 0600, in a volume only ``init`` mounts);
2. the coordinator: ``python -m api init`` on PostgreSQL (``$CUSTODY_DATABASE_URL``; its
   PIN from ``$CUSTODY_COORDINATOR_PIN_FILE``), its public key to
   ``ROOT/bootstrap/coordinator.pub``, the role credentials (shown once by ``api init``) to
   ``ROOT/bootstrap/credentials.json`` (0600), its client certificate for the node calls;
3. each node: ``python -m signer_nodes init`` with that public key (so there is no secret
   to carry from one step to another: the nodes read what the coordinator's step wrote),
   ``signer_nodes identity`` to ``ROOT/bootstrap/identities/node-N.json`` (what the
   officers pin in the genesis), ``signer_nodes tls-request --host node-N`` and the CA's
   certificate from that CSR;
4. HAProxy's server certificate (``ROOT/lb/frontend.pem``, 0600) and the CA certificate
   clients verify it with (``ROOT/lb/ca.pem``).

It prints the public parts (coordinator key, identities, CA certificate) and the next step:
the officers' genesis at ``./governance/v1.gov``.

``enrol``: once the coordinators answer, enrol every node (``PUT /v1/nodes/node-N``, the
admin credential of ``credentials.json``) and wait until the coordinator sees them
healthy; without ``credentials.json`` (the operator moved it to a secret store, as
DEPLOY.md asks) it says so and does nothing.

``wait-governance``: wait for ``/governance/v1.gov`` (a node or coordinator started before
the officers placed it waits, saying so every 30 s).

``health coordinator|node N|lb``: the compose healthchecks (the coordinator's ``/ready``;
a node's TLS port accepting connections: it serves mutual TLS only, and no client
certificate is in its container; HAProxy's ``/health`` over TLS with the CA).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from custody import tls

ROOT = Path(os.environ.get("CUSTODY_DEPLOY_ROOT", "/srv"))
SECRETS = Path(os.environ.get("CUSTODY_SECRETS_DIR", "/run/secrets"))
NODES = int(os.environ.get("CUSTODY_NODES", "3"))
API_PORT = int(os.environ.get("CUSTODY_API_PORT", "7100"))
LB_PORT = int(os.environ.get("CUSTODY_LB_PORT", "8443"))
GOVERNANCE = Path(os.environ.get("CUSTODY_GENESIS", "/governance/v1.gov"))
# the host names the coordinators and nodes are reached at (compose service names)
COORDINATOR_HOST = os.environ.get("CUSTODY_COORDINATOR_HOST", "coordinator-1")
NODE_HOST = os.environ.get("CUSTODY_NODE_HOST_PATTERN", "node-{i}")
LB_HOSTS = os.environ.get("CUSTODY_LB_HOSTS", "localhost,lb,127.0.0.1")


def node_port(i: int) -> int:
    return API_PORT + i  # the numbering custody up uses (custody.cluster.node_port)


def node_pin(i: int) -> Path:
    return SECRETS / f"node_{i}_pin"


def say(msg: str) -> None:
    print(json.dumps({"service": "deploy", "event": msg}), file=sys.stderr, flush=True)


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    r = subprocess.run(  # noqa: S603 - our own argv
        argv, capture_output=True, text=True, check=False, env=None if env is None else env
    )
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:4])} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def write_private(path: Path, data: bytes) -> None:
    tls.write_private(path, data)


COORDINATOR_2_PIN = SECRETS / "coordinator_2_pin"


def _client_certificate(coord: Path, ca: tls.Ca, ca_pem: bytes) -> None:
    """A coordinator's own TLS client certificate (its key 0600 in its own volume)."""
    cd = coord / "tls"
    if not (cd / "client.crt").exists():
        cd.mkdir(mode=0o700, exist_ok=True)
        key = tls.new_key()
        tls.write_private(cd / "client.key", tls.key_pem(key))
        tls.write_public(cd / "ca.pem", ca_pem)
        tls.write_public(cd / "client.crt", tls.pem(tls.issue_coordinator(ca, key)))


def init() -> int:
    if not os.environ.get("CUSTODY_DATABASE_URL", "").startswith("postgresql"):
        raise SystemExit("CUSTODY_DATABASE_URL must name the PostgreSQL database (entrypoint.sh)")
    pki, boot, lb = ROOT / "pki", ROOT / "bootstrap", ROOT / "lb"
    coord = ROOT / "coordinator"
    for d in (pki, boot, lb, coord, *(ROOT / f"node-{i}" for i in range(1, NODES + 1))):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(d, os.W_OK):
            raise SystemExit(f"{d} is not writable by uid {os.getuid()} (volume ownership)")
    # 1. the CA
    if not (pki / "ca.pem").exists():
        say("making the CA")
        ca_new = tls.make_ca(os.environ.get("CUSTODY_CLUSTER_NAME", "tpwc"))
        tls.write_private(pki / "ca.key", tls.key_pem(ca_new.key))
        tls.write_public(pki / "ca.pem", tls.pem(ca_new.cert))
    ca = tls.load_ca(pki / "ca.pem", pki / "ca.key")
    ca_pem = tls.pem(ca.cert)
    # 2. the coordinator (api init is idempotent: credentials only on the first run)
    say("coordinator: api init")
    out = json.loads(run([sys.executable, "-m", "api", "init", "--data-dir", str(coord)]))
    coordinator_pk = out["coordinator_public_key"]
    tls.write_public(boot / "coordinator.pub", coordinator_pk.encode() + b"\n")
    if out["credentials"] is not None:
        write_private(boot / "credentials.json", json.dumps(out["credentials"]).encode())
    _client_certificate(coord, ca, ca_pem)
    pins = {"coordinator-1": coordinator_pk}
    # 2b. issue 14: coordinator-2 its own identity (own volume ROOT/coordinator-2, own PIN
    # secret coordinator_2_pin, own sealed key and TLS client certificate) when its PIN
    # secret is there; without it, coordinator-2 shares coordinator-1's volume (before)
    if COORDINATOR_2_PIN.is_file():
        coord2 = ROOT / "coordinator-2"
        coord2.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(coord2, os.W_OK):
            raise SystemExit(f"{coord2} is not writable by uid {os.getuid()} (volume ownership)")
        say("coordinator-2: api init (its own key)")
        env2 = {**os.environ, "CUSTODY_COORDINATOR_PIN_FILE": str(COORDINATOR_2_PIN)}
        out2 = json.loads(
            run([sys.executable, "-m", "api", "init", "--data-dir", str(coord2)], env2)
        )
        pins["coordinator-2"] = out2["coordinator_public_key"]
        tls.write_public(boot / "coordinator-2.pub", pins["coordinator-2"].encode() + b"\n")
        _client_certificate(coord2, ca, ca_pem)
    # 3. the nodes
    ids = boot / "identities"
    ids.mkdir(mode=0o700, exist_ok=True)
    for i in range(1, NODES + 1):
        nd, pin = ROOT / f"node-{i}", str(node_pin(i))
        if not (nd / "node.json").exists():
            say(f"node-{i}: signer_nodes init")
            run([sys.executable, "-m", "signer_nodes", "init", "--data-dir", str(nd),
                 "--node-id", f"node-{i}", "--party-id", str(i),
                 "--coordinator-key", coordinator_pk, "--pin-file", pin])  # fmt: skip
        ident = run([sys.executable, "-m", "signer_nodes", "identity", "--data-dir", str(nd),
                     "--pin-file", pin])  # fmt: skip
        tls.write_public(ids / f"node-{i}.json", ident.encode())
        if not (nd / "tls" / "node.crt").exists():
            say(f"node-{i}: TLS certificate from its own CSR")
            host = NODE_HOST.format(i=i)
            csr = run([sys.executable, "-m", "signer_nodes", "tls-request", "--data-dir", str(nd),
                       "--host", host, "--pin-file", pin])  # fmt: skip
            cert = tls.issue_node(ca, tls.load_csr(csr.encode()))
            tls.write_public(nd / "tls" / "ca.pem", ca_pem)
            tls.write_public(nd / "tls" / "node.crt", tls.pem(cert))
    # 4. HAProxy's certificate
    if not (lb / "frontend.pem").exists():
        say("HAProxy: server certificate")
        key = tls.new_key()
        cert = tls.issue_frontend(ca, key, [h for h in LB_HOSTS.split(",") if h])
        write_private(lb / "frontend.pem", tls.pem(cert) + tls.key_pem(key))
        tls.write_public(lb / "ca.pem", ca_pem)
    print(
        json.dumps(
            {
                "coordinator_public_key": coordinator_pk,
                "coordinator_public_keys": pins,
                "identities": {
                    f"node-{i}": json.loads((ids / f"node-{i}.json").read_text())
                    for i in range(1, NODES + 1)
                },
                "ca_pem": ca_pem.decode(),
                "credentials_file": str(boot / "credentials.json"),
                "next": f"officers: a genesis pinning these identities at {GOVERNANCE} "
                "(custody governance genesis ... --node node-N.json"
                + "".join(f" --coordinator {n}={k}" for n, k in pins.items())
                + "; sign), then docker compose up -d",
            },
            indent=1,
        )
    )
    return 0


def _get(url: str, timeout: float = 3.0, ctx: ssl.SSLContext | None = None) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:  # noqa: S310 - our URL
        return json.loads(r.read())  # type: ignore[no-any-return]


def enrol() -> int:
    creds_file = ROOT / "bootstrap" / "credentials.json"
    if not creds_file.exists():
        say(f"{creds_file} is gone (moved to a secret store): enrol nodes with the admin token")
        return 0
    token = json.loads(creds_file.read_text())["admin"]
    base = f"http://{COORDINATOR_HOST}:{API_PORT}"
    deadline = time.monotonic() + 300
    for i in range(1, NODES + 1):
        body = json.dumps({"url": f"https://{NODE_HOST.format(i=i)}:{node_port(i)}"}).encode()
        while True:
            req = urllib.request.Request(  # noqa: S310 - our URL
                f"{base}/v1/nodes/node-{i}",
                data=body,
                method="PUT",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
                    say(f"node-{i} enrolled ({r.status})")
                    break
            except (urllib.error.URLError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise SystemExit(f"enrolling node-{i} failed: {exc}") from None
                time.sleep(2)
    while True:
        try:
            if _get(f"{base}/ready").get("nodes_healthy") == NODES:
                say("every node healthy")
                return 0
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit("nodes not healthy in 300 s")
        time.sleep(1)


def wait_governance() -> int:
    last = 0.0
    while not GOVERNANCE.exists():
        if time.monotonic() - last > 30:
            say(f"waiting for the officers' genesis at {GOVERNANCE} (docs/DEPLOY.md step 2)")
            last = time.monotonic()
        time.sleep(2)
    return 0


def health(role: str, arg: str | None) -> int:
    try:
        if role == "coordinator":
            _get(f"http://127.0.0.1:{API_PORT}/ready")
        elif role == "node":
            with socket.create_connection(("127.0.0.1", node_port(int(arg or "0"))), timeout=3):
                pass
        elif role == "lb":
            ctx = ssl.create_default_context(cafile=str(ROOT / "lb" / "ca.pem"))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            _get(f"https://localhost:{LB_PORT}/health", ctx=ctx)
        else:
            raise SystemExit(f"health: coordinator, node N or lb, not {role!r}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit("usage: provision.py init|enrol|wait-governance|health ROLE [N]")
    cmd = argv[0]
    if cmd == "init":
        return init()
    if cmd == "enrol":
        return enrol()
    if cmd == "wait-governance":
        return wait_governance()
    if cmd == "health" and len(argv) >= 2:
        return health(argv[1], argv[2] if len(argv) > 2 else None)
    raise SystemExit(f"unknown command {argv}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
