"""Several coordinators behind HAProxy, as processes (issue 14 items 2, 7, 8).

``Multi`` starts, in this order, and stops in the reverse order whatever happens (a
context manager; on a failed start too):

1. a throw-away PostgreSQL server (:mod:`simulations.pgserver`) and one database on it;
2. a :class:`custody.cluster.Cluster`: provisioning (``api init`` on that database, the
   nodes, the dev CA and every certificate when ``tls``, the dev genesis), the signer
   nodes, coordinator 1, the nodes' enrolment;
3. coordinators 2..N: more ``python -m api serve`` processes, each on **its own** data
   directory ``DIR/coordinator-K`` (its own sealed identity key in its own SoftHSM2 token,
   its own TLS client certificate from the dev CA, made by ``api init`` during the
   Cluster's provisioning) and the same database, each on its own port. The dev genesis
   pins every coordinator's key in its ``coordinators`` list (issue 14: the nodes accept
   exactly those); coordinator 1 is ``DIR/coordinator``. They share everything durable
   through the database (requests, idempotency records, the audit chain under its
   advisory lock, credentials, enrolment, governance versions);
4. HAProxy in front (:mod:`simulations.haproxy`: health checks on ``/ready``, retries only
   for connection failures, redispatch; TLS 1.3 to clients when ``client_tls``, with a
   certificate from the cluster's dev CA).

The topology is the one ``docker-compose.yml`` describes (PostgreSQL, two coordinators,
three nodes over mutual TLS, HAProxy terminating client TLS); ``tests/lb`` runs it.

``python -m simulations.multi [--coordinators N] [--client-tls]`` starts one and waits
(Ctrl-C stops every process); the studies (:mod:`simulations.saturation`,
:mod:`simulations.soak`) and ``tests/lb`` use :class:`Multi` directly.
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from custody import tls
from custody.cluster import (
    Cluster,
    free_port_block,
    node_id,
    write_private_bytes,
    write_private_json,
)
from simulations.haproxy import Backend, Haproxy, render_config
from simulations.pgserver import PgServer

T = TypeVar("T")


def _coordinator_proc(k: int) -> str:
    """The Cluster's process name of coordinator ``k`` (1 is the Cluster's own)."""
    return "coordinator" if k == 1 else f"coordinator-{k}"


@dataclass
class Multi:
    """``with Multi(d, coordinators=2) as m: doc = m.start()``."""

    data_dir: Path
    coordinators: int = 2
    nodes: int = 3
    tls: bool = True  # mutual TLS coordinator <-> nodes (what custody up and compose run)
    client_tls: bool = False  # HAProxy terminates TLS 1.3 for the clients
    allow_raw: bool = True  # raw signing for every key (the tests and studies sign bytes)
    pg_durable: bool = True  # PostgreSQL with fsync on (the studies); tests turn it off
    env: dict[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda _msg: None
    pg: PgServer | None = None
    cluster: Cluster | None = None
    lb: Haproxy | None = None
    database_url: str = ""
    base_port: int = 0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        if self.coordinators < 1:
            raise ValueError("coordinators: at least 1")

    # -- addresses ------------------------------------------------------------------------
    def coordinator_port(self, k: int) -> int:
        """Coordinator 1 on the Cluster's port, nodes after it, then coordinators 2..N."""
        return self.base_port if k == 1 else self.base_port + self.nodes + k - 1

    def coordinator_url(self, k: int) -> str:
        return f"http://127.0.0.1:{self.coordinator_port(k)}"

    @property
    def lb_port(self) -> int:
        return self.base_port + self.nodes + self.coordinators

    @property
    def api_url(self) -> str:
        """Where clients connect: HAProxy."""
        scheme = "https" if self.client_tls else "http"
        host = "localhost" if self.client_tls else "127.0.0.1"
        return f"{scheme}://{host}:{self.lb_port}"

    @property
    def ca_file(self) -> Path:
        """The dev CA clients verify HAProxy's certificate with (``client_tls``)."""
        return self.data_dir / "tls" / "ca.pem"

    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client passes as ``verify`` to reach :attr:`api_url`."""
        if not self.client_tls:
            return True
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return ctx

    def backend_name(self, k: int) -> str:
        return f"coordinator-{k}"

    # -- start / stop -------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> dict[str, Any]:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.progress("PostgreSQL: a throw-away server")
        self.pg = PgServer(durable=self.pg_durable)
        self.pg.start()  # assigned first: a failed start is still cleaned up by stop()
        self.database_url = self.pg.create_database("custody")
        self.base_port = free_port_block(self.nodes + self.coordinators + 1)
        env = {**self.env, "CUSTODY_DATABASE_URL": self.database_url}
        self.cluster = Cluster(
            self.data_dir,
            more_coordinators=tuple(_coordinator_proc(k) for k in range(2, self.coordinators + 1)),
            nodes=self.nodes,
            port=self.base_port,
            allow_raw=self.allow_raw,
            tls=self.tls,
            env=env,
            progress=self.progress,
        )
        doc = self.cluster.start(timeout=max(30.0, deadline - time.monotonic()))
        for k in range(2, self.coordinators + 1):
            self.start_coordinator(k, deadline)
        self._start_lb()
        assert self.lb is not None
        self.lb.wait_states(
            {self.backend_name(k): "UP" for k in range(1, self.coordinators + 1)},
            timeout=max(5.0, deadline - time.monotonic()),
        )
        out = {
            **doc,
            "api_url": self.api_url,
            "coordinators": {
                self.backend_name(k): self.coordinator_url(k)
                for k in range(1, self.coordinators + 1)
            },
            "database_url": self.database_url,
            "pids": self.pids(),
        }
        if self.client_tls:
            out["client_ca"] = str(self.ca_file)
        write_private_json(self.data_dir / "multi.json", out)
        self.progress("ready")
        return out

    def start_coordinator(self, k: int, deadline: float | None = None) -> None:
        """(Re)start coordinator ``k`` and wait until it is ready with every node healthy."""
        assert self.cluster is not None
        self.progress(f"starting coordinator-{k}")
        self.cluster.start_coordinator(
            port=self.coordinator_port(k), name=_coordinator_proc(k), data_dir=_coordinator_proc(k)
        )
        self._wait_ready(k, deadline or time.monotonic() + 60)

    def _wait_ready(self, k: int, deadline: float) -> None:
        """Until coordinator ``k`` answers ``/ready`` with every node healthy."""

        def ready() -> bool:
            r = httpx.get(self.coordinator_url(k) + "/ready", timeout=2)
            body = r.json()
            if r.status_code == 200 and body.get("nodes_healthy") == self.nodes:
                return True
            raise ValueError(body)  # the last answer, for the error if it never gets there

        self._wait_up(_coordinator_proc(k), f"coordinator-{k}", "not ready", deadline, ready)

    def _wait_up(
        self, proc_name: str, who: str, what: str, deadline: float, probe: Callable[[], T]
    ) -> T:
        """``probe()``'s first result that does not raise (an HTTP or decoding error), polled
        every 0.1 s until ``deadline`` while the process ``proc_name`` runs: a process that
        exits raises with its log's tail, a deadline passed with ``who`` ``what`` and the
        last error. One loop for the coordinators' ``/ready`` and the nodes' ``/health``."""
        assert self.cluster is not None
        proc = self.cluster.procs[proc_name]
        last: object = None
        while True:
            if not proc.alive:
                log = self.data_dir / "logs" / f"{proc_name}.log"
                tail = log.read_bytes()[-1500:].decode(errors="replace")
                raise RuntimeError(f"{who} exited during start-up:\n{tail}")
            try:
                return probe()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"{who} {what} in time: {last}")
            time.sleep(0.1)

    def _frontend_pem(self) -> Path:
        """HAProxy's certificate and key in one PEM (0600), issued by the dev CA."""
        ca = tls.load_ca(self.data_dir / "tls" / "ca.pem", self.data_dir / "tls" / "ca.key")
        key = tls.new_key()
        cert = tls.issue_frontend(ca, key, ["localhost", "127.0.0.1"])
        pem = self.data_dir / "lb" / "frontend.pem"
        write_private_bytes(pem, tls.pem(cert) + tls.key_pem(key))
        return pem

    def _start_lb(self) -> None:
        self.progress("HAProxy in front of the coordinators")
        workdir = self.data_dir / "lb"
        workdir.mkdir(mode=0o700, exist_ok=True)
        if self.client_tls and not self.tls:
            raise ValueError("client_tls needs the dev CA: tls=True")
        pem = self._frontend_pem() if self.client_tls else None
        sock = workdir / "admin.sock"
        config = render_config(
            [
                Backend(self.backend_name(k), f"127.0.0.1:{self.coordinator_port(k)}")
                for k in range(1, self.coordinators + 1)
            ],
            f"127.0.0.1:{self.lb_port}",
            stats_socket=str(sock),
            tls_pem=str(pem) if pem else None,
        )
        self.lb = Haproxy(workdir, config, self.data_dir / "logs" / "haproxy.log", sock)
        self.lb.start()

    def stop_coordinator(self, k: int, sig: int = signal.SIGTERM) -> None:
        """Stop coordinator ``k`` (SIGKILL: no goodbye to anyone)."""
        assert self.cluster is not None
        self.cluster.stop_proc(_coordinator_proc(k), sig)

    # -- signer nodes (tests/multi/test_chaos.py kills and restarts them) ---------------------
    def node_health(self, i: int) -> dict[str, Any]:
        """Node ``i``'s ``GET /health`` over mutual TLS (its ``boot_id`` among the rest)."""
        assert self.cluster is not None
        with self.cluster.node_http(timeout=5) as http:
            r = http.get(self.cluster.node_url(i) + "/health")
        r.raise_for_status()
        doc: dict[str, Any] = r.json()
        return doc

    def stop_node(self, i: int, sig: int = signal.SIGTERM) -> None:
        """Stop signer node ``i`` (SIGKILL: no goodbye; its nonces and presignatures, which
        live only in its memory, are gone with it)."""
        assert self.cluster is not None
        self.cluster.stop_proc(node_id(i), sig)

    def start_node(self, i: int, deadline: float | None = None) -> str:
        """(Re)start signer node ``i`` on its data directory and port; wait until it answers
        ``/health`` and every running coordinator reports all nodes healthy again. Its new
        boot id."""
        assert self.cluster is not None
        self.progress(f"starting {node_id(i)}")
        until = deadline or time.monotonic() + 90
        self.cluster.start_node(i)
        boot = self._wait_up(
            node_id(i),
            node_id(i),
            "did not answer /health",
            until,
            lambda: str(self.node_health(i)["boot_id"]),
        )
        for k in range(1, self.coordinators + 1):
            p = self.cluster.procs.get(_coordinator_proc(k))
            if p is not None and p.alive:
                self._wait_ready(k, until)
        return boot

    def pids(self) -> dict[str, int]:
        """Every process of the topology: coordinators, nodes, haproxy, the postmaster."""
        out: dict[str, int] = {}
        if self.cluster is not None:
            for name, p in self.cluster.procs.items():
                if p.popen is not None and p.alive:
                    key = "coordinator-1" if name == "coordinator" else name
                    out[key] = p.popen.pid
        if self.lb is not None and self.lb.pid is not None and self.lb.alive:
            out["haproxy"] = self.lb.pid
        if self.pg is not None:
            out.update(self.pg.pids())
        return out

    def stop(self) -> None:
        """HAProxy, every coordinator, the nodes, PostgreSQL: each stopped even if one
        before it failed to stop."""
        errors: list[BaseException] = []
        for step in (self._stop_lb, self._stop_cluster, self._stop_pg):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - stop the rest, report the first
                errors.append(exc)
        if errors:
            raise errors[0]

    def _stop_lb(self) -> None:
        if self.lb is not None:
            self.lb.stop()

    def _stop_cluster(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()

    def _stop_pg(self) -> None:
        if self.pg is not None:
            self.pg.stop()

    def __enter__(self) -> Multi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulations.multi")
    p.add_argument("--coordinators", type=int, default=2)
    p.add_argument("--client-tls", action="store_true", help="HAProxy serves HTTPS (TLS 1.3)")
    p.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="custody-multi-") as tmp:
        d = a.data_dir or Path(tmp)
        with Multi(d, coordinators=a.coordinators, client_tls=a.client_tls,
                   progress=lambda m: print(m, flush=True)) as m:  # fmt: skip
            doc = m.start()
            print(json.dumps({k: doc[k] for k in ("api_url", "coordinators", "pids")}, indent=1))
            print(f"cluster file: {d / 'multi.json'} (Ctrl-C stops every process)", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
