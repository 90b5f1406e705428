"""``custody credentials create|list|show|scope|rotate|revoke``: the coordinator's bearer
credentials (``/v1/credentials``, the admin credential).

    custody credentials create requester --principal payments-bot --wallet hot
    custody credentials list [--all] [--json]
    custody credentials show CRED_ID [--json]
    custody credentials scope CRED_ID [--key KEY_ID ...] [--wallet NAME ...] | --unscoped
    custody credentials rotate CRED_ID
    custody credentials revoke CRED_ID [--yes]

``create`` and ``rotate`` print the token once (to stdout, nothing else on that line with
``--token-only``): store it at once; the coordinator keeps only its hash. Exit codes are
:mod:`custody.exitcodes`'s (not found 3, refused 4, conflict 7 for a revoked credential).
"""

from __future__ import annotations

from typing import Annotated

import typer

from custody.cli_support import (
    ApiOpt,
    CliError,
    ClusterOpt,
    JsonOpt,
    TokenOpt,
    connect,
    print_fields,
    print_json,
    print_model,
    print_rows,
    require_id,
)
from custody.domain import ROLES
from custody.exitcodes import ExitCode
from custody.models import CredentialIssued, CredentialOut

credentials_app = typer.Typer(
    no_args_is_help=True, help="Bearer credentials: create, scope, rotate, revoke (admin)."
)

KeysOpt = Annotated[
    list[str] | None,
    typer.Option("--key", help="scope to this key id (repeat)"),
]
WalletsOpt = Annotated[
    list[str] | None,
    typer.Option("--wallet", help="scope to this policy wallet's keys (repeat)"),
]
TokenOnlyOpt = Annotated[
    bool, typer.Option("--token-only", help="print only the token (for a secret store)")
]


def _scope(c: CredentialOut) -> str:
    if c.scope is None:
        return "every key"
    parts = [*(f"key {k}" for k in c.scope.keys), *(f"wallet {w}" for w in c.scope.wallets)]
    return ", ".join(parts) or "no key"


def _fields(c: CredentialOut) -> list[tuple[str, object]]:
    return [
        ("id", c.id),
        ("role", c.role),
        ("principal", c.principal),
        ("label", c.label),
        ("scope", _scope(c)),
        ("revoked", "yes" if c.revoked else "no"),
        ("created", c.created_at.isoformat()),
        ("rotated", c.rotated_at.isoformat() if c.rotated_at else ""),
    ]


def _issued(c: CredentialIssued, as_json: bool, token_only: bool) -> None:
    if as_json:
        print_json(c.model_dump(mode="json"))
    elif token_only:
        typer.echo(c.token)
    else:
        print_fields([*_fields(c), ("token", c.token)])
        typer.echo("the token is shown this once: store it now", err=True)


@credentials_app.command("create")
def create(
    role: Annotated[str, typer.Argument(help="the credential's role: " + " | ".join(ROLES))],
    principal: Annotated[
        str | None,
        typer.Option("--principal", help="the principal it belongs to [default: its own id]"),
    ] = None,
    label: Annotated[str, typer.Option("--label", help="a note for operators")] = "",
    keys: KeysOpt = None,
    wallets: WalletsOpt = None,
    token_only: TokenOnlyOpt = False,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a credential and print its token (shown once)."""
    if role not in ROLES:
        raise CliError(f"role {role!r}: one of {', '.join(ROLES)}")
    if principal is not None:
        require_id(principal, "principal id")
    with connect("admin", cluster, api_url, token) as c:
        made = c.create_credential(
            role, principal=principal, label=label, keys=keys, wallets=wallets
        )
    _issued(made, as_json, token_only)


@credentials_app.command("list")
def list_(
    include_revoked: Annotated[
        bool, typer.Option("--all", help="include revoked credentials")
    ] = False,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List credentials (never their tokens)."""
    with connect("admin", cluster, api_url, token) as c:
        items = c.list_credentials(include_revoked=include_revoked)
    if as_json:
        print_json([x.model_dump(mode="json") for x in items])
        return
    print_rows(
        ("id", "role", "principal", "scope", "revoked", "label"),
        [
            (x.id, x.role, x.principal, _scope(x), "yes" if x.revoked else "", x.label)
            for x in items
        ],
        long=("scope", "label"),
    )


@credentials_app.command("show")
def show(
    credential_id: Annotated[str, typer.Argument(help="the credential's id (cred_...)")],
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one credential."""
    require_id(credential_id, "credential id")
    with connect("admin", cluster, api_url, token) as c:
        x = c.get_credential(credential_id)
    print_model(x, _fields(x), as_json)


@credentials_app.command("scope")
def scope(
    credential_id: Annotated[str, typer.Argument(help="the credential's id (cred_...)")],
    keys: KeysOpt = None,
    wallets: WalletsOpt = None,
    unscoped: Annotated[bool, typer.Option("--unscoped", help="lift the scope: every key")] = False,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Scope a credential to keys and wallets (or lift its scope)."""
    require_id(credential_id, "credential id")
    if unscoped == bool(keys or wallets):
        raise CliError("pass --key/--wallet, or --unscoped (not both)")
    with connect("admin", cluster, api_url, token) as c:
        x = c.scope_credential(credential_id, keys, wallets)
    print_model(x, _fields(x), as_json)


@credentials_app.command("rotate")
def rotate(
    credential_id: Annotated[str, typer.Argument(help="the credential's id (cred_...)")],
    token_only: TokenOnlyOpt = False,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give a credential a new token (shown once); the old one stops working."""
    require_id(credential_id, "credential id")
    with connect("admin", cluster, api_url, token) as c:
        made = c.rotate_credential(credential_id)
    _issued(made, as_json, token_only)


@credentials_app.command("revoke")
def revoke(
    credential_id: Annotated[str, typer.Argument(help="the credential's id (cred_...)")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a credential for good."""
    require_id(credential_id, "credential id")
    if not yes and not typer.confirm(f"revoke {credential_id} for good?"):
        raise typer.Exit(ExitCode.ABORTED)
    with connect("admin", cluster, api_url, token) as c:
        x = c.revoke_credential(credential_id)
    print_model(x, _fields(x), as_json)
