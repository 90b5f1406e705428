"""Observability of a real cluster (issue 11, item 6): a coordinator and three signer-node
processes (``tests/e2e/conftest.py`` ``running_cluster``), their JSON logs read from the
files the processes write, their ``/metrics`` parsed by ``prometheus_client.parser``.

- ``/metrics`` on the coordinator (auditor or admin credential) and on every node parses,
  and the sign histograms count exactly the signatures made (coordinator: one per
  signature; nodes: one per share released, ``t`` per signature);
- a request sent with a ``traceparent`` shows that trace id on the coordinator and on
  exactly the nodes that signed it, and nowhere else; a hostile ``traceparent`` is ignored;
- every log line of both services is one JSON object with the same required keys, no ANSI
  escape anywhere (uvicorn's own lines included), ``http_request_id`` for the HTTP id and
  ``sign_request_id`` for the sign request (no ambiguous ``request_id``).
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from custody.obs import CONTEXT_KEYS, REQUIRED_KEYS
from tests.e2e.conftest import Live, running_cluster

THRESHOLD = 2  # Live.key makes 2-of-3 keys


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with running_cluster(tmp_path_factory.mktemp("obs-cluster")) as lv:
        yield lv


def _api(lv: Live) -> str:
    return str(lv.doc["api_url"])


def _bearer(lv: Live, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {lv.doc['credentials'][role]}"}


def _samples(text: str) -> list[Any]:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def _value(samples: list[Any], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _coordinator_metrics(lv: Live) -> list[Any]:
    r = httpx.get(_api(lv) + "/metrics", headers=_bearer(lv, "auditor"), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return _samples(r.text)


def _node_metrics(lv: Live) -> dict[str, list[Any]]:
    out = {}
    for n in lv.doc["nodes"]:
        r = httpx.get(n["url"] + "/metrics", timeout=10)
        assert r.status_code == 200, r.text
        out[n["id"]] = _samples(r.text)
    return out


def _sign(lv: Live, scheme: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    key = lv.key(scheme)
    r = httpx.post(
        _api(lv) + "/v1/sign-requests",
        headers={**_bearer(lv, "requester"), "Idempotency-Key": secrets.token_hex(8)}
        | (headers or {}),
        json={"key_id": key.id, "kind": "raw", "message": secrets.token_hex(32)},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    assert doc["status"] == "signed", doc
    return doc


def _log_lines(lv: Live) -> dict[str, list[str]]:
    logs: Path = lv.cluster.data_dir / "logs"
    return {
        p.stem: p.read_text(encoding="utf-8", errors="replace").splitlines()
        for p in sorted(logs.glob("*.log"))
    }


def _records(lv: Live) -> dict[str, list[dict[str, Any]]]:
    return {name: [json.loads(x) for x in lines] for name, lines in _log_lines(lv).items()}


def test_metrics_need_a_reader_credential_on_the_coordinator(live: Live) -> None:
    url = _api(live) + "/metrics"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers=_bearer(live, "requester"), timeout=10).status_code == 403
    assert httpx.get(url, headers=_bearer(live, "approver"), timeout=10).status_code == 403
    for role in ("auditor", "admin"):
        r = httpx.get(url, headers=_bearer(live, role), timeout=10)
        assert r.status_code == 200
        names = {f.name for f in text_string_to_metric_families(r.text)}
        assert {
            "custody_sign_seconds",
            "custody_node_call_seconds",
            "custody_pool_items",
            "custody_http_requests",
            "custody_policy_decisions",
            "custody_sign_blamed",
        } <= names, names


def test_sign_histograms_count_exactly_the_signatures_made(live: Live) -> None:
    plan = {"ed25519": 3, "bip340": 2, "ecdsa-secp256k1": 2}
    for scheme in plan:
        live.key(scheme)  # keys (and their DKG) before the first scrape
    before = _coordinator_metrics(live)
    nodes_before = _node_metrics(live)
    signers: dict[str, int] = {}
    for scheme, n in plan.items():
        for _ in range(n):
            for party in _sign(live, scheme)["signers"]:
                signers[f"node-{party}"] = signers.get(f"node-{party}", 0) + 1
    after = _coordinator_metrics(live)
    nodes_after = _node_metrics(live)

    for scheme, n in plan.items():
        labels = {"scheme": scheme, "kind": "raw", "outcome": "signed"}
        made = _value(after, "custody_sign_seconds_count", **labels) - _value(
            before, "custody_sign_seconds_count", **labels
        )
        assert made == n, (scheme, made)
        assert _value(after, "custody_sign_seconds_sum", **labels) > _value(
            before, "custody_sign_seconds_sum", **labels
        )
        # a share from each of THRESHOLD nodes per signature, labelled by the node itself
        shares = sum(
            _value(nodes_after[nid], "custody_node_sign_seconds_count", scheme=scheme, kind="raw")
            - _value(
                nodes_before[nid], "custody_node_sign_seconds_count", scheme=scheme, kind="raw"
            )
            for nid in nodes_after
        )
        assert shares == n * THRESHOLD, (scheme, shares)
    assert _value(after, "custody_sign_seconds_count", outcome="failed") == _value(
        before, "custody_sign_seconds_count", outcome="failed"
    )
    for nid, count in signers.items():
        got = _value(nodes_after[nid], "custody_node_sign_seconds_count") - _value(
            nodes_before[nid], "custody_node_sign_seconds_count"
        )
        assert got == count, (nid, got, count)
    # per-round node latency, per node, as the coordinator measured it
    for nid in signers:
        assert _value(
            after, "custody_node_call_seconds_count", node=nid, route="/v1/frost/sign-batch"
        ) > _value(
            before, "custody_node_call_seconds_count", node=nid, route="/v1/frost/sign-batch"
        )
    assert _value(after, "custody_http_requests_total", route="/v1/sign-requests") - _value(
        before, "custody_http_requests_total", route="/v1/sign-requests"
    ) == sum(plan.values())
    assert _value(after, "custody_nodes", status="healthy") == 3
    # pool depths: gauges present on both sides
    assert {"frost_commitments", "presignatures"} <= {
        s.labels["pool"] for s in after if s.name == "custody_pool_items"
    }
    for samples in nodes_after.values():
        assert {"nonce", "presig"} <= {
            s.labels["kind"] for s in samples if s.name == "custody_node_pool_items"
        }


def test_metrics_carry_no_ids(live: Live) -> None:
    """No key, sign-request or credential id, and no token, is a label or a value."""
    doc = _sign(live, "ed25519")
    texts = [httpx.get(_api(live) + "/metrics", headers=_bearer(live, "auditor")).text]
    texts += [httpx.get(n["url"] + "/metrics").text for n in live.doc["nodes"]]
    for text in texts:
        assert doc["id"] not in text
        assert doc["key_id"] not in text
        assert "key_" not in text and "sr_" not in text and "cred_" not in text
        for token in live.doc["credentials"].values():
            assert token not in text


def _wait_for(lv: Live, trace_id: str, want: set[str]) -> dict[str, list[dict[str, Any]]]:
    deadline = time.monotonic() + 10
    while True:
        found = {
            name: [r for r in recs if r.get("trace_id") == trace_id]
            for name, recs in _records(lv).items()
        }
        # the request line is written once the answer has left: wait for it everywhere
        done = {n for n, rs in found.items() if any(r["event"] == "http.request" for r in rs)}
        if done >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.parametrize("scheme", ["ed25519", "ecdsa-secp256k1"])
def test_one_trace_id_on_the_coordinator_and_the_nodes_it_called(live: Live, scheme: str) -> None:
    live.key(scheme)
    trace_id = secrets.token_hex(16)
    parent = secrets.token_hex(8)
    doc = _sign(live, scheme, {"traceparent": f"00-{trace_id}-{parent}-01"})
    called = {f"node-{p}" for p in doc["signers"]}
    assert len(called) == THRESHOLD
    found = _wait_for(live, trace_id, {"coordinator", *called})
    with_trace = {name for name, recs in found.items() if recs}
    assert with_trace == {"coordinator", *called}, with_trace

    coord = found["coordinator"]
    http = [r for r in coord if r["event"] == "http.request"]
    assert [(r["method"], r["route"], r["status"]) for r in http] == [
        ("POST", "/v1/sign-requests", 201)
    ]
    assert http[0]["credential_id"].startswith("cred_")
    outcome = [r for r in coord if r["event"] == "sign.outcome"]
    assert len(outcome) == 1 and outcome[0]["sign_request_id"] == doc["id"]
    assert outcome[0]["outcome"] == "signed"
    # one server span per request, and the signing work logs under it (no second span
    # opened by FastAPI's own instrumentation)
    assert outcome[0]["span_id"] == http[0]["span_id"]
    for name in called:
        recs = found[name]
        assert all(r["service"] == "node" and r["node_id"] == name for r in recs)
        # the node's own span is a child of the coordinator's call, not of the client
        assert all(r["span_id"] != parent for r in recs)
        signed = [r for r in recs if r["event"].endswith(".signed")]
        assert [r["sign_request_id"] for r in signed] == [doc["id"]], recs
        spans = {r["http_request_id"]: r["span_id"] for r in recs if r["event"] == "http.request"}
        assert all(r["span_id"] == spans[r["http_request_id"]] for r in signed), recs
        routes = {r["route"] for r in recs if r["event"] == "http.request"}
        assert routes & {"/v1/frost/sign-batch", "/v1/ecdsa/sign-batch"}, routes


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # all-zero trace id
        "00-" + "A" * 32 + "-" + "1" * 16 + "-01",  # upper case: not W3C
        "00-" + "a" * 32 + "-" + "1" * 16 + "-01" + "-x" * 2000,  # 4 KB
        "ff-" + "a" * 32 + "-" + "1" * 16 + "-01",  # version ff is invalid
        "garbage",
    ],
)
def test_a_hostile_traceparent_is_ignored(live: Live, traceparent: str) -> None:
    """The request is served as usual under a fresh trace id; the header's is not logged."""
    rid = secrets.token_hex(8)
    r = httpx.get(_api(live) + "/health", headers={"traceparent": traceparent, "X-Request-Id": rid})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == rid
    r = httpx.get(
        _api(live) + "/v1/keys",
        headers={**_bearer(live, "auditor"), "traceparent": traceparent, "X-Request-Id": rid},
    )
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    while True:
        lines = [x for x in _records(live)["coordinator"] if x.get("http_request_id") == rid]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # (a successful GET /health is logged at debug only)
    assert [x["route"] for x in lines] == ["/v1/keys"], lines
    for x in lines:
        assert len(x["trace_id"]) == 32 and x["trace_id"] not in traceparent.lower()
        assert x["trace_id"] != "0" * 32


