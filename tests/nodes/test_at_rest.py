"""Secrets at rest: no share, nonce, presignature, seed or identity key in plaintext on disk;
the database does not open without its key; CLI errors have their own code and message."""

from __future__ import annotations

import base64
import secrets
import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlcipher3

from mpc import dkls23, keyio
from tests.nodes.conftest import InProc, cli, unsealed_identity


def _forms(secret: bytes) -> list[bytes]:
    out = [
        secret,
        secret[::-1],
        secret.hex().encode(),
        secret.hex().upper().encode(),
        secret[::-1].hex().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
    ]
    return [f for f in out if len(f) >= 16]


def _node_secrets(node) -> list[bytes]:  # noqa: ANN001 - test helper
    """Every secret a node holds, read back through its own unseal path."""
    from signer_nodes import vault as v

    sign_key, box_key = unsealed_identity(node)
    found = [bytes(sign_key), bytes(box_key), node.vault.read_db_key()]
    for key_id in node.store.key_ids():
        row = node.store.get_key(key_id)
        plain = node.shares.unseal_share(row)
        found.append(plain)
        if row.scheme == "ecdsa-secp256k1":
            share = dkls23.EcdsaKeyShare.from_bytes(plain)
            kp = share.key
            for j in share.bob:
                found += [
                    share.bob[j].k0,
                    share.bob[j].k1,
                    share.alice[j].kd,
                    share.alice[j].delta.to_bytes(32, "big"),
                ]
        else:
            kp = keyio.decode_key_package(plain)
        found.append(kp.group.encode_scalar(kp.signing_share))
    # Nonces and presignatures live in memory only (signer_nodes.pool): none may be on disk.
    for item in list(node.shares.pool._items.values()):
        plain = item.secret.to_bytes()
        found.append(plain)
        if item.kind == "nonce":
            import cbor2

            obj = cbor2.loads(plain)
            found += [obj["hiding"], obj["binding"]]
    with node.store.read() as c:
        assert c.execute("SELECT count(*) FROM ledger").fetchone()[0] == 0
    assert v.ledger_aad  # the AAD purpose stays for rotation of old ledgers
    return found


def test_no_secret_in_plaintext_on_disk(inproc: InProc, tmp_path: Path) -> None:
    inproc.dkg("ed25519", "k-ed")
    inproc.dkg("bip340", "k-tr")
    inproc.dkg("ecdsa-secp256k1", "k-ec")
    pre = {
        "session_id": secrets.token_hex(32),
        "kind": "ecdsa-presign",
        "key_id": "k-ec",
        "scheme": "ecdsa-secp256k1",
        "threshold": 2,
        "participants": [1, 3],
    }
    inproc.run_session(pre)
    for p in (1, 2):
        inproc.nodes[p].frost_commitments("k-ed", 5)
    sigs = {}
    for node in inproc.nodes.values():
        sigs[node.node_id] = _node_secrets(node)
        node.store._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    assert sum(len(s) for s in sigs.values()) > 60
    assert inproc.nodes[3].status()["presignatures_unused"] == 1
    token_dirs = {Path(n.vault.hsm._config.softhsm_conf).parent for n in inproc.nodes.values()}
    files = [f for d in [tmp_path, *token_dirs] for f in d.rglob("*") if f.is_file()]
    assert any(f.name.endswith("-wal") for f in files) or any(f.name == "node.db" for f in files)
    blobs = {f: f.read_bytes() for f in files}
    for node_id, values in sigs.items():
        for s in values:
            for form in _forms(s):
                hits = [str(f) for f, data in blobs.items() if form in data]
                assert not hits, f"{node_id}: secret found in {hits}"


def test_database_needs_its_key(inproc: InProc) -> None:
    node = inproc.nodes[1]
    path = node.paths.db
    node.close()
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(path).execute("SELECT * FROM sqlite_master").fetchall()
    conn = sqlcipher3.connect(str(path))
    conn.execute(f"PRAGMA key = \"x'{secrets.token_hex(32)}'\"")
    with pytest.raises(sqlcipher3.DatabaseError):
        conn.execute("SELECT * FROM sqlite_master").fetchall()
    inproc.nodes.pop(1)


def test_cli_errors_have_their_own_code(tmp_path: Path) -> None:
    d = tmp_path / "n"
    r = cli(
        "init",
        "--data-dir",
        str(d),
        "--node-id",
        "node-9",
        "--party-id",
        "9",
        "--coordinator-key",
        "ab" * 32,
    )
    assert r.returncode == 0, r.stderr
    ok = cli("status", "--data-dir", str(d), "--json")
    assert ok.returncode == 0 and '"hsm": "ok"' in ok.stdout
    table = cli("status", "--data-dir", str(d))  # the human form (lists of ints included)
    assert table.returncode == 0 and "seal_key_versions" in table.stdout, table.stderr
    assert "Traceback" not in table.stdout + table.stderr
    wrong = cli("status", "--data-dir", str(d), env={"CUSTODY_HSM_PIN": "not-the-pin"})
    module = cli(
        "status", "--data-dir", str(d), env={"CUSTODY_PKCS11_MODULE": str(tmp_path / "x.so")}
    )
    shutil.rmtree(d / "token")
    token = cli("status", "--data-dir", str(d))
    for res, code, text in (
        (wrong, 22, "hsm.wrong_pin"),
        (module, 20, "hsm.module_missing"),
        (token, 21, "hsm.token_missing"),
    ):
        assert res.returncode == code, (res.returncode, res.stderr)
        assert text in res.stderr and "Traceback" not in res.stderr + res.stdout
    again = cli(
        "init",
        "--data-dir",
        str(d),
        "--node-id",
        "node-9",
        "--party-id",
        "9",
        "--coordinator-key",
        "ab" * 32,
    )
    assert again.returncode == 2 and "already initialised" in again.stderr
