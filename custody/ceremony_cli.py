"""Key ceremonies from the CLI: ``custody keys refresh|reshare|ot-resetup KEY`` and ``custody
ceremony show|resume|authorize``.

    custody keys refresh KEY [--json] [--cluster FILE | --api-url URL --token T]
    custody keys reshare KEY --threshold T --nodes a,b,c [--lower-threshold] [--json]
    custody keys ot-resetup KEY [--json]
    custody keys derive KEY PATH [--json]
    custody ceremony show ID [--json]
    custody ceremony resume ID [--json]

Every ceremony carries an authorization signed by the officer quorum
(:class:`custody.governance.CeremonyAuthorization`: kind, key, public key, share version,
committee after the ceremony, threshold before and after, expiry, a one-time ceremony id).
``refresh`` and ``reshare`` make it from the key and the coordinator's governance and sign
it here with officers' key files (``--officer-key F`` repeated, ``--passphrase-file`` or
``$CUSTODY_OFFICER_PASSPHRASE``; by default the dev officers that ``custody up`` wrote under
``DIR/officers``), or send one the officers signed elsewhere (``--authorization FILE``).
Every node verifies it itself; the coordinator only relays it.

``keys refresh`` asks the coordinator for a proactive refresh (``POST
/v1/keys/{id}/refresh``): every share holder runs the refresh session, signs the outcome
with its identity key, and switches to the new share only once every party is done. The
ceremony is shown per party (round reached, done statement, commit); a failure names the
party at fault (exit 6), a commit that did not reach every node leaves the ceremony
``committing`` (exit 8: ``custody ceremony resume ID``).
"""

from __future__ import annotations

import os
import secrets
import time
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from custody import governance as gov
from custody.cli_support import (
    DEFAULT_DIR,
    ApiOpt,
    CliError,
    ClusterOpt,
    JsonOpt,
    TokenOpt,
    connect,
    err,
    out,
    print_fields,
    print_json,
    read_cluster_file,
    require_id,
)
from custody.client import CustodyClient, CustodyError
from custody.exitcodes import ExitCode

__all__ = [
    "authorization_for",
    "ceremony_app",
    "open_officers",
    "register_key_commands",
    "xpub_of",
]

ceremony_app = typer.Typer(no_args_is_help=True, help="Key ceremonies and their transcripts.")

PASSPHRASE_ENV = "CUSTODY_OFFICER_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
AUTH_LIFETIME = 900  # seconds an authorization made here is valid
OfficerKeyOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--officer-key",
        help="an officer key file to sign the authorization with (repeat up to the quorum); "
        "default: the dev officers of the cluster file",
    ),
]
PassFileOpt = Annotated[
    Path | None,
    typer.Option("--passphrase-file", help="the officers' key-file passphrase (scripts)"),
]
AuthFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--authorization", help="a ceremony authorization the officers signed (hex or CBOR)"
    ),
]


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
                *(
                    [
                        ("threshold", tr.get("threshold")),
                        ("committee", ", ".join(sorted(committee_of(tr)))),
                    ]
                    if cer["kind"] == "reshare" and tr
                    else []
                ),
                ("public_key", outcome.get("public_key", "")),
                ("session_id", cer["session_id"]),
                ("created_by", cer["created_by"]),
                ("created_at", cer["created_at"]),
            ]
        )
        commits = {p["party_id"]: p for p in cer.get("progress") or []}
        sigs = tr.get("signatures") or {}
        members = {int(p) for p in tr.get("verifying_shares") or {}}
        table = Table(
            "party", "role", "round 1 (commitments)", "round 2 (sub-shares)", "done", "commit"
        )
        for party in cer["participants"]:
            done = str(party) in sigs
            commit = commits.get(party)
            if cer["kind"] != "reshare" or not members:
                role = "holder" if cer["kind"] != "reshare" else "-"
            elif party not in members:
                role = "departing (deals, then deletes its share)"
            else:
                role = "member"
            switched = "switched" if cer["kind"] != "reshare" or party in members else "retired"
            table.add_row(
                str(party),
                role,
                "ok" if done else "-",
                "ok" if done else "-",
                "signed" if done else "-",
                "-" if commit is None else (switched if commit["ok"] else commit["detail"]),
            )
        for party, step in sorted(commits.items()):
            if party in cer["participants"]:
                continue
            table.add_row(
                str(party),
                "old holder (did not deal; told to retire)",
                "-",
                "-",
                "-",
                "retired" if step["ok"] else str(step.get("detail", "not reached")),
            )
        out.print(table)
        err_doc = cer.get("error")
        if err_doc:
            for b in err_doc.get("blamed") or []:
                err.print(f"at fault: party {b['party_id']} ({b['node_id']}): {b['reason']}")
    if cer["status"] == "committing":
        err.print(f"not every node switched yet: `custody ceremony resume {cer['id']}`")
        raise typer.Exit(ExitCode.PENDING)


