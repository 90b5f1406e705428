"""``custody approver enroll`` / ``show``: the officer key-file mechanism, for approvers."""

from __future__ import annotations

import stat
from pathlib import Path

import typer
from typer.testing import CliRunner

from custody import governance as gov
from custody.governance_cli import approver_app, officer_app

app = typer.Typer()
app.add_typer(approver_app, name="approver")
app.add_typer(officer_app, name="officer")
runner = CliRunner()
ENV = {"CUSTODY_OFFICER_PASSPHRASE": "approver passphrase"}


def test_enroll_writes_a_private_approver_key_file_that_opens(tmp_path: Path) -> None:
    out = tmp_path / "ann.key"
    result = runner.invoke(app, ["approver", "enroll", "--id", "ann", "--out", str(out)], env=ENV)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    approver, signer = gov.open_approver_key(out.read_bytes(), b"approver passphrase")
    assert approver.approver_id == "ann" and approver.public_key.hex() in result.output
    shown = runner.invoke(app, ["approver", "show", str(out)])
    assert shown.exit_code == 0 and approver.public_key.hex() in shown.output
    again = runner.invoke(app, ["approver", "enroll", "--id", "ann", "--out", str(out)], env=ENV)
    assert again.exit_code == 2 and "never overwritten" in again.output
    # an approver key file is not an officer's
    wrong = runner.invoke(app, ["officer", "show", str(out)])
    assert wrong.exit_code == 4 and "approver key file" in wrong.output  # ExitCode.REFUSED
