"""The ``custody`` command line (typer + rich).

    custody up [--nodes 3] [--data-dir DIR] [--port P] [--dev]   a local dev cluster (mTLS)
    custody demo                                        schemes signed, the policy, payments
    custody keys create|list|show, custody sign, custody requests list|show, custody nodes,
    custody audit verify|checkpoint
    custody node ...                                    = python -m signer_nodes ...
    custody officer|approver enroll|show, custody governance genesis|propose|sign|verify|show
    custody --version
    custody receipt verify FILE --governance GOV...     an authorization receipt, offline
    custody approve|reject ID --key-file F              an approver's decision (approve_cli)

Commands that talk to a cluster read ``DIR/cluster.json`` (``--cluster`` or env
``CUSTODY_CLUSTER``; default ``.custody/cluster.json``), or ``--api-url`` and ``--token``.
Every read command has ``--json``. Values (ids, public keys, signatures) are printed whole
at any terminal width, and plainly when stdout is not a terminal. Exit codes:
:mod:`custody.exitcodes` (``docs/CLI.md``); errors are messages, never tracebacks
(:mod:`custody.cli_support`, whose helpers other command modules use too).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import os
import signal
import sys
import threading
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from custody import approve_cli, backup_cli
from custody.ceremony_cli import ceremony_app, register_key_commands, xpub_of
from custody.cli_support import (
    DEFAULT_DIR,
    ApiOpt,
    CliError,
    ClusterOpt,
    HandledGroup,
    IdemOpt,
    JsonOpt,
    TokenOpt,
    connect,
    err,
    out,
    print_fields,
    print_json,
    print_rows,
    require_id,
)
from custody.client import SignTimeout
from custody.credentials_cli import credentials_app
from custody.domain import (
    KINDS,
    NETWORKS,
    SCHEMES,
    SIGN_STATUSES,
    Kind,
    Network,
    Scheme,
    SignStatus,
)
from custody.exitcodes import ExitCode
from custody.governance_cli import approver_app, governance_app, officer_app
from custody.models import KeyOut, SignRequestOut
from custody.pay_cli import pay_app
from custody.policy_cli import policy_app
from custody.receipt_cli import receipt_app
from custody.webhooks_cli import webhooks_app

DISTRIBUTION = "tp-wallet-custody"

app = typer.Typer(
    cls=HandledGroup,
    add_completion=False,
    no_args_is_help=True,
    help="TP Wallet Custody: threshold-signing custody.",
)
keys_app = typer.Typer(no_args_is_help=True, help="Threshold keys.")
app.add_typer(keys_app, name="keys")
app.add_typer(ceremony_app, name="ceremony")
app.add_typer(officer_app, name="officer")
app.add_typer(approver_app, name="approver")
app.add_typer(governance_app, name="governance")
app.add_typer(policy_app, name="policy")
app.add_typer(backup_cli.backup_app, name="backup")
app.command("dr-drill")(backup_cli.dr_drill)
app.command("approve")(approve_cli.approve)
app.command("reject")(approve_cli.reject)
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail and its checkpoints.")
app.add_typer(audit_app, name="audit")
requests_app = typer.Typer(
    no_args_is_help=True, help="Sign requests: their status, signature and result."
)
app.add_typer(requests_app, name="requests")
app.add_typer(receipt_app, name="receipt")
app.add_typer(credentials_app, name="credentials")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(pay_app, name="pay")
console = out  # the stdout console (kept for custody.demo and older callers)


def package_version() -> str:
    """The installed distribution's version (``pyproject.toml``)."""
    try:
        return _dist_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        print(f"custody {package_version()}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """TP Wallet Custody: threshold-signing custody. Exit codes: docs/CLI.md."""


@app.command()
def up(
    nodes: Annotated[
        int, typer.Option("--nodes", min=2, max=16, help="number of signer nodes")
    ] = 3,
    data_dir: Annotated[
        Path,
        typer.Option("--data-dir", help="directory for every process's data and cluster.json"),
    ] = DEFAULT_DIR,
    port: Annotated[
        int,
        typer.Option(
            "--port", min=1, max=65535 - 16, help="coordinator port; node i listens on port+i"
        ),
    ] = 7100,
    allow_raw: Annotated[
        bool,
        typer.Option(
            "--allow-raw",
            help="the genesis enables raw signing for every key (development and tests "
            "only; chosen when the data directory is first provisioned)",
        ),
    ] = False,
    with_payments: Annotated[
        bool,
        typer.Option(
            "--with-payments",
            help="also start the payment service (python -m payments) on port+50; "
            "`custody pay ...` finds it in cluster.json",
        ),
    ] = False,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="plain HTTP between coordinator and nodes (development only; default: "
            "mutual TLS 1.3 with a dev CA made on first run)",
        ),
    ] = False,
) -> None:
    """Start the coordinator and the signer nodes as local processes (Ctrl-C stops them).

    The dev genesis carries the demo policy (README: Demo policy): transfers to the demo
    allowlist signed up to a limit, above it two approvals of the treasury group (three
    dev approvers, key files in DIR/approvers), messages signed, raw denied."""
    from custody.cluster import Cluster, PortInUse

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with err.status("starting cluster") as status:
        cluster = Cluster(
            Path(data_dir),
            nodes=nodes,
            port=port,
            allow_raw=allow_raw,
            payments=with_payments,
            tls=not dev,
            progress=lambda m: status.update(m),
        )
        try:
            doc = cluster.start()
        except PortInUse as e:
            cluster.stop()
            raise CliError(str(e), ExitCode.IN_USE) from None
        except (RuntimeError, OSError) as e:
            cluster.stop()
            raise CliError(f"cluster failed to start: {e}", ExitCode.FAILED) from None
        except BaseException:
            cluster.stop()
            raise
    approver_key = cluster.data_dir / "approvers" / "dev-approver-1.key"
    out.print("[bold]TP Wallet Custody — dev cluster[/bold]")
    print_fields(  # whole lines, not a panel: a long path is never folded or cut
        [
            ("API", doc["api_url"]),
            ("OpenAPI", f"{doc['api_url']}/docs"),
            *((n["id"], n["url"]) for n in doc["nodes"]),
            *((("payments", doc["payments"]["url"]),) if "payments" in doc else ()),
            ("cluster", f"{cluster.cluster_file}  (credentials, key files; mode 0600)"),
            ("approve", f"custody approve ID --key-file {approver_key}"),
        ]
    )
    out.print(
        "[bold yellow]DEV CLUSTER: demo policy (README: Demo policy): transfers to the demo "
        "allowlist up to a limit, above it 2 treasury approvals; raw signing: "
        f"{doc['dev_governance']['raw_signing']}[/bold yellow]\nCtrl-C stops every process."
    )
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
        with err.status("stopping"):
            cluster.stop()
        out.print("stopped")


@keys_app.command("create")
def keys_create(
    scheme: Annotated[str, typer.Argument(help="the key's scheme: " + " | ".join(SCHEMES))],
    threshold: Annotated[
        int, typer.Option("--threshold", "-t", help="signatures need this many nodes")
    ] = 2,
    nodes: Annotated[
        list[str] | None,
        typer.Option("--node", help="a node to hold a share (repeat) [default: every node]"),
    ] = None,
    network: Annotated[
        str | None,
        typer.Option("--network", help="bip340 keys: the Bitcoin network, " + " | ".join(NETWORKS)),
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="a name for the key (filter: keys list --label)")
    ] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="a metadata tag NAME=VALUE (repeat)")
    ] = None,
    idempotency_key: IdemOpt = None,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a DKG among the nodes and show the new key."""
    metadata = _tags(meta)
    with connect("admin", cluster, api_url, token) as c, err.status("running DKG"):
        key = c.create_key(  # the API checks scheme, threshold, network, label and tags
            cast(Scheme, scheme),
            threshold,
            nodes,
            network=cast(Network | None, network),
            idempotency_key=idempotency_key,
            label=label,
            metadata=metadata,
        )
    _show_key(key, as_json)
    if key.status == "failed":
        raise typer.Exit(ExitCode.FAILED)
    if key.status != "active":
        err.print(f"key {key.id} is still {key.status}: `custody keys show {key.id}` later")
        raise typer.Exit(ExitCode.PENDING)


def _tags(meta: list[str] | None) -> dict[str, str] | None:
    if not meta:
        return None
    out: dict[str, str] = {}
    for m in meta:
        name, sep, value = m.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{m!r}: expected NAME=VALUE", param_hint="--meta")
        out[name] = value
    return out


@keys_app.command("list")
def keys_list(
    scheme: Annotated[str | None, typer.Option("--scheme", help="only keys of this scheme")] = None,
    label: Annotated[str | None, typer.Option("--label", help="only keys with this label")] = None,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List keys."""
    with connect("auditor", cluster, api_url, token) as c:
        items = list(c.list_keys(scheme=scheme, label=label))
    if as_json:
        print_json([k.model_dump(mode="json") for k in items])
        return
    print_rows(
        ("id", "scheme", "t/n", "status", "public key", "label"),
        [
            (
                k.id,
                k.scheme,
                f"{k.threshold}/{len(k.nodes)}",
                k.status,
                k.public_key or "",
                k.label or "",
            )
            for k in items
        ],
        long=("public key",),
    )


@keys_app.command("show")
def keys_show(
    key_id: Annotated[str, typer.Argument(help="the key's id (key_...)")],
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
    xpub: Annotated[
        bool, typer.Option("--xpub", help="print only its BIP-32 extended public key")
    ] = False,
) -> None:
    """Show one key."""
    require_id(key_id, "key id")
    with connect("auditor", cluster, api_url, token) as c:
        if xpub:  # custody.ceremony_cli (GET /v1/keys/{id}/xpub)
            x = xpub_of(c, key_id)
            print_json({"key_id": key_id, "xpub": x}) if as_json else out.print(x)
            return
        key = c.get_key(key_id)
    _show_key(key, as_json)


register_key_commands(keys_app)  # keys refresh (custody.ceremony_cli)


def _show_key(key: KeyOut, as_json: bool) -> None:
    doc = key.model_dump(mode="json")
    if as_json:
        print_json(doc)
        return
    fields: list[tuple[str, Any]] = [
        ("id", key.id),
        *([("label", key.label)] if key.label else []),
        ("scheme", key.scheme),
        ("status", key.status),
        ("threshold", f"{key.threshold} of {len(key.nodes)}"),
        ("nodes", ", ".join(key.nodes)),
        ("public_key", key.public_key),
    ]
    if key.network is not None:
        fields.append(("network", key.network))
    fields += [(f"address.{chain}", a) for chain, a in sorted(key.addresses.items())]
    fields += [(f"metadata.{name}", v) for name, v in sorted(key.metadata.items())]
    fields.append(("created_at", doc["created_at"]))
    if key.error is not None:
        fields.append(("error", f"{key.error.title}: {key.error.detail}"))
    print_fields(fields)


def _arg_or_file(value: str, option: str) -> str:
    """``value``, or the text of file ``F`` when ``value`` is ``@F`` (``@-``: stdin)."""
    if not value.startswith("@"):
        return value.strip()
    return _read(value[1:], option).decode().strip()


def _read(name: str, option: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as e:
        raise CliError(f"{option}: cannot read {name}: {e.strerror or e}") from None


def _psbt(value: str) -> str:
    """A PSBT as base64: given as base64, or ``@file`` holding base64 or the raw bytes."""
    raw = _read(value[1:], "--psbt") if value.startswith("@") else value.encode()
    if raw.startswith(b"psbt\xff"):
        return base64.b64encode(raw).decode()
    text = raw.decode(errors="replace").strip()
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CliError("--psbt: not base64 (nor a binary PSBT file)") from None
    return text


def _payload_file(name: str) -> dict[str, Any]:
    raw = _read(name, "--payload-file")
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CliError(f"--payload-file {name}: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CliError(f"--payload-file {name}: the payload must be a JSON object")
    return doc


def _sign_payload(
    kind: str | None,
    payload_file: str | None,
    tx: str | None,
    psbt: str | None,
    text: str | None,
) -> tuple[str, dict[str, Any] | None]:
    """The request's kind and payload from the options (at most one payload source)."""
    given = [
        name
        for name, v in (
            ("--payload-file", payload_file),
            ("--tx", tx),
            ("--psbt", psbt),
            ("--message", text),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise CliError(f"give one payload, not {' and '.join(given)}")
    if tx is not None:
        return kind or "evm-tx", {"tx": _arg_or_file(tx, "--tx")}
    if psbt is not None:
        return kind or "btc-psbt", {"psbt": _psbt(psbt)}
    if text is not None:
        hexed = text if text.startswith("0x") else "0x" + text.encode().hex()
        return kind or "message", {"message": hexed}
    if payload_file is not None:
        if kind is None or kind == "raw":
            raise CliError("--payload-file needs --kind (evm-tx, btc-psbt, message, ...)")
        return kind, _payload_file(payload_file)
    return kind or "raw", None


_SIGN_EXIT = {
    "signed": ExitCode.OK,
    "rejected": ExitCode.REFUSED,
    "failed": ExitCode.FAILED,
    "expired": ExitCode.FAILED,
}


@app.command()
def sign(
    key_id: Annotated[str, typer.Argument(help="the key's id (key_...)")],
    message: Annotated[
        str | None,
        typer.Argument(
            help="raw kind: the message as hex (ECDSA: a 32-byte digest); other kinds: "
            "optional, the hex the payload must yield"
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="what is signed: "
            + " | ".join([*KINDS, "btc-psbt", "iso20022"])
            + " [default: from the payload option, else raw]",
        ),
    ] = None,
    payload_file: Annotated[
        str | None,
        typer.Option(
            "--payload-file", help="the request's payload: a JSON object in this file (- stdin)"
        ),
    ] = None,
    tx: Annotated[
        str | None,
        typer.Option("--tx", help="evm-tx: an unsigned EIP-1559 transaction 0x02... or @FILE"),
    ] = None,
    psbt: Annotated[
        str | None,
        typer.Option("--psbt", help="btc-psbt: a PSBT as BASE64, or @FILE (base64 or binary)"),
    ] = None,
    text: Annotated[
        str | None,
        typer.Option(
            "--message", help="message kind: the text to sign (0x... for hex bytes), EIP-191"
        ),
    ] = None,
    path: Annotated[
        str | None,
        typer.Option(
            "--path",
            help="sign under the key's BIP-32 non-hardened child at this path, e.g. m/0/7 "
            "(see `custody keys derive KEY PATH`)",
        ),
    ] = None,
    idempotency_key: IdemOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="seconds to wait for a terminal status")
    ] = 60.0,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask for a signature and wait for it."""
    require_id(key_id, "key id")
    kind_, payload = _sign_payload(kind, payload_file, tx, psbt, text)
    if kind_ == "raw" and message is None:
        raise CliError("raw signing needs MESSAGE (hex); or give --tx, --psbt, --message")
    with connect("requester", cluster, api_url, token) as c, err.status("signing"):
        try:
            r = c.sign(  # the API checks the kind and the payload
                key_id,
                message,
                kind=cast(Kind, kind_),
                payload=payload,
                idempotency_key=idempotency_key,
                timeout=timeout,
                derivation_path=path,
            )
        except SignTimeout as e:  # not terminal in time: show it as it stands
            r = e.request
    _show_sign_request(r, as_json)
    raise typer.Exit(_sign_exit(r))


def _show_sign_request(r: SignRequestOut, as_json: bool) -> None:
    if as_json:
        print_json(r.model_dump(mode="json"))
        return
    fields: list[tuple[str, Any]] = [
        ("id", r.id),
        ("key_id", r.key_id),
        ("kind", r.kind),
        *([("derivation_path", r.derivation_path)] if r.derivation_path else []),
        ("status", r.status),
        ("message", r.message),
        ("signature", r.signature),
    ]
    if r.recovery_id is not None:
        fields.append(("recovery_id", r.recovery_id))
    fields.append(("signers", ", ".join(map(str, r.signers or ()))))
    if r.result is not None:
        fields.append(("signed_tx", r.result.signed_tx))
    fields += [("blamed", f"{b.node_id} (party {b.party_id}): {b.reason}") for b in r.blamed]
    if r.error is not None:
        fields.append(("error", f"{r.error.title}: {r.error.detail}"))
    print_fields(fields)


def _sign_exit(r: SignRequestOut) -> ExitCode:
    code = _SIGN_EXIT.get(r.status, ExitCode.PENDING)
    if code == ExitCode.PENDING:
        err.print(
            f"sign request {r.id} is {r.status}: ask again later with "
            f"`custody requests show {r.id}`"
        )
    return code


@requests_app.command("show")
def requests_show(
    request_id: Annotated[str, typer.Argument(help="the sign request's id (sr_...)")],
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one sign request; the exit code says its status (docs/CLI.md)."""
    require_id(request_id, "sign request id")
    with connect("auditor", cluster, api_url, token) as c:
        r = c.get_sign_request(request_id)
    _show_sign_request(r, as_json)
    raise typer.Exit(_sign_exit(r))


@requests_app.command("list")
def requests_list(
    status: Annotated[
        str | None,
        typer.Option("--status", help="only this status: " + " | ".join(SIGN_STATUSES)),
    ] = None,
    key_id: Annotated[str | None, typer.Option("--key", help="only this key's requests")] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="at most this many, newest first")
    ] = 50,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List sign requests, newest first."""
    if key_id is not None:
        require_id(key_id, "key id")
    with connect("auditor", cluster, api_url, token) as c:
        found = c.list_sign_requests(
            min(limit, 200), status=cast(SignStatus | None, status), key_id=key_id
        )
        items = list(itertools.islice(found, limit))
    if as_json:
        print_json([r.model_dump(mode="json") for r in items])
        return
    print_rows(
        ("id", "key id", "kind", "status", "signature"),
        [(r.id, r.key_id, r.kind, r.status, r.signature or "") for r in items],
        long=("key id", "signature"),
    )


@audit_app.command("verify")
def audit_verify(
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the audit chain against the node-signed checkpoints, the credentials and the
    stored signatures; exit 6 (failed) naming the first bad entry of each tampering found."""
    with connect("auditor", cluster, api_url, token) as c:
        v = c.verify_audit()
    if as_json:
        print_json(v.model_dump(mode="json"))
    else:
        cps = v.checkpoints
        anchored = f", anchored by node checkpoints up to {cps.last_seq}" if cps else ""
        print_fields([("result", f"{'ok' if v.ok else 'TAMPERED'}: {v.entries} entries{anchored}")])
        print_fields(
            [
                (f.kind, f"{f'entry {f.seq}' if f.seq is not None else f.subject}: {f.detail}")
                for f in v.findings
            ]
        )
    if not v.ok:
        raise typer.Exit(ExitCode.FAILED)


@audit_app.command("checkpoint")
def audit_checkpoint(
    idempotency_key: IdemOpt = None,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask every node to co-sign the current audit head (admin)."""
    with connect("admin", cluster, api_url, token) as c:
        cp = c.checkpoint_audit(idempotency_key=idempotency_key)
    if as_json:
        print_json(cp.model_dump(mode="json"))
        return
    print_fields(
        [
            ("checkpoint", cp.seq),
            ("head", cp.head),
            *((f"signature {n}", s) for n, s in sorted(cp.signatures.items())),
            *((f"node {n.node_id}", f"{n.status} {n.detail or ''}".strip()) for n in cp.nodes),
        ]
    )


@app.command()
def nodes(
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enrolled nodes with health and last seen."""
    with connect("auditor", cluster, api_url, token) as c:
        items = c.nodes()
    if as_json:
        print_json([n.model_dump(mode="json") for n in items])
        return
    print_rows(
        ("id", "party", "status", "url", "last seen", "last error"),
        [
            (
                n.id,
                n.party_id,
                n.status,
                n.url,
                n.model_dump(mode="json")["last_seen"],
                n.last_error,
            )
            for n in items
        ],
        long=("url", "last seen", "last error"),
    )


# The node CLI under this name: `custody node --help` shows `custody node ...` usage.
_NODE_CLI = "from signer_nodes.cli import app; app(prog_name='custody node')"


@app.command(
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],
    }
)
def node(ctx: typer.Context) -> None:
    """Signer-node commands: init, identity, trust, run, rotate-seal-key, status."""
    argv = [sys.executable, "-c", _NODE_CLI, *ctx.args]
    os.execvp(argv[0], argv)  # noqa: S606 - replaces this process, no shell


@app.command()
def demo(
    cluster: ClusterOpt = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="where to start a cluster if none is running")
    ] = None,
    port: Annotated[
        int, typer.Option("--port", help="coordinator port of a cluster it starts")
    ] = 7100,
) -> None:
    """Create a key per scheme, sign, verify with independent libraries, print a table; then
    the demo policy at work, and payments through the payment service (pain.001 batch,
    approvals, mined ETH, Bitcoin Core-checked BTC, a signed pacs.008, reconciliation)."""
    from custody.demo import run_demo

    raise typer.Exit(run_demo(out, cluster, data_dir, port))


def main() -> None:
    """``python -m custody.cli`` and the ``custody`` script."""
    app()


if __name__ == "__main__":
    main()
