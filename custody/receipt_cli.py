"""``custody receipt verify``: check an authorization receipt offline (issue 10, item 6).

    custody receipt verify FILE --governance GOV [--governance GOV ...] [--threshold N]
                                [--public-key HEX] [--json]

``FILE`` is a receipt's JSON (``custody.receipts``). ``--governance`` names the governance
documents: the whole chain from the genesis (each version is verified as a node verifies
it, and the version the receipt names is used), or a single document (checked against its
own officer quorum only: pass the chain for the full check). Exit 0 when the receipt
verifies, 4 (refused, with the stable refusal code) when it does not.

    custody receipt get ID [--out FILE] [--cluster ...]

fetches a signed request's receipt from the coordinator (``GET
/v1/sign-requests/{id}/receipt``) and writes it as JSON (to ``--out`` or stdout).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from custody import governance as gov
from custody import receipts
from custody.cli_support import ApiOpt, ClusterOpt, TokenOpt, connect, require_id
from custody.exitcodes import ExitCode

receipt_app = typer.Typer(no_args_is_help=True, help="Authorization receipts of signed requests.")
console = Console()
err = Console(stderr=True)


def _fail(code: str, detail: str, as_json: bool) -> typer.Exit:
    if as_json:
        console.print_json(json.dumps({"ok": False, "code": code, "detail": detail}))
    else:
        err.print(f"[red]refused ({code})[/red]: {detail}")
    return typer.Exit(ExitCode.REFUSED)


def _versions(paths: list[Path]) -> tuple[list[gov.Governance], bool]:
    """Every version given, verified; whether they chain from the genesis."""
    docs = [gov.decode(p.read_bytes()) for p in paths]
    if docs[0].body.version == 1:
        state = gov.GovernanceState.from_genesis(docs[0])
        out = [state.current]
        for d in docs[1:]:
            out.append(state.advance(d))
        return out, True
    if len(docs) > 1:
        raise gov.GovernanceError(
            gov.GovernanceErrorKind.UNCHAINED, "a chain of documents starts at the genesis"
        )
    body = docs[0].body
    good = gov.valid_signers(docs[0], body.officers)
    if len(good) < body.quorum:
        raise gov.GovernanceError(
            gov.GovernanceErrorKind.UNDER_SIGNED,
            f"version {body.version} has {len(good)} valid signatures of its officers, "
            f"needs {body.quorum}",
        )
    return [body], False


@receipt_app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="the receipt (JSON)")],
    governance: Annotated[
        list[Path],
        typer.Option("--governance", help="governance documents: the chain from the genesis"),
    ],
    threshold: Annotated[
        int | None,
        typer.Option("--threshold", help="attesting nodes needed (default: the signer set)"),
    ] = None,
    public_key: Annotated[
        str | None, typer.Option("--public-key", help="the key's public key, hex, as you know it")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Check a receipt against the governance: node signatures, signer set, signature."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _fail("receipt-malformed", f"{path}: not a JSON file ({exc})", as_json) from exc
    try:
        versions, chained = _versions(governance)
    except (OSError, gov.GovernanceError) as exc:
        code = getattr(getattr(exc, "kind", None), "value", "governance-unreadable")
        raise _fail(code, str(exc), as_json) from exc
    try:
        receipt = receipts.parse_receipt(raw)
        named = receipts.decode_body(receipt.body).policy_version
        doc = next((g for g in versions if g.version == named), versions[-1])
        pk = None if public_key is None else bytes.fromhex(public_key)
        ok = receipts.verify_receipt(receipt, doc, threshold=threshold, public_key=pk)
    except receipts.ReceiptError as exc:
        raise _fail(exc.code, exc.detail, as_json) from exc
    except ValueError as exc:  # --public-key not hex
        raise _fail("receipt-malformed", f"--public-key: {exc}", as_json) from exc
    out: dict[str, Any] = {
        "ok": True,
        "body": ok.body.to_json(),
        "nodes": list(ok.nodes),
        "signature_checked": ok.signature_checked,
        "governance_chained": chained,
    }
    if as_json:
        console.print_json(json.dumps(out))
        return
    b = ok.body
    approvals = ", ".join(a for a, _ in b.approvals) or "none needed"
    console.print(
        f"receipt verifies: request {b.request_id} ({b.kind}) on key {b.key_id}, rule "
        f"{b.rule} of policy version {b.policy_version}, approvals: {approvals}; attested by "
        f"{', '.join(ok.nodes)}"
        + ("; signature verifies" if ok.signature_checked else "; no signature included")
        + ("" if chained else " (governance checked against its own officers only)")
    )


@receipt_app.command("get")
def get(
    request_id: Annotated[str, typer.Argument(help="the signed request's id")],
    out: Annotated[
        Path | None, typer.Option("--out", help="write the receipt here [default: stdout]")
    ] = None,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Fetch a signed request's receipt (JSON), to check with ``custody receipt verify``."""
    require_id(request_id, "request id")
    with connect("auditor", cluster, api_url, token) as c:
        doc = c.get_receipt(request_id).model_dump(mode="json", exclude_none=True)
    text = json.dumps(doc, indent=1)
    if out is None:
        print(text)
        return
    out.write_text(text + "\n")
    err.print(f"receipt of {request_id} written to {out}", markup=False, soft_wrap=True)
