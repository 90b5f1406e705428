"""``custody demo``: one key per scheme, a signature each, verified by independent libraries;
then the dev cluster's demo policy at work on Ethereum transactions.

Part one signs a ``message`` request with each scheme (the bytes for Ed25519 and BIP-340,
the EIP-191 ``personal_sign`` digest for ECDSA; the demo policy allows messages).
Verifiers: pynacl (libsodium) for Ed25519, coincurve (libsecp256k1) ``PublicKeyXOnly.verify``
for BIP-340 and ``PublicKey.verify`` plus public-key recovery for ECDSA. None of them is our
code, so a table full of "yes" means the threshold signatures are ordinary signatures.

Part two (:func:`policy_flow`): an ETH transfer under the limit to an allowlisted
destination is signed at once; ``raw`` bytes are denied (403); a transfer above the limit
waits in ``pending_approval`` until two dev approvers of the ``treasury`` group, each
decoding the request locally as ``custody approve`` does, sign their approvals; then it is
signed. eth-account recovers the sender of both signed transactions.

Part three (:mod:`custody.demo_payments`), when the cluster runs the payment service (the
cluster ``custody demo`` starts does, as ``custody up --with-payments``): payments over its
HTTP API, from a pain.001 batch to reconciliation with zero breaks.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import coincurve
import httpx
import rlp
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from eth_account import Account
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from rich.console import Console
from rich.table import Table

from custody import approvals as ap
from custody import governance as gov
from custody.approve_cli import check_against, format_units
from custody.cli_support import read_cluster_file
from custody.client import CustodyClient, CustodyError
from custody.cluster import DEMO_ETH_DESTINATIONS, ETH_LIMIT
from custody.demo_payments import payments_flow
from custody.domain import SCHEMES
from custody.exitcodes import ExitCode
from custody.kinds.message import eip191_digest

MESSAGE = b"TP Wallet Custody demo: pay 10.00 EUR to ACME"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
WARM_SIGNATURES = 5


def verify_independently(
    scheme: str, public_key: str, message: bytes, signature: str, recovery_id: int | None
) -> tuple[bool, str]:
    """Verify with a library that is not ours; returns (ok, verifier name)."""
    pk, sig = bytes.fromhex(public_key), bytes.fromhex(signature)
    if scheme == "ed25519":
        try:
            VerifyKey(pk).verify(message, sig)
            return True, "pynacl (libsodium)"
        except BadSignatureError:
            return False, "pynacl (libsodium)"
    if scheme == "bip340":
        return bool(
            coincurve.PublicKeyXOnly(pk).verify(sig, message)
        ), "coincurve PublicKeyXOnly (libsecp256k1)"
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    ok = coincurve.PublicKey(pk).verify(encode_dss_signature(r, s), message, hasher=None)
    if recovery_id is not None:
        rec = coincurve.PublicKey.from_signature_and_message(
            sig + bytes([recovery_id]), message, hasher=None
        )
        ok = ok and rec.format() == pk
    low_s = s <= SECP256K1_N // 2
    return bool(ok and low_s), "coincurve PublicKey + recovery (libsecp256k1)"


def message_for(n: int = 0) -> bytes:
    """The demo message; ``n > 0`` numbers the extra warm ones."""
    return MESSAGE if n == 0 else MESSAGE + b" #%d" % n


def signed_bytes(scheme: str, message: bytes) -> bytes:
    """What a ``message`` request signs: EIP-191 for ECDSA, the bytes otherwise."""
    return eip191_digest(message) if scheme == "ecdsa-secp256k1" else message


def _sign_message(c: CustodyClient, key_id: str, message: bytes) -> Any:
    return c.sign(key_id, kind="message", payload={"message": "0x" + message.hex()})


def sign_and_verify_all(
    c_admin: CustodyClient, c_req: CustodyClient, threshold: int = 2
) -> list[dict[str, Any]]:
    rows = []
    for scheme in SCHEMES:
        key = c_admin.create_key(scheme, threshold)
        if key.status != "active" or key.public_key is None:
            raise RuntimeError(f"{scheme} DKG failed: {key.error}")
        msg = message_for()
        start = time.perf_counter()
        sr = _sign_message(c_req, key.id, msg)
        ms = (time.perf_counter() - start) * 1000
        if sr.status != "signed" or sr.signature is None:
            raise RuntimeError(f"{scheme} signing {sr.status}: {sr.error}")
        ok, by = verify_independently(
            scheme, key.public_key, signed_bytes(scheme, msg), sr.signature, sr.recovery_id
        )
        # The first signature of a new key also waits for the nodes' first nonce batch (and,
        # for ECDSA, a presignature); the warm figure is what a steady client sees.
        warm = []
        for i in range(WARM_SIGNATURES):
            m = message_for(i + 1)
            t0 = time.perf_counter()
            w = _sign_message(c_req, key.id, m)
            warm.append((time.perf_counter() - t0) * 1000)
            ok = (
                ok
                and w.status == "signed"
                and w.signature is not None
                and verify_independently(
                    scheme, key.public_key, signed_bytes(scheme, m), w.signature, w.recovery_id
                )[0]
            )
        rows.append(
            {
                "scheme": scheme,
                "key_id": key.id,
                "public_key": key.public_key,
                "signature": sr.signature,
                "recovery_id": sr.recovery_id,
                "signers": sr.signers,
                "verified": ok,
                "verified_by": by,
                "latency_ms": round(ms, 1),
                "warm_latency_ms": round(statistics.median(warm), 1),
            }
        )
    return rows


def unsigned_tx(value: int, nonce: int, to: str = DEMO_ETH_DESTINATIONS[0]) -> str:
    """An unsigned EIP-1559 transfer on chain 1 (21 000 gas at most 30 gwei)."""
    fields = [1, nonce, 10**9, 30 * 10**9, 21_000, bytes.fromhex(to[2:]), value, b"", []]
    return "0x02" + bytes(rlp.encode(fields)).hex()


def approve_as(
    c_appr: CustodyClient, request_id: str, scheme: str, key_file: Path, passphrase: bytes
) -> Any:
    """What ``custody approve --yes`` does: decode the request here, refuse a coordinator
    whose view differs, sign the approval with the approver's key file, post it."""
    sr = c_appr.get_sign_request(request_id)
    _, request = check_against(sr, scheme)
    approver, signer = gov.open_approver_key(key_file.read_bytes(), passphrase)
    a = sr.approval
    assert a is not None
    statement = ap.ApprovalStatement(
        request.intent_digest,
        request.request_id,
        a.policy_version,
        bytes.fromhex(a.governance_digest),
        int(time.time()) + 600,
        approver.approver_id,
        "approve",
        a.initiator,
    )
    return c_appr.approve(request_id, ap.sign_approval(signer, statement).encode(), wait=True)


