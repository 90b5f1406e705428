"""``custody policy``: read, check and try policies before the officers sign them.

    custody policy show FILE [--json]        the policy of a governance document (or of a
                                             policy file) in plain words; --json prints the
                                             policy file form (``custody.policy_file``)
    custody policy check FILE                validate a policy file; exit 1 naming the path
    custody policy dry-run --request REQUEST.json [--governance DRAFT.gov | active]
                           [--at TIME] [--json]
                                             evaluate a sign request without signing: the
                                             decision, the rule that matched, why each
                                             earlier rule did not, the approvals required

A policy file names approver key files by path, relative to the policy file; they are read
here (only their public halves: no passphrase is asked).

``REQUEST.json`` is the body ``POST /v1/sign-requests`` takes (``key_id``, ``kind``,
``message`` and/or ``payload``) plus, for a draft evaluated here, the key's ``scheme``, and
optionally ``initiator`` (the principal who would create the request; default
``dry-run``). With ``--governance active`` (the default) the coordinator evaluates it
against its active version (``POST /v1/policy/dry-run``; it knows the key's scheme); with a
file, it is evaluated here against that document, signed or not: a dry run authorizes
nothing. ``--at`` is an ISO 8601 instant or Unix seconds (default: now). Velocity windows
count no earlier releases in a local dry run (the coordinator's counts what it signed).
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
from custody.cli_support import (
    ApiOpt,
    ClusterOpt,
    TokenOpt,
    connect,
    print_fields,
    print_json,
)
from custody.client import CustodyClient, CustodyError
from custody.exitcodes import ExitCode, for_status
from custody.policy_explain import dry_run, explanation_json, explanation_lines
from custody.signing import SignRequestError

policy_app = typer.Typer(
    no_args_is_help=True,
    help="Policies: show, check and dry-run them before the officers sign a version.",
)
console = Console()
err = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
DEFAULT_CLUSTER = Path(".custody") / "cluster.json"
LOCAL_ONLY = ("scheme", "public_key", "network")  # request-file fields the API does not take


def _fail(message: str, code: int = ExitCode.REFUSED) -> typer.Exit:
    err.print(message, markup=False, soft_wrap=True)
    return typer.Exit(code)


def load_policy_file(path: Path) -> pol.Policy:
    """The policy of a policy file; the approver key files it names are read relative to it.
    Exits 4 (refused) naming the path of the fault."""
    try:
        doc = pf.load_json(path.read_bytes())
    except OSError as exc:
        raise _fail(f"{path}: cannot read ({exc.strerror})", ExitCode.USAGE) from None
    except pf.PolicyFileError as exc:
        raise _fail(f"{path}: refused: {exc}") from None
    key_files: dict[str, pol.Approver] = {}
    for ref in pf.key_file_references(doc):
        where = Path(ref) if os.path.isabs(ref) else path.parent / ref
        try:
            key_files[ref] = gov.read_approver_public(where.read_bytes())
        except OSError as exc:
            raise _fail(f"{path}: refused: key file {ref}: cannot read ({exc.strerror})") from None
        except gov.OfficerKeyError as exc:
            raise _fail(f"{path}: refused: key file {ref}: {exc}") from None
    try:
        return pf.parse_policy(doc, key_files=key_files)
    except pf.PolicyFileError as exc:
        raise _fail(f"{path}: refused: {exc}") from None


def _is_json(data: bytes) -> bool:
    return data.lstrip()[:1] == b"{"


def _load_governance(path: Path) -> gov.SignedGovernance:
    try:
        return gov.decode(path.read_bytes())
    except OSError as exc:
        raise _fail(f"{path}: cannot read ({exc.strerror})", ExitCode.USAGE) from None
    except gov.GovernanceError as exc:
        raise _fail(f"{path}: refused ({exc.kind}): {exc}") from None


@policy_app.command("show")
def show(
    path: Annotated[Path, typer.Argument(help="a governance document (or a policy file)")],
    as_json: JsonOpt = False,
) -> None:
    """The policy of a governance document in plain words (--json: as a policy file)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(f"{path}: cannot read ({exc.strerror})", ExitCode.USAGE) from None
    header = f"policy file {path}"
    if _is_json(data):
        policy = load_policy_file(path)
    else:
        doc = _load_governance(path)
        policy = doc.body.policy
        signed = ", ".join(s.officer_id for s in doc.signatures) or "nobody (a draft)"
        header = (
            f"policy of {doc.body.cluster_id} version {doc.body.version} "
            f"(digest {doc.body.digest.hex()}); signed by {signed}"
        )
    if as_json:
        try:
            print(pf.dumps(policy), end="")
        except pf.PolicyFileError as exc:
            raise _fail(f"{path}: this policy has no policy-file form: {exc}") from None
        return
    console.print(header, soft_wrap=True, markup=False)
    for line in pf.describe_policy(policy):
        console.print(line, soft_wrap=True, markup=False)


