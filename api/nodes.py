"""Talking to signer nodes: signed requests over async aiohttp, typed failures that blame.

Every request except ``GET /health`` is signed with the coordinator's Ed25519 key, inside
its HSM token (:func:`sign_headers`, the format of :mod:`custody.nodeauth`, NODE_API.md).
Every failure is a :class:`NodeFailure` naming the parties to blame: the node itself when
it is unreachable, slow or answers garbage, or the ``culprits`` of a protocol problem it
reports.

With TLS material (:meth:`api.settings.Settings.node_tls_context`) every call goes over
mutual TLS 1.3 to an ``https://`` URL (a plain ``http://`` one is refused), and each new
connection is checked, after the CA chain and before any request is sent on it, to be
the node meant (:class:`PinnedConnector`: :func:`custody.tls.check_node_certificate`
against the roster's ``sign_pk``); connections are kept alive and reused, so a handshake
is paid once per connection, not per request.

Each signed call is a client span and carries its W3C ``traceparent`` (not part of the
signed string of :mod:`custody.nodeauth`: it only correlates logs and spans); a batch call
carries the trace of its first item and links the others'. Every call's latency is in
``custody_node_call_seconds`` by node and route template (:mod:`api.metrics`).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from opentelemetry.context import Context

from api import metrics
from custody import obs, tls
from custody.domain import NodeStatus
from custody.nodeauth import Signer, sign_headers


@dataclass
class NodeInfo:
    """An enrolled node as the orchestrator sees it (mirrors the ``nodes`` table)."""

    id: str
    party_id: int
    url: str
    sign_pk: str
    box_pk: str
    status: NodeStatus = "unknown"
    last_seen: float | None = None
    last_error: str | None = None

    @property
    def eligible(self) -> bool:
        return self.status == "healthy"


class NodeFailure(Exception):
    """A node call failed. ``culprits`` are the party ids to blame, ``reason`` a short code."""

    def __init__(
        self,
        node: NodeInfo,
        reason: str,
        detail: str,
        culprits: tuple[int, ...] | None = None,
        status: int | None = None,
        code: str = "",
    ) -> None:
        self.node = node
        self.reason = reason
        self.detail = detail
        self.culprits = tuple(culprits) if culprits else (node.party_id,)
        self.status = status
        self.code = code  # the node's stable code (its problem type urn:tpwc:node:<code>)
        super().__init__(f"{node.id} (party {node.party_id}): {reason}: {detail}")

    @property
    def transport(self) -> bool:
        """True when the node is unreachable or timed out (route around, mark down)."""
        return self.reason in ("unreachable", "timeout")


# How long an idle connection to a node is kept for reuse. It must be SHORTER than the
# nodes' own keep-alive (signer_nodes.service.LIMITS.keep_alive_s, 75 s): the side that
# closes an idle connection must be the client, or a request can go out on a connection the
# node is closing at that moment and fail with a disconnect that blames a healthy node
# (found by the namespace tests, tests/netns; pinned by tests/api/test_node_keepalive.py).
IDLE_KEEPALIVE_S = 30.0


class PinnedConnector(aiohttp.TCPConnector):
    """A keep-alive pool to one node whose every new TLS connection must carry that node's
    certificate: SAN ``urn:tpwc:node:<id>`` and the identity binding to ``sign_pk`` (the
    roster's pin; ``None`` while enrolling, when :meth:`NodeCaller.health` compares the
    bound key with the identity the node reports). A refused connection is closed before
    a byte of any request is written on it.

    aiohttp has no public hook after the handshake and before the request, so this
    overrides ``TCPConnector._create_connection`` (aiohttp 3.9 to 3.14 keep its
    signature); tests/e2e/test_mtls.py fails if an upgrade bypasses it.
    """

    def __init__(self, node_id: str, sign_pk: bytes | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.node_id = node_id
        self.sign_pk = sign_pk
        self.bound_pk: bytes | None = None  # the identity the last connection was bound to

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        proto = await super()._create_connection(req, traces, timeout)
        transport = proto.transport
        ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
        try:
            if ssl_object is None:
                raise tls.TlsIdentityError(self.node_id, "connection is not TLS")
            self.bound_pk = tls.check_node_certificate(
                ssl_object.getpeercert(binary_form=True), self.node_id, self.sign_pk
            )
        except tls.TlsIdentityError:
            if transport is not None:
                transport.abort()
            raise
        return proto


def _tls_detail(node: NodeInfo, e: BaseException) -> str:
    """The TLS reason of a failed connection (which check refused it), naming the node;
    the exception's type for any other transport failure."""
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        cert_error = e.certificate_error
        reason = getattr(cert_error, "verify_message", None) or str(cert_error)
        return f"TLS: {node.id}: certificate refused: {reason}"
    if isinstance(e, aiohttp.ClientSSLError):
        os_error = getattr(e, "os_error", None)
        reason = getattr(os_error, "reason", None) or str(os_error or e)
        return f"TLS: {node.id}: handshake failed: {reason}"
    if isinstance(e, ssl.SSLError):
        return f"TLS: {node.id}: handshake failed: {e.reason or e}"
    return type(e).__name__


