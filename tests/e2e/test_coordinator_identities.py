"""Issue 14: two coordinators, each its own identity (own data directory, own sealed key in
its own SoftHSM2 token, own TLS client certificate), behind one PostgreSQL database; the
dev genesis pins both keys. Real processes: PostgreSQL, three signer nodes over mutual TLS,
two coordinators (``simulations.multi.Multi``: the worker's shared topology, see the
``multi`` fixture). Signatures are checked by pynacl/coincurve.

- both coordinators sign, each driving the nodes with its own key;
- a request signed by a key the governance does not pin is refused by every node, named;
- a version retiring coordinator-2 (installed through coordinator-1, taken up by
  coordinator-2 from the database) makes every node refuse coordinator-2's key while
  coordinator-1 keeps signing;
- a governance row inserted into the table that is under-signed or does not chain is
  refused by the coordinator reading it (named in its log, it stays on its version) and by
  every node it is put to.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import coincurve
import httpx
import pytest
from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import create_engine, text

from custody import governance as gov
from custody.client import CustodyClient
from custody.nodeauth import SIGNATURE_HEADER, sign_headers
from simulations.multi import Multi
from tests.e2e.conftest import token_sign
from tests.lb.conftest import SharedMulti


@pytest.fixture(scope="module")
def multi(multi_topology: SharedMulti) -> Iterator[Multi]:
    """The worker's shared topology (tests/conftest.py ``multi_topology``: PostgreSQL, three
    nodes over mutual TLS, two coordinators each with its own identity, HAProxy; one unit
    of work with tests/multi and tests/lb/test_multi.py, tests/schedule.py SHARED_UNITS).
    This module retires coordinator-2; when it ends (passed or not) :func:`_repin_both`
    installs a version pinning both again, so the next module has the whole topology."""
    m = multi_topology.get()
    try:
        yield m
    finally:
        try:
            _repin_both(m)
        finally:
            multi_topology.restore()


def _current(m: Multi) -> gov.Governance:
    """The active governance version as coordinator-1 holds it."""
    return gov.decode(bytes.fromhex(_governance(m, 1)["document"])).body


def _repin_both(m: Multi) -> None:
    """The reset step of the shared topology: rows this module wrote into
    ``governance_versions`` above the active version removed, and, if the active version
    pins fewer coordinators than the genesis (coordinator-2 retired), its successor with
    the genesis's pins installed through coordinator-1 and taken up by coordinator-2."""
    assert m.cluster is not None
    engine = create_engine(m.database_url)
    try:
        with engine.begin() as conn:
            version = _governance(m, 1)["version"]
            conn.execute(text("DELETE FROM governance_versions WHERE version > :v"), {"v": version})
    finally:
        engine.dispose()
    genesis = gov.decode((m.data_dir / "governance" / "v1.gov").read_bytes()).body
    cur = _current(m)
    pinned = {(c.name, c.public_key) for c in cur.coordinators or ()}
    if pinned == {(c.name, c.public_key) for c in genesis.coordinators or ()}:
        return
    nxt = cur.successor(coordinators=genesis.coordinators)
    _put_governance(m, _sign_doc(m, nxt, ("dev-officer-1", "dev-officer-2")))
    _wait_version(m, 2, nxt.version)


def _put_governance(m: Multi, document: bytes) -> None:
    """Install ``document`` through coordinator-1 (``PUT /v1/governance``)."""
    with httpx.Client(base_url=m.coordinator_url(1), timeout=60) as http:
        r = http.put(
            "/v1/governance",
            json={"document": document.hex()},
            headers={
                "Authorization": f"Bearer {_creds(m)['admin']}",
                "Idempotency-Key": str(uuid.uuid4()),
            },
        )
    assert r.status_code == 200, r.text


def _creds(m: Multi) -> dict[str, str]:
    creds: dict[str, str] = json.loads((m.data_dir / "multi.json").read_text())["credentials"]
    return creds


def _client(m: Multi, k: int, role: str = "admin") -> CustodyClient:
    """An SDK client of ``role`` on coordinator ``k`` itself (not through HAProxy)."""
    url = m.coordinator_url(k)
    return CustodyClient(url, _creds(m)[role], http=httpx.Client(base_url=url, timeout=60))


