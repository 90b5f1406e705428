"""Backup and restore of this node's shares to offline recovery keys (issue 13).

Run on the node's own host, by the node's own process (``python -m signer_nodes backup
export|restore``): the node's HSM is the only thing that can unseal its shares, and the
plaintext share exists only in this process's memory, between ``unseal`` and the age
encryption (export) or between the age decryption and ``seal`` under the new node's HSM key
(restore). The format and its verification are :mod:`custody.backups`.

* :func:`export`: every share, age-encrypted to the X25519 recipients, its manifest signed by
  this node's identity key; the share version (and a share digest) recorded per key.
* :func:`restore`: onto a FRESH node (new token, new data directory, no shares, governance
  installed): the manifest checked (under the sign_pk the caller pins, e.g. from the
  roster), each file's digest and header, then decrypted with the recovery identity, its
  share decoded and matched to the manifest, sealed by this node's HSM and stored with its
  share version, network and committee (recorded under the current roster). The node is
  stopped while it restores (the directory lock): when it runs again it has a new boot id
  and no nonce or presignature (they live in memory only), so the coordinator drops what
  it pooled from this node.
* :func:`adopt`: on every OTHER node of the restored node's key committees (each stopped,
  then restarted): the officers' restore authorization re-pins the restored member's new
  identity in those committees (a re-key alone retires them). It carries, per key, a
  ``restore`` ceremony authorization (:class:`custody.governance.CeremonyAuthorization`)
  that this node verifies itself and accepts once: the key, the share version of the
  backup (which must be this node's own: a stale share is refused), and the restored node;
  refused with the ceremony codes (``ceremony-unauthorized``, ``-under-signed``,
  ``-expired``, ``-replayed``, ``-mismatch``). Adopting drops every outstanding nonce and
  presignature of the key.

Imports: :mod:`signer_nodes.errors`, ``.logs``, ``.node``, ``.protocols``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import cbor2
import pyrage
from pyrage import x25519

from custody import backups as bk
from custody import governance as gov
from mpc import keyio
from mpc.dkls23.keygen import EcdsaKeyShare
from mpc.errors import MpcError
from signer_nodes import logs
from signer_nodes.errors import Kind, NodeError
from signer_nodes.node import Node
from signer_nodes.protocols import public_result

__all__ = ["export", "restore", "adopt"]

PAYLOAD_FORMAT = 1
ECDSA = "ecdsa-secp256k1"


def _public(scheme: str, key_id: str, public_info: bytes) -> dict[str, Any]:
    pub = keyio.decode_public_key_package(public_info)
    if scheme == ECDSA:
        return {
            "public_key": pub.group_public_key.encode().hex(),
            "min_signers": pub.min_signers,
            "verifying_shares": {
                str(i): p.encode().hex() for i, p in sorted(pub.verifying_shares.items())
            },
        }
    r = public_result(key_id, scheme, pub)
    return {k: r[k] for k in ("public_key", "min_signers", "verifying_shares")}


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def export(node: Node, recipients: list[str], out: Path) -> dict[str, Any]:
    """Write ``out/<node_id>/``: one age file per share and the signed manifest."""
    rcpts = bk.parse_recipients(recipients)
    gov = node.anchor.require()
    d = Path(out) / node.node_id
    if d.exists() and any(d.iterdir()):
        raise NodeError(Kind.BAD_REQUEST, f"{d} exists and is not empty")
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    entries = []
    for key_id in node.store.key_ids():
        row = node.shares.row(key_id)
        committee = [p for p, _, _ in node.anchor.committee(key_id)]
        network = node.shares.network(key_id) if row.scheme == "bip340" else None
        share = node.shares.unseal_share(row)
        payload = cbor2.dumps(
            {
                "format": PAYLOAD_FORMAT,
                "node_id": node.node_id,
                "party_id": node.party_id,
                "key_id": key_id,
                "scheme": row.scheme,
                "share_version": row.share_version,
                "share": share,
                "public_key": row.public_key,
                "public_info": row.public_info,
                "network": network,
                "committee": committee,
            },
            canonical=True,
        )
        digest = bk.share_digest(key_id, row.share_version, share)
        del share
        sealed = pyrage.encrypt(payload, rcpts)
        del payload
        name = f"{key_id}.age"
        _write(d / name, sealed)
        entries.append(
            {
                "key_id": key_id,
                "scheme": row.scheme,
                "share_version": row.share_version,
                "share_digest": digest,
                **_public(row.scheme, key_id, row.public_info),
                "network": network,
                "committee": committee,
                "file": name,
                "file_sha256": hashlib.sha256(sealed).hexdigest(),
            }
        )
    body = {
        "format": bk.FORMAT,
        "node_id": node.node_id,
        "party_id": node.party_id,
        "sign_pk": node.sign_pk.hex(),
        "cluster_id": gov.cluster_id,
        "governance_version": gov.version,
        "created_at": int(time.time()),
        "recipients": [str(r) for r in recipients],
        "keys": entries,
    }
    sig = node.identity.sign_statement(bk.manifest_statement(body))
    _write(d / bk.MANIFEST, json.dumps({"manifest": body, "signature": sig.hex()}).encode())
    logs.event("backup.exported", node_id=node.node_id, keys=len(entries))
    return {"node_id": node.node_id, "dir": str(d), "keys": [e["key_id"] for e in entries]}


def _check_share(entry: dict[str, Any], p: dict[str, Any]) -> None:
    """The decrypted share decodes, is consistent, and is the one the manifest names."""
    kid, scheme = entry["key_id"], entry["scheme"]
    try:
        if scheme == ECDSA:
            share = EcdsaKeyShare.from_bytes(p["share"])
            pub, ident = share.public, share.key.identifier
            pk = pub.group_public_key.encode().hex()
        else:
            kp = keyio.decode_key_package(p["share"])
            pub, ident = kp.public, kp.identifier
            pk = public_result(kid, scheme, pub)["public_key"]
    except (MpcError, ValueError, KeyError, TypeError) as exc:
        raise NodeError(Kind.BAD_REQUEST, f"key {kid}: the share does not decode ({exc})") from None
    if ident != p["party_id"]:
        raise NodeError(Kind.BAD_REQUEST, f"key {kid}: the share is party {ident}'s")
    if pk != entry["public_key"] or pub.min_signers != entry["min_signers"]:
        raise NodeError(Kind.BAD_REQUEST, f"key {kid}: the share is of another public key")
    if bk.share_digest(kid, p["share_version"], p["share"]) != entry["share_digest"]:
        raise NodeError(Kind.BAD_REQUEST, f"key {kid}: share digest differs from the manifest")


def restore(
    node: Node, path: Path, identity: x25519.Identity, *, sign_pk: bytes | None = None
) -> dict[str, Any]:
    """Restore the node backup at ``path`` onto this fresh node (see the module docstring)."""
    nb = bk.load_node_backup(Path(path), sign_pk=sign_pk)
    if (nb.node_id, nb.party_id) != (node.node_id, node.party_id):
        raise NodeError(
            Kind.BAD_REQUEST,
            f"backup of {nb.node_id} (party {nb.party_id}) cannot restore onto "
            f"{node.node_id} (party {node.party_id})",
        )
    plain: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for entry in nb.keys:  # decrypt and check every share before storing any
        data = nb.age_file(entry["key_id"])
        try:
            p = cbor2.loads(pyrage.decrypt(data, [identity]))
        except pyrage.DecryptError:
            raise bk.BackupError(
                "not-for-this-identity",
                f"{nb.node_id}/{entry['file']}: not encrypted to the recovery identity "
                f"{bk.recipient_of(identity)[:16]}... (or its payload was altered)",
            ) from None
        expect = {
            "format": PAYLOAD_FORMAT,
            "node_id": nb.node_id,
            "party_id": nb.party_id,
            "key_id": entry["key_id"],
            "scheme": entry["scheme"],
            "share_version": entry["share_version"],
            "network": entry["network"],
            "committee": entry["committee"],
        }
        if not isinstance(p, dict) or any(p.get(k) != v for k, v in expect.items()):
            raise NodeError(
                Kind.BAD_REQUEST, f"{entry['file']}: payload does not match the manifest entry"
            )
        _check_share(entry, p)
        plain.append((entry, p))
    node.anchor.require()  # the committee is recorded under the roster this node trusts
    held = node.store.key_ids()
    if held:
        raise NodeError(
            Kind.BAD_REQUEST,
            f"{node.node_id} already holds shares {held}: restore onto a fresh node",
        )
    for entry, p in plain:
        if entry["scheme"] == "bip340":
            node.shares.set_network(entry["key_id"], entry["network"] or "mainnet")
        node.shares.store_share(
            entry["key_id"],
            entry["scheme"],
            p["share"],
            p["public_key"],
            p["public_info"],
            share_version=int(entry["share_version"]),
        )
        node.anchor.record_committee(entry["key_id"], entry["committee"])
    del plain
    logs.event("backup.restored", node_id=node.node_id, keys=len(nb.keys))
    return {
        "node_id": node.node_id,
        "keys": [
            {"key_id": e["key_id"], "scheme": e["scheme"], "share_version": e["share_version"]}
            for e in nb.keys
        ],
    }


def adopt(node: Node, data: bytes) -> dict[str, Any]:
    """Carry this node's key committees over to a restored member (node stopped).

    The officers' :class:`custody.backups.RestoreAuthorization` (a quorum of the installed
    governance version, which pins the restored node's new identity) names the keys and the
    identity change; every other member of each committee must still be pinned as it was.
    The node then restarts, with a new boot id and no nonce or presignature."""
    auth = bk.RestoreAuthorization.decode(data)
    cur = node.anchor.require()
    auth.verify(cur)
    ceremonies = {kid: _restore_ceremony(node, auth, kid) for kid in sorted(auth.key_ids)}
    done = []
    for kid in sorted(auth.key_ids):
        members = node.anchor.committee(kid)
        for party, nid, spk in members:
            if nid == auth.node_id:
                ok = party == auth.party_id and spk.hex() in (auth.from_sign_pk, auth.to_sign_pk)
            else:
                pinned = cur.node(nid)
                ok = pinned is not None and (pinned.party_id, pinned.sign_pk) == (party, spk)
            if not ok:
                raise NodeError(
                    Kind.NOT_IN_ROSTER,
                    f"key {kid!r}: committee member {nid} (party {party}) is not as the "
                    "authorization and the roster say",
                    culprits=[party],
                )
    dropped = 0
    for kid in sorted(auth.key_ids):
        members = node.anchor.committee(kid)
        c = ceremonies[kid]
        with node.store.tx() as tx:  # each restore authorization is accepted once
            k = _USED + c.ceremony_id
            if tx.execute("SELECT 1 FROM meta WHERE k = ?", (k,)).fetchone() is not None:
                raise _replayed(node, c)
            tx.execute(
                "INSERT INTO meta (k, v) VALUES (?, ?)",
                (k, json.dumps({"key_id": kid, "restored": auth.node_id})),
            )
        node.anchor.record_committee(kid, [p for p, _, _ in members])
        # a restore invalidates every outstanding nonce and presignature of the key (the
        # node is stopped for this, so its memory goes too; this holds even if it is not)
        dropped += node.shares.pool.drop_key(kid)
        done.append(kid)
    logs.event(
        "backup.adopted",
        node_id=node.node_id,
        restored=auth.node_id,
        keys=len(done),
        dropped_items=dropped,
    )
    return {"node_id": node.node_id, "restored": auth.node_id, "keys": done}


_USED = "ceremony-auth:"  # the ceremony ids accepted (signer_nodes.ceremonies, the same rows)
_CODES = gov.CeremonyAuthErrorKind


def _replayed(node: Node, c: gov.CeremonyAuthorization) -> NodeError:
    return NodeError(
        Kind.NOT_AUTHORIZED,
        f"ceremony {c.ceremony_id}'s restore authorization of key {c.key_id!r} was used "
        f"already on {node.node_id}",
        code=_CODES.REPLAYED.value,
    )


def _restore_ceremony(
    node: Node, auth: bk.RestoreAuthorization, kid: str
) -> gov.CeremonyAuthorization:
    """The officers' ``restore`` ceremony authorization of ``kid`` that ``auth`` carries,
    verified by this node (quorum of its governance, cluster, expiry) and compared with what
    it holds: the key, its scheme, public key, share version and threshold, and the restored
    node as the one node it names. A restored share of another version than this node's
    (a stale backup, or one from before a refresh) is refused here: the committee would
    never sign with it."""
    raw = auth.ceremony(kid)
    if raw is None:
        raise NodeError(
            Kind.NOT_AUTHORIZED,
            f"key {kid!r}: no restore ceremony authorization signed by the officer quorum "
            f"for {auth.node_id}",
            code=_CODES.MISSING.value,
        )
    c = node.anchor.verify_ceremony(raw, int(time.time()))
    row = node.shares.row(kid)
    pub = keyio.decode_public_key_package(row.public_info)
    for what, signed, held in (
        ("kind", c.kind, "restore"),
        ("key_id", c.key_id, kid),
        ("committee", list(c.committee), [auth.node_id]),
        ("scheme", c.scheme, row.scheme),
        ("public_key", c.public_key.hex(), row.public_key.hex()),
        ("share_version", c.share_version, row.share_version),
        ("threshold", c.threshold, pub.min_signers),
    ):
        if signed != held:
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                f"key {kid!r}: the restore authorization says {what} {signed!r}; "
                f"{node.node_id} adopts {held!r} (ceremony {c.ceremony_id})",
                code=_CODES.MISMATCH.value,
            )
    if node.store.get_meta(_USED + c.ceremony_id) is not None:
        raise _replayed(node, c)
    return c