def policy_flow(
    c_admin: CustodyClient, c_req: CustodyClient, c_appr: CustodyClient, doc: dict[str, Any]
) -> list[dict[str, Any]]:
    """The demo policy at work on a new ECDSA key (module docstring): one row per step."""
    key = c_admin.create_key("ecdsa-secp256k1", 2)
    if key.status != "active":
        raise RuntimeError(f"ECDSA DKG failed: {key.error}")
    sender = key.addresses["ethereum"]
    rows: list[dict[str, Any]] = []

    def signed_by_key(sr: Any) -> bool:
        return bool(
            sr.status == "signed"
            and sr.result is not None
            and Account.recover_transaction(sr.result.signed_tx) == sender
        )

    small_value = ETH_LIMIT // 2
    small = c_req.sign(key.id, kind="evm-tx", payload={"tx": unsigned_tx(small_value, 0)})
    rows.append(
        {
            "request": f"send {format_units(small_value, 18)} ETH to {DEMO_ETH_DESTINATIONS[0]}",
            "policy": "under the limit, allowlisted: signed at once",
            "status": small.status,
            "verified": signed_by_key(small),
        }
    )
    try:
        raw = c_req.sign(key.id, hashlib.sha256(MESSAGE).digest())
        rows.append(
            {
                "request": "raw 32-byte digest",
                "policy": "raw signing enabled for every key (--allow-raw)",
                "status": raw.status,
                "verified": raw.status == "signed",
            }
        )
    except CustodyError as e:
        rows.append(
            {
                "request": "raw 32-byte digest",
                "policy": f"{e.status} {e.type.rsplit(':', 1)[-1]} ({e.problem.get('rule_id')})",
                "status": "not created",
                "verified": e.status == 403,
            }
        )
    big_value = 2 * ETH_LIMIT
    big = c_req.sign(key.id, kind="evm-tx", payload={"tx": unsigned_tx(big_value, 1)}, wait=False)
    waiting = big.status
    needs = ", ".join(
        f"{s.needed} of {s.group}" for s in (big.approval.missing if big.approval else [])
    )
    files = doc.get("dev_governance", {})
    approvers = [Path(p) for p in files.get("approvers", [])][:2]
    by = []
    final = big
    if waiting == "pending_approval" and len(approvers) == 2:
        passphrase = Path(files["approver_passphrase_file"]).read_bytes().strip()
        for path in approvers:
            final = approve_as(c_appr, big.id, key.scheme, path, passphrase)
            by.append(gov.read_approver_public(path.read_bytes()).approver_id)
    rows.append(
        {
            "request": f"send {format_units(big_value, 18)} ETH to {DEMO_ETH_DESTINATIONS[0]}",
            "policy": f"over the limit: {waiting} (needs {needs or 'nothing'}); approved by "
            + (", ".join(by) or "nobody (no dev approvers in cluster.json)"),
            "status": final.status,
            "verified": signed_by_key(final),
        }
    )
    return rows


