"""The backup format without a cluster: recovery identity files, age headers, manifests.

(The whole flow, against real nodes and SoftHSM2, is ``tests/e2e/test_backup.py``.)"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import nacl.signing
import pyrage
import pytest
from pyrage import passphrase as age_passphrase
from pyrage import x25519

from custody import backups as bk

PASS = "test passphrase"  # noqa: S105 - a test fixture


def test_identity_files_are_passphrase_protected() -> None:
    data, recipient = bk.create_identity_file(PASS)
    assert b"AGE-SECRET-KEY" not in data  # the key is inside the scrypt-encrypted file
    ident = bk.open_identity_file(data, PASS)
    assert bk.recipient_of(ident) == recipient
    with pytest.raises(bk.BackupError) as e:
        bk.open_identity_file(data, "wrong")
    assert e.value.code == "identity-wrong-passphrase"
    plain = str(x25519.Identity.generate()).encode()
    with pytest.raises(bk.BackupError) as e:
        bk.open_identity_file(plain, PASS)
    assert e.value.code == "identity-malformed"
    to_key = pyrage.encrypt(plain, [x25519.Identity.generate().to_public()])
    with pytest.raises(bk.BackupError) as e:
        bk.open_identity_file(to_key, PASS)
    assert e.value.code == "identity-unprotected"


def test_a_work_factor_age_refuses_is_named_not_blamed_on_the_passphrase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """age measures this machine at each decryption and refuses a file whose scrypt work
    factor is far above it (on a busy machine, one slow measurement: a DR drill in CI read
    that as a wrong passphrase). A file asking for 2^40 is refused by age every time: the
    error names the work factor, after asking age again (real pyrage, real scrypt)."""
    data, _ = bk.create_identity_file(PASS)
    log_n = re.search(rb"\n-> scrypt \S+ ([0-9]+)\n", data)
    assert log_n is not None
    heavy = data.replace(b" " + log_n.group(1) + b"\n", b" 40\n", 1)
    calls = []
    monkeypatch.setattr(bk.time, "sleep", lambda s: calls.append(s))  # no waiting in tests
    with pytest.raises(bk.BackupError) as e:
        bk.open_identity_file(heavy, PASS)
    assert e.value.code == "identity-work-factor"
    assert "2^40" in str(e.value)
    assert len(calls) == bk.WORK_FACTOR_TRIES - 1  # asked again, then named


def test_age_headers_are_checked_against_the_manifest() -> None:
    a, b = x25519.Identity.generate(), x25519.Identity.generate()
    two = pyrage.encrypt(b"share", [a.to_public(), b.to_public()])
    bk.check_age_header(two, 2, "f")
    with pytest.raises(bk.BackupError) as e:
        bk.check_age_header(two, 1, "f")
    assert e.value.code == "age-recipients-mismatch"
    with pytest.raises(bk.BackupError) as e:
        bk.check_age_header(age_passphrase.encrypt(b"share", PASS), 1, "f")
    assert e.value.code == "age-not-x25519"
    with pytest.raises(bk.BackupError) as e:
        bk.check_age_header(b"not age", 1, "f")
    assert e.value.code == "age-malformed"
    with pytest.raises(bk.BackupError) as e:
        bk.parse_recipients(["age1notarecipient"])
    assert e.value.code == "bad-recipient"


def _node_backup(d: Path, sk: nacl.signing.SigningKey, recipient: x25519.Recipient) -> Path:
    nd = d / "node-1"
    nd.mkdir(parents=True)
    data = pyrage.encrypt(b"payload", [recipient])
    (nd / "k1.age").write_bytes(data)
    body = {
        "format": bk.FORMAT, "node_id": "node-1", "party_id": 1,
        "sign_pk": bytes(sk.verify_key).hex(), "cluster_id": "c", "governance_version": 1,
        "created_at": 0, "recipients": [str(recipient)],
        "keys": [{
            "key_id": "k1", "scheme": "ed25519", "share_version": 1,
            "share_digest": bk.share_digest("k1", 1, b"share"), "public_key": "00" * 32,
            "min_signers": 1, "verifying_shares": {}, "network": None, "committee": [1],
            "file": "k1.age", "file_sha256": hashlib.sha256(data).hexdigest()}],
    }  # fmt: skip
    sig = sk.sign(bk.manifest_statement(body)).signature.hex()
    (nd / bk.MANIFEST).write_text(json.dumps({"manifest": body, "signature": sig}))
    return nd


def test_manifests_are_signed_and_bind_their_files(tmp_path: Path) -> None:
    sk = nacl.signing.SigningKey.generate()
    nd = _node_backup(tmp_path, sk, x25519.Identity.generate().to_public())
    nb = bk.load_node_backup(nd, sign_pk=bytes(sk.verify_key))
    assert nb.node_id == "node-1" and nb.keys[0]["share_version"] == 1
    assert bk.verify_backups(tmp_path).holders == {"k1": [1]}
    with pytest.raises(bk.BackupError) as e:
        bk.load_node_backup(nd, sign_pk=bytes(nacl.signing.SigningKey.generate().verify_key))
    assert e.value.code == "manifest-wrong-signer"
    doc = json.loads((nd / bk.MANIFEST).read_text())
    doc["manifest"]["governance_version"] = 2
    (nd / bk.MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(bk.BackupError) as e:
        bk.load_node_backup(nd)
    assert e.value.code == "manifest-bad-signature"
    doc["manifest"]["governance_version"] = 1
    (nd / bk.MANIFEST).write_text(json.dumps(doc))
    (nd / "k1.age").write_bytes((nd / "k1.age").read_bytes() + b"x")
    with pytest.raises(bk.BackupError) as e:
        bk.load_node_backup(nd)
    assert e.value.code == "share-tampered" and "k1.age" in e.value.detail
