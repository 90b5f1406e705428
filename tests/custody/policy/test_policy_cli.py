"""custody policy show|check|dry-run and governance propose --policy/--allow/--disallow,
run through the real command line (typer's CliRunner) on real files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nacl.signing
import pytest
import rlp
from typer.testing import CliRunner

from custody import governance as gov
from custody import policy_file as pf
from custody.cli import app
from tests.custody.policy.helpers import ALICE, BOB
from tests.custody.policy.test_policy_file import sample_doc

runner = CliRunner()
PASS = b"correct horse battery"
T0 = "2027-01-15T08:00:00Z"  # ALICE is allowlisted since 2027-01-01, BOB from 23:00 that day
CAROL = "0x" + "c0" * 20


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), env={"CUSTODY_OFFICER_PASSPHRASE": PASS.decode()})
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A genesis (v1, unsigned is enough to propose from), a policy file naming an approver
    key file, and that key file."""
    tmp = tmp_path_factory.mktemp("policy")
    officer, _ = gov.create_officer_key("alice", PASS, cost=gov.INTERACTIVE)
    node = nacl.signing.SigningKey.generate()
    body = gov.Governance(
        cluster_id="prod-eu",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(officer,),
        quorum=1,
        roster=(
            gov.RosterNode(
                "node-1",
                1,
                bytes(node.verify_key),
                bytes(node.to_curve25519_private_key().public_key),
            ),
        ),
    )
    (tmp / "v1.gov").write_bytes(gov.unsigned(gov.check_body(body)).encode())
    (tmp / "approvers").mkdir()
    bob, blob = gov.create_approver_key("bob", PASS, cost=gov.INTERACTIVE)
    (tmp / "approvers" / "bob.key").write_bytes(blob)
    doc = sample_doc()
    doc["approver_groups"][0]["approvers"][1] = {"key_file": "approvers/bob.key"}
    (tmp / "policy.json").write_text(json.dumps(doc, indent=2))
    return {
        "dir": tmp,
        "v1": tmp / "v1.gov",
        "policy": tmp / "policy.json",
        "bob": tmp / "approvers" / "bob.key",
    }


@pytest.fixture(scope="module")
def v2(files: dict[str, Path]) -> Path:
    out = files["dir"] / "v2.gov"
    text = run("governance", "propose", str(files["v1"]), "--policy", str(files["policy"]),
               "--out", str(out))  # fmt: skip
    assert "policy changed: 4 rules" in text and "version 2 written" in text
    return out


def test_check_accepts_a_good_file_and_names_the_path_of_a_fault(files) -> None:
    out = run("policy", "check", str(files["policy"]))
    assert "ok: 4 rules, 1 allowlists, 1 wallets, 1 approver groups" in out
    doc = json.loads(files["policy"].read_text())
    doc["rules"][1]["velocity"][0]["window"] = "a day"
    bad = files["dir"] / "bad.json"  # beside the key files it names
    bad.write_text(json.dumps(doc))
    out = run("policy", "check", str(bad), code=4)
    assert "rules[1].velocity[0].window: 'a day' is not a duration" in out
    doc = json.loads(files["policy"].read_text())
    doc["approver_groups"][0]["approvers"][1]["key_file"] = "approvers/nobody.key"
    bad.write_text(json.dumps(doc))
    assert "key file approvers/nobody.key: cannot read" in run("policy", "check", str(bad), code=4)
    # an officer's key file is not an approver's
    officer, blob = gov.create_officer_key("olga", PASS, cost=gov.INTERACTIVE)
    (files["dir"] / "approvers" / "olga.key").write_bytes(blob)
    doc["approver_groups"][0]["approvers"][1]["key_file"] = "approvers/olga.key"
    bad.write_text(json.dumps(doc))
    assert "it is an officer key file" in run("policy", "check", str(bad), code=4)
    bad.write_text("{not json")
    assert "json: not JSON" in run("policy", "check", str(bad), code=4)


def test_propose_carries_the_policy_and_show_prints_it(files, v2: Path) -> None:
    doc = gov.decode(v2.read_bytes())
    bob = gov.read_approver_public(files["bob"].read_bytes())
    assert doc.body.policy.approver("bob") == bob
    assert doc.body.policy == pf.parse_policy(
        json.loads(files["policy"].read_text()), key_files={"approvers/bob.key": bob}
    )
    words = run("policy", "show", str(v2))
    assert f"policy of prod-eu version 2 (digest {doc.body.digest.hex()})" in words
    assert "signed by nobody (a draft)" in words
    assert "2. small-eth: ALLOW when kind evm-tx" in words
    assert "amount at most 1 ETH (1000000000000000000 wei)" in words
    assert f"bob {bob.public_key.hex()}" in words
    # --json is the policy file's normal form: it parses back to the same policy
    printed = json.loads(run("policy", "show", str(v2), "--json"))
    assert pf.parse_policy(printed) == doc.body.policy
    assert printed["approver_groups"][0]["approvers"][1] == {
        "id": "bob",
        "public_key": bob.public_key.hex(),
    }
    # a policy file shows too; a genesis has the empty policy
    assert "small-eth" in run("policy", "show", str(files["policy"]))
    assert "every request is denied" in run("policy", "show", str(files["v1"]))


