"""Resharing end to end over a real five-node cluster (issue 13): ``custody keys reshare``
for each scheme, 2-of-3 -> 3-of-5 -> 2-of-3 with a member replaced, signatures under the
unchanged public key verified by independent libraries after each step; the threshold
drops only when the officers say so; the service refuses ceremonies without a valid
authorization and a replayed one is refused by the nodes; a coordinator SIGKILLed during a
resharing loses nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from custody import governance as gov
from custody.ceremonies import verify_transcript
from custody.ceremony_cli import authorization_for
from custody.client import CustodyError
from custody.cluster import Cluster, free_port_block
from tests.e2e.conftest import Live, collection_rng, current_governance
from tests.e2e.test_ceremonies import sign_and_verify


def slow_short() -> bool:
    return os.environ.get("CUSTODY_SLOW_SHORT") == "1"


SCHEMES = ["ed25519", "bip340", "ecdsa-secp256k1"]
THREE = ["node-1", "node-2", "node-3"]
FIVE = [f"node-{i}" for i in range(1, 6)]
REPLACED = ["node-1", "node-2", "node-4"]  # node-3 replaced by node-4


@pytest.fixture(scope="module")
def live5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A real cluster of five nodes (all in the genesis roster), raw signing enabled."""
    cluster = Cluster(
        tmp_path_factory.mktemp("cluster5"),
        nodes=5,
        port=free_port_block(5),
        env={"CUSTODY_POOL_INTERVAL": "0.3", "CUSTODY_ROUND_TIMEOUT": "10"},
        allow_raw=True,
    )
    try:
        doc = cluster.start(timeout=120)
    except BaseException:
        cluster.stop()
        raise
    lv = Live(cluster, doc)
    try:
        yield lv
    finally:
        lv.close()
        cluster.stop()