def _coordinator_dir(m: Multi, k: int) -> Path:
    return m.data_dir / ("coordinator" if k == 1 else f"coordinator-{k}")


def _node_request(
    m: Multi, k: int | SigningKey, node: int, method: str, target: str, body: bytes = b""
) -> httpx.Response:
    """A request to a node signed by coordinator ``k``'s key in its own PKCS#11 token (a
    subprocess: SoftHSM2 binds a process to one token directory), or by a stray key, over
    mutual TLS; named in X-Coordinator-Key as api.nodes does."""
    assert m.cluster is not None
    if isinstance(k, SigningKey):
        headers = sign_headers(k, method, target, body, recipient=f"node-{node}")
        public = bytes(k.verify_key)
    else:
        seen: list[bytes] = []
        headers = sign_headers(
            lambda b: seen.append(b) or bytes(64),  # type: ignore[func-returns-value]
            method,
            target,
            body,
            recipient=f"node-{node}",
        )
        (sig,) = token_sign(_coordinator_dir(m, k), seen)
        headers[SIGNATURE_HEADER] = sig.hex()
        public = m.cluster.coordinator_keys[_coordinator_dir(m, k).name]
    headers["X-Coordinator-Key"] = public.hex()
    headers["content-type"] = "application/json"
    with m.cluster.node_http() as http:
        return http.request(
            method, m.cluster.node_url(node) + target, content=body, headers=headers
        )


def _officers(m: Multi) -> dict[str, SigningKey]:
    d = m.data_dir / "officers"
    passphrase = (d / "passphrase").read_bytes()
    out = {}
    for i in (1, 2):
        officer, key = gov.open_officer_key((d / f"dev-officer-{i}.key").read_bytes(), passphrase)
        out[officer.officer_id] = key
    return out


def _sign_doc(m: Multi, body: gov.Governance, by: tuple[str, ...]) -> bytes:
    keys = _officers(m)
    doc = gov.unsigned(body)
    for o in by:
        doc = doc.with_signature(keys[o], o)
    return doc.encode()


