"""A signer node's observability (issue 11, item 6), against real node processes
(``python -m signer_nodes run``, SoftHSM2, SQLCipher) driven by the test coordinator:

- ``GET /metrics`` answers without a coordinator signature (optionally behind the scrape
  token ``CUSTODY_METRICS_TOKEN``), parses with ``prometheus_client.parser``, and its sign
  histogram counts exactly the shares the node released (refusals counted apart); the
  nonce pool gauge follows what was added and used; no key id or nonce id appears;
- a signed request with a ``traceparent`` logs that trace id on the node; a hostile one
  is ignored and the request served;
- every line the node writes is one JSON object of the shared schema, without ANSI;
- spans leave the node by OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
"""

from __future__ import annotations

import http.server
import json
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from custody.nodeauth import sign_headers
from custody.obs import REQUIRED_KEYS
from tests.nodes.conftest import (
    Coordinator,
    HarnessKeys,
    NodeProc,
    NodeRefused,
    NodeTemplate,
    Officers,
    cloned_cluster,
    public_package,
    stop_cluster,
)

KEY = "k-ed25519"  # a raw-signing key of the test genesis (tests/nodes/conftest.py)
TOKEN = "scrape-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def coord(
    tmp_path_factory: pytest.TempPathFactory,
    harness_keys: HarnessKeys,
    node_template: NodeTemplate,
) -> Iterator[Coordinator]:
    """Three node processes (a copy of the session's provisioned nodes); node-3 serves
    /metrics only with the scrape token."""
    c = cloned_cluster(
        tmp_path_factory.mktemp("metrics-nodes"),
        node_template,
        Officers.with_keys(harness_keys.officers),
        env=lambda n: {"CUSTODY_METRICS_TOKEN": TOKEN} if n.party_id == 3 else None,
    )
    try:
        yield c
    finally:
        stop_cluster(c)