def cli(live: Live, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "custody.cli", *args, "--cluster", str(live.cluster.cluster_file)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def reshare_cli(live: Live, key_id: str, t: int, nodes: list[str], *extra: str) -> dict:
    r = cli(live, "keys", "reshare", key_id, "--threshold", str(t), "--nodes", ",".join(nodes),
            "--json", *extra)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    cer = json.loads(r.stdout)
    assert cer["status"] == "done", cer
    return dict(cer)


def signs_on_every_set(live: Live, scheme: str, key_id: str, pk: str, tag: str) -> None:
    for i in range(4):  # the coordinator picks signer sets at random: several come up
        sign_and_verify(live, scheme, key_id, pk, f"{tag} {i}")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_reshare_from_the_cli_up_and_back_down_with_a_member_replaced(
    live5: Live, scheme: str
) -> None:
    key = live5.admin.create_key(scheme, 2, THREE)
    assert key.status == "active" and key.nodes == THREE
    pk = key.public_key
    assert pk is not None
    sign_and_verify(live5, scheme, key.id, pk, f"{scheme} 2-of-3")

    up = reshare_cli(live5, key.id, 3, FIVE)
    assert up["kind"] == "reshare" and up["share_version"] == 2
    outcome = up["transcript"]["outcome"]
    assert outcome["public_key"] == pk and outcome["threshold"] == 3
    roster, _ = current_governance(live5)
    pks = {n.party_id: n.sign_pk for n in roster.roster if n.party_id in up["participants"]}
    assert sorted(pks) == [1, 2, 3, 4, 5]
    assert verify_transcript(outcome, up["transcript"]["signatures"], pks) == []
    after = live5.admin.get_key(key.id)
    assert after.public_key == pk and after.threshold == 3 and after.nodes == FIVE
    signs_on_every_set(live5, scheme, key.id, pk, f"{scheme} 3-of-5")

    # the threshold never drops silently: without --lower-threshold the CLI refuses to ask
    silent = cli(
        live5, "keys", "reshare", key.id, "--threshold", "2", "--nodes", ",".join(REPLACED)
    )
    assert silent.returncode != 0 and "ceremony-threshold-drop" in silent.stdout + silent.stderr
    assert live5.admin.get_key(key.id).threshold == 3

    down = reshare_cli(live5, key.id, 2, REPLACED, "--lower-threshold")
    assert down["share_version"] == 3
    after = live5.admin.get_key(key.id)
    assert after.public_key == pk and after.threshold == 2 and after.nodes == REPLACED
    signs_on_every_set(live5, scheme, key.id, pk, f"{scheme} 2-of-3 replaced")
    shown = cli(live5, "ceremony", "show", down["id"])
    assert shown.returncode == 0, shown.stderr
    assert "departing" in shown.stdout and "retired" in shown.stdout
    assert live5.auditor.verify_audit().ok is True


def test_the_service_refuses_a_ceremony_without_a_valid_authorization(live5: Live) -> None:
    key = live5.admin.create_key("ed25519", 2, THREE)
    assert key.public_key is not None
    path = f"/v1/keys/{key.id}/reshare"
    body = {"threshold": 2, "nodes": REPLACED}
    r = live5.admin.http.post(f"/v1/keys/{key.id}/refresh")
    assert r.status_code == 403 and r.json()["type"].endswith(":ceremony-unauthorized"), r.text
    r = live5.admin.http.post(path, json={**body, "authorization": "00"})
    assert r.status_code == 403 and "malformed" in r.json()["type"], r.text
    auth = authorization_for(
        live5.admin, "reshare", key.id, REPLACED, 2, cluster=live5.cluster.cluster_file
    )
    # one officer's signature of the quorum of two
    doc = gov.decode_ceremony_authorization(bytes.fromhex(auth))
    one = gov.SignedCeremonyAuthorization(doc.body, doc.signatures[:1]).encode().hex()
    r = live5.admin.http.post(path, json={**body, "authorization": one})
    assert r.status_code == 403 and r.json()["type"].endswith("under-signed"), r.text
    # the committee in the request differs from the one the officers signed
    r = live5.admin.http.post(path, json={"threshold": 2, "nodes": FIVE, "authorization": auth})
    assert r.status_code == 403 and r.json()["type"].endswith("mismatch"), r.text
    # as signed it runs; replayed after that, every node refuses it (only nodes remember)
    r = live5.admin.http.post(path, json={**body, "authorization": auth}, timeout=300)
    assert r.status_code == 200, r.text
    r = live5.admin.http.post(path, json={**body, "authorization": auth}, timeout=300)
    assert r.status_code == 409 and r.json()["type"].endswith(":ceremony-failed"), r.text
    assert "replayed" in r.json()["detail"] or any(
        "replayed" in b["reason"] for b in r.json()["blamed"]
    ), r.text
    assert live5.admin.get_key(key.id).nodes == REPLACED
    sign_and_verify(live5, "ed25519", key.id, key.public_key, "after a replay")


def test_under_quorum_authorization_is_refused(live5: Live) -> None:
    key = live5.admin.create_key("bip340", 2, THREE)
    d = live5.cluster.data_dir / "officers"
    files = sorted(d.glob("*.key"))
    r = cli(
        live5,
        "keys",
        "reshare",
        key.id,
        "--threshold",
        "3",
        "--nodes",
        ",".join(FIVE),
        "--officer-key",
        str(files[0]),
        "--passphrase-file",
        str(d / "passphrase"),
    )
    assert r.returncode == 4, r.stdout + r.stderr  # REFUSED: fewer keys than the quorum
    assert "quorum" in r.stdout + r.stderr
    assert live5.admin.get_key(key.id).nodes == THREE


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


def _coordinator_killed_during_a_reshare(live: Live, scheme: str, delay: float) -> None:
    """SIGKILL the coordinator ``delay`` s into a 2-of-3 -> 3-of-5 resharing: once it is
    back the key signs under its public key (old committee or new, never neither), and the
    next resharing runs."""
    key = live.admin.create_key(scheme, 2, THREE)
    pk = key.public_key
    assert pk is not None
    auth = authorization_for(
        live.admin, "reshare", key.id, FIVE, 3, cluster=live.cluster.cluster_file
    )
    answers: list[object] = []

    def call() -> None:
        try:
            answers.append(
                live.admin.http.post(
                    f"/v1/keys/{key.id}/reshare",
                    json={"threshold": 3, "nodes": FIVE, "authorization": auth},
                    timeout=120,
                )
            )
        except (httpx.HTTPError, CustodyError) as exc:
            answers.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(delay)
    live.cluster.stop_proc("coordinator", sig=signal.SIGKILL)
    t.join(60)
    live.cluster.start_coordinator()
    _wait_coordinator(live)
    deadline = time.monotonic() + 90
    while True:  # health sweep, recovery (roll forward or fail), then the key signs
        try:
            sign_and_verify(live, scheme, key.id, pk, f"after kill {delay:.2f}")
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the key does not sign after the restart"
            time.sleep(0.5)
    now = live.admin.get_key(key.id)
    assert now.public_key == pk and now.nodes in (THREE, FIVE)
    target, t_new = (REPLACED, 2) if now.nodes == FIVE else (FIVE, 3)
    extra = ("--lower-threshold",) if t_new < now.threshold else ()
    deadline = time.monotonic() + 90
    while True:  # an interrupted commit rolls forward at start; then a resharing runs
        args = ["--threshold", str(t_new), "--nodes", ",".join(target), "--json", *extra]
        r = cli(live, "keys", "reshare", key.id, *args)
        if r.returncode == 0:
            break
        assert "ceremony-unfinished" in r.stdout + r.stderr or "nodes-unavailable" in (
            r.stdout + r.stderr
        ), r.stdout + r.stderr
        assert time.monotonic() < deadline, r.stdout + r.stderr
        time.sleep(1)
    assert live.admin.get_key(key.id).nodes == target
    for i in range(3):
        sign_and_verify(live, scheme, key.id, pk, f"reshared after kill {i}")


@pytest.mark.parametrize("delay", [collection_rng("reshare-kill").uniform(0.05, 3.0)])
def test_coordinator_killed_during_a_reshare_loses_nothing(live5: Live, delay: float) -> None:
    _coordinator_killed_during_a_reshare(live5, "ecdsa-secp256k1", delay)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", SCHEMES)
def test_coordinator_killed_at_random_points_of_reshares(live5: Live, scheme: str) -> None:
    for _ in range(1 if slow_short() else 3):
        _coordinator_killed_during_a_reshare(live5, scheme, random.uniform(0.05, 4.0))  # noqa: S311


def _node_healthy(live: Live, node: str, healthy: bool) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = {n.id: n.status for n in live.admin.nodes()}
        if (st[node] == "healthy") == healthy:
            return
        time.sleep(0.3)
    raise AssertionError(f"{node} never became {'healthy' if healthy else 'unhealthy'}")


def _log_events(live: Live, node: str, event: str, key_id: str) -> list[dict]:
    path = live.cluster.data_dir / "logs" / f"{node}.log"
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if event in line and key_id in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return [e for e in out if e.get("event") == event and e.get("key_id") == key_id]


def _last_step(cer: dict, node: str) -> dict:
    return [e for e in cer["progress"] if e["node_id"] == node][-1]


def test_an_old_holder_that_did_not_deal_is_told_to_retire_its_share(live5: Live) -> None:
    """Issue 13: node-3 is down during a resharing 2-of-3 -> 2-of-3 {1, 2, 4} (nodes 1 and 2
    deal). The ceremony completes without it (the new committee all switched); node-3 is
    told to retire its share when it is back (``resume``): it verifies the officers'
    authorization and every participant's done statement itself and deletes the share."""
    c = live5.cluster
    key = live5.admin.create_key("ed25519", 2, THREE)
    assert key.public_key is not None
    auth = authorization_for(live5.admin, "reshare", key.id, REPLACED, 2, cluster=c.cluster_file)
    c.stop_proc("node-3")
    try:
        _node_healthy(live5, "node-3", False)
        r = live5.admin.http.post(
            f"/v1/keys/{key.id}/reshare",
            json={"threshold": 2, "nodes": REPLACED, "authorization": auth},
            timeout=300,
        )
        assert r.status_code == 200, r.text
        cer = r.json()
        assert cer["status"] == "done" and cer["participants"] == [1, 2, 4], cer
        told = _last_step(cer, "node-3")
        assert told["step"] == "retire" and told["ok"] is False, cer["progress"]
        assert live5.admin.get_key(key.id).nodes == REPLACED
        sign_and_verify(live5, "ed25519", key.id, key.public_key, "reshared without node-3")
    finally:
        c.start_node(3)
    _node_healthy(live5, "node-3", True)
    assert _log_events(live5, "node-3", "key.retired", key.id) == []
    r = live5.admin.http.post(f"/v1/ceremonies/{cer['id']}/resume", timeout=60)
    assert r.status_code == 200, r.text
    assert _last_step(r.json(), "node-3") == {
        "party_id": 3, "node_id": "node-3", "step": "retire", "ok": True
    }  # fmt: skip
    (retired,) = _log_events(live5, "node-3", "key.retired", key.id)
    assert retired["dealt"] is False and retired["share_version"] == 1
    shown = cli(live5, "ceremony", "show", cer["id"])
    assert shown.returncode == 0, shown.stderr
    assert "old holder (did not deal; told to retire)" in shown.stdout, shown.stdout
    # nothing left to tell: a second resume is refused as there is nothing to do
    again = live5.admin.http.post(f"/v1/ceremonies/{cer['id']}/resume", timeout=60)
    assert again.status_code == 409, again.text
    sign_and_verify(live5, "ed25519", key.id, key.public_key, "after node-3 retired")


def test_a_departing_dealer_dying_after_its_done_statement_does_not_block_the_commit(
    live5: Live,
) -> None:
    """Issue 13: node-3 deals in an ECDSA resharing {1, 2, 3} -> {1, 2, 4}, signs its done
    statement (its part ends with the resharing stage; the new committee then runs its OT
    setup) and is SIGKILLed before the commit. Every done statement is in the transcript,
    so the new committee commits and the ceremony is ``done``; node-3 is sent its commit
    (delete the share) again by ``resume`` once it is back."""
    c = live5.cluster
    key = live5.admin.create_key("ecdsa-secp256k1", 2, THREE)
    assert key.public_key is not None
    auth = authorization_for(live5.admin, "reshare", key.id, REPLACED, 2, cluster=c.cluster_file)
    answer: dict = {}

    def run() -> None:
        answer["r"] = live5.admin.http.post(
            f"/v1/keys/{key.id}/reshare",
            json={"threshold": 2, "nodes": REPLACED, "authorization": auth},
            timeout=300,
        )

    t = threading.Thread(target=run)
    t.start()
    try:
        deadline = time.monotonic() + 120
        while not _log_events(live5, "node-3", "ceremony.done", key.id):
            assert time.monotonic() < deadline and t.is_alive(), "node-3 never finished dealing"
            time.sleep(0.02)
        # Hold the new committee's OT setup by pausing node-4, which it needs: no commit can
        # start before node-4's done statement, so node-3 is surely killed before its commit
        # (without this, on a quiet machine the OT setup and the commit could finish inside
        # the pause below and node-3 deleted its share before the kill).
        node4 = c.procs["node-4"].popen
        assert node4 is not None
        node4.send_signal(signal.SIGSTOP)
        try:
            time.sleep(0.3)  # node-3's answer (done, with the statement) reaches the coordinator
            c.stop_proc("node-3", signal.SIGKILL)
        finally:
            node4.send_signal(signal.SIGCONT)
        t.join(300)
        r = answer["r"]
        assert r.status_code == 200, r.text
        cer = r.json()
        assert cer["status"] == "done" and cer["participants"] == [1, 2, 3, 4], cer
        assert sorted(cer["transcript"]["signatures"]) == ["1", "2", "3", "4"]
        dead = _last_step(cer, "node-3")
        assert dead["step"] == "commit" and dead["ok"] is False, cer["progress"]
        assert live5.admin.get_key(key.id).nodes == REPLACED
        sign_and_verify(live5, "ecdsa-secp256k1", key.id, key.public_key, "node-3 dead")
    finally:
        t.join(300)
        c.start_node(3)
    _node_healthy(live5, "node-3", True)
    r = live5.admin.http.post(f"/v1/ceremonies/{cer['id']}/resume", timeout=60)
    assert r.status_code == 200, r.text
    assert _last_step(r.json(), "node-3")["ok"] is True, r.json()["progress"]
    (retired,) = _log_events(live5, "node-3", "key.retired", key.id)
    assert retired["share_version"] == 2
