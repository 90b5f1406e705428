"""HTTP semantics (issue 11, item 2): each defect it lists, on the real coordinator app,
and where signing matters on a real 3-node cluster with nodes stopped and restarted.

- a failed signing answers a problem with its own status (502 ``signing-failed``, 403
  ``refused-by-node``) embedding the request, and releases its Idempotency-Key: the same
  key makes a new attempt (it used to replay a ``201`` failure forever); an expired request
  releases its key too;
- 201 and 202 carry ``Location``, 202 ``Retry-After``;
- idempotency records expire after ``idempotency_ttl`` (swept by the coordinator);
- every filter of ``GET /v1/keys`` works (``?scheme=bip340`` used to be ignored);
- unknown members are a 422 everywhere (a sign request used to keep and drop them);
- keys have a label and metadata, set at creation, changed by ``PATCH``, filterable and
  shown by ``custody keys show/list``; ``GET`` returns a request's payload.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from api import idempotency
from api.db import AuditEntry, IdempotencyRecord, SignRequest
from api.routes.sign_requests import failed_answer
from api.settings import Settings
from custody.cli import app as cli_app
from tests.api.conftest import Api, make_api
from tests.api.test_auth_problems import assert_problem
from tests.e2e.conftest import Live, running_cluster

SR = "/v1/sign-requests"


def post_raw(api: Api, key_id: str, idem: str, message: str = "11" * 32):  # noqa: ANN201
    body = {"key_id": key_id, "kind": "raw", "message": message}
    return api.client.post(SR, headers=api.h("requester", idem), json=body)


def idem_rows(api: Api, key: str) -> list[IdempotencyRecord]:
    with api.app.state.db.session() as s:
        return list(s.scalars(select(IdempotencyRecord).where(IdempotencyRecord.key == key)))


# -- a failed signing ------------------------------------------------------------------------
def test_failed_signing_is_a_problem_and_releases_its_key(dev_api: Api) -> None:
    kid = dev_api.add_key("bip340")  # no nodes run here: signing fails
    first = post_raw(dev_api, kid, "fail-1")
    doc = assert_problem(first, 502, "signing-failed")
    sr = doc["sign_request"]
    assert sr["status"] == "failed" and sr["signature"] is None
    assert "healthy nodes" in doc["detail"] == sr["error"]["detail"]
    assert first.headers["Location"] == doc["instance"] == f"{SR}/{sr['id']}"
    assert idem_rows(dev_api, "fail-1") == []  # nothing kept under the key
    # the same key is a new attempt, not a replay of the failure
    again = post_raw(dev_api, kid, "fail-1")
    doc2 = assert_problem(again, 502, "signing-failed")
    assert "idempotent-replayed" not in again.headers
    assert doc2["sign_request"]["id"] != sr["id"]
    got = dev_api.client.get(first.headers["Location"], headers=dev_api.h("auditor"))
    assert got.status_code == 200 and got.json()["status"] == "failed"


def test_failure_after_a_202_releases_the_key(tmp_path: Path) -> None:
    for api in make_api(tmp_path, raw=True, sync_wait=0.0):  # answer before the outcome
        kid = api.add_key("ed25519")
        r = post_raw(api, kid, "late")
        assert r.status_code in (202, 502), r.text
        rid = r.json()["id"] if r.status_code == 202 else r.json()["sign_request"]["id"]
        deadline = time.monotonic() + 10
        while api.client.get(f"{SR}/{rid}", headers=api.h("auditor")).json()["status"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while idem_rows(api, "late"):  # the POST's own 202 answer may land just after
            assert time.monotonic() < deadline, "the failed request kept its key"
            time.sleep(0.05)
        retry = post_raw(api, kid, "late")
        assert "idempotent-replayed" not in retry.headers
        new = retry.json()["id"] if retry.status_code == 202 else retry.json()["sign_request"]["id"]
        assert new != rid


def test_refused_by_node_answers_403() -> None:
    """The stored problem's own status is the answer's: a node's policy refusal is a 403."""
    doc = {
        "id": "sr_x",
        "status": "failed",
        "error": {"type": "urn:tpwc:problem:refused-by-node", "title": "Refused", "status": 403},
    }
    status, body = failed_answer(doc)
    assert status == 403 and body["type"].endswith("refused-by-node")
    assert body["sign_request"] == doc and body["instance"] == f"{SR}/sr_x"
    status, body = failed_answer({"id": "sr_y", "status": "failed", "error": None})
    assert status == 502 and body["type"].endswith("signing-failed")


