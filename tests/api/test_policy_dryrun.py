"""POST /v1/policy/dry-run and shadow mode against a real coordinator app (SQLite file,
its own token, a governance genesis carrying a policy, installed as `python -m api trust`
does): decisions and why, nothing created; shadow drafts verified, evaluated beside the
active version on live sign requests, disagreements recorded, listed and logged."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import nacl.signing
import pytest
import rlp
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.db import Database, Key, SignRequest
from api.governance import GovernanceStore
from api.shadow import Shadow
from custody import governance as gov
from custody import policy_file as pf
from custody.cli import app as cli_app
from custody.client import AsyncCustodyClient, CustodyClient, CustodyError
from custody.models import PolicyDryRunOut
from tests.api.conftest import (
    Api,
    coordinator_database_url,
    init_coordinator,
    make_api,
    nothing_up_my_sleeve_point,
    serve_coordinator,
)
from tests.api.test_auth_problems import assert_problem
from tests.custody.policy.helpers import ALICE, BOB
from tests.custody.policy.test_policy_file import sample_doc

ETH = 10**18
T0 = 1_800_000_000  # 2027-01-15T08:00:00Z: ALICE allowlisted, BOB still time-locked
OFFICER = nacl.signing.SigningKey(b"\x07" * 32)


def policy_doc(key_id: str, max_eth: int = 1) -> dict:
    doc = copy.deepcopy(sample_doc())
    doc["wallets"][0]["keys"] = [key_id]
    doc["rules"][1]["max_amount"] = str(max_eth * ETH)
    # ALICE counts already (live requests are evaluated at the real time); BOB from T0's evening
    doc["allowlists"][0]["entries"][0]["active_from"] = "2020-01-01T00:00:00Z"
    return doc


def genesis(policy: dict) -> gov.SignedGovernance:
    body = gov.Governance(
        cluster_id="test-cluster",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(gov.Officer("olga", bytes(OFFICER.verify_key)),),
        quorum=1,
        roster=(),
        policy=pf.parse_policy(policy),
    )
    return gov.unsigned(gov.check_body(body)).with_signature(OFFICER, "olga")


def draft(active: gov.Governance, policy: dict) -> bytes:
    return gov.unsigned(active.successor(policy=pf.parse_policy(policy))).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# the id api.add_key gives its ECDSA key row (derived from the row's public key)
KEY_ID = (
    "key_"
    + hashlib.sha256(nothing_up_my_sleeve_point(b"ecdsa-secp256k1") + b"active").hexdigest()[:32]
)


@pytest.fixture
def gapi(tmp_path: Path) -> Iterator[Api]:
    """A coordinator whose active governance (version 1) carries ``policy_doc``, installed
    before it starts (as ``python -m api trust`` does); its ECDSA key is in the policy's
    wallet ``treasury``."""
    for api in make_api(tmp_path, genesis=genesis(policy_doc(KEY_ID)).encode()):
        assert api.add_key("ecdsa-secp256k1") == KEY_ID
        yield api


def evm(to: str, wei: int, key_id: str, **extra) -> dict:
    fields = [1, 0, 10**9, 2 * 10**9, 21_000, bytes.fromhex(to[2:]), wei, b"", []]
    return {
        "key_id": key_id,
        "kind": "evm-tx",
        "payload": {"tx": "0x02" + rlp.encode(fields).hex()},
        **extra,
    }


def dry(api: Api, body: dict, role: str = "auditor") -> httpx.Response:
    return api.client.post("/v1/policy/dry-run", headers=api.h(role), json=body)


def counts(api: Api) -> tuple[int, int]:
    reqs = api.client.get("/v1/sign-requests", headers=api.h("auditor")).json()["items"]
    audit = api.client.get("/v1/audit", headers=api.h("auditor")).json()["items"]
    return len(reqs), len(audit)


def test_dry_run_against_the_active_version_creates_nothing(gapi: Api) -> None:
    kid = KEY_ID
    before = counts(gapi)
    r = dry(gapi, evm(ALICE, ETH // 2, kid, at=T0))
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["action"], out["rule"], out["reason"]) == ("allow", "small-eth", "policy-allowed")
    assert out["source"] == "active" and out["policy_version"] == 1
    assert out["at"] == "2027-01-15T08:00:00Z"
    assert out["facts"]["amount"] == str(ETH // 2) and out["facts"]["chain"] == "evm:1"
    assert out["facts"]["initiator"].startswith("cred_")  # the caller by default
    assert out["rules"][0] == {
        "index": 1,
        "rule": "no-raw",
        "action": "deny",
        "matched": False,
        "failed": [{"condition": "kinds", "detail": "the request is evm-tx, the rule is for raw"}],
    }
    big = dry(gapi, evm(ALICE, 2 * ETH, kid, at=T0, initiator="treasurer")).json()
    assert (big["action"], big["rule"]) == ("approve", "big-eth")
    assert big["requirement"] == {"all": [{"group": "treasury", "m": 2}]}
    assert big["requirement_text"] == "2 of treasury (ann, bob)"
    assert big["facts"]["initiator"] == "treasurer"
    assert big["rules"][1]["failed"][0]["condition"] == "max_amount"
    locked = dry(gapi, evm(BOB, ETH // 2, kid, at=T0)).json()
    assert (locked["action"], locked["rule"]) == ("deny", "default-deny")
    assert "time-locked until 2027-01-15T23:00:00Z" in locked["rules"][1]["failed"][0]["detail"]
    raw = dry(gapi, {"key_id": kid, "kind": "raw", "message": "AB" * 32}).json()
    assert (raw["action"], raw["rule"], raw["reason"]) == ("deny", "no-raw", "policy-denied")
    # every reader may ask; nothing was created, nothing audited
    for role in ("admin", "requester", "approver", "auditor"):
        assert dry(gapi, evm(ALICE, 1, kid), role).status_code == 200
    assert counts(gapi) == before


def test_dry_run_counts_velocity_from_what_the_coordinator_signed(gapi: Api) -> None:
    kid = KEY_ID
    now = T0  # ALICE's time lock has passed
    body = {"id": "sr_signed-before", **evm(ALICE, 48 * ETH // 10, kid)}
    with gapi.app.state.db.session() as s:
        s.add(
            SignRequest(
                id="sr_signed-before",
                key_id=kid,
                kind="evm-tx",
                body=body,
                status="signed",
                requested_by="cred_x",
                created_at=dt.datetime.fromtimestamp(now - 3600, dt.UTC),
                updated_at=dt.datetime.fromtimestamp(now - 3600, dt.UTC),
            )
        )
    out = dry(gapi, evm(ALICE, ETH // 2, kid, at=now)).json()
    assert (out["action"], out["rule"]) == ("approve", "big-eth")
    miss = out["rules"][1]["failed"]
    assert [m["condition"] for m in miss] == ["velocity[0]"]
    assert f"key {kid} released 4.8 ETH" in miss[0]["detail"]
    # a day later the window has passed
    later = dry(gapi, evm(ALICE, ETH // 2, kid, at=now + 86_400)).json()
    assert later["rule"] == "small-eth"


def test_dry_run_against_a_draft(gapi: Api) -> None:
    kid = KEY_ID
    active = gapi.app.state.coordinator.governance.current
    doc = draft(active, policy_doc(kid, max_eth=10))
    out = dry(gapi, evm(ALICE, 2 * ETH, kid, at=T0, governance=b64(doc))).json()
    assert (out["action"], out["rule"], out["policy_version"]) == ("allow", "small-eth", 2)
    assert out["source"] == "document" and out["signed_by"] == []
    assert out["governance_digest"] == gov.decode(doc).body.digest.hex()
    # the active version still says otherwise
    assert dry(gapi, evm(ALICE, 2 * ETH, kid, at=T0)).json()["rule"] == "big-eth"


def test_dry_run_refusals_are_problems(gapi: Api) -> None:
    kid = KEY_ID
    assert_problem(dry(gapi, evm(ALICE, 1, "key_nope")), 404, "key-not-found")
    p = assert_problem(
        dry(gapi, {"key_id": kid, "kind": "evm-tx", "payload": {"tx": "0x02zz"}}),
        422,
        "invalid-sign-request",
    )
    assert p["field"] == "payload.tx"
    p = assert_problem(dry(gapi, evm(ALICE, 1, kid, governance="!!!!")), 422, "validation")
    p = assert_problem(dry(gapi, evm(ALICE, 1, kid, governance=b64(b"\xa0"))), 422)
    assert p["type"].endswith("invalid-governance") and p["field"] == "governance"
    assert_problem(dry(gapi, evm(ALICE, 1, kid, at=-1)), 422, "validation")
    assert_problem(gapi.client.post("/v1/policy/dry-run", json=evm(ALICE, 1, kid)), 401)


def test_without_governance_only_a_document_can_be_dry_run(tmp_path: Path) -> None:
    for api in make_api(tmp_path, genesis=b""):  # no governance installed
        plain = api.add_key("ecdsa-secp256k1")
        assert_problem(dry(api, evm(ALICE, 1, plain)), 409, "governance-missing")
        g = genesis(policy_doc(plain)).encode()
        assert dry(api, evm(ALICE, 1, plain, governance=b64(g), at=T0)).json()["signed_by"] == [
            "olga"
        ]


def test_sdk_dry_run_sync_and_async(gapi: Api) -> None:
    kid = KEY_ID
    tx = evm(ALICE, 2 * ETH, kid)
    with CustodyClient("http://testserver", gapi.tokens["auditor"], http=TestClient(gapi.app)) as c:
        out = c.dry_run_policy(kid, kind="evm-tx", payload=tx["payload"], at=T0)
        assert isinstance(out, PolicyDryRunOut)
        assert (out.action, out.rule) == ("approve", "big-eth")
        assert out.rules[-1].matched and out.facts is not None
        with pytest.raises(CustodyError) as e:
            c.dry_run_policy("key_nope", kind="evm-tx", payload=tx["payload"])
        assert e.value.status == 404
        assert not c.policy_shadow().installed

    async def go() -> PolicyDryRunOut:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=gapi.app), base_url="http://t")
        async with AsyncCustodyClient("http://t", gapi.tokens["auditor"], http=http) as ac:
            return await ac.dry_run_policy(kid, kind="evm-tx", payload=tx["payload"], at=T0)

    assert asyncio.run(go()) == out


# -- shadow mode ------------------------------------------------------------------------------


def put_shadow(api: Api, document: bytes, role: str = "admin") -> httpx.Response:
    return api.client.put(
        "/v1/policy/shadow", headers=api.h(role), json={"document": b64(document)}
    )


def sign(api: Api, body: dict, idem: str) -> dict:
    """A live request: denied (403), pending approvals (202), or allowed and attempted (a
    502 problem with the failed request in it, since this coordinator has no nodes)."""
    r = api.client.post("/v1/sign-requests", headers=api.h("requester", idem), json=body)
    assert r.status_code in (201, 202, 403, 502), r.text
    return r.json()["sign_request"] if r.status_code == 502 else r.json()


def test_a_shadow_must_be_an_unsigned_draft_of_the_next_version(gapi: Api) -> None:
    kid = KEY_ID
    active = gapi.app.state.coordinator.governance.current
    doc = draft(active, policy_doc(kid, max_eth=10))
    signed = gov.decode(doc).with_signature(OFFICER, "olga").encode()
    p = assert_problem(put_shadow(gapi, signed), 422, "shadow-signed")
    assert "signatures of olga" in p["detail"]
    skipping = gov.unsigned(active.successor().successor(policy=active.policy)).encode()
    assert_problem(put_shadow(gapi, skipping), 409, "shadow-unchained")
    other = gov.unsigned(
        gov.check_body(
            gov.Governance(
                cluster_id="elsewhere",
                version=2,
                previous=active.digest,
                officers=active.officers,
                quorum=1,
                roster=(),
            )
        )
    ).encode()
    p = assert_problem(put_shadow(gapi, other), 409, "shadow-unchained")
    assert "cluster elsewhere" in p["detail"]
    assert_problem(put_shadow(gapi, b"\x00garbage"), 422, "invalid-governance")
    assert_problem(put_shadow(gapi, doc, "requester"), 403, "forbidden")
    assert_problem(put_shadow(gapi, doc, "auditor"), 403, "forbidden")
    assert not gapi.client.get("/v1/policy/shadow", headers=gapi.h("auditor")).json()["installed"]
    assert_problem(
        gapi.client.delete("/v1/policy/shadow", headers=gapi.h("admin")), 404, "not-found"
    )


def test_shadow_disagreements_on_live_requests(gapi: Api, caplog) -> None:  # noqa: ANN001
    kid = KEY_ID
    active = gapi.app.state.coordinator.governance.current
    shadow_doc = policy_doc(kid, max_eth=1)
    shadow_doc["rules"][1]["max_amount"] = str(ETH // 10)  # the shadow is stricter: 0.1 ETH
    doc = draft(active, shadow_doc)
    r = put_shadow(gapi, doc)
    assert r.status_code == 200, r.text
    state = r.json()
    digest = gov.decode(doc).body.digest.hex()
    assert state["installed"] and state["version"] == 2 and state["digest"] == digest
    assert state["base_version"] == 1 and not state["stale"]
    assert gapi.client.get("/v1/policy/shadow", headers=gapi.h("auditor")).json() == state

    caplog.set_level(logging.INFO, logger="api.shadow")
    agree = sign(gapi, {"key_id": kid, "kind": "raw", "message": "11" * 32}, "agree")  # both deny
    small = sign(gapi, evm(ALICE, ETH // 20, kid), "small")  # 0.05 ETH: both allow
    mid = sign(gapi, evm(ALICE, ETH // 2, kid), "mid")  # 0.5 ETH: allow vs approvals
    mid2 = sign(gapi, evm(ALICE, ETH // 2, kid, message=None), "mid2")
    big = sign(gapi, evm(ALICE, 2 * ETH, kid), "big")  # both require the same approvals
    assert agree and small and big
    page = gapi.client.get(
        "/v1/policy/shadow/disagreements", headers=gapi.h("auditor"), params={"limit": 1}
    ).json()
    assert [d["request_id"] for d in page["items"]] == [mid2["id"]]  # newest first
    rest = gapi.client.get(
        "/v1/policy/shadow/disagreements",
        headers=gapi.h("auditor"),
        params={"limit": 1, "cursor": page["next_cursor"]},
    ).json()
    assert [d["request_id"] for d in rest["items"]] == [mid["id"]] and rest["next_cursor"] is None
    d = rest["items"][0]
    assert d["key_id"] == kid and d["kind"] == "evm-tx"
    assert d["active"] == {
        "version": 1,
        "digest": active.digest.hex(),
        "action": "allow",
        "rule": "small-eth",
        "reason": "policy-allowed",
        "requirement": None,
    }
    assert d["shadow"] == {
        "version": 2,
        "digest": digest,
        "action": "approve",
        "rule": "big-eth",
        "reason": "policy-approvals-required",
        "requirement": "2 of treasury (ann, bob)",
    }
    logged = [r for r in caplog.records if r.getMessage() == "policy shadow disagreement"]
    assert [r.request_id for r in logged] == [mid["id"], mid2["id"]]  # type: ignore[attr-defined]
    assert logged[0].shadow_action == "approve" and logged[0].active_rule == "small-eth"  # type: ignore[attr-defined]
    # the live requests themselves are untouched by the shadow: the active policy decided
    # (mid: allowed, so attempted, and failed for want of nodes; big: waits for approvals)
    assert agree["status"] == 403 and agree["type"].endswith("policy-denied")
    for sr, status in ((mid, "failed"), (big, "pending_approval")):
        got = gapi.client.get(f"/v1/sign-requests/{sr['id']}", headers=gapi.h("auditor")).json()
        assert got["status"] == sr["status"] == status
    # kept in the database: a new coordinator object reads it back
    again = Shadow(gapi.app.state.db).current()
    assert again is not None and again.body.digest.hex() == digest
    audit = gapi.client.get("/v1/audit", headers=gapi.h("auditor")).json()["items"]
    assert [e["data"]["digest"] for e in audit if e["action"] == "policy.shadow.install"] == [
        digest
    ]

    # removed: no more evaluation, the disagreements stay
    r = gapi.client.delete("/v1/policy/shadow", headers=gapi.h("admin"))
    assert r.status_code == 204
    assert not gapi.client.get("/v1/policy/shadow", headers=gapi.h("auditor")).json()["installed"]
    sign(gapi, evm(ALICE, ETH // 2, kid), "after")
    listed = gapi.client.get("/v1/policy/shadow/disagreements", headers=gapi.h("auditor")).json()
    assert len(listed["items"]) == 2
    assert any(e["action"] == "policy.shadow.remove" for e in gapi.client.get(
        "/v1/audit", headers=gapi.h("auditor")).json()["items"])  # fmt: skip
    assert_problem(
        gapi.client.get(
            "/v1/policy/shadow/disagreements", headers=gapi.h("auditor"), params={"cursor": "x"}
        ),
        422,
        "invalid-cursor",
    )


def test_a_failing_shadow_never_fails_a_live_request(gapi: Api, caplog) -> None:  # noqa: ANN001
    kid = KEY_ID
    active = gapi.app.state.coordinator.governance.current
    assert put_shadow(gapi, draft(active, policy_doc(kid))).status_code == 200
    shadow = gapi.app.state.policy_shadow
    state = shadow.cached()
    # a shadow whose policy the engine cannot read (a state no install makes)
    shadow._state = dataclasses.replace(state, body=None)
    caplog.set_level(logging.INFO, logger="api.shadow")
    sr = sign(gapi, evm(ALICE, ETH // 2, kid), "still-fine")
    # allowed by the active policy and attempted (no nodes here): the shadow changed nothing
    assert sr["status"] == "failed" and "healthy nodes" in sr["error"]["detail"]
    assert any(r.getMessage() == "policy shadow evaluation failed" for r in caplog.records)


def test_openapi_documents_the_policy_routes(gapi: Api) -> None:
    paths = gapi.client.get("/openapi.json").json()["paths"]
    assert paths["/v1/policy/dry-run"]["post"]["summary"].startswith("Evaluate a sign request")
    assert set(paths["/v1/policy/shadow"]) == {"get", "put", "delete"}
    assert all(op.get("summary") for op in paths["/v1/policy/shadow"].values())
    assert "get" in paths["/v1/policy/shadow/disagreements"]
    problem = paths["/v1/policy/dry-run"]["post"]["responses"]["422"]["content"]
    assert "application/problem+json" in problem


# -- the CLI's `--governance active`, against a coordinator served as a process --------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    """``python -m api init``, the genesis installed, one ECDSA key row, ``python -m api
    serve``: the coordinator as the CLI meets it."""
    d = tmp_path_factory.mktemp("served") / "coord"
    creds = init_coordinator(d)
    GovernanceStore(d).install_genesis(genesis(policy_doc(KEY_ID)).encode())
    db = Database(coordinator_database_url(d))
    with db.session() as s:
        s.add(
            Key(
                id=KEY_ID,
                scheme="ecdsa-secp256k1",
                threshold=2,
                nodes=["node-1", "node-2"],
                status="active",
                public_key=nothing_up_my_sleeve_point(b"ecdsa-secp256k1").hex(),
                verifying_shares={},
            )
        )
    db.close()
    with serve_coordinator(d) as url:
        yield url, creds


def test_cli_dry_run_against_the_active_version(served: tuple[str, dict], tmp_path: Path) -> None:
    url, creds = served
    req = tmp_path / "req.json"
    req.write_text(json.dumps({**evm(ALICE, 2 * ETH, KEY_ID), "scheme": "ignored-here"}))
    args = ["policy", "dry-run", "--request", str(req), "--api-url", url, "--token"]
    result = CliRunner().invoke(cli_app, [*args, creds["auditor"], "--at", "2027-01-15T08:00:00Z"])
    assert result.exit_code == 0, result.output
    assert "governance: the coordinator's active version" in result.output
    assert "decision: APPROVALS REQUIRED by rule big-eth" in result.output
    assert "approvals required: 2 of treasury (ann, bob)" in result.output
    result = CliRunner().invoke(cli_app, [*args, creds["auditor"], "--json", "--at", str(T0)])
    doc = json.loads(result.output)
    assert doc["source"] == "active" and doc["facts"]["initiator"].startswith("cred_")
    assert doc["rules"][1]["failed"][0]["condition"] == "max_amount"
    # the coordinator's problems come through
    req.write_text(json.dumps(evm(ALICE, 1, "key_nope")))
    result = CliRunner().invoke(cli_app, [*args, creds["auditor"]])
    assert result.exit_code == 3 and "404" in result.output  # ExitCode.NOT_FOUND


def test_sdk_shadow_methods(gapi: Api) -> None:
    active = gapi.app.state.coordinator.governance.current
    shadow_doc = policy_doc(KEY_ID)
    shadow_doc["rules"][1]["max_amount"] = str(ETH // 10)
    doc = draft(active, shadow_doc)
    http = TestClient(gapi.app)
    with CustodyClient("http://testserver", gapi.tokens["admin"], http=http) as c:
        state = c.set_policy_shadow(doc)
        assert state.installed and state.version == 2 and not state.stale
        assert c.policy_shadow() == state
        sign(gapi, evm(ALICE, ETH // 2, KEY_ID), "sdk-shadow")
        found = list(c.shadow_disagreements(limit=1))
        assert [(d.active.action, d.shadow.action) for d in found] == [("allow", "approve")]
        c.delete_policy_shadow()
        with pytest.raises(CustodyError) as e:
            c.delete_policy_shadow()
        assert e.value.status == 404

    async def go() -> list[str]:
        ahttp = httpx.AsyncClient(transport=httpx.ASGITransport(app=gapi.app), base_url="http://t")
        async with AsyncCustodyClient("http://t", gapi.tokens["admin"], http=ahttp) as ac:
            assert (await ac.set_policy_shadow(doc)).installed
            assert (await ac.policy_shadow()).digest == state.digest
            seen = [d.request_id async for d in ac.shadow_disagreements()]
            await ac.delete_policy_shadow()
            assert not (await ac.policy_shadow()).installed
            return seen

    assert len(asyncio.run(go())) == 1


def test_cli_shadow_set_show_disagreements_clear(served: tuple[str, dict], tmp_path: Path) -> None:
    """``custody policy shadow ...`` against a served coordinator: a draft that sends
    transfers above 0.1 ETH to approvers disagrees with the active policy on a 0.5 ETH
    request, and the CLI lists it."""
    url, creds = served
    auth = lambda role: ["--api-url", url, "--token", creds[role]]  # noqa: E731
    with httpx.Client(base_url=url) as h:
        doc = h.get("/v1/governance", headers={"Authorization": f"Bearer {creds['auditor']}"})
        active = gov.decode(bytes.fromhex(doc.json()["document"])).body
    shadow_doc = policy_doc(KEY_ID)
    shadow_doc["rules"][1]["max_amount"] = str(ETH // 10)
    path = tmp_path / "draft.gov"
    path.write_bytes(draft(active, shadow_doc))
    run = CliRunner().invoke
    r = run(cli_app, ["policy", "shadow", "set", str(path), *auth("admin")])
    assert r.exit_code == 0 and "shadow installed: version 2" in r.output, r.output
    r = run(cli_app, ["policy", "shadow", "show", "--json", *auth("auditor")])
    assert r.exit_code == 0 and json.loads(r.output)["installed"] is True, r.output
    with httpx.Client(base_url=url) as h:
        post = h.post(
            "/v1/sign-requests",
            json=evm(ALICE, ETH // 2, KEY_ID),
            headers={"Authorization": f"Bearer {creds['requester']}", "Idempotency-Key": "s1"},
        )
    assert post.status_code in (201, 202, 502), post.text  # 502: failed, no nodes here
    sr = post.json()["sign_request"] if post.status_code == 502 else post.json()
    r = run(cli_app, ["policy", "shadow", "disagreements", "--json", *auth("auditor")])
    rows = json.loads(r.output)
    assert [(d["active"]["action"], d["shadow"]["action"]) for d in rows] == [("allow", "approve")]
    assert rows[0]["request_id"] == sr["id"]
    r = run(cli_app, ["policy", "shadow", "clear", *auth("admin")])
    assert r.exit_code == 0 and "shadow removed" in r.output
    r = run(cli_app, ["policy", "shadow", "clear", *auth("admin")])
    assert r.exit_code == 3  # nothing to remove: not found