@policy_app.command("check")
def check(path: Annotated[Path, typer.Argument(help="a policy file (JSON)")]) -> None:
    """Validate a policy file: exit 0 when officers could propose it, else 1 naming the
    path of the fault (e.g. rules[2].velocity[0].window)."""
    policy = load_policy_file(path)
    console.print(
        f"{path}: ok: {len(policy.rules)} rules, {len(policy.allowlists)} allowlists, "
        f"{len(policy.wallets)} wallets, {len(policy.approver_groups)} approver groups",
        markup=False,
        soft_wrap=True,
    )


def parse_time(text: str) -> int:
    """Unix seconds of ``--at``: digits (Unix seconds) or an ISO 8601 instant."""
    if text.isdigit():
        return int(text)
    try:
        return pf.parse_instant(text, "--at")
    except pf.PolicyFileError as exc:
        raise _fail(str(exc), ExitCode.USAGE) from None


def _read_request(path: Path) -> dict[str, Any]:
    try:
        doc = pf.load_json(path.read_bytes())
    except OSError as exc:
        raise _fail(f"{path}: cannot read ({exc.strerror})", ExitCode.USAGE) from None
    except pf.PolicyFileError as exc:
        raise _fail(f"{path}: refused: {exc}", ExitCode.USAGE) from None
    if not isinstance(doc, dict):
        raise _fail(f"{path}: a sign request is a JSON object", ExitCode.USAGE)
    return doc


def _client(cluster: Path | None, api_url: str | None, token: str | None) -> CustodyClient:
    if api_url and token:
        return CustodyClient(api_url, token)
    path = cluster or DEFAULT_CLUSTER
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        raise _fail(
            f"no cluster file at {path}: pass --governance DRAFT.gov, --cluster, or --api-url "
            "and --token",
            ExitCode.USAGE,
        ) from None
    return CustodyClient(api_url or doc["api_url"], token or doc["credentials"]["auditor"])


