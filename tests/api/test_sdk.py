"""custody.client against the in-process app (sync and async)."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from custody.client import AsyncCustodyClient, CustodyClient, CustodyError


def test_sync_client(api) -> None:  # noqa: ANN001
    kid = api.add_key("ed25519")
    with CustodyClient("http://testserver", api.tokens["requester"],
                       http=TestClient(api.app)) as c:
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
