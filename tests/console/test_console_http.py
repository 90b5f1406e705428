"""The console over HTTP, without a browser (issue 15, slices 2 and 3): the coordinator app
(real SQLite database, real approval desk; no signer nodes, so a request that reaches
``signing`` goes no further, which is enough here), a software authenticator
(tests/console/authenticator.py) in place of the browser's. Web security: the CSP and
framing headers, the session cookie's attributes, CSRF on every state change, sessions that
expire, a new session id at sign-in. Approvals: a fresh assertion over the request's own
statement each time; one made for something else, or none at all, is refused with its
reason. The browser end to end is tests/console/test_console_browser.py."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.console.routes import ConsoleError
from api.console.sessions import COOKIE, CSP
from api.problems import TYPE_PREFIX
from custody import policy as pol
from custody import problem_types
from custody.cluster import ETH_LIMIT, TREASURY
from tests.api.conftest import Api, make_api
from tests.api.conftest import test_policy as api_policy
from tests.api.test_approvals import post_tx
from tests.console.authenticator import (
    UP,
    SoftAuthenticator,
    assertion_json,
    registration_json,
)

ORIGIN = "https://localhost"
ALICE = SoftAuthenticator(origins=(ORIGIN,))


def _policy() -> pol.Policy:
    """The API tests' policy with passkey approver ``alice`` in the treasury group."""
    base = api_policy()
    groups = tuple(
        pol.ApproverGroup(g.group_id, (*g.approvers, pol.Approver("alice", b"", ALICE.credential)))
        if g.group_id == TREASURY
        else g
        for g in base.approver_groups
    )
    return pol.Policy(base.rules, base.allowlists, base.wallets, groups)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path, policy=_policy())


@pytest.fixture
def web(api: Api) -> TestClient:
    """A browser-like client on https://localhost (Secure cookies are sent over https)."""
    return TestClient(api.app, base_url=ORIGIN, follow_redirects=False)


def csrf(page: str) -> str:
    m = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert m, page
    return m.group(1)


def slug(r: Any) -> str:
    """The problem type's slug of an RFC 9457 answer (and its document is one)."""
    assert r.headers["content-type"] == "application/problem+json", r.headers
    doc = r.json()
    assert doc["status"] == r.status_code and doc["title"], doc
    assert doc["type"].startswith(TYPE_PREFIX), doc
    return str(doc["type"]).removeprefix(TYPE_PREFIX)


def post(web: TestClient, url: str, token: str, body: Any = None) -> Any:
    return web.post(url, json=body or {}, headers={"X-CSRF-Token": token})


def sign_in(web: TestClient, auth: SoftAuthenticator = ALICE, **knobs: Any) -> Any:
    token = csrf(web.get("/console").text)
    options = post(web, "/console/login/options", token).json()
    origin = knobs.pop("origin", ORIGIN)
    return post(web, "/console/login/verify", token, assertion_json(auth, options, origin, **knobs))


def page_token(web: TestClient, url: str) -> str:
    r = web.get(url)
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return csrf(r.text)


def pending(api: Api, value: int = 2 * ETH_LIMIT, idem: str = "big") -> str:
    kid = getattr(api, "_kid", None) or api.add_key()
    api._kid = kid  # type: ignore[attr-defined]
    r = post_tx(api, kid, value, idem)
    assert r.status_code == 202 and r.json()["status"] == "pending_approval", r.text
    return str(r.json()["id"])


def decide(web: TestClient, token: str, rid: str, decision: str = "approve", **knobs: Any) -> Any:
    options = post(web, f"/console/requests/{rid}/challenge", token, {"decision": decision})
    assert options.status_code == 200, options.text
    cred = assertion_json(ALICE, options.json(), knobs.pop("origin", ORIGIN), **knobs)
    return post(
        web, f"/console/requests/{rid}/decide", token, {"decision": decision, "credential": cred}
    )


# -- web security ---------------------------------------------------------------------------


def test_every_console_response_carries_the_security_headers_and_no_inline_script(
    web: TestClient,
) -> None:
    for url in ("/console", "/console/register", "/console/static/console.js"):
        r = web.get(url)
        assert r.status_code == 200, url
        assert r.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
        assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
    for url in ("/console", "/console/register"):
        html = web.get(url).text
        scripts = re.findall(r"<script\b[^>]*>", html)
        assert scripts and all(re.search(r'\ssrc="/console/static/', s) for s in scripts), scripts
        assert not re.search(r"<script\b[^>]*>(?!</script>)", html)  # no inline body
        assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html
    # an API route keeps its own headers (the console's apply under /console only)
    assert "content-security-policy" not in web.get("/v1/health").headers


