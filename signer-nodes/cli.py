"""``python -m signer_nodes init|identity|trust|tls-request|run|rotate-seal-key|status|backup``.

Provisioning: ``init`` creates the token, identity keys and database and prints the
identity JSON ``{"node_id","party_id","sign_pk","box_pk"}`` (``identity`` prints it again);
the officers pin it in the governance genesis; ``trust --governance GENESIS`` installs that
genesis once; ``tls-request`` makes the TLS key and its identity-bound CSR (the CA's
certificate goes to D/tls/node.crt, docs/SECURITY.md "Transport: mutual TLS"); then ``run``
(mutual TLS 1.3; plain HTTP only with ``--dev``). The PIN comes from ``--pin-file`` (a
secret file outside the data directory) or ``$CUSTODY_HSM_PIN``; without either, ``init``
writes a random PIN to ``D/hsm.pin``, which is the DEV layout only (the PIN next to the
token it unlocks).

Errors never print a stack trace: HSM errors exit with their own code
(:mod:`hsm.errors`: 20 module missing, 21 token missing, 22 wrong PIN, 23 HSM
unavailable, 24 unseal failed, ...), configuration errors with 2, database errors with 3.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from custody import backups as bk
from hsm.errors import HsmError
from signer_nodes import backup, config, logs
from signer_nodes.config import ConfigError
from signer_nodes.errors import NodeError
from signer_nodes.node import Node
from signer_nodes.store import StoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="TP Wallet Custody signer node.")
err = Console(stderr=True, soft_wrap=True)
out = Console()
T = TypeVar("T")

DataDir = Annotated[Path, typer.Option("--data-dir", help="node data directory")]
PinFile = Annotated[Path | None, typer.Option("--pin-file", help="file holding the HSM user PIN")]


@app.callback()
def _logs() -> None:
    """Every command writes its logs as JSON lines on stderr (custody.obs); output on stdout."""
    logs.setup()


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn every known failure into a one-line message and its exit code."""
    try:
        return fn()
    except NodeError:
        raise
    except HsmError as exc:
        err.print(f"[red]error[/red] {exc.code}: {exc.message}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except ConfigError as exc:
        err.print(f"[red]error[/red] config: {exc}", highlight=False)
        raise typer.Exit(ConfigError.exit_code) from None
    except StoreError as exc:
        err.print(f"[red]error[/red] database: {exc}", highlight=False)
        raise typer.Exit(3) from None


@app.command()
def init(
    data_dir: DataDir,
    node_id: Annotated[str, typer.Option("--node-id")],
    party_id: Annotated[int, typer.Option("--party-id")],
    coordinator_key: Annotated[
        str, typer.Option("--coordinator-key", help="hex Ed25519 public key")
    ],
    pin_file: PinFile = None,
    module: Annotated[str | None, typer.Option("--module", help="PKCS#11 module path")] = None,
) -> None:
    """Provision the HSM token, identity keys and database; print the public identity."""

    def run() -> dict[str, Any]:
        try:
            ck = bytes.fromhex(coordinator_key)
        except ValueError:
            raise ConfigError("--coordinator-key must be hex") from None
        node = Node.init(
            data_dir,
            node_id=node_id,
            party_id=party_id,
            coordinator_key=ck,
            pin_file=pin_file,
            module_path=module,
        )
        try:
            h = node.health()
            return {k: h[k] for k in ("node_id", "party_id", "sign_pk", "box_pk")}
        finally:
            node.close()

    info = _guard(run)
    print(json.dumps(info))


@app.command()
def run(
    data_dir: DataDir,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8701,
    pin_file: PinFile = None,
    dev: Annotated[
        bool, typer.Option("--dev", help="development only: serve plain HTTP without D/tls")
    ] = False,
) -> None:
    """Serve the node API (docs/NODE_API.md) on uvicorn, over mutual TLS 1.3 (D/tls/...:
    ``tls-request``, then the CA's certificate); plain HTTP is refused unless ``--dev``."""
    # Lazy on purpose (CLI start-up): only `run` needs the web stack, so `init`, `status`
    # and `rotate-seal-key` start without importing uvicorn, FastAPI and Starlette.
    from signer_nodes.service import serve

    logs.setup()
    node = _guard(lambda: Node.open(data_dir, pin_file=pin_file))
    logs.bind_node(node.node_id)
    try:
        ssl_context = _guard(
            lambda: config.server_tls(node.paths, lambda: _tls_passphrase(node, create=False))
        )
        if ssl_context is None and not dev:
            err.print(
                f"[red]error[/red] config: {node.paths.tls_cert} missing: a node serves only "
                "mutual TLS (run `tls-request`, install the CA's certificate and ca.pem); "
                "plain HTTP only with --dev (development)",
                highlight=False,
            )
            raise typer.Exit(ConfigError.exit_code)
        logs.event(
            "node.serve", node_id=node.node_id, host=host, port=port, tls=ssl_context is not None
        )
        serve(node, host=host, port=port, ssl_context=ssl_context)
    finally:
        node.close()


def _tls_passphrase(node: Node, *, create: bool) -> bytes:
    """The TLS key's passphrase, HSM-sealed in the identity table (config.TLS_IDENTITY_KIND);
    a new one with ``create`` when the node has none yet."""
    aad = config.tls_passphrase_aad(node.node_id)
    try:
        _, blob, _ = node.store.get_identity(config.TLS_IDENTITY_KIND)
    except StoreError:
        if not create:
            raise ConfigError(
                f"{node.paths.tls_key} exists but node.db holds no TLS passphrase: "
                "run tls-request again"
            ) from None
        passphrase = config.new_tls_passphrase()
        blob = node.vault.seal(passphrase, aad)
        node.store.put_identity(config.TLS_IDENTITY_KIND, b"", blob, node.vault.blob_version(blob))
        return passphrase
    return node.vault.unseal(blob, aad)


@app.command("tls-request")
def tls_request(
    data_dir: DataDir,
    host: Annotated[
        list[str], typer.Option("--host", help="a DNS name or IP the node is reached at")
    ],
    pin_file: PinFile = None,
) -> None:
    """Make the node's TLS key (encrypted, its passphrase HSM-sealed) and print its CSR
    (PEM; also D/tls/node.csr), bound to the node's identity key (node stopped). The CA's
    certificate goes to D/tls/node.crt and the CA to D/tls/ca.pem."""

    def go() -> bytes:
        node = Node.open(data_dir, pin_file=pin_file)
        try:
            return config.provision_tls(
                node.paths,
                node.node_id,
                _tls_passphrase(node, create=True),
                node.identity.sign_pk,
                node.identity.sign_statement,
                host,
            )
        finally:
            node.close()

    print(_guard(go).decode(), end="")


@app.command()
def identity(data_dir: DataDir, pin_file: PinFile = None) -> None:
    """Print the node's public identity JSON (what a governance roster pins)."""

    def go() -> dict[str, Any]:
        node = Node.open(data_dir, pin_file=pin_file, exclusive=False)
        try:
            return node.identity_info()
        finally:
            node.close()

    print(json.dumps(_guard(go)))


@app.command()
def trust(
    data_dir: DataDir,
    governance: Annotated[
        Path, typer.Option("--governance", help="signed genesis (canonical CBOR)")
    ],
    pin_file: PinFile = None,
    then: Annotated[
        list[Path] | None,
        typer.Option("--then", help="a later version, in order (a node joining later)"),
    ] = None,
) -> None:
    """Install the governance genesis once, as this node's trust anchor (node stopped).

    Refused unless the genesis carries its officers' quorum and its roster (or, with
    ``--then``, the last version's) pins this node's own identity (``identity``)."""

    def go() -> dict[str, Any]:
        try:
            data = governance.read_bytes()
            later = [p.read_bytes() for p in then or ()]
        except OSError as exc:
            raise ConfigError(f"cannot read governance: {exc.strerror}") from None
        node = Node.open(data_dir, pin_file=pin_file)
        try:
            return node.trust(data, later)
        finally:
            node.close()

    try:
        info = _guard(go)
    except NodeError as exc:
        err.print(f"[red]refused ({exc.code})[/red]: {exc.detail}", highlight=False)
        raise typer.Exit(1) from None
    print(json.dumps(info))


@app.command("rotate-seal-key")
def rotate_seal_key(data_dir: DataDir, pin_file: PinFile = None) -> None:
    """Rewrap every sealed blob under a new HSM seal key version; destroy the old one.

    The node must be stopped (the data directory lock is taken).
    """

    logs.setup()

    def go() -> dict[str, int]:
        node = Node.open(data_dir, pin_file=pin_file)
        try:
            return node.rotate_seal_key()
        finally:
            node.close()

    res = _guard(go)
    out.print(
        f"seal key rotated to version {res['version']}: {res['blobs']} blobs rewrapped, "
        f"{res['destroyed']} old key(s) destroyed"
    )


@app.command()
def status(
    data_dir: DataDir,
    pin_file: PinFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Shares held, ledger size, HSM health (never a secret)."""

    def go() -> dict[str, Any]:
        node = Node.open(data_dir, pin_file=pin_file, exclusive=False)
        try:
            return node.status()
        finally:
            node.close()

    st = _guard(go)
    if as_json:
        print(json.dumps(st))
        return
    table = Table(title=f"node {st['node_id']} (party {st['party_id']})", show_header=False)
    for k, v in st.items():
        table.add_row(k, ", ".join(map(str, v)) if isinstance(v, list) else str(v))
    out.print(table)


backup_app = typer.Typer(
    no_args_is_help=True,
    help="Share backups to offline recovery keys, made and restored on this node.",
)
app.add_typer(backup_app, name="backup")


def _backup_guard(fn: Callable[[], T]) -> T:
    try:
        return _guard(fn)
    except (NodeError, bk.BackupError) as exc:
        code = exc.code if isinstance(exc, bk.BackupError) else f"node:{exc.kind.value}"
        err.print(f"[red]refused ({code})[/red]: {exc.detail}", highlight=False)
        raise typer.Exit(4) from None


@backup_app.command("export")
def backup_export(
    data_dir: DataDir,
    recipient: Annotated[list[str], typer.Option("--recipient", help="age1... (repeat)")],
    out: Annotated[Path, typer.Option("--out", help="backup directory (DIR/<node id>/)")],
    pin_file: PinFile = None,
) -> None:
    """Encrypt every share to the recovery recipients (age); sign the manifest."""

    def go() -> dict[str, Any]:
        node = Node.open(data_dir, pin_file=pin_file, exclusive=False)
        try:
            return backup.export(node, recipient, out)
        finally:
            node.close()

    print(json.dumps(_backup_guard(go)))


@backup_app.command("restore")
def backup_restore(
    data_dir: DataDir,
    source: Annotated[Path, typer.Option("--backup", help="one node's backup directory")],
    identity: Annotated[Path, typer.Option("--identity", help="passphrase-protected age key")],
    passphrase_file: Annotated[Path | None, typer.Option("--passphrase-file")] = None,
    sign_pk: Annotated[
        str | None, typer.Option("--sign-pk", help="hex: the backed-up node's pinned sign_pk")
    ] = None,
    pin_file: PinFile = None,
) -> None:
    """Restore a node backup onto this fresh node (stopped; governance installed)."""

    def go() -> dict[str, Any]:
        if passphrase_file is not None:
            phrase = passphrase_file.read_text().rstrip("\n")
        else:
            phrase = os.environ.get(bk.PASSPHRASE_ENV, "")
        if not phrase:
            raise ConfigError(f"give --passphrase-file or ${bk.PASSPHRASE_ENV}")
        ident = bk.open_identity_file(identity.read_bytes(), phrase)
        pk = None if sign_pk is None else bytes.fromhex(sign_pk)
        node = Node.open(data_dir, pin_file=pin_file)
        try:
            return backup.restore(node, source, ident, sign_pk=pk)
        finally:
            node.close()

    print(json.dumps(_backup_guard(go)))


@backup_app.command("adopt")
def backup_adopt(
    data_dir: DataDir,
    authorization: Annotated[Path, typer.Option("--authorization", help="officer-signed")],
    pin_file: PinFile = None,
) -> None:
    """Carry key committees over to a restored member (node stopped; restart it after)."""

    def go() -> dict[str, Any]:
        node = Node.open(data_dir, pin_file=pin_file)
        try:
            return backup.adopt(node, authorization.read_bytes())
        finally:
            node.close()

    print(json.dumps(_backup_guard(go)))


def main() -> None:
    app(prog_name="signer_nodes")


if __name__ == "__main__":
    main()
