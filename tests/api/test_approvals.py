"""The approval workflow of the coordinator: the policy decides before any node call,
pending requests show what an approver needs, approvals are verified (each refusal with its
reason), stored, audited, and move the request exactly once.

The first part runs the in-process app (no nodes: a request that reaches ``signing`` then
fails for want of nodes, which is enough to see the move); the second part a real cluster
(``custody up``'s processes, the demo policy, the dev approvers' key files), where two
approvals get an evm-tx signed and eth-account recovers the signer from the signed
transaction."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import rlp
from eth_account import Account
from eth_utils.crypto import keccak
from nacl.signing import SigningKey
from sqlalchemy import select

from api.auth import create_credential
from api.db import AuditEntry, SignRequest
from custody import approvals as ap
from custody import governance as gov
from custody.cluster import DEMO_ETH_DESTINATIONS, ETH_LIMIT
from custody.kinds.addresses import ethereum_address
from tests import pg
from tests.api.conftest import APPROVER_KEYS, Api
from tests.api.test_auth_problems import assert_problem

DEST = DEMO_ETH_DESTINATIONS[0]
STRANGER = "0x" + "5e" * 20  # not on the allowlist


def unsigned_tx(value: int, to: str = DEST, nonce: int = 0, chain_id: int = 1) -> str:
    fields = [chain_id, nonce, 10**9, 2 * 10**9, 21_000, bytes.fromhex(to[2:]), value, b"", []]
    return "0x02" + rlp.encode(fields).hex()


def post_tx(api: Api, kid: str, value: int, idem: str, role: str = "requester", **extra: Any):
    return api.client.post(
        "/v1/sign-requests",
        headers=api.h(role, idem),
        json={"key_id": kid, "kind": "evm-tx", "payload": {"tx": unsigned_tx(value)}, **extra},
    )


def stored_body(api: Api, rid: str) -> dict[str, Any]:
    with api.app.state.db.session() as s:
        row = s.scalar(select(SignRequest).where(SignRequest.id == rid))
        assert row is not None
        return dict(row.body)


def statement(
    api: Api, rid: str, who: str, decision: str = "approve", **over: Any
) -> ap.ApprovalStatement:
    """A statement over the request as stored (decoded here, not taken from the API)."""
    body = stored_body(api, rid)
    _, areq = ap.request_intent("ecdsa-secp256k1", body)
    g = api.app.state.coordinator.governance.current
    fields: dict[str, Any] = {
        "intent_digest": areq.intent_digest,
        "request_id": rid,
        "policy_version": g.version,
        "governance_digest": g.digest,
        "expires_at": int(time.time()) + 600,
        "approver_id": who,
        "decision": decision,
        "initiator": body["initiator"],
        **over,
    }
    return ap.ApprovalStatement(**fields)


def b64(st: ap.ApprovalStatement, key: SigningKey | None = None) -> str:
    signer = key or APPROVER_KEYS[st.approver_id]
    return base64.b64encode(ap.sign_approval(signer, st).encode()).decode()


def post_approval(api: Api, rid: str, approval: str, idem: str, path: str = "approvals"):
    return api.client.post(
        f"/v1/sign-requests/{rid}/{path}",
        headers=api.h("approver", idem),
        json={"approval": approval},
    )


def actions(api: Api, rid: str) -> list[str]:
    with api.app.state.db.session() as s:
        return list(
            s.scalars(
                select(AuditEntry.action).where(AuditEntry.subject == rid).order_by(AuditEntry.seq)
            )
        )


def wait_status(api: Api, rid: str, *, not_in: tuple[str, ...] = ("signing",)) -> dict:
    for _ in range(200):
        got = api.client.get(f"/v1/sign-requests/{rid}", headers=api.h("auditor")).json()
        if got["status"] not in not_in:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{rid} still {got['status']}")


# -- in-process ----------------------------------------------------------------------------


def test_over_the_limit_waits_shows_what_is_needed_and_two_approvals_move_it_once(
    api: Api,
) -> None:
    kid = api.add_key()
    r = post_tx(api, kid, 2 * ETH_LIMIT, "big")
    assert r.status_code == 202, r.text
    sr = r.json()
    rid = sr["id"]
    assert sr["status"] == "pending_approval" and sr["initiator"] == "payments-bot"
    body = stored_body(api, rid)
    assert body["initiator"] == "payments-bot" and body["approvals"] == []
    got = api.client.get(f"/v1/sign-requests/{rid}", headers=api.h("approver")).json()
    a = got["approval"]
    _, areq = ap.request_intent("ecdsa-secp256k1", body)
    g = api.app.state.coordinator.governance.current
    assert a["intent_digest"] == areq.intent_digest.hex()
    assert a["policy_version"] == g.version and a["governance_digest"] == g.digest.hex()
    assert a["initiator"] == "payments-bot" and a["kind"] == "evm-tx"
    assert a["summary"]["value"] == str(2 * ETH_LIMIT) and a["summary"]["to"] == DEST
    assert a["decision"]["action"] == "approve" and a["decision"]["rule_id"] == "eth-over-limit"
    assert a["requirement"] == {"op": "all", "terms": [{"group": "treasury", "m": 2}]}
    assert a["groups"] == [{"group": "treasury", "n": 3, "approvers": sorted(APPROVER_KEYS)}]
    assert a["missing"] == [{"group": "treasury", "needed": 2, "m": 2}]
    assert a["status"] == "pending" and a["approvals"] == []

    one = post_approval(api, rid, b64(statement(api, rid, "dev-approver-1")), "a1")
    assert one.status_code == 200, one.text
    doc = one.json()
    assert doc["status"] == "pending_approval"
    assert doc["approval"]["missing"] == [{"group": "treasury", "needed": 1, "m": 2}]
    (entry,) = doc["approval"]["approvals"]
    assert entry["approver_id"] == "dev-approver-1" and entry["decision"] == "approve"
    assert entry["counts"] is True and entry["received_at"]
    # what the nodes will be sent: the stored approvals, standard base64 of Approval.encode
    (wire,) = stored_body(api, rid)["approvals"]
    assert ap.decode_approval(base64.b64decode(wire)).statement.approver_id == "dev-approver-1"
    # the same approver again does not count twice
    again = post_approval(api, rid, b64(statement(api, rid, "dev-approver-1")), "a1b")
    assert_problem(again, 422, "approval-duplicate")

    two = post_approval(api, rid, b64(statement(api, rid, "dev-approver-3")), "a2")
    assert two.status_code == 200, two.text
    assert two.json()["status"] in ("signing", "failed")
    assert len(stored_body(api, rid)["approvals"]) == 2
    done = wait_status(api, rid)
    assert done["status"] == "failed" and "healthy nodes" in done["error"]["detail"]  # no nodes
    acts = actions(api, rid)
    assert acts.count("sign.approval") == 2 and acts.count("sign.approved") == 1
    assert acts[0] == "sign.request" and acts[-1] == "sign.failed"
    # after it left pending_approval: 409
    late = post_approval(api, rid, b64(statement(api, rid, "dev-approver-2")), "a3")
    assert_problem(late, 409, "request-not-pending")
    # the audit chain holds
    v = api.client.get("/v1/audit/verify", headers=api.h("auditor")).json()
    assert v["ok"], v


def test_under_the_limit_signs_at_once(api: Api) -> None:
    kid = api.add_key()
    r = post_tx(api, kid, ETH_LIMIT, "small")
    assert r.status_code == 502, r.text  # a failed signing is a problem with the request
    sr = r.json()["sign_request"]
    assert sr["status"] == "failed"  # it went to signing: no nodes here
    assert "healthy nodes" in sr["error"]["detail"]


def test_policy_denied_is_a_403_audited_and_nothing_is_stored(api: Api) -> None:
    kid = api.add_key()
    body = {"key_id": kid, "kind": "evm-tx", "payload": {"tx": unsigned_tx(1, to=STRANGER)}}
    r = api.client.post("/v1/sign-requests", headers=api.h("requester", "deny"), json=body)
    doc = assert_problem(r, 403, "policy-denied")
    assert doc["rule_id"] == "default-deny" and doc["reason"] == "policy-no-rule-matched"
    assert doc["policy_version"] == 1
    lst = api.client.get("/v1/sign-requests", headers=api.h("auditor")).json()
    assert lst["items"] == []
    with api.app.state.db.session() as s:
        denied = s.scalars(select(AuditEntry).where(AuditEntry.action == "sign.denied")).all()
    assert len(denied) == 1 and denied[0].data["policy"]["rule_id"] == "default-deny"
    assert denied[0].data["policy"]["initiator"] == "payments-bot"


def test_client_supplied_initiator_or_approvals_is_a_422(api: Api) -> None:
    kid = api.add_key()
    for name, value in (("initiator", "dev-approver-1"), ("approvals", [])):
        r = post_tx(api, kid, 2 * ETH_LIMIT, f"x-{name}", **{name: value})
        errors = assert_problem(r, 422, "validation")["errors"]  # an unknown member
        assert [(e["loc"], e["type"]) for e in errors] == [(["body", name], "extra_forbidden")]
    assert api.client.get("/v1/sign-requests", headers=api.h("auditor")).json()["items"] == []


@pytest.fixture
def pending(api: Api) -> tuple[Api, str]:
    kid = api.add_key()
    r = post_tx(api, kid, 5 * ETH_LIMIT, "pending")
    assert r.status_code == 202, r.text
    return api, r.json()["id"]


def test_refusals_name_their_reason_and_store_nothing(pending: tuple[Api, str]) -> None:
    api, rid = pending
    now = int(time.time())
    cases = {
        "approval-expired": b64(statement(api, rid, "dev-approver-1", expires_at=now - 1)),
        "approval-other-request": b64(statement(api, rid, "dev-approver-1", request_id="sr_x")),
        "approval-other-intent": b64(
            statement(api, rid, "dev-approver-1", intent_digest=bytes(32))
        ),
        "approval-other-initiator": b64(
            statement(api, rid, "dev-approver-1", initiator="someone-else")
        ),
        "approval-stale-policy-version": b64(
            statement(api, rid, "dev-approver-1", policy_version=7)
        ),
        "approval-bad-signature": b64(
            statement(api, rid, "dev-approver-1"), key=SigningKey.generate()
        ),
        "approval-unknown-approver": b64(statement(api, rid, "mallory"), key=SigningKey.generate()),
        "approval-wrong-decision": b64(statement(api, rid, "dev-approver-1", decision="reject")),
        "approval-malformed": base64.b64encode(b"\xa0").decode(),
    }
    for i, (reason, approval) in enumerate(cases.items()):
        doc = assert_problem(post_approval(api, rid, approval, f"r{i}"), 422, reason)
        assert doc["detail"], reason
    r = api.client.post(
        f"/v1/sign-requests/{rid}/approvals",
        headers=api.h("approver", "nb64"),
        json={"approval": "not base64!"},
    )
    assert r.status_code == 422
    got = api.client.get(f"/v1/sign-requests/{rid}", headers=api.h("auditor")).json()
    assert got["status"] == "pending_approval" and got["approval"]["approvals"] == []
    assert stored_body(api, rid)["approvals"] == []
    assert "sign.approval" not in actions(api, rid)


def test_only_approvers_and_admins_post_approvals(pending: tuple[Api, str]) -> None:
    api, rid = pending
    approval = b64(statement(api, rid, "dev-approver-1"))
    for role in ("requester", "auditor"):
        r = api.client.post(
            f"/v1/sign-requests/{rid}/approvals",
            headers=api.h(role, f"role-{role}"),
            json={"approval": approval},
        )
        assert_problem(r, 403, "forbidden")
    assert_problem(post_approval(api, "sr_missing", approval, "nf"), 404, "not-found")


def test_self_approval_is_refused(api: Api) -> None:
    """A principal who requests (here with a requester credential of approver
    dev-approver-2's name) never counts as an approver of their own request."""
    kid = api.add_key()
    _, token = create_credential(api.app.state.db, "requester", principal="dev-approver-2")
    r = api.client.post(
        "/v1/sign-requests",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "self"},
        json={"key_id": kid, "kind": "evm-tx", "payload": {"tx": unsigned_tx(3 * ETH_LIMIT)}},
    )
    assert r.status_code == 202 and r.json()["initiator"] == "dev-approver-2"
    rid = r.json()["id"]
    doc = assert_problem(
        post_approval(api, rid, b64(statement(api, rid, "dev-approver-2")), "s1"),
        422,
        "approval-by-initiator",
    )
    assert doc["approver_id"] == "dev-approver-2"


