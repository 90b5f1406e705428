"""Signer nodes as separate hosts on one machine: Linux network namespaces, veth links,
faults injected by the kernel (issue 14 part 3).

Topology (a star, as the system is: nodes talk only to the coordinator, which relays their
envelopes; no node has a route to another node's service except through it)::

    host (the test, the study) ──veth── coordinator ns ──veth── node-1 ns
     10.X.0.1                  10.X.0.2    10.X.i.1 ──veth── node-i ns 10.X.i.2

* one namespace per node and one for the coordinator (``ip netns add``), a veth pair per
  link with a /30 each (``10.X.0.0/30`` host link, ``10.X.i.0/30`` node ``i``'s link);
  the coordinator namespace forwards, so the host reaches the nodes' ``/health`` through
  it (a partitioned node is unreachable from the host too);
* the real processes (``python -m api serve``, ``python -m signer_nodes run``) run inside
  their namespaces with ``ip netns exec``; the cluster is provisioned on the host by
  :class:`custody.cluster.Cluster` itself (this module subclasses it; no change there);
* a **partition** takes the node's end of its link down (``ip link set ... down``): the
  cable is pulled, packets to it vanish silently, callers time out (no quick refusal);
* **latency and loss** are ``tc qdisc ... netem delay D/2 loss P%`` on both ends of a
  link (so the link's round trip is D) when the kernel has ``sch_netem``;
  :func:`netem_support` names precisely why not otherwise;
* without netem, :class:`LinkProxy` is the clearly labelled fallback: a userspace TCP
  relay in the node's own namespace, in front of its service, that holds every chunk for
  D/2 each way, the first data of a connection for one more round trip (the handshake),
  and with probability P a chunk for a modelled retransmission timeout (Linux's 200 ms
  minimum RTO plus one round trip; later chunks wait behind it, as TCP delivers in
  order). It is a model of the link, not the kernel's; the study's output says which.

Everything made is removed on the way out (:meth:`Netns.destroy`, also from ``atexit``
and at the next start for namespaces whose creating process is gone): the processes we
started (by pid), the namespaces (deleting a namespace deletes its veth ends, and a veth
pair dies with either end), the host route.

Run ``python -m simulations.netns check`` to see what this machine supports.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from custody.cluster import Cluster, Proc, node_id

NS_PREFIX = "tpwc"
#: ``tpwc-<pid>-<tag>-<role>``: the pid of the process that made it (stale when it is gone)
NS_RE = re.compile(rf"^{NS_PREFIX}-(\d+)-([0-9a-f]{{4}})-(c|n\d+)$")
#: The port a node's :class:`LinkProxy` listens on is its service port plus this.
PROXY_PORT_OFFSET = 1000
#: Linux's minimum retransmission timeout (TCP_RTO_MIN, include/net/tcp.h): what a lost
#: segment costs at least, the model's loss penalty (plus one round trip).
TCP_RTO_MIN = 0.200
#: Linux's initial RTO for a SYN (TCP_TIMEOUT_INIT, RFC 6298 s2.1): a lost handshake.
TCP_TIMEOUT_INIT = 1.0


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here; the message says exactly why."""


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if check and r.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({r.returncode}): {r.stderr.strip()}")
    return r


_support: dict[str, str | None] = {}


def netns_support() -> str | None:
    """None when this process can make namespaces and veth pairs, else why not (one
    sentence naming the missing piece)."""
    if "netns" in _support:
        return _support["netns"]
    reason: str | None = None
    if not sys.platform.startswith("linux"):
        reason = f"network namespaces are Linux only (this is {sys.platform})"
    elif os.geteuid() != 0:
        reason = f"`ip netns add` needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); euid is {os.geteuid()}"
    elif shutil.which("ip") is None:
        reason = "the `ip` command (iproute2) is not installed: apt-get install iproute2"
    else:
        name = f"{NS_PREFIX}-{os.getpid()}-{random.randrange(16**4):04x}-c"  # noqa: S311
        r = _run(["ip", "netns", "add", name], check=False)
        if r.returncode != 0:
            reason = f"`ip netns add` failed: {r.stderr.strip()}"
        else:
            try:
                v = _run(["ip", "-n", name, "link", "add", "tpwcprobe0", "type", "veth",
                          "peer", "name", "tpwcprobe1"], check=False)  # fmt: skip
                if v.returncode != 0:
                    reason = f"`ip link add ... type veth` failed: {v.stderr.strip()}"
            finally:
                _run(["ip", "netns", "del", name], check=False)
    _support["netns"] = reason
    return reason


