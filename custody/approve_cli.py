"""``custody approve`` and ``custody reject``: an approver's decision, never a blind one.

    custody approve ID --key-file F [--passphrase-file P] [--ttl SECONDS] [--yes]
                       [--governance DOC] [--cluster C]
    custody reject  ID --key-file F [...]

The command fetches the sign request, **decodes its payload here**
(:func:`custody.approvals.request_intent`, the function every node runs) and refuses when
the coordinator's intent digest or summary differs from what the payload says: whatever
the coordinator claims, the approver signs the digest of the intent they were shown, in
plain words (amounts with the asset's decimals, destination, chain, fee, data, initiator,
policy version, what is still required). With ``--governance DOC`` (the approver's own
copy of the governance version) it also checks the policy version and governance digest
the coordinator names, and evaluates the policy itself. After a confirmation (or
``--yes``) it signs an :class:`custody.approvals.ApprovalStatement` with the approver's own key file
(``custody approver enroll``; passphrase from ``--passphrase-file``,
``$CUSTODY_APPROVER_PASSPHRASE`` or a prompt) and posts it.

Commands read ``cluster.json`` for the URL and the ``approver`` credential (``--cluster``,
``$CUSTODY_CLUSTER``, default ``.custody/cluster.json``), or ``--api-url`` and ``--token``.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from custody import approvals as ap
from custody import governance as gov
from custody import policy as pol
from custody.cli_support import ApiOpt, ClusterOpt, TokenOpt, connect
from custody.client import CustodyClient, CustodyError
from custody.exitcodes import ExitCode, for_status
from custody.kinds import Intent
from custody.kinds.btc import BtcPsbt
from custody.kinds.evm import EvmTx
from custody.kinds.iso20022 import Pacs008
from custody.kinds.message import Message
from custody.models import ApprovalRequirement, GroupQuorumOut, SignRequestOut
from custody.signing import SignRequestError, child_public_key

__all__ = ["approve", "reject", "describe", "format_units", "check_against"]

console = Console()
err = Console(stderr=True)
PASSPHRASE_ENV = "CUSTODY_APPROVER_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
DEFAULT_TTL = 3600
CHAINS = {
    1: "Ethereum mainnet",
    10: "OP Mainnet",
    56: "BNB Smart Chain",
    137: "Polygon",
    8453: "Base",
    42161: "Arbitrum One",
    17000: "Holesky testnet",
    11155111: "Sepolia testnet",
    1337: "local dev chain",
    31337: "local dev chain",
}

KeyFileOpt = Annotated[
    Path, typer.Option("--key-file", help="your approver key file (custody approver enroll)")
]
PassphraseOpt = Annotated[
    Path | None, typer.Option("--passphrase-file", help="read the key file's passphrase here")
]
TtlOpt = Annotated[
    int, typer.Option("--ttl", min=60, max=7 * 86400, help="seconds the approval counts")
]
YesOpt = Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")]
GovernanceOpt = Annotated[
    Path | None,
    typer.Option(
        "--governance",
        help="the governance version you hold (canonical CBOR, as the officers signed it): "
        "its digest must be the one you approve under, and its policy must ask for approvals",
    ),
]


class Mismatch(Exception):
    """The coordinator's view of the request is not what its payload decodes to."""


def format_units(amount: int, decimals: int) -> str:
    """``amount`` base units as a decimal number of whole units, exactly (no float)."""
    whole, frac = divmod(amount, 10**decimals)
    text = f"{whole:,}"
    if frac:
        text += "." + str(frac).rjust(decimals, "0").rstrip("0")
    return text


def local_request(sr: SignRequestOut, network: str | None = None) -> dict[str, Any]:
    """The request body as the nodes get it, rebuilt from the API's answer (the members the
    message and the intent depend on). A ``btc-psbt`` request decodes on its key's network,
    which the key (not the request) names: pass ``network`` from the key."""
    body: dict[str, Any] = {"id": sr.id, "key_id": sr.key_id, "kind": sr.kind}
    if sr.kind == "btc-psbt" and network is not None:
        body["network"] = network
    if sr.payload is not None:
        body["payload"] = sr.payload
    if sr.message:
        body["message"] = sr.message
    if sr.derivation_path is not None:  # signed under the key's child there (issue 13)
        body["derivation_path"] = sr.derivation_path
    return body


