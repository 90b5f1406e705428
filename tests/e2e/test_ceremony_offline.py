"""Ceremonies end to end on the session's shared cluster: the OT re-setup of an ECDSA key
from the CLI (``custody keys ot-resetup``), and an authorization co-signed OFFLINE by two
officers, each with their own key file (``custody ceremony authorize create|sign``), then
submitted with ``--authorization FILE``; an under-signed or replayed one is refused and
changes nothing. Signatures are verified by independent libraries (coincurve for ECDSA,
PyNaCl for Ed25519: custody.demo.verify_independently)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from custody.ceremonies import verify_transcript
from custody.cli import app
from custody.demo import verify_independently
from tests.e2e.conftest import Live, current_governance


@pytest.fixture(scope="module")
def live(shared_live: Live) -> Live:
    """The session's shared cluster: this module makes its own keys and runs ceremonies on
    them only (it neither kills nor restarts nodes, nor installs governance)."""
    return shared_live


def cli(live: Live, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, [*args, "--cluster", str(live.cluster.cluster_file)])
    return r.exit_code, r.output


def offline(*args: str) -> tuple[int, str]:
    """A command an officer runs on their own machine: no cluster file, no network."""
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output


def officer_files(live: Live) -> tuple[list[Path], Path]:
    d = live.cluster.data_dir / "officers"
    return sorted(d.glob("*.key")), d / "passphrase"


def sign_and_verify(live: Live, scheme: str, key_id: str, pk: str, tag: str) -> None:
    m = tag.encode()
    msg = hashlib.sha256(m).digest() if scheme == "ecdsa-secp256k1" else m
    sr = live.requester.sign(key_id, msg)
    assert sr.status == "signed", sr
    ok, by = verify_independently(scheme, pk, msg, sr.signature, sr.recovery_id)
    assert ok, by


def test_ot_resetup_from_the_cli_then_sign(live: Live) -> None:
    key = live.admin.create_key("ecdsa-secp256k1", 2)
    assert key.status == "active", key
    sign_and_verify(live, key.scheme, key.id, key.public_key, "ot before")
    code, text = cli(live, "keys", "ot-resetup", key.id, "--json")
    assert code == 0, text
    cer = json.loads(text[text.index("{") :])
    assert cer["kind"] == "ot-resetup" and cer["status"] == "done" and cer["share_version"] == 2
    outcome = cer["transcript"]["outcome"]
    assert outcome["ceremony"] == "ot-resetup" and outcome["public_key"] == key.public_key
    roster, _ = current_governance(live)
    pks = {n.party_id: n.sign_pk for n in roster.roster if n.party_id in cer["participants"]}
    assert len(pks) == 3
    assert verify_transcript(outcome, cer["transcript"]["signatures"], pks) == []
    for i in range(3):
        sign_and_verify(live, key.scheme, key.id, key.public_key, f"ot after {i}")
    # a FROST key has no base OTs: refused before any officer is asked
    ed = live.admin.create_key("ed25519", 2)
    code, text = cli(live, "keys", "ot-resetup", ed.id)
    assert code != 0 and "an OT re-setup is for ECDSA (DKLs23) keys" in text, text


def test_offline_co_signed_authorization(live: Live, tmp_path: Path) -> None:
    key = live.admin.create_key("ecdsa-secp256k1", 2)
    assert key.status == "active", key
    keys, passphrase = officer_files(live)
    auth = tmp_path / "ot-resetup.auth"
    code, text = cli(live, "ceremony", "authorize", "create", "ot-resetup", key.id,
                     "--out", str(auth), "--json")  # fmt: skip
    assert code == 0, text
    made = json.loads(text[text.index("{") :])
    assert made["signed_by"] == [] and made["quorum"] == 2 and made["share_version"] == 1
    assert made["committee"] == sorted(key.nodes) and made["key_id"] == key.id

    # unsigned, then one officer: refused (the coordinator first; every node checks too)
    code, text = cli(live, "keys", "ot-resetup", key.id, "--authorization", str(auth))
    assert code != 0 and "ceremony-authorization-under-signed" in text, text
    code, text = offline("ceremony", "authorize", "sign", str(auth), "--key", str(keys[0]),
                         "--passphrase-file", str(passphrase), "--json")  # fmt: skip
    assert code == 0, text
    assert len(json.loads(text[text.index("{") :])["signed_by"]) == 1
    code, text = cli(live, "keys", "ot-resetup", key.id, "--authorization", str(auth))
    assert code != 0 and "ceremony-authorization-under-signed" in text, text
    # the same officer again adds nothing
    code, text = offline("ceremony", "authorize", "sign", str(auth), "--key", str(keys[0]),
                         "--passphrase-file", str(passphrase))  # fmt: skip
    assert code == 0, text
    code, text = cli(live, "keys", "ot-resetup", key.id, "--authorization", str(auth))
    assert code != 0 and "ceremony-authorization-under-signed" in text, text
    assert live.admin.http.get(f"/v1/keys/{key.id}/ceremonies").json()["share_version"] == 1

    # a second officer signs on their own machine: the ceremony runs
    code, text = offline("ceremony", "authorize", "sign", str(auth), "--key", str(keys[1]),
                         "--passphrase-file", str(passphrase))  # fmt: skip
    assert code == 0, text
    code, text = offline("ceremony", "authorize", "show", str(auth), "--json")
    assert code == 0 and len(json.loads(text)["signed_by"]) == 2, text
    code, text = cli(live, "keys", "ot-resetup", key.id, "--authorization", str(auth), "--json")
    assert code == 0, text
    cer = json.loads(text[text.index("{") :])
    assert cer["status"] == "done" and cer["share_version"] == 2
    assert cer["transcript"]["authorization"] == bytes.fromhex(auth.read_text()).hex()
    sign_and_verify(live, key.scheme, key.id, key.public_key, "after offline authorization")

    # the authorization is spent: every node refuses it again, nothing changes
    code, text = cli(live, "keys", "ot-resetup", key.id, "--authorization", str(auth))
    assert code != 0 and "replayed" in text, text
    assert live.admin.http.get(f"/v1/keys/{key.id}/ceremonies").json()["share_version"] == 2
    # a flipped byte in a signature: under-signed again
    bad = tmp_path / "bad.auth"
    raw = bytearray(bytes.fromhex(auth.read_text()))
    raw[-5] ^= 1
    bad.write_text(raw.hex())
    code2, text2 = cli(live, "keys", "ot-resetup", key.id, "--authorization", str(bad))
    assert code2 != 0 and "ceremony-authorization" in text2, text2