def netem_support() -> str | None:
    """None when ``tc qdisc ... netem`` works, else why not, precisely."""
    if "netem" in _support:
        return _support["netem"]
    reason = netns_support()
    if reason is None and shutil.which("tc") is None:
        reason = "the `tc` command (iproute2) is not installed: apt-get install iproute2"
    if reason is None:
        name = f"{NS_PREFIX}-{os.getpid()}-{random.randrange(16**4):04x}-c"  # noqa: S311
        _run(["ip", "netns", "add", name])
        try:
            r = _run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root",
                      "netem", "delay", "1ms", "loss", "1%"], check=False)  # fmt: skip
            if r.returncode != 0:
                reason = (
                    "tc netem is unavailable: `tc qdisc add dev lo root netem delay 1ms loss 1%` "
                    f"said {r.stderr.strip()!r} (the kernel has no sch_netem: `modprobe "
                    "sch_netem` on the host, or a kernel with CONFIG_NET_SCH_NETEM)"
                )
        finally:
            _run(["ip", "netns", "del", name], check=False)
    _support["netem"] = reason
    return reason


def remove_stale() -> list[str]:
    """Delete our namespaces whose creating process is gone (a run killed before its
    cleanup); the names deleted."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    gone = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NS_RE.match(name)
        if m is None:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # its maker still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _run(["ip", "netns", "del", name], check=False)
        gone.append(name)
    return gone


@dataclass
class Netns:
    """The namespaces and links of one cluster (:class:`NetnsCluster` makes one)."""

    nodes: int
    tag: str = field(default_factory=lambda: f"{random.randrange(16**4):04x}")  # noqa: S311
    octet: int = 0  # the X of 10.X.0.0/16, picked free at create()
    created: bool = False
    _netem_links: set[int] = field(default_factory=set)

    # -- names and addresses ---------------------------------------------------------------
    @property
    def coord_ns(self) -> str:
        return f"{NS_PREFIX}-{os.getpid()}-{self.tag}-c"

    def node_ns(self, i: int) -> str:
        return f"{NS_PREFIX}-{os.getpid()}-{self.tag}-n{i}"

    def _if(self, side: str, i: int) -> str:
        """veth names (at most 15 bytes): ``tp<tag>h0``/``h1`` host link, ``c<i>``/``n<i>``."""
        return f"tp{self.tag}{side}{i}"

    @property
    def host_ip(self) -> str:
        return f"10.{self.octet}.0.1"

    @property
    def coord_ip(self) -> str:
        """The coordinator's address as the host (the client) sees it."""
        return f"10.{self.octet}.0.2"

    def node_ip(self, i: int) -> str:
        return f"10.{self.octet}.{i}.2"

    def exec_argv(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    # -- making and removing ---------------------------------------------------------------
    def _free_octet(self) -> int:
        routes = _run(["ip", "-4", "route", "show"], check=False).stdout
        used = {int(m) for m in re.findall(r"\b10\.(\d+)\.", routes)}
        free = [o for o in range(64, 251) if o not in used]
        if not free:
            raise NetnsUnavailable("no free 10.X.0.0/16 for the namespaces' links")
        return random.choice(free)  # noqa: S311 - not security relevant

    def create(self) -> None:
        """Make the namespaces, links, addresses and routes (removed again on failure)."""
        reason = netns_support()
        if reason is not None:
            raise NetnsUnavailable(reason)
        remove_stale()
        self.octet = self._free_octet()
        self.created = True
        atexit.register(self.destroy)
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise

    def _create(self) -> None:
        c = self.coord_ns
        _run(["ip", "netns", "add", c])
        _run(["ip", "-n", c, "link", "set", "lo", "up"])
        # host <-> coordinator
        h0, h1 = self._if("h", 0), self._if("h", 1)
        _run(["ip", "link", "add", h0, "type", "veth", "peer", "name", h1, "netns", c])
        _run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", h0])
        _run(["ip", "link", "set", h0, "up"])
        _run(["ip", "-n", c, "addr", "add", f"{self.coord_ip}/30", "dev", h1])
        _run(["ip", "-n", c, "link", "set", h1, "up"])
        _run(["ip", "netns", "exec", c, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        _run(["ip", "-n", c, "route", "add", "default", "via", self.host_ip])
        _run(["ip", "route", "add", f"10.{self.octet}.0.0/16", "via", self.coord_ip])
        for i in range(1, self.nodes + 1):
            n = self.node_ns(i)
            _run(["ip", "netns", "add", n])
            _run(["ip", "-n", n, "link", "set", "lo", "up"])
            ci, ni = self._if("c", i), self._if("n", i)
            _run(["ip", "-n", c, "link", "add", ci, "type", "veth", "peer", "name", ni,
                  "netns", n])  # fmt: skip
            _run(["ip", "-n", c, "addr", "add", f"10.{self.octet}.{i}.1/30", "dev", ci])
            _run(["ip", "-n", c, "link", "set", ci, "up"])
            _run(["ip", "-n", n, "addr", "add", f"{self.node_ip(i)}/30", "dev", ni])
            _run(["ip", "-n", n, "link", "set", ni, "up"])
            _run(["ip", "-n", n, "route", "add", "default", "via", f"10.{self.octet}.{i}.1"])

    def destroy(self) -> None:
        """Remove everything :meth:`create` made (idempotent, never raises)."""
        if not self.created:
            return
        self.created = False
        for ns in [self.coord_ns, *(self.node_ns(i) for i in range(1, self.nodes + 1))]:
            _run(["ip", "netns", "del", ns], check=False)
        # the host ends die with their peers; the route with its device. Belt and braces:
        _run(["ip", "link", "del", self._if("h", 0)], check=False)
        with contextlib.suppress(Exception):
            atexit.unregister(self.destroy)

    def exists(self) -> bool:
        """Whether any of this topology's namespaces is still there (tests check cleanup)."""
        listed = {
            line.split()[0]
            for line in _run(["ip", "netns", "list"], check=False).stdout.splitlines()
            if line.split()
        }
        ours = {self.coord_ns, *(self.node_ns(i) for i in range(1, self.nodes + 1))}
        return bool(listed & ours)

    # -- faults ----------------------------------------------------------------------------
    def partition(self, i: int) -> None:
        """Pull node ``i``'s cable: its end of the link goes down, nothing reaches it and
        nothing it sends leaves (callers time out; no quick refusal)."""
        _run(["ip", "-n", self.node_ns(i), "link", "set", self._if("n", i), "down"])

    def heal(self, i: int) -> None:
        n = self.node_ns(i)
        _run(["ip", "-n", n, "link", "set", self._if("n", i), "up"])
        # the default route went with the link; put it back
        _run(["ip", "-n", n, "route", "replace", "default", "via", f"10.{self.octet}.{i}.1"])

    def shape(self, i: int, rtt_ms: float, loss_pct: float = 0.0) -> None:
        """netem on node ``i``'s link: ``rtt_ms / 2`` each way (round trip ``rtt_ms``), and
        ``loss_pct`` per packet each way. :class:`NetnsUnavailable` without netem."""
        reason = netem_support()
        if reason is not None:
            raise NetnsUnavailable(reason)
        for ns, dev in ((self.coord_ns, self._if("c", i)), (self.node_ns(i), self._if("n", i))):
            args = ["delay", f"{rtt_ms / 2:g}ms"]
            if loss_pct:
                args += ["loss", f"{loss_pct:g}%"]
            _run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root",
                  "netem", *args])  # fmt: skip
        self._netem_links.add(i)

    def unshape(self, i: int) -> None:
        for ns, dev in ((self.coord_ns, self._if("c", i)), (self.node_ns(i), self._if("n", i))):
            _run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], check=False)
        self._netem_links.discard(i)


