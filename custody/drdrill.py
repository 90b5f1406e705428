"""``custody dr-drill``: restore backups into scratch nodes, sign, verify, report (issue 13).

From the backups alone: :func:`custody.backups.verify_backups` checks every manifest, age
header, file digest and that each key has at least its threshold of shares; then a scratch
cluster (:class:`custody.cluster.Cluster`: fresh temporary data directories, a fresh
SoftHSM2 token per node, real node processes, a scratch coordinator, a scratch genesis
pinning the scratch nodes' new identities) is provisioned (not started); each backed-up
node's shares are restored into the scratch node of the same id by that node's own process
(``python -m signer_nodes backup restore``: decrypted with the recovery identity in that
process and sealed at once by its new HSM key), the nodes side by side; the keys' public
values go to the scratch coordinator (``python -m api import-key``); everything starts again
and each key signs a test message by threshold signing (no key is ever reconstructed). Each
signature is checked here again, independently (pynacl for Ed25519, coincurve for BIP-340
and ECDSA), against the PRODUCTION public key: the one in the signed manifests,
cross-checked with the production coordinator's ``GET /v1/keys`` when it is reachable. The
report says what was restored, signed and verified, with timings.

``keys`` (``custody dr-drill --key ID``, repeatable) drills only those keys: every backup is
still verified in full and every node's backup restored (a node's restore takes its whole
signed manifest), but only the chosen keys are imported into the scratch coordinator, sign
and are reported. A key id the backups do not hold is refused before any scratch node
exists. A routine drill of one key costs one scratch cluster and one threshold signature;
the all-keys drill is the default.

The scratch cluster is provisioned (its coordinator, nodes, tokens and genesis), not
started, before the restore: the restore runs in each node's own process on its stopped
data directory, and the cluster starts once, afterwards.

Limits: the scratch nodes are named ``node-<party>`` (as ``custody up`` names them), so a
backup of a node named otherwise is refused; the scratch nodes are the backed-up parties
only, so every key must have its threshold among them. The scratch directory (whose dev
tokens hold every restored share, sealed, with their PINs beside them) is deleted when the
drill ends unless ``keep`` is set.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import coincurve
import httpx
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from custody import backups as bk
from custody import governance as gov
from custody.client import CustodyClient
from custody.cluster import Cluster, free_port_block, node_id, write_private_json

__all__ = ["run_drill", "verify_signature", "DrillError"]


class DrillError(Exception):
    pass


def verify_signature(scheme: str, public_key: str, message: bytes, signature: str) -> bool:
    """An independent check of one signature (not our mpc code)."""
    pk, sig = bytes.fromhex(public_key), bytes.fromhex(signature)
    try:
        if scheme == "ed25519":
            nacl.signing.VerifyKey(pk).verify(message, sig)
            return True
        if scheme == "bip340":
            return bool(coincurve.PublicKeyXOnly(pk).verify(sig, message))
        if scheme == "ecdsa-secp256k1":
            if len(sig) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
            return bool(coincurve.PublicKey(pk).verify(der, message, hasher=None))
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    raise DrillError(f"unknown scheme {scheme}")


def _production_keys(cluster_doc: dict[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    if not cluster_doc:
        return None
    creds = cluster_doc.get("credentials") or {}
    token = creds.get("admin") or creds.get("auditor")
    try:
        with httpx.Client(
            base_url=cluster_doc["api_url"],
            timeout=5,
            headers={"Authorization": f"Bearer {token}"},
        ) as c:
            out: dict[str, dict[str, Any]] = {}
            cursor = None
            while True:
                r = c.get("/v1/keys", params={"cursor": cursor} if cursor else None)
                r.raise_for_status()
                doc = r.json()
                for k in doc.get("items", doc.get("data", [])):
                    out[k["id"]] = k
                cursor = doc.get("next_cursor")
                if not cursor:
                    return out
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def _select_keys(
    backed_up: dict[str, dict[str, Any]], wanted: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The keys to drill: ``wanted`` (in the backups' order), or every key if empty. An id
    the backups do not hold is a :class:`DrillError` naming it and what they hold."""
    if not wanted:
        return dict(backed_up)
    unknown = sorted(set(wanted) - set(backed_up))
    if unknown:
        raise DrillError(
            f"--key {', '.join(unknown)}: not in the backups (they hold {sorted(backed_up)})"
        )
    return {kid: pub for kid, pub in backed_up.items() if kid in set(wanted)}