def test_allow_and_disallow_edit_one_allowlist(files, v2: Path, tmp_path: Path) -> None:
    v3 = tmp_path / "v3.gov"
    before = int(time.time())
    out = run("governance", "propose", str(v2), "--allow", CAROL, "--allowlist", "payees",
              "--label", "Carol", "--timelock", "48h", "--out", str(v3))  # fmt: skip
    after = int(time.time())
    assert f"allowlist payees: + {CAROL} from" in out and "(time lock 2d)" in out
    body = gov.decode(v3.read_bytes()).body
    entries = body.policy.allowlists[0].entries
    assert [e.address for e in entries] == [ALICE, BOB, CAROL]
    assert entries[2].label == "Carol"
    assert before + 48 * 3600 <= entries[2].active_from <= after + 48 * 3600
    assert body.policy.rules == gov.decode(v2.read_bytes()).body.policy.rules

    v4 = tmp_path / "v4.gov"
    run("governance", "propose", str(v3), "--disallow", ALICE.upper().replace("0X", "0x"),
        "--allowlist", "payees", "--out", str(v4))  # fmt: skip
    assert [e.address for e in gov.decode(v4.read_bytes()).body.policy.allowlists[0].entries] == [
        BOB,
        CAROL,
    ]
    v5 = tmp_path / "v5.gov"
    refusals = [
        (["--allow", CAROL, "--allowlist", "payees"], "is on allowlist payees already"),
        (["--disallow", ALICE, "--allowlist", "payees"], "is not on allowlist payees"),
        (
            ["--allow", CAROL, "--allowlist", "payes"],
            "no allowlist 'payes' (the policy has: payees)",
        ),
        (["--allow", CAROL, "--allowlist", "payees", "--timelock", "2 days"], "--timelock:"),
    ]
    for extra, words in refusals:
        got = run("governance", "propose", str(v4), *extra, "--out", str(v5), code=4)
        assert words in got, got
    assert "need --allowlist" in run("governance", "propose", str(v4), "--allow", CAROL,
                                     "--out", str(v5), code=2)  # fmt: skip
    assert not v5.exists()


def evm_request(tmp: Path, to: str, eth: float, *, name: str = "req.json", **extra) -> Path:
    fields = [1, 0, 10**9, 2 * 10**9, 21_000, bytes.fromhex(to[2:]), int(eth * 10**18), b"", []]
    body = {
        "key_id": "key-1",
        "kind": "evm-tx",
        "payload": {"tx": "0x02" + rlp.encode(fields).hex()},
        "scheme": "ecdsa-secp256k1",
        **extra,
    }
    path = tmp / name
    path.write_text(json.dumps(body))
    return path


def test_dry_run_names_the_rule_and_why_the_earlier_ones_did_not_match(v2, tmp_path) -> None:
    small = evm_request(tmp_path, ALICE, 0.5)
    out = run("policy", "dry-run", "--request", str(small), "--governance", str(v2), "--at", T0)
    assert "decision: ALLOW by rule small-eth (policy-allowed)" in out
    assert "1. no-raw (deny): no match" in out
    assert "kinds: the request is evm-tx, the rule is for raw" in out
    assert "2. small-eth (allow): MATCHED" in out
    assert "signed by nobody: a draft" in out and "nothing was signed" in out
    assert f"to {ALICE}: 500000000000000000" in out

    big = evm_request(tmp_path, ALICE, 2, name="big.json")
    out = run("policy", "dry-run", "--request", str(big), "--governance", str(v2), "--at", T0)
    assert "decision: APPROVALS REQUIRED by rule big-eth" in out
    assert (
        "max_amount: amount 2 ETH (2000000000000000000 wei) is above the maximum 1 ETH "
        "(1000000000000000000 wei)"
    ) in out
    assert "approvals required: 2 of treasury (ann, bob)" in out

    # BOB's time lock ends at 23:00 that day: before, nothing matches; after, allowed
    to_bob = evm_request(tmp_path, BOB, 0.5, name="bob.json")
    out = run("policy", "dry-run", "--request", str(to_bob), "--governance", str(v2), "--at", T0)
    assert "decision: DENY by rule default-deny (policy-no-rule-matched)" in out
    assert f"allowlists: destination {BOB} is on allowlist payees but time-locked until " in out
    assert "2027-01-15T23:00:00Z" in out and "no rule matched: denied by default" in out
    later = str(pf.parse_instant("2027-01-15T23:00:00Z"))  # Unix seconds work too
    out = run("policy", "dry-run", "--request", str(to_bob), "--governance", str(v2), "--at", later)
    assert "decision: ALLOW by rule small-eth" in out

    doc = json.loads(
        run(
            "policy",
            "dry-run",
            "--request",
            str(big),
            "--governance",
            str(v2),
            "--at",
            T0,
            "--json",
        )  # fmt: skip
    )
    assert (doc["action"], doc["rule"], doc["reason"]) == (
        "approve",
        "big-eth",
        "policy-approvals-required",
    )
    assert doc["requirement"] == {"all": [{"group": "treasury", "m": 2}]}
    assert doc["policy_version"] == 2 and doc["source"] == "document" and doc["signed_by"] == []
    assert doc["facts"]["amount"] == str(2 * 10**18) and doc["at"] == T0
    assert [(r["rule"], r["matched"]) for r in doc["rules"]] == [
        ("no-raw", False),
        ("small-eth", False),
        ("big-eth", True),
    ]
    assert [m["condition"] for m in doc["rules"][1]["failed"]] == ["max_amount"]


