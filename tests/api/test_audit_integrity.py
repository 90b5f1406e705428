"""Audit tampering, each by writing the coordinator's database behind the API (as the
coordinator host or a backup operator could: its SQLite file through sqlite3, or under
CUSTODY_TEST_DATABASE=postgresql its PostgreSQL database through psycopg, the same SQL),
and each named by ``/v1/audit/verify``:
edit, insert, reorder, delete, re-chain, truncate, swapped signature, forged credential.
Re-chain and truncate are caught against checkpoints signed by node identity keys
(pynacl keys here; tests/e2e/test_cluster.py has real nodes co-signing over HTTP). The
chain is the nodes' one definition (custody.auditchain)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nacl.signing import SigningKey
from psycopg.types.string import TextLoader
from sqlalchemy.engine import make_url

from api import audit
from api.auth import hash_token, new_token, revoke_credential
from api.db import Checkpoint, Node
from tests.api.conftest import Api
from tests.api.test_sign_requests import post_sr, stored_digest

CLUSTER = "tpwc-dev"


def db_file(api: Api) -> Path:
    return Path(api.app.state.settings.data_dir) / "coordinator.db"


class _PgRaw:
    """A psycopg connection to the coordinator's PostgreSQL database (autocommit) that takes
    the tests' sqlite3-style SQL: ``?`` placeholders, ``json`` columns read back as the text
    stored (as sqlite3 reads them), ``with`` leaving it open as sqlite3's does."""

    def __init__(self, url: str) -> None:
        u = make_url(url)
        self.conn = psycopg.connect(
            host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True
        )
        self.conn.adapters.register_loader("json", TextLoader)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        return self.conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]

    def __enter__(self) -> _PgRaw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def raw(api: Api) -> Any:  # noqa: ANN401 - sqlite3.Connection or its PostgreSQL twin
    """A connection to the coordinator's database behind the app's back."""
    url = api.app.state.settings.database_url
    if url.startswith("postgresql"):
        return _PgRaw(url)
    return sqlite3.connect(db_file(api), isolation_level=None)


def fill(api: Api, n: int = 8) -> None:
    with api.app.state.db.session() as s:
        for i in range(n):
            audit.append(s, "test", "test.event", f"subject-{i}", {"i": i})


def verify(api: Api, role: str = "auditor") -> dict[str, Any]:
    r = api.client.get("/v1/audit/verify", headers=api.h(role))
    assert r.status_code == 200, r.text
    return r.json()


def kinds(v: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(f["kind"], f["seq"]) for f in v["findings"]]


def rows(c: Any) -> list[tuple[Any, ...]]:  # noqa: ANN401 - raw()'s connection
    return c.execute(
        "SELECT seq, at, actor, action, subject, data, prev_hash, hash FROM audit ORDER BY seq"
    ).fetchall()


def rehash_from(c: Any, start: int) -> None:  # noqa: ANN401 - raw()'s connection
    """Re-chain every entry from ``start`` on, as a database writer would."""
    import json  # noqa: PLC0415 - test helper only

    prev = c.execute("SELECT hash FROM audit WHERE seq = ?", (start - 1,)).fetchone()[0]
    for seq, at, actor, action, subject, data, _, _ in rows(c):
        if seq < start:
            continue
        e = {
            "seq": seq,
            "at": at,
            "actor": actor,
            "action": action,
            "subject": subject,
            "data": json.loads(data),
        }
        h = audit.entry_hash(prev, e)
        c.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, h, seq))
        prev = h


def add_node(api: Api, node_id: str, party: int) -> SigningKey:
    sk = SigningKey.generate()
    with api.app.state.db.session() as s:
        s.add(
            Node(
                id=node_id,
                party_id=party,
                url=f"http://127.0.0.1:1/{node_id}",
                sign_pk=bytes(sk.verify_key).hex(),
                box_pk="00" * 32,
            )
        )
    return sk