class NodeCaller:
    """Signed JSON calls to nodes: one keep-alive HTTP/1.1 connection pool per node URL.

    The client is aiohttp, not httpx: httpcore checks every pooled connection's socket for
    each request it dispatches, which at 32 concurrent signatures cost the coordinator
    more CPU than everything else together; aiohttp's pool (and C parser) does not.
    """

    def __init__(
        self,
        signer: Signer,
        timeout: float,
        max_connections: int = 64,
        max_batch: int = 64,
        tls: ssl.SSLContext | None = None,
        public_key: bytes | None = None,
    ) -> None:
        self.signer = signer
        # issue 14: named in every signed request (X-Coordinator-Key), so a node that does
        # not pin this coordinator refuses it by name (coordinator-not-pinned)
        self.key_header = {} if public_key is None else {"X-Coordinator-Key": public_key.hex()}
        self.tls = tls  # mutual TLS 1.3 to every node (None: plain HTTP, --dev only)
        self.timeout = timeout
        self.max_connections = max_connections
        self.max_batch = max_batch
        self._sessions: dict[tuple[str, str, str], aiohttp.ClientSession] = {}
        self._batchers: dict[tuple[str, str, str], Batcher] = {}

    def session(self, base_url: str, node: NodeInfo | None = None) -> aiohttp.ClientSession:
        """The keep-alive session to ``base_url``; with TLS, one per node identity too (a
        pool pinned to ``node``'s id and roster ``sign_pk``)."""
        ident = ("", "") if node is None or self.tls is None else (node.id, node.sign_pk)
        key = (base_url, *ident)
        s = self._sessions.get(key)
        if s is None or s.closed:
            connector: aiohttp.TCPConnector
            if self.tls is None or node is None:
                connector = aiohttp.TCPConnector(
                    limit=self.max_connections, keepalive_timeout=IDLE_KEEPALIVE_S
                )
            else:
                connector = PinnedConnector(
                    node.id,
                    bytes.fromhex(node.sign_pk) if node.sign_pk else None,
                    limit=self.max_connections,
                    keepalive_timeout=IDLE_KEEPALIVE_S,
                    ssl=self.tls,
                )
            s = self._sessions[key] = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=self.timeout, sock_connect=min(self.timeout, 2.0)
                ),
                skip_auto_headers=("User-Agent",),
                auto_decompress=False,
            )
        return s

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            await s.close()

    async def health(self, node: NodeInfo, url: str | None = None) -> dict[str, Any]:
        """The node's ``/health``. Over TLS, a node enrolling (no ``sign_pk`` yet) must
        report the identity its certificate is bound to (the registry then checks that
        identity against the roster)."""
        doc = await self._send(node, "GET", "/health", None, url=url, signed=False)
        if self.tls is not None and not node.sign_pk:
            base = (url or node.url).rstrip("/")
            connector = self.session(base, node).connector
            bound = connector.bound_pk if isinstance(connector, PinnedConnector) else None
            if bound is None or doc.get("sign_pk") != bound.hex():
                raise NodeFailure(
                    node,
                    "unreachable",
                    f"GET /health: TLS: {node.id}: the identity it reports is not the one "
                    "its certificate is bound to",
                )
        return doc

    async def call(
        self,
        node: NodeInfo,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        context: Context | None = None,
        links: tuple[Context, ...] = (),
    ) -> dict[str, Any]:
        """One signed call, traced under ``context`` (default: the current one)."""
        return await self._send(node, method, path, body, context=context, links=links)

    def batch_stats(self) -> dict[str, int]:
        """Batch calls made and sign items they carried, over every node and route."""
        return {
            "calls": sum(b.calls for b in self._batchers.values()),
            "items": sum(b.items for b in self._batchers.values()),
        }

    async def sign_item(self, node: NodeInfo, path: str, item: dict[str, Any]) -> dict[str, Any]:
        """One sign item through ``node``'s batch endpoint ``path`` (:class:`Batcher`):
        its own result object, or :class:`NodeFailure` for its own problem document or for
        a failure of the whole call."""
        key = (node.id, node.url, path)
        b = self._batchers.get(key)
        if b is None:
            b = self._batchers[key] = Batcher(self, node, path, self.max_batch)
        doc = await b.submit(item)
        problem = doc.get("problem")
        if problem is not None:
            raise _refused(
                node,
                "POST",
                path,
                problem.get("status") if isinstance(problem, dict) else None,
                problem,
            )
        return doc

    async def _send(
        self,
        node: NodeInfo,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        url: str | None = None,
        signed: bool = True,
        context: Context | None = None,
        links: tuple[Context, ...] = (),
    ) -> dict[str, Any]:
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"content-type": "application/json"} if body is not None else {}
        if signed:
            headers.update(sign_headers(self.signer, method, path, content, recipient=node.id))
            headers.update(self.key_header)
        start = time.perf_counter()
        failure: str | None = None
        try:
            if not signed:  # health checks: measured, not traced
                return await self._request(node, method, path, content, headers, url)
            with obs.client_span(f"{method} {metrics.node_route(path)}", context, links):
                obs.inject_headers(headers)
                return await self._request(node, method, path, content, headers, url)
        except NodeFailure as e:
            failure = e.reason
            raise
        except asyncio.CancelledError:  # the caller's round timeout, or shutdown
            failure = "cancelled"
            raise
        finally:
            metrics.observe_node_call(node.id, path, time.perf_counter() - start, failure)

    async def _request(
        self,
        node: NodeInfo,
        method: str,
        path: str,
        content: bytes,
        headers: dict[str, str],
        url: str | None,
    ) -> dict[str, Any]:
        base = (url or node.url).rstrip("/")
        if self.tls is not None and not base.startswith("https://"):
            raise NodeFailure(
                node,
                "unreachable",
                f"{method} {path}: {node.id} at {base} is plain HTTP: this coordinator "
                "calls nodes only over mutual TLS (enrol an https:// URL)",
            )
        try:
            async with self.session(base, node).request(
                method, base + path, data=content or None, headers=headers
            ) as r:
                raw = await r.read()
                status = r.status
        except TimeoutError as e:
            raise NodeFailure(node, "timeout", f"{method} {path}: no answer in time") from e
        except tls.TlsIdentityError as e:
            raise NodeFailure(node, "unreachable", f"{method} {path}: TLS: {e}") from e
        except (aiohttp.ClientError, OSError, ValueError) as e:
            detail = _tls_detail(node, e)
            raise NodeFailure(node, "unreachable", f"{method} {path}: {detail}") from e
        try:
            doc = json.loads(raw)
        except ValueError:
            raise NodeFailure(
                node, "garbage", f"{method} {path}: answer is not JSON", status=status
            ) from None
        if not isinstance(doc, dict):
            raise NodeFailure(
                node, "garbage", f"{method} {path}: answer is not an object", status=status
            )
        if status >= 400:
            raise _refused(node, method, path, status, doc)
        return doc


