"""The custody domain: the one definition of every value the services and the SDK share.

``api/`` (the coordinator), ``signer_nodes`` and the SDK (:mod:`custody.client`) import
these; none of them redefines a scheme, a status, a role or an id rule. The public API
models (pydantic) built on them are in :mod:`custody.models`; the message each scheme signs
is computed by :func:`custody.signing.message_to_sign`.

May import: the standard library only.

Schemes
    =================== ============ ============================ =====================
    scheme              FROST suite  signs                        public key / signature
    =================== ============ ============================ =====================
    ``ed25519``         ``ed25519``  the message bytes (any       32 bytes (RFC 8032) /
                        (RFC 9591)   length, may be empty)        64 bytes ``R || s``
    ``bip340``          ``bip340``   the message bytes            32-byte x-only /
                        (FROST-TR)                                64 bytes ``R.x || s``
    ``ecdsa-secp256k1`` none: DKLs23 exactly a 32-byte digest     33-byte compressed /
                                     (the caller hashes)          64 bytes ``r || s``,
                                                                  low-s, + recovery id
    =================== ============ ============================ =====================

    For ``payment`` and ``settlement`` requests every scheme signs the same 32-byte
    digest of the payload (:mod:`custody.signing`). The decoded kinds
    (:data:`DECODED_KINDS`: ``evm-tx`` for ECDSA keys, ``btc-psbt`` for BIP-340 keys,
    ``message`` for every scheme, ``iso20022`` (a pacs.008 message: the canonical XMLDSig
    ``SignedInfo`` over its exclusive C14N digest) for Ed25519) sign what
    :func:`custody.kinds.decode` says (``Intent.messages``); a ``btc-psbt`` request makes
    one signature per input (at most :data:`MAX_PSBT_INPUTS`), under the key's BIP-86
    output key.

Networks
    A ``bip340`` key has a Bitcoin network (:data:`NETWORKS`, ``mainnet`` by default),
    chosen at creation; it picks the human-readable part of the key's BIP-86 address.

Ids
    A key id and a sign-request id are 1 to :data:`MAX_ID_LEN` (40) characters of
    ``[A-Za-z0-9._:-]`` (:data:`ID_PATTERN`). The coordinator makes them with
    :func:`new_id` (``key_`` / ``sr_`` + 32 hex digits: 128 bits from the OS CSPRNG); 40 is
    the width of the coordinator's id columns, so every id a node is asked to sign for
    fits. (Before: the API allowed 40 characters of anything, the signing rule 1-128 of
    this alphabet.)

Sign-request life
    ``pending_approval`` -> ``signing`` -> ``signed`` | ``failed``; a pending request may
    also become ``rejected`` or ``expired``. A request the policy allows starts at
    ``signing``; one it denies is never created (403). :data:`TERMINAL_SIGN_STATUSES`
    never change again.

Key life
    ``pending`` (DKG running) -> ``active`` | ``failed``.

Node sessions
    The multi-party sessions a coordinator starts on nodes (:data:`SESSION_KINDS`: a
    ``dkg`` for a new key, an ``ecdsa-presign`` for a DKLs23 presignature) and the status
    a node reports for one (:data:`SESSION_STATUSES`).

Roles
    One per credential (so nobody both requests and approves): ``admin`` (key ceremonies,
    node enrolment), ``requester`` (asks for signatures), ``approver`` (posts approvals and
    rejections), ``auditor`` (read-only: audit log, nodes). A credential belongs to a named
    principal (the id rule below); a requester's principal is its requests' initiator.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

__all__ = [
    "Scheme",
    "SCHEMES",
    "FROST_SCHEMES",
    "SchemeSpec",
    "SCHEME_SPECS",
    "spec",
    "Kind",
    "KINDS",
    "DIGEST_KINDS",
    "DECODED_KINDS",
    "Network",
    "NETWORKS",
    "MAX_PSBT_INPUTS",
    "SignStatus",
    "SIGN_STATUSES",
    "TERMINAL_SIGN_STATUSES",
    "KeyStatus",
    "KEY_STATUSES",
    "TERMINAL_KEY_STATUSES",
    "NodeStatus",
    "NODE_STATUSES",
    "SessionKind",
    "SESSION_KINDS",
    "SessionStatus",
    "SESSION_STATUSES",
    "Role",
    "ROLES",
    "READ_ROLES",
    "ID_PATTERN",
    "ID_ALPHABET",
    "MAX_ID_LEN",
    "is_valid_id",
    "new_id",
    "MAX_MESSAGE",
]

# -- schemes --------------------------------------------------------------------------------
Scheme = Literal["ed25519", "bip340", "ecdsa-secp256k1"]
SCHEMES: Final[tuple[Scheme, ...]] = get_args(Scheme)


@dataclass(frozen=True)
class SchemeSpec:
    """What one scheme is: its FROST suite (``None`` for ECDSA/DKLs23), what it signs and
    how its keys and signatures are encoded."""

    name: Scheme
    frost_suite: Literal["ed25519", "bip340"] | None
    curve: Literal["ed25519", "secp256k1"]
    raw_message: Literal["bytes", "digest32"]  # what a ``raw`` request signs
    public_key_len: int
    public_key_encoding: str
    x_only_key: bool  # the public key is the x coordinate only (its point has even y)
    signature_len: int
    signature_encoding: str
    has_recovery_id: bool

    @property
    def is_frost(self) -> bool:
        return self.frost_suite is not None


SCHEME_SPECS: Final[dict[Scheme, SchemeSpec]] = {
    "ed25519": SchemeSpec(
        name="ed25519",
        frost_suite="ed25519",
        curve="ed25519",
        raw_message="bytes",
        public_key_len=32,
        public_key_encoding="RFC 8032 point",
        x_only_key=False,
        signature_len=64,
        signature_encoding="R || s",
        has_recovery_id=False,
    ),
    "bip340": SchemeSpec(
        name="bip340",
        frost_suite="bip340",
        curve="secp256k1",
        raw_message="bytes",
        public_key_len=32,
        public_key_encoding="x-only (BIP-340)",
        x_only_key=True,
        signature_len=64,
        signature_encoding="R.x || s",
        has_recovery_id=False,
    ),
    "ecdsa-secp256k1": SchemeSpec(
        name="ecdsa-secp256k1",
        frost_suite=None,
        curve="secp256k1",
        raw_message="digest32",
        public_key_len=33,
        public_key_encoding="SEC1 compressed",
        x_only_key=False,
        signature_len=64,
        signature_encoding="r || s, low-s",
        has_recovery_id=True,
    ),
}
FROST_SCHEMES: Final[tuple[Scheme, ...]] = tuple(s for s in SCHEMES if SCHEME_SPECS[s].is_frost)


def spec(scheme: str) -> SchemeSpec:
    """The spec of ``scheme``; ``ValueError`` for an unknown scheme."""
    try:
        return SCHEME_SPECS[scheme]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown scheme {scheme!r}") from None


# -- requests -------------------------------------------------------------------------------
Kind = Literal["raw", "payment", "settlement", "evm-tx", "message", "btc-psbt", "iso20022"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
DIGEST_KINDS: Final[tuple[Kind, ...]] = ("payment", "settlement")  # sign a payload digest
# Decoded by :func:`custody.kinds.decode` from ``payload`` (the chain-aware kinds wired so far)
DECODED_KINDS: Final[tuple[Kind, ...]] = ("evm-tx", "message", "btc-psbt", "iso20022")
# A ``btc-psbt`` request signs one BIP-340 signature per input, each a FROST item the nodes
# receive in one batch call carrying the request: at most this many inputs
MAX_PSBT_INPUTS: Final = 16
# The Bitcoin network of a BIP-340 key (its BIP-86 address), chosen at key creation
Network = Literal["mainnet", "testnet", "signet", "regtest"]
NETWORKS: Final[tuple[Network, ...]] = get_args(Network)
MAX_MESSAGE: Final = 64 * 1024  # bytes of a raw message

SignStatus = Literal["pending_approval", "signing", "signed", "rejected", "failed", "expired"]
SIGN_STATUSES: Final[tuple[SignStatus, ...]] = get_args(SignStatus)
TERMINAL_SIGN_STATUSES: Final[tuple[SignStatus, ...]] = ("signed", "rejected", "failed", "expired")

KeyStatus = Literal["pending", "active", "failed"]
KEY_STATUSES: Final[tuple[KeyStatus, ...]] = get_args(KeyStatus)
TERMINAL_KEY_STATUSES: Final[tuple[KeyStatus, ...]] = ("active", "failed")

NodeStatus = Literal["healthy", "degraded", "down", "unknown"]
NODE_STATUSES: Final[tuple[NodeStatus, ...]] = get_args(NodeStatus)

# -- node sessions (docs/NODE_API.md) -------------------------------------------------------
# multi-party sessions a coordinator starts (refresh: signer_nodes.ceremonies)
SessionKind = Literal["dkg", "ecdsa-presign", "refresh", "reshare"]
SESSION_KINDS: Final[tuple[SessionKind, ...]] = get_args(SessionKind)
SessionStatus = Literal["running", "done", "failed"]  # a node's SessionState.status
SESSION_STATUSES: Final[tuple[SessionStatus, ...]] = get_args(SessionStatus)

# -- roles ----------------------------------------------------------------------------------
Role = Literal["admin", "requester", "approver", "auditor"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
READ_ROLES: Final[tuple[Role, ...]] = ROLES  # may read keys and sign requests

# -- ids ------------------------------------------------------------------------------------
MAX_ID_LEN: Final = 40
ID_ALPHABET: Final = "[A-Za-z0-9._:-]"
ID_PATTERN: Final = rf"^{ID_ALPHABET}{{1,{MAX_ID_LEN}}}$"
_ID = re.compile(ID_PATTERN)


def is_valid_id(value: object) -> bool:
    """True for a key id or sign-request id that follows the rule above."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def new_id(prefix: Literal["key", "sr", "cer"]) -> str:
    """``prefix_`` + 32 random hex digits (128 bits from the OS CSPRNG, like a uuid4 hex
    but without building a UUID object on every request)."""
    return f"{prefix}_{os.urandom(16).hex()}"
