"""``custody pay ...``: the payment service's commands, over its HTTP API only.

``custody`` never imports ``payments``: these commands speak HTTP to the service
(``python -m payments``) found in the cluster file's ``payments`` member
(``{"url": ..., "token": ...}``, written once ``custody up`` starts the service) or given
with ``--payments-url`` and ``--payments-token`` (``CUSTODY_PAYMENTS_URL``,
``CUSTODY_PAYMENTS_TOKEN``). Exit codes are :mod:`custody.exitcodes`' (a problem document's
status maps through :func:`~custody.exitcodes.for_status`); every read command has
``--json``.

``import`` sends a pain.001.001.09 file to the service (a refused file: every problem
with its line and field, exit 2); ``settle --out DIR`` writes each signed pacs.008 file
the window released; ``confirm-settlement`` records the counterparty's confirmation;
``verify-settlement`` is what a receiving bank runs on a file: no service needed, only
the public key it trusts (``--public-key``, or ``--key-id`` looked up on the cluster) and
the pacs.008.001.08 XSD (custody's packaged copy, or ``--schema``).
"""

from __future__ import annotations

import importlib.resources
import json
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from custody import xmldsig
from custody.cli_support import (
    DEFAULT_DIR,
    CliError,
    ClusterFileError,
    ClusterOpt,
    IdemOpt,
    JsonOpt,
    connect,
    handled,
    out,
    print_fields,
    print_json,
    print_rows,
    problem_lines,
    read_cluster_file,
    require_id,
)
from custody.exitcodes import ExitCode, for_status

pay_app = typer.Typer(
    help="payments: create, list, cancel, settle and reconcile (the payment service)",
    no_args_is_help=True,
)

PayUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--payments-url",
        envvar="CUSTODY_PAYMENTS_URL",
        help="payment service URL (instead of --cluster)",
    ),
]
PayTokenOpt = Annotated[
    str | None,
    typer.Option(
        "--payments-token",
        envvar="CUSTODY_PAYMENTS_TOKEN",
        help="bearer token of the payment service",
    ),
]


def packaged_schema() -> Path:
    """custody's own copy of the pacs.008.001.08 XSD (package data: custody never imports
    payments, which ships the same file for its builder)."""
    return Path(str(importlib.resources.files("custody") / "schemas" / "pacs.008.001.08.xsd"))


class PayClient:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise CliError(
                f"payment service {self.url} unreachable: {exc}", ExitCode.UNREACHABLE
            ) from None
        if r.status_code >= 400:
            try:
                problem = r.json()
            except ValueError:
                problem = {"title": r.reason_phrase, "detail": r.text[:200]}
            raise CliError(
                "\n".join(problem_lines(r.status_code, problem)), for_status(r.status_code)
            )
        return r


def connect_pay(cluster: Path | None, url: str | None, token: str | None) -> PayClient:
    if url is not None and not url.startswith(("http://", "https://")):
        raise CliError(f"--payments-url {url!r}: not an http:// or https:// URL")
    if url and token:
        return PayClient(url, token)
    path = cluster or DEFAULT_DIR / "cluster.json"
    doc = read_cluster_file(path)
    pay = doc.get("payments")
    if (
        not isinstance(pay, dict)
        or not isinstance(pay.get("url"), str)
        or not isinstance(pay.get("token"), str)
    ):
        raise ClusterFileError(
            path, 'no "payments" member (the payment service is not started by this cluster)',
            "pass --payments-url and --payments-token",
        )  # fmt: skip
    return PayClient(url or pay["url"], token or pay["token"])


def _amount(p: dict[str, Any]) -> str:
    return f"{p['amount']} {p['asset']}"


def _show_payment(p: dict[str, Any]) -> None:
    print_fields(
        [("id", p["id"]), ("status", p["status"]), ("amount", _amount(p) + " (base units)"),
         ("from account", p["account_id"]), ("customer", p["customer"]), ("to", p["destination"]),
         ("rail", p["rail"]), ("end-to-end id", p["end_to_end_id"]),
         ("risk score", p["risk_score"]),
         ("sign request", p["sign_request_id"]), ("rail ref", p["rail_ref"]),
         ("settlement", p["settlement_id"]), ("updated", p["updated_at"])]
    )  # fmt: skip
    for r in p["reasons"]:
        out.print(f"  reason: {r}", markup=False)