# -- the cluster in namespaces ----------------------------------------------------------------
@dataclass
class NetnsCluster(Cluster):
    """:class:`custody.cluster.Cluster` with each process in its own namespace.

    Provisioning is the parent's, on the host (no network involved). Each spawned process
    runs under ``ip netns exec`` (which execs: the pid we hold is the process's own) and
    listens on every address of its namespace. ``proxied``: every node is reached through
    its :class:`LinkProxy` (the fallback for netem; started with no delay), so the study
    can shape links with :meth:`set_link`.
    """

    proxied: bool = False
    net: Netns = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.net = Netns(self.nodes)
        self._proxy_ctl: dict[int, Path] = {}
        # the nodes enrolled through their proxy (all of them when proxied, from the start)
        self.via_proxy: set[int] = set(range(1, self.nodes + 1)) if self.proxied else set()

    @property
    def api_url(self) -> str:
        return f"http://{self.net.coord_ip}:{self.port}"

    def node_url(self, i: int) -> str:
        port = self.port + i + (PROXY_PORT_OFFSET if i in self.via_proxy else 0)
        return f"http://{self.net.node_ip(i)}:{port}"

    def route(self, admin: httpx.Client, i: int, via_proxy: bool) -> None:
        """Enrol node ``i`` again at its proxy's address or at its own (``PUT
        /v1/nodes/{id}`` with the admin credential), and wait until it is healthy."""
        if via_proxy and not self.proxied:
            raise ValueError("no proxies in this cluster (proxied=False)")
        (self.via_proxy.add if via_proxy else self.via_proxy.discard)(i)
        r = admin.put(f"/v1/nodes/{node_id(i)}", json={"url": self.node_url(i)})
        if r.status_code != 200:
            raise RuntimeError(f"re-enrolling {node_id(i)} failed: {r.text}")
        self.wait_node_status(admin, {node_id(i): "healthy"})

    def check_ports(self) -> None:
        """Each namespace is a fresh network stack: nothing to check on the host."""

    def _spawn(self, name: str, argv: list[str]) -> None:
        ns = self.net.coord_ns if name == "coordinator" else None
        m = re.fullmatch(r"node-(\d+)", name)
        if m:
            ns = self.net.node_ns(int(m.group(1)))
        if ns is None:
            raise ValueError(f"{name}: no namespace for this process")
        argv = list(argv)
        if "--host" in argv:
            argv[argv.index("--host") + 1] = "0.0.0.0"  # noqa: S104 - its own namespace only
        super()._spawn(name, self.net.exec_argv(ns, argv))

    def start(self, timeout: float = 60.0) -> dict[str, Any]:
        if not self.net.created:
            self.net.create()
        try:
            if self.proxied:
                for i in range(1, self.nodes + 1):
                    self._start_proxy(i)
            return super().start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_proxy(self, i: int) -> None:
        ctl = self.data_dir / "logs" / f"proxy-{i}.json"
        ctl.parent.mkdir(parents=True, exist_ok=True)
        LinkShape().write(ctl)
        self._proxy_ctl[i] = ctl
        port = self.port + i
        argv = [self.python, "-m", "simulations.netns", "proxy",
                "--listen", f"0.0.0.0:{port + PROXY_PORT_OFFSET}",
                "--upstream", f"127.0.0.1:{port}", "--control", str(ctl)]  # fmt: skip
        name = f"proxy-{i}"
        path = self.data_dir / "logs" / f"{name}.log"
        log = path.open("ab")
        p = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            self.net.exec_argv(self.net.node_ns(i), argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=self._cwd(),
            start_new_session=True,
        )
        log.close()

        self.procs[name] = Proc(name, argv, p)

    def set_link(self, i: int, rtt_ms: float, loss_pct: float = 0.0, seed: int = 0) -> str:
        """Shape node ``i``'s link: netem when the kernel has it, else (``proxied``) the
        userspace proxy. Returns how: ``"netem"`` or ``"proxy"``."""
        if netem_support() is None:
            self.net.shape(i, rtt_ms, loss_pct)
            return "netem"
        if not self.proxied:
            raise NetnsUnavailable(str(netem_support()))
        if i not in self.via_proxy:
            raise ValueError(f"{node_id(i)} is reached directly: route() it via its proxy first")
        LinkShape(rtt_ms / 2000, loss_pct / 100, seed).write(self._proxy_ctl[i])
        time.sleep(2 * LinkShape.POLL)  # the proxy re-reads its control file this often
        return "proxy"

    def stop(self) -> None:
        try:
            super().stop()
            for name in [n for n in self.procs if n.startswith("proxy-")]:
                self.stop_proc(name, wait=3)
        finally:
            self.net.destroy()

    def wait_node_status(
        self, admin: httpx.Client, want: dict[str, str], timeout: float = 30.0
    ) -> dict[str, Any]:
        """Poll ``GET /v1/nodes`` until each node named has the status wanted."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = {n["id"]: n for n in admin.get("/v1/nodes").json()["items"]}
            if all(nodes[k]["status"] == v for k, v in want.items()):
                return nodes
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes not {want} in {timeout} s: {nodes}")
            time.sleep(0.2)


@contextlib.contextmanager
def netns_cluster(data_dir: Path, **kw: Any) -> Iterator[tuple[NetnsCluster, dict[str, Any]]]:
    """A started :class:`NetnsCluster` and its cluster.json document; everything removed
    on the way out (failures too)."""
    cluster = NetnsCluster(data_dir, **kw)
    try:
        doc = cluster.start(timeout=120)
        yield cluster, doc
    finally:
        cluster.stop()


# -- the userspace link model (netem's fallback) --------------------------------------------
@dataclass
class LinkShape:
    """What a :class:`LinkProxy` applies: ``delay`` seconds each way, ``loss`` probability
    per chunk each way, a seeded draw (reproducible runs)."""

    delay: float = 0.0
    loss: float = 0.0
    seed: int = 0
    POLL = 0.1  # seconds between re-reads of the control file

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"delay": self.delay, "loss": self.loss, "seed": self.seed}))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> LinkShape:
        doc = json.loads(path.read_text())
        return cls(float(doc["delay"]), float(doc["loss"]), int(doc["seed"]))


class LinkProxy:
    """A TCP relay that delays and (by a model) loses, for a kernel without netem.

    Per direction, each chunk read is written out ``delay`` later, in order; with
    probability ``loss`` it is held for a retransmission instead: ``TCP_RTO_MIN`` plus a
    round trip (later chunks wait behind it: head-of-line blocking, as in TCP). A new
    connection's first chunk waits one more round trip (the handshake the relay answers
    locally), and with probability ``loss`` a lost SYN's ``TCP_TIMEOUT_INIT``.
    """

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], control: Path):
        self.listen, self.upstream, self.control = listen, upstream, control
        self.shape = LinkShape.read(control)
        self.rng = random.Random(self.shape.seed)  # noqa: S311 - a simulation
        self._mtime = control.stat().st_mtime_ns

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(LinkShape.POLL)
            with contextlib.suppress(OSError, ValueError, KeyError):
                m = self.control.stat().st_mtime_ns
                if m != self._mtime:
                    self._mtime = m
                    self.shape = LinkShape.read(self.control)
                    self.rng = random.Random(self.shape.seed)  # noqa: S311

    def _penalty(self, first: bool) -> float:
        s = self.shape
        extra = 0.0
        if first:
            extra += 2 * s.delay
            if s.loss and self.rng.random() < s.loss:
                extra += TCP_TIMEOUT_INIT
        if s.loss and self.rng.random() < s.loss:
            extra += TCP_RTO_MIN + 2 * s.delay
        return s.delay + extra

    async def _pipe(
        self, r: asyncio.StreamReader, w: asyncio.StreamWriter, handshake: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        first = handshake

        async def drain() -> None:
            while True:
                due, data = await q.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    with contextlib.suppress(OSError):
                        w.write_eof()
                    return
                w.write(data)
                await w.drain()

        task = asyncio.create_task(drain())
        last = 0.0
        try:
            while True:
                data = await r.read(65536)
                due = max(loop.time() + (self._penalty(first) if data else self.shape.delay), last)
                first = False
                last = due
                q.put_nowait((due, data))
                if not data:
                    break
            await task
        except (ConnectionError, OSError):
            task.cancel()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.upstream)
        except OSError:
            cw.close()
            return
        try:  # each way ends at its EOF (a half-close is passed on); both closed after
            await asyncio.gather(
                self._pipe(cr, uw, True), self._pipe(ur, cw, False), return_exceptions=True
            )
        finally:
            for w in (uw, cw):
                with contextlib.suppress(Exception):
                    w.close()

    async def serve(self) -> None:
        server = await asyncio.start_server(self._handle, *self.listen)
        watch = asyncio.create_task(self._watch())
        async with server:
            await server.serve_forever()
        watch.cancel()


def _addr(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulations.netns")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="what this machine supports (namespaces, netem)")
    sub.add_parser("clean", help="remove namespaces left by runs that died")
    p = sub.add_parser("proxy", help="the userspace link model (run inside a namespace)")
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--control", required=True, type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "check":
        print(json.dumps({"netns": netns_support() or "ok", "netem": netem_support() or "ok"}))
        return 0
    if a.cmd == "clean":
        print(json.dumps({"removed": remove_stale()}))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    proxy = LinkProxy(_addr(a.listen), _addr(a.upstream), a.control)
    asyncio.run(proxy.serve())
    return 0


__all__ = ["LinkProxy", "LinkShape", "Netns", "NetnsCluster", "NetnsUnavailable", "node_id"]

if __name__ == "__main__":
    raise SystemExit(main())
