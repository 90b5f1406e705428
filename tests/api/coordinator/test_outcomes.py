"""api.coordinator.outcomes: a sign request's outcome is stored with its audit entry, or
the signature is withheld."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from api.coordinator import SignResult
from tests.api.coordinator.inflight import in_flight
from tests.api.test_sign_requests import post_sr, stored_digest


def test_signature_withheld_when_audit_write_fails(dev_api) -> None:  # noqa: ANN001
    kid = dev_api.add_key("ed25519")
    answer = post_sr(dev_api, kid, "w").json()  # no nodes here: failed, with the request
    sid = answer.get("sign_request", answer)["id"]
    with dev_api.app.state.db.session() as s:  # a real database failure: the table is gone
        s.execute(text("DROP TABLE audit"))
    outcomes = dev_api.app.state.coordinator.outcomes
    in_flight(dev_api, sid)  # the queue's in-flight state (issue 14)
    asyncio.run(
        outcomes.record(
            sid,
            kid,
            SignResult(b"\x01" * 64, None, [1, 2]),
            None,
            [],
            request_digest=stored_digest(dev_api, sid),
        )
    )
    got = dev_api.client.get(f"/v1/sign-requests/{sid}", headers=dev_api.h("requester")).json()
    assert got["status"] == "failed" and got["signature"] is None
    assert got["error"]["type"].endswith("audit-failed")


def test_outcome_is_stored_with_its_audit_entry(api) -> None:  # noqa: ANN001
    kid, sk = api.add_signing_key()
    sid = post_sr(api, kid, "o").json()["id"]
    sig = sk.sign(bytes.fromhex("11" * 32)).signature
    outcomes = api.app.state.coordinator.outcomes
    in_flight(api, sid)  # the queue's in-flight state (issue 14)
    asyncio.run(
        outcomes.record(
            sid,
            kid,
            SignResult(sig, None, [1, 3]),
            None,
            [],
            request_digest=stored_digest(api, sid),
        )
    )
    got = api.client.get(f"/v1/sign-requests/{sid}", headers=api.h("requester")).json()
    assert got["status"] == "signed" and got["signature"] == sig.hex()
    assert got["signers"] == [1, 3]
    items = api.client.get("/v1/audit", headers=api.h("auditor")).json()["items"]
    assert items[-1]["action"] == "sign.signed" and items[-1]["data"]["key_id"] == kid
    v = api.client.get("/v1/audit/verify", headers=api.h("auditor")).json()
    assert v["ok"] is True


def test_every_attempted_signer_set_is_in_the_chain_for_the_nodes(api) -> None:  # noqa: ANN001
    """A failed attempt's nodes may have released shares: each attempted signer set gets a
    ``sign.attempt`` entry whose ``sign`` the nodes match against their release logs."""
    kid, sk = api.add_signing_key()
    sid = post_sr(api, kid, "a").json()["id"]
    sig = sk.sign(bytes.fromhex("11" * 32)).signature
    outcomes = api.app.state.coordinator.outcomes
    attempted = [(1, 2), (1, 3), (1, 3)]  # (1, 2) failed, (1, 3) signed (twice: a confirmation)
    in_flight(api, sid)  # the queue's in-flight state (issue 14)
    asyncio.run(
        outcomes.record(
            sid,
            kid,
            SignResult(sig, None, [1, 3]),
            None,
            [],
            request_digest=stored_digest(api, sid),
            attempted=attempted,
        )
    )
    items = api.client.get("/v1/audit", headers=api.h("auditor")).json()["items"]
    actions = [(i["action"], i["data"].get("signers")) for i in items[-2:]]
    assert actions == [("sign.attempt", [1, 2]), ("sign.signed", [1, 3])]
    assert items[-2]["data"]["request_digest"] == items[-1]["data"]["request_digest"]
    assert api.client.get("/v1/audit/verify", headers=api.h("auditor")).json()["ok"] is True
