"""``custody demo``: one key per scheme, a signature each, verified by independent libraries.

Verifiers: pynacl (libsodium) for Ed25519, coincurve (libsecp256k1) ``PublicKeyXOnly.verify``
for BIP-340 and ``PublicKey.verify`` plus public-key recovery for ECDSA. None of them is our
code, so a table full of "yes" means the threshold signatures are ordinary signatures.
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
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from rich.console import Console
from rich.table import Table

from custody.cli_support import read_cluster_file
from custody.client import CustodyClient
from custody.domain import SCHEMES, spec
from custody.exitcodes import ExitCode

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


def message_for(scheme: str, n: int = 0) -> bytes:
    """The demo message (its SHA-256 for ECDSA); ``n > 0`` numbers the extra warm ones."""
    msg = MESSAGE if n == 0 else MESSAGE + b" #%d" % n
    return hashlib.sha256(msg).digest() if spec(scheme).raw_message == "digest32" else msg


def sign_and_verify_all(
    c_admin: CustodyClient, c_req: CustodyClient, threshold: int = 2
) -> list[dict[str, Any]]:
    rows = []
    for scheme in SCHEMES:
        key = c_admin.create_key(scheme, threshold)
        if key.status != "active" or key.public_key is None:
            raise RuntimeError(f"{scheme} DKG failed: {key.error}")
        msg = message_for(scheme)
        start = time.perf_counter()
        sr = c_req.sign(key.id, msg)
        ms = (time.perf_counter() - start) * 1000
        if sr.status != "signed" or sr.signature is None:
            raise RuntimeError(f"{scheme} signing {sr.status}: {sr.error}")
        ok, by = verify_independently(scheme, key.public_key, msg, sr.signature, sr.recovery_id)
        # The first signature of a new key also waits for the nodes' first nonce batch (and,
        # for ECDSA, a presignature); the warm figure is what a steady client sees.
        warm = []
        for i in range(WARM_SIGNATURES):
            m = message_for(scheme, i + 1)
            t0 = time.perf_counter()
            w = c_req.sign(key.id, m)
            warm.append((time.perf_counter() - t0) * 1000)
            ok = (
                ok
                and w.status == "signed"
                and w.signature is not None
                and verify_independently(scheme, key.public_key, m, w.signature, w.recovery_id)[0]
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


def _running(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    doc = read_cluster_file(path)
    try:
        httpx.get(doc["api_url"] + "/health", timeout=1).raise_for_status()
    except httpx.HTTPError:
        return None
    return doc


def run_demo(console: Console, cluster: Path | None, data_dir: Path | None, port: int) -> int:
    """Run the demo; returns its exit code (:class:`custody.exitcodes.ExitCode`)."""
    from custody.cluster import Cluster, PortInUse

    doc = _running(cluster or Path(".custody/cluster.json"))
    own: Cluster | None = None
    if doc is None:
        where = data_dir or Path(tempfile.mkdtemp(prefix="custody-demo-"))
        with console.status("starting a local cluster (coordinator + 3 nodes)") as st:
            own = Cluster(where, nodes=3, port=port, progress=lambda m: st.update(m))
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
        console.print(f"[yellow]DEV CLUSTER in {where}: allow-all policy[/yellow]")
    try:
        with (
            CustodyClient(doc["api_url"], doc["credentials"]["admin"]) as a,
            CustodyClient(doc["api_url"], doc["credentials"]["requester"]) as r,
            console.status("DKG and signing for each scheme"),
        ):
            rows = sign_and_verify_all(a, r)
    except Exception as e:  # noqa: BLE001 - report, then stop our processes
        console.print(f"[red]demo failed:[/red] {e}")
        return ExitCode.FAILED
    finally:
        if own is not None:
            own.stop()
    t = Table(title=f"2-of-3 threshold signatures over {MESSAGE!r}")
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
    return ExitCode.OK if all(r["verified"] for r in rows) else ExitCode.FAILED