def run_drill(
    backups: Path,
    identity: Path,
    passphrase: str,
    *,
    work: Path | None = None,
    production: dict[str, Any] | None = None,
    progress: Callable[[str], None] = lambda _m: None,
    keep: bool = False,
    governance: Sequence[gov.Governance] = (),
    keys: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the drill; returns the report (also when a check fails: ``ok`` says).
    ``keys``: drill only these key ids (default: every key in the backups)."""
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - since, 3)
        return now

    progress("verifying backups (manifests, signatures, age headers, completeness)")
    bset = bk.verify_backups(backups, governance=governance)
    # the identity opens (and is the right one) before any scratch node is made
    ident = bk.open_identity_file(identity.read_bytes(), passphrase)
    t = lap("verify", t0)
    for nb in bset.nodes:
        if nb.node_id != node_id(nb.party_id):
            raise DrillError(f"{nb.node_id}: a drill restores nodes named node-<party> only")
    drilled = _select_keys(bset.keys, keys)
    prod = _production_keys(production)
    cross: dict[str, str] = {}
    for kid, pub in drilled.items():
        if prod is None:
            cross[kid] = "production coordinator not reachable"
        elif kid not in prod:
            cross[kid] = "unknown to the production coordinator"
        elif prod[kid].get("public_key") != pub["public_key"]:
            raise DrillError(f"key {kid}: the manifests' public key differs from production's")
        else:
            cross[kid] = "matches production GET /v1/keys"
    parties = sorted(nb.party_id for nb in bset.nodes)
    n = max(parties)
    root = Path(work) if work else Path(tempfile.mkdtemp(prefix="tpwc-drill-"))
    root.mkdir(parents=True, exist_ok=True)
    scratch = root / "scratch"
    secret_dir = root / "secret"
    secret_dir.mkdir(mode=0o700, exist_ok=True)
    pass_file = secret_dir / "recovery.pass"
    fd = os.open(pass_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(passphrase)
    cluster = Cluster(scratch, nodes=n, port=free_port_block(n), allow_raw=True, progress=progress)
    report: dict[str, Any] = {
        "format": "tpwc-dr-drill-v1",
        "backups": str(backups),
        "recipient": bk.recipient_of(ident),
        "roster_checked": bool(governance),
        "keys_selected": sorted(set(keys)) if keys else "all",
        "scratch_dir": str(scratch),
        "nodes": [],
        "keys": [],
    }
    try:
        progress(f"provisioning a scratch cluster of {n} fresh nodes (new tokens, new identities)")
        creds = cluster.provision()
        # what a first start writes and the start below reads back: the credentials the
        # coordinator's init printed once (Cluster.provision reads them from cluster.json)
        write_private_json(cluster.cluster_file, {"api_url": "", "credentials": creds})
        t = lap("scratch_cluster", t)

        def restore(nb: bk.NodeBackup) -> dict[str, Any]:
            out = cluster._run(  # noqa: SLF001 - the cluster's own subprocess runner
                [
                    cluster.python,
                    "-m",
                    "signer_nodes",
                    "backup",
                    "restore",
                    "--data-dir",
                    str(scratch / nb.node_id),
                    "--backup",
                    str(nb.path),
                    "--identity",
                    str(identity),
                    "--passphrase-file",
                    str(pass_file),
                    "--sign-pk",
                    nb.sign_pk.hex(),
                ]  # fmt: skip
            )
            return {"node_id": nb.node_id, "party_id": nb.party_id,
                    "restored": json.loads(out)["keys"]}  # fmt: skip

        # each node's restore is its own process on its own stopped data directory (its
        # own token, its own database): they run side by side; the report keeps their order
        progress(
            f"restoring the shares of {', '.join(nb.node_id for nb in bset.nodes)} "
            "into their scratch nodes"
        )
        with ThreadPoolExecutor(max(1, len(bset.nodes))) as pool:
            report["nodes"].extend(pool.map(restore, bset.nodes))
        t = lap("restore", t)
        for kid, pub in drilled.items():
            kf = secret_dir / f"{kid}.json"
            kf.write_text(json.dumps({
                "key_id": kid, "scheme": pub["scheme"], "threshold": pub["min_signers"],
                "nodes": [node_id(p) for p in sorted(pub["committee"])],
                "public_key": pub["public_key"], "verifying_shares": pub["verifying_shares"],
                "network": pub["network"]}))  # fmt: skip
            cluster._run(  # noqa: SLF001
                [
                    cluster.python,
                    "-m",
                    "api",
                    "import-key",
                    "--data-dir",
                    str(scratch / "coordinator"),
                    "--key",
                    str(kf),
                ]  # fmt: skip
            )
        progress("starting the scratch coordinator and nodes (empty pools)")
        doc = cluster.start(timeout=120)  # provisioned already: starts only
        t = lap("start", t)
        req = CustodyClient(doc["api_url"], doc["credentials"]["requester"])
        try:
            for kid, pub in drilled.items():
                progress(f"signing a test message with {kid} ({pub['scheme']})")
                ks = time.monotonic()
                msg = hashlib.sha256(b"tpwc dr-drill " + secrets.token_bytes(16)).digest()
                sr = req.sign(kid, msg, timeout=90)
                ok = sr.status == "signed" and sr.signature is not None
                verified = ok and verify_signature(
                    pub["scheme"], pub["public_key"], msg, str(sr.signature)
                )
                report["keys"].append({
                    "key_id": kid, "scheme": pub["scheme"], "threshold": pub["min_signers"],
                    "public_key": pub["public_key"], "production_check": cross[kid],
                    "shares_restored": sorted(bset.holders[kid]), "signers": sr.signers,
                    "message": msg.hex(), "signature": sr.signature, "status": sr.status,
                    "verified": bool(verified),
                    "seconds": round(time.monotonic() - ks, 3)})  # fmt: skip
        finally:
            req.close()
        lap("sign", t)
    finally:
        cluster.stop()
        pass_file.unlink(missing_ok=True)
        if not keep:
            # the scratch tokens hold every restored share, with their dev PINs beside
            # them: a drill leaves no such copy of the key behind
            shutil.rmtree(scratch, ignore_errors=True)
        report["scratch_removed"] = not scratch.exists()
    report["timings"] = {**timings, "total": round(time.monotonic() - t0, 3)}
    report["ok"] = bool(report["keys"]) and all(k["verified"] for k in report["keys"])
    return report
