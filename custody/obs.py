"""Observability both services share: ONE log schema, W3C trace context, metrics plumbing.

**Logs** (:func:`configure_logging`): structlog renders every record, ours and third-party
(uvicorn, SQLAlchemy, ...) alike, as one JSON object per line on stderr; uvicorn is run
with ``log_config=None`` (:mod:`custody.serving`) so its loggers reach the same handler and
never print their own coloured text. Every line has :data:`REQUIRED_KEYS`::

    ts       ISO-8601 UTC time                       level   debug|info|warning|error|critical
    event    what happened (a short dotted name)     service coordinator|node
    logger   the stdlib logger name

and, where they apply: ``node_id`` (every node line), ``http_request_id`` (the id of the
HTTP request being served, echoed as ``X-Request-Id``), ``sign_request_id`` (the sign
request, ``sr_...``), ``credential_id`` (the authenticated API credential), ``trace_id``
and ``span_id`` (hex, the current OpenTelemetry span). A field named ``request_id`` by
older callers always meant the sign request and is written as ``sign_request_id``. Fields
whose name suggests a secret (:data:`SECRET_WORDS`) are dropped and ANSI escapes are
stripped from every value, as a second line of defence: callers pass public values only.

**Traces** (:func:`configure_tracing`, :class:`HttpObserve`, :func:`inject_headers`): an
incoming ``traceparent`` (bounded and validated, else ignored) is the parent of the
request's server span; node calls carry the current span's ``traceparent``. Spans are
exported only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set
(OTLP over HTTP/protobuf); otherwise ids are made and logged but nothing leaves the
process.

**Metrics**: the process-wide prometheus-client registry; :class:`HttpObserve` counts every
answer by method, route template and status (never by raw path or id);
:func:`metrics_body` renders the registry. Labels never carry ids of requests, keys or
credentials.
"""

from __future__ import annotations

import contextlib
import hmac
import inspect
import json
import logging
import os
import random
import re
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

__all__ = [
    "REQUIRED_KEYS",
    "CONTEXT_KEYS",
    "SECRET_WORDS",
    "SERVICES",
    "configure_logging",
    "configure_tracing",
    "bind_static",
    "get_logger",
    "HttpObserve",
    "extract_context",
    "client_span",
    "span",
    "fastapi_options",
    "inject_headers",
    "trace_context",
    "metrics_body",
    "METRICS_CONTENT_TYPE",
    "scrape_token_ok",
    "count_http",
    "LATENCY_BUCKETS",
]

SERVICES = ("coordinator", "node", "payments")
REQUIRED_KEYS = ("ts", "level", "event", "service", "logger")
CONTEXT_KEYS = (
    "node_id",
    "http_request_id",
    "sign_request_id",
    "credential_id",
    "trace_id",
    "span_id",
)
#: A field whose name holds one of these is never written (the node's old rule, now both).
SECRET_WORDS = (
    "secret",
    "share_value",
    "seed",
    "pin",
    "private",
    "nonces",
    "db_key",
    "password",
    "passphrase",
    "token",
    "authorization",
)
_KEEP = frozenset((*REQUIRED_KEYS, *CONTEXT_KEYS, "exception"))
_ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])?")
_DROP = frozenset(("color_message", "_record", "_from_structlog", "taskName"))

#: Latency buckets (seconds) for every histogram here: 1 ms .. 30 s.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_static: dict[str, Any] = {"service": "unknown"}


