"""Console sessions in the coordinator database (issue 15): two coordinator apps on one
database (as tests/api/test_postgres.py runs them; PostgreSQL with
``CUSTODY_TEST_DATABASE=postgresql``, else one SQLite file) serve one browser: a session
made on one works on the other, a WebAuthn ceremony started on one finishes on the other
and is taken once, a restarted coordinator keeps everyone signed in. The table keeps the
SHA-256 of each token, never the token; expired rows are swept."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from nacl.signing import SigningKey
from sqlalchemy import select

from api.console.sessions import COOKIE, Sessions, token_hash
from api.db import ConsoleSession
from custody import governance as gov
from tests import pg
from tests.api.conftest import Api, make_api
from tests.api.test_postgres import _entered
from tests.console.authenticator import assertion_json
from tests.console.test_console_http import ALICE, ORIGIN, _policy, csrf, pending, post, slug


def _genesis() -> bytes:
    """One signed genesis for every coordinator here: the console tests' policy (passkey
    approver alice in the treasury group)."""
    officer = SigningKey.generate()
    body = gov.Governance(
        cluster_id="tpwc-dev",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(gov.Officer("test-officer", bytes(officer.verify_key)),),
        quorum=1,
        roster=(),
        raw_signing_keys=frozenset(),
        policy=_policy(),
    )
    return gov.unsigned(body).with_signature(officer, "test-officer").encode()


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    if pg.coordinator_on_postgres():
        url = pg.fresh_database("console")
        yield url
        pg.drop_database(url)
    else:
        yield f"sqlite:///{tmp_path / 'shared.db'}"


def _browser(api: Api, token: str | None = None) -> TestClient:
    """A client on https://localhost carrying the session cookie ``token`` (no jar)."""
    c = TestClient(api.app, base_url=ORIGIN, follow_redirects=False, cookies={})
    if token is not None:
        c.headers["Cookie"] = f"{COOKIE}={token}"
    return c


def _sign_in(api: Api) -> str:
    """Sign alice in on ``api``; the new session's token (from Set-Cookie)."""
    web = TestClient(api.app, base_url=ORIGIN, follow_redirects=False)
    token = csrf(web.get("/console").text)
    options = post(web, "/console/login/options", token).json()
    r = post(web, "/console/login/verify", token, assertion_json(ALICE, options, ORIGIN))
    assert r.status_code == 200, r.text
    cookie = web.cookies.get(COOKIE)
    assert cookie
    return str(cookie)


def _rows(api: Api) -> list[ConsoleSession]:
    with api.app.state.db.session() as s:
        rows = list(s.scalars(select(ConsoleSession)))
        s.expunge_all()
    return rows


def _page_csrf(web: TestClient, url: str) -> str:
    r = web.get(url)
    assert r.status_code == 200, (url, r.status_code, r.headers.get("location"))
    return csrf(r.text)