def checkpoint(api: Api, signers: dict[str, SigningKey], forge: bool = False) -> int:
    """Store a checkpoint at the current head, signed as a node would sign it."""
    db = api.app.state.db
    with db.session() as s:
        last = s.query(Checkpoint).order_by(Checkpoint.seq.desc()).first()
        prev_seq, prev_head = (0, audit.GENESIS) if last is None else (last.seq, last.head)
        from api.db import AuditEntry  # noqa: PLC0415 - test helper only

        entries = [  # the node's wire form (custody.auditchain), as the nodes are sent it
            audit.wire(r)
            for r in s.query(AuditEntry).filter(AuditEntry.seq > prev_seq).order_by(AuditEntry.seq)
        ]
        assert entries[0]["prev"] == prev_head
        seq, head = entries[-1]["seq"], entries[-1]["hash"]
        sigs = {
            n: (SigningKey.generate() if forge else sk)
            .sign(audit.checkpoint_statement(CLUSTER, n, seq, head))
            .signature.hex()
            for n, sk in signers.items()
        }
        s.add(Checkpoint(seq=seq, head=head, digests=entries, signatures=sigs))
    return seq


def test_untouched_log_verifies(api: Api) -> None:
    fill(api)
    v = verify(api)
    assert v["ok"] is True and v["findings"] == [] and v["entries"] == 12


def test_edit_is_named(api: Api) -> None:
    fill(api)
    with raw(api) as c:
        c.execute("""UPDATE audit SET data = '{"i": 99}' WHERE seq = 7""")
    v = verify(api)
    assert v["ok"] is False and kinds(v) == [("edited", 7)] and v["first_bad_seq"] == 7


def test_delete_is_named_with_and_without_renumbering(api: Api) -> None:
    fill(api)
    with raw(api) as c:
        c.execute("DELETE FROM audit WHERE seq = 6")
    assert kinds(verify(api)) == [("deleted", 6)]
    with raw(api) as c:
        for (seq,) in c.execute("SELECT seq FROM audit WHERE seq > 6 ORDER BY seq").fetchall():
            c.execute("UPDATE audit SET seq = ? WHERE seq = ?", (seq - 1, seq))
    assert kinds(verify(api)) == [("deleted", 6)]


def test_insert_is_named(api: Api) -> None:
    fill(api)
    with raw(api) as c:
        for (seq,) in c.execute("SELECT seq FROM audit WHERE seq >= 6 ORDER BY seq DESC"):
            c.execute("UPDATE audit SET seq = ? WHERE seq = ?", (seq + 1, seq))
        prev = c.execute("SELECT hash FROM audit WHERE seq = 5").fetchone()[0]
        e = {"seq": 6, "at": "2026-01-01T00:00:00+00:00", "actor": "x", "action": "forged"}
        e |= {"subject": "s", "data": {}}
        c.execute(
            "INSERT INTO audit VALUES (6, ?, 'x', 'forged', 's', '{}', ?, ?)",
            (e["at"], prev, audit.entry_hash(prev, e)),
        )
    v = verify(api)
    assert kinds(v) == [("inserted", 6)] and v["first_bad_seq"] == 6


def test_reorder_is_named(api: Api) -> None:
    fill(api)
    with raw(api) as c:
        a, b = (r for r in rows(c) if r[0] in (6, 7))
        c.execute("DELETE FROM audit WHERE seq IN (6, 7)")
        c.execute("INSERT INTO audit VALUES (6, ?, ?, ?, ?, ?, ?, ?)", b[1:])
        c.execute("INSERT INTO audit VALUES (7, ?, ?, ?, ?, ?, ?, ?)", a[1:])
    assert kinds(verify(api)) == [("reordered", 6)]


def test_rechain_passes_the_chain_but_not_the_node_signed_checkpoint(api: Api) -> None:
    fill(api)
    n1 = add_node(api, "node-1", 1)
    cp = checkpoint(api, {"node-1": n1})
    assert verify(api)["checkpoints"] == {"stored": 1, "anchored": 1, "last_seq": cp}
    with raw(api) as c:
        c.execute("""UPDATE audit SET data = '{"i": 1000}' WHERE seq = 9""")
        rehash_from(c, 9)
    v = verify(api)
    assert kinds(v) == [("rewritten", 9)] and v["first_bad_seq"] == 9


