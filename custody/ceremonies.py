"""The pure encodings of key ceremonies shared by the nodes and the coordinator.

A node that finished its part of a ceremony (a proactive refresh today) signs a *done
statement* with its identity key over the ceremony's public outcome
(:func:`done_statement`). A node switches to the new share only when it holds the done
statements of every party (:mod:`signer_nodes.ceremonies`); the coordinator keeps them as
the ceremony's transcript (``custody ceremony show``) and anyone can check them against
the identity keys of the governance roster (:func:`verify_transcript`). No secret here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

__all__ = [
    "STATEMENT_DOMAIN",
    "OUTCOME_FIELDS",
    "done_statement",
    "verify_transcript",
    "hd_context",
]

STATEMENT_DOMAIN = b"tpwc-ceremony-done-v1\x00"
#: the fields of an outcome, all public
OUTCOME_FIELDS = (
    "ceremony",
    "session_id",
    "key_id",
    "scheme",
    "threshold",
    "participants",
    "share_version",
    "public_key",
    "public_package",
)


def done_statement(outcome: Mapping[str, Any]) -> bytes:
    """The bytes a party signs: the canonical JSON of the outcome under a domain string."""
    missing = [f for f in OUTCOME_FIELDS if f not in outcome]
    if missing or len(outcome) != len(OUTCOME_FIELDS):
        raise ValueError(f"a ceremony outcome has exactly the fields {OUTCOME_FIELDS}")
    body = json.dumps(dict(outcome), sort_keys=True, separators=(",", ":"))
    return STATEMENT_DOMAIN + body.encode()


def verify_transcript(
    outcome: Mapping[str, Any], signatures: Mapping[str, str], sign_pks: Mapping[int, bytes]
) -> list[int]:
    """The parties (of ``sign_pks``: party -> Ed25519 identity key) whose signature over
    ``outcome``'s done statement is missing or wrong; empty when every party signed."""
    statement = done_statement(outcome)
    bad = []
    for party, pk in sorted(sign_pks.items()):
        sig = signatures.get(str(party))
        try:
            if not isinstance(sig, str):
                raise ValueError("missing")
            VerifyKey(pk).verify(statement, bytes.fromhex(sig))
        except (BadSignatureError, ValueError):
            bad.append(party)
    return bad


# -- HD derivation (mpc.hd) ------------------------------------------------------------------
HD_CONTEXT_DOMAIN = b"tpwc-hd-v1\x00"


def hd_context(key_id: str) -> bytes:
    """The context of a key's root chain code (:func:`mpc.hd.chain_code_from_dkg`): the key
    id, so keys never share a chain code; fixed for the key's whole life (refresh keeps it:
    the chain code hashes the group key, which a refresh does not change)."""
    return HD_CONTEXT_DOMAIN + key_id.encode()
