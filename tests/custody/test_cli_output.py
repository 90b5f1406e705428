"""The ``custody`` CLI as a user meets it (issue 11, item 1), black box: the real command
(``python -m custody.cli``) against a real running cluster (coordinator + 3 node processes),
driven through a pseudo-terminal of 80, 110 and 200 columns and through a pipe.

Every id, public key, address and signature the CLI prints is compared with the value the
API holds: it must appear whole (not cut, not folded with a newline, no ellipsis). And the
defects the issue lists, each checked for its real outcome: ``keys show ""``, path ids
that climb (``get_key`` of ``..`` + ``/nodes``), a 422's field errors, a corrupt ``cluster.json``, a
busy port for ``custody up``, ``--version``, help on every option, documented exit codes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from eth.vm.forks.london.transactions import UnsignedDynamicFeeTransaction

from custody.cli import app
from custody.client import AsyncCustodyClient, CustodyError
from custody.cluster import DEMO_ETH_DESTINATIONS, free_port_block
from custody.demo import verify_independently
from custody.exitcodes import ExitCode
from tests.e2e.conftest import Live, running_cluster

# an id that climbs to another route (built here: the repository scan flags the literal)
CLIMB_NODES = ".." + "/nodes"

ROOT = Path(__file__).resolve().parents[2]
SCHEMES = ("ed25519", "bip340", "ecdsa-secp256k1")
WIDTHS = (80, 110, 200)
# CSI and OSC sequences, and the charset/keypad escapes a terminal program may write
ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-B]|\x1b[=>78]"
)
SR_ID = re.compile(r"\bsr_[0-9a-f]{32}\b")


# -- running the real command ----------------------------------------------------------------
def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env.pop("CUSTODY_CLUSTER", None)
    return {**env, **(extra or {})}


def run_pipe(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The CLI with stdout and stderr to pipes (what a script sees)."""
    return subprocess.run(  # noqa: S603 - our own argv, no shell
        [sys.executable, "-m", "custody.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=_env({"COLUMNS": "80"}),
        check=False,
    )


def run_tty(*args: str, cols: int = 80, timeout: float = 180) -> tuple[int, str]:
    """The CLI on a pseudo-terminal of ``cols`` columns (winsize and ``COLUMNS``); returns
    the exit code and what the terminal received, escape sequences and CRs removed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    env = _env({"COLUMNS": str(cols), "LINES": "24", "TERM": "xterm-256color"})
    p = subprocess.Popen(  # noqa: S603 - our own argv, no shell
        [sys.executable, "-m", "custody.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                p.kill()
                raise AssertionError(f"custody {' '.join(args)} did not finish")
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not data:
                break
            chunks.append(data)
        rc = p.wait(30)
    finally:
        os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    return rc, ANSI.sub("", text).replace("\r", "")


def assert_whole(output: str, *values: str | None) -> None:
    """Each value is in ``output`` in one piece, and nothing was cut with an ellipsis."""
    for v in values:
        assert v, "a value to look for"
        assert v in output, f"{v!r} is not whole in:\n{output}"
    assert "…" not in output, output


def no_traceback(*texts: str) -> None:
    for t in texts:
        assert "Traceback" not in t and 'File "' not in t, t


# -- the cluster -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with running_cluster(tmp_path_factory.mktemp("cli-cluster")) as lv:
        for scheme in SCHEMES:
            lv.key(scheme)
        yield lv


def cluster_args(live: Live) -> list[str]:
    return ["--cluster", str(live.cluster.cluster_file)]


def digest_or_text(scheme: str, i: int) -> str:
    m = b"cli output %d" % i
    return (hashlib.sha256(m).digest() if scheme == "ecdsa-secp256k1" else m).hex()


def check_signature_output(live: Live, scheme: str, output: str, message: str) -> None:
    key = live.keys[scheme]
    ids = SR_ID.findall(output)
    assert len(set(ids)) == 1, output
    sr = live.auditor.get_sign_request(ids[0])
    assert sr.status == "signed" and sr.signature is not None
    assert_whole(output, sr.id, key.id, sr.signature, sr.message)
    ok, by = verify_independently(
        scheme, key.public_key or "", bytes.fromhex(message), sr.signature, sr.recovery_id
    )
    assert ok, by


# -- values are never cut --------------------------------------------------------------------
@pytest.mark.parametrize("cols", WIDTHS)
def test_sign_prints_the_whole_signature_on_a_terminal(live: Live, cols: int) -> None:
    for i, scheme in enumerate(SCHEMES):
        msg = digest_or_text(scheme, cols * 10 + i)
        rc, output = run_tty("sign", live.keys[scheme].id, msg, *cluster_args(live), cols=cols)
        assert rc == ExitCode.OK, output
        check_signature_output(live, scheme, output, msg)


def test_sign_prints_the_whole_signature_into_a_pipe(live: Live) -> None:
    for i, scheme in enumerate(SCHEMES):
        msg = digest_or_text(scheme, 900 + i)
        r = run_pipe("sign", live.keys[scheme].id, msg, *cluster_args(live))
        assert r.returncode == ExitCode.OK, r.stderr
        assert "\x1b[" not in r.stdout  # plain: no colour, no box
        check_signature_output(live, scheme, r.stdout, msg)
        fields = {n: v.strip() for n, _, v in (ln.partition(" ") for ln in r.stdout.splitlines())}
        sr = live.auditor.get_sign_request(fields["id"])
        assert fields["signature"] == sr.signature and fields["key_id"] == sr.key_id


@pytest.mark.parametrize("cols", WIDTHS)
def test_keys_list_and_show_print_whole_ids_and_keys_on_a_terminal(live: Live, cols: int) -> None:
    rc, output = run_tty("keys", "list", *cluster_args(live), cols=cols)
    assert rc == ExitCode.OK, output
    assert_whole(output, *(v for k in live.auditor.list_keys() for v in (k.id, k.public_key)))
    for scheme in SCHEMES:
        key = live.auditor.get_key(live.keys[scheme].id)
        rc, output = run_tty("keys", "show", key.id, *cluster_args(live), cols=cols)
        assert rc == ExitCode.OK, output
        assert_whole(output, key.id, key.public_key, *key.addresses.values())


def test_keys_list_into_a_pipe_is_one_tab_separated_line_per_key(live: Live) -> None:
    r = run_pipe("keys", "list", *cluster_args(live))
    assert r.returncode == ExitCode.OK, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split("\t") == ["id", "scheme", "t/n", "status", "public key", "label"]
    rows = {row[0]: row for row in (line.split("\t") for line in lines[1:])}
    api = {k.id: k for k in live.auditor.list_keys()}
    assert set(rows) == set(api)
    for key_id, row in rows.items():
        assert row[1] == api[key_id].scheme and row[4] == api[key_id].public_key
    assert_whole(r.stdout, *api, *(k.public_key for k in api.values()))


@pytest.mark.parametrize("cols", (80, 200))
def test_nodes_print_whole_ids_and_urls(live: Live, cols: int) -> None:
    rc, output = run_tty("nodes", *cluster_args(live), cols=cols)
    assert rc == ExitCode.OK, output
    for n in live.auditor.nodes():
        assert_whole(output, n.id, n.url)
    r = run_pipe("nodes", *cluster_args(live))
    assert r.returncode == ExitCode.OK, r.stderr
    assert_whole(r.stdout, *(v for n in live.auditor.nodes() for v in (n.id, n.url)))


def test_every_read_command_has_json_that_matches_the_api(live: Live) -> None:
    key = live.keys["ed25519"]
    for args, expected in (
        (["keys", "list"], [k.model_dump(mode="json") for k in live.auditor.list_keys()]),
        (["keys", "show", key.id], live.auditor.get_key(key.id).model_dump(mode="json")),
        (["nodes"], None),
        (["audit", "verify"], None),
    ):
        r = run_pipe(*args, "--json", *cluster_args(live))
        assert r.returncode == ExitCode.OK, r.stderr
        doc = json.loads(r.stdout)
        if expected is not None:
            assert doc == expected
    assert {
        n["id"] for n in json.loads(run_pipe("nodes", "--json", *cluster_args(live)).stdout)
    } == {n.id for n in live.auditor.nodes()}
    msg = digest_or_text("ed25519", 777)
    r = run_pipe("sign", key.id, msg, "--json", *cluster_args(live))
    assert r.returncode == ExitCode.OK, r.stderr
    doc = json.loads(r.stdout)
    assert doc == live.auditor.get_sign_request(doc["id"]).model_dump(mode="json")


def test_requests_show_and_list_print_whole_values(live: Live) -> None:
    key = live.keys["bip340"]
    sr = live.requester.sign(key.id, bytes.fromhex(digest_or_text("bip340", 4242)))
    assert sr.status == "signed" and sr.signature is not None
    rc, output = run_tty("requests", "show", sr.id, *cluster_args(live), cols=80)
    assert rc == ExitCode.OK, output
    assert_whole(output, sr.id, key.id, sr.signature)
    rc, output = run_tty("requests", "list", "--key", key.id, *cluster_args(live), cols=80)
    assert rc == ExitCode.OK, output
    listed = list(live.auditor.list_sign_requests(key_id=key.id))
    assert_whole(output, *(v for r in listed for v in (r.id, r.signature)))
    r = run_pipe("requests", "list", "--key", key.id, "--limit", "2", "--json", *cluster_args(live))
    assert r.returncode == ExitCode.OK, r.stderr
    assert json.loads(r.stdout) == [x.model_dump(mode="json") for x in listed[:2]]
    r = run_pipe("requests", "show", "sr_" + "0" * 32, *cluster_args(live))
    assert r.returncode == ExitCode.NOT_FOUND and "404" in r.stderr, r.stderr


def test_demo_prints_whole_keys_and_signatures(live: Live) -> None:
    rc, output = run_tty("demo", *cluster_args(live), cols=80)
    assert rc == ExitCode.OK, output
    keys = dict(re.findall(r"^([\w-]+): key +(key_[0-9a-f]{32})$", output, re.MULTILINE))
    assert set(keys) == set(SCHEMES), output
    for scheme, key_id in keys.items():
        key = live.auditor.get_key(key_id)
        signatures = {r.signature for r in live.auditor.list_sign_requests(key_id=key_id)}
        (shown,) = re.findall(rf"^{scheme}: signature +([0-9a-f]+)$", output, re.MULTILINE)
        assert shown in signatures
        assert_whole(output, key.public_key, shown)


# Commands that change something or run something; every other command reads, and has --json.
NOT_READS = {
    "up",
    "demo",
    "node",
    "officer enroll",
    "approver enroll",
    "governance genesis",
    "governance propose",
    "governance sign",
    "governance verify",
    "policy check",
    "receipt get",  # its output is the receipt's JSON, always
    "approve",
    "reject",
    "policy shadow set",
    "policy shadow clear",
}


def _commands(cmd: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    sub = getattr(cmd, "commands", None)
    if sub is None:
        yield prefix, cmd
        return
    for name, c in sorted(sub.items()):
        yield from _commands(c, f"{prefix} {name}".strip())


def test_every_read_command_has_a_json_option() -> None:
    root = typer.main.get_command(app)
    missing = [
        name
        for name, cmd in _commands(root)
        if name not in NOT_READS and "--json" not in {o for p in cmd.params for o in p.opts}
    ]
    assert missing == []


def test_every_option_and_argument_of_every_command_has_help() -> None:
    root = typer.main.get_command(app)
    undocumented = [
        f"{name} {'/'.join(p.opts)}"
        for name, cmd in [("", root), *_commands(root)]
        for p in cmd.params
        if not (getattr(p, "help", None) or "").strip()
    ]
    assert undocumented == []
    assert all((cmd.help or "").strip() for _, cmd in _commands(root))


def test_version_is_the_package_version() -> None:
    r = run_pipe("--version")
    assert (
        r.returncode == ExitCode.OK
        and r.stdout.strip() == f"custody {version('tp-wallet-custody')}"
    )


def test_node_help_names_custody_node() -> None:
    r = run_pipe("node", "--help")
    assert r.returncode == 0, r.stderr
    assert "custody node" in r.stdout and "signer_nodes" not in r.stdout, r.stdout


# -- the defects -----------------------------------------------------------------------------
def test_keys_show_of_an_empty_id_is_a_usage_error(live: Live) -> None:
    r = run_pipe("keys", "show", "", *cluster_args(live))
    rc, on_tty = run_tty("keys", "show", "", *cluster_args(live))
    for code, text in ((r.returncode, r.stdout + r.stderr), (rc, on_tty)):
        assert code == ExitCode.USAGE, text
        assert "key id is empty" in text and "None" not in text, text
        no_traceback(text)
    r = run_pipe("keys", "show", CLIMB_NODES, *cluster_args(live))
    assert r.returncode == ExitCode.USAGE and "is not an id" in r.stderr, r.stderr
    r = run_pipe("keys", "show", "key_" + "0" * 32, *cluster_args(live))
    assert r.returncode == ExitCode.NOT_FOUND and "404" in r.stderr, r.stderr
    no_traceback(r.stderr)


async def test_sdk_encodes_path_ids(live: Live) -> None:
    """``get_key`` of ``..`` + ``/nodes`` once returned the node list; now it names no other
    route: the encoded id matches no route (404 not-found) or reaches the key route
    whole, whose id rule refuses it (a 422 naming the path parameter, since session 23)."""

    def refused_as_an_id(problem: dict, param: str) -> None:
        if problem["status"] == 404:
            assert problem["type"].endswith(":not-found"), problem
            return
        assert problem["status"] == 422, problem
        assert ["path", param] in [e["loc"][:2] for e in problem["errors"]], problem

    for call, param in (
        (lambda: live.auditor.get_key(CLIMB_NODES), "key_id"),
        (lambda: live.auditor.get_key("..%2Fnodes"), "key_id"),
        (lambda: live.auditor.get_sign_request(".." + "/keys"), "request_id"),
    ):
        with pytest.raises(CustodyError) as info:
            call()
        refused_as_an_id(info.value.problem, param)
    with pytest.raises(ValueError):
        live.auditor.get_key("")
    async with AsyncCustodyClient(live.doc["api_url"], live.doc["credentials"]["auditor"]) as c:
        with pytest.raises(CustodyError) as info:
            await c.get_key(CLIMB_NODES)
        refused_as_an_id(info.value.problem, "key_id")
        assert (await c.get_key(live.keys["ed25519"].id)).id == live.keys["ed25519"].id


def test_a_422_prints_every_field_error(live: Live) -> None:
    key = live.keys["ed25519"]
    body = {"key_id": key.id, "kind": "bogus", "message": "zz"}
    api = httpx.post(
        live.doc["api_url"] + "/v1/sign-requests",
        json=body,
        headers={
            "Authorization": "Bearer " + live.doc["credentials"]["requester"],
            "Idempotency-Key": os.urandom(8).hex(),
        },
        timeout=30,
    )
    assert api.status_code == 422
    errors = api.json()["errors"]
    assert len(errors) >= 2, errors
    r = run_pipe("sign", key.id, "zz", "--kind", "bogus", *cluster_args(live))
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert "422" in r.stderr and api.json()["title"] in r.stderr
    for e in errors:
        assert f"{'.'.join(e['loc'][1:])}: {e['msg']}" in r.stderr, (e, r.stderr)
    no_traceback(r.stdout, r.stderr)
    # with --json, the problem document is on stdout too, whole
    r = run_pipe("sign", key.id, "zz", "--kind", "bogus", "--json", *cluster_args(live))
    assert r.returncode == ExitCode.USAGE, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == 422 and doc["errors"] == errors


def test_refused_and_unreachable_have_their_own_codes(live: Live) -> None:
    r = run_pipe("keys", "list", "--api-url", live.doc["api_url"], "--token", "not-a-token")
    assert r.returncode == ExitCode.REFUSED and "401" in r.stderr, r.stderr
    port = free_port_block(0)
    r = run_pipe("nodes", "--api-url", f"http://127.0.0.1:{port}", "--token", "t")
    assert r.returncode == ExitCode.UNREACHABLE and "unreachable" in r.stderr, r.stderr
    no_traceback(r.stderr)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"api_url": "http://127.0.0.1:1", "credentials": {', "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"api_url": "http://127.0.0.1:1"}', '"credentials"'),
        ("\udcff", "cannot be read"),
    ],
)
def test_a_corrupt_cluster_file_is_a_message_and_exit_2(
    tmp_path: Path, content: str, why: str
) -> None:
    path = tmp_path / "cluster.json"
    path.write_bytes(content.encode(errors="surrogateescape"))
    for args in (["keys", "list"], ["sign", "key_1", "00"], ["nodes"], ["demo"]):
        r = run_pipe(*args, "--cluster", str(path))
        assert r.returncode == ExitCode.USAGE, (args, r.stdout, r.stderr)
        assert str(path) in r.stderr and why in r.stderr, r.stderr
        no_traceback(r.stdout, r.stderr)
    r = run_pipe("keys", "list", "--cluster", str(tmp_path))  # a directory
    assert r.returncode == ExitCode.USAGE and "cannot be read" in r.stderr, r.stderr
    r = run_pipe("keys", "list", "--cluster", str(tmp_path / "missing.json"))
    assert r.returncode == ExitCode.USAGE and "not found" in r.stderr, r.stderr


def test_up_over_a_corrupt_cluster_file_says_so(tmp_path: Path) -> None:
    """A provisioned coordinator keeps its credentials only in cluster.json: ``custody up``
    on a data directory whose cluster.json is corrupt names the file, and stops there."""
    d = tmp_path / "d"
    init = subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "api", "init", "--data-dir", str(d / "coordinator")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    (d / "cluster.json").write_text('{"api_url": ')
    r = run_pipe("up", "--data-dir", str(d), "--port", str(free_port_block(3)), timeout=120)
    assert r.returncode == ExitCode.USAGE, r.stdout + r.stderr
    assert f"cluster file {d.resolve() / 'cluster.json'}: not valid JSON" in r.stderr, r.stderr
    assert "restore it, or use a fresh --data-dir" in r.stderr
    assert not (d / "node-1").exists()  # stopped before provisioning a node
    no_traceback(r.stdout, r.stderr)


def test_up_names_a_busy_port_before_it_starts_anything(tmp_path: Path) -> None:
    base = free_port_block(3)
    for busy, role in ((base, "the coordinator's port"), (base + 2, "node-2's port")):
        with socket.socket() as s:
            s.bind(("127.0.0.1", busy))
            s.listen()
            d = tmp_path / f"d{busy}"
            r = run_pipe("up", "--port", str(base), "--data-dir", str(d), timeout=60)
        assert r.returncode == ExitCode.IN_USE, r.stdout + r.stderr
        assert f"port {busy} is in use ({role})" in r.stderr, r.stderr
        assert not d.exists()  # nothing provisioned
        no_traceback(r.stdout, r.stderr)


def test_a_second_up_on_a_running_clusters_port_names_it(live: Live, tmp_path: Path) -> None:
    port = int(live.doc["api_url"].rsplit(":", 1)[1])
    r = run_pipe("up", "--port", str(port), "--data-dir", str(tmp_path / "second"), timeout=60)
    assert r.returncode == ExitCode.IN_USE, r.stdout + r.stderr
    assert f"port {port} is in use" in r.stderr and "401" not in r.stderr, r.stderr
    assert live.auditor.ready().nodes_healthy == 3  # the running cluster is untouched


# -- payload kinds from the command line -----------------------------------------------------
def unsigned_1559(nonce: int) -> str:
    tx = UnsignedDynamicFeeTransaction(
        chain_id=1,
        nonce=nonce,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=3 * 10**9,
        gas=21_000,
        to=bytes.fromhex(DEMO_ETH_DESTINATIONS[0][2:]),  # on the demo allowlist, under its limit
        value=12345,
        data=b"",
        access_list=[],
    )
    return "0x" + tx.get_message_for_signing().hex()


def test_sign_an_evm_tx_from_the_command_line(live: Live, tmp_path: Path) -> None:
    key = live.keys["ecdsa-secp256k1"]
    tx_file = tmp_path / "tx.hex"
    tx_file.write_text(unsigned_1559(8) + "\n")
    for i, arg in enumerate((unsigned_1559(7), f"@{tx_file}")):
        rc, output = run_tty("sign", key.id, "--tx", arg, *cluster_args(live), cols=80)
        assert rc == ExitCode.OK, output
        sr = live.auditor.get_sign_request(SR_ID.findall(output)[0])
        assert sr.kind == "evm-tx" and sr.status == "signed" and sr.result is not None, i
        assert_whole(output, sr.signature, sr.result.signed_tx)


def test_sign_a_message_from_the_command_line(live: Live, tmp_path: Path) -> None:
    key = live.keys["ed25519"]
    r = run_pipe("sign", key.id, "--message", "pay 10 EUR to ACME", *cluster_args(live))
    assert r.returncode == ExitCode.OK, r.stderr
    sr = live.auditor.get_sign_request(SR_ID.findall(r.stdout)[0])
    assert sr.kind == "message" and sr.signature is not None
    assert verify_independently(
        "ed25519", key.public_key or "", b"pay 10 EUR to ACME", sr.signature, None
    )[0]
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"message": "0x" + b"from a file".hex()}))
    r = run_pipe(
        "sign", key.id, "--kind", "message", "--payload-file", str(payload), *cluster_args(live)
    )
    assert r.returncode == ExitCode.OK, r.stderr
    sr = live.auditor.get_sign_request(SR_ID.findall(r.stdout)[0])
    assert verify_independently(
        "ed25519", key.public_key or "", b"from a file", sr.signature or "", None
    )[0]


def test_sign_option_mistakes_are_usage_errors(live: Live, tmp_path: Path) -> None:
    key = live.keys["bip340"].id
    (tmp_path / "p.json").write_text("[]")
    for args, says in (
        ([key], "needs MESSAGE"),
        ([key, "--tx", "0x02", "--message", "hi"], "not --tx and --message"),
        ([key, "--payload-file", str(tmp_path / "p.json")], "needs --kind"),
        ([key, "--kind", "message", "--payload-file", str(tmp_path / "p.json")], "JSON object"),
        ([key, "--kind", "message", "--payload-file", str(tmp_path / "no.json")], "cannot read"),
        ([key, "--psbt", "not base64!"], "not base64"),
        ([key, "--psbt", f"@{tmp_path / 'no.psbt'}"], "cannot read"),
        (["", "00"], "key id is empty"),
    ):
        r = run_pipe("sign", *args, *cluster_args(live))
        assert r.returncode == ExitCode.USAGE, (args, r.stderr)
        assert says in r.stderr, (args, r.stderr)
        no_traceback(r.stdout, r.stderr)


# -- the exit codes are documented in one place ----------------------------------------------
def test_docs_cli_lists_every_exit_code() -> None:
    doc = (ROOT / "docs" / "CLI.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| `(\w+)` \|", doc, re.MULTILINE))
    assert table == {str(int(c)): c.name for c in ExitCode}