def _scrape(node: NodeProc, token: str | None = None) -> list[Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(node.url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return [s for fam in text_string_to_metric_families(r.text) for s in fam.samples]


def _value(samples: list[Any], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _records(node: NodeProc) -> list[dict[str, Any]]:
    assert node.log_path is not None
    return [json.loads(x) for x in node.log_path.read_text().splitlines()]


def test_metrics_need_no_coordinator_signature_but_the_scrape_token_when_set(
    coord: Coordinator,
) -> None:
    n1, n3 = coord.nodes[1], coord.nodes[3]
    names = {f.name for f in text_string_to_metric_families(httpx.get(n1.url + "/metrics").text)}
    assert {
        "custody_node_sign_seconds",
        "custody_node_sign_refused",
        "custody_node_pool_items",
        "custody_http_requests",
        "custody_http_request_seconds",
    } <= names, names
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.get(n3.url + "/metrics", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == "application/problem+json"
    assert _scrape(n3, TOKEN)
    # every other route still needs the coordinator's signature
    assert httpx.get(n1.url + "/v1/status").status_code == 401
    assert httpx.post(n1.url + "/metrics").status_code == 401


def test_the_sign_histogram_counts_exactly_the_shares_released(coord: Coordinator) -> None:
    res = coord.dkg("ed25519", KEY, 2, [1, 2, 3])
    public = public_package(res, "ed25519")
    signers = (1, 2)
    before = {p: _scrape(n, TOKEN if p == 3 else None) for p, n in coord.nodes.items()}
    nonces = {p: coord.commitments(p, KEY, 5) for p in signers}
    mid = {p: _scrape(coord.nodes[p]) for p in signers}
    for p in signers:  # the pool gauge saw the 5 new nonces
        assert (
            _value(mid[p], "custody_node_pool_items", kind="nonce")
            - _value(before[p], "custody_node_pool_items", kind="nonce")
            == 5
        )
    made = 3
    for i in range(made):
        req = {"id": f"sr_m{i}", "key_id": KEY, "kind": "raw", "message": secrets.token_hex(16)}
        sig = coord.frost_sign(
            "ed25519", KEY, signers, req, public, {p: nonces[p][i] for p in signers}
        )
        assert len(sig) == 64
    # a nonce used again is refused and counted as a refusal, not as a share
    with pytest.raises(NodeRefused) as refused:
        req = {"id": "sr_again", "key_id": KEY, "kind": "raw", "message": "00" * 16}
        coord.frost_sign("ed25519", KEY, signers, req, public, {p: nonces[p][0] for p in signers})
    assert refused.value.status == 409
    after = {p: _scrape(n, TOKEN if p == 3 else None) for p, n in coord.nodes.items()}
    for p in signers:
        labels = {"scheme": "ed25519", "kind": "raw"}
        got = _value(after[p], "custody_node_sign_seconds_count", **labels) - _value(
            before[p], "custody_node_sign_seconds_count", **labels
        )
        assert got == made, (p, got)
        assert _value(after[p], "custody_node_sign_seconds_sum", **labels) > _value(
            before[p], "custody_node_sign_seconds_sum", **labels
        )
        assert (
            _value(after[p], "custody_node_pool_items", kind="nonce")
            == _value(mid[p], "custody_node_pool_items", kind="nonce") - made
        )
        assert (
            _value(after[p], "custody_http_requests_total", route="/v1/frost/sign")
            - _value(before[p], "custody_http_requests_total", route="/v1/frost/sign")
            >= made
        )
    # only the first signer was asked again (frost_sign stops at the first refusal)
    assert (
        _value(after[1], "custody_node_sign_refused_total", code="nonce-used")
        - _value(before[1], "custody_node_sign_refused_total", code="nonce-used")
        == 1
    )
    assert _value(after[3], "custody_node_sign_seconds_count") == _value(
        before[3], "custody_node_sign_seconds_count"
    )
    # no key id, nonce id or request id is a label or a value
    for p, n in coord.nodes.items():
        text = httpx.get(
            n.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"} if p == 3 else {}
        ).text
        assert KEY not in text and "sr_m" not in text
        for comm in nonces.get(p, []):
            assert comm["nonce_id"] not in text


def _signed_get(coord: Coordinator, node: NodeProc, path: str, extra: dict[str, str]) -> int:
    headers = {**sign_headers(coord.key, "GET", path, b"", recipient=node.node_id), **extra}
    return httpx.get(node.url + path, headers=headers, timeout=10).status_code


def _lines_with(node: NodeProc, key: str, value: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        found = [r for r in _records(node) if r.get(key) == value]
        # the request line is written once the answer has left: wait for it
        if any(r["event"] == "http.request" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_traceparent_reaches_the_node_logs_and_a_hostile_one_is_ignored(
    coord: Coordinator,
) -> None:
    node = coord.nodes[2]
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    tp = f"00-{trace_id}-{parent}-01"
    assert _signed_get(coord, node, "/v1/status", {"traceparent": tp}) == 200
    lines = _lines_with(node, "trace_id", trace_id)
    assert [(r["event"], r["route"], r["status"]) for r in lines] == [
        ("http.request", "/v1/status", 200)
    ]
    assert lines[0]["node_id"] == "node-2" and lines[0]["span_id"] != parent
    # a refused (unsigned) call is logged under its trace too, with the node's http id
    tid2 = secrets.token_hex(16)
    r = httpx.get(node.url + "/v1/status", headers={"traceparent": f"00-{tid2}-{parent}-01"})
    assert r.status_code == 401
    refused = _lines_with(node, "trace_id", tid2)
    assert {x["event"] for x in refused} == {"auth.refused", "http.request"}
    assert len({x["http_request_id"] for x in refused}) == 1
    assert refused[0]["http_request_id"] == r.headers["x-request-id"]
    hostile = [
        "00-" + trace_id + "-" + parent + "-01" + ",x" * 3000,
        "00-" + "0" * 32 + "-" + parent + "-01",
        "00-" + trace_id.upper() + "-" + parent + "-01",
        "zz",
    ]
    for bad in hostile:
        rid = secrets.token_hex(8)
        status = _signed_get(coord, node, "/v1/status", {"traceparent": bad, "X-Request-Id": rid})
        assert status == 200
        (line,) = _lines_with(node, "http_request_id", rid)
        assert len(line["trace_id"]) == 32
        assert line["trace_id"] not in (trace_id, "0" * 32)


def test_every_node_line_is_json_of_the_one_schema(coord: Coordinator) -> None:
    for node in coord.nodes.values():
        assert node.log_path is not None
        raw = node.log_path.read_text().splitlines()
        assert raw
        for line in raw:
            assert "\x1b" not in line and "\\u001b" not in line, line
            rec = json.loads(line)
            for k in REQUIRED_KEYS:
                assert isinstance(rec.get(k), str) and rec[k], (k, line)
            assert rec["service"] == "node"
            assert rec["node_id"] == node.node_id, line
            assert "request_id" not in rec, line
        events = {json.loads(x)["event"] for x in raw}
        assert {"node.serve", "http.request"} <= events


class _Collector(http.server.BaseHTTPRequestHandler):
    """A loopback OTLP/HTTP receiver: keeps every ``POST /v1/traces`` body."""

    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        n = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(n)
        if self.path == "/v1/traces":
            type(self).bodies.append(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def test_spans_are_exported_by_otlp_only_when_configured(coord: Coordinator) -> None:
    """Runs last in this module: node-2 restarts with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set
    to a loopback receiver; the server span of a traced call arrives there, with the
    caller's trace id, the node as its resource and public attributes only."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    node = coord.nodes[2]
    try:
        node.stop()
        node.start(
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
        )
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        tp = f"00-{trace_id}-{parent}-01"
        assert _signed_get(coord, node, "/v1/status", {"traceparent": tp}) == 200
        spans: list[Any] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not spans:
            for body in list(_Collector.bodies):
                req = ExportTraceServiceRequest.FromString(body)
                for rs in req.resource_spans:
                    res = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for sp in ss.spans:
                            if sp.trace_id.hex() == trace_id:
                                spans.append((res, sp))
            time.sleep(0.2)
        assert len(spans) == 1, spans
        res, sp = spans[0]
        assert res["service.name"] == "tpwc-node"
        assert res["service.instance.id"] == "node-2"
        assert sp.name == "GET /v1/status"
        assert sp.parent_span_id.hex() == parent
        attrs = {a.key for a in sp.attributes}
        assert attrs == {"http.request.method", "http.route", "http.response.status_code"}
    finally:
        server.shutdown()
