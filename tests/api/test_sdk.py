"""custody.client against the in-process app (sync and async)."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from custody.client import AsyncCustodyClient, CustodyClient, CustodyError


def test_sync_client(api) -> None:  # noqa: ANN001
    kid = api.add_key("ed25519")
    with CustodyClient("http://testserver", api.tokens["requester"], http=TestClient(api.app)) as c:
        sr = c.sign(kid, b"\x01\x02", idempotency_key="sdk-1")
        assert sr["status"] == "pending_approval" and sr["message"] == "0102"
        assert c.sign(kid, b"\x01\x02", idempotency_key="sdk-1")["id"] == sr["id"]
        assert [r["id"] for r in c.list_sign_requests(limit=1)] == [sr["id"]]
        assert c.get_key(kid)["public_key"]
        with pytest.raises(CustodyError) as e:
            c.create_key("ed25519", 2)
        assert e.value.status == 403 and e.value.type.endswith("forbidden")
        with pytest.raises(CustodyError) as e:
            c.sign("key_nope", b"x")
        assert e.value.status == 404


async def test_async_client(api) -> None:  # noqa: ANN001
    kid = api.add_key("bip340")
    transport = httpx.ASGITransport(app=api.app)
    http = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    async with AsyncCustodyClient("http://testserver", api.tokens["requester"], http=http) as c:
        sr = await c.sign(kid, "aa" * 8)
        assert sr["status"] == "pending_approval"
        assert (await c.get_sign_request(sr["id"]))["id"] == sr["id"]
        assert [r["id"] async for r in c.list_sign_requests()] == [sr["id"]]


def _dead_url() -> str:
    """A loopback URL on which nothing listens (a port bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_unreachable_coordinator_is_one_typed_error_and_a_clean_cli_exit() -> None:
    import subprocess
    import sys

    from custody.client import CustodyClient, CustodyError, CustodyUnreachable

    url = _dead_url()
    with CustodyClient(url, "t") as c, pytest.raises(CustodyUnreachable) as info:
        c.health()
    assert isinstance(info.value, CustodyError) and info.value.status == 503
    assert info.value.type == "urn:tpwc:client:unreachable"
    cli = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "custody.cli", "keys", "list", "--api-url", url, "--token", "t"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 1, cli.stderr
    assert "unreachable" in cli.stderr and "Traceback" not in cli.stdout + cli.stderr


async def test_unreachable_coordinator_async() -> None:
    from custody.client import AsyncCustodyClient, CustodyUnreachable

    async with AsyncCustodyClient(_dead_url(), "t") as c:
        with pytest.raises(CustodyUnreachable):
            await c.health()