def check_against(
    sr: SignRequestOut,
    scheme: str,
    public_key: bytes | None = None,
    network: str | None = None,
) -> tuple[Intent | str, ap.ApprovalRequest]:
    """Decode the request here and compare with the coordinator's claims; raises
    :class:`Mismatch` naming what differs."""
    if sr.approval is None or sr.status != "pending_approval":
        raise Mismatch(f"request {sr.id} is {sr.status}: it does not wait for approvals")
    try:
        intent, request = ap.request_intent(
            scheme, local_request(sr, network), public_key=public_key
        )
    except SignRequestError as exc:
        raise Mismatch(f"the request does not decode: {exc}") from None
    summary = intent.summary() if not isinstance(intent, str) else {"message": sr.message}
    if request.intent_digest.hex() != sr.approval.intent_digest:
        raise Mismatch(
            "the coordinator's intent digest "
            f"{sr.approval.intent_digest[:16]}... is not the payload's "
            f"{request.intent_digest.hex()[:16]}...: it shows another request than it asks "
            "you to approve"
        )
    if summary != sr.approval.summary or sr.approval.kind != sr.kind:
        raise Mismatch("the coordinator's summary differs from what the payload decodes to")
    if sr.initiator is None or sr.initiator != sr.approval.initiator:
        raise Mismatch("the coordinator names two different initiators")
    return intent, request


def check_governance(sr: SignRequestOut, intent: Intent | str, path: Path) -> None:
    """With the approver's own copy of the governance version: the coordinator's policy
    version and governance digest must be that document's, and its policy, evaluated
    here, must ask for approvals of this request (raises :class:`Mismatch`)."""
    a = sr.approval
    assert a is not None
    try:
        body = gov.decode(path.read_bytes()).body
    except (OSError, gov.GovernanceError) as exc:
        raise Mismatch(f"{path}: not a governance document ({exc})") from None
    if body.version != a.policy_version or body.digest.hex() != a.governance_digest:
        raise Mismatch(
            f"the coordinator asks for approvals under governance version {a.policy_version} "
            f"({a.governance_digest[:16]}...), your document is version {body.version} "
            f"({body.digest.hex()[:16]}...)"
        )
    decision = pol.decide(
        body, intent, key_id=sr.key_id, initiator=a.initiator, now=int(time.time())
    )
    if decision.action != "approve" or decision.rule_id != a.decision.rule_id:
        raise Mismatch(
            f"under your governance document the policy says {decision.action} "
            f"({decision.rule_id}), not approve ({a.decision.rule_id})"
        )


def _eth(wei: int) -> str:
    return f"{format_units(wei, 18)} ETH"


def describe(intent: Intent | str, sr: SignRequestOut) -> list[tuple[str, str]]:
    """The request in plain words, one ``(label, text)`` per line."""
    lines: list[tuple[str, str]] = []
    if isinstance(intent, EvmTx):
        chain = CHAINS.get(intent.chain_id, "unknown chain")
        if intent.erc20 is not None:
            e = intent.erc20
            verb = "transfer" if e.method == "transfer" else "allow spending of"
            lines.append(("action", f"ERC-20 {verb} {e.amount:,} base units of token {e.token}"))
            lines.append(("recipient" if e.method == "transfer" else "spender", e.recipient))
            lines.append(("token", f"{e.token} (amounts in the token's smallest unit)"))
        else:
            lines.append(("action", f"send {_eth(intent.value)}"))
            lines.append(("destination", intent.to))
        lines.append(("network", f"chain id {intent.chain_id} ({chain})"))
        lines.append(
            (
                "fee",
                f"at most {_eth(intent.max_fee_per_gas * intent.gas_limit)} "
                f"({intent.gas_limit:,} gas at most {format_units(intent.max_fee_per_gas, 9)} "
                f"gwei, tip {format_units(intent.max_priority_fee_per_gas, 9)} gwei)",
            )
        )
        lines.append(("nonce", str(intent.nonce)))
        lines.append(("data", "0x" + intent.data.hex() if intent.data else "none"))
    elif isinstance(intent, BtcPsbt):
        for i, o in enumerate(intent.outputs):
            to = o.address or f"script {o.script.hex()}"
            lines.append((f"output {i}", f"{format_units(o.amount, 8)} BTC to {to}"))
        lines.append(("network", f"Bitcoin {intent.network}"))
        lines.append(("fee", f"{format_units(intent.fee, 8)} BTC"))
        lines.append(("inputs", f"{len(intent.inputs)} (key path, this key)"))
    elif isinstance(intent, Pacs008):
        kind = intent.namespace.rsplit(":", 1)[1]
        lines.append(("action", f"settle {intent.amount} {intent.currency} ({kind}, one transfer)"))
        for label, name, iban, bic in (
            ("creditor", intent.creditor_name, intent.creditor_account, intent.creditor_agent),
            ("debtor", intent.debtor_name, intent.debtor_account, intent.debtor_agent),
        ):
            lines.append((label, f"{name or '(no name)'}, IBAN {iban} at {bic}"))
        lines.append(("message id", f"{intent.message_id}, end-to-end id {intent.end_to_end_id}"))
        lines.append(("UETR", intent.uetr))
        if intent.remittance:  # a net settlement lists the payments it settles here
            lines.append(("remittance", ", ".join(intent.remittance)))
        lines.append(
            ("signs", f"an XML signature (EdDSA-Ed25519) over SHA-256 {intent.digest.hex()}")
        )
    elif isinstance(intent, Message):
        what = repr(intent.text) if intent.text is not None else "0x" + intent.message.hex()
        lines.append(("action", f"sign a message ({intent.standard}), {intent.scheme}"))
        lines.append(("message", what))
    elif intent == "raw":
        lines.append(("action", "sign raw bytes (no decoder can say what they do)"))
        lines.append(("bytes", sr.message))
    else:
        lines.append(("action", f"sign a {sr.kind} request"))
        lines.append(("payload", json.dumps(sr.payload, sort_keys=True)))
    return lines