@pay_app.command("create")
def create(
    account: Annotated[str, typer.Option("--account", help="the paying customer account id")],
    amount: Annotated[
        int, typer.Option("--amount", min=1, help="base units of the account's asset")
    ],
    to: Annotated[
        str, typer.Option("--to", help="destination (book: an account id; chains: an address)")
    ],
    rail: Annotated[str, typer.Option("--rail", help="book | evm | btc | iso20022")] = "book",
    end_to_end_id: Annotated[
        str | None,
        typer.Option("--end-to-end-id", help="the end-to-end id the payer gave (ISO 20022)"),
    ] = None,
    idempotency_key: IdemOpt = None,
    cluster: ClusterOpt = None,
    payments_url: PayUrlOpt = None,
    payments_token: PayTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a payment: it is authorized (funds reserved) or declined with its reasons."""
    with handled(json_problem=as_json):
        c = connect_pay(cluster, payments_url, payments_token)
        body = {
            "account_id": require_id(account, "account id"),
            "amount": amount,
            "destination": to,
            "rail": rail,
        }
        if end_to_end_id:
            body["end_to_end_id"] = end_to_end_id
        p = c.call(
            "POST",
            "/v1/payments",
            json=body,
            headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
        )
        if as_json:
            print_json(p)
        else:
            _show_payment(p)
        if p["status"] == "declined":
            raise typer.Exit(ExitCode.REFUSED)


@pay_app.command("list")
def list_(
    status: Annotated[
        str | None, typer.Option("--status", help="only payments in this status")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="at most this many payments")
    ] = 100,
    cluster: ClusterOpt = None,
    payments_url: PayUrlOpt = None,
    payments_token: PayTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List payments, oldest first (every page, up to --limit)."""
    with handled(json_problem=as_json):
        c = connect_pay(cluster, payments_url, payments_token)
        items: list[dict[str, Any]] = []
        cursor = None
        while len(items) < limit:
            params: dict[str, Any] = {"limit": min(200, limit - len(items))}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = c.call("GET", "/v1/payments", params=params)
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        if as_json:
            print_json({"items": items})
            return
        print_rows(
            ["id", "status", "amount", "rail", "to", "risk"],
            [
                [p["id"], p["status"], _amount(p), p["rail"], p["destination"], p["risk_score"]]
                for p in items
            ],
            long=["to"],
        )


@pay_app.command("show")
def show(
    payment_id: Annotated[str, typer.Argument(help="pay_...")],
    events: Annotated[
        bool, typer.Option("--events", help="also list the payment's events")
    ] = False,
    cluster: ClusterOpt = None,
    payments_url: PayUrlOpt = None,
    payments_token: PayTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One payment (with --events, its event history)."""
    with handled(json_problem=as_json):
        c = connect_pay(cluster, payments_url, payments_token)
        pid = require_id(payment_id, "payment id")
        p = c.call("GET", f"/v1/payments/{pid}")
        evs = c.call("GET", f"/v1/payments/{pid}/events") if events else None
        if as_json:
            print_json({**p, "events": evs} if events else p)
            return
        _show_payment(p)
        if evs:
            print_rows(["seq", "event", "at"], [[e["seq"], e["type"], e["at"]] for e in evs])


@pay_app.command("cancel")
def cancel(
    payment_id: Annotated[str, typer.Argument(help="pay_...")],
    reason: Annotated[
        str, typer.Option("--reason", help="why, kept in the payment's reasons")
    ] = "cancelled by the operator",
    cluster: ClusterOpt = None,
    payments_url: PayUrlOpt = None,
    payments_token: PayTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a payment not yet signed (its reserved funds are released)."""
    with handled(json_problem=as_json):
        c = connect_pay(cluster, payments_url, payments_token)
        p = c.call(
            "POST",
            f"/v1/payments/{require_id(payment_id, 'payment id')}/cancel",
            json={"reason": reason},
        )
        if as_json:
            print_json(p)
        else:
            _show_payment(p)


@pay_app.command("settle")
def settle(
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="write the signed pacs.008 files here")
    ] = None,
    cluster: ClusterOpt = None,
    payments_url: PayUrlOpt = None,
    payments_token: PayTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Close a settlement window: confirmed payments netted per counterparty and asset, and
    payments to other banks netted per bank into one signed pacs.008 each (with --out,
    each released file written there as <settlement id>.xml). Exit 8 while a pacs.008
    waits for approvals: run it again once they are given."""
    with handled(json_problem=as_json):
        c = connect_pay(cluster, payments_url, payments_token)
        if out_dir is not None:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CliError(f"--out {out_dir}: cannot be created ({exc.strerror})") from None
        doc = c.call("POST", "/v1/settlements")
        for m in doc.get("messages", []):
            if out_dir is not None and m["status"] == "sent":
                path = out_dir / f"{m['id']}.xml"
                data = c.request("GET", f"/v1/settlements/{m['id']}/file").content
                part = path.with_suffix(".xml.part")  # never a half-written file under its name
                part.write_bytes(data)
                part.replace(path)
                m["file"] = str(path)
        if as_json:
            print_json(doc)
        elif not doc["items"] and not doc.get("messages"):
            out.print("no confirmed payments to settle and no payments to other banks waiting")
        else:
            if doc["items"]:
                print_rows(
                    ["id", "counterparty", "net", "payments", "status"],
                    [
                        [
                            s["id"],
                            s["counterparty"],
                            f"{s['net_amount']} {s['asset']}",
                            s["payment_count"],
                            s["status"],
                        ]
                        for s in doc["items"]
                    ],
                )
            if doc.get("messages"):
                print_rows(
                    ["pacs.008", "bank", "net", "payments", "status", "detail"],
                    [
                        [
                            m["id"],
                            m["counterparty"],
                            f"{m['net_amount']} {m['asset']}",
                            m["payment_count"],
                            m["status"],
                            m.get("file")
                            or (
                                f"sign request {m['sign_request_id']}"
                                if m["status"] == "pending_approval"
                                else m["detail"] or ""
                            ),
                        ]
                        for m in doc["messages"]
                    ],  # fmt: skip
                    long=["detail"],
                )
        if any(m["status"] == "pending_approval" for m in doc.get("messages", [])):
            raise typer.Exit(ExitCode.PENDING)


@pay_app.command("confirm-settlement")
def confirm_settlement(
    settlement_id: Annotated[str, typer.Argument(help="stl_...")],
    amount: Annotated[
        int, typer.Option("--amount", min=0, help="what the counterparty booked (base units)")
    ],
    reference: Annotated[
        str, typer.Option("--reference", help="the counterparty's reference for it")
    ],
    cluster: ClusterOpt = None,
    payments_url: PayUrlOpt = None,
    payments_token: PayTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record the counterparty's confirmation of a settlement (an operator, from the
    bank's statement); reconciliation then makes its payments reconciled."""
    with handled(json_problem=as_json):
        c = connect_pay(cluster, payments_url, payments_token)
        sid = require_id(settlement_id, "settlement id")
        doc = c.call(
            "POST",
            f"/v1/settlements/{sid}/confirmations",
            json={"amount": amount, "reference": reference},
        )
        if as_json:
            print_json(doc)
        else:
            print_fields(
                [("id", doc["id"]), ("counterparty", doc["counterparty"]),
                 ("net", f"{doc['net_amount']} {doc['asset']}"), ("status", doc["status"]),
                 ("confirmed", doc["confirmed_amount"]), ("reference", doc["confirmation_ref"])]
            )  # fmt: skip


@pay_app.command("reconcile")
def reconcile(
    cluster: ClusterOpt = None,
    payments_url: PayUrlOpt = None,
    payments_token: PayTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Match the ledger against the rails and the settlement confirmations; breaks as a
    table (exit 6 when there is any)."""
    with handled(json_problem=as_json):
        c = connect_pay(cluster, payments_url, payments_token)
        doc = c.call("POST", "/v1/reconciliations")
        if as_json:
            print_json(doc)
        else:
            out.print(
                f"reconciliation {doc['id']}: {doc['matched']} matched, "
                f"{len(doc['breaks'])} breaks, {len(doc['reconciled'])} payments reconciled",
                markup=False,
            )
            if doc["breaks"]:
                print_rows(
                    ["kind", "source", "payment", "ref", "expected", "actual", "detail"],
                    [
                        [
                            b["kind"],
                            b["source"],
                            b["payment_id"],
                            b["ref"],
                            b["expected_amount"],
                            b["actual_amount"],
                            b["detail"],
                        ]
                        for b in doc["breaks"]
                    ],
                    long=["ref", "detail"],
                )
        if doc["breaks"]:
            raise typer.Exit(ExitCode.FAILED)


@pay_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="a pain.001.001.09 XML file")],
    cluster: ClusterOpt = None,
    payments_url: PayUrlOpt = None,
    payments_token: PayTokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a pain.001.001.09 batch: each transaction becomes a payment (authorized or
    declined with its reasons); importing the same file again creates nothing new. A
    refused file imports nothing: every problem is printed with its line and field."""
    with handled(json_problem=as_json):
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CliError(f"{file}: cannot be read ({exc.strerror})") from None
        c = connect_pay(cluster, payments_url, payments_token)
        doc = c.call(
            "POST",
            "/v1/payments/imports",
            content=data,
            headers={"Content-Type": "application/xml"},
        )
        if as_json:
            print_json(doc)
        else:
            print_rows(
                ["id", "end-to-end id", "status", "amount", "rail", "to"],
                [
                    [
                        p["id"],
                        p["end_to_end_id"],
                        p["status"],
                        _amount(p),
                        p["rail"],
                        p["destination"],
                    ]
                    for p in doc["payments"]
                ],  # fmt: skip
                long=["to"],
            )


@pay_app.command("verify-settlement")
def verify_settlement(
    file: Annotated[Path, typer.Argument(help="a signed pacs.008 file")],
    public_key: Annotated[
        str | None,
        typer.Option("--public-key", help="the sender's Ed25519 public key (64 hex) you trust"),
    ] = None,
    key_id: Annotated[
        str | None,
        typer.Option("--key-id", help="instead: the custody key, its public key from --cluster"),
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option("--schema", help="the pacs.008.001.08 XSD [default: custody's copy]"),
    ] = None,
    cluster: ClusterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a settlement file as a receiving bank: the envelope (no signature wrapping),
    the header, the XML signature's profile, the document's digest, the Ed25519 signature
    (PyNaCl), the header against the document, the XSD. Exit 0 only when every check
    passes; otherwise 6 with the failing check named (2: unreadable input)."""
    with handled(json_problem=as_json):
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CliError(f"{file}: cannot be read ({exc.strerror})") from None
        if (public_key is None) == (key_id is None):
            raise CliError("give the key to verify with: --public-key HEX or --key-id ID")
        if key_id is not None:
            key = connect("requester", cluster, None, None).get_key(require_id(key_id, "key id"))
            if key.scheme != "ed25519" or not key.public_key:
                raise CliError(f"key {key.id} is {key.scheme} {key.status}: no Ed25519 key")
            public_key = key.public_key
        try:
            pk = bytes.fromhex(public_key or "")
        except ValueError:
            pk = b""
        if len(pk) != 32:
            raise CliError("--public-key: 32 bytes of hex (64 characters) expected")
        xsd = schema or packaged_schema()
        if not xsd.is_file():
            raise CliError(f"--schema {xsd}: not found")
        report = xmldsig.verify_settlement(data, pk, schema=xsd)
        if as_json:
            print_json({"file": str(file), **report.as_json()})
        else:
            print_rows(
                ["check", "result", "detail"],
                [[c.name, "ok" if c.ok else "FAILED", c.detail] for c in report.checks],
                long=["detail"],
            )
            if report.valid and report.summary:
                out.print(
                    f"{file}: valid, signed by {pk.hex()}\n"
                    + json.dumps(report.summary, indent=2, default=str),
                    markup=False,
                )
        if not report.valid:
            f = report.failure
            if not as_json:
                raise CliError(f"{file}: INVALID: check {f.name if f else '?'} failed",
                               ExitCode.FAILED)  # fmt: skip
            raise typer.Exit(ExitCode.FAILED)


__all__ = ["pay_app"]
