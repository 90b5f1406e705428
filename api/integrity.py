"""Integrity checks a database writer cannot pass alone: the audit chain against the
node-signed checkpoints, every credential against its audited creation, and every stored
signature against its key and the recomputed message (and its audited value).

:func:`stored_signature_ok` also guards every read of a signed request
(:mod:`api.repository`): a signature that no longer verifies is never served as
``signed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api import audit, crypto
from api.audit import Finding
from api.db import AuditEntry, Checkpoint, Credential, Key, Node, SignRequest
from custody.signing import SignRequestError, message_to_sign

CREDENTIAL_ACTIONS = (
    "credential.create",
    "credential.revoke",
    "credential.rotate",
    "credential.scope",
)
MISSING_RELEASES = "audit.releases-missing"  # api.coordinator.checkpoints records these


def credential_entry(
    role: str,
    token_sha256: str,
    label: str,
    principal: str,
    scope: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The audited data of a credential's creation (what its row must keep matching); a
    scope only when there is one (so unscoped creations hash as they always did)."""
    out: dict[str, Any] = {
        "role": role,
        "token_sha256": token_sha256,
        "label": label,
        "principal": principal,
    }
    if scope is not None:
        out["scope"] = dict(scope)
    return out


def credential_matches(row: Any, events: list[tuple[str, Mapping[str, Any]]]) -> bool:
    """True when the credential ``row`` (id, role, principal, token_sha256, revoked,
    scope) is exactly what its audited ``events`` (action, data), oldest first, made of
    it: the token hash of its creation or latest ``credential.rotate``, the scope of its
    creation or latest ``credential.scope``. A creation audited before principals existed
    names none: its principal is the id."""
    created = [d for a, d in events if a == "credential.create"]
    if len(created) != 1:
        return False
    d = created[0]
    revoked = any(a == "credential.revoke" for a, _ in events)
    token = d.get("token_sha256")
    scope = d.get("scope")
    for a, data in events:
        if a == "credential.rotate":
            token = data.get("token_sha256")
        elif a == "credential.scope":
            scope = data.get("scope")
    return (
        d.get("role") == row.role
        and d.get("principal", row.id) == (row.principal or row.id)
        and token == row.token_sha256
        and bool(row.revoked) == revoked
        and (scope or None) == (getattr(row, "scope", None) or None)
    )


def stored_signature_ok(
    scheme: str,
    public_key: str | None,
    row: Mapping[str, Any],
    key: Mapping[str, Any] | None = None,
) -> bool:
    """A signed request's stored signature verifies under ``public_key`` over the message
    recomputed from its stored body; a body with a ``derivation_path`` under the child key
    at that path, derived here from the key's public values ``key`` (``id``,
    ``verifying_shares``, ``threshold``; without them such a row never verifies)."""
    if not public_key or not row.get("signature"):
        return False
    body = row.get("body")
    if isinstance(body, Mapping) and body.get("derivation_path") is not None:
        if key is None:
            return False
        try:
            public_key, _ = crypto.public_key_at(
                str(key["id"]),
                scheme,
                public_key,
                key["verifying_shares"] or {},
                int(key["threshold"]),
                body,
            )
        except (SignRequestError, KeyError, TypeError, ValueError):
            return False
    psbt = isinstance(body, Mapping) and body.get("kind") == "btc-psbt"
    try:
        msg = message_to_sign(
            scheme, row["body"], public_key=bytes.fromhex(public_key) if psbt else None
        )
    except (SignRequestError, KeyError, TypeError, ValueError):
        return False
    if psbt:  # every input's signature under the BIP-86 output key
        return crypto.verify_psbt_signatures(public_key, msg, str(row["signature"]))
    return crypto.verify_signature(
        scheme, public_key, msg, str(row["signature"]), row.get("recovery_id")
    )


