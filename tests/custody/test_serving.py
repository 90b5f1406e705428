"""custody.serving against a real uvicorn process: hostile clients get bounded answers.

Oversized bodies (declared or chunked), trickled bodies, half-open connections and a
connection flood: each is refused or cut off within its limit, and the service answers a
normal request afterwards without a restart. Loopback only, bounded in count and time.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER = r"""
import sys
from custody.serving import ServiceLimits, serve

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

limits = ServiceLimits(max_body_bytes=1024, header_timeout_s=0.5, body_timeout_s=0.5,
                       keep_alive_s=1, max_connections=20)
serve(app, host="127.0.0.1", port=int(sys.argv[1]), limits=limits)
"""


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])  # noqa: S603
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.post(url, content=b"x", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _answer(s: socket.socket) -> str:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data.decode()


def test_body_within_the_limit_is_served(server: str) -> None:
    assert httpx.post(server, content=b"a" * 1024).text == "1024"


def test_declared_oversized_body_is_413_before_it_is_read(server: str) -> None:
    s = _raw(server)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500000000\r\n\r\n")
    answer = _answer(s)
    assert answer.startswith("HTTP/1.1 413")
    assert "application/problem+json" in answer and "500000000 bytes" in answer


def test_chunked_oversized_body_is_413_at_the_limit(server: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"b" * 512

    r = httpx.post(server, content=chunks())
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["title"] == "Content Too Large"


def test_trickled_body_is_408(server: str) -> None:
    s = _raw(server)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    answer = _answer(s)  # the rest of the body never comes
    assert answer.startswith("HTTP/1.1 408") and "did not arrive" in answer


def test_half_open_headers_are_cut_off(server: str) -> None:
    s = _raw(server)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # headers never complete
    t0 = time.monotonic()
    assert s.recv(4096) == b""  # the server closed the connection
    assert time.monotonic() - t0 < 4


def test_connection_flood_is_capped_and_the_service_recovers(server: str) -> None:
    flood = []
    try:
        for _ in range(60):
            flood.append(_raw(server))
            flood[-1].sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(0.2)
        closed = 0
        for s in flood:
            s.settimeout(0.05)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed >= 60 - 20  # beyond the cap, closed at once
    finally:
        for s in flood:
            s.close()
    time.sleep(0.6)  # the held ones time out on their headers
    assert httpx.post(server, content=b"ok").text == "2"