def test_dry_run_of_raw_and_message_requests(v2, tmp_path) -> None:
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({"key_id": "key-1", "kind": "raw", "message": "11" * 32,
                               "scheme": "ecdsa-secp256k1"}))  # fmt: skip
    out = run("policy", "dry-run", "--request", str(raw), "--governance", str(v2), "--at", T0)
    assert "decision: DENY by rule no-raw (policy-denied)" in out
    msg = tmp_path / "msg.json"
    msg.write_text(json.dumps({"key_id": "key-3", "kind": "message", "scheme": "ed25519",
                               "payload": {"message": "0x68656c6c6f"}}))  # fmt: skip
    out = run("policy", "dry-run", "--request", str(msg), "--governance", str(v2), "--at", T0)
    assert "wallets: key key-3 is not in wallets treasury" in out
    assert "decision: DENY by rule default-deny" in out
    # the time of day, across its boundary
    msg.write_text(json.dumps({"key_id": "key-2", "kind": "message", "scheme": "ed25519",
                               "payload": {"message": "0x68656c6c6f"}}))  # fmt: skip
    out = run("policy", "dry-run", "--request", str(msg), "--governance", str(v2), "--at", T0)
    assert "decision: ALLOW by rule office-messages" in out
    evening = "2027-01-15T18:00:00Z"
    out = run("policy", "dry-run", "--request", str(msg), "--governance", str(v2), "--at", evening)
    assert "time_of_day: 18:00:00 UTC is outside 08:00:00-18:00:00 UTC" in out


def test_dry_run_refusals(v2, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"key_id": "key-1", "kind": "evm-tx", "scheme": "ecdsa-secp256k1",
                               "payload": {"tx": "0x02zz"}}))  # fmt: skip
    out = run("policy", "dry-run", "--request", str(bad), "--governance", str(v2), code=4)
    assert "refused: field 'payload.tx'" in out
    bad.write_text(json.dumps({"key_id": "key-1", "kind": "raw", "message": "11" * 32}))
    out = run("policy", "dry-run", "--request", str(bad), "--governance", str(v2), code=2)
    assert "scheme: the key's scheme is needed" in out
    out = run("policy", "dry-run", "--request", str(bad), "--governance", str(v2),
              "--at", "tomorrow", code=2)  # fmt: skip
    assert "--at: 'tomorrow' is not an ISO 8601 instant" in out
    # the active version is the coordinator's: without one reachable, a clean error
    out = run("policy", "dry-run", "--request", str(bad), "--api-url", "http://127.0.0.1:9",
              "--token", "t", code=5)  # fmt: skip
    assert "503 Coordinator unreachable" in out


def test_propose_refuses_a_bad_policy_file_and_writes_nothing(files, tmp_path: Path) -> None:
    doc = json.loads(files["policy"].read_text())
    doc["rules"][2]["approvals"]["all"][0]["m"] = 3  # of 2 approvers
    bad = files["dir"] / "bad-quorum.json"
    bad.write_text(json.dumps(doc))
    out = tmp_path / "v2.gov"
    got = run("governance", "propose", str(files["v1"]), "--policy", str(bad), "--out", str(out),
              code=4)  # fmt: skip
    assert "rules[2].approvals.all[0].m: a whole number from 1 to the 2 approvers" in got
    assert not out.exists()
    # an approver whose key is an officer's is refused by the governance rules
    officer = gov.decode(files["v1"].read_bytes()).body.officers[0]
    doc = json.loads(files["policy"].read_text())
    doc["approver_groups"][0]["approvers"][0]["public_key"] = officer.public_key.hex()
    bad.write_text(json.dumps(doc))
    got = run("governance", "propose", str(files["v1"]), "--policy", str(bad), "--out", str(out),
              code=4)  # fmt: skip
    assert "public key is an officer's" in got and not out.exists()