# -- logs -----------------------------------------------------------------------------------
def bind_static(**fields: Any) -> None:
    """Fields written on every line of this process from now on (``node_id`` once known)."""
    _static.update({k: v for k, v in fields.items() if v is not None})


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _ANSI.sub("", value) if "\x1b" in value else value
    if isinstance(value, dict):
        return {str(_clean(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _finish(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Order the schema keys first; add static and trace fields; drop and scrub."""
    if "request_id" in event:  # older callers: always the sign request
        event.setdefault("sign_request_id", event.pop("request_id"))
    ev = event.pop("event", None)
    out: dict[str, Any] = {
        "ts": event.pop("ts", None),
        "level": event.pop("level", "info"),
        "event": ev if isinstance(ev, str) else str(ev),
        **_static,
        "logger": event.pop("logger", None) or "",
    }
    span = trace.get_current_span().get_span_context()
    if span.is_valid and "trace_id" not in event:
        out["trace_id"] = format(span.trace_id, "032x")
        out["span_id"] = format(span.span_id, "016x")
    for k, v in event.items():
        if k in _DROP or k in out or _secret_name(k):
            continue
        out[k] = v
    return {k: _clean(v) if isinstance(v, str | dict | list | tuple) else v for k, v in out.items()}


_names: dict[str, bool] = {}


def _secret_name(key: str) -> bool:
    """Whether a field name suggests a secret (cached: field names come from code)."""
    hit = _names.get(key)
    if hit is None:
        low = key.lower()
        hit = key not in _KEEP and any(w in low for w in SECRET_WORDS)
        if len(_names) < 4096:
            _names[key] = hit
    return hit


class _ObsHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler :func:`configure_logging` installs on the root logger."""


_handler: _ObsHandler | None = None


class _Line:
    """The logger under every structlog logger: writes the rendered line to the one
    handler's stream under that handler's lock (no second ``LogRecord``, no formatter
    pass: a line costs a fraction of the stdlib route). Before :func:`configure_logging`
    (in-process tests) the line goes to the stdlib logger ``name`` instead."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._std = logging.getLogger(name)

    def enabled(self, level: int) -> bool:
        return self._std.isEnabledFor(level)

    def _emit(self, level: int, line: str) -> None:
        h = _handler
        if h is None:
            self._std.log(level, line)
            return
        with h.lock:  # type: ignore[union-attr]
            h.stream.write(line + "\n")
            h.stream.flush()

    def debug(self, line: str) -> None:
        self._emit(logging.DEBUG, line)

    def info(self, line: str) -> None:
        self._emit(logging.INFO, line)

    def warning(self, line: str) -> None:
        self._emit(logging.WARNING, line)

    def error(self, line: str) -> None:
        self._emit(logging.ERROR, line)

    def critical(self, line: str) -> None:
        self._emit(logging.CRITICAL, line)

    exception = error
    msg = info


class _Bound(structlog.BoundLoggerBase):
    """``debug/info/warning/error/critical/exception/log``, filtered by the stdlib level of
    the logger's name (so ``CUSTODY_LOG_LEVEL`` and ``logging`` settings apply)."""

    _logger: _Line

    def _at(self, level: int, name: str, event: str, kw: dict[str, Any]) -> None:
        if self._logger.enabled(level):
            self._proxy_to_logger(name, event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        self._at(logging.DEBUG, "debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._at(logging.INFO, "info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._at(logging.WARNING, "warning", event, kw)

    warn = warning

    def error(self, event: str, **kw: Any) -> None:
        self._at(logging.ERROR, "error", event, kw)

    def critical(self, event: str, **kw: Any) -> None:
        self._at(logging.CRITICAL, "critical", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        kw.setdefault("exc_info", True)
        self._at(logging.ERROR, "error", event, kw)

    def log(self, level: int, event: str, **kw: Any) -> None:
        name = logging.getLevelName(level).lower()
        if name not in ("debug", "info", "warning", "error", "critical"):
            name = "info"
        self._at(level, name, event, kw)


def _logger_name(logger: Any, _: str, event: MutableMapping[str, Any]) -> Any:
    event.setdefault("logger", getattr(logger, "name", ""))
    return event


_TAIL: list[Any] = [
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    structlog.processors.format_exc_info,
    _finish,
]

structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _logger_name,
        *_TAIL,
        structlog.processors.JSONRenderer(serializer=lambda o, **_: _dumps(o)),
    ],
    logger_factory=_Line,
    wrapper_class=_Bound,
    cache_logger_on_first_use=True,
)


def _formatter() -> logging.Formatter:
    """How records of stdlib loggers (uvicorn, ``logging.getLogger(...)`` with ``extra``)
    become lines of the same schema."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_TAIL,
            structlog.processors.JSONRenderer(serializer=lambda o, **_: _dumps(o)),
        ],
    )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str, ensure_ascii=True, separators=(",", ":"))


def configure_logging(
    service: str, level: str | int | None = None, *, node_id: str | None = None
) -> None:
    """JSON lines on stderr for every logger of this process (idempotent).

    ``level`` defaults to ``$CUSTODY_LOG_LEVEL`` (else INFO)."""
    global _handler
    if service not in SERVICES:
        raise ValueError(f"service must be one of {SERVICES}")
    bind_static(service=service, node_id=node_id)
    if level is None:
        level = os.environ.get("CUSTODY_LOG_LEVEL", "INFO")
    if isinstance(level, str):
        level = level.upper()
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _ObsHandler)]
    handler = _ObsHandler(sys.stderr)
    handler.setFormatter(_formatter())
    root.addHandler(handler)
    root.setLevel(level)
    _handler = handler
    # Every logger reaches the one handler: none keeps a handler or formatter of its own.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "signer_nodes"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # HttpObserve logs each request
    for noisy in ("httpx", "httpcore", "aiohttp", "urllib3", "opentelemetry"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    """A structlog logger named ``name`` (levels as the stdlib logger ``name``'s)."""
    return structlog.get_logger(name)


# -- traces ---------------------------------------------------------------------------------
_PROPAGATOR = TraceContextTextMapPropagator()
_tracing_lock = threading.Lock()
_tracing_done = False
TRACEPARENT_MAX = 256  # version 00 is 55 characters; later versions may append fields
TRACESTATE_MAX = 512  # W3C trace context: propagate at least 512 characters


def configure_tracing(service: str, *, node_id: str | None = None) -> bool:
    """Start tracing once; returns True when spans are exported.

    With ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set, the
    OpenTelemetry SDK's tracer provider is installed with a batched OTLP/HTTP (protobuf)
    exporter, which reads its other ``OTEL_EXPORTER_OTLP_*`` settings itself. Otherwise
    no SDK provider is installed: :func:`span` makes non-recording spans that only carry
    ids (a parent's trace id, a fresh span id) for the logs and for ``traceparent``, at a
    fraction of the SDK's cost per span, and nothing leaves the process."""
    global _tracing_done, _exporting
    exporting = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    with _tracing_lock:
        if _tracing_done:
            return _exporting
        _tracing_done = True
        if not exporting:
            return False
        attrs: dict[str, str] = {"service.name": f"tpwc-{service}"}
        if node_id:
            attrs["service.instance.id"] = node_id
        provider = TracerProvider(resource=Resource.create(attrs))
        # Only a process that exports imports the exporter (and its protobuf stack).
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _exporting = True
    return True


_exporting = False
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)


@contextlib.contextmanager
def _id_span(parent: otel_context.Context | None) -> Iterator[trace.Span]:
    """A non-recording span current for the block: the parent's trace id (or a new one),
    a new span id; what the logs and ``traceparent`` need when nothing is exported."""
    up = trace.get_current_span(parent).get_span_context()
    trace_id = up.trace_id if up.is_valid else (random.getrandbits(128) or 1)
    ctx = trace.SpanContext(
        trace_id,
        random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=up.trace_flags if up.is_valid else _SAMPLED,
        trace_state=up.trace_state if up.is_valid else None,
    )
    s = trace.NonRecordingSpan(ctx)
    token = otel_context.attach(trace.set_span_in_context(s, parent))
    try:
        yield s
    finally:
        otel_context.detach(token)


def span(
    name: str,
    kind: trace.SpanKind,
    parent: otel_context.Context | None = None,
    links: Iterable[otel_context.Context] = (),
) -> AbstractContextManager[trace.Span]:
    """A span current for the block, child of ``parent`` (default: the current context):
    recorded by the SDK when exporting, else ids only (:func:`configure_tracing`)."""
    if not _exporting:
        return _id_span(parent)
    linked = [trace.get_current_span(c).get_span_context() for c in links]
    return trace.get_tracer("tpwc").start_as_current_span(
        name,
        context=parent,
        kind=kind,
        links=[trace.Link(sc) for sc in linked if sc.is_valid][:64],
        record_exception=False,
    )


def _valid_header(value: str, limit: int) -> bool:
    return 0 < len(value) <= limit and value.isascii() and value.isprintable()


def extract_context(headers: Iterable[tuple[bytes, bytes]]) -> otel_context.Context | None:
    """The remote parent named by a request's ``traceparent``, or None.

    Hostile input is bounded: a header longer than :data:`TRACEPARENT_MAX`, not printable
    ASCII, or sent twice is ignored (a new trace starts); the W3C propagator then checks
    its form (version, 32/16 hex ids, not all zero). A ``tracestate`` longer than
    :data:`TRACESTATE_MAX` is dropped. Neither header is covered by the coordinator's
    request signature (:mod:`custody.nodeauth`): they only correlate logs and spans."""
    parent: list[str] = []
    state: list[str] = []
    for k, v in headers:
        if k == b"traceparent":
            parent.append(v.decode("latin-1"))
        elif k == b"tracestate":
            state.append(v.decode("latin-1"))
    if len(parent) != 1 or not _valid_header(parent[0], TRACEPARENT_MAX):
        return None
    carrier = {"traceparent": parent[0]}
    if len(state) == 1 and _valid_header(state[0], TRACESTATE_MAX):
        carrier["tracestate"] = state[0]
    ctx = _PROPAGATOR.extract(carrier)
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def inject_headers(headers: dict[str, str], context: otel_context.Context | None = None) -> None:
    """Add ``traceparent`` (and ``tracestate``) of the current span (or ``context``)."""
    _PROPAGATOR.inject(headers, context=context)


def trace_context() -> otel_context.Context:
    """The current context (to hand to work that runs later, e.g. a batched call)."""
    return otel_context.get_current()


def client_span(
    name: str,
    context: otel_context.Context | None = None,
    links: Iterable[otel_context.Context] = (),
) -> AbstractContextManager[trace.Span]:
    """A client span under ``context`` (default: the current one), linked to the spans
    current in ``links`` (e.g. the other items of a batch call)."""
    return span(name, trace.SpanKind.CLIENT, context, links)


# -- metrics --------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "custody_http_requests",
    "HTTP answers by method, route template and status",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "custody_http_request_seconds",
    "HTTP request latency by method and route template",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def count_http(method: str, route: str, status: int, seconds: float | None = None) -> None:
    """Count one answer (``route`` is a template or a fixed word, never a raw path)."""
    m = method if method in _METHODS else "OTHER"
    HTTP_REQUESTS.labels(m, route, str(status)).inc()
    if seconds is not None:
        HTTP_SECONDS.labels(m, route).observe(seconds)


def metrics_body() -> bytes:
    """The Prometheus text exposition of this process's registry."""
    return generate_latest(REGISTRY)


def scrape_token_ok(headers: Iterable[tuple[bytes, bytes]], token: str | None) -> bool:
    """True when no scrape token is configured, or ``Authorization: Bearer <token>``."""
    if not token:
        return True
    for k, v in headers:
        if k == b"authorization":
            return hmac.compare_digest(v, b"Bearer " + token.encode())
    return False


# -- the HTTP middleware --------------------------------------------------------------------
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_RID = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")
QUIET_PATHS = frozenset(("/health", "/metrics"))


class HttpObserve:
    """Pure ASGI middleware: per request an ``http_request_id`` (a well-formed
    ``X-Request-Id`` from the client, else random; echoed back), a server span whose
    parent is the client's ``traceparent``, the ids bound into every log line written
    while serving it, one ``http.request`` log line (``GET /health`` and ``/metrics`` that
    succeed at debug level) and the HTTP metrics by route template.

    ``routes`` (the app's routes) name the template of a path that the router did not
    leave in the scope; a path no route matches counts as ``unmatched``."""

    def __init__(self, app: Any, routes: Iterable[Any] = ()) -> None:
        self.app = app
        self.routes = routes  # the app's live list: routes added later are seen
        self._seen: dict[tuple[str, str], str] = {}  # (method, path) -> route template
        self.log = get_logger("custody.http")

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        key = (scope["method"], scope["path"])
        hit = self._seen.get(key)
        if hit is not None:
            return hit
        found = "unmatched"
        try:
            for r in self.routes:
                match, _ = r.matches(scope)
                if match.name == "FULL":
                    found = str(r.path)
                    break
                if match.name == "PARTIAL" and found == "unmatched":
                    found = str(r.path)
        except Exception:  # noqa: BLE001 - a label must never fail a request
            return "unmatched"
        if len(self._seen) >= 1024:  # paths with ids: keep the cache bounded
            self._seen.clear()
        self._seen[key] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        rid = None
        for k, v in headers:
            if k == b"x-request-id" and _RID.fullmatch(v):
                rid = v.decode("ascii")
        rid = rid or secrets.token_hex(16)
        method = scope["method"]
        start = time.perf_counter()
        status = 0

        async def _send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", rid.encode("ascii")),
                ]
            await send(message)

        parent = extract_context(headers)
        with (
            span(method, trace.SpanKind.SERVER, parent) as current,
            structlog.contextvars.bound_contextvars(http_request_id=rid),
        ):
            try:
                await self.app(scope, receive, _send)
            finally:
                answered = status or 500
                route = self._route(scope)
                took = time.perf_counter() - start
                count_http(method, route, answered, took)
                if current.is_recording():
                    current.update_name(f"{method} {route}")
                    current.set_attribute("http.request.method", method)
                    current.set_attribute("http.route", route)
                    current.set_attribute("http.response.status_code", answered)
                quiet = scope["path"] in QUIET_PATHS and answered < 400
                self.log.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "http.request",
                    method=method,
                    path=scope["path"],
                    route=route,
                    status=answered,
                    ms=round(took * 1000, 2),
                )


#: FastAPI's own OpenTelemetry instrumentation (newer FastAPI versions) stays off: it would
#: open a second server span from the unbounded ``traceparent``, spans per dependency and
#: endpoint, and OTel log records with exception messages. :class:`HttpObserve` is the
#: one place a request's span starts.
FASTAPI_TELEMETRY_OFF = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def fastapi_options() -> dict[str, Any]:
    """Keyword arguments for ``FastAPI(...)``: its native telemetry off where it has one."""
    from fastapi import FastAPI  # the services' web stack; custody itself does not need it

    params = inspect.signature(FastAPI.__init__).parameters
    return {"telemetry": dict(FASTAPI_TELEMETRY_OFF)} if "telemetry" in params else {}
