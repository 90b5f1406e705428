"""The namespace harness itself (simulations/netns.py): a partition is a silent cut that
heals, a failed start leaves nothing behind, the userspace link model delivers every byte in
order and holds it at least as long as it says."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulations.netns import LinkProxy, LinkShape, Netns, NetnsCluster, netns_support
from tests.netns.conftest import need

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9500)); s.listen(); print("up", flush=True)
while True:
    c, _ = s.accept(); c.sendall(c.recv(100)); c.close()
"""


def echo(ip: str, timeout: float = 2.0) -> bytes:
    with socket.create_connection((ip, 9500), timeout=timeout) as s:
        s.sendall(b"ping")
        return s.recv(100)


def link_exists(name: str) -> bool:
    r = subprocess.run(["ip", "link", "show", name], capture_output=True, check=False)  # noqa: S603, S607
    return r.returncode == 0


def test_a_partition_is_a_silent_cut_and_heal_restores_the_link() -> None:
    need(netns_support(), "CUSTODY_REQUIRE_NETNS")
    net = Netns(nodes=1)
    net.create()
    server = None
    try:
        server = subprocess.Popen(  # noqa: S603
            net.exec_argv(net.node_ns(1), [sys.executable, "-c", SERVER]),
            stdout=subprocess.PIPE,
        )
        assert server.stdout is not None and server.stdout.readline() == b"up\n"
        assert echo(net.node_ip(1)) == b"ping"  # host -> coordinator ns -> node ns
        net.partition(1)
        with pytest.raises(TimeoutError):  # no refusal, no reset: the packets vanish
            echo(net.node_ip(1), timeout=1.0)
        net.heal(1)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert echo(net.node_ip(1)) == b"ping"
                break
            except OSError:
                assert time.monotonic() < deadline, "the healed link does not carry"
                time.sleep(0.2)
    finally:
        if server is not None:
            server.kill()
            server.wait(5)
            if server.stdout is not None:
                server.stdout.close()
        net.destroy()
    assert not net.exists()
    assert not link_exists(f"tp{net.tag}h0")


def test_a_failed_start_leaves_no_namespace_link_or_process(tmp_path: Path) -> None:
    need(netns_support(), "CUSTODY_REQUIRE_NETNS")
    c = NetnsCluster(tmp_path / "c", nodes=2, python="/bin/false")
    with pytest.raises(RuntimeError, match="failed"):
        c.start(timeout=10)
    assert not c.net.exists()
    assert not link_exists(f"tp{c.net.tag}h0")
    assert not any(p.alive for p in c.procs.values())


async def _through_proxy(tmp_path: Path, shape: LinkShape, chunks: list[bytes]) -> float:
    got = bytearray()

    async def upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            got.extend(data)
        w.write(b"done:%d" % len(got))
        await w.drain()
        w.close()

    up = await asyncio.start_server(upstream, "127.0.0.1", 0)
    up_port = up.sockets[0].getsockname()[1]
    ctl = tmp_path / "ctl.json"
    shape.write(ctl)
    proxy = LinkProxy(("127.0.0.1", 0), ("127.0.0.1", up_port), ctl)
    server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t0 = time.perf_counter()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for c in chunks:
        w.write(c)
        await w.drain()
        await asyncio.sleep(0.001)
    w.write_eof()
    answer = await r.read()
    dt = time.perf_counter() - t0
    w.close()
    server.close()
    up.close()
    assert bytes(got) == b"".join(chunks)  # every byte, in order, under loss too
    assert answer == b"done:%d" % len(got)
    return dt


def test_the_link_model_delivers_everything_in_order_and_holds_it(tmp_path: Path) -> None:
    chunks = [os.urandom(100 + i) for i in range(40)]
    # 30 ms each way, a lossy link (seeded): a model, so its bounds are exact, not measured
    dt = asyncio.run(_through_proxy(tmp_path, LinkShape(0.030, 0.2, seed=7), chunks))
    # the handshake round trip, the way there, the answer's way back: 4 x 30 ms at least
    assert dt >= 0.120, dt
    asyncio.run(_through_proxy(tmp_path, LinkShape(0.0, 0.0), chunks))  # and unshaped
