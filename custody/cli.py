"""The ``custody`` command line (typer + rich).

    custody up [--nodes 3] [--data-dir DIR] [--port P]   run a local dev cluster (foreground)
    custody demo                                        three schemes, signed and verified
    custody keys create|list|show, custody sign, custody nodes
    custody node ...                                    = python -m signer_nodes ...
    custody officer|approver enroll|show, custody governance genesis|propose|sign|verify|show
    custody approve|reject ID --key-file F              an approver's decision (approve_cli)

Commands that talk to a cluster read ``DIR/cluster.json`` (``--cluster`` or env
``CUSTODY_CLUSTER``; default ``.custody/cluster.json``), or ``--api-url`` and ``--token``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from custody import approve_cli
from custody.client import CustodyClient, CustodyError
from custody.domain import SCHEMES, Kind, Scheme
from custody.governance_cli import approver_app, governance_app, officer_app
from custody.models import KeyOut

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="TP Wallet Custody: threshold-signing custody."
)
keys_app = typer.Typer(no_args_is_help=True, help="Threshold keys.")
app.add_typer(keys_app, name="keys")
app.add_typer(officer_app, name="officer")
app.add_typer(approver_app, name="approver")
app.add_typer(governance_app, name="governance")
app.command("approve")(approve_cli.approve)
app.command("reject")(approve_cli.reject)
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail and its checkpoints.")
app.add_typer(audit_app, name="audit")
console = Console()
err = Console(stderr=True)

DEFAULT_DIR = Path(".custody")
ClusterOpt = Annotated[
    Path | None, typer.Option("--cluster", envvar="CUSTODY_CLUSTER", help="path to cluster.json")
]
ApiOpt = Annotated[str | None, typer.Option("--api-url", envvar="CUSTODY_API_URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="CUSTODY_TOKEN")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _client(
    role: str, cluster: Path | None, api_url: str | None, token: str | None
) -> CustodyClient:
    if api_url and token:
        return CustodyClient(api_url, token)
    path = cluster or DEFAULT_DIR / "cluster.json"
    if not path.exists():
        err.print(
            f"[red]no cluster file at {path}[/red]: run `custody up` or pass --api-url and --token"
        )
        raise typer.Exit(2)
    doc = json.loads(path.read_text())
    return CustodyClient(api_url or doc["api_url"], token or doc["credentials"][role])


def _fail(e: CustodyError) -> typer.Exit:
    err.print(f"[red]{e.status} {e.problem.get('title', '')}[/red] {e.problem.get('detail', '')}")
    return typer.Exit(1)


@app.command()
def up(
    nodes: Annotated[int, typer.Option("--nodes", min=2, max=16)] = 3,
    data_dir: Annotated[Path, typer.Option("--data-dir")] = DEFAULT_DIR,
    port: Annotated[int, typer.Option("--port")] = 7100,
    allow_raw: Annotated[
        bool,
        typer.Option(
            "--allow-raw",
            help="the genesis enables raw signing for every key (development and tests "
            "only; chosen when the data directory is first provisioned)",
        ),
    ] = False,
) -> None:
    """Start the coordinator and the signer nodes as local processes (Ctrl-C stops them).

    The dev genesis carries the demo policy (README: Demo policy): transfers to the demo
    allowlist signed up to a limit, above it two approvals of the treasury group (three
    dev approvers, key files in DIR/approvers), messages signed, raw denied."""
    from custody.cluster import Cluster

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with console.status("starting cluster") as status:
        cluster = Cluster(
            Path(data_dir),
            nodes=nodes,
            port=port,
            allow_raw=allow_raw,
            progress=lambda m: status.update(m),
        )
        try:
            doc = cluster.start()
        except (RuntimeError, OSError) as e:
            cluster.stop()
            err.print(f"[red]cluster failed to start:[/red] {e}")
            raise typer.Exit(1) from None
    lines = [f"API        {doc['api_url']}  (OpenAPI: {doc['api_url']}/docs)"]
    lines += [f"{n['id']:<10} {n['url']}" for n in doc["nodes"]]
    lines += [
        f"cluster    {cluster.cluster_file}  (credentials, key files; mode 0600)",
        "[bold yellow]DEV CLUSTER: demo policy (transfers to the demo allowlist up to a "
        "limit; above it 2 treasury approvals: custody approve ID --key-file "
        f"{cluster.data_dir / 'approvers' / 'dev-approver-1.key'}); raw signing: "
        f"{doc['dev_governance']['raw_signing']}[/bold yellow]",
        "Ctrl-C stops every process.",
    ]
    console.print(Panel("\n".join(lines), title="TP Wallet Custody — dev cluster"))
    try:
        while not stop.is_set():
            dead = [p.name for p in cluster.procs.values() if not p.alive]
            if dead:
                err.print(f"[yellow]process exited: {', '.join(dead)}[/yellow]")
                for name in dead:
                    cluster.procs.pop(name)
            stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping"):
            cluster.stop()
        console.print("stopped")


@keys_app.command("create")
def keys_create(
    scheme: Annotated[str, typer.Argument(help=" | ".join(SCHEMES))],
    threshold: Annotated[int, typer.Option("--threshold", "-t")] = 2,
    nodes: Annotated[list[str] | None, typer.Option("--node")] = None,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a DKG among the nodes and show the new key."""
    with _client("admin", cluster, api_url, token) as c, console.status("running DKG"):
        try:
            key = c.create_key(cast(Scheme, scheme), threshold, nodes)  # the API checks it
        except CustodyError as e:
            raise _fail(e) from None
    _show_key(key, as_json)


