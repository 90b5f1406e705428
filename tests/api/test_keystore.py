"""The coordinator key lives in the coordinator's own PKCS#11 token (SoftHSM2 here), and
the coordinator's files are private: data directory 0700, everything in it 0600/0700."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.signing import SigningKey

from api.nodes import sign_headers
from custody.nodeauth import NodeAuthError, signed_bytes, verify_headers
from tests.api.conftest import Api

ROOT = Path(__file__).resolve().parents[2]


def init(data_dir: Path) -> dict:
    out = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "api", "init", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout)


def test_node_requests_are_signed_in_the_token_and_verify_independently(api: Api) -> None:
    public = api.app.state.coordinator_public_key
    signer = api.app.state.coordinator.caller.signer
    body = b'{"key_id":"key_x","count":4}'
    headers = sign_headers(signer, "POST", "/v1/frost/commitments", body)
    verify_headers(public, "POST", "/v1/frost/commitments", body, headers)  # the node's check
    msg = signed_bytes("POST", "/v1/frost/commitments", headers["X-Coordinator-Timestamp"], body)
    Ed25519PublicKey.from_public_bytes(public).verify(
        bytes.fromhex(headers["X-Coordinator-Signature"]), msg
    )
    with pytest.raises(NodeAuthError):
        verify_headers(public, "POST", "/v1/frost/commitments", body + b" ", headers)
    with pytest.raises(NodeAuthError):  # another key's signature is refused
        other = sign_headers(lambda m: SigningKey.generate().sign(m).signature, "GET", "/x", b"")
        verify_headers(public, "GET", "/x", b"", other)


def test_init_keeps_no_key_file_and_the_key_survives_restarts(tmp_path: Path) -> None:
    d = tmp_path / "coord"
    first = init(d)
    assert first["credentials"] is not None and len(first["coordinator_public_key"]) == 64
    again = init(d)
    assert again["coordinator_public_key"] == first["coordinator_public_key"]
    assert again["credentials"] is None
    assert not (d / "coordinator_key").exists()
    # the private key is a sensitive, never-extractable token object (tests/hsm)
    assert (d / "token").is_dir() and (d / "hsm.json").is_file()


def test_a_legacy_key_file_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "coord"
    d.mkdir()
    (d / "coordinator_key").write_text("00" * 32)
    r = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "api", "init", "--data-dir", str(d)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode != 0 and "HSM token" in r.stderr


def test_data_directory_is_0700_and_its_files_0600(tmp_path: Path) -> None:
    d = tmp_path / "coord"
    old = os.umask(0o022)  # a permissive caller: the coordinator must not inherit it
    try:
        init(d)
    finally:
        os.umask(old)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    wide = {
        str(p.relative_to(d)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in d.rglob("*")
        if stat.S_IMODE(p.stat().st_mode) & 0o077
    }
    assert wide == {}
    assert (d / "coordinator.db").is_file() and (d / "hsm.pin").is_file()