def _refused(node: NodeInfo, method: str, path: str, status: Any, doc: Any) -> NodeFailure:
    """The failure for a problem document ``doc`` the node answered (whole call or item)."""
    if not isinstance(doc, dict) or type(status) is not int or status < 400:
        return NodeFailure(node, "garbage", f"{method} {path}: malformed problem document")
    culprits = doc.get("culprits")
    ok = isinstance(culprits, list) and bool(culprits) and all(type(c) is int for c in culprits)
    ptype = doc.get("type")
    code = ""
    if isinstance(ptype, str) and ptype.startswith(NODE_PROBLEM_PREFIX):
        code = ptype[len(NODE_PROBLEM_PREFIX) :][:64]
        if not _CODE.fullmatch(code):
            code = ""
    return NodeFailure(
        node,
        "refused" if status < 500 else "error",
        f"{method} {path}: {status} {doc.get('title', '')}: {doc.get('detail', '')}",
        culprits=tuple(culprits) if ok and culprits else None,
        status=status,
        code=code,
    )


NODE_PROBLEM_PREFIX = "urn:tpwc:node:"
_CODE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


class Batcher:
    """Natural micro-batching of sign items to one node's batch endpoint.

    When no call to the node is in flight, an item is sent at once (alone: latency at low
    load does not grow). While a call is in flight, arriving items wait and all of them
    (up to ``max_batch``) go in the next call, so under load one HTTP request, one
    signature check of the coordinator and one durable commit on the node serve many
    signatures. Results come back per item (NODE_API.md v1.3): each waiter gets its own
    result object; a failure of the whole call (unreachable, timeout, garbage, refused)
    is raised to every waiter of that call. A waiter that gave up (cancelled) before its
    call left is not sent.
    """

    def __init__(self, caller: NodeCaller, node: NodeInfo, path: str, max_batch: int) -> None:
        self.caller = caller
        self.node = node
        self.path = path
        self.max_batch = max_batch
        self._pending: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]], Context]] = []
        self._sender: asyncio.Task[None] | None = None
        self.calls = 0  # batch calls made (statistics)
        self.items = 0

    async def submit(self, item: dict[str, Any]) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut, obs.trace_context()))
        if self._sender is None:
            self._sender = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                take = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                batch = [(i, f, c) for i, f, c in take if not f.done()]
                if batch:
                    await self._call(batch)
        finally:
            self._sender = None

    async def _call(self, batch: list[tuple[dict[str, Any], asyncio.Future[Any], Context]]) -> None:
        node, path = self.node, self.path
        try:
            doc = await self.caller.call(
                node,
                "POST",
                path,
                {"items": [i for i, _, _ in batch]},
                context=batch[0][2],  # the first item's trace; the others are linked
                links=tuple(c for _, _, c in batch[1:]),
            )
            results = doc.get("results")
            if not (
                isinstance(results, list)
                and len(results) == len(batch)
                and all(isinstance(r, dict) for r in results)
            ):
                raise NodeFailure(node, "garbage", f"POST {path}: results do not match items")
        except NodeFailure as e:
            for _, f, _ in batch:
                if not f.done():
                    f.set_exception(e)
            return
        except BaseException as e:  # cancelled (shutdown) or a bug: nobody waits forever
            for _, f, _ in batch:
                if not f.done():
                    f.set_exception(
                        e
                        if isinstance(e, Exception)
                        else NodeFailure(node, "unreachable", f"POST {path}: cancelled")
                    )
            raise
        self.calls += 1
        self.items += len(batch)
        for (_, f, _), r in zip(batch, results, strict=True):
            if not f.done():
                f.set_result(r)
