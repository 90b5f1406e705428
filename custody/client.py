"""Python SDK for the coordinator API (httpx), sync and async.

    from custody.client import CustodyClient
    with CustodyClient("http://127.0.0.1:7100", token) as c:
        key = c.create_key("ed25519", threshold=2)
        sr = c.sign(key["id"], b"hello")          # waits until signed/failed
        bytes.fromhex(sr["signature"])

Every POST carries an ``Idempotency-Key`` (a fresh UUID unless you pass one, so a retry
of the same logical call should pass the same key). Errors raise :class:`CustodyError`
carrying the RFC 9457 problem document. Resources are plain dicts shaped like the API's
JSON (see ``/openapi.json``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from custody.domain import TERMINAL_KEY_STATUSES, TERMINAL_SIGN_STATUSES

__all__ = ["CustodyError", "CustodyClient", "AsyncCustodyClient", "TERMINAL_SIGN", "load_cluster"]

TERMINAL_SIGN = TERMINAL_SIGN_STATUSES
TERMINAL_KEY = TERMINAL_KEY_STATUSES


class CustodyError(Exception):
    """The API answered with a problem document (or not at all)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", ""))
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")


class CustodyUnreachable(CustodyError):
    """No answer at all (connection refused, DNS, timeout): a client-side problem document."""

    def __init__(self, url: str, exc: Exception) -> None:
        super().__init__(
            503,
            {
                "type": "urn:tpwc:client:unreachable",
                "title": "Coordinator unreachable",
                "status": 503,
                "detail": f"{url}: {type(exc).__name__}: {exc}",
            },
        )


class _Transport(httpx.HTTPTransport):
    """Turns transport failures into :class:`CustodyUnreachable`, so callers see one error type."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except httpx.TransportError as exc:
            raise CustodyUnreachable(str(request.url), exc) from None


class _AsyncTransport(httpx.AsyncHTTPTransport):
    """Async twin of :class:`_Transport`."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.TransportError as exc:
            raise CustodyUnreachable(str(request.url), exc) from None


def load_cluster(path: str) -> dict[str, Any]:
    """Read a ``cluster.json`` written by ``custody up``."""
    import json
    from pathlib import Path

    return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


def _raise_for(r: httpx.Response) -> dict[str, Any]:
    try:
        doc = r.json()
    except ValueError:
        doc = {"title": "non-JSON answer", "detail": r.text[:200]}
    if r.status_code >= 400:
        raise CustodyError(r.status_code, doc if isinstance(doc, dict) else {"detail": doc})
    return doc  # type: ignore[no-any-return]


def _sign_body(
    key_id: str,
    message: bytes | str | None,
    kind: str,
    payload: dict[str, Any] | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {"key_id": key_id, "kind": kind, **extra}
    if message is not None:
        body["message"] = message.hex() if isinstance(message, bytes | bytearray) else message
    if payload is not None:
        body["payload"] = payload
    return body


class _Base:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "User-Agent": "custody-sdk/0.1"}

    @staticmethod
    def _idem(key: str | None) -> dict[str, str]:
        return {"Idempotency-Key": key or str(uuid.uuid4())}