def _requirement(req: ApprovalRequirement | None) -> str:
    if req is None:
        return "none"
    joiner = " AND " if req.op == "all" else " OR "
    parts = [
        f"{t.m} of {t.group}" if isinstance(t, GroupQuorumOut) else f"({_requirement(t)})"
        for t in req.terms
    ]
    return joiner.join(parts)


def show(
    intent: Intent | str, sr: SignRequestOut, scheme: str, decision: str, address: str = ""
) -> None:
    a = sr.approval
    assert a is not None
    t = Table(show_header=False, title=f"{decision.upper()} sign request {sr.id}?")
    for label, text in describe(intent, sr):
        t.add_row(label, text)
    t.add_row("key", f"{sr.key_id} ({scheme}{', ' + address if address else ''})")
    t.add_row("initiator", a.initiator)
    t.add_row(
        "policy",
        f"version {a.policy_version} (governance {a.governance_digest[:16]}...), rule "
        f"{a.decision.rule_id}",
    )
    sizes = {g.group: g.n for g in a.groups}
    t.add_row("requires", _requirement(a.requirement) + _of_n(sizes))
    missing = ", ".join(f"{s.needed} more from {s.group}" for s in a.missing) or "nothing"
    t.add_row("still required", missing)
    so_far = ", ".join(f"{x.approver_id} ({x.decision})" for x in a.approvals) or "none"
    t.add_row("approvals so far", so_far)
    t.add_row("intent digest", a.intent_digest + " (recomputed here from the payload)")
    console.print(t)


def _of_n(sizes: dict[str, int]) -> str:
    return "".join(f"; {g} has {n} approvers" for g, n in sorted(sizes.items()))


def _client(cluster: Path | None, api_url: str | None, token: str | None) -> CustodyClient:
    """The coordinator with the ``approver`` credential (``custody.cli_support.connect``)."""
    return connect("approver", cluster, api_url, token)


def _passphrase(path: Path | None) -> bytes:
    if path is not None:
        return path.read_bytes().rstrip(b"\r\n")
    if PASSPHRASE_ENV in os.environ:
        return os.environ[PASSPHRASE_ENV].encode()
    return str(typer.prompt("approver key passphrase", hide_input=True)).encode()


