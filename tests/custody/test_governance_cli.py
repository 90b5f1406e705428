"""custody officer / custody governance: a whole ceremony from files, as officers run it."""

from __future__ import annotations

import json
from pathlib import Path

import nacl.signing
import pytest
import typer
from typer.testing import CliRunner

from custody import governance as gov
from custody.governance_cli import governance_app, officer_app

app = typer.Typer()
app.add_typer(officer_app, name="officer")
app.add_typer(governance_app, name="governance")
runner = CliRunner()
PASSPHRASE = "correct horse battery"  # noqa: S105 - a test passphrase


def run(*args: str, passphrase: str = PASSPHRASE) -> str:
    result = runner.invoke(app, list(args), env={"CUSTODY_OFFICER_PASSPHRASE": passphrase})
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args: str, passphrase: str = PASSPHRASE) -> str:
    result = runner.invoke(app, list(args), env={"CUSTODY_OFFICER_PASSPHRASE": passphrase})
    assert result.exit_code != 0, result.output
    return result.output


def node_file(tmp: Path, i: int) -> Path:
    key = nacl.signing.SigningKey.generate()
    path = tmp / f"node-{i}.json"
    path.write_text(
        json.dumps(
            {
                "node_id": f"node-{i}",
                "party_id": i,
                "sign_pk": bytes(key.verify_key).hex(),
                "box_pk": bytes(key.to_curve25519_private_key().public_key).hex(),
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def officer_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("officers")
    keys = {}
    for name in ("alice", "bob", "carol"):
        keys[name] = tmp / f"{name}.key"
        out = run("officer", "enroll", "--id", name, "--out", str(keys[name]))
        assert f"officer {name}: public key" in out
        assert keys[name].stat().st_mode & 0o777 == 0o600
    return keys


def test_genesis_then_a_change_signed_by_a_quorum(tmp_path: Path, officer_keys) -> None:
    g = tmp_path / "v1.gov"
    run(
        "governance", "genesis", "--cluster-id", "prod-eu",
        *[a for k in officer_keys.values() for a in ("--officer", str(k))],
        "--quorum", "2",
        *[a for i in (1, 2, 3) for a in ("--node", str(node_file(tmp_path, i)))],
        "--out", str(g),
    )  # fmt: skip
    assert "0 valid signatures" in refused("governance", "verify", str(g))  # unsigned
    run("governance", "sign", str(g), "--key", str(officer_keys["alice"]), "--yes")
    assert "1 valid signatures" in refused("governance", "verify", str(g))
    run("governance", "sign", str(g), "--key", str(officer_keys["bob"]), "--yes")
    assert "version 1 of prod-eu verifies" in run("governance", "verify", str(g))

    v2 = tmp_path / "v2.gov"
    run(
        "governance", "propose", str(g), "--remove-node", "node-3",
        "--add-node", str(node_file(tmp_path, 4)), "--raw-signing", "treasury-hot",
        "--out", str(v2),
    )  # fmt: skip
    run("governance", "sign", str(v2), "--key", str(officer_keys["carol"]), "--yes")
    run("governance", "sign", str(v2), "--key", str(officer_keys["bob"]), "--yes")
    assert "verifies" in run("governance", "verify", str(v2), "--current", str(g))
    shown = json.loads(run("governance", "show", str(v2), "--json"))
    assert [n["node_id"] for n in shown["roster"]] == ["node-1", "node-2", "node-4"]
    assert shown["raw_signing_keys"] == ["treasury-hot"]
    assert shown["previous"] == gov.decode(g.read_bytes()).body.digest.hex()
    assert sorted(shown["signed_by"]) == ["bob", "carol"]
    # the human form shows whole keys, never cut
    human = run("governance", "show", str(v2))
    assert f"sign_pk {shown['roster'][0]['sign_pk']}" in human.splitlines()[3]
    # a rollback: offering v1 on top of v2 is refused
    assert "rollback" in refused("governance", "verify", str(g), "--current", str(v2))


def test_wrong_passphrase_and_existing_key_file_are_refused(tmp_path: Path, officer_keys):
    g = tmp_path / "v1.gov"
    run(
        "governance", "genesis", "--cluster-id", "c", "--officer", str(officer_keys["alice"]),
        "--quorum", "1", "--node", str(node_file(tmp_path, 1)), "--out", str(g),
    )  # fmt: skip
    out = refused(
        "governance",
        "sign",
        str(g),
        "--key",
        str(officer_keys["alice"]),
        "--yes",
        passphrase="x" * 9,
    )
    assert "wrong passphrase" in out
    assert gov.decode(g.read_bytes()).signatures == ()  # nothing was written
    assert "never overwritten" in refused(
        "officer", "enroll", "--id", "alice", "--out", str(officer_keys["alice"])
    )


def test_sign_shows_the_document_and_asks_first(tmp_path: Path, officer_keys):
    g = tmp_path / "v1.gov"
    run(
        "governance", "genesis", "--cluster-id", "c", "--officer", str(officer_keys["alice"]),
        "--quorum", "1", "--node", str(node_file(tmp_path, 1)), "--out", str(g),
    )  # fmt: skip
    result = runner.invoke(
        app,
        ["governance", "sign", str(g), "--key", str(officer_keys["alice"])],
        input="n\n",
        env={"CUSTODY_OFFICER_PASSPHRASE": PASSPHRASE},
    )
    assert result.exit_code == 1 and "not signed" in result.output
    assert "node-1 (party 1)" in result.output  # shown before the question
    assert gov.decode(g.read_bytes()).signatures == ()


def test_a_malformed_proposal_names_its_fault(tmp_path: Path, officer_keys):
    g = tmp_path / "v1.gov"
    run(
        "governance", "genesis", "--cluster-id", "c", "--officer", str(officer_keys["alice"]),
        "--quorum", "1", "--node", str(node_file(tmp_path, 1)), "--out", str(g),
    )  # fmt: skip
    assert "quorum" in refused("governance", "propose", str(g), "--quorum", "2", "--out", "x")
    assert "no node node-9" in refused(
        "governance", "propose", str(g), "--remove-node", "node-9", "--out", "x"
    )
    (tmp_path / "junk.gov").write_bytes(b"\xa0")
    assert "governance-malformed" in refused("governance", "show", str(tmp_path / "junk.gov"))
