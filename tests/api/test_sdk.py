"""custody.client against the in-process app (sync and async)."""

from __future__ import annotations

import inspect

import httpx
import pytest
from fastapi.testclient import TestClient

from custody.client import AsyncCustodyClient, CustodyClient, CustodyError
from custody.models import KeyOut, SignRequestOut


def test_sync_client(api) -> None:  # noqa: ANN001
    kid = api.add_key("ed25519")
    with CustodyClient("http://testserver", api.tokens["requester"], http=TestClient(api.app)) as c:
        sr = c.sign(kid, b"\x01\x02", idempotency_key="sdk-1")
        assert isinstance(sr, SignRequestOut)
        assert sr.status == "pending_approval" and sr.message == "0102"
        assert c.sign(kid, b"\x01\x02", idempotency_key="sdk-1").id == sr.id
        assert [r.id for r in c.list_sign_requests(limit=1)] == [sr.id]
        assert [r.id for r in c.list_sign_requests(status="signed")] == []
        key = c.get_key(kid)
        assert isinstance(key, KeyOut) and key.public_key and key.scheme == "ed25519"
        assert [k.id for k in c.list_keys()] == [kid]
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
        assert isinstance(sr, SignRequestOut) and sr.status == "pending_approval"
        assert (await c.get_sign_request(sr.id)).id == sr.id
        assert [r.id async for r in c.list_sign_requests()] == [sr.id]
        assert [k.id async for k in c.list_keys()] == [kid]
        assert (await c.health()).status == "ok"


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
    assert cli.returncode == 5, cli.stderr  # ExitCode.UNREACHABLE
    assert "unreachable" in cli.stderr and "Traceback" not in cli.stdout + cli.stderr


async def test_unreachable_coordinator_async() -> None:
    from custody.client import AsyncCustodyClient, CustodyUnreachable

    async with AsyncCustodyClient(_dead_url(), "t") as c:
        with pytest.raises(CustodyUnreachable):
            await c.health()


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_async_client_has_the_sync_clients_methods() -> None:
    """Same public methods, same parameters (names, kinds, defaults, annotations) and the
    same results (an ``Iterator[X]`` of the sync client is an ``AsyncIterator[X]``); only
    ``close`` is ``aclose``."""
    sync, asyn = _public_methods(CustodyClient), _public_methods(AsyncCustodyClient)
    assert set(sync) - {"close"} == set(asyn) - {"aclose"}
    assert len(sync) >= 12
    for name, sig in sync.items():
        if name == "close":
            continue
        other = asyn[name]
        assert list(sig.parameters.values()) == list(other.parameters.values()), name
        want = str(sig.return_annotation).replace("Iterator[", "AsyncIterator[")
        assert str(other.return_annotation) == want, name
        assert inspect.iscoroutinefunction(getattr(AsyncCustodyClient, name)) or (
            inspect.isasyncgenfunction(getattr(AsyncCustodyClient, name))
        ), name