@policy_app.command("dry-run")
def dry_run_cmd(
    request: Annotated[Path, typer.Option("--request", help="the sign request (JSON)")],
    governance: Annotated[
        str,
        typer.Option(
            "--governance",
            help="a governance document (a draft is fine), or 'active' to ask the coordinator",
        ),
    ] = "active",
    at: Annotated[
        str | None, typer.Option("--at", help="ISO 8601 instant or Unix seconds (default now)")
    ] = None,
    as_json: JsonOpt = False,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Evaluate a sign request against a draft or the active version, without signing."""
    body = _read_request(request)
    now = int(time.time()) if at is None else parse_time(at)
    initiator = body.pop("initiator", None)  # the coordinator's default: the caller
    if governance == "active":
        for name in LOCAL_ONLY:
            body.pop(name, None)
        with _client(cluster, api_url, token) as c:
            try:
                out = c.dry_run_policy(**body, at=now, initiator=initiator)
            except CustodyError as e:
                problem = e.problem
                raise _fail(
                    f"{e.status} {problem.get('title', '')}: {problem.get('detail', '')}",
                    for_status(e.status),
                ) from None
        doc = out.model_dump(mode="json")
    else:
        draft = _load_governance(Path(governance))
        scheme = body.pop("scheme", None)
        for name in LOCAL_ONLY:
            body.pop(name, None)
        if not isinstance(scheme, str):
            raise _fail(
                f"{request}: scheme: the key's scheme is needed for a local dry run", ExitCode.USAGE
            )
        if not isinstance(initiator, str | None):
            raise _fail(f"{request}: initiator: a principal id", ExitCode.USAGE)
        try:
            expl = dry_run(draft.body, scheme, body, initiator=initiator or "dry-run", now=now)
        except (SignRequestError, pol.PolicyError) as exc:
            raise _fail(f"{request}: refused: {exc}") from None
        doc = {
            **explanation_json(expl),
            "source": "document",
            "signed_by": [sig.officer_id for sig in draft.signatures],
        }
    if as_json:
        print(json.dumps(doc, indent=1))
        return
    if doc.get("source") == "document":
        signed = ", ".join(doc["signed_by"]) or "nobody: a draft"
        console.print(f"governance {governance}, signed by {signed}", markup=False, soft_wrap=True)
    else:
        console.print("governance: the coordinator's active version")
    console.print("a dry run: nothing was signed or created")
    for line in explanation_lines(doc):
        console.print(line, soft_wrap=True, markup=False)


__all__ = ["load_policy_file", "parse_time", "policy_app"]


shadow_app = typer.Typer(
    no_args_is_help=True,
    help="Shadow mode: a draft policy evaluated beside the active one on every live request.",
)
policy_app.add_typer(shadow_app, name="shadow")


@shadow_app.command("set")
def shadow_set(
    draft: Annotated[Path, typer.Argument(help="an unsigned draft of the next version")],
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Install a draft as the shadow policy (admin): it authorizes nothing, it is only
    evaluated, and its disagreements with the active policy are recorded."""
    try:
        document = draft.read_bytes()
    except OSError as exc:
        raise _fail(f"{draft}: cannot read ({exc.strerror})", ExitCode.USAGE) from None
    with connect("admin", cluster, api_url, token) as c:
        out = c.set_policy_shadow(document)
    console.print(
        f"shadow installed: version {out.model_dump().get('version')} beside the active one",
        markup=False,
    )


@shadow_app.command("show")
def shadow_show(
    as_json: JsonOpt = False,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """The installed shadow policy, if any."""
    with connect("auditor", cluster, api_url, token) as c:
        doc = c.policy_shadow().model_dump(mode="json")
    if as_json:
        print_json(doc)
        return
    print_fields([(k, v) for k, v in doc.items() if v is not None])


@shadow_app.command("clear")
def shadow_clear(
    cluster: ClusterOpt = None, api_url: ApiOpt = None, token: TokenOpt = None
) -> None:
    """Remove the shadow policy (admin)."""
    with connect("admin", cluster, api_url, token) as c:
        c.delete_policy_shadow()
    console.print("shadow removed")


@shadow_app.command("disagreements")
def shadow_disagreements(
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many")] = 50,
    as_json: JsonOpt = False,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Live requests on which the shadow policy decided otherwise, newest first."""
    with connect("auditor", cluster, api_url, token) as c:
        rows: list[dict[str, Any]] = []
        for d in c.shadow_disagreements(limit=min(limit, 200)):
            rows.append(d.model_dump(mode="json"))
            if len(rows) >= limit:
                break
    if as_json:
        print_json(rows)
        return
    for row in rows:
        a, s = row["active"], row["shadow"]
        console.print(
            f"{row['at']} {row['request_id']} ({row['kind']}, key {row['key_id']}): active "
            f"{a['action']} by {a['rule']}, shadow {s['action']} by {s['rule']}",
            markup=False,
            soft_wrap=True,
        )
    if not rows:
        console.print("no disagreements")