def verify_all(s: Session, cluster: str) -> dict[str, Any]:
    """The ``GET /v1/audit/verify`` report: every finding, and the first bad entry."""
    rep = audit.walk_chain(s.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
    findings = list(rep.findings)
    node_keys = {n.id: n.sign_pk for n in s.scalars(select(Node))}
    cps = list(s.scalars(select(Checkpoint).order_by(Checkpoint.seq)))
    cp_findings, anchored, last_seq = audit.verify_checkpoints(
        rep, cps, cluster, node_keys, crypto.verify_ed25519
    )
    findings += cp_findings
    findings += _missing_checkpoints(s, {c.seq for c in cps})
    findings += _missing_releases(s)
    findings += _credentials(s)
    findings += _signatures(s)
    bad = [f.seq for f in findings if f.seq is not None]
    return {
        "ok": not findings,
        "entries": rep.entries,
        "first_bad_seq": min(bad) if bad else None,
        "head": rep.head,
        "findings": [f.out() for f in findings],
        "checkpoints": {"stored": len(cps), "anchored": anchored, "last_seq": last_seq},
    }


def _events(s: Session, actions: tuple[str, ...]) -> dict[str, list[tuple[int, str, Any]]]:
    out: dict[str, list[tuple[int, str, Any]]] = {}
    q = select(AuditEntry.seq, AuditEntry.action, AuditEntry.subject, AuditEntry.data)
    for seq, action, subject, data in s.execute(
        q.where(AuditEntry.action.in_(actions)).order_by(AuditEntry.seq)
    ):
        out.setdefault(subject, []).append((seq, action, data))
    return out


def _missing_checkpoints(s: Session, stored: set[int]) -> list[Finding]:
    """A checkpoint the chain records (``audit.checkpoint``) whose row is gone: deleting
    checkpoints is how a database writer would hide a re-chain behind them."""
    found = []
    for subject, ev in _events(s, ("audit.checkpoint",)).items():
        for seq, _, data in ev:
            if data.get("seq") not in stored:
                found.append(
                    Finding(
                        "checkpoint-missing",
                        seq,
                        subject,
                        f"entry {seq} records checkpoint {data.get('seq')}, which is gone",
                    )
                )
    return found


def _missing_releases(s: Session) -> list[Finding]:
    """A node that refused a checkpoint because the chain lacks signatures it released (a
    signature released behind the coordinator's back), as the checkpointer recorded it."""
    return [
        Finding(
            "releases-missing",
            None,
            subject,
            f"entry {seq}: {subject} released signatures the audit log does not hold: "
            f"{data.get('detail', '')}",
        )
        for subject, ev in _events(s, (MISSING_RELEASES,)).items()
        for seq, _, data in ev
    ]


def _credentials(s: Session) -> list[Finding]:
    events = _events(s, CREDENTIAL_ACTIONS)
    found = []
    for c in s.scalars(select(Credential).order_by(Credential.id)):
        ev = events.get(c.id, [])
        if not credential_matches(c, [(a, d) for _, a, d in ev]):
            found.append(
                Finding(
                    "credential-forged",
                    None,
                    c.id,
                    "the credential row does not match its audited creation"
                    if ev
                    else "the credential has no audited creation",
                )
            )
    return found


def _signatures(s: Session) -> list[Finding]:
    rows = list(s.scalars(select(Key)))
    keys = {k.id: (k.scheme, k.public_key) for k in rows}
    public = {  # a derived request's signature verifies under the child key
        k.id: {"id": k.id, "verifying_shares": k.verifying_shares, "threshold": k.threshold}
        for k in rows
    }
    audited = _events(s, ("sign.signed",))
    found = []
    for r in s.scalars(select(SignRequest).where(SignRequest.status == "signed")):
        scheme, pk = keys.get(r.key_id, ("", None))
        ev = audited.get(r.id, [])
        at = f" (audited at entry {ev[-1][0]})" if ev else " (never audited as signed)"
        row = {"body": r.body, "signature": r.signature, "recovery_id": r.recovery_id}
        if not stored_signature_ok(scheme, pk, row, public.get(r.key_id)):
            found.append(
                Finding("signature-invalid", None, r.id, f"stored signature is invalid{at}")
            )
        elif not ev or ev[-1][2].get("signature") != r.signature:
            found.append(Finding("signature-swapped", None, r.id, f"not the audited signature{at}"))
    return found
