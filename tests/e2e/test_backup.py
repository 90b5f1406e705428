"""Backups and the disaster-recovery drill against a real cluster (issue 13, items 4 and 5).

A real 3-node cluster (real SoftHSM2 tokens, real node and coordinator processes) makes a
key of each scheme; every node's own process backs its shares up to a recovery recipient
generated here; the backup verifies against the governance roster; a DR drill from the
backups alone, in a fresh directory, restores them into scratch nodes and signs with each
key, and every signature is verified here again with pynacl or coincurve against the
production public key. A backup encrypted to another key, a flipped byte in an age file, a
manifest with a wrong signature and a missing share are each refused with a precise error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import coincurve
import httpx
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from typer.testing import CliRunner

from custody import backups as bk
from custody import governance as gov
from custody.cli import app
from custody.cluster import node_port
from tests.e2e.conftest import Live, current_governance, dev_officers, running_cluster

SCHEMES = ("ed25519", "bip340", "ecdsa-secp256k1")


def slow_short() -> bool:
    return os.environ.get("CUSTODY_SLOW_SHORT") == "1"


PASSPHRASE = "correct horse battery staple (test only)"  # noqa: S105 - a test fixture


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as lv:
        for s in SCHEMES:
            lv.key(s)
        yield lv


@pytest.fixture(scope="module")
def recovery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A recovery identity made here: (identity file, passphrase file, recipient)."""
    d = tmp_path_factory.mktemp("recovery")
    (d / "pass").write_text(PASSPHRASE)
    r = CliRunner().invoke(
        app, ["backup", "keygen", "--out", str(d / "id.age"), "--passphrase-file", str(d / "pass")]
    )
    assert r.exit_code == 0, r.output
    return d / "id.age", d / "pass", r.output.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def backup(
    live: Live, recovery: tuple[Path, Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("backup") / "b"
    r = CliRunner().invoke(
        app,
        [
            "backup",
            "create",
            "--recipient",
            recovery[2],
            "--out",
            str(out),
            "--cluster",
            str(live.cluster.cluster_file),
        ],  # fmt: skip
    )
    assert r.exit_code == 0, r.output
    return out


def _verify(path: Path, *gov: Path) -> tuple[int, str]:
    args = ["backup", "verify", str(path)] + [a for g in gov for a in ("--governance", str(g))]
    r = CliRunner().invoke(app, args)
    return r.exit_code, r.output


def _independent(scheme: str, pk: str, msg: bytes, sig: str) -> bool:
    """Verification by third-party libraries only."""
    pkb, sigb = bytes.fromhex(pk), bytes.fromhex(sig)
    if scheme == "ed25519":
        nacl.signing.VerifyKey(pkb).verify(msg, sigb)  # raises if bad
        return True
    if scheme == "bip340":
        return bool(coincurve.PublicKeyXOnly(pkb).verify(sigb, msg))
    der = encode_dss_signature(int.from_bytes(sigb[:32]), int.from_bytes(sigb[32:]))
    return bool(coincurve.PublicKey(pkb).verify(der, msg, hasher=None))


def test_backup_holds_ciphertext_and_a_signed_manifest(live: Live, backup: Path) -> None:
    nodes = sorted(p.name for p in backup.iterdir())
    assert nodes == ["node-1", "node-2", "node-3"]
    for n in nodes:
        doc = json.loads((backup / n / "manifest.json").read_text())
        body = doc["manifest"]
        assert {k["key_id"] for k in body["keys"]} == {k.id for k in live.keys.values()}
        for k in body["keys"]:
            assert k["share_version"] >= 1 and len(k["share_digest"]) == 64
            data = (backup / n / k["file"]).read_bytes()
            assert data.startswith(b"age-encryption.org/v1\n-> X25519 ")
    genesis = live.cluster.data_dir / "governance" / "v1.gov"
    code, out = _verify(backup, genesis)
    assert code == 0, out
    assert "backup verified" in out
    for k in live.keys.values():
        assert k.id in out


def _drill(
    live: Live, backup: Path, recovery: tuple[Path, Path, str], tmp_path: Path, *extra: str
) -> tuple[int, str, Path]:
    """``custody dr-drill`` from the backups alone (copied to a fresh directory; the
    production cluster only cross-checked): (exit code, output, the fresh directory)."""
    fresh = tmp_path / "fresh"
    shutil.copytree(backup, fresh / "backups")
    r = CliRunner().invoke(
        app,
        [
            "dr-drill",
            "--backups",
            str(fresh / "backups"),
            "--identity",
            str(recovery[0]),
            "--passphrase-file",
            str(recovery[1]),
            "--out",
            str(fresh / "report.json"),
            "--work-dir",
            str(fresh / "work"),
            "--cluster",
            str(live.cluster.cluster_file),
            "--governance",
            str(live.cluster.data_dir / "governance" / "v1.gov"),
            *extra,
        ],  # fmt: skip
    )
    return r.exit_code, r.output, fresh


@pytest.mark.slow
def test_dr_drill_from_backups_alone_signs_and_verifies(
    live: Live, backup: Path, recovery: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """Every key (the full form), or under CUSTODY_SLOW_SHORT=1 the ECDSA key alone
    (``--key``: the same backups verified and every share restored, one key signing)."""
    drilled = [live.keys["ecdsa-secp256k1"]] if slow_short() else list(live.keys.values())
    extra = [a for k in drilled for a in ("--key", k.id)] if slow_short() else []
    code, out, fresh = _drill(live, backup, recovery, tmp_path, *extra)
    assert code == 0, out
    report = json.loads((fresh / "report.json").read_text())
    assert report["ok"] is True and report["roster_checked"] is True
    assert report["keys_selected"] == ([drilled[0].id] if slow_short() else "all")
    assert {k["key_id"] for k in report["keys"]} == {k.id for k in drilled}
    for k in report["keys"]:
        prod = live.keys[k["scheme"]]
        assert k["public_key"] == prod.public_key  # the PRODUCTION public key
        assert k["production_check"] == "matches production GET /v1/keys"
        assert k["status"] == "signed" and len(k["signers"]) >= k["threshold"]
        assert k["shares_restored"] == [1, 2, 3]
        assert _independent(
            k["scheme"], prod.public_key, bytes.fromhex(k["message"]), k["signature"]
        )
    assert report["timings"]["total"] > 0 and "dr-drill passed" in out
    # the scratch nodes held every share: nothing of them is left behind
    assert report["scratch_removed"] is True and not (fresh / "work" / "scratch").exists()
    assert {n["node_id"] for n in report["nodes"]} == {"node-1", "node-2", "node-3"}
    # every node restored every backed-up key, drilled or not
    for n in report["nodes"]:
        assert {e["key_id"] for e in n["restored"]} == {k.id for k in live.keys.values()}


def test_dr_drill_of_a_key_not_in_the_backups_is_refused_before_any_scratch_node(
    live: Live, backup: Path, recovery: tuple[Path, Path, str], tmp_path: Path
) -> None:
    code, out, fresh = _drill(
        live, backup, recovery, tmp_path, "--key", live.keys["ed25519"].id, "--key", "no-such"
    )
    assert code == 4, out
    assert "--key no-such: not in the backups" in out
    assert live.keys["ed25519"].id in out  # what the backups do hold is named
    assert not (fresh / "work" / "scratch").exists() and not (fresh / "report.json").exists()


def _fresh_node(live: Live, d: Path, node: str, party: int) -> None:
    c = live.cluster
    subprocess.run(  # noqa: S603
        [
            c.python,
            "-m",
            "signer_nodes",
            "init",
            "--data-dir",
            str(d),
            "--node-id",
            node,
            "--party-id",
            str(party),
            "--coordinator-key",
            "00" * 32,
        ],  # fmt: skip
        check=True,
        capture_output=True,
        env=c._env(),
        cwd=c._cwd(),  # fmt: skip
    )


def test_a_backup_for_another_key_is_refused(live: Live, backup: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.age"
    data, _ = bk.create_identity_file(PASSPHRASE)
    other.write_bytes(data)
    (tmp_path / "pass").write_text(PASSPHRASE)
    _fresh_node(live, tmp_path / "n1", "node-1", 1)
    r = CliRunner().invoke(
        app,
        [
            "backup",
            "restore",
            "--backup",
            str(backup / "node-1"),
            "--data-dir",
            str(tmp_path / "n1"),
            "--identity",
            str(other),
            "--passphrase-file",
            str(tmp_path / "pass"),
        ],  # fmt: skip
    )
    assert r.exit_code == 4, r.output
    assert "not-for-this-identity" in r.output
    # and nothing was stored on the fresh node
    st = subprocess.run(  # noqa: S603
        [
            live.cluster.python,
            "-m",
            "signer_nodes",
            "status",
            "--data-dir",
            str(tmp_path / "n1"),
            "--json",
        ],  # fmt: skip
        check=True,
        capture_output=True,
        text=True,
        env=live.cluster._env(),
        cwd=live.cluster._cwd(),  # fmt: skip
    )
    assert json.loads(st.stdout)["keys"] == 0


def _copy(backup: Path, tmp: Path) -> Path:
    d = tmp / "copy"
    shutil.copytree(backup, d)
    return d


def test_a_flipped_byte_in_an_age_file_is_refused(live: Live, backup: Path, tmp_path: Path) -> None:
    d = _copy(backup, tmp_path)
    f = next((d / "node-2").glob("*.age"))
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))
    code, out = _verify(d)
    assert code == 4
    assert "share-tampered" in out and "node-2" in out and f.name in out


def test_a_manifest_with_a_wrong_signature_is_refused(
    live: Live, backup: Path, tmp_path: Path
) -> None:
    d = _copy(backup, tmp_path)
    mf = d / "node-3" / "manifest.json"
    doc = json.loads(mf.read_text())
    doc["manifest"]["keys"][0]["share_version"] += 1  # a field changed under the signature
    mf.write_text(json.dumps(doc))
    code, out = _verify(d)
    assert code == 4 and "manifest-bad-signature" in out and "node-3" in out
    # re-signed by another key: refused against the roster's pinned identity
    sk = nacl.signing.SigningKey.generate()
    doc["manifest"]["sign_pk"] = bytes(sk.verify_key).hex()
    doc["signature"] = sk.sign(bk.manifest_statement(doc["manifest"])).signature.hex()
    mf.write_text(json.dumps(doc))
    code, out = _verify(d, live.cluster.data_dir / "governance" / "v1.gov")
    assert code == 4 and "manifest-wrong-signer" in out and "node-3" in out


def test_a_missing_share_is_refused(live: Live, backup: Path, tmp_path: Path) -> None:
    d = _copy(backup, tmp_path)
    f = next((d / "node-1").glob("*.age"))
    f.unlink()
    code, out = _verify(d)
    assert code == 4 and "share-missing" in out and f.name in out
    d2 = tmp_path / "two-gone"
    shutil.copytree(backup, d2)
    shutil.rmtree(d2 / "node-1")
    shutil.rmtree(d2 / "node-2")
    code, out = _verify(d2)
    assert code == 4 and "backup-incomplete" in out and "missing parties [1, 2]" in out


def test_backup_messages_are_precise_for_a_tampered_drill(
    live: Live, backup: Path, recovery: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """The drill refuses a tampered backup before it starts any scratch node."""
    d = _copy(backup, tmp_path)
    f = next((d / "node-1").glob("*.age"))
    f.write_bytes(f.read_bytes()[:-1])
    r = CliRunner().invoke(
        app,
        [
            "dr-drill",
            "--backups",
            str(d),
            "--identity",
            str(recovery[0]),
            "--passphrase-file",
            str(recovery[1]),
            "--work-dir",
            str(tmp_path / "w"),
        ],  # fmt: skip
    )
    assert r.exit_code == 4 and "share-tampered" in r.output
    assert not (tmp_path / "w" / "scratch").exists()


def test_signature_messages_are_digests(live: Live) -> None:
    """Sanity for the verifier above: a production signature verifies the same way."""
    for s in SCHEMES:
        k = live.keys[s]
        msg = hashlib.sha256(b"prod " + s.encode()).digest()
        sr = live.requester.sign(k.id, msg)
        assert sr.status == "signed"
        assert _independent(s, k.public_key, msg, str(sr.signature))


def _wait(pred: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_restore_onto_a_fresh_node_joins_through_governance_and_signs(
    live: Live, backup: Path, recovery: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """node-3's host is lost: a fresh node (new token, new data directory, new identity)
    restores node-3's backup, the officers re-key node-3 to it and authorize the restore,
    the other nodes adopt it, and the restored node signs with node-2 (node-1 stopped)."""
    c = live.cluster
    env, cwd = c._env(), c._cwd()

    def run(*argv: str) -> str:
        r = subprocess.run([c.python, *argv], capture_output=True, text=True, env=env, cwd=cwd)  # noqa: S603
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    coord = json.loads(run("-m", "api", "init", "--data-dir", str(c.data_dir / "coordinator")))
    old_boot = httpx.get(c.node_url(3) + "/health", timeout=2).json()["boot_id"]
    c.stop_proc("node-3")
    fresh = tmp_path / "node-3-new"
    ident = json.loads(
        run(
            "-m",
            "signer_nodes",
            "init",
            "--data-dir",
            str(fresh),
            "--node-id",
            "node-3",
            "--party-id",
            "3",
            "--coordinator-key",
            coord["coordinator_public_key"],
        )  # fmt: skip
    )
    cur, _ = current_governance(live)
    assert cur.version == 1  # nothing in this module changed governance before
    genesis = c.data_dir / "governance" / "v1.gov"
    new3 = gov.RosterNode(
        "node-3", 3, bytes.fromhex(ident["sign_pk"]), bytes.fromhex(ident["box_pk"])
    )
    nxt = gov.unsigned(
        cur.successor(roster=tuple(new3 if n.node_id == "node-3" else n for n in cur.roster))
    )
    officers = dev_officers(live)
    for oid in sorted(officers)[: cur.quorum]:
        nxt = nxt.with_signature(officers[oid], oid)
    v2 = tmp_path / "v2.gov"
    v2.write_bytes(nxt.encode())
    put = live.admin.http.put("/v1/governance", json={"document": nxt.encode().hex()})
    assert put.status_code == 200, put.text
    assert put.json()["nodes"]["node-1"] == put.json()["nodes"]["node-2"] == "installed"
    # the fresh node trusts the chain (its identity is pinned by version 2) and restores
    run("-m", "signer_nodes", "trust", "--data-dir", str(fresh), "--governance", str(genesis),
        "--then", str(v2))  # fmt: skip
    r = CliRunner().invoke(
        app,
        [
            "backup",
            "restore",
            "--backup",
            str(backup / "node-3"),
            "--data-dir",
            str(fresh),
            "--identity",
            str(recovery[0]),
            "--passphrase-file",
            str(recovery[1]),
            "--governance",
            str(genesis),
        ],  # fmt: skip
    )
    assert r.exit_code == 0, r.output
    assert r.output.count("restored ") == len(SCHEMES)
    # a second restore onto the same node is refused: fresh nodes only
    again = CliRunner().invoke(
        app,
        [
            "backup",
            "restore",
            "--backup",
            str(backup / "node-3"),
            "--data-dir",
            str(fresh),
            "--identity",
            str(recovery[0]),
            "--passphrase-file",
            str(recovery[1]),
        ],  # fmt: skip
    )
    assert again.exit_code == 4 and "restore onto a fresh node" in again.output
    # the officers authorize the restore; an under-signed authorization is refused
    auth = tmp_path / "auth.json"
    off_dir = c.data_dir / "officers"
    keyfiles = sorted(off_dir.glob("*.key"))
    for f in keyfiles[: cur.quorum]:
        r = CliRunner().invoke(
            app,
            [
                "backup",
                "authorize-restore",
                "--backup",
                str(backup / "node-3"),
                "--governance",
                str(v2),
                "--officer-key",
                str(f),
                "--officer-passphrase-file",
                str(off_dir / "passphrase"),
                "--out",
                str(auth),
            ],  # fmt: skip
        )
        assert r.exit_code == 0, r.output
        if f == keyfiles[0] and cur.quorum > 1:
            c.stop_proc("node-2")
            one = subprocess.run(  # noqa: S603
                [
                    c.python,
                    "-m",
                    "signer_nodes",
                    "backup",
                    "adopt",
                    "--data-dir",
                    str(c.data_dir / "node-2"),
                    "--authorization",
                    str(auth),
                ],  # fmt: skip
                capture_output=True,
                text=True,
                env=env,
                cwd=cwd,  # fmt: skip
            )
            assert one.returncode == 4 and "authorization-under-signed" in one.stderr
    c.stop_proc("node-1")
    c.stop_proc("node-2")
    for i in (1, 2):
        out = json.loads(
            run(
                "-m",
                "signer_nodes",
                "backup",
                "adopt",
                "--data-dir",
                str(c.data_dir / f"node-{i}"),
                "--authorization",
                str(auth),
            )  # fmt: skip
        )
        assert sorted(out["keys"]) == sorted(k.id for k in live.keys.values())
    try:
        c.start_node(2)
        c._spawn(
            "node-3",
            [
                c.python,
                "-m",
                "signer_nodes",
                "run",
                "--data-dir",
                str(fresh),
                "--host",
                c.host,
                "--port",
                str(node_port(c.port, 3)),
                *([] if c.tls else ["--dev"]),  # as Cluster.start_node
            ],  # fmt: skip
        )
        _wait(lambda: httpx.get(c.node_url(3) + "/health", timeout=1).status_code == 200, "node-3")
        _wait(lambda: httpx.get(c.node_url(2) + "/health", timeout=1).status_code == 200, "node-2")
        # the coordinator's view follows governance: node-3 re-enrolled with its new identity
        enrol = live.admin.http.put("/v1/nodes/node-3", json={"url": c.node_url(3)})
        assert enrol.status_code == 200, enrol.text

        def ready() -> bool:
            st = {n.id: n.status for n in live.admin.nodes()}
            return st["node-2"] == st["node-3"] == "healthy" and st["node-1"] != "healthy"

        _wait(ready, "node-2 and node-3 healthy, node-1 down")
        health = httpx.get(c.node_url(3) + "/health", timeout=2).json()
        assert health["sign_pk"] == ident["sign_pk"]
        assert health["boot_id"] != old_boot  # the coordinator drops what it pooled
        for s in SCHEMES:
            k = live.keys[s]
            msg = hashlib.sha256(b"after restore " + s.encode()).digest()
            sr = live.requester.sign(k.id, msg, timeout=90)
            assert sr.status == "signed", sr
            assert sorted(sr.signers or []) == [2, 3]
            assert _independent(s, k.public_key, msg, str(sr.signature))
    finally:
        c.start_node(1)