def committee_of(tr: dict[str, Any]) -> list[str]:
    return [str(n) for n in tr.get("committee") or []]


def open_officers(
    cluster: Path | None, keys: list[Path] | None, passphrase_file: Path | None
) -> list[tuple[str, Any]]:
    """(officer id, signing key) of each officer key file given, or of the dev officers
    the cluster file names (``custody up``)."""
    pass_path = passphrase_file
    if not keys:
        doc = read_cluster_file(cluster or DEFAULT_DIR / "cluster.json")
        dev = doc.get("dev_governance") or {}
        keys = [Path(p) for p in dev.get("officers") or []]
        if not keys:
            raise CliError(
                "no officer key files: pass --officer-key (repeat up to the quorum) or "
                "--authorization FILE",
                ExitCode.REFUSED,
            )
        pass_path = pass_path or Path(dev["officer_passphrase_file"])
    if pass_path is not None:
        passphrase = pass_path.read_bytes().rstrip(b"\r\n")
    elif os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    else:
        passphrase = str(typer.prompt("officer key passphrase", hide_input=True)).encode()
    out_keys = []
    for f in keys:
        try:
            officer, signer = gov.open_officer_key(f.read_bytes(), passphrase)
        except (OSError, gov.OfficerKeyError) as e:
            raise CliError(f"{f}: {e}", ExitCode.REFUSED) from None
        out_keys.append((officer.officer_id, signer))
    return out_keys


def authorization_body(
    c: CustodyClient,
    kind: str,
    key_id: str,
    committee: list[str] | None,
    threshold: int | None,
    *,
    lower_threshold: bool = False,
    lifetime: int = AUTH_LIFETIME,
) -> tuple[gov.CeremonyAuthorization, gov.Governance]:
    """The unsigned authorization of a ``kind`` ceremony on ``key_id``, made from the key
    and the coordinator's governance (returned too: its quorum decides who must sign)."""
    key = c.get_key(key_id)
    version = int(_call(c, "GET", f"/v1/keys/{_seg(key_id)}/ceremonies")["share_version"])
    current = gov.decode(bytes.fromhex(_call(c, "GET", "/v1/governance")["document"])).body
    now = int(time.time())
    try:
        body = gov.CeremonyAuthorization(
            cluster_id=current.cluster_id,
            ceremony_id="cer_" + secrets.token_hex(12),
            kind=kind,
            key_id=key.id,
            scheme=key.scheme,
            public_key=bytes.fromhex(key.public_key or ""),
            share_version=version,
            committee=tuple(sorted(committee if committee is not None else key.nodes)),
            threshold=threshold if threshold is not None else key.threshold,
            previous_threshold=key.threshold,
            lower_threshold=lower_threshold,
            issued_at=now,
            expires_at=now + lifetime,
        )
        body.encode()
    except gov.CeremonyAuthError as e:
        raise CliError(f"{e.kind.value}: {e.detail}", ExitCode.REFUSED) from None
    return body, current