class CustodyClient(_Base):
    """Synchronous client."""

    def __init__(
        self, base_url: str, token: str, *, timeout: float = 60.0, http: httpx.Client | None = None
    ) -> None:
        super().__init__(base_url, token)
        self.http = http or httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=_Transport()
        )
        self.http.headers.update(self.headers)

    def __enter__(self) -> CustodyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        return _raise_for(
            self.http.get(path, params={k: v for k, v in params.items() if v is not None})
        )

    def health(self) -> dict[str, Any]:
        return self._get("/health")

    def ready(self) -> dict[str, Any]:
        return self._get("/ready")

    def nodes(self) -> list[dict[str, Any]]:
        return self._get("/v1/nodes")["items"]  # type: ignore[no-any-return]

    def enrol_node(self, node_id: str, url: str) -> dict[str, Any]:
        return _raise_for(self.http.put(f"/v1/nodes/{node_id}", json={"url": url}))

    def create_key(
        self,
        scheme: str,
        threshold: int,
        nodes: list[str] | None = None,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"scheme": scheme, "threshold": threshold}
        if nodes is not None:
            body["nodes"] = nodes
        key = _raise_for(self.http.post("/v1/keys", json=body, headers=self._idem(idempotency_key)))
        deadline = time.monotonic() + timeout
        while wait and key["status"] not in TERMINAL_KEY and time.monotonic() < deadline:
            time.sleep(0.2)
            key = self.get_key(key["id"])
        return key

    def get_key(self, key_id: str) -> dict[str, Any]:
        return self._get(f"/v1/keys/{key_id}")

    def list_keys(self, limit: int = 50) -> Iterator[dict[str, Any]]:
        yield from self._pages("/v1/keys", limit=limit)

    def sign(
        self,
        key_id: str,
        message: bytes | str | None = None,
        *,
        kind: str = "raw",
        payload: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout: float = 60.0,
        **extra: Any,
    ) -> dict[str, Any]:
        """Create a sign request; with ``wait`` poll until it is signed/failed/expired."""
        r = _raise_for(
            self.http.post(
                "/v1/sign-requests",
                json=_sign_body(key_id, message, kind, payload, extra),
                headers=self._idem(idempotency_key),
            )
        )
        deadline = time.monotonic() + timeout
        delay = 0.01
        while (
            wait
            and r["status"] not in TERMINAL_SIGN
            and r["status"] != "pending_approval"
            and time.monotonic() < deadline
        ):
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            r = self.get_sign_request(r["id"])
        return r

    def get_sign_request(self, request_id: str) -> dict[str, Any]:
        return self._get(f"/v1/sign-requests/{request_id}")

    def list_sign_requests(self, limit: int = 50, **filters: Any) -> Iterator[dict[str, Any]]:
        yield from self._pages("/v1/sign-requests", limit=limit, **filters)

    def audit(self, limit: int = 100) -> Iterator[dict[str, Any]]:
        yield from self._pages("/v1/audit", limit=limit)

    def verify_audit(self) -> dict[str, Any]:
        return self._get("/v1/audit/verify")

    def _pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self._get(path, cursor=cursor, **params)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


class AsyncCustodyClient(_Base):
    """Asynchronous client (same methods, awaitable)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, token)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        self.http = http or httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=_AsyncTransport(limits=limits)
        )
        self.http.headers.update(self.headers)

    async def __aenter__(self) -> AsyncCustodyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _get(self, path: str, **params: Any) -> dict[str, Any]:
        return _raise_for(
            await self.http.get(path, params={k: v for k, v in params.items() if v is not None})
        )

    async def health(self) -> dict[str, Any]:
        return await self._get("/health")

    async def nodes(self) -> list[dict[str, Any]]:
        return (await self._get("/v1/nodes"))["items"]  # type: ignore[no-any-return]

    async def create_key(
        self,
        scheme: str,
        threshold: int,
        nodes: list[str] | None = None,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"scheme": scheme, "threshold": threshold}
        if nodes is not None:
            body["nodes"] = nodes
        key = _raise_for(
            await self.http.post("/v1/keys", json=body, headers=self._idem(idempotency_key))
        )
        deadline = time.monotonic() + timeout
        while wait and key["status"] not in TERMINAL_KEY and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            key = await self.get_key(key["id"])
        return key

    async def get_key(self, key_id: str) -> dict[str, Any]:
        return await self._get(f"/v1/keys/{key_id}")

    async def sign(
        self,
        key_id: str,
        message: bytes | str | None = None,
        *,
        kind: str = "raw",
        payload: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout: float = 60.0,
        **extra: Any,
    ) -> dict[str, Any]:
        r = _raise_for(
            await self.http.post(
                "/v1/sign-requests",
                json=_sign_body(key_id, message, kind, payload, extra),
                headers=self._idem(idempotency_key),
            )
        )
        deadline = time.monotonic() + timeout
        delay = 0.01
        while (
            wait
            and r["status"] not in TERMINAL_SIGN
            and r["status"] != "pending_approval"
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            r = await self.get_sign_request(r["id"])
        return r

    async def get_sign_request(self, request_id: str) -> dict[str, Any]:
        return await self._get(f"/v1/sign-requests/{request_id}")

    async def list_sign_requests(
        self, limit: int = 50, **filters: Any
    ) -> AsyncIterator[dict[str, Any]]:
        cursor = None
        while True:
            page = await self._get("/v1/sign-requests", cursor=cursor, limit=limit, **filters)
            for item in page["items"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return