def test_truncate_is_named_against_the_checkpoint(api: Api) -> None:
    fill(api)
    n1 = add_node(api, "node-1", 1)
    cp = checkpoint(api, {"node-1": n1})
    with raw(api) as c:
        c.execute("DELETE FROM audit WHERE seq > 10")
    v = verify(api)
    assert kinds(v) == [("truncated", 11)] and cp == 12


def test_truncate_then_append_is_named(api: Api) -> None:
    fill(api)
    n1 = add_node(api, "node-1", 1)
    checkpoint(api, {"node-1": n1})
    with raw(api) as c:
        c.execute("DELETE FROM audit WHERE seq > 10")
    fill(api, 3)  # the chain grows again, properly linked
    assert kinds(verify(api)) == [("rewritten", 11)]


def test_a_checkpoint_not_signed_by_a_pinned_node_anchors_nothing(api: Api) -> None:
    fill(api)
    add_node(api, "node-1", 1)
    checkpoint(api, {"node-1": SigningKey.generate()}, forge=True)
    v = verify(api)
    assert kinds(v) == [("checkpoint-unsigned", None)]
    assert v["checkpoints"]["anchored"] == 0


def test_forged_credential_is_refused_and_named(api: Api) -> None:
    token = new_token()
    with raw(api) as c:
        c.execute(
            "INSERT INTO credentials (id, role, token_sha256, label, created_at, revoked) "
            "VALUES ('cred_forged', 'admin', ?, '', '2026-01-01 00:00:00', ?)",
            (hash_token(token), False),
        )
    r = api.client.get("/v1/keys", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    v = verify(api)
    assert [(f["kind"], f["subject"]) for f in v["findings"]] == [
        ("credential-forged", "cred_forged")
    ]


def test_a_credential_whose_role_was_edited_is_refused(api: Api) -> None:
    api.app.state.credentials_seen = {}
    with raw(api) as c:
        c.execute(
            "UPDATE credentials SET role = 'admin' WHERE token_sha256 = ?",
            (hash_token(api.tokens["auditor"]),),
        )
    assert api.client.get("/v1/keys", headers=api.h("auditor")).status_code == 401
    assert [f["kind"] for f in verify(api, "admin")["findings"]] == ["credential-forged"]


def test_revocation_is_audited_and_unrevoking_in_the_database_is_caught(api: Api) -> None:
    db = api.app.state.db
    cid = api.client.get("/v1/keys", headers=api.h("requester"))  # warm
    with db.session() as s:
        from api.db import Credential  # noqa: PLC0415 - test helper only

        cid = s.query(Credential).filter_by(token_sha256=hash_token(api.tokens["requester"]))
        cid = cid.one().id
    assert revoke_credential(db, cid, "test-admin")
    api.app.state.credentials_seen = {}
    assert api.client.get("/v1/keys", headers=api.h("requester")).status_code == 401
    assert verify(api)["ok"] is True
    with raw(api) as c:  # un-revoke behind the API: still refused, the audit says revoked
        c.execute("UPDATE credentials SET revoked = ? WHERE id = ?", (False, cid))
    assert api.client.get("/v1/keys", headers=api.h("requester")).status_code == 401
    actions = [
        e["action"] for e in api.client.get("/v1/audit", headers=api.h("auditor")).json()["items"]
    ]
    assert actions.count("credential.create") == 4 and actions[-1] == "credential.revoke"


@pytest.fixture
def signed(api: Api) -> tuple[str, str, SigningKey]:
    """A sign request in ``signed`` state with a real signature (test key)."""
    import asyncio  # noqa: PLC0415 - test helper only

    from api.coordinator import SignResult  # noqa: PLC0415
    from tests.api.coordinator.inflight import in_flight  # noqa: PLC0415

    kid, sk = api.add_signing_key()
    sid = post_sr(api, kid, "sig").json()["id"]
    sig = sk.sign(bytes.fromhex("11" * 32)).signature  # type: ignore[attr-defined]
    outcomes = api.app.state.coordinator.outcomes
    in_flight(api, sid)  # the queue's in-flight state (issue 14)
    asyncio.run(
        outcomes.record(
            sid,
            kid,
            SignResult(sig, None, [1, 2]),
            None,
            [],
            request_digest=stored_digest(api, sid),
        )
    )
    return sid, kid, sk  # type: ignore[return-value]


def test_swapped_signature_is_never_served_as_signed(api: Api, signed: tuple) -> None:
    sid, _, sk = signed
    ok = api.client.get(f"/v1/sign-requests/{sid}", headers=api.h("auditor"))
    assert ok.json()["status"] == "signed"
    other = sk.sign(b"another message").signature.hex()  # valid, for another message
    with raw(api) as c:
        c.execute("UPDATE sign_requests SET signature = ? WHERE id = ?", (other, sid))
    for url in (f"/v1/sign-requests/{sid}", "/v1/sign-requests"):
        r = api.client.get(url, headers=api.h("auditor"))
        assert r.status_code == 500, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("stored-signature-invalid")
        assert r.json()["request_id"] == sid
    v = verify(api)
    assert [(f["kind"], f["subject"]) for f in v["findings"]] == [("signature-invalid", sid)]


def test_deleting_a_recorded_checkpoint_is_named(api: Api) -> None:
    fill(api)
    n1 = add_node(api, "node-1", 1)
    seq = checkpoint(api, {"node-1": n1})
    with api.app.state.db.session() as s:  # as the Checkpointer records it
        audit.append(s, "admin", "audit.checkpoint", f"checkpoint-{seq}", {"seq": seq})
    assert verify(api)["ok"] is True
    with raw(api) as c:
        c.execute("DELETE FROM checkpoints")
    v = verify(api)
    assert kinds(v) == [("checkpoint-missing", seq + 1)]


def test_signed_entry_carries_the_nodes_request_digest_in_their_wire_form(
    api: Api, signed: tuple
) -> None:
    """The coordinator's stored hash IS the node's entry hash (custody.auditchain): the
    ``sign.signed`` row, in wire form, parses on the node's parser and its ``sign`` holds
    the request digest a node computes from the same body."""
    from custody import auditchain  # noqa: PLC0415
    from custody.signing import message_to_sign  # noqa: PLC0415

    sid, kid, _ = signed
    with api.app.state.db.session() as s:
        from api.db import AuditEntry, SignRequest  # noqa: PLC0415

        row = s.query(AuditEntry).filter_by(action="sign.signed", subject=sid).one()
        body = s.query(SignRequest).filter_by(id=sid).one().body
        scheme = api.app.state.coordinator.keys.get(kid).scheme
        w = audit.wire(row)
    assert w["hash"] == row.hash and w["prev"] == row.prev_hash and w["kind"] == "sign.signed"
    e = auditchain.parse_audit_entry(w)  # the node's own check of the hash
    assert e.request_digest == auditchain.request_digest(
        sid, kid, body["kind"], message_to_sign(scheme, body)
    )
    assert (e.key_id, e.signers) == (kid, (1, 2))
    with raw(api) as c:  # the digest edited in the database: the entry no longer matches
        data = c.execute("SELECT data FROM audit WHERE seq = ?", (row.seq,)).fetchone()[0]
        c.execute(
            "UPDATE audit SET data = ? WHERE seq = ?",
            (data.replace(e.request_digest.hex(), "00" * 32), row.seq),
        )
    assert kinds(verify(api)) == [("edited", row.seq)]


def test_a_refusal_naming_missing_releases_is_reported_by_verify(api: Api) -> None:
    fill(api, 2)
    with api.app.state.db.session() as s:  # as the Checkpointer records a node's refusal
        audit.append(
            s,
            "admin",
            "audit.releases-missing",
            "node-2",
            {"at_seq": 6, "detail": "the audit log lacks 1 signature(s) this node released"},
        )
    v = verify(api)
    assert [(f["kind"], f["subject"]) for f in v["findings"]] == [("releases-missing", "node-2")]
    assert "lacks 1 signature" in v["findings"][0]["detail"]
