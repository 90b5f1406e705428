"""Talking to signer nodes: signed requests over async aiohttp, typed failures that blame.

Every request except ``GET /health`` is signed with the coordinator's Ed25519 key
(:func:`custody.nodeauth.sign_headers`, docs/NODE_API.md). Every failure is a
:class:`NodeFailure` naming the parties to blame: the node itself when it is unreachable,
slow or answers garbage, or the ``culprits`` of a protocol problem it reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from nacl.signing import SigningKey

from custody.nodeauth import sign_headers


@dataclass
class NodeInfo:
    """An enrolled node as the orchestrator sees it (mirrors the ``nodes`` table)."""

    id: str
    party_id: int
    url: str
    sign_pk: str
    box_pk: str
    status: str = "unknown"  # healthy | degraded | down | unknown
    last_seen: float | None = None
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def eligible(self) -> bool:
        return self.status == "healthy"


class NodeFailure(Exception):
    """A node call failed. ``culprits`` are the party ids to blame, ``reason`` a short code."""

    def __init__(self, node: NodeInfo, reason: str, detail: str,
                 culprits: tuple[int, ...] | None = None, status: int | None = None) -> None:
        self.node = node
        self.reason = reason
        self.detail = detail
        self.culprits = tuple(culprits) if culprits else (node.party_id,)
        self.status = status
        super().__init__(f"{node.id} (party {node.party_id}): {reason}: {detail}")

    @property
    def transport(self) -> bool:
        """True when the node is unreachable or timed out (route around, mark down)."""
        return self.reason in ("unreachable", "timeout")


class NodeCaller:
    """Signed JSON calls to nodes: one keep-alive HTTP/1.1 connection pool per node URL.

    The client is aiohttp, not httpx: httpcore checks every pooled connection's socket for
    each request it dispatches, which at 32 concurrent signatures cost the coordinator
    more CPU than everything else together; aiohttp's pool (and C parser) does not.
    """

    def __init__(self, signing_key: SigningKey, timeout: float,
                 max_connections: int = 64) -> None:
        self.key = signing_key
        self.timeout = timeout
        self.max_connections = max_connections
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, base_url: str) -> aiohttp.ClientSession:
        s = self._sessions.get(base_url)
        if s is None or s.closed:
            s = self._sessions[base_url] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections,
                                               keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=self.timeout,
                                              sock_connect=min(self.timeout, 2.0)),
                skip_auto_headers=("User-Agent",), auto_decompress=False)
        return s

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            await s.close()

    async def health(self, node: NodeInfo, url: str | None = None) -> dict[str, Any]:
        return await self._send(node, "GET", "/health", None, url=url, signed=False)

    async def call(self, node: NodeInfo, method: str, path: str,
                   body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._send(node, method, path, body)

    async def _send(self, node: NodeInfo, method: str, path: str, body: dict[str, Any] | None,
                    *, url: str | None = None, signed: bool = True) -> dict[str, Any]:
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"content-type": "application/json"} if body is not None else {}
        if signed:
            headers.update(sign_headers(self.key, method, path, content))
        base = (url or node.url).rstrip("/")
        try:
            async with self.session(base).request(method, base + path, data=content or None,
                                                  headers=headers) as r:
                raw = await r.read()
                status = r.status
        except TimeoutError as e:
            raise NodeFailure(node, "timeout", f"{method} {path}: no answer in time") from e
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise NodeFailure(node, "unreachable", f"{method} {path}: {type(e).__name__}") from e
        try:
            doc = json.loads(raw)
        except ValueError:
            raise NodeFailure(node, "garbage", f"{method} {path}: answer is not JSON",
                              status=status) from None
        if not isinstance(doc, dict):
            raise NodeFailure(node, "garbage", f"{method} {path}: answer is not an object",
                              status=status)
        if status >= 400:
            culprits = doc.get("culprits")
            ok = isinstance(culprits, list) and culprits and all(
                type(c) is int for c in culprits)
            raise NodeFailure(node, "refused" if status < 500 else "error",
                              f"{method} {path}: {status} {doc.get('title', '')}: "
                              f"{doc.get('detail', '')}",
                              culprits=tuple(culprits) if ok else None, status=status)
        return doc