def test_expired_request_releases_its_key(api: Api) -> None:
    kid = api.add_key()
    first = post_raw(api, kid, "exp-1")
    assert first.status_code == 202
    rid = first.json()["id"]
    assert post_raw(api, kid, "exp-1").headers["idempotent-replayed"] == "true"
    with api.app.state.db.session() as s:
        row = s.scalar(select(SignRequest).where(SignRequest.id == rid))
        assert row is not None
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    api.app.state.coordinator.expire_requests()
    got = api.client.get(f"{SR}/{rid}", headers=api.h("auditor")).json()
    assert got["status"] == "expired"
    again = post_raw(api, kid, "exp-1")
    assert again.status_code == 202 and "idempotent-replayed" not in again.headers
    assert again.json()["id"] != rid


# -- 202 / 201 headers ----------------------------------------------------------------------
def test_accepted_carries_location_and_retry_after(api: Api) -> None:
    kid = api.add_key("ed25519")
    body = {"key_id": kid, "kind": "payment", "payload": {"amount": "10.00", "to": "acct-1"}}
    r = api.client.post(SR, headers=api.h("requester", "loc-1"), json=body)
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    assert r.headers["Location"] == f"{SR}/{rid}"
    assert int(r.headers["Retry-After"]) >= 1
    got = api.client.get(r.headers["Location"], headers=api.h("auditor"))
    assert got.status_code == 200 and got.json()["id"] == rid
    assert got.json()["payload"] == body["payload"]  # GET returns the request's payload
    replay = api.client.post(SR, headers=api.h("requester", "loc-1"), json=body)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["Location"] == r.headers["Location"]
    assert replay.headers["Retry-After"] == r.headers["Retry-After"]


def test_retry_after_is_a_setting(tmp_path: Path) -> None:
    for api in make_api(tmp_path, retry_after=7.0):
        r = post_raw(api, api.add_key(), "ra")
        assert r.status_code == 202 and r.headers["Retry-After"] == "7"


