"""``custody backup keygen|create|verify|restore`` and ``custody dr-drill`` (issue 13).

Where a backup is made: on each node's own host, by that node's own process
(``python -m signer_nodes backup export``), because only that node's HSM can unseal its
shares and the plaintext must not leave that process. ``custody backup create`` runs that
command for every node of a local cluster (``custody up``: the nodes' data directories sit
beside ``cluster.json``); on separate hosts the operator runs the node command on each host
and collects the ``DIR/<node id>/`` directories (ciphertext and signed manifests only).
No coordinator endpoint exports shares: a coordinator (or its stolen key) could then ask
``t`` nodes for backups to a recipient of its choosing and so obtain the key.

Recovery identities: ``custody backup keygen --out FILE`` writes a new X25519 age identity
in a passphrase-encrypted age file (scrypt) and prints its ``age1...`` recipient; keep the
file offline, the passphrase apart from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from custody import backups as bk
from custody import governance as gov
from custody.cli_support import DEFAULT_DIR, ClusterOpt, read_cluster_file
from custody.drdrill import DrillError, run_drill
from custody.exitcodes import ExitCode

backup_app = typer.Typer(no_args_is_help=True, help="Share backups to offline recovery keys.")
console = Console()
err = Console(stderr=True, soft_wrap=True)

AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]
Passphrase = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file", help=f"the identity file's passphrase [default: ${bk.PASSPHRASE_ENV}]"
    ),
]


def _passphrase(path: Path | None) -> str:
    if path is not None:
        return path.read_text().rstrip("\n")
    phrase = os.environ.get(bk.PASSPHRASE_ENV)
    if phrase:
        return phrase
    if sys.stdin.isatty():
        return str(typer.prompt("recovery identity passphrase", hide_input=True))
    err.print(f"[red]give --passphrase-file or ${bk.PASSPHRASE_ENV}[/red]")
    raise typer.Exit(ExitCode.USAGE)


def _refused(exc: bk.BackupError) -> typer.Exit:
    err.print(f"refused ({exc.code}): {exc.detail}", markup=False)
    return typer.Exit(ExitCode.REFUSED)


def _node_cmd(args: list[str], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.update(extra_env or {})
    r = subprocess.run(  # noqa: S603 - our own argv, no shell
        [sys.executable, "-m", "signer_nodes", "backup", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln and not ln.startswith("{")]
        err.print(lines[-1] if lines else r.stderr.strip()[-500:], markup=False)
        raise typer.Exit(ExitCode.REFUSED)
    return dict(json.loads(r.stdout))


@backup_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", help="the identity file to write (0600)")],
    passphrase_file: Passphrase = None,
    as_json: AsJson = False,
) -> None:
    """Make a recovery identity (X25519, passphrase-encrypted age file); print its recipient."""
    phrase = _passphrase(passphrase_file)
    data, recipient = bk.create_identity_file(phrase)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    print(json.dumps({"recipient": recipient, "identity": str(out)}) if as_json else recipient)


@backup_app.command("create")
def create(
    recipient: Annotated[list[str], typer.Option("--recipient", help="age1... (repeat)")],
    out: Annotated[Path, typer.Option("--out", help="the backup directory")],
    cluster: ClusterOpt = None,
    as_json: AsJson = False,
) -> None:
    """Back up every local node: each node's own process encrypts its shares (node-local)."""
    try:
        bk.parse_recipients(recipient)
    except bk.BackupError as exc:
        raise _refused(exc) from None
    path = cluster or DEFAULT_DIR / "cluster.json"
    doc = read_cluster_file(path)
    base = path.resolve().parent
    rargs = [a for r in recipient for a in ("--recipient", r)]
    done = []
    for n in doc["nodes"]:
        if not as_json:
            console.print(f"backing up {n['id']} ...", markup=False)
        res = _node_cmd(["export", "--data-dir", str(base / n["id"]), *rargs, "--out", str(out)])
        done.append(res)
        if not as_json:
            console.print(f"  {len(res['keys'])} shares -> {res['dir']}", markup=False)
    if as_json:
        print(json.dumps({"out": str(out), "nodes": done}))
        return
    console.print(f"backup written to {out}; check it with `custody backup verify {out}`")


def _chain(paths: list[Path]) -> list[gov.Governance]:
    docs = [gov.decode(p.read_bytes()) for p in paths]
    if not docs:
        return []
    state = gov.GovernanceState.from_genesis(docs[0])
    out = [state.current]
    for d in docs[1:]:
        out.append(state.advance(d))
    return out