def authorization_for(
    c: CustodyClient,
    kind: str,
    key_id: str,
    committee: list[str] | None,
    threshold: int | None,
    *,
    lower_threshold: bool = False,
    cluster: Path | None = None,
    officer_keys: list[Path] | None = None,
    passphrase_file: Path | None = None,
    lifetime: int = AUTH_LIFETIME,
    signers: list[tuple[str, Any]] | None = None,
) -> str:
    """The hex authorization of a ``kind`` ceremony on ``key_id``, made from the key and
    the coordinator's governance and signed by a quorum of the officers' keys (``signers``:
    officer id and opened signing key, else the key files as the CLI options give them)."""
    body, current = authorization_body(
        c, kind, key_id, committee, threshold, lower_threshold=lower_threshold, lifetime=lifetime
    )
    doc = gov.SignedCeremonyAuthorization(body)
    opened = (
        signers if signers is not None else open_officers(cluster, officer_keys, passphrase_file)
    )
    signers = [(oid, k) for oid, k in opened if current.officer(oid) is not None]
    if len(signers) < current.quorum:
        raise CliError(
            f"{len(signers)} officer keys of governance version {current.version}; its quorum "
            f"is {current.quorum}",
            ExitCode.REFUSED,
        )
    for oid, k in signers[: current.quorum]:
        doc = doc.with_signature(k, oid)
    return doc.encode().hex()


def _read_authorization(path: Path) -> str:
    data = path.read_bytes()
    try:
        return bytes.fromhex(data.decode().strip()).hex()
    except (UnicodeDecodeError, ValueError):
        return data.hex()


