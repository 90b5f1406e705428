"""Ceremony authorizations for the node tests: signed by the test officers (a quorum, or
whom a test names), as ``custody keys refresh|reshare`` signs them with the dev officers."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

import nacl.signing

from custody import governance as gov


def authorize(
    keys: Mapping[str, nacl.signing.SigningKey],
    cluster_id: str,
    spec: Mapping[str, Any],
    public_key: str,
    share_version: int,
    *,
    committee: Sequence[int] | None = None,
    previous_threshold: int | None = None,
    lower_threshold: bool = False,
    by: Sequence[str] | None = None,
    quorum: int = 2,
    issued_at: int | None = None,
    lifetime: int = 600,
    ceremony_id: str | None = None,
) -> str:
    """The hex authorization of the ceremony ``spec`` describes (kind, key, scheme,
    threshold); ``committee`` (party ids, node ids ``node-P``) defaults to the spec's
    participants, ``previous_threshold`` to its threshold."""
    now = int(time.time()) if issued_at is None else issued_at
    body = gov.CeremonyAuthorization(
        cluster_id=cluster_id,
        ceremony_id=ceremony_id or "cer_" + secrets.token_hex(12),
        kind=str(spec["kind"]),
        key_id=str(spec["key_id"]),
        scheme=str(spec["scheme"]),
        public_key=bytes.fromhex(public_key),
        share_version=share_version,
        committee=tuple(sorted(f"node-{p}" for p in (committee or spec["participants"]))),
        threshold=int(spec["threshold"]),
        previous_threshold=int(previous_threshold or spec["threshold"]),
        lower_threshold=lower_threshold,
        issued_at=now,
        expires_at=now + lifetime,
    )
    doc = gov.SignedCeremonyAuthorization(body)
    for oid in by if by is not None else sorted(keys)[:quorum]:
        doc = doc.with_signature(keys[oid], oid)
    return doc.encode().hex()