@backup_app.command("verify")
def verify(
    backup_dir: Annotated[Path, typer.Argument(help="the backup directory")],
    governance: Annotated[
        list[Path] | None,
        typer.Option("--governance", help="the governance chain from the genesis (repeat)"),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Manifest signatures (against the roster's pinned identity keys), age headers, file
    digests and completeness (at least t shares per key). Decrypts nothing."""
    try:
        chain = _chain(list(governance or ()))
        bset = bk.verify_backups(backup_dir, governance=chain)
    except gov.GovernanceError as exc:
        err.print(f"refused (governance): {exc}", markup=False)
        raise typer.Exit(ExitCode.REFUSED) from None
    except bk.BackupError as exc:
        raise _refused(exc) from None
    summary: dict[str, Any] = {
        "ok": True,
        "nodes": [
            {"node_id": nb.node_id, "party_id": nb.party_id, "keys": len(nb.keys)}
            for nb in bset.nodes
        ],
        "keys": [
            {
                "key_id": kid,
                "scheme": pub["scheme"],
                "threshold": pub["min_signers"],
                "parties": sorted(bset.holders[kid]),
                "public_key": pub["public_key"],
            }
            for kid, pub in bset.keys.items()
        ],
        "roster_checked": bool(chain),
    }
    if as_json:
        print(json.dumps(summary))
        return
    for k in summary["keys"]:
        console.print(
            f"{k['key_id']} {k['scheme']} {k['threshold']}-of-{len(k['parties'])} backed up "
            f"(parties {k['parties']})",
            markup=False,
        )
    console.print("backup verified" + ("" if chain else " (no --governance: roster not checked)"))


@backup_app.command("restore")
def restore(
    source: Annotated[Path, typer.Option("--backup", help="one node's backup directory")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="the fresh node's data dir")],
    identity: Annotated[Path, typer.Option("--identity", help="the recovery identity file")],
    passphrase_file: Passphrase = None,
    governance: Annotated[
        list[Path] | None,
        typer.Option("--governance", help="the chain whose roster pinned the backed-up node"),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Restore one node's backup onto a fresh node (initialised, governance trusted,
    stopped): its own process decrypts and seals the shares under its new HSM key."""
    try:
        nb = bk.load_node_backup(source)
        pins = {n.sign_pk for g in _chain(list(governance or ())) for n in g.roster
                if n.node_id == nb.node_id}  # fmt: skip
        if governance and nb.sign_pk not in pins:
            raise bk.BackupError("manifest-wrong-signer", f"{nb.node_id}: not the pinned identity")
    except bk.BackupError as exc:
        raise _refused(exc) from None
    args = ["restore", "--data-dir", str(data_dir), "--backup", str(source)]
    args += ["--identity", str(identity), "--sign-pk", nb.sign_pk.hex()]
    if passphrase_file is not None:
        res = _node_cmd([*args, "--passphrase-file", str(passphrase_file)])
    else:  # to the node process only, never on disk
        res = _node_cmd(args, {bk.PASSPHRASE_ENV: _passphrase(None)})
    if as_json:
        print(json.dumps(res))
        return
    for k in res["keys"]:
        console.print(
            f"restored {k['key_id']} ({k['scheme']}, share version {k['share_version']})",
            markup=False,
        )


@backup_app.command("authorize-restore")
def authorize_restore(
    source: Annotated[Path, typer.Option("--backup", help="the restored node's backup dir")],
    governance: Annotated[
        Path, typer.Option("--governance", help="the version that re-keys the node")
    ],
    officer_key: Annotated[Path, typer.Option("--officer-key", help="your officer key file")],
    officer_passphrase: Annotated[
        Path, typer.Option("--officer-passphrase-file", help="its passphrase")
    ],
    out: Annotated[Path, typer.Option("--out", help="the authorization (co-signed if it exists)")],
    lifetime: Annotated[
        int, typer.Option("--lifetime", help="seconds the restore authorizations stay valid")
    ] = 24 * 3600,
    as_json: AsJson = False,
) -> None:
    """Sign (or co-sign) the officers' authorization that a restored node carries on the
    backed-up node's key committees; each other node adopts it (`signer_nodes backup adopt`).
    It carries, per key, a `restore` ceremony authorization naming the key, the backup's
    share version and the restored node, which every adopting node verifies and accepts
    once (the first officer makes them, the others co-sign the same ones)."""
    try:
        nb = bk.load_node_backup(source)
        body = gov.decode(governance.read_bytes()).body
        officer, signer = gov.open_officer_key(
            officer_key.read_bytes(), officer_passphrase.read_bytes().rstrip(b"\n")
        )
    except bk.BackupError as exc:
        raise _refused(exc) from None
    except (gov.GovernanceError, gov.OfficerKeyError) as exc:
        err.print(f"refused: {exc}", markup=False)
        raise typer.Exit(ExitCode.REFUSED) from None
    pinned = body.node(nb.node_id)
    if pinned is None or pinned.party_id != nb.party_id:
        err.print(f"refused: version {body.version} has no {nb.node_id} of party {nb.party_id}")
        raise typer.Exit(ExitCode.REFUSED)
    auth = bk.RestoreAuthorization(
        body.cluster_id, body.version, nb.node_id, nb.party_id, nb.sign_pk.hex(),
        pinned.sign_pk.hex(), tuple(k["key_id"] for k in nb.keys))  # fmt: skip
    if out.exists():
        have = bk.RestoreAuthorization.decode(out.read_bytes())
        if have.body() != auth.body():
            err.print(f"refused: {out} authorizes something else")
            raise typer.Exit(ExitCode.REFUSED)
        auth = have
    try:
        ceremonies = _restore_ceremonies(nb, body, auth, officer.officer_id, signer, lifetime)
    except gov.CeremonyAuthError as exc:
        err.print(f"refused: {exc.kind.value}: {exc.detail}", markup=False)
        raise typer.Exit(ExitCode.REFUSED) from None
    except ValueError:
        err.print(f"refused: {out} carries a restore authorization that is not hex", markup=False)
        raise typer.Exit(ExitCode.REFUSED) from None
    auth = dataclasses.replace(auth, ceremonies=ceremonies)
    auth = auth.with_signature(signer, officer.officer_id)
    out.write_bytes(auth.encode())
    if as_json:
        print(json.dumps({**auth.body(), "signed_by": [o for o, _ in auth.signatures]}))
        return
    console.print(
        f"{officer.officer_id} signed: {nb.node_id} {nb.sign_pk.hex()[:16]}... -> "
        f"{pinned.sign_pk.hex()[:16]}... for {len(auth.key_ids)} keys "
        f"({len(auth.signatures)} of quorum {body.quorum})",
        markup=False,
    )


def _restore_ceremonies(
    nb: bk.NodeBackup,
    body: gov.Governance,
    auth: bk.RestoreAuthorization,
    officer_id: str,
    signer: Any,
    lifetime: int,
) -> tuple[tuple[str, str], ...]:
    """Each key's ``restore`` ceremony authorization (custody.governance), signed by this
    officer: the ones ``auth`` carries already (co-signing), else new ones from the backup's
    manifest (key, scheme, public key, share version, threshold; the restored node)."""
    now = int(time.time())
    out = []
    for entry in nb.keys:
        kid = str(entry["key_id"])
        have = auth.ceremony(kid)
        if have is not None:
            doc = gov.decode_ceremony_authorization(bytes.fromhex(have))
        else:
            t = int(entry["min_signers"])
            doc = gov.SignedCeremonyAuthorization(
                gov.CeremonyAuthorization(
                    cluster_id=body.cluster_id,
                    ceremony_id="cer_" + secrets.token_hex(12),
                    kind="restore",
                    key_id=kid,
                    scheme=str(entry["scheme"]),
                    public_key=bytes.fromhex(str(entry["public_key"])),
                    share_version=int(entry["share_version"]),
                    committee=(nb.node_id,),
                    threshold=t,
                    previous_threshold=t,
                    issued_at=now,
                    expires_at=now + lifetime,
                )
            )
        out.append((kid, doc.with_signature(signer, officer_id).encode().hex()))
    return tuple(sorted(out))


def dr_drill(
    backups: Annotated[Path, typer.Option("--backups", help="the backup directory")],
    identity: Annotated[Path, typer.Option("--identity", help="the recovery identity file")],
    out: Annotated[Path | None, typer.Option("--out", help="write the report JSON here")] = None,
    passphrase_file: Passphrase = None,
    cluster: Annotated[
        Path | None,
        typer.Option("--cluster", help="production cluster.json: cross-check GET /v1/keys"),
    ] = None,
    work: Annotated[Path | None, typer.Option("--work-dir", help="scratch directory")] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="keep the scratch nodes (they hold every share!)")
    ] = False,
    governance: Annotated[
        list[Path] | None,
        typer.Option("--governance", help="check manifests against this chain (repeat)"),
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option("--key", help="drill only this key id (repeat; default: every key)"),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Restore the backups into scratch nodes, sign with each key (or each ``--key``),
    verify against the production public key, write a report. Never reconstructs a key."""
    phrase = _passphrase(passphrase_file)
    prod = read_cluster_file(cluster) if cluster is not None else None
    try:
        chain = _chain(list(governance or ()))
    except gov.GovernanceError as exc:
        err.print(f"refused (governance): {exc}", markup=False)
        raise typer.Exit(ExitCode.REFUSED) from None
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err
    ) as bar:
        task = bar.add_task("dr-drill", total=None)

        def step(msg: str) -> None:
            bar.update(task, description=msg)
            bar.console.print(f"· {msg}", markup=False, highlight=False)

        try:
            report = run_drill(
                backups,
                identity,
                phrase,
                work=work,
                production=prod,
                progress=step,
                keep=keep,
                governance=chain,
                keys=list(key or ()),
            )
        except bk.BackupError as exc:
            raise _refused(exc) from None
        except (DrillError, RuntimeError) as exc:
            err.print(f"drill failed: {exc}", markup=False)
            raise typer.Exit(ExitCode.REFUSED) from None
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    if as_json:
        print(text)
        if not report["ok"]:
            raise typer.Exit(ExitCode.REFUSED)
        return
    for k in report["keys"]:
        mark = "verified" if k["verified"] else "NOT VERIFIED"
        console.print(
            f"{k['key_id']} {k['scheme']}: signed by {k['signers']} -> {mark}", markup=False
        )
    console.print("dr-drill " + ("passed" if report["ok"] else "FAILED"))
    if not report["ok"]:
        raise typer.Exit(ExitCode.REFUSED)