def test_one_rejection_rejects_and_then_everything_is_409(pending: tuple[Api, str]) -> None:
    api, rid = pending
    assert post_approval(api, rid, b64(statement(api, rid, "dev-approver-1")), "j1").is_success
    rej = b64(statement(api, rid, "dev-approver-2", decision="reject"))
    assert_problem(post_approval(api, rid, rej, "j2"), 422, "approval-wrong-decision")
    r = post_approval(api, rid, rej, "j3", path="rejections")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "rejected" and doc["error"]["type"].endswith("approvals-rejected")
    assert doc["approval"]["rejected_by"] == ["dev-approver-2"]
    assert actions(api, rid)[-2:] == ["sign.rejection", "sign.rejected"]
    late = post_approval(api, rid, b64(statement(api, rid, "dev-approver-3")), "j4")
    assert_problem(late, 409, "request-not-pending")


def test_pending_requests_expire_and_then_take_no_approval(pending: tuple[Api, str]) -> None:
    api, rid = pending
    with api.app.state.db.session() as s:
        row = s.scalar(select(SignRequest).where(SignRequest.id == rid))
        row.expires_at = row.created_at.replace(year=2000)
    api.app.state.coordinator.expire_requests()
    assert api.client.get(f"/v1/sign-requests/{rid}", headers=api.h("auditor")).json()[
        "status"
    ] == ("expired")
    r = post_approval(api, rid, b64(statement(api, rid, "dev-approver-1")), "e1")
    assert_problem(r, 409, "request-not-pending")


