"""The coordinator's per-node micro-batching sender (api.nodes.Batcher) against a real HTTP
endpoint: alone when idle, coalesced while a call is in flight, per-item results and
failures, whole-call failures to every waiter."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from nacl.signing import SigningKey

from api.nodes import NodeCaller, NodeFailure, NodeInfo


class FakeBatchNode:
    """An HTTP endpoint shaped like a node's ``/v1/frost/sign-batch`` (answers are not
    shares: this checks transport and batching only; real nodes are in tests/nodes)."""

    def __init__(self) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.mode = "ok"

    async def handle(self, request: web.Request) -> web.Response:
        assert request.headers.get("X-Coordinator-Signature")
        items = (await request.json())["items"]
        self.calls.append(items)
        await self.gate.wait()
        if self.mode == "short":
            return web.json_response({"results": []})
        out = []
        for it in items:
            if it.get("bad"):
                out.append(
                    {
                        "problem": {
                            "type": "urn:tpwc:node:nonce-used",
                            "status": 409,
                            "title": "nonce used",
                            "detail": "used",
                            "culprits": [7],
                        }
                    }
                )
            else:
                out.append({"signature_share": it["n"]})
        return web.json_response({"results": out})


async def test_batcher_sends_alone_when_idle_and_coalesces_while_busy() -> None:
    fake = FakeBatchNode()
    app = web.Application()
    app.router.add_post("/v1/frost/sign-batch", fake.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        node = NodeInfo("node-1", 1, str(server.make_url("")), "00", "00")
        caller = NodeCaller(lambda m: SigningKey.generate().sign(m).signature, timeout=5)
        path = "/v1/frost/sign-batch"
        try:
            # idle: an item goes out alone, at once
            assert await caller.sign_item(node, path, {"n": "aa"}) == {"signature_share": "aa"}
            assert [len(c) for c in fake.calls] == [1]
            # busy: items that arrive while a call is in flight go together in the next one
            fake.gate.clear()
            first = asyncio.ensure_future(caller.sign_item(node, path, {"n": "01"}))
            while len(fake.calls) < 2:
                await asyncio.sleep(0.005)
            rest = [
                asyncio.ensure_future(
                    caller.sign_item(node, path, {"n": f"{i:02x}", "bad": i == 3})
                )
                for i in range(2, 7)
            ]
            await asyncio.sleep(0.05)
            assert [len(c) for c in fake.calls] == [1, 1]  # nothing sent while busy
            fake.gate.set()
            assert (await first)["signature_share"] == "01"
            res = await asyncio.gather(*rest, return_exceptions=True)
            assert [len(c) for c in fake.calls] == [1, 1, 5]
            ok = [r["signature_share"] for r in res if isinstance(r, dict)]
            assert ok == ["02", "04", "05", "06"]
            failed = res[1]
            assert isinstance(failed, NodeFailure)  # its own problem, its own culprits
            assert (failed.reason, failed.status, failed.culprits) == ("refused", 409, (7,))
            assert caller.batch_stats() == {"calls": 3, "items": 7}  # GET /ready reports it
            # a whole-call failure reaches every waiter of that call
            fake.mode = "short"
            res = await asyncio.gather(
                *(caller.sign_item(node, path, {"n": "0a"}) for _ in range(3)),
                return_exceptions=True,
            )
            assert all(isinstance(r, NodeFailure) and r.reason == "garbage" for r in res)
        finally:
            await caller.aclose()


async def test_batcher_unreachable_node_fails_every_waiter() -> None:
    caller = NodeCaller(lambda m: SigningKey.generate().sign(m).signature, timeout=2)
    node = NodeInfo("node-9", 9, "http://127.0.0.1:9", "00", "00")  # nothing listens
    try:
        res = await asyncio.gather(
            *(caller.sign_item(node, "/v1/frost/sign-batch", {"n": i}) for i in range(4)),
            return_exceptions=True,
        )
        assert all(isinstance(r, NodeFailure) and r.transport for r in res), res
    finally:
        await caller.aclose()


async def test_batcher_skips_items_whose_waiter_gave_up() -> None:
    fake = FakeBatchNode()
    app = web.Application()
    app.router.add_post("/v1/frost/sign-batch", fake.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        node = NodeInfo("node-1", 1, str(server.make_url("")), "00", "00")
        caller = NodeCaller(lambda m: SigningKey.generate().sign(m).signature, timeout=5)
        path = "/v1/frost/sign-batch"
        try:
            fake.gate.clear()
            first = asyncio.ensure_future(caller.sign_item(node, path, {"n": "01"}))
            while not fake.calls:
                await asyncio.sleep(0.005)
            gone = asyncio.ensure_future(caller.sign_item(node, path, {"n": "02"}))
            kept = asyncio.ensure_future(caller.sign_item(node, path, {"n": "03"}))
            await asyncio.sleep(0.01)
            gone.cancel()
            fake.gate.set()
            await first
            assert (await kept)["signature_share"] == "03"
            assert [[i["n"] for i in c] for c in fake.calls] == [["01"], ["03"]]
        finally:
            await caller.aclose()