@keys_app.command("list")
def keys_list(
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List keys."""
    with _client("auditor", cluster, api_url, token) as c:
        try:
            items = list(c.list_keys())
        except CustodyError as e:
            raise _fail(e) from None
    if as_json:
        console.print_json(json.dumps([k.model_dump(mode="json") for k in items]))
        return
    t = Table("id", "scheme", "t/n", "status", "public key")
    for k in items:
        t.add_row(k.id, k.scheme, f"{k.threshold}/{len(k.nodes)}", k.status, k.public_key or "")
    console.print(t)


@keys_app.command("show")
def keys_show(
    key_id: str,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one key."""
    with _client("auditor", cluster, api_url, token) as c:
        try:
            _show_key(c.get_key(key_id), as_json)
        except CustodyError as e:
            raise _fail(e) from None


def _show_key(key: KeyOut, as_json: bool) -> None:
    doc = key.model_dump(mode="json")
    if as_json:
        console.print_json(json.dumps(doc))
        return
    t = Table(show_header=False)
    for f in ("id", "scheme", "threshold", "nodes", "status", "public_key"):
        t.add_row(f, str(doc.get(f)))
    if key.error is not None:
        t.add_row("error", str(key.error.detail))
    console.print(t)


@app.command()
def sign(
    key_id: str,
    message: Annotated[str, typer.Argument(help="hex (ECDSA: a 32-byte digest)")],
    kind: Annotated[str, typer.Option("--kind")] = "raw",
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask for a signature and wait for it."""
    with _client("requester", cluster, api_url, token) as c, console.status("signing"):
        try:
            r = c.sign(
                key_id, message, kind=cast(Kind, kind), idempotency_key=idempotency_key
            )  # the API checks the kind
        except CustodyError as e:
            raise _fail(e) from None
    doc = r.model_dump(mode="json")
    if as_json:
        console.print_json(json.dumps(doc))
        return
    t = Table(show_header=False)
    for f in ("id", "status", "signature", "recovery_id", "signers"):
        t.add_row(f, str(doc.get(f)))
    for b in r.blamed:
        t.add_row("blamed", f"{b.node_id} (party {b.party_id}): {b.reason}")
    if r.error is not None:
        t.add_row("error", str(r.error.detail))
    console.print(t)
    if r.status != "signed":
        raise typer.Exit(1)


@audit_app.command("verify")
def audit_verify(
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the audit chain against the node-signed checkpoints, the credentials and the
    stored signatures; exit 1 naming the first bad entry of each tampering found."""
    with _client("auditor", cluster, api_url, token) as c:
        try:
            v = c.verify_audit()
        except CustodyError as e:
            raise _fail(e) from None
    if as_json:
        console.print_json(json.dumps(v.model_dump(mode="json")))
    else:
        cps = v.checkpoints
        anchored = f", anchored by node checkpoints up to {cps.last_seq}" if cps else ""
        console.print(f"{'ok' if v.ok else 'TAMPERED'}: {v.entries} entries{anchored}")
        for f in v.findings:
            where = f"entry {f.seq}" if f.seq is not None else (f.subject or "")
            console.print(f"  {f.kind}: {where}: {f.detail}")
    if not v.ok:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask every node to co-sign the current audit head (admin)."""
    with _client("admin", cluster, api_url, token) as c:
        try:
            cp = c.checkpoint_audit()
        except CustodyError as e:
            if as_json:
                console.print_json(json.dumps(e.problem))
            raise _fail(e) from None
    if as_json:
        console.print_json(json.dumps(cp.model_dump(mode="json")))
        return
    console.print(f"checkpoint {cp.seq} head {cp.head} signed by {sorted(cp.signatures)}")


@app.command()
def nodes(
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enrolled nodes with health and last seen."""
    with _client("auditor", cluster, api_url, token) as c:
        try:
            items = c.nodes()
        except CustodyError as e:
            raise _fail(e) from None
    if as_json:
        console.print_json(json.dumps([n.model_dump(mode="json") for n in items]))
        return
    t = Table("id", "party", "url", "status", "last seen", "last error")
    for n in items:
        last_seen = n.model_dump(mode="json")["last_seen"]
        t.add_row(n.id, str(n.party_id), n.url, n.status, str(last_seen), n.last_error or "")
    console.print(t)


@app.command(
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],
    }
)
def node(ctx: typer.Context) -> None:
    """Signer-node commands: forwards to ``python -m signer_nodes ...``."""
    argv = [sys.executable, "-m", "signer_nodes", *ctx.args]
    os.execvp(argv[0], argv)  # noqa: S606 - replaces this process, no shell


@app.command()
def demo(
    cluster: ClusterOpt = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="where to start a cluster if none is running")
    ] = None,
    port: Annotated[int, typer.Option("--port")] = 7100,
) -> None:
    """Create a key per scheme, sign, verify with independent libraries, print a table."""
    from custody.demo import run_demo

    sys.exit(run_demo(console, cluster, data_dir, port))


if __name__ == "__main__":
    app()
