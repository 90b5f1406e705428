"""The generated HAProxy configuration, against small backends of our own (no cluster): a
request that reached a backend is never sent again, one that could not connect is sent to
the other backend, a backend failing its health checks is taken out.

Backends are real HTTP servers on loopback in threads: ``answering`` answers 200 and
counts the POSTs it got; ``dropping`` answers the health check but closes the connection
after reading a POST, without a word (a coordinator killed mid-request).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from simulations.haproxy import Backend, Haproxy, render_config
from tests.lb.conftest import require_topology


class Backend_(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, drop: bool) -> None:
        self.drop = drop
        self.posts = 0
        self.healthy = True
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Backend_

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        ok = self.path == "/ready" and self.server.healthy
        self.send_response(200 if ok else 503)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with self.server.lock:
            self.server.posts += 1
        if self.server.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # no answer at all
            return
        body = b'{"ok":true}'
        self.send_response(201)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


@pytest.fixture
def lb_factory(tmp_path: Path) -> Iterator[object]:
    require_topology()
    started: list[Haproxy] = []

    def make(backends: list[Backend]) -> tuple[Haproxy, str]:
        port = _closed_port()
        sock = tmp_path / f"admin-{len(started)}.sock"
        cfg = render_config(backends, f"127.0.0.1:{port}", stats_socket=str(sock))
        h = Haproxy(tmp_path, cfg, tmp_path / "haproxy.log", sock)
        h.start()
        started.append(h)
        return h, f"http://127.0.0.1:{port}"

    yield make
    for h in started:
        h.stop()


def test_post_that_reached_a_backend_is_never_resent(lb_factory) -> None:  # type: ignore[no-untyped-def]
    """Round robin over a backend that drops every POST after reading it and one that
    answers: the dropped ones come back 502 and were *not* re-sent to the other; every
    POST reached exactly one backend once."""
    drop, answer = Backend_(drop=True), Backend_(drop=False)
    h, url = lb_factory(
        [Backend("coordinator-1", drop.address), Backend("coordinator-2", answer.address)]
    )
    h.wait_states({"coordinator-1": "UP", "coordinator-2": "UP"})
    codes = []
    with httpx.Client(timeout=10) as c:
        for i in range(10):
            codes.append(c.post(url + "/v1/sign-requests", json={"i": i}).status_code)
    assert drop.posts >= 1 and answer.posts >= 1
    assert codes.count(502) == drop.posts
    assert codes.count(201) == answer.posts
    assert drop.posts + answer.posts == 10  # nothing sent twice


def test_connection_failure_is_redispatched(lb_factory) -> None:  # type: ignore[no-untyped-def]
    """A backend nobody listens on, kept UP (its checks disabled through the runtime
    API, as in the seconds before checks notice a crash): every request that HAProxy
    sends there fails to connect and is retried on the other backend: all answered."""
    answer = Backend_(drop=False)
    h, url = lb_factory(
        [Backend("coordinator-1", f"127.0.0.1:{_closed_port()}"),
         Backend("coordinator-2", answer.address)]
    )  # fmt: skip
    h.command("disable health coordinators/coordinator-1")
    h.command("set server coordinators/coordinator-1 health up")
    assert h.server_states()["coordinator-1"] == "no check"  # in rotation, unchecked
    with httpx.Client(timeout=10) as c:
        codes = [c.post(url + "/v1/sign-requests", json={"i": i}).status_code for i in range(10)]
    assert codes == [201] * 10
    assert answer.posts == 10
    log = (Path(h.log_file)).read_text()
    assert '"retries":"+1"' in log or '"retries":"1"' in log  # HAProxy counted the redispatch


def test_failing_health_check_takes_a_backend_out(lb_factory) -> None:  # type: ignore[no-untyped-def]
    """A backend whose /ready answers 503 goes DOWN and gets no more requests; healthy
    again, it comes back UP (rise 2)."""
    a, b = Backend_(drop=False), Backend_(drop=False)
    h, url = lb_factory([Backend("coordinator-1", a.address), Backend("coordinator-2", b.address)])
    h.wait_states({"coordinator-1": "UP", "coordinator-2": "UP"})
    a.healthy = False
    h.wait_states({"coordinator-1": "DOWN"}, timeout=15)
    with httpx.Client(timeout=10) as c:
        for i in range(6):
            r = c.post(url + "/x", json={"i": i})
            assert r.status_code == 201 and r.headers["x-custody-backend"] == "coordinator-2"
    assert a.posts == 0 and b.posts == 6
    a.healthy = True
    h.wait_states({"coordinator-1": "UP"}, timeout=15)


def test_render_config_refuses_bad_backends() -> None:
    with pytest.raises(ValueError, match="at least one"):
        render_config([], "127.0.0.1:1")
    with pytest.raises(ValueError, match="unique"):
        render_config([Backend("c", "a:1"), Backend("c", "b:1")], "127.0.0.1:1")


def test_config_retries_only_connection_failures() -> None:
    """What the configuration says, line by line (the behaviour is tested above)."""
    cfg = render_config([Backend("c1", "127.0.0.1:1")], "127.0.0.1:2", tls_pem="/x.pem")
    lines = [ln.strip() for ln in cfg.splitlines()]
    assert "retry-on conn-failure" in lines and "option redispatch 1" in lines
    assert not any(ln.startswith("retry-on") and ln != "retry-on conn-failure" for ln in lines)
    assert "http-check send meth GET uri /ready" in lines
    assert "bind 127.0.0.1:2 ssl crt /x.pem alpn http/1.1" in lines
    assert "ssl-default-bind-options ssl-min-ver TLSv1.3" in lines