def test_two_coordinators_on_one_database_serve_one_browser(tmp_path: Path, db_url: str) -> None:
    g = _genesis()
    with ExitStack() as stack:
        a = stack.enter_context(_entered(make_api(tmp_path / "a", genesis=g, database_url=db_url)))
        b = stack.enter_context(_entered(make_api(tmp_path / "b", genesis=g, database_url=db_url)))
        token = _sign_in(a)
        on_a, on_b = _browser(a, token), _browser(b, token)
        # the session made on coordinator a is the same session on coordinator b
        page = on_b.get("/console/queue")
        assert page.status_code == 200 and "Signed in as <strong>alice</strong>" in page.text
        assert csrf(page.text) == _page_csrf(on_a, "/console/queue")  # one CSRF secret
        # a decision's challenge asked on a, its assertion posted on b
        a._kid = a.add_key()  # type: ignore[attr-defined]
        rid = pending(a)
        t = _page_csrf(on_a, f"/console/requests/{rid}")
        options = post(on_a, f"/console/requests/{rid}/challenge", t, {"decision": "approve"})
        assert options.status_code == 200, options.text
        cred = assertion_json(ALICE, options.json(), ORIGIN)
        body = {"decision": "approve", "credential": cred}
        r = post(on_b, f"/console/requests/{rid}/decide", t, body)
        assert r.status_code == 200 and r.json()["status"] == "pending_approval", r.text
        # the ceremony was taken once: the same assertion again, on either, finds none
        for web in (on_a, on_b):
            again = post(web, f"/console/requests/{rid}/decide", t, body)
            assert (again.status_code, slug(again)) == (400, "console-no-ceremony")
        view = a.client.get(f"/v1/sign-requests/{rid}", headers=a.h("auditor")).json()
        assert [x["approver_id"] for x in view["approval"]["approvals"]] == ["alice"]
        # a sign-in ceremony: options on b, verify on a, once
        anon = TestClient(b.app, base_url=ORIGIN, follow_redirects=False)
        ct = csrf(anon.get("/console").text)
        anon_token = anon.cookies.get(COOKIE)
        login = post(anon, "/console/login/options", ct).json()
        assertion = assertion_json(ALICE, login, ORIGIN)
        first = post(_browser(a, anon_token), "/console/login/verify", ct, assertion)
        assert first.status_code == 200, first.text
        replay = post(_browser(b, anon_token), "/console/login/verify", ct, assertion)
        assert replay.status_code in (400, 403)  # the anonymous session ended at sign-in
        # signing out on b ends the session on a
        assert post(on_b, "/console/logout", t).status_code == 200
        assert on_a.get("/console/queue").status_code == 303


def test_the_table_keeps_a_hash_of_the_token_never_the_token(tmp_path: Path, db_url: str) -> None:
    g = _genesis()
    with _entered(make_api(tmp_path / "a", genesis=g, database_url=db_url)) as a:
        token = _sign_in(a)
        rows = _rows(a)
        signed = [r for r in rows if r.approver_id == "alice"]
        assert len(signed) == 1
        row = signed[0]
        assert row.token_sha256 == hashlib.sha256(token.encode()).hexdigest() == token_hash(token)
        for r in rows:  # no column of any row holds a token
            assert token not in repr({c.name: getattr(r, c.name) for c in r.__table__.columns})
        assert row.credential_id == ALICE.credential.credential_id.hex()
        assert row.expires_ms > row.seen_ms >= row.signed_in_ms  # type: ignore[operator]
        # a token is only as good as its hash: a row's hash used as a cookie signs nobody in
        assert _browser(a, row.token_sha256).get("/console/queue").status_code == 303


def test_a_restarted_coordinator_keeps_its_sessions(tmp_path: Path, db_url: str) -> None:
    g = _genesis()
    with _entered(make_api(tmp_path / "a", genesis=g, database_url=db_url)) as a:
        token = _sign_in(a)
        assert _browser(a, token).get("/console/queue").status_code == 200
    # the app is gone (its process state with it); a new one on the same data and database
    with _entered(make_api(tmp_path / "a", genesis=g, database_url=db_url)) as again:
        page = _browser(again, token).get("/console/queue")
        assert page.status_code == 200 and "alice" in page.text


def test_expired_sessions_are_refused_and_swept(tmp_path: Path, db_url: str) -> None:
    g = _genesis()
    with _entered(make_api(tmp_path / "a", genesis=g, database_url=db_url)) as a:
        token = _sign_in(a)
        for _ in range(3):  # anonymous visitors
            assert _browser(a).get("/console").status_code == 200
        sessions: Sessions = a.app.state.console_sessions
        assert len(_rows(a)) == 4
        assert sessions.sweep() == 0  # nothing expired yet
        now = sessions.clock()
        sessions.clock = lambda: now + sessions.idle + 1
        assert sessions.sweep() == 4
        assert _rows(a) == []
        assert _browser(a, token).get("/console/queue").status_code == 303
        # met before a sweep, an expired row is refused and deleted there and then
        sessions.clock = lambda: now
        token = _sign_in(a)
        sessions.clock = lambda: now + sessions.lifetime + 1
        assert sessions.get(token) is None
        assert token_hash(token) not in {r.token_sha256 for r in _rows(a)}