def _decide(
    decision: Literal["approve", "reject"],
    request_id: str,
    key_file: Path,
    passphrase_file: Path | None,
    ttl: int,
    yes: bool,
    governance: Path | None,
    cluster: Path | None,
    api_url: str | None,
    token: str | None,
) -> None:
    try:
        blob = key_file.read_bytes()
        gov.read_approver_public(blob)  # an approver key file, before asking anything
    except (OSError, gov.KeyFileError) as exc:
        err.print(f"[red]{key_file}[/red]: {exc}")
        raise typer.Exit(ExitCode.USAGE) from None
    with _client(cluster, api_url, token) as c:
        try:
            sr = c.get_sign_request(request_id)
            key = c.get_key(sr.key_id)
            scheme = key.scheme
        except CustodyError as e:
            err.print(f"[red]{e.status}[/red] {e.problem.get('detail', e.problem.get('title'))}")
            raise typer.Exit(for_status(e.status)) from None
        try:
            public_key = bytes.fromhex(key.public_key) if key.public_key else None
            if public_key is not None and sr.derivation_path is not None:
                # derived here from the key's public values, not taken from the coordinator
                try:
                    public_key = child_public_key(
                        scheme,
                        key.id,
                        public_key,
                        key.verifying_shares or {},
                        key.threshold,
                        local_request(sr, key.network),
                    )
                except SignRequestError as exc:
                    raise Mismatch(f"cannot derive the child key: {exc}") from None
            intent, request = check_against(sr, scheme, public_key, key.network)
            if governance is not None:
                check_governance(sr, intent, governance)
        except Mismatch as exc:
            err.print(f"[red]refused, nothing signed:[/red] {exc}")
            raise typer.Exit(ExitCode.REFUSED) from None
        address = next(iter(key.addresses.values()), "")
        if sr.derivation_path is not None:
            address = f"child {sr.derivation_path} of {address or key.id}"
        show(intent, sr, scheme, decision, address)
        if not yes and not typer.confirm(f"{decision} this request?", default=False):
            err.print("nothing signed")
            raise typer.Exit(ExitCode.ABORTED)
        try:
            approver, signer = gov.open_approver_key(blob, _passphrase(passphrase_file))
        except gov.KeyFileError as exc:
            err.print(f"[red]{key_file}[/red]: {exc}")
            raise typer.Exit(ExitCode.USAGE) from None
        a = sr.approval
        assert a is not None
        statement = ap.ApprovalStatement(
            intent_digest=request.intent_digest,
            request_id=request.request_id,
            policy_version=a.policy_version,
            governance_digest=bytes.fromhex(a.governance_digest),
            expires_at=int(time.time()) + ttl,
            approver_id=approver.approver_id,
            decision=decision,
            initiator=a.initiator,
        )
        wire = ap.sign_approval(signer, statement).encode()
        post = c.approve if decision == "approve" else c.reject
        try:
            out = post(request_id, base64.b64encode(wire).decode())
        except CustodyError as e:
            err.print(
                f"[red]{e.status} {e.type.rsplit(':', 1)[-1]}[/red] {e.problem.get('detail')}"
            )
            raise typer.Exit(for_status(e.status)) from None
    left = out.approval.missing if out.approval is not None else []
    tail = ", ".join(f"{s.needed} more from {s.group}" for s in left)
    console.print(
        f"{decision.rstrip('e')}ed as {approver.approver_id}: request {out.id} is {out.status}"
        + (f" (still required: {tail})" if tail else "")
    )


def approve(
    request_id: Annotated[str, typer.Argument(help="the sign request's id")],
    key_file: KeyFileOpt,
    passphrase_file: PassphraseOpt = None,
    ttl: TtlOpt = DEFAULT_TTL,
    yes: YesOpt = False,
    governance: GovernanceOpt = None,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Decode a pending sign request here, show it in plain words, and approve it with
    your approver key (refused if the coordinator's view differs from the payload)."""
    _decide(
        "approve",
        request_id,
        key_file,
        passphrase_file,
        ttl,
        yes,
        governance,
        cluster,
        api_url,
        token,
    )


def reject(
    request_id: Annotated[str, typer.Argument(help="the sign request's id")],
    key_file: KeyFileOpt,
    passphrase_file: PassphraseOpt = None,
    ttl: TtlOpt = DEFAULT_TTL,
    yes: YesOpt = False,
    governance: GovernanceOpt = None,
    cluster: ClusterOpt = None,
    api_url: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Decode a pending sign request here, show it, and reject it with your approver key
    (one rejection from a required group rejects the request)."""
    _decide(
        "reject",
        request_id,
        key_file,
        passphrase_file,
        ttl,
        yes,
        governance,
        cluster,
        api_url,
        token,
    )