def test_a_hostile_request_id_is_replaced(live: Live) -> None:
    """``X-Request-Id`` is echoed only when it is 1..64 of ``[A-Za-z0-9._:-]``."""
    for bad in ("a" * 65, "a b", "<script>", ""):
        r = httpx.get(_api(live) + "/health", headers={"X-Request-Id": bad})
        assert r.status_code == 200
        assert r.headers["x-request-id"] != bad
        assert len(r.headers["x-request-id"]) == 32


def test_every_log_line_is_json_with_one_schema_and_no_ansi(live: Live) -> None:
    # make each service write refusals and odd paths too
    node = live.doc["nodes"][0]
    assert httpx.post(node["url"] + "/v1/frost/sign", json={}).status_code == 401
    assert httpx.get(_api(live) + "/v1/keys").status_code == 401
    assert httpx.get(_api(live) + "/no/such/%1b%5b31mred%1b%5b0m").status_code == 404
    _sign(live, "ed25519")
    host, port = node["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"NOT HTTP\x00\r\n\r\n")  # uvicorn.error warns about it
        s.recv(1000)
    time.sleep(0.3)
    lines = _log_lines(live)
    assert set(lines) == {"coordinator", "node-1", "node-2", "node-3"}
    for name, raw in lines.items():
        assert raw, name
        for line in raw:
            assert "\x1b" not in line and "\\u001b" not in line, line
            rec = json.loads(line)
            assert isinstance(rec, dict)
            for k in REQUIRED_KEYS:
                assert isinstance(rec.get(k), str) and rec[k], (name, k, line)
            assert rec["level"] in ("debug", "info", "warning", "error", "critical")
            assert rec["ts"].endswith("Z")
            assert "request_id" not in rec and "color_message" not in rec, line
            assert rec["service"] == ("coordinator" if name == "coordinator" else "node")
            if name != "coordinator":
                assert rec["node_id"] == name, line
            for k in ("trace_id", "span_id"):
                if k in rec:
                    assert int(rec[k], 16) > 0
            for token in live.doc["credentials"].values():
                assert token not in line
    recs = _records(live)
    # uvicorn's own lines come through the same handler (it used to print coloured text)
    assert any(r["logger"] == "uvicorn.error" for r in recs["coordinator"])
    bad = [r for r in recs["node-1"] if r["logger"] == "uvicorn.error"]
    assert any(r["event"] == "Invalid HTTP request received." for r in bad), bad
    # the node logged the unsigned call with its http id; the coordinator the odd path
    refused = [r for r in recs["node-1"] if r["event"] == "auth.refused"]
    assert refused and all(len(r["http_request_id"]) == 32 for r in refused)
    odd = [r for r in recs["coordinator"] if r.get("status") == 404]
    assert odd and all(r["route"] == "unmatched" for r in odd)
    assert any("red" in r["path"] for r in odd)
    # the ids fields both services use are the documented ones
    seen = {k for rs in recs.values() for r in rs for k in r}
    assert {"http_request_id", "sign_request_id", "credential_id", "trace_id"} <= seen
    assert set(CONTEXT_KEYS) <= seen | {"node_id"}


def test_a_secret_named_field_and_ansi_never_reach_a_line(tmp_path: Path) -> None:
    """A process that logs secret-looking fields and escapes (through structlog and through
    a stdlib logger with ``extra``) writes neither: the second line of defence."""
    code = (
        "import logging\n"
        "from custody import obs\n"
        "obs.configure_logging('node', node_id='node-9')\n"
        "kw = dict(pin='1234', db_key='k1', share_value='s1', seed='s2', token='t1',\n"
        "          private_key='p1', passphrase='p2', request_id='sr_1',\n"
        "          ok='\\x1b[31mred\\x1b[0m')\n"
        "obs.get_logger('x').warning('ev', **kw)\n"
        "logging.getLogger('y').warning('std \\x1b[1mbold', extra=kw)\n"
    )
    r = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    for line in lines:
        assert "\x1b" not in line and "\\u001b" not in line
        for secret in ("1234", "k1", "s1", "s2", "t1", "p1", "p2"):
            assert f'"{secret}"' not in line, line
        rec = json.loads(line)
        assert rec["service"] == "node" and rec["node_id"] == "node-9"
        assert rec["ok"] == "red" and rec["sign_request_id"] == "sr_1"
    assert [json.loads(x)["event"] for x in lines] == ["ev", "std bold"]
