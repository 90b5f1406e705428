"""``custody officer`` and ``custody governance``: officers' keys and governance documents.

    custody officer enroll --id ID --out FILE         a passphrase-sealed officer key file
    custody officer show FILE                         its id and public key
    custody approver enroll --id ID --out FILE        a passphrase-sealed approver key file
    custody approver show FILE                        its id and public key
    custody governance genesis --cluster-id C --officer FILE... --quorum M --node FILE... --out F
    custody governance propose CURRENT [--add-node F] [--remove-node ID] [--quorum M]
                               [--add-officer F] [--remove-officer ID]
                               [--raw-signing KEY] [--no-raw-signing KEY]
                               [--policy POLICY.json]
                               [--allow DEST --allowlist NAME [--label L] [--timelock 24h]]
                               [--disallow DEST --allowlist NAME] --out FILE
    custody governance sign FILE --key KEYFILE        add your signature (in place)
    custody governance verify FILE [--current F]      check it as a node will
    custody governance show FILE [--json]

Documents are files of canonical CBOR (``custody.governance``). Signing happens on the
officer's own machine; nothing here sends a key anywhere. Passphrases come from a prompt,
or from ``--passphrase-file`` / ``$CUSTODY_OFFICER_PASSPHRASE`` for scripted ceremonies.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from custody import governance as gov
from custody import policy as pol
from custody import policy_file as pf
from custody.exitcodes import ExitCode
from custody.policy_cli import load_policy_file

officer_app = typer.Typer(no_args_is_help=True, help="Security officers' own keys.")
approver_app = typer.Typer(
    no_args_is_help=True, help="Treasury approvers' own keys (the public key joins a group)."
)
governance_app = typer.Typer(
    no_args_is_help=True, help="Governance documents: roster, officers, quorum."
)
console = Console()
err = Console(stderr=True)

PASSPHRASE_ENV = "CUSTODY_OFFICER_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
PassphraseFileOpt = Annotated[
    Path | None,
    typer.Option("--passphrase-file", help="read the passphrase from this file (scripts)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _passphrase(path: Path | None, *, confirm: bool) -> bytes:
    if path is not None:
        return path.read_bytes().rstrip(b"\r\n")
    if PASSPHRASE_ENV in os.environ:
        return os.environ[PASSPHRASE_ENV].encode()
    return str(typer.prompt("passphrase", hide_input=True, confirmation_prompt=confirm)).encode()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only (refuses to overwrite)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _refused(exc: gov.GovernanceError | gov.OfficerKeyError) -> typer.Exit:
    kind = getattr(exc, "kind", "officer-key")
    err.print(f"[red]refused ({kind})[/red]: {exc}")
    return typer.Exit(ExitCode.REFUSED)


def _load(path: Path) -> gov.SignedGovernance:
    try:
        return gov.decode(path.read_bytes())
    except gov.GovernanceError as exc:
        raise _refused(exc) from exc


def _node_from_file(path: Path) -> gov.RosterNode:
    """A node identity file: JSON ``{"node_id", "party_id", "sign_pk", "box_pk"}`` (hex)."""
    try:
        raw = json.loads(path.read_text())
        return gov.RosterNode(
            raw["node_id"],
            raw["party_id"],
            bytes.fromhex(raw["sign_pk"]),
            bytes.fromhex(raw["box_pk"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        err.print(f"[red]{path}[/red]: not a node identity file ({exc})")
        raise typer.Exit(ExitCode.USAGE) from exc


def _officer_from_file(path: Path) -> gov.Officer:
    try:
        return gov.read_officer_public(path.read_bytes())
    except gov.OfficerKeyError as exc:
        raise _refused(exc) from exc


def describe(doc: gov.SignedGovernance) -> dict[str, Any]:
    body = doc.body
    return {
        "cluster_id": body.cluster_id,
        "version": body.version,
        "digest": body.digest.hex(),
        "previous": body.previous.hex(),
        "quorum": body.quorum,
        "officers": [
            {"officer_id": o.officer_id, "public_key": o.public_key.hex()} for o in body.officers
        ],
        "roster": [
            {
                "node_id": n.node_id,
                "party_id": n.party_id,
                "sign_pk": n.sign_pk.hex(),
                "box_pk": n.box_pk.hex(),
            }
            for n in body.roster
        ],
        "raw_signing_keys": sorted(body.raw_signing_keys),
        **(
            {}
            if body.coordinators is None
            else {
                "coordinators": [
                    {"name": c.name, "public_key": c.public_key.hex()} for c in body.coordinators
                ]
            }
        ),
        "signed_by": [s.officer_id for s in doc.signatures],
    }


def _enroll(kind: gov.PrincipalKind, principal_id: str, out: Path, pass_file: Path | None) -> None:
    """Create a key file of ``kind`` (officer or approver): one mechanism for both."""
    try:
        key, blob = gov.create_principal_key(
            kind, principal_id, _passphrase(pass_file, confirm=True)
        )
    except (gov.OfficerKeyError, gov.GovernanceError) as exc:
        raise _refused(exc) from exc
    try:
        _write_private(out, blob)
    except FileExistsError as exc:
        err.print(f"[red]{out} exists[/red]: an {kind} key file is never overwritten")
        raise typer.Exit(ExitCode.USAGE) from exc
    console.print(f"{kind} {key.principal_id}: public key {key.public_key.hex()}", soft_wrap=True)


def _show(kind: gov.PrincipalKind, path: Path, as_json: bool) -> None:
    try:
        key = gov.read_principal_public(path.read_bytes(), kind)
    except gov.OfficerKeyError as exc:
        raise _refused(exc) from exc
    if as_json:
        doc = {"kind": kind, "id": key.principal_id, "public_key": key.public_key.hex()}
        print(json.dumps(doc, indent=2))
        return
    console.print(f"{kind} {key.principal_id}: public key {key.public_key.hex()}", soft_wrap=True)


@officer_app.command("enroll")
def officer_enroll(
    officer_id: Annotated[str, typer.Option("--id", help="your officer id, e.g. alice")],
    out: Annotated[Path, typer.Option("--out", help="the key file to create (mode 0600)")],
    passphrase_file: PassphraseFileOpt = None,
) -> None:
    """Create your officer key file; only its public key ever leaves it."""
    _enroll("officer", officer_id, out, passphrase_file)


@officer_app.command("show")
def officer_show(
    path: Annotated[Path, typer.Argument(help="an officer key file")], as_json: JsonOpt = False
) -> None:
    """Print the id and public key of an officer key file (no passphrase needed)."""
    _show("officer", path, as_json)


@approver_app.command("enroll")
def approver_enroll(
    approver_id: Annotated[str, typer.Option("--id", help="your approver id, e.g. ann")],
    out: Annotated[Path, typer.Option("--out", help="the key file to create (mode 0600)")],
    passphrase_file: PassphraseFileOpt = None,
) -> None:
    """Create your approver key file; its public key joins an approver group by governance."""
    _enroll("approver", approver_id, out, passphrase_file)


@approver_app.command("show")
def approver_show(
    path: Annotated[Path, typer.Argument(help="an approver key file")], as_json: JsonOpt = False
) -> None:
    """Print the id and public key of an approver key file (no passphrase needed)."""
    _show("approver", path, as_json)


def _coordinator_arg(value: str) -> gov.PinnedCoordinator:
    """``NAME=HEX`` (issue 14): a coordinator's name and the public key ``api init``
    printed; the key is checked with the rest of the document (custody.governance)."""
    name, sep, key = value.partition("=")
    try:
        public = bytes.fromhex(key)
    except ValueError:
        public = b""
    if not sep or not public:
        err.print(f"[red]--coordinator {value!r}: NAME=HEX (the key api init printed)[/red]")
        raise typer.Exit(ExitCode.USAGE)
    return gov.PinnedCoordinator(name, public)


@governance_app.command("genesis")
def genesis(
    cluster_id: Annotated[str, typer.Option("--cluster-id", help="the cluster's name")],
    officers: Annotated[list[Path], typer.Option("--officer", help="an officer key file")],
    quorum: Annotated[int, typer.Option("--quorum", help="signatures needed for a change")],
    nodes: Annotated[list[Path], typer.Option("--node", help="a node identity file")],
    out: Annotated[Path, typer.Option("--out", help="the unsigned genesis to write")],
    coordinators: Annotated[
        list[str] | None,
        typer.Option(
            "--coordinator",
            help="NAME=HEX: a coordinator the nodes accept (repeat) [default: each node's"
            " --coordinator-key]",
        ),
    ] = None,
) -> None:
    """Write version 1 (unsigned): the trust anchor every node installs at init."""
    pinned = tuple(map(_coordinator_arg, coordinators)) if coordinators else None
    try:
        body = gov.check_body(
            gov.Governance(
                cluster_id=cluster_id,
                version=1,
                previous=gov.GENESIS_PREVIOUS,
                officers=tuple(_officer_from_file(p) for p in officers),
                quorum=quorum,
                roster=tuple(_node_from_file(p) for p in nodes),
                coordinators=pinned,
            )
        )
    except gov.GovernanceError as exc:
        raise _refused(exc) from exc
    out.write_bytes(gov.unsigned(body).encode())
    console.print(f"genesis of {cluster_id} written to {out}: needs {quorum} officer signatures")


@governance_app.command("propose")
def propose(
    current: Annotated[Path, typer.Argument(help="the installed version")],
    out: Annotated[Path, typer.Option("--out", help="the unsigned next version to write")],
    add_node: Annotated[
        list[Path] | None,
        typer.Option("--add-node", help="a node identity file to add or replace (repeat)"),
    ] = None,
    remove_node: Annotated[
        list[str] | None, typer.Option("--remove-node", help="a node id to remove (repeat)")
    ] = None,
    add_officer: Annotated[
        list[Path] | None, typer.Option("--add-officer", help="an officer key file (repeat)")
    ] = None,
    remove_officer: Annotated[
        list[str] | None,
        typer.Option("--remove-officer", help="an officer id to remove (repeat)"),
    ] = None,
    quorum: Annotated[
        int | None, typer.Option("--quorum", help="the new quorum [default: unchanged]")
    ] = None,
    add_coordinator: Annotated[
        list[str] | None,
        typer.Option("--add-coordinator", help="NAME=HEX: pin a coordinator key (repeat)"),
    ] = None,
    remove_coordinator: Annotated[
        list[str] | None,
        typer.Option("--remove-coordinator", help="a coordinator name to retire (repeat)"),
    ] = None,
    raw_signing: Annotated[
        list[str] | None,
        typer.Option("--raw-signing", help="a key id to allow raw signing for (repeat; * all)"),
    ] = None,
    no_raw_signing: Annotated[
        list[str] | None,
        typer.Option("--no-raw-signing", help="a key id to stop raw signing for (repeat)"),
    ] = None,
    policy_path: Annotated[
        Path | None,
        typer.Option("--policy", help="a policy file (custody policy check): the new policy"),
    ] = None,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="add a destination to --allowlist")
    ] = None,
    disallow: Annotated[
        list[str] | None, typer.Option("--disallow", help="remove a destination from --allowlist")
    ] = None,
    allowlist: Annotated[str | None, typer.Option("--allowlist", help="the list edited")] = None,
    label: Annotated[str, typer.Option("--label", help="label of the --allow entries")] = "",
    timelock: Annotated[
        str,
        typer.Option("--timelock", help="--allow entries count this long after now (e.g. 48h, 7d)"),
    ] = "24h",
) -> None:
    """Write the next version (unsigned) with the changes given. ``--policy`` replaces the
    policy first; ``--allow``/``--disallow`` then edit one allowlist of it."""
    body = _load(current).body
    policy = body.policy if policy_path is None else load_policy_file(policy_path)
    if (allow or disallow) and allowlist is None:
        err.print("[red]--allow and --disallow need --allowlist NAME[/red]")
        raise typer.Exit(2)
    if allowlist is not None and not (allow or disallow):
        err.print("[red]--allowlist names the list --allow or --disallow edits[/red]")
        raise typer.Exit(2)
    if allowlist is not None:
        try:
            lock = pf.parse_duration(timelock, "--timelock")
            active_from = int(time.time()) + lock
            policy = pf.edit_allowlist(
                policy,
                allowlist,
                add=[pol.AllowlistEntry(d, active_from, label) for d in allow or ()],
                remove=list(disallow or ()),
            )
        except pf.PolicyFileError as exc:
            err.print(f"refused: {exc}", markup=False, soft_wrap=True)
            raise typer.Exit(ExitCode.REFUSED) from None
        for d in allow or ():
            console.print(
                f"allowlist {allowlist}: + {d} from {pf.format_instant(active_from)} "
                f"(time lock {pf.format_duration(lock)})",
                markup=False,
                soft_wrap=True,
            )
        for d in disallow or ():
            console.print(f"allowlist {allowlist}: - {d}", markup=False, soft_wrap=True)
    gone_nodes = set(remove_node or ())
    gone_officers = set(remove_officer or ())
    for missing in sorted(gone_nodes - {n.node_id for n in body.roster}):
        err.print(f"[red]no node {missing} in version {body.version}[/red]")
        raise typer.Exit(ExitCode.USAGE)
    for missing in sorted(gone_officers - {o.officer_id for o in body.officers}):
        err.print(f"[red]no officer {missing} in version {body.version}[/red]")
        raise typer.Exit(ExitCode.USAGE)
    replaced = {n.node_id for n in map(_node_from_file, add_node or ())}
    coordinators = body.coordinators
    if add_coordinator or remove_coordinator:
        gone = set(remove_coordinator or ())
        for missing in sorted(gone - {c.name for c in coordinators or ()}):
            err.print(f"[red]no coordinator {missing} in version {body.version}[/red]")
            raise typer.Exit(ExitCode.USAGE)
        added = tuple(map(_coordinator_arg, add_coordinator or ()))
        names = gone | {c.name for c in added}
        coordinators = (*(c for c in coordinators or () if c.name not in names), *added)
    try:
        proposal = body.successor(
            roster=(
                *(n for n in body.roster if n.node_id not in gone_nodes | replaced),
                *map(_node_from_file, add_node or ()),
            ),
            officers=(
                *(o for o in body.officers if o.officer_id not in gone_officers),
                *map(_officer_from_file, add_officer or ()),
            ),
            quorum=body.quorum if quorum is None else quorum,
            raw_signing_keys=(body.raw_signing_keys | set(raw_signing or ()))
            - set(no_raw_signing or ()),
            policy=policy,
            coordinators=coordinators,
        )
    except gov.GovernanceError as exc:
        raise _refused(exc) from exc
    out.write_bytes(gov.unsigned(proposal).encode())
    if proposal.policy != body.policy:
        console.print(
            f"policy changed: {len(proposal.policy.rules)} rules; review it with "
            f"`custody policy show {out}`",
            markup=False,
            soft_wrap=True,
        )
    console.print(
        f"version {proposal.version} written to {out}: needs {body.quorum} signatures of "
        f"version {body.version}'s officers and {proposal.quorum} of its own"
    )


@governance_app.command("sign")
def sign(
    path: Annotated[Path, typer.Argument(help="the document to sign (updated in place)")],
    key: Annotated[Path, typer.Option("--key", help="your officer key file")],
    passphrase_file: PassphraseFileOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="sign without asking (scripts)")] = False,
) -> None:
    """Show what you are about to sign, then add your signature (in place)."""
    doc = _load(path)
    show(path)
    if not yes and not typer.confirm("sign this version?", default=False):
        err.print("not signed")
        raise typer.Exit(ExitCode.ABORTED)
    try:
        officer, signer = gov.open_officer_key(
            key.read_bytes(), _passphrase(passphrase_file, confirm=False)
        )
    except gov.OfficerKeyError as exc:
        raise _refused(exc) from exc
    signed = doc.with_signature(signer, officer.officer_id)
    path.write_bytes(signed.encode())
    signers = ", ".join(s.officer_id for s in signed.signatures)
    console.print(
        f"{officer.officer_id} signed version {doc.body.version} of {doc.body.cluster_id} "
        f"(digest {doc.body.digest.hex()}); signed by {signers}",
        soft_wrap=True,
    )


@governance_app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="the document to check")],
    current: Annotated[Path | None, typer.Option("--current", help="the installed version")] = None,
) -> None:
    """Check a document as a node will: exit 0 when a node would install it."""
    doc = _load(path)
    try:
        if current is None:
            body = gov.verify_genesis(doc)
        else:
            body = gov.verify_successor(_load(current).body, doc)
    except gov.GovernanceError as exc:
        raise _refused(exc) from exc
    console.print(f"version {body.version} of {body.cluster_id} verifies")


@governance_app.command("show")
def show(
    path: Annotated[Path, typer.Argument(help="a governance document")], as_json: JsonOpt = False
) -> None:
    """Print a document: officers, quorum, roster and who signed it."""
    info = describe(_load(path))
    if as_json:
        print(json.dumps(info, indent=1))
        return
    console.print(
        f"[bold]{info['cluster_id']}[/bold] version {info['version']} "
        f"(quorum {info['quorum']} of {len(info['officers'])}); digest {info['digest']}",
        soft_wrap=True,
    )
    # one line per key, soft-wrapped: a key is never cut or folded into a table cell
    console.print("roster:")
    for n in info["roster"]:
        console.print(f"  {n['node_id']} (party {n['party_id']})")
        console.print(f"    sign_pk {n['sign_pk']}", soft_wrap=True)
        console.print(f"    box_pk  {n['box_pk']}", soft_wrap=True)
    console.print("officers: " + ", ".join(o["officer_id"] for o in info["officers"]))
    console.print("signed by: " + (", ".join(info["signed_by"]) or "nobody yet"))
    if gov.ALL_KEYS in info["raw_signing_keys"]:
        console.print("[bold red]raw signing enabled for EVERY key: a development cluster only[/]")
    elif info["raw_signing_keys"]:
        console.print("raw signing enabled for: " + ", ".join(info["raw_signing_keys"]))


__all__ = ["approver_app", "describe", "governance_app", "officer_app"]