def _ceremony(c: CustodyClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return _answer_of(c.http.post(path, json=body, timeout=600))
    except CustodyError as e:
        cid = e.problem.get("ceremony_id")
        if not cid:
            raise
        return _call(c, "GET", f"/v1/ceremonies/{_seg(str(cid))}")


def refresh(
    key_id: Annotated[str, typer.Argument(help="the key's id (key_...)")],
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
    officer_key: OfficerKeyOpt = None,
    passphrase_file: PassFileOpt = None,
    authorization: AuthFileOpt = None,
) -> None:
    """Proactive refresh: same public key, new shares on every node (ECDSA: new base OTs)."""
    require_id(key_id, "key id")
    with connect("admin", cluster, api_url, token) as c:
        with err.status(f"refreshing {key_id}: the officers authorize it"):
            auth = (
                _read_authorization(authorization)
                if authorization is not None
                else authorization_for(
                    c,
                    "refresh",
                    key_id,
                    None,
                    None,
                    cluster=cluster,
                    officer_keys=officer_key,
                    passphrase_file=passphrase_file,
                )
            )
        with err.status(f"refreshing {key_id}: every share holder deals a sharing of zero"):
            cer = _ceremony(c, f"/v1/keys/{_seg(key_id)}/refresh", {"authorization": auth})
    _show(cer, as_json)
    if cer["status"] == "failed":
        raise typer.Exit(ExitCode.FAILED)


def ot_resetup(
    key_id: Annotated[str, typer.Argument(help="the ECDSA key's id (key_...)")],
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
    officer_key: OfficerKeyOpt = None,
    passphrase_file: PassFileOpt = None,
    authorization: AuthFileOpt = None,
) -> None:
    """OT re-setup of an ECDSA key: fresh base OTs for every pair (same public key, new
    shares); re-enables a pair retired after a failed OT-extension check."""
    require_id(key_id, "key id")
    with connect("admin", cluster, api_url, token) as c:
        with err.status(f"OT re-setup of {key_id}: the officers authorize it"):
            auth = (
                _read_authorization(authorization)
                if authorization is not None
                else authorization_for(
                    c,
                    "ot-resetup",
                    key_id,
                    None,
                    None,
                    cluster=cluster,
                    officer_keys=officer_key,
                    passphrase_file=passphrase_file,
                )
            )
        with err.status(
            f"OT re-setup of {key_id}: every share holder refreshes its share, then every pair "
            "runs a fresh base-OT setup"
        ):
            cer = _ceremony(c, f"/v1/keys/{_seg(key_id)}/ot-resetup", {"authorization": auth})
    _show(cer, as_json)
    if cer["status"] == "failed":
        raise typer.Exit(ExitCode.FAILED)


def reshare(
    key_id: Annotated[str, typer.Argument(help="the key's id (key_...)")],
    threshold: Annotated[int, typer.Option("--threshold", help="the new threshold")],
    nodes: Annotated[
        str, typer.Option("--nodes", help="the new committee: node ids, comma-separated")
    ],
    lower_threshold: Annotated[
        bool,
        typer.Option(
            "--lower-threshold",
            help="the new threshold is lower than the key's: say so (it never drops silently)",
        ),
    ] = False,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
    officer_key: OfficerKeyOpt = None,
    passphrase_file: PassFileOpt = None,
    authorization: AuthFileOpt = None,
) -> None:
    """Reshare to a new committee and threshold: same public key, members may overlap,
    departing members delete their shares (ECDSA: base OTs for every new pair)."""
    require_id(key_id, "key id")
    committee = sorted({n.strip() for n in nodes.split(",") if n.strip()})
    for n in committee:
        require_id(n, "node id")
    if len(committee) < 2:
        raise CliError("--nodes: at least two node ids")
    with connect("admin", cluster, api_url, token) as c:
        with err.status(f"resharing {key_id}: the officers authorize it"):
            auth = (
                _read_authorization(authorization)
                if authorization is not None
                else authorization_for(
                    c,
                    "reshare",
                    key_id,
                    committee,
                    threshold,
                    lower_threshold=lower_threshold,
                    cluster=cluster,
                    officer_keys=officer_key,
                    passphrase_file=passphrase_file,
                )
            )
        with err.status(
            f"resharing {key_id} to {threshold}-of-{len(committee)} on {', '.join(committee)}: "
            "holders deal, the new committee verifies and echoes"
        ):
            cer = _ceremony(
                c,
                f"/v1/keys/{_seg(key_id)}/reshare",
                {"threshold": threshold, "nodes": committee, "authorization": auth},
            )
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
    keys_app.command("reshare")(reshare)
    keys_app.command("ot-resetup")(ot_resetup)
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


# -- offline co-signing: custody ceremony authorize create|show|sign -------------------------
authorize_app = typer.Typer(
    no_args_is_help=True,
    help="Officer authorizations signed offline: create the statement, each officer signs "
    "it on their own machine, then pass it to the ceremony with --authorization FILE.",
)
ceremony_app.add_typer(authorize_app, name="authorize")


def _read_signed(path: Path) -> gov.SignedCeremonyAuthorization:
    """The authorization in ``path`` (hex text or CBOR), strictly decoded."""
    try:
        data = bytes.fromhex(_read_authorization(path))
        return gov.decode_ceremony_authorization(data)
    except OSError as e:
        raise CliError(f"{path}: {e.strerror}", ExitCode.REFUSED) from None
    except gov.CeremonyAuthError as e:
        raise CliError(f"{path}: {e.kind.value}: {e.detail}", ExitCode.REFUSED) from None


def _write_signed(path: Path, doc: gov.SignedCeremonyAuthorization) -> None:
    """Hex text (it travels by mail or USB stick; not a secret), replaced atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(doc.encode().hex() + "\n")
    tmp.replace(path)


def _auth_fields(doc: gov.SignedCeremonyAuthorization) -> list[tuple[str, Any]]:
    a = doc.body
    return [
        ("ceremony_id", a.ceremony_id),
        ("kind", a.kind),
        ("cluster_id", a.cluster_id),
        ("key_id", a.key_id),
        ("scheme", a.scheme),
        ("public_key", a.public_key.hex()),
        ("share_version", a.share_version),
        ("committee", ", ".join(a.committee)),
        ("threshold", f"{a.previous_threshold} -> {a.threshold}"),
        ("lower_threshold", a.lower_threshold),
        ("issued_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a.issued_at))),
        ("expires_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a.expires_at))),
        ("digest", a.digest.hex()),
        ("signed_by", ", ".join(s.officer_id for s in doc.signatures) or "-"),
    ]


def _auth_json(doc: gov.SignedCeremonyAuthorization) -> dict[str, Any]:
    return {k: v for k, v in _auth_fields(doc)} | {
        "committee": list(doc.body.committee),
        "threshold": doc.body.threshold,
        "previous_threshold": doc.body.previous_threshold,
        "issued_at": doc.body.issued_at,
        "expires_at": doc.body.expires_at,
        "signed_by": [s.officer_id for s in doc.signatures],
    }


@authorize_app.command("create")
def authorize_create(
    kind: Annotated[str, typer.Argument(help="refresh | reshare | ot-resetup")],
    key_id: Annotated[str, typer.Argument(help="the key's id (key_...)")],
    out_file: Annotated[Path, typer.Option("--out", help="where to write the statement")],
    threshold: Annotated[
        int | None, typer.Option("--threshold", help="reshare: the new threshold")
    ] = None,
    nodes: Annotated[
        str | None, typer.Option("--nodes", help="reshare: the new committee, comma-separated")
    ] = None,
    lower_threshold: Annotated[
        bool, typer.Option("--lower-threshold", help="reshare: the threshold drops, say so")
    ] = False,
    lifetime: Annotated[
        int,
        typer.Option(
            "--lifetime", help="seconds until it expires (enough for every officer to sign)"
        ),
    ] = 3600,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the UNSIGNED authorization of a ceremony to a file, from the key and the
    coordinator's governance; each officer then signs it (`custody ceremony authorize sign`)."""
    require_id(key_id, "key id")
    if kind not in ("refresh", "reshare", "ot-resetup"):
        raise CliError(f"kind: refresh, reshare or ot-resetup, not {kind!r}")
    committee = None
    if kind == "reshare":
        if threshold is None or nodes is None:
            raise CliError("a reshare names --threshold and --nodes")
        committee = sorted({n.strip() for n in nodes.split(",") if n.strip()})
        for n in committee:
            require_id(n, "node id")
    elif threshold is not None or nodes is not None or lower_threshold:
        raise CliError(f"a {kind} keeps the key's committee and threshold")
    if out_file.exists():
        raise CliError(f"{out_file} exists: a new authorization gets a new file")
    with connect("auditor", cluster, api_url, token) as c:
        body, current = authorization_body(
            c, kind, key_id, committee, threshold,
            lower_threshold=lower_threshold, lifetime=lifetime,
        )  # fmt: skip
    doc = gov.SignedCeremonyAuthorization(body)
    _write_signed(out_file, doc)
    if as_json:
        print_json({**_auth_json(doc), "quorum": current.quorum, "file": str(out_file)})
        return
    print_fields(_auth_fields(doc))
    err.print(
        f"wrote {out_file}: {current.quorum} officers of governance version "
        f"{current.version} sign it (`custody ceremony authorize sign {out_file} --key K`)",
        markup=False,
    )


@authorize_app.command("show")
def authorize_show(
    file: Annotated[Path, typer.Argument(help="the authorization file")],
    as_json: JsonOpt = False,
) -> None:
    """What an authorization says and who signed it (offline; nodes verify the rest)."""
    doc = _read_signed(file)
    if as_json:
        print_json(_auth_json(doc))
    else:
        print_fields(_auth_fields(doc))


@authorize_app.command("sign")
def authorize_sign(
    file: Annotated[Path, typer.Argument(help="the authorization file (signed in place)")],
    key: Annotated[Path, typer.Option("--key", help="your officer key file")],
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add your officer signature to an authorization, offline: no network, your own key
    file; read what it authorizes first (printed here, or `authorize show`)."""
    doc = _read_signed(file)
    if time.time() >= doc.body.expires_at:
        raise CliError(
            f"ceremony-authorization-expired: {doc.body.ceremony_id} expired; create a new one",
            ExitCode.REFUSED,
        )
    ((officer_id, signer),) = open_officers(None, [key], passphrase_file)
    doc = doc.with_signature(signer, officer_id)
    _write_signed(file, doc)
    if as_json:
        print_json(_auth_json(doc))
        return
    print_fields(_auth_fields(doc))
    err.print(f"{officer_id} signed {file}", markup=False)
