"""Proactive refresh end to end over a real cluster: ``custody keys refresh`` for each
scheme, then signatures under the unchanged public key verified by independent libraries;
the transcript every node signed (``custody ceremony show``) checked against the roster's
identity keys; a refresh with a node down refuses and changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from embit import bip32 as embit_bip32

from custody.ceremonies import verify_transcript
from custody.ceremony_cli import authorization_for
from custody.client import CustodyError
from custody.demo import verify_independently
from tests.e2e.conftest import Live, collection_rng, current_governance

SCHEMES = ["ed25519", "bip340", "ecdsa-secp256k1"]


@pytest.fixture(scope="module")
def live(live_default_pool: Live) -> Live:
    """This module's own cluster, with the default presignature pool: it kills or restarts
    nodes while ECDSA keys sign (tests/e2e/conftest.py ``live_default_pool``)."""
    return live_default_pool


def cli(live: Live, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "custody.cli", *args, "--cluster", str(live.cluster.cluster_file)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def msg_for(scheme: str, tag: str) -> bytes:
    m = tag.encode()
    return hashlib.sha256(m).digest() if scheme == "ecdsa-secp256k1" else m


def sign_and_verify(live: Live, scheme: str, key_id: str, pk: str, tag: str) -> None:
    msg = msg_for(scheme, tag)
    sr = live.requester.sign(key_id, msg)
    assert sr.status == "signed", sr
    ok, by = verify_independently(scheme, pk, msg, sr.signature, sr.recovery_id)
    assert ok, by


@pytest.mark.parametrize("scheme", SCHEMES)
def test_refresh_from_the_cli_then_sign(live: Live, scheme: str) -> None:
    key = live.key(scheme)
    sign_and_verify(live, scheme, key.id, key.public_key, f"{scheme} before")
    r = cli(live, "keys", "refresh", key.id, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    cer = json.loads(r.stdout)
    assert cer["status"] == "done" and cer["share_version"] == 2
    outcome = cer["transcript"]["outcome"]
    assert outcome["public_key"] == key.public_key
    # every node signed the outcome with its identity key, as the roster pins it
    roster, _ = current_governance(live)
    pks = {n.party_id: n.sign_pk for n in roster.roster if n.party_id in cer["participants"]}
    assert len(pks) == 3
    assert verify_transcript(outcome, cer["transcript"]["signatures"], pks) == []
    after = live.admin.get_key(key.id)
    assert after.public_key == key.public_key
    for i in range(4):  # every signer set comes up across a few requests
        sign_and_verify(live, scheme, key.id, key.public_key, f"{scheme} after {i}")
    shown = cli(live, "ceremony", "show", cer["id"])
    assert shown.returncode == 0, shown.stderr
    assert cer["id"] in shown.stdout and "switched" in shown.stdout
    assert live.auditor.verify_audit().ok is True


@pytest.mark.parametrize("scheme", ["ecdsa-secp256k1", "bip340"])
def test_xpub_and_derived_keys_agree_with_embit_and_survive_a_refresh(
    live: Live, scheme: str
) -> None:
    key = live.key(scheme)
    shown = cli(live, "keys", "show", key.id, "--xpub")
    assert shown.returncode == 0, shown.stderr
    xpub = shown.stdout.strip()
    assert xpub.startswith("xpub")  # the dev cluster's bip340 keys are on mainnet
    root = embit_bip32.HDKey.from_base58(xpub)
    # the root is the key itself (x-only for bip340)
    root_pk = root.key.sec()
    assert root_pk.hex() == key.public_key or root_pk[1:].hex() == key.public_key
    for path in ([0], [0, 1], [7, 2**31 - 1, 3]):
        text = "m/" + "/".join(map(str, path))
        r = cli(live, "keys", "derive", key.id, text, "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        child = root.derive(path)  # embit: an independent BIP-32 CKDpub
        sec = child.key.sec()
        assert doc["public_key"] == (sec.hex() if scheme == "ecdsa-secp256k1" else sec[1:].hex())
        assert doc["xpub"] == child.to_base58()
        assert doc["addresses"]  # an address at every path
    # the API refuses a hardened step with a clear error
    r = live.auditor.http.get(f"/v1/keys/{key.id}/derive", params={"path": "m/0'/1"})
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("hardened-derivation") and "hardened" in r.json()["detail"]
    bad = cli(live, "keys", "derive", key.id, "m/44h/0")
    assert bad.returncode != 0 and "hardened" in (bad.stdout + bad.stderr)
    # a refresh keeps the group key, so the chain code and every derived key
    assert cli(live, "keys", "refresh", key.id, "--json").returncode == 0
    again = cli(live, "keys", "show", key.id, "--xpub")
    assert again.stdout.strip() == xpub


def test_ed25519_derives_by_the_additive_tweak_and_has_no_xpub(live: Live) -> None:
    key = live.key("ed25519")
    r = live.auditor.http.get(f"/v1/keys/{key.id}/derive", params={"path": "m/0/1"})
    assert r.status_code == 200, r.text
    assert len(bytes.fromhex(r.json()["public_key"])) == 32 and "xpub" not in r.json()
    r = live.auditor.http.get(f"/v1/keys/{key.id}/xpub")
    assert r.status_code == 422 and r.json()["type"].endswith("no-xpub")


def test_refresh_with_a_node_down_is_refused_naming_it_and_changes_nothing(live: Live) -> None:
    key = live.key("bip340")
    name = "node-3"
    live.cluster.stop_proc(name, sig=signal.SIGKILL)
    try:
        deadline = time.monotonic() + 10
        while {n.id: n for n in live.auditor.nodes()}[name].status != "down":
            assert time.monotonic() < deadline, "node-3 not reported down"
            live.requester.sign(key.id, b"find out")  # blame marks it down at once
            time.sleep(0.1)
        r = cli(live, "keys", "refresh", key.id)
        assert r.returncode != 0
        assert "nodes-unavailable" in r.stdout + r.stderr and name in r.stdout + r.stderr
        sign_and_verify(live, "bip340", key.id, key.public_key, "with node-3 down")
    finally:
        live.cluster.start_node(3)
        deadline = time.monotonic() + 30
        while {n.id: n for n in live.auditor.nodes()}[name].status != "healthy":
            assert time.monotonic() < deadline, "node-3 did not come back"
            time.sleep(0.2)
    r = cli(live, "keys", "refresh", key.id, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    for i in range(3):
        sign_and_verify(live, "bip340", key.id, key.public_key, f"node-3 back {i}")


def _wait_coordinator(live: Live, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(live.doc["api_url"] + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "coordinator did not come back"
        time.sleep(0.2)


@pytest.mark.parametrize("delay", [collection_rng("ceremonies-kill").uniform(0.05, 2.5)])
def test_coordinator_killed_during_a_refresh_loses_nothing(live: Live, delay: float) -> None:
    """SIGKILL the coordinator at a random point of an ECDSA refresh (session, commit or
    after): once it is back, the key signs (old or new shares, never neither), the
    interrupted ceremony is failed or rolled forward, and the next refresh runs."""
    key = live.key("ecdsa-secp256k1")
    answers: list[object] = []
    # signed by the dev officers, as `custody keys refresh` signs it
    auth = authorization_for(
        live.admin, "refresh", key.id, None, None, cluster=live.cluster.cluster_file
    )

    def call() -> None:
        try:
            answers.append(
                live.admin.http.post(
                    f"/v1/keys/{key.id}/refresh", json={"authorization": auth}, timeout=60
                )
            )
        except (httpx.HTTPError, CustodyError) as exc:  # the coordinator died under it
            answers.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(delay)
    live.cluster.stop_proc("coordinator", sig=signal.SIGKILL)
    t.join(30)
    live.cluster.start_coordinator()
    _wait_coordinator(live)
    deadline = time.monotonic() + 60
    while True:  # the health sweep finds the nodes again; the key signs
        try:
            sign_and_verify(live, "ecdsa-secp256k1", key.id, key.public_key, f"after kill {delay}")
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the key does not sign after the restart"
            time.sleep(0.5)
    deadline = time.monotonic() + 60
    while True:  # an interrupted commit is rolled forward at start; then a refresh runs
        r = cli(live, "keys", "refresh", key.id, "--json")
        if r.returncode == 0:
            break
        assert "ceremony-unfinished" in r.stdout + r.stderr or "nodes-unavailable" in (
            r.stdout + r.stderr
        ), r.stdout + r.stderr
        assert time.monotonic() < deadline, r.stdout + r.stderr
        time.sleep(1)
    for i in range(3):
        sign_and_verify(live, "ecdsa-secp256k1", key.id, key.public_key, f"refreshed {i}")