def _governance(m: Multi, k: int) -> dict[str, Any]:
    r = httpx.get(
        m.coordinator_url(k) + "/v1/governance",
        headers={"Authorization": f"Bearer {_creds(m)['admin']}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def _wait_version(m: Multi, k: int, version: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (v := _governance(m, k)["version"]) != version:
        assert time.monotonic() < deadline, f"coordinator-{k} stays on version {v}"
        time.sleep(0.2)


def _sign_verified(m: Multi, k: int, scheme: str, key: dict[str, str]) -> None:
    msg = f"cid {scheme} {uuid.uuid4()}".encode()
    with _client(m, k, "requester") as c:
        sr = c.sign(key["id"], msg)
    assert sr.status == "signed" and sr.signature, sr
    pk, sig = bytes.fromhex(key["public_key"]), bytes.fromhex(sr.signature)
    if scheme == "ed25519":
        VerifyKey(pk).verify(msg, sig)
    else:
        assert coincurve.PublicKeyXOnly(pk).verify(sig, msg)


def test_two_coordinator_identities_pinned_retired_and_rows_refused(multi: Multi) -> None:
    m = multi
    assert m.cluster is not None
    pins = m.cluster.coordinator_keys
    assert set(pins) == {"coordinator", "coordinator-2"} and len(set(pins.values())) == 2
    genesis = gov.decode((m.data_dir / "governance" / "v1.gov").read_bytes()).body
    assert {(c.name, c.public_key) for c in genesis.coordinators or ()} == set(pins.items())
    # the shared topology may be past its genesis (this module's reset re-pins both; other
    # modules install nothing): the versions below count from the active one
    cur = _current(m)
    assert {(c.name, c.public_key) for c in cur.coordinators or ()} == set(pins.items())
    base = cur.version
    for k in (1, 2):  # each its own TLS client certificate
        assert (_coordinator_dir(m, k) / "tls" / "client.crt").is_file()
    c1, c2 = (_coordinator_dir(m, k) / "tls" / "client.crt" for k in (1, 2))
    assert c1.read_bytes() != c2.read_bytes()

    keys = {}
    with _client(m, 1) as admin:
        for scheme in ("ed25519", "bip340"):
            k = admin.create_key(scheme, 2)  # type: ignore[arg-type]
            assert k.status == "active" and k.public_key
            keys[scheme] = {"id": k.id, "public_key": k.public_key}
    for k in (1, 2):  # both sign, each with its own key towards the nodes
        for scheme, key in keys.items():
            _sign_verified(m, k, scheme, key)
    for node in range(1, m.nodes + 1):
        assert _node_request(m, 2, node, "GET", "/v1/governance").status_code == 200

    stray = SigningKey.generate()  # a key no governance pins
    for node in range(1, m.nodes + 1):
        r = _node_request(m, stray, node, "GET", "/v1/governance")
        assert r.status_code == 401, r.text
        assert r.json()["type"] == "urn:tpwc:node:coordinator-not-pinned", r.text
        assert bytes(stray.verify_key).hex() in r.json()["detail"]

    # the officers retire coordinator-2 (version base + 1, installed through coordinator-1)
    v2 = cur.successor(coordinators=(gov.PinnedCoordinator("coordinator", pins["coordinator"]),))
    assert v2.version == base + 1
    _put_governance(m, _sign_doc(m, v2, ("dev-officer-1", "dev-officer-2")))
    _wait_version(m, 2, base + 1)  # coordinator-2 took it up from governance_versions
    for node in range(1, m.nodes + 1):
        r = _node_request(m, 2, node, "GET", "/v1/governance")
        assert r.status_code == 401, r.text
        problem = r.json()
        assert problem["type"] == "urn:tpwc:node:coordinator-not-pinned", problem
        assert pins["coordinator-2"].hex() in problem["detail"], problem
        assert f"governance version {base + 1}" in problem["detail"], problem
    for scheme, key in keys.items():  # coordinator-1 keeps signing
        _sign_verified(m, 1, scheme, key)

    # rows written into the shared table by someone with database access only
    engine = create_engine(m.database_url)
    v3 = v2.successor(coordinators=(gov.PinnedCoordinator("rogue", bytes(stray.verify_key)),))
    bad = {
        "under-signed": _sign_doc(m, v3, ("dev-officer-1",)),
        "unchained": _sign_doc(
            m, replace(v3, previous=b"\x01" * 32), ("dev-officer-1", "dev-officer-2")
        ),
    }
    log = m.data_dir / "logs" / "coordinator-2.log"
    for what, data in bad.items():
        start = log.stat().st_size
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO governance_versions (version, document, digest, installed_ms)"
                    " VALUES (:v, :d, :h, 0)"
                ),
                {"v": base + 2, "d": data, "h": "00" * 32},
            )
        deadline = time.monotonic() + 30
        while True:
            tail = log.read_bytes()[start:].decode(errors="replace")
            refused = [line for line in tail.splitlines() if "governance version refused" in line]
            if refused:
                break
            assert time.monotonic() < deadline, (
                f"{what}: coordinator-2 never refused row {base + 2}"
            )
            time.sleep(0.2)
        entry = refused[-1]
        assert f"governance_versions row {base + 2} refused" in entry, entry
        assert f"governance-{what}" in entry, entry
        for k in (1, 2):
            assert _governance(m, k)["version"] == base + 1  # both stay on their version
        for node in range(1, m.nodes + 1):  # and every node refuses the same document
            r = _node_request(
                m, 1, node, "PUT", "/v1/governance", json.dumps({"document": data.hex()}).encode()
            )
            assert r.status_code in (403, 409), r.text
            assert r.json()["type"] == f"urn:tpwc:node:governance-{what}", r.text
        with engine.begin() as conn:
            conn.execute(
                text("DELETE FROM governance_versions WHERE version = :v"), {"v": base + 2}
            )
    engine.dispose()
    for scheme, key in keys.items():  # and coordinator-1 still signs
        _sign_verified(m, 1, scheme, key)