async def test_concurrent_approvals_start_signing_exactly_once(pending: tuple[Api, str]) -> None:
    api, rid = pending
    approvals = [b64(statement(api, rid, a)) for a in sorted(APPROVER_KEYS)]
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    f"/v1/sign-requests/{rid}/approvals",
                    headers=api.h("approver", f"c{i}"),
                    json={"approval": a},
                )
                for i, a in enumerate(approvals)
            )
        )
    codes = sorted(r.status_code for r in answers)
    assert codes in ([200, 200, 200], [200, 200, 409]), [r.text for r in answers]
    for _ in range(100):
        if "sign.failed" in actions(api, rid):
            break
        await asyncio.sleep(0.05)
    acts = actions(api, rid)
    assert acts.count("sign.approved") == 1, acts
    assert acts.count("sign.failed") == 1 and acts.count("sign.signed") == 0, acts


def test_openapi_documents_the_approval_routes(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    for path, name in (("approvals", "Approve"), ("rejections", "Reject")):
        op = doc["paths"][f"/v1/sign-requests/{{request_id}}/{path}"]["post"]
        assert op["summary"].startswith(name) and "422" in op["responses"]
        assert "refusal reason" in op["description"] and "409" in op["responses"]
    out = doc["components"]["schemas"]["SignRequestOut"]["properties"]
    assert {"approval", "initiator", "payload"} <= set(out)


def test_old_credentials_without_a_principal_read_as_their_id(api: Api) -> None:
    """A credential row made before principals existed (NULL principal, creation audited
    without one) still authenticates, as the principal of its own id."""
    cid, token = create_credential(api.app.state.db, "requester")
    with api.app.state.db.session() as s:
        from api.db import Credential  # noqa: PLC0415 - test only

        s.get(Credential, cid).principal = None
        for e in s.scalars(select(AuditEntry).where(AuditEntry.subject == cid)):
            e.data = {k: v for k, v in e.data.items() if k != "principal"}
    kid = api.add_key()
    r = api.client.post(
        "/v1/sign-requests",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "old"},
        json={"key_id": kid, "kind": "evm-tx", "payload": {"tx": unsigned_tx(2 * ETH_LIMIT)}},
    )
    assert r.status_code == 202 and r.json()["initiator"] == cid


