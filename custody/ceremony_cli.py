"""Key ceremonies from the CLI: ``custody keys refresh KEY`` and ``custody ceremony show|resume``.

    custody keys refresh KEY [--json] [--cluster FILE | --api-url URL --token T]
    custody keys derive KEY PATH [--json]
    custody ceremony show ID [--json]
    custody ceremony resume ID [--json]

``keys refresh`` asks the coordinator for a proactive refresh (``POST
/v1/keys/{id}/refresh``): every share holder runs the refresh session, signs the outcome
with its identity key, and switches to the new share only once every party is done. The
ceremony is shown per party (round reached, done statement, commit); a failure names the
party at fault (exit 6), a commit that did not reach every node leaves the ceremony
``committing`` (exit 8: ``custody ceremony resume ID``).
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from custody.cli_support import (
    ApiOpt,
    ClusterOpt,
    JsonOpt,
    TokenOpt,
    connect,
    err,
    out,
    print_fields,
    print_json,
    require_id,
)
from custody.client import CustodyClient, CustodyError
from custody.exitcodes import ExitCode

__all__ = ["ceremony_app", "register_key_commands", "xpub_of"]

ceremony_app = typer.Typer(no_args_is_help=True, help="Key ceremonies and their transcripts.")


def _call(c: CustodyClient, method: str, path: str) -> dict[str, Any]:
    return _answer_of(c.http.request(method, path))


def _answer_of(r: httpx.Response) -> dict[str, Any]:
    try:
        doc = r.json()
    except ValueError:
        doc = {"title": "non-JSON answer", "detail": r.text[:200]}
    if r.status_code >= 400:
        raise CustodyError(r.status_code, doc if isinstance(doc, dict) else {"detail": doc})
    return dict(doc)


def _seg(value: str) -> str:
    """One URL path segment (``require_id`` checked the id already)."""
    return urllib.parse.quote(value, safe="")


def _show(cer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(cer)
    else:
        tr = cer.get("transcript") or {}
        outcome = tr.get("outcome") or {}
        print_fields(
            [
                ("id", cer["id"]),
                ("kind", cer["kind"]),
                ("key_id", cer["key_id"]),
                ("status", cer["status"]),
                ("share_version", cer.get("share_version")),
                ("public_key", outcome.get("public_key", "")),
                ("session_id", cer["session_id"]),
                ("created_by", cer["created_by"]),
                ("created_at", cer["created_at"]),
            ]
        )
        commits = {p["party_id"]: p for p in cer.get("progress") or []}
        sigs = tr.get("signatures") or {}
        table = Table("party", "round 1 (commitments)", "round 2 (sub-shares)", "done", "commit")
        for party in cer["participants"]:
            done = str(party) in sigs
            commit = commits.get(party)
            table.add_row(
                str(party),
                "ok" if done else "-",
                "ok" if done else "-",
                "signed" if done else "-",
                "-" if commit is None else ("switched" if commit["ok"] else commit["detail"]),
            )
        out.print(table)
        err_doc = cer.get("error")
        if err_doc:
            for b in err_doc.get("blamed") or []:
                err.print(f"at fault: party {b['party_id']} ({b['node_id']}): {b['reason']}")
    if cer["status"] == "committing":
        err.print(f"not every node switched yet: `custody ceremony resume {cer['id']}`")
        raise typer.Exit(ExitCode.PENDING)


def refresh(
    key_id: Annotated[str, typer.Argument(help="the key's id (key_...)")],
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Proactive refresh: same public key, new shares on every node (ECDSA: new base OTs)."""
    require_id(key_id, "key id")
    with connect("admin", cluster, api_url, token) as c:
        with err.status(f"refreshing {key_id}: every share holder deals a sharing of zero"):
            try:
                cer = _call(c, "POST", f"/v1/keys/{_seg(key_id)}/refresh")
            except CustodyError as e:
                cid = e.problem.get("ceremony_id")
                if not cid:
                    raise
                cer = _call(c, "GET", f"/v1/ceremonies/{_seg(str(cid))}")
    _show(cer, as_json)
    if cer["status"] == "failed":
        raise typer.Exit(ExitCode.FAILED)


def derive(
    key_id: Annotated[str, typer.Argument(help="the key's id (key_...)")],
    path: Annotated[str, typer.Argument(help="non-hardened BIP-32 path, e.g. m/0/1")],
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The child key at PATH: public key and addresses (hardened steps are refused)."""
    require_id(key_id, "key id")
    with connect("auditor", cluster, api_url, token) as c:
        r = c.http.get(f"/v1/keys/{_seg(key_id)}/derive", params={"path": path})
        doc = _answer_of(r)
    if as_json:
        print_json(doc)
        return
    fields: list[tuple[str, Any]] = [
        ("key_id", doc["key_id"]),
        ("path", doc["path"]),
        ("public_key", doc["public_key"]),
    ]
    fields += [(f"address.{chain}", a) for chain, a in sorted(doc["addresses"].items())]
    if "xpub" in doc:
        fields.append(("xpub", doc["xpub"]))
    print_fields(fields)


def xpub_of(c: CustodyClient, key_id: str) -> str:
    """The key's BIP-32 xpub (``custody keys show --xpub``)."""
    return str(_answer_of(c.http.get(f"/v1/keys/{_seg(key_id)}/xpub"))["xpub"])


def register_key_commands(keys_app: typer.Typer) -> None:
    """Add the ceremony and derivation commands to ``custody keys``."""
    keys_app.command("refresh")(refresh)
    keys_app.command("derive")(derive)


@ceremony_app.command("show")
def show(
    ceremony_id: Annotated[str, typer.Argument(help="the ceremony's id (cer_...)")],
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A ceremony: its parties, their progress and the transcript every node signed."""
    require_id(ceremony_id, "ceremony id")
    with connect("auditor", cluster, api_url, token) as c:
        cer = _call(c, "GET", f"/v1/ceremonies/{_seg(ceremony_id)}")
    _show(cer, as_json)
    if cer["status"] == "failed":
        raise typer.Exit(ExitCode.FAILED)


@ceremony_app.command("resume")
def resume(
    ceremony_id: Annotated[str, typer.Argument(help="the ceremony's id (cer_...)")],
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send an interrupted ceremony's commits again (nodes already switched say so)."""
    require_id(ceremony_id, "ceremony id")
    with connect("admin", cluster, api_url, token) as c, err.status("committing"):
        cer = _call(c, "POST", f"/v1/ceremonies/{_seg(ceremony_id)}/resume")
    _show(cer, as_json)