# -- idempotency TTL ------------------------------------------------------------------------
def test_idempotency_records_expire_after_the_ttl(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CUSTODY_IDEMPOTENCY_TTL", "3600")
    assert Settings.from_env(tmp_path).idempotency_ttl == 3600.0
    monkeypatch.delenv("CUSTODY_IDEMPOTENCY_TTL")
    assert Settings(data_dir=tmp_path).idempotency_ttl == 24 * 3600.0  # documented default
    for api in make_api(tmp_path, idempotency_ttl=0.3):
        kid = api.add_key()
        first = post_raw(api, kid, "ttl-1")
        assert first.status_code == 202
        assert idempotency.sweep(api.app.state.db, 0.3) == 0  # not old yet
        time.sleep(0.5)
        assert idempotency.sweep(api.app.state.db, 0.3) == 1
        again = post_raw(api, kid, "ttl-1")
        assert again.status_code == 202 and "idempotent-replayed" not in again.headers
        assert again.json()["id"] != first.json()["id"]


# -- filters, unknown members, labels ---------------------------------------------------------
def test_every_key_filter_works(api: Api) -> None:
    ec, bip, ed = api.add_key("ecdsa-secp256k1"), api.add_key("bip340"), api.add_key("ed25519")
    pending = api.add_key("ed25519", status="pending")

    def ids(query: str) -> set[str]:
        r = api.client.get(f"/v1/keys?{query}", headers=api.h("auditor"))
        assert r.status_code == 200, r.text
        return {k["id"] for k in r.json()["items"]}

    assert ids("scheme=bip340") == {bip}
    assert ids("scheme=ed25519") == {ed, pending}
    assert ids("status=pending") == {pending}
    assert ids("scheme=ed25519&status=active") == {ed}
    assert ids("") == {ec, bip, ed, pending}
    assert_problem(api.client.get("/v1/keys?scheme=rsa", headers=api.h("auditor")), 422)
    # every query parameter the OpenAPI lists for GET /v1/keys is one of these
    spec = api.client.get("/openapi.json").json()
    params = {p["name"] for p in spec["paths"]["/v1/keys"]["get"]["parameters"] if "name" in p}
    assert params == {"limit", "cursor", "scheme", "status", "label"}


def test_unknown_members_are_a_422_everywhere(api: Api) -> None:
    kid = api.add_key("ed25519")
    for extra in ({"memo": "dropped before"}, {"initiator": "me"}, {"approvals": []}):
        body = {"key_id": kid, "kind": "payment", "payload": {"amount": "1"}, **extra}
        r = api.client.post(SR, headers=api.h("requester", f"u-{next(iter(extra))}"), json=body)
        errors = assert_problem(r, 422, "validation")["errors"]
        assert errors[0]["loc"] == ["body", next(iter(extra))], errors
        assert errors[0]["type"] == "extra_forbidden"
    # the members that are the model's keep working: payload and the decoded kinds
    ok = {"key_id": kid, "kind": "payment", "payload": {"amount": "1"}}
    assert api.client.post(SR, headers=api.h("requester", "u-ok"), json=ok).status_code == 202
    r = api.client.post(
        "/v1/keys",
        headers=api.h("admin", "uk"),
        json={"scheme": "ed25519", "threshold": 2, "colour": "red"},
    )
    assert assert_problem(r, 422, "validation")["errors"][0]["loc"] == ["body", "colour"]
    r = api.client.patch(f"/v1/keys/{kid}", headers=api.h("admin"), json={"owner": "x"})
    assert assert_problem(r, 422, "validation")["errors"][0]["loc"] == ["body", "owner"]
    spec = api.client.get("/openapi.json").json()["components"]["schemas"]
    create = spec["SignRequestCreate"]
    assert create["additionalProperties"] is False
    want = {"key_id", "kind", "message", "payload", "network", "derivation_path", "risk"}
    assert want == set(create["properties"])


def test_key_labels_and_metadata(api: Api) -> None:
    kid, other = api.add_key("ed25519"), api.add_key("bip340")
    url = f"/v1/keys/{kid}"
    r = api.client.patch(
        url, headers=api.h("admin"), json={"label": "treasury hot", "metadata": {"desk": "fx"}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "treasury hot" and r.json()["metadata"] == {"desk": "fx"}
    got = api.client.get(url, headers=api.h("auditor")).json()
    assert got["label"] == "treasury hot" and got["metadata"] == {"desk": "fx"}
    listed = api.client.get("/v1/keys?label=treasury hot", headers=api.h("auditor")).json()
    assert [k["id"] for k in listed["items"]] == [kid]
    # one member changes, the other stays
    r = api.client.patch(url, headers=api.h("admin"), json={"metadata": {}})
    assert r.json()["label"] == "treasury hot" and r.json()["metadata"] == {}
    r = api.client.patch(url, headers=api.h("admin"), json={"label": None})
    assert r.json()["label"] is None
    assert api.client.get(f"/v1/keys/{other}", headers=api.h("auditor")).json()["label"] is None
    # refused: wrong role, unknown key, bad values, nothing to change
    assert_problem(api.client.patch(url, headers=api.h("requester"), json={"label": "x"}), 403)
    assert_problem(
        api.client.patch("/v1/keys/key_nope", headers=api.h("admin"), json={"label": "x"}), 404
    )
    for bad in (
        {"label": "a\nb"},
        {"label": ""},
        {"metadata": {f"k{i}": "v" for i in range(17)}},
        {"metadata": {"bad key": "v"}},
        {"metadata": {"n": 1}},
        {},
    ):
        assert_problem(api.client.patch(url, headers=api.h("admin"), json=bad), 422)
    with api.app.state.db.session() as s:
        entries = s.scalars(select(AuditEntry).where(AuditEntry.action == "key.update")).all()
    assert [e.data for e in entries] == [
        {"label": "treasury hot", "metadata": {"desk": "fx"}},
        {"metadata": {}},
        {"label": None},
    ]
    v = api.client.get("/v1/audit/verify", headers=api.h("auditor")).json()
    assert v["ok"], v


def test_openapi_documents_the_new_statuses_and_headers(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    post = spec["paths"]["/v1/sign-requests"]["post"]["responses"]
    assert {"201", "202", "403", "413", "429", "502"} <= set(post)
    assert {"Location", "Retry-After"} <= set(post["202"]["headers"])
    assert "Location" in post["201"]["headers"]
    assert "patch" in spec["paths"]["/v1/keys/{key_id}"]
    keys_post = spec["paths"]["/v1/keys"]["post"]["responses"]
    assert {"Location", "Retry-After"} <= set(keys_post["202"]["headers"])
    for path, item in spec["paths"].items():  # every limit's answer is documented
        for method, op in item.items():
            if path not in ("/health", "/ready"):
                assert "Retry-After" in op["responses"]["429"]["headers"], (method, path)
                if "requestBody" in op:
                    assert "413" in op["responses"], (method, path)


# -- on a real cluster: nodes down, then back ----------------------------------------------
TTL = 6.0  # the cluster's CUSTODY_IDEMPOTENCY_TTL (the sweep runs every second)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A cluster of this module's own (tests/e2e/conftest.py ``running_cluster``) whose
    idempotency records expire after ``TTL`` seconds."""
    with running_cluster(
        tmp_path_factory.mktemp("semantics"), env={"CUSTODY_IDEMPOTENCY_TTL": str(TTL)}
    ) as lv:
        yield lv


def _wait_healthy(live: Live, names: set[str]) -> None:
    deadline = time.monotonic() + 40
    while {n.id for n in live.auditor.nodes() if n.status == "healthy"} < names:
        assert time.monotonic() < deadline, "nodes did not come back"
        time.sleep(0.2)


def test_two_nodes_down_fails_and_the_same_key_signs_once_they_are_back(cluster: Live) -> None:
    key = cluster.key("ed25519")
    http = cluster.requester.http
    body = {"key_id": key.id, "kind": "raw", "message": b"retry me".hex()}
    headers = {"Idempotency-Key": "nodes-down-1"}
    for name in ("node-2", "node-3"):
        cluster.cluster.stop_proc(name)
    try:
        failed = http.post(SR, json=body, headers=headers)
        doc = assert_problem(failed, 502, "signing-failed")
        assert doc["sign_request"]["status"] == "failed"
        assert failed.headers["Location"] == f"{SR}/{doc['sign_request']['id']}"
        again = http.post(SR, json=body, headers=headers)  # still down: a new attempt
        assert_problem(again, 502, "signing-failed")
        assert "idempotent-replayed" not in again.headers
        assert again.json()["sign_request"]["id"] != doc["sign_request"]["id"]
    finally:
        cluster.cluster.start_node(2)
        cluster.cluster.start_node(3)
    _wait_healthy(cluster, {"node-1", "node-2", "node-3"})
    signed = http.post(SR, json=body, headers=headers)
    assert signed.status_code == 201, signed.text
    sr = signed.json()
    assert sr["status"] == "signed" and "idempotent-replayed" not in signed.headers
    assert signed.headers["Location"] == f"{SR}/{sr['id']}"
    vk = nacl.signing.VerifyKey(bytes.fromhex(key.public_key or ""))
    vk.verify(b"retry me", bytes.fromhex(sr["signature"]))  # independent verifier
    replay = http.post(SR, json=body, headers=headers)  # a signature is kept under its key
    assert replay.headers["idempotent-replayed"] == "true" and replay.json()["id"] == sr["id"]


def test_the_coordinator_sweeps_expired_idempotency_records(cluster: Live) -> None:
    key = cluster.key("ed25519")
    http = cluster.requester.http
    body = {"key_id": key.id, "kind": "raw", "message": b"ttl".hex()}
    headers = {"Idempotency-Key": "ttl-live"}
    first = http.post(SR, json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert http.post(SR, json=body, headers=headers).json()["id"] == first.json()["id"]
    time.sleep(TTL + 2.5)  # the TTL, then the next slow sweep (every second)
    later = http.post(SR, json=body, headers=headers)
    assert later.status_code == 201 and "idempotent-replayed" not in later.headers
    assert later.json()["id"] != first.json()["id"]


def test_labels_at_creation_and_in_the_cli(cluster: Live) -> None:
    k = cluster.admin.create_key(
        "bip340", 2, label="cold btc", metadata={"desk": "treasury"}, network="regtest"
    )
    assert k.status == "active" and k.label == "cold btc" and k.metadata == {"desk": "treasury"}
    assert [x.id for x in cluster.auditor.list_keys(label="cold btc")] == [k.id]
    assert {x.scheme for x in cluster.auditor.list_keys(scheme="bip340")} == {"bip340"}
    changed = cluster.admin.update_key(k.id, label="cold btc 2")
    assert changed.label == "cold btc 2" and changed.metadata == {"desk": "treasury"}
    runner = CliRunner()
    where = ["--cluster", str(cluster.cluster.cluster_file)]
    shown = runner.invoke(cli_app, ["keys", "show", k.id, *where])
    assert shown.exit_code == 0, shown.output
    assert "cold btc 2" in shown.output and "metadata.desk" in shown.output
    listed = runner.invoke(cli_app, ["keys", "list", "--label", "cold btc 2", "--json", *where])
    assert listed.exit_code == 0, listed.output
    assert '"cold btc 2"' in listed.output and k.id in listed.output