# -- a real cluster ------------------------------------------------------------------------


class Cluster:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        creds = doc["credentials"]
        self.http = {
            role: httpx.Client(
                base_url=doc["api_url"],
                headers={"Authorization": f"Bearer {creds[role]}"},
                timeout=60,
            )
            for role in ("admin", "requester", "approver", "auditor")
        }
        files = doc["dev_governance"]
        passphrase = Path(files["approver_passphrase_file"]).read_bytes().strip()
        self.approvers = {}
        for f in files["approvers"]:
            approver, signer = gov.open_approver_key(Path(f).read_bytes(), passphrase)
            self.approvers[approver.approver_id] = signer


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``custody up`` as users run it (the demo genesis, raw denied): a copy of the
    session's provisioned cluster of that genesis (tests/e2e/conftest.py
    ``clone_cluster``), not a provisioning of its own; the test clusters' small
    presignature pool (``CLUSTER_ENV``: this module signs three times)."""
    from custody.cluster import Cluster as Processes  # noqa: PLC0415
    from custody.cluster import free_port_block  # noqa: PLC0415
    from tests.e2e.conftest import CLUSTER_ENV, clone_cluster  # noqa: PLC0415

    d = tmp_path_factory.mktemp("approvals")
    clone_cluster(d, allow_raw=False)
    env = {**CLUSTER_ENV, **pg.cluster_database_env(d)}  # the PostgreSQL pass: its own database
    procs = Processes(d, nodes=3, port=free_port_block(3), env=env)
    try:
        doc = procs.start(timeout=90)
        cl = Cluster(doc)
        yield cl
    finally:
        procs.stop()


def _live_approval(cl: Cluster, rid: str, who: str) -> str:
    """Decode the request fetched from the API locally, check the coordinator's digest,
    sign as ``who`` (what ``custody approve`` does)."""
    sr = cl.http["approver"].get(f"/v1/sign-requests/{rid}").json()
    body = {k: sr[k] for k in ("id", "key_id", "kind", "payload", "message")}
    _, areq = ap.request_intent("ecdsa-secp256k1", body)
    assert areq.intent_digest.hex() == sr["approval"]["intent_digest"]
    st = ap.ApprovalStatement(
        areq.intent_digest,
        rid,
        sr["approval"]["policy_version"],
        bytes.fromhex(sr["approval"]["governance_digest"]),
        int(time.time()) + 600,
        who,
        "approve",
        sr["initiator"],
    )
    return base64.b64encode(ap.sign_approval(cl.approvers[who], st).encode()).decode()


def _create(cl: Cluster, kid: str, value: int, nonce: int, to: str = DEST) -> httpx.Response:
    return cl.http["requester"].post(
        "/v1/sign-requests",
        headers={"Idempotency-Key": f"n{nonce}-{value}-{to}"},
        json={
            "key_id": kid,
            "kind": "evm-tx",
            "payload": {"tx": unsigned_tx(value, to=to, nonce=nonce)},
        },
    )


def _poll(cl: Cluster, rid: str) -> dict[str, Any]:
    for _ in range(300):
        doc = cl.http["auditor"].get(f"/v1/sign-requests/{rid}").json()
        if doc["status"] not in ("signing",):
            return doc
        time.sleep(0.1)
    raise AssertionError(doc)


def test_live_two_approvals_get_an_evm_tx_signed_and_eth_account_recovers_it(
    live: Cluster,
) -> None:
    key = live.http["admin"].post(
        "/v1/keys",
        headers={"Idempotency-Key": "k-ecdsa"},
        json={"scheme": "ecdsa-secp256k1", "threshold": 2},
    )
    assert key.status_code in (201, 202), key.text
    kid = key.json()["id"]
    for _ in range(300):
        k = live.http["admin"].get(f"/v1/keys/{kid}").json()
        if k["status"] != "pending":
            break
        time.sleep(0.2)
    assert k["status"] == "active", k
    address = ethereum_address(bytes.fromhex(k["public_key"]))
    # under the limit: signed at once
    small = _create(live, kid, ETH_LIMIT // 2, 0)
    assert small.status_code in (201, 202), small.text
    assert _poll(live, small.json()["id"])["status"] == "signed"
    # a destination off the allowlist: 403, and no node was asked to sign anything
    calls = live.http["auditor"].get("/ready").json()["batching"]
    denied = _create(live, kid, 1, 1, to=STRANGER)
    assert denied.status_code == 403 and denied.json()["type"].endswith("policy-denied")
    assert live.http["auditor"].get("/ready").json()["batching"] == calls
    # raw bytes: the demo policy denies them (custody up without --allow-raw)
    raw = live.http["requester"].post(
        "/v1/sign-requests",
        headers={"Idempotency-Key": "raw"},
        json={"key_id": kid, "kind": "raw", "message": "11" * 32},
    )
    assert raw.status_code == 403 and raw.json()["rule_id"] == "raw-denied", raw.text
    assert live.doc["dev_governance"]["raw_signing"] == "denied (demo policy)"
    assert live.http["auditor"].get("/ready").json()["batching"] == calls
    # over the limit: waits, two approvals, signed
    big = _create(live, kid, 3 * ETH_LIMIT, 2)
    assert big.status_code == 202 and big.json()["status"] == "pending_approval", big.text
    rid = big.json()["id"]
    approvers = sorted(live.approvers)
    r1 = live.http["approver"].post(
        f"/v1/sign-requests/{rid}/approvals",
        headers={"Idempotency-Key": "la1"},
        json={"approval": _live_approval(live, rid, approvers[0])},
    )
    assert r1.status_code == 200 and r1.json()["status"] == "pending_approval", r1.text
    r2 = live.http["approver"].post(
        f"/v1/sign-requests/{rid}/approvals",
        headers={"Idempotency-Key": "la2"},
        json={"approval": _live_approval(live, rid, approvers[1])},
    )
    assert r2.status_code == 200 and r2.json()["status"] in ("signing", "signed"), r2.text
    done = _poll(live, rid)
    assert done["status"] == "signed", done
    signed_tx = done["result"]["signed_tx"]
    assert Account.recover_transaction(signed_tx) == address
    # the signed transaction is the approved one: same fields, value 3 ETH
    decoded = rlp.decode(bytes.fromhex(signed_tx[4:]))
    assert int.from_bytes(decoded[6], "big") == 3 * ETH_LIMIT
    assert keccak(bytes.fromhex(unsigned_tx(3 * ETH_LIMIT, nonce=2)[2:])) == bytes.fromhex(
        done["message"]
    )
    v = live.http["auditor"].get("/v1/audit/verify").json()
    assert v["ok"], v
    # three approvals at once on another request: signing starts (and signs) once
    other = _create(live, kid, 4 * ETH_LIMIT, 3)
    rid = other.json()["id"]
    approvals = [_live_approval(live, rid, a) for a in approvers]

    def post(i: int) -> int:
        return (
            live.http["approver"]
            .post(
                f"/v1/sign-requests/{rid}/approvals",
                headers={"Idempotency-Key": f"cc{i}"},
                json={"approval": approvals[i]},
            )
            .status_code
        )

    with ThreadPoolExecutor(3) as pool:
        codes = sorted(pool.map(post, range(3)))
    assert codes.count(200) >= 2 and set(codes) <= {200, 409}, codes
    assert _poll(live, rid)["status"] == "signed"
    mine, cursor = [], None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = live.http["auditor"].get("/v1/audit", params=params).json()
        mine += [e["action"] for e in page["items"] if e["subject"] == rid]
        if not (cursor := page["next_cursor"]):
            break
    assert mine.count("sign.approved") == 1 and mine.count("sign.signed") == 1, mine