def test_the_session_cookie_is_host_only_httponly_secure_and_strict(web: TestClient) -> None:
    cookie = web.get("/console").headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path"} <= attrs and "domain" not in attrs
    assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()


def test_csrf_is_required_on_every_state_change(api: Api, web: TestClient) -> None:
    token = csrf(web.get("/console").text)
    for url in (
        "/console/login/options",
        "/console/login/verify",
        "/console/register/options",
        "/console/register/verify",
        "/console/logout",
        "/console/requests/sr_x/challenge",
        "/console/requests/sr_x/decide",
    ):
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": token + "x"}):
            r = web.post(url, json={}, headers=headers)
            assert (r.status_code, slug(r)) == (403, "console-csrf"), (url, headers)
    # another visitor's token is no good either (tokens are per session)
    other = TestClient(api.app, base_url=ORIGIN)
    r = other.post("/console/login/options", json={}, headers={"X-CSRF-Token": token})
    assert r.status_code == 403
    assert post(web, "/console/login/options", token).status_code == 200


def test_sign_in_gives_a_new_session_and_sessions_expire(api: Api, web: TestClient) -> None:
    before = web.get("/console").cookies.get(COOKIE) or web.cookies.get(COOKIE)
    r = sign_in(web)
    assert r.status_code == 200 and r.json()["approver_id"] == "alice", r.text
    after = web.cookies.get(COOKIE)
    assert after and after != before  # no session fixation
    assert web.get("/console/queue").status_code == 200
    sessions = api.app.state.console_sessions
    now = sessions.clock()
    sessions.clock = lambda: now + sessions.idle + 1  # idle too long
    r = web.get("/console/queue")
    assert (r.status_code, r.headers["location"]) == (303, "/console")
    sessions.clock = lambda: now
    assert sign_in(web).status_code == 200
    t = now
    for _ in range(int(sessions.lifetime // (sessions.idle / 2)) + 2):  # active, but too long
        t += sessions.idle / 2
        sessions.clock = lambda t=t: t
        last = web.get("/console/queue")
    assert last.status_code == 303


def test_sign_in_refuses_an_unverified_user_another_origin_and_an_unknown_passkey(
    web: TestClient,
) -> None:
    r = sign_in(web, flags=UP)
    assert r.status_code == 403 and "verif" in r.json()["detail"].lower(), r.text
    r = sign_in(web, origin="https://evil.example")
    assert r.status_code == 403 and slug(r) == "console-sign-in-refused"
    r = sign_in(web, SoftAuthenticator(origins=(ORIGIN,)))
    assert r.status_code == 403 and slug(r) == "console-unknown-passkey"
    assert web.get("/console/queue").status_code == 303  # still signed out


# -- registration ---------------------------------------------------------------------------


def test_registration_needs_an_approver_token_and_waits_for_governance(
    api: Api, web: TestClient
) -> None:
    token = page_token(web, "/console/register")
    for bad, code in (
        ("tpwc_nope", "console-token-refused"),
        (api.tokens["requester"], "console-not-approver"),
    ):
        r = post(web, "/console/register/options", token, {"token": bad})
        assert slug(r) == code
    r = post(web, "/console/register/options", token, {"token": api.tokens["approver"]})
    options = r.json()
    assert options["rp"]["id"] == "localhost"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    bob = SoftAuthenticator(origins=(ORIGIN,))
    reg = post(web, "/console/register/verify", token, registration_json(bob, options, ORIGIN))
    doc = reg.json()
    assert reg.status_code == 200 and doc["status"] == "pending-governance", doc
    assert doc["approver_id"] == "treasury-desk"  # the approver token's principal
    entry = doc["policy_entry"]["passkey"]
    assert bytes.fromhex(entry["public_key"]) == bob.credential.public_key
    assert entry["origins"] == [ORIGIN] and entry["rp_id"] == "localhost"
    # the challenge is single-use
    again = post(web, "/console/register/verify", token, registration_json(bob, options, ORIGIN))
    assert slug(again) == "console-no-ceremony"
    # bob can sign in, sees that governance has not admitted him, and can decide nothing
    assert sign_in(web, bob).status_code == 200
    q = web.get("/console/queue").text
    assert 'id="pending-governance"' in q
    rid = pending(api)
    t = csrf(q)
    r = post(web, f"/console/requests/{rid}/challenge", t, {"decision": "approve"})
    assert slug(r) == "console-not-in-group"


# -- the queue and decisions ----------------------------------------------------------------


def test_the_queue_shows_a_request_decoded_and_a_passkey_approval_counts(
    api: Api, web: TestClient
) -> None:
    rid = pending(api, 2 * ETH_LIMIT + ETH_LIMIT // 4)
    assert sign_in(web).status_code == 200
    q = web.get("/console/queue").text
    assert rid in q and "2.25 ETH" in q and "eth-over-limit" in q
    assert str(2 * ETH_LIMIT + ETH_LIMIT // 4) not in q  # never raw base units
    page = web.get(f"/console/requests/{rid}").text
    for text in ("Ethereum mainnet (chain id 1)", "2.25 ETH", "eth-over-limit", "payments-bot"):
        assert text in page, text
    assert "allowlist" in page and 'data-decision="approve"' in page
    token = csrf(page)
    r = decide(web, token, rid)
    assert r.status_code == 200 and r.json()["status"] == "pending_approval", r.text
    view = api.client.get(f"/v1/sign-requests/{rid}", headers=api.h("auditor")).json()
    got = view["approval"]["approvals"]
    assert [(a["approver_id"], a["decision"], a["counts"]) for a in got] == [
        ("alice", "approve", True)
    ]
    assert view["approval"]["missing"] == [{"group": TREASURY, "needed": 1, "m": 2}]
    assert "alice: approve" in web.get(f"/console/requests/{rid}").text


def test_a_passkey_rejection_rejects(api: Api, web: TestClient) -> None:
    rid = pending(api)
    assert sign_in(web).status_code == 200
    r = decide(web, page_token(web, f"/console/requests/{rid}"), rid, "reject")
    assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
    view = api.client.get(f"/v1/sign-requests/{rid}", headers=api.h("auditor")).json()
    assert view["status"] == "rejected"


def test_no_approval_by_session_alone_nor_by_an_assertion_made_for_anything_else(
    api: Api, web: TestClient
) -> None:
    a, b = pending(api, idem="a"), pending(api, idem="b")
    assert sign_in(web).status_code == 200
    token = page_token(web, f"/console/requests/{a}")
    # a session cookie and CSRF token, but no assertion
    r = post(web, f"/console/requests/{a}/decide", token, {"decision": "approve"})
    assert (r.status_code, slug(r)) == (400, "console-assertion-missing")
    # an assertion, but no statement asked for (no challenge: nothing to sign)
    login_options = post(web, "/console/login/options", token).json()
    stray = assertion_json(ALICE, login_options, ORIGIN)
    r = post(
        web, f"/console/requests/{a}/decide", token, {"decision": "approve", "credential": stray}
    )
    assert slug(r) == "console-no-ceremony"
    # a login assertion slipped in where the statement's was asked for
    post(web, f"/console/requests/{a}/challenge", token, {"decision": "approve"})
    r = post(
        web, f"/console/requests/{a}/decide", token, {"decision": "approve", "credential": stray}
    )
    assert (r.status_code, slug(r)) == (422, "passkey-challenge-mismatch"), r.text
    # an assertion over request a's statement, posted for request b
    options_a = post(web, f"/console/requests/{a}/challenge", token, {"decision": "approve"})
    for_a = assertion_json(ALICE, options_a.json(), ORIGIN)
    post(web, f"/console/requests/{b}/challenge", token, {"decision": "approve"})
    r = post(
        web, f"/console/requests/{b}/decide", token, {"decision": "approve", "credential": for_a}
    )
    assert (r.status_code, slug(r)) == (422, "passkey-challenge-mismatch"), r.text
    # UV cleared, and another origin: refused by the approval desk with their codes
    r = decide(web, token, a, flags=UP)
    assert (r.status_code, slug(r)) == (422, "passkey-user-not-verified"), r.text
    r = decide(web, token, a, origin="https://evil.example")
    assert (r.status_code, slug(r)) == (422, "passkey-wrong-origin"), r.text
    view = api.client.get(f"/v1/sign-requests/{a}", headers=api.h("auditor")).json()
    assert view["approval"]["approvals"] == []  # nothing of the above was stored
    # a signed-out visitor gets nothing either
    fresh = TestClient(api.app, base_url=ORIGIN)
    t = csrf(fresh.get("/console").text)
    r = post(fresh, f"/console/requests/{a}/challenge", t, {"decision": "approve"})
    assert slug(r) == "console-signed-out"
    assert fresh.get(f"/console/requests/{a}", follow_redirects=False).status_code == 303


def test_policies_with_a_dry_run_the_audit_log_and_webhook_deliveries(
    api: Api, web: TestClient
) -> None:
    from tests.api.test_approvals import unsigned_tx

    kid = api.add_key()
    api._kid = kid  # type: ignore[attr-defined]  # pending() signs with it
    assert sign_in(web).status_code == 200
    page = web.get("/console/policies").text
    assert "eth-over-limit" in page and "alice (passkey)" in page and "(key file)" in page
    token = csrf(page)
    form = {"key_id": kid, "kind": "evm-tx", "payload": unsigned_tx(2 * ETH_LIMIT)}
    r = web.post("/console/policies/dry-run", data=form)  # no CSRF token: refused
    assert r.status_code == 403
    r = web.post("/console/policies/dry-run", data=form, headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    assert "APPROVALS REQUIRED by rule eth-over-limit" in r.text and "2 of treasury" in r.text
    small = {**form, "payload": unsigned_tx(ETH_LIMIT // 2)}
    r = web.post("/console/policies/dry-run", data=small, headers={"X-CSRF-Token": token})
    assert "ALLOW by rule eth-under-limit" in r.text
    bad = {**form, "payload": "0x02zz"}
    r = web.post("/console/policies/dry-run", data=bad, headers={"X-CSRF-Token": token})
    assert "refused:" in r.text
    pending(api)
    audit = web.get("/console/audit").text
    assert "The hash chain verifies" in audit and "sign.request" in audit.replace("_", ".")
    assert web.get("/console/webhooks").status_code == 200
    for url in ("/console/policies", "/console/audit", "/console/webhooks", "/console/history"):
        assert (
            TestClient(api.app, base_url=ORIGIN).get(url, follow_redirects=False).status_code == 303
        )


# -- errors: RFC 9457 problem documents, or a page for a browser -----------------------------


def test_console_errors_are_problem_documents_for_scripts_and_pages_for_browsers(
    web: TestClient,
) -> None:
    r = web.post("/console/login/options", json={}, headers={"Accept": "application/json"})
    assert slug(r) == "console-csrf" and r.status_code == 403
    doc = r.json()
    entry = problem_types.lookup("console-csrf")
    assert entry is not None
    assert doc == {
        "type": "urn:tpwc:problem:console-csrf",
        "title": entry.title,
        "status": 403,
        "detail": "missing or wrong CSRF token (reload the page)",
        "instance": "/console/login/options",
    }
    assert r.headers["content-security-policy"] == CSP  # a console answer still
    # the type resolves on the coordinator, like every problem type
    resolved = web.get("/problems/console-csrf", headers={"Accept": "application/json"})
    assert resolved.status_code == 200 and resolved.json()["status"] == 403
    assert sign_in(web).status_code == 200
    # a browser navigating to a request that does not exist: the console's error page
    page = web.get("/console/requests/sr_nope", headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "no sign request &#39;sr_nope&#39;" in page.text
    assert 'href="/problems/not-found"' in page.text and "urn:tpwc:problem:not-found" in page.text
    assert page.headers["content-security-policy"] == CSP
    assert not re.search(r"<script\b[^>]*>(?!</script>)", page.text)  # no inline script
    assert "Sign out" in page.text  # the page is the console's, with its navigation
    # the same URL asked by a script: the problem document
    r = web.get("/console/requests/sr_nope", headers={"Accept": "application/json"})
    assert slug(r) == "not-found" and r.json()["detail"] == "no sign request 'sr_nope'"


def test_every_console_error_is_a_catalogued_problem_type_with_its_status() -> None:
    """Each ``ConsoleError(status, "slug", ...)`` in api/console names a catalogued type
    with that status (so its ``type`` resolves and its title is the catalogue's)."""
    found = []
    for f in sorted((Path(__file__).parents[2] / "api" / "console").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ConsoleError":
                status, name = (a.value for a in node.args[:2] if isinstance(a, ast.Constant))
                found.append((name, status))
    assert len(found) >= 20, found
    for name, status in found:
        entry = problem_types.lookup(name)
        assert entry is not None and entry.status == status, (name, status)
    with pytest.raises(AssertionError, match="not catalogued"):
        ConsoleError(400, "console-no-such-thing", "x")
    with pytest.raises(AssertionError, match="not catalogued"):
        ConsoleError(500, "console-csrf", "the catalogued status is 403")


# -- risk flags from the payment core: shown, labelled, never decided on ---------------------


def test_a_payment_the_payment_core_sends_shows_its_risk_flags_and_the_nodes_never_get_them(
    api: Api, web: TestClient, tmp_path: Path
) -> None:
    """The real payment core (SQLite, the Ethereum rail on an in-process chain) authorizes
    a 2 ETH payment (a first payment to this destination: score 15), and its worker asks
    custody to sign through the SDK, as the payment service does: the request waits for
    approvals and the console shows the core's report, labelled as the core's."""
    from custody.client import CustodyClient
    from payments import risk
    from payments.core import PaymentCore
    from payments.db import create_schema, make_engine
    from payments.evm import EthTesterChain
    from payments.evm_rail import EthereumRail
    from payments.evm_rail import checks as evm_checks
    from payments.sanctions import SanctionsList
    from payments.settings import PACKAGE_DATA
    from payments.worker import Worker, risk_report
    from tests.api.test_approvals import DEST, stored_body

    kid = api.add_key()
    api._kid = kid  # type: ignore[attr-defined]
    sdk = CustodyClient("http://testserver", api.tokens["requester"], http=TestClient(api.app))
    engine = make_engine(f"sqlite:///{tmp_path / 'payments.db'}")
    try:
        create_schema(engine)
        chain = EthTesterChain()
        rail = EthereumRail(engine, chain, sdk.get_key(kid))
        chain.fund(rail.address, 10 * 10**18)
        core = PaymentCore(
            engine,
            SanctionsList.load(PACKAGE_DATA / "sanctions"),
            risk.Settings(),
            {"ethereum": rail},
            dict(evm_checks(rail)),
        )
        aid, _ = core.open_account({"owner": "ann", "asset": "ETH", "decimals": 9}, "ann")
        core.deposit(aid, 5 * 10**9, "dep-ann")  # 5 ETH, ledgered in gwei
        pid, _ = core.create_payment(
            {"account_id": aid, "amount": 2 * 10**9, "destination": DEST, "rail": "ethereum"},
            "pay-1",
        )
        p = core.get(pid)
        assert p["status"] == "authorized" and p["risk_score"] == 15, p
        report = risk_report(p)
        assert report == {"score": 15, "flags": [f"first payment to destination {DEST}"]}
        assert Worker(core, sdk).advance(pid) == "awaiting_approval"
        rid = str(core.get(pid)["sign_request_id"])
    finally:
        engine.dispose()
    plain = pending(api, idem="wallet-app")  # a wallet app's request: no report
    # what the nodes are sent (the stored canonical body) has no trace of the report
    assert "risk" not in stored_body(api, rid) and "first payment" not in str(stored_body(api, rid))
    assert sign_in(web).status_code == 200
    page = web.get(f"/console/requests/{rid}").text
    assert "Risk flags reported by the payment core" in page
    assert "do not check them and decide nothing on them" in page
    assert report["flags"][0] in page and "Risk score <strong>15</strong> of 100" in page
    other = web.get(f"/console/requests/{plain}").text
    assert "Risk flags reported" not in other and 'id="risk-flags"' not in other
    queue = web.get("/console/queue").text
    rows = {r: row for row in queue.split("<tr>") for r in (rid, plain) if r in row}
    assert "score 15/100 · 1 flag" in rows[rid] and report["flags"][0] in rows[rid]
    assert "none reported" in rows[plain] and "score" not in rows[plain]
    assert "Risk reported by the payment core" in queue  # the column's heading
    # the audit log keeps the report with the request's entry
    audit = api.client.get("/v1/audit", headers=api.h("auditor"), params={"limit": 50})
    assert audit.status_code == 200 and report["flags"][0] in audit.text


#: oversized or malformed risk reports, each a 422 problem
BAD_RISK: list[Any] = [
    {"flags": [f"flag {i}" for i in range(17)]},  # over 16 flags
    {"flags": ["x" * 301]},  # a flag over 300 characters
    {"flags": ["line\nbreak"]},  # a control character
    {"flags": [""]},
    {"flags": [7]},
    {"flags": "not a list"},
    {"score": 101, "flags": []},
    {"score": -1, "flags": []},
    {"flags": [], "verdict": "allow"},  # an unknown member
    ["a list"],
]


def test_an_oversized_or_malformed_risk_report_is_a_422_problem(api: Api) -> None:
    from tests.api.test_approvals import post_tx

    kid = api.add_key()
    before = api.client.get("/v1/sign-requests", headers=api.h("auditor")).json()
    for i, risk in enumerate(BAD_RISK):
        r = post_tx(api, kid, 2 * ETH_LIMIT, f"bad-risk-{i}", risk=risk)
        assert r.status_code == 422 and slug(r) == "validation", (risk, r.text)
        assert any(e["loc"][:2] == ["body", "risk"] for e in r.json()["errors"]), r.json()
    after = api.client.get("/v1/sign-requests", headers=api.h("auditor")).json()
    assert after == before  # nothing stored
    # at the bounds: accepted
    ok = {"score": 100, "flags": ["y" * 300] * 16}
    assert post_tx(api, kid, 2 * ETH_LIMIT, "risk-at-bounds", risk=ok).status_code == 202