def _running(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    doc = read_cluster_file(path)
    try:
        httpx.get(doc["api_url"] + "/health", timeout=1).raise_for_status()
    except httpx.HTTPError:
        return None
    return doc


def _approver(c_appr: CustodyClient, doc: dict[str, Any]) -> Any:
    """``approve(sign_request_id, scheme)``: two dev approvers of cluster.json approve, as
    :func:`approve_as`; their approver ids."""

    def approve(request_id: str, scheme: str) -> list[str]:
        files = doc.get("dev_governance", {})
        approvers = [Path(p) for p in files.get("approvers", [])][:2]
        if len(approvers) != 2:
            raise RuntimeError("no two dev approvers in cluster.json (dev_governance)")
        passphrase = Path(files["approver_passphrase_file"]).read_bytes().strip()
        by = []
        for path in approvers:
            approve_as(c_appr, request_id, scheme, path, passphrase)
            by.append(gov.read_approver_public(path.read_bytes()).approver_id)
        return by

    return approve


def run_demo(console: Console, cluster: Path | None, data_dir: Path | None, port: int) -> int:
    """Run the demo; returns its exit code (:class:`custody.exitcodes.ExitCode`)."""
    from custody.cluster import Cluster, PortInUse

    cluster_file = cluster or Path(".custody/cluster.json")
    doc = _running(cluster_file)
    own: Cluster | None = None
    if doc is None:
        where = data_dir or Path(tempfile.mkdtemp(prefix="custody-demo-"))
        with console.status(
            "starting a local cluster (coordinator + 3 nodes + the payment service)"
        ) as st:
            # the payment service too, as `custody up --with-payments` (part three); mutual
            # TLS between the coordinator and the nodes, as `custody up` without --dev
            own = Cluster(where, nodes=3, port=port, payments=True, progress=st.update, tls=True)
            try:
                doc = own.start()
            except PortInUse as e:
                own.stop()
                console.print(f"[red]could not start a cluster:[/red] {e}")
                return ExitCode.IN_USE
            except (RuntimeError, OSError) as e:
                own.stop()
                console.print(f"[red]could not start a cluster:[/red] {e}")
                return ExitCode.FAILED
        cluster_file = own.cluster_file
        console.print(f"[yellow]DEV CLUSTER in {where}: demo policy (README)[/yellow]")
    try:
        return _run_on(console, doc, cluster_file)
    finally:
        if own is not None:
            with console.status("stopping the cluster"):
                own.stop()


def _run_on(console: Console, doc: dict[str, Any], cluster_file: Path) -> int:
    try:
        with (
            CustodyClient(doc["api_url"], doc["credentials"]["admin"]) as a,
            CustodyClient(doc["api_url"], doc["credentials"]["requester"]) as r,
            CustodyClient(doc["api_url"], doc["credentials"]["approver"]) as v,
            console.status("DKG and signing for each scheme, then the demo policy"),
        ):
            rows = sign_and_verify_all(a, r)
            steps = policy_flow(a, r, v, doc)
    except Exception as e:  # noqa: BLE001 - report, then stop our processes
        console.print(f"[red]demo failed:[/red] {e}")
        return ExitCode.FAILED
    t = Table(title=f"2-of-3 threshold signatures of the message {MESSAGE!r}")
    t.caption = (
        "latency: first signature of the new key / median of the next "
        f"{WARM_SIGNATURES} (each verified too)"
    )
    for col in ("scheme", "verified by", "latency"):
        t.add_column(col, overflow="fold")
    for row in rows:
        mark = "[green]yes[/green]" if row["verified"] else "[red]NO[/red]"
        t.add_row(
            row["scheme"],
            f"{mark} {row['verified_by']}",
            f"{row['latency_ms']:.0f} / {row['warm_latency_ms']:.0f} ms",
        )
    console.print(t)
    # the values themselves, whole (never in a table cell that would cut them), for copy
    # and paste into another verifier
    for row in rows:
        console.print(f"{row['scheme']}: key        {row['key_id']}", soft_wrap=True)
        console.print(f"{row['scheme']}: public key {row['public_key']}", soft_wrap=True)
        console.print(f"{row['scheme']}: signature  {row['signature']}", soft_wrap=True)
    p = Table(title="The demo policy on Ethereum transfers (ECDSA 2-of-3 key, chain 1)")
    p.caption = "verified: eth-account recovers the key's address from the signed transaction"
    for col in ("request", "policy", "status", "verified"):
        p.add_column(col, overflow="fold")
    for step in steps:
        mark = "[green]yes[/green]" if step["verified"] else "[red]NO[/red]"
        p.add_row(step["request"], step["policy"], step["status"], mark)
    console.print(p)
    ok = all(r["verified"] for r in rows) and all(s["verified"] for s in steps)
    if "payments" not in doc:
        console.print(
            "[yellow]payments: this cluster runs no payment service (start it with "
            "`custody up --with-payments`, or let `custody demo` start its own)[/yellow]"
        )
        return ExitCode.OK if ok else ExitCode.FAILED
    # the batch file and the pacs.008 files go beside cluster.json (the cluster's data dir)
    work_dir = cluster_file.parent / "demo"
    key_file = cluster_file.parent / "payments" / "settlement-key-id"
    try:
        work_dir.mkdir(mode=0o700, exist_ok=True)
        with (
            CustodyClient(doc["api_url"], doc["credentials"]["approver"]) as v,
            CustodyClient(doc["api_url"], doc["credentials"]["requester"]) as au,
            console.status("payments") as st,
        ):
            paid = payments_flow(
                console,
                doc,
                au,
                _approver(v, doc),
                work_dir,
                st.update,
                key_file.read_text().strip(),
            )
    except Exception as e:  # noqa: BLE001 - a step that failed says why; exit non-zero
        console.print(f"[red]payments demo failed:[/red] {e}", soft_wrap=True)
        return ExitCode.FAILED
    return ExitCode.OK if ok and paid else ExitCode.FAILED
