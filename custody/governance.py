"""Governance: who may hold shares, decided by a quorum of security officers.

A governance document names the officers (each an Ed25519 public key), the quorum M of
them that must sign a change, the node roster with each node's pinned identity keys, and
the keys for which ``raw`` signing is enabled, and the custody policy (:mod:`custody.policy`:
ordered rules, allowlists with time locks, wallets and approver groups), so a policy is a
draft until the officer quorum signs the version that carries it. A document without a
policy keeps its format 1 encoding byte for byte (so its digest, and every chain built on
it, is unchanged); one with a policy is format 2, the same fields plus ``policy``.
The design follows TUF's root metadata (The Update Framework specification, section
5.3.4, "Update the root role"):

- every document has a version; version 1 is the genesis, installed on every node at
  ``node init`` as its trust anchor;
- each later version names the SHA-256 digest of the version before it, so versions form
  a chain that nobody can fork or reorder;
- a new version is valid only when M distinct officers of the *current* version signed it
  (the old quorum authorizes the change) and the new version's own quorum of its own
  officers signed it too (the new officer set can act);
- a holder keeps the highest version it has verified and never goes back: an older or
  equal version is refused as a rollback.

Every node verifies each version itself (``GovernanceState.advance``); the coordinator only
relays documents and cannot make one. This module is pure: no I/O, no clock; what it is
given is all it reads. Every refusal is a ``GovernanceError`` with a ``kind`` and a detail
naming the field, officer or node at fault.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.pwhash
import nacl.signing
import nacl.utils

from custody.policy import EMPTY_POLICY, Approver, Policy, PolicyError, check_policy, decode_policy

FORMAT = 1  # a document without a policy
FORMAT_WITH_POLICY = 2  # the same fields and ``policy``
# Issue 15: a policy with a passkey approver (``[id, {credential_id, public_key, rp_id,
# origins}]`` in an approver group, custody.passkeys) is format 3, the same fields as
# format 2. A node of an older format-2 reader refuses it rather than misreading it, and
# formats 1 and 2 keep their encodings (and digests) byte for byte.
FORMAT_WITH_PASSKEYS = 3
SIGNING_CONTEXT = b"tpwc-governance-v1\x00"
DIGEST_CONTEXT = b"tpwc-governance-digest-v1\x00"
GENESIS_PREVIOUS = bytes(32)
# In ``raw_signing_keys``: raw signing for every key. Only a development cluster's genesis
# (``custody up``) lists it; ``custody governance show`` flags it.
ALL_KEYS = "*"
MAX_DOCUMENT_BYTES = 256 * 1024
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class GovernanceErrorKind(enum.StrEnum):
    MALFORMED = "governance-malformed"
    UNCHAINED = "governance-unchained"
    UNDER_SIGNED = "governance-under-signed"
    ROLLBACK = "governance-rollback"
    WRONG_CLUSTER = "governance-wrong-cluster"


class GovernanceError(Exception):
    """A governance document refused; ``kind`` says why, the message says what."""

    def __init__(self, kind: GovernanceErrorKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _malformed(detail: str) -> GovernanceError:
    return GovernanceError(GovernanceErrorKind.MALFORMED, detail)


@dataclass(frozen=True)
class Officer:
    """A security officer: an id and the Ed25519 public key of their own key file."""

    officer_id: str
    public_key: bytes


@dataclass(frozen=True)
class RosterNode:
    """A signer node the officers admitted, with its pinned identity keys."""

    node_id: str
    party_id: int
    sign_pk: bytes  # Ed25519, signs envelopes and node statements
    box_pk: bytes  # X25519, receives point-to-point payloads


@dataclass(frozen=True)
class PinnedCoordinator:
    """A coordinator the officers admitted (issue 14): a name and the Ed25519 identity key
    whose signature on a node request (custody.nodeauth) the nodes accept. Its TLS client
    certificate is bound by the CA (custody.tls), which the nodes trust for coordinators;
    nothing more of it is pinned here (docs/SECURITY.md "Coordinator identities")."""

    name: str
    public_key: bytes


@dataclass(frozen=True)
class Governance:
    """One version of the governance document (the body the officers sign)."""

    cluster_id: str
    version: int
    previous: bytes
    officers: tuple[Officer, ...]
    quorum: int
    roster: tuple[RosterNode, ...]
    raw_signing_keys: frozenset[str] = field(default_factory=frozenset)
    policy: Policy = EMPTY_POLICY
    # Issue 14: the coordinators whose signed requests nodes accept. ``None`` (the field
    # absent from the encoding, so older versions keep their bytes and digests): each node
    # trusts the key of its ``signer_nodes init --coordinator-key``. A list is the whole
    # truth: a node's init key does not widen it.
    coordinators: tuple[PinnedCoordinator, ...] | None = None

    def encode(self) -> bytes:
        """Canonical CBOR (RFC 8949 section 4.2.1) of the body: the bytes officers sign.

        Format 1 without a policy (exactly as before policies existed), format 2 with one;
        ``coordinators`` only when the officers pinned a list (issue 14).
        """
        extra: dict[str, Any] = {} if self.policy.empty else {"policy": self.policy.to_cbor()}
        if self.coordinators is not None:
            extra["coordinators"] = [[c.name, c.public_key] for c in self.coordinators]
        return cbor2.dumps(
            {
                "format": self.format,
                "cluster_id": self.cluster_id,
                "version": self.version,
                "previous": self.previous,
                "officers": [[o.officer_id, o.public_key] for o in self.officers],
                "quorum": self.quorum,
                "roster": [[n.node_id, n.party_id, n.sign_pk, n.box_pk] for n in self.roster],
                "raw_signing_keys": sorted(self.raw_signing_keys),
                **extra,
            },
            canonical=True,
        )

    @property
    def format(self) -> int:
        """1 without a policy, 2 with one, 3 when an approver is a passkey (issue 15)."""
        if self.policy.empty:
            return FORMAT
        if any(a.passkey is not None for g in self.policy.approver_groups for a in g.approvers):
            return FORMAT_WITH_PASSKEYS
        return FORMAT_WITH_POLICY

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 over a context tag and the body: what the next version names (computed
        once per object: a body is immutable, and nodes ask for it on every request)."""
        return hashlib.sha256(DIGEST_CONTEXT + self.encode()).digest()

    def raw_enabled(self, key_id: str) -> bool:
        """Raw signing enabled for ``key_id`` (listed, or :data:`ALL_KEYS` listed: dev only)."""
        return key_id in self.raw_signing_keys or ALL_KEYS in self.raw_signing_keys

    def node(self, node_id: str) -> RosterNode | None:
        return next((n for n in self.roster if n.node_id == node_id), None)

    def node_by_party(self, party_id: int) -> RosterNode | None:
        return next((n for n in self.roster if n.party_id == party_id), None)

    def officer(self, officer_id: str) -> Officer | None:
        return next((o for o in self.officers if o.officer_id == officer_id), None)

    def coordinator(self, public_key: bytes) -> PinnedCoordinator | None:
        """The pinned coordinator of that identity key (``None`` also without a list)."""
        return next((c for c in self.coordinators or () if c.public_key == public_key), None)

    def approver(self, approver_id: str) -> Approver | None:
        """The approver of that id in any of the policy's approver groups."""
        return self.policy.approver(approver_id)

    def successor(self, **changes: Any) -> Governance:
        """A proposal for the next version: chained to this one, fields changed as given."""
        if {"version", "previous", "cluster_id"} & set(changes):
            raise ValueError("version, previous and cluster_id follow from the current version")
        proposal = replace(self, version=self.version + 1, previous=self.digest, **changes)
        check_body(proposal)
        return proposal

    def refuse_outsiders(self, node_ids: Iterable[str]) -> None:
        """Refuse a committee (or peer list) that names a node outside this roster."""
        outside = sorted(set(node_ids) - {n.node_id for n in self.roster})
        if outside:
            raise GovernanceError(
                GovernanceErrorKind.UNDER_SIGNED,
                f"not in governance version {self.version}'s roster: {', '.join(outside)}",
            )


@dataclass(frozen=True)
class OfficerSignature:
    officer_id: str
    signature: bytes


@dataclass(frozen=True)
class SignedGovernance:
    """A body and the officers' signatures over it (the unit nodes receive)."""

    body: Governance
    signatures: tuple[OfficerSignature, ...]

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "body": self.body.encode(),
                "signatures": [[s.officer_id, s.signature] for s in self.signatures],
            },
            canonical=True,
        )

    def with_signature(self, signer: nacl.signing.SigningKey, officer_id: str) -> SignedGovernance:
        """Add (or replace) ``officer_id``'s signature over the body."""
        sig = signer.sign(SIGNING_CONTEXT + self.body.encode()).signature
        kept = tuple(s for s in self.signatures if s.officer_id != officer_id)
        return SignedGovernance(self.body, (*kept, OfficerSignature(officer_id, sig)))


def unsigned(body: Governance) -> SignedGovernance:
    return SignedGovernance(check_body(body), ())


# -- strict decoding ----------------------------------------------------------------------


def _ed25519_point(raw: Any, what: str) -> bytes:
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise _malformed(f"{what}: an Ed25519 public key is 32 bytes")
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
        raise _malformed(f"{what}: not a valid Ed25519 point (off the curve or small order)")
    return raw


def _x25519_key(raw: Any, what: str) -> bytes:
    if not isinstance(raw, bytes) or len(raw) != 32 or raw == bytes(32):
        raise _malformed(f"{what}: an X25519 public key is 32 bytes, not all zero")
    return raw


def _ident(raw: Any, what: str) -> str:
    if not isinstance(raw, str) or not _ID.fullmatch(raw):
        raise _malformed(f"{what}: an id is 1-64 characters of [A-Za-z0-9._:-]")
    return raw


def check_body(body: Governance) -> Governance:
    """Structural rules of one version, whatever its signatures say."""
    _ident(body.cluster_id, "cluster_id")
    if isinstance(body.version, bool) or not isinstance(body.version, int) or body.version < 1:
        raise _malformed("version: a positive integer")
    if not isinstance(body.previous, bytes) or len(body.previous) != 32:
        raise _malformed("previous: a 32-byte digest")
    if (body.version == 1) != (body.previous == GENESIS_PREVIOUS):
        raise _malformed("previous: all zero exactly for version 1 (the genesis)")
    if not body.officers:
        raise _malformed("officers: at least one")
    seen_ids: set[str] = set()
    seen_keys: set[bytes] = set()
    for i, officer in enumerate(body.officers):
        _ident(officer.officer_id, f"officers[{i}].officer_id")
        _ed25519_point(officer.public_key, f"officer {officer.officer_id}: public_key")
        if officer.officer_id in seen_ids:
            raise _malformed(f"officers: duplicate officer id {officer.officer_id}")
        if officer.public_key in seen_keys:
            raise _malformed(f"officer {officer.officer_id}: public key used by another officer")
        seen_ids.add(officer.officer_id)
        seen_keys.add(officer.public_key)
    if (
        isinstance(body.quorum, bool)
        or not isinstance(body.quorum, int)
        or not 1 <= body.quorum <= len(body.officers)
    ):
        raise _malformed(f"quorum: between 1 and the {len(body.officers)} officers")
    node_ids: set[str] = set()
    parties: set[int] = set()
    keys: set[bytes] = set()
    for i, node in enumerate(body.roster):
        _ident(node.node_id, f"roster[{i}].node_id")
        if isinstance(node.party_id, bool) or not isinstance(node.party_id, int):
            raise _malformed(f"node {node.node_id}: party_id is an integer")
        if not 1 <= node.party_id <= 255:
            raise _malformed(f"node {node.node_id}: party_id between 1 and 255 (0 is never an id)")
        _ed25519_point(node.sign_pk, f"node {node.node_id}: sign_pk")
        _x25519_key(node.box_pk, f"node {node.node_id}: box_pk")
        if node.node_id in node_ids:
            raise _malformed(f"roster: duplicate node id {node.node_id}")
        if node.party_id in parties:
            raise _malformed(f"node {node.node_id}: party id {node.party_id} already taken")
        if node.sign_pk in keys or node.box_pk in keys:
            raise _malformed(f"node {node.node_id}: identity key shared with another node")
        node_ids.add(node.node_id)
        parties.add(node.party_id)
        keys.update((node.sign_pk, node.box_pk))
    if body.coordinators is not None:
        if not isinstance(body.coordinators, tuple) or not body.coordinators:
            raise _malformed(
                "coordinators: at least one (leave the field out for each node's init key)"
            )
        names: set[str] = set()
        for i, coord in enumerate(body.coordinators):
            _ident(coord.name, f"coordinators[{i}].name")
            _ed25519_point(coord.public_key, f"coordinator {coord.name}: public_key")
            if coord.name in names:
                raise _malformed(f"coordinators: duplicate name {coord.name}")
            if coord.public_key in keys or coord.public_key in seen_keys:
                raise _malformed(
                    f"coordinator {coord.name}: public key is an officer's or a node's"
                )
            if any(c.public_key == coord.public_key for c in body.coordinators[:i]):
                raise _malformed(f"coordinator {coord.name}: public key used by another")
            names.add(coord.name)
    for key_id in body.raw_signing_keys:
        if not isinstance(key_id, str) or not 1 <= len(key_id) <= 128:
            raise _malformed("raw_signing_keys: key ids of 1-128 characters")
    try:
        check_policy(body.policy)
    except PolicyError as exc:
        raise _malformed(f"policy: {exc}") from exc
    for group in body.policy.approver_groups:
        for a in group.approvers:
            if a.passkey is not None:  # a P-256/Ed25519 COSE key, checked by check_policy
                continue
            _ed25519_point(a.public_key, f"approver {a.approver_id}: public_key")
            if a.public_key in seen_keys:
                raise _malformed(f"approver {a.approver_id}: public key is an officer's")
    return body


def _exact(raw: Any, fields: set[str], what: str) -> Mapping[str, Any]:
    if not isinstance(raw, dict) or set(raw) != fields:
        got = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise _malformed(f"{what}: expected fields {sorted(fields)}, got {got}")
    return raw


def _canonical_cbor(data: bytes, what: str) -> Any:
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types for truncated or bad input
        raise _malformed(f"{what}: not CBOR ({exc})") from exc
    try:
        again = cbor2.dumps(value, canonical=True)
    except Exception as exc:
        raise _malformed(f"{what}: holds values with no canonical encoding") from exc
    if again != data:
        raise _malformed(f"{what}: CBOR is not in canonical form (RFC 8949 section 4.2.1)")
    return value


def _list(raw: Any, what: str) -> Sequence[Any]:
    if not isinstance(raw, list):
        raise _malformed(f"{what}: a list")
    return raw


def _pair_list(raw: Any, width: int, what: str) -> list[list[Any]]:
    items = _list(raw, what)
    for i, item in enumerate(items):
        if not isinstance(item, list) or len(item) != width:
            raise _malformed(f"{what}[{i}]: a list of {width}")
    return list(items)


def decode_body(data: bytes) -> Governance:
    fields = {
        "format",
        "cluster_id",
        "version",
        "previous",
        "officers",
        "quorum",
        "roster",
        "raw_signing_keys",
    }
    value = _canonical_cbor(data, "body")
    fmt = value.get("format") if isinstance(value, dict) else None
    if fmt in (FORMAT_WITH_POLICY, FORMAT_WITH_PASSKEYS):
        fields.add("policy")
    if isinstance(value, dict) and "coordinators" in value:  # issue 14, any format
        fields.add("coordinators")
    raw = _exact(value, fields, "body")
    if raw["format"] not in (FORMAT, FORMAT_WITH_POLICY, FORMAT_WITH_PASSKEYS):
        raise _malformed(
            f"format: {raw['format']!r} is not {FORMAT}, {FORMAT_WITH_POLICY} or"
            f" {FORMAT_WITH_PASSKEYS}"
        )
    policy = EMPTY_POLICY
    if fmt in (FORMAT_WITH_POLICY, FORMAT_WITH_PASSKEYS):
        try:
            policy = decode_policy(raw["policy"])
        except PolicyError as exc:
            raise _malformed(f"policy: {exc}") from exc
        if policy.empty:
            raise _malformed(
                f"format: {FORMAT_WITH_POLICY} with an empty policy is format {FORMAT}"
            )
    raw_keys = _list(raw["raw_signing_keys"], "raw_signing_keys")
    if any(not isinstance(k, str) for k in raw_keys) or len(set(raw_keys)) != len(raw_keys):
        raise _malformed("raw_signing_keys: distinct strings")
    body = Governance(
        cluster_id=raw["cluster_id"],
        version=raw["version"],
        previous=raw["previous"],
        officers=tuple(Officer(o[0], o[1]) for o in _pair_list(raw["officers"], 2, "officers")),
        quorum=raw["quorum"],
        roster=tuple(
            RosterNode(n[0], n[1], n[2], n[3]) for n in _pair_list(raw["roster"], 4, "roster")
        ),
        raw_signing_keys=frozenset(raw_keys),
        policy=policy,
        coordinators=(
            None
            if "coordinators" not in raw
            else tuple(
                PinnedCoordinator(c[0], c[1])
                for c in _pair_list(raw["coordinators"], 2, "coordinators")
            )
        ),
    )
    check_body(body)
    if body.format != fmt:  # format 3 exactly when an approver is a passkey
        raise _malformed(f"format: {fmt} for a document of format {body.format}")
    if body.encode() != data:  # e.g. a rule field present with a null value
        raise _malformed("body: not in the one encoding of its content")
    return body


def decode(data: bytes) -> SignedGovernance:
    """Strictly decode a signed document (canonical CBOR, exact fields, valid keys)."""
    if not isinstance(data, bytes) or len(data) > MAX_DOCUMENT_BYTES:
        raise _malformed(f"document: bytes of at most {MAX_DOCUMENT_BYTES}")
    raw = _exact(_canonical_cbor(data, "document"), {"body", "signatures"}, "document")
    if not isinstance(raw["body"], bytes):
        raise _malformed("body: bytes")
    body = decode_body(raw["body"])
    signatures = []
    for i, (officer_id, sig) in enumerate(_pair_list(raw["signatures"], 2, "signatures")):
        _ident(officer_id, f"signatures[{i}].officer_id")
        if not isinstance(sig, bytes) or len(sig) != 64:
            raise _malformed(f"signature of {officer_id}: 64 bytes")
        signatures.append(OfficerSignature(officer_id, sig))
    if len({s.officer_id for s in signatures}) != len(signatures):
        raise _malformed("signatures: one per officer")
    return SignedGovernance(body, tuple(signatures))


# -- verification -------------------------------------------------------------------------


def valid_signers(doc: SignedGovernance, officers: Sequence[Officer]) -> set[str]:
    """The ids of ``officers`` whose signature over the body verifies."""
    message = SIGNING_CONTEXT + doc.body.encode()
    keys = {o.officer_id: o.public_key for o in officers}
    good: set[str] = set()
    for sig in doc.signatures:
        key = keys.get(sig.officer_id)
        if key is None:
            continue
        try:
            nacl.signing.VerifyKey(key).verify(message, sig.signature)
        except nacl.exceptions.BadSignatureError:
            continue
        good.add(sig.officer_id)
    return good


def _require_quorum(
    doc: SignedGovernance, officers: Sequence[Officer], quorum: int, who: str
) -> None:
    good = valid_signers(doc, officers)
    if len(good) < quorum:
        bad = sorted(
            s.officer_id
            for s in doc.signatures
            if s.officer_id in {o.officer_id for o in officers} and s.officer_id not in good
        )
        strangers = sorted(
            s.officer_id
            for s in doc.signatures
            if s.officer_id not in {o.officer_id for o in officers}
        )
        detail = (
            f"version {doc.body.version} has {len(good)} valid signatures of {who}, needs {quorum}"
        )
        if bad:
            detail += f"; invalid signature from {', '.join(bad)}"
        if strangers:
            detail += f"; signed by non-officers {', '.join(strangers)}"
        raise GovernanceError(GovernanceErrorKind.UNDER_SIGNED, detail)


def verify_genesis(doc: SignedGovernance, *, cluster_id: str | None = None) -> Governance:
    """Verify a version 1 document: chained to nothing, signed by its own quorum."""
    body = check_body(doc.body)
    if cluster_id is not None and body.cluster_id != cluster_id:
        raise GovernanceError(
            GovernanceErrorKind.WRONG_CLUSTER,
            f"document is for cluster {body.cluster_id}, this node serves {cluster_id}",
        )
    if body.version != 1:
        raise GovernanceError(
            GovernanceErrorKind.UNCHAINED, f"a genesis is version 1, not {body.version}"
        )
    _require_quorum(doc, body.officers, body.quorum, "its officers")
    return body


def verify_successor(current: Governance, doc: SignedGovernance) -> Governance:
    """Verify ``doc`` as the version right after ``current`` (TUF 5.3.4's two quorums)."""
    new = check_body(doc.body)
    if new.cluster_id != current.cluster_id:
        raise GovernanceError(
            GovernanceErrorKind.WRONG_CLUSTER,
            f"document is for cluster {new.cluster_id}, not {current.cluster_id}",
        )
    if new.version <= current.version:
        raise GovernanceError(
            GovernanceErrorKind.ROLLBACK,
            f"version {new.version} is not newer than the installed version {current.version}",
        )
    if new.version != current.version + 1:
        raise GovernanceError(
            GovernanceErrorKind.UNCHAINED,
            f"version {new.version} skips version {current.version + 1}: install versions in order",
        )
    if new.previous != current.digest:
        raise GovernanceError(
            GovernanceErrorKind.UNCHAINED,
            f"version {new.version} names previous {new.previous.hex()[:16]}..., but version "
            f"{current.version} is {current.digest.hex()[:16]}...",
        )
    _require_quorum(doc, current.officers, current.quorum, f"version {current.version}'s officers")
    _require_quorum(doc, new.officers, new.quorum, "its own officers")
    return new


@dataclass
class GovernanceState:
    """What one holder (a node) has verified: the highest version, never going back."""

    current: Governance

    @classmethod
    def from_genesis(
        cls, doc: SignedGovernance, *, cluster_id: str | None = None
    ) -> GovernanceState:
        return cls(verify_genesis(doc, cluster_id=cluster_id))

    def advance(self, doc: SignedGovernance) -> Governance:
        """Verify and install the next version; the state is unchanged on any refusal."""
        self.current = verify_successor(self.current, doc)
        return self.current


# -- officer and approver key files -------------------------------------------------------
# A principal's key (an officer's or an approver's) is an Ed25519 seed, kept in a file
# encrypted under a passphrase with libsodium: Argon2id (crypto_pwhash, RFC 9106) derives a
# key for XChaCha20-Poly1305 (crypto_aead_xchacha20poly1305_ietf). Only the public key ever
# leaves the file. The header names the kind of principal (``tpwc-officer-key-v1`` with
# ``officer_id``, ``tpwc-approver-key-v1`` with ``approver_id``), so an approver's file is
# never taken for an officer's, nor the other way round.

PrincipalKind = Literal["officer", "approver"]
KEY_FILE_FORMATS: dict[str, str] = {
    "officer": "tpwc-officer-key-v1",
    "approver": "tpwc-approver-key-v1",
}
KEY_FILE_FORMAT = KEY_FILE_FORMATS["officer"]


@dataclass(frozen=True)
class KdfCost:
    opslimit: int
    memlimit: int


# libsodium's "moderate" cost (3 passes, 256 MiB) for real officers; tests use "interactive".
MODERATE = KdfCost(
    nacl.bindings.crypto_pwhash_argon2id_OPSLIMIT_MODERATE,
    nacl.bindings.crypto_pwhash_argon2id_MEMLIMIT_MODERATE,
)
INTERACTIVE = KdfCost(
    nacl.bindings.crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE,
    nacl.bindings.crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE,
)


class OfficerKeyError(Exception):
    """A key file that cannot be opened: wrong passphrase, damaged, not ours or of another
    kind of principal (the name is historical: approver key files raise it too)."""


KeyFileError = OfficerKeyError


@dataclass(frozen=True)
class PrincipalKey:
    """The public side of a key file: kind of principal, id and Ed25519 public key."""

    kind: PrincipalKind
    principal_id: str
    public_key: bytes


def _kdf(passphrase: bytes, salt: bytes, cost: KdfCost) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
        passphrase,
        salt,
        opslimit=cost.opslimit,
        memlimit=cost.memlimit,
    )


def _kind_format(kind: str) -> str:
    try:
        return KEY_FILE_FORMATS[kind]
    except KeyError:
        raise ValueError(f"unknown principal kind {kind!r}") from None


def _key_file_header(
    principal_id: str, public_key: bytes, salt: bytes, cost: KdfCost, kind: str = "officer"
) -> bytes:
    return cbor2.dumps(
        {
            "format": _kind_format(kind),
            f"{kind}_id": principal_id,
            "public_key": public_key,
            "salt": salt,
            "opslimit": cost.opslimit,
            "memlimit": cost.memlimit,
        },
        canonical=True,
    )


def create_principal_key(
    kind: PrincipalKind, principal_id: str, passphrase: bytes, *, cost: KdfCost = MODERATE
) -> tuple[PrincipalKey, bytes]:
    """A new key of a principal of ``kind``: its public side and the encrypted file's bytes.

    The header (kind, id, public key, KDF parameters) is the AEAD's associated data, so a
    file whose header was edited does not open.
    """
    _kind_format(kind)
    _ident(principal_id, f"{kind}_id")
    if len(passphrase) < 8:
        raise OfficerKeyError("a passphrase has at least 8 bytes")
    signer = nacl.signing.SigningKey.generate()
    public_key = bytes(signer.verify_key)
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    header = _key_file_header(principal_id, public_key, salt, cost, kind)
    nonce = nacl.utils.random(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(signer), header, nonce, _kdf(passphrase, salt, cost)
    )
    blob = cbor2.dumps({"header": header, "nonce": nonce, "sealed": sealed}, canonical=True)
    return PrincipalKey(kind, principal_id, public_key), blob


def _key_file_fields(
    blob: bytes, kind: str = "officer"
) -> tuple[Mapping[str, Any], bytes, bytes, bytes]:
    what = f"not an {kind} key file"
    try:
        outer = cbor2.loads(blob)
        header_bytes = outer["header"]
        header = cbor2.loads(header_bytes)
        nonce, sealed = outer["nonce"], outer["sealed"]
    except Exception as exc:  # any damage reads as "not a key file"
        raise OfficerKeyError(what) from exc
    if not isinstance(header, dict) or header.get("format") != _kind_format(kind):
        other = next(
            (
                k
                for k, f in KEY_FILE_FORMATS.items()
                if isinstance(header, dict) and header.get("format") == f
            ),
            None,
        )
        if other is not None:
            raise OfficerKeyError(f"{what}: it is an {other} key file")
        raise OfficerKeyError(f"{what} (unknown format)")
    if not isinstance(header.get(f"{kind}_id"), str):
        raise OfficerKeyError(f"{what} (no {kind}_id)")
    return header, header_bytes, nonce, sealed


def read_principal_public(blob: bytes, kind: PrincipalKind) -> PrincipalKey:
    """The id and public key of a key file of ``kind`` (no passphrase needed)."""
    header = _key_file_fields(blob, kind)[0]
    return PrincipalKey(kind, header[f"{kind}_id"], header["public_key"])


def open_principal_key(
    blob: bytes, passphrase: bytes, kind: PrincipalKind
) -> tuple[PrincipalKey, nacl.signing.SigningKey]:
    """Decrypt a key file of ``kind``; a wrong passphrase or an edited file is one error."""
    header, header_bytes, nonce, sealed = _key_file_fields(blob, kind)
    try:
        cost = KdfCost(header["opslimit"], header["memlimit"])
        seed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed, header_bytes, nonce, _kdf(passphrase, header["salt"], cost)
        )
    except (nacl.exceptions.CryptoError, TypeError, ValueError, KeyError) as exc:
        raise OfficerKeyError("wrong passphrase, or the key file was altered") from exc
    signer = nacl.signing.SigningKey(seed)
    if bytes(signer.verify_key) != header["public_key"]:
        raise OfficerKeyError("key file's public key does not match its secret")
    return PrincipalKey(kind, header[f"{kind}_id"], header["public_key"]), signer


def create_officer_key(
    officer_id: str, passphrase: bytes, *, cost: KdfCost = MODERATE
) -> tuple[Officer, bytes]:
    """A new officer key: the public ``Officer`` and the encrypted key file's bytes."""
    key, blob = create_principal_key("officer", officer_id, passphrase, cost=cost)
    return Officer(key.principal_id, key.public_key), blob


def read_officer_public(blob: bytes) -> Officer:
    """The officer id and public key of a key file (no passphrase needed)."""
    key = read_principal_public(blob, "officer")
    return Officer(key.principal_id, key.public_key)


def open_officer_key(blob: bytes, passphrase: bytes) -> tuple[Officer, nacl.signing.SigningKey]:
    """Decrypt an officer key file; a wrong passphrase or an edited file is one error."""
    key, signer = open_principal_key(blob, passphrase, "officer")
    return Officer(key.principal_id, key.public_key), signer


def create_approver_key(
    approver_id: str, passphrase: bytes, *, cost: KdfCost = MODERATE
) -> tuple[Approver, bytes]:
    """A new approver key: the public ``Approver`` (to join a group by governance) and the
    encrypted key file's bytes."""
    key, blob = create_principal_key("approver", approver_id, passphrase, cost=cost)
    return Approver(key.principal_id, key.public_key), blob


def read_approver_public(blob: bytes) -> Approver:
    key = read_principal_public(blob, "approver")
    return Approver(key.principal_id, key.public_key)


def open_approver_key(blob: bytes, passphrase: bytes) -> tuple[Approver, nacl.signing.SigningKey]:
    key, signer = open_principal_key(blob, passphrase, "approver")
    return Approver(key.principal_id, key.public_key), signer


# -- ceremony authorizations ----------------------------------------------------------------
# A key ceremony (a proactive refresh, a resharing, an OT re-setup, a restore) changes who
# holds shares of a key, or what they hold; like a governance version it needs the officer
# quorum (issue 13, "each ceremony is authorized by the officer quorum and verified by the
# nodes"). The statement is canonical CBOR (RFC 8949 section 4.2.1) of the fields below,
# signed by officers as governance versions are (Ed25519 over a context tag and the body;
# its own tag, so a governance signature is never an authorization nor the other way round)
# and verified by every node against the quorum of the governance version it holds
# (:func:`verify_ceremony_authorization`). The coordinator relays it and can change none of
# it: kind, key, its public key and scheme, the share version it applies to, the committee
# after the ceremony (node ids), its threshold and the threshold before, an explicit flag to
# lower the threshold, the issue and expiry times and a ceremony id that nodes accept once.
# A ``restore`` names one key, the share version of the backup and, as its committee, the
# one restored node; each other member of the key's committee checks it before it adopts
# that node's restored share (signer_nodes.backup.adopt).

CEREMONY_AUTH_FORMAT = "tpwc-ceremony-authorization-v1"
CEREMONY_AUTH_CONTEXT = b"tpwc-ceremony-authorization-v1\x00"
CEREMONY_KINDS = ("refresh", "reshare", "ot-resetup", "restore")
#: the longest an authorization may be valid (expires_at - issued_at), in seconds
MAX_CEREMONY_AUTH_LIFETIME = 24 * 3600
MAX_CEREMONY_AUTH_BYTES = 16 * 1024
_AUTH_FIELDS = {
    "format",
    "cluster_id",
    "ceremony_id",
    "kind",
    "key_id",
    "scheme",
    "public_key",
    "share_version",
    "committee",
    "threshold",
    "previous_threshold",
    "lower_threshold",
    "issued_at",
    "expires_at",
}


class CeremonyAuthErrorKind(enum.StrEnum):
    """Why a ceremony authorization is refused; the values are the nodes' stable 403 codes."""

    MISSING = "ceremony-unauthorized"
    MALFORMED = "ceremony-authorization-malformed"
    UNDER_SIGNED = "ceremony-authorization-under-signed"
    EXPIRED = "ceremony-authorization-expired"
    REPLAYED = "ceremony-authorization-replayed"
    MISMATCH = "ceremony-authorization-mismatch"
    THRESHOLD_DROP = "ceremony-threshold-drop"


class CeremonyAuthError(Exception):
    """A ceremony authorization refused: ``kind`` is the stable code, the detail names the
    field or officer at fault."""

    def __init__(self, kind: CeremonyAuthErrorKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _auth_malformed(detail: str) -> CeremonyAuthError:
    return CeremonyAuthError(CeremonyAuthErrorKind.MALFORMED, detail)


def _auth_int(raw: Any, what: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise _auth_malformed(f"{what}: an integer in [{low}, {high}]")
    return raw


@dataclass(frozen=True)
class CeremonyAuthorization:
    """The body the officers sign (see the section comment above)."""

    cluster_id: str
    ceremony_id: str  # the nonce: every node accepts one id once
    kind: str
    key_id: str
    scheme: str
    public_key: bytes  # the key's public key as stored (its encoding per scheme)
    share_version: int  # the share version the ceremony starts from
    committee: tuple[str, ...]  # node ids holding the key after the ceremony, sorted
    threshold: int  # after the ceremony
    previous_threshold: int  # before it (checked by every current holder)
    issued_at: int  # unix seconds
    expires_at: int  # unix seconds
    lower_threshold: bool = False  # must be True when threshold < previous_threshold

    def encode(self) -> bytes:
        check_ceremony_body(self)
        return cbor2.dumps(
            {
                "format": CEREMONY_AUTH_FORMAT,
                "cluster_id": self.cluster_id,
                "ceremony_id": self.ceremony_id,
                "kind": self.kind,
                "key_id": self.key_id,
                "scheme": self.scheme,
                "public_key": self.public_key,
                "share_version": self.share_version,
                "committee": list(self.committee),
                "threshold": self.threshold,
                "previous_threshold": self.previous_threshold,
                "lower_threshold": self.lower_threshold,
                "issued_at": self.issued_at,
                "expires_at": self.expires_at,
            },
            canonical=True,
        )

    @functools.cached_property
    def digest(self) -> bytes:
        return hashlib.sha256(CEREMONY_AUTH_CONTEXT + self.encode()).digest()


def check_ceremony_body(a: CeremonyAuthorization) -> CeremonyAuthorization:
    """Structural rules of an authorization, whatever its signatures say."""
    _ident_auth(a.cluster_id, "cluster_id")
    _ident_auth(a.ceremony_id, "ceremony_id")
    if a.kind not in CEREMONY_KINDS:
        raise _auth_malformed(f"kind: one of {list(CEREMONY_KINDS)}, not {a.kind!r}")
    if not isinstance(a.key_id, str) or not 1 <= len(a.key_id) <= 128:
        raise _auth_malformed("key_id: 1-128 characters")
    if not isinstance(a.scheme, str) or not 1 <= len(a.scheme) <= 32:
        raise _auth_malformed("scheme: a scheme name")
    if not isinstance(a.public_key, bytes) or len(a.public_key) not in (32, 33):
        raise _auth_malformed("public_key: 32 or 33 bytes")
    _auth_int(a.share_version, "share_version", 1, 2**31)
    if not isinstance(a.committee, tuple) or not a.committee:
        raise _auth_malformed("committee: at least one node id")
    for i, n in enumerate(a.committee):
        _ident_auth(n, f"committee[{i}]")
    if list(a.committee) != sorted(set(a.committee)):
        raise _auth_malformed("committee: distinct node ids in sorted order")
    _auth_int(a.threshold, "threshold", 2, 255)
    _auth_int(a.previous_threshold, "previous_threshold", 2, 255)
    if a.kind == "restore":
        # a restore names the one node that takes the restored share (its committee), and
        # keeps the key's threshold: the other members adopt it (signer_nodes.backup.adopt)
        if len(a.committee) != 1:
            raise _auth_malformed("committee: a restore names exactly the restored node")
    elif a.threshold > len(a.committee):
        raise _auth_malformed(
            f"threshold: {a.threshold} is more than the committee's {len(a.committee)} nodes"
        )
    if not isinstance(a.lower_threshold, bool):
        raise _auth_malformed("lower_threshold: a boolean")
    if a.kind != "reshare" and (a.threshold != a.previous_threshold or a.lower_threshold):
        raise _auth_malformed(f"threshold: a {a.kind} keeps the threshold")
    if a.threshold < a.previous_threshold and not a.lower_threshold:
        raise CeremonyAuthError(
            CeremonyAuthErrorKind.THRESHOLD_DROP,
            f"threshold: {a.previous_threshold} -> {a.threshold} lowers the threshold, which "
            "the authorization must say explicitly (lower_threshold)",
        )
    if a.lower_threshold and a.threshold >= a.previous_threshold:
        raise _auth_malformed("lower_threshold: set, but the threshold does not drop")
    _auth_int(a.issued_at, "issued_at", 0, 2**40)
    _auth_int(a.expires_at, "expires_at", 0, 2**40)
    if not 0 < a.expires_at - a.issued_at <= MAX_CEREMONY_AUTH_LIFETIME:
        raise _auth_malformed(
            f"expires_at: after issued_at and at most {MAX_CEREMONY_AUTH_LIFETIME} s later"
        )
    return a


def _ident_auth(raw: Any, what: str) -> str:
    if not isinstance(raw, str) or not _ID.fullmatch(raw):
        raise _auth_malformed(f"{what}: an id is 1-64 characters of [A-Za-z0-9._:-]")
    return raw


@dataclass(frozen=True)
class SignedCeremonyAuthorization:
    """An authorization body and the officers' signatures over it."""

    body: CeremonyAuthorization
    signatures: tuple[OfficerSignature, ...] = ()

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "body": self.body.encode(),
                "signatures": [[s.officer_id, s.signature] for s in self.signatures],
            },
            canonical=True,
        )

    def with_signature(
        self, signer: nacl.signing.SigningKey, officer_id: str
    ) -> SignedCeremonyAuthorization:
        """Add (or replace) ``officer_id``'s signature over the body."""
        sig = signer.sign(CEREMONY_AUTH_CONTEXT + self.body.encode()).signature
        kept = tuple(s for s in self.signatures if s.officer_id != officer_id)
        return SignedCeremonyAuthorization(self.body, (*kept, OfficerSignature(officer_id, sig)))


def decode_ceremony_authorization(data: bytes) -> SignedCeremonyAuthorization:
    """Strictly decode a signed authorization (canonical CBOR, exact fields)."""
    if not isinstance(data, bytes) or not 0 < len(data) <= MAX_CEREMONY_AUTH_BYTES:
        raise _auth_malformed(f"authorization: bytes of at most {MAX_CEREMONY_AUTH_BYTES}")
    try:
        outer = _exact(
            _canonical_cbor(data, "authorization"), {"body", "signatures"}, "authorization"
        )
        if not isinstance(outer["body"], bytes):
            raise _malformed("body: bytes")
        raw = _exact(_canonical_cbor(outer["body"], "authorization body"), _AUTH_FIELDS, "body")
        sigs = _pair_list(outer["signatures"], 2, "signatures")
    except GovernanceError as exc:
        raise _auth_malformed(exc.detail) from None
    if raw["format"] != CEREMONY_AUTH_FORMAT:
        raise _auth_malformed(f"format: {raw['format']!r} is not {CEREMONY_AUTH_FORMAT}")
    committee = raw["committee"]
    if not isinstance(committee, list):
        raise _auth_malformed("committee: a list of node ids")
    body = CeremonyAuthorization(
        cluster_id=raw["cluster_id"],
        ceremony_id=raw["ceremony_id"],
        kind=raw["kind"],
        key_id=raw["key_id"],
        scheme=raw["scheme"],
        public_key=raw["public_key"],
        share_version=raw["share_version"],
        committee=tuple(committee),
        threshold=raw["threshold"],
        previous_threshold=raw["previous_threshold"],
        lower_threshold=raw["lower_threshold"],
        issued_at=raw["issued_at"],
        expires_at=raw["expires_at"],
    )
    check_ceremony_body(body)
    if body.encode() != outer["body"]:
        raise _auth_malformed("body: not in the one encoding of its content")
    signatures = []
    for i, (officer_id, sig) in enumerate(sigs):
        _ident_auth(officer_id, f"signatures[{i}].officer_id")
        if not isinstance(sig, bytes) or len(sig) != 64:
            raise _auth_malformed(f"signature of {officer_id}: 64 bytes")
        signatures.append(OfficerSignature(officer_id, sig))
    if len({s.officer_id for s in signatures}) != len(signatures):
        raise _auth_malformed("signatures: one per officer")
    return SignedCeremonyAuthorization(body, tuple(signatures))


def verify_ceremony_authorization(
    data: bytes, current: Governance, now: int
) -> CeremonyAuthorization:
    """Decode ``data`` and verify it under ``current``: its cluster, the quorum of its
    officers (distinct, valid signatures), not expired at ``now`` (unix seconds) nor issued
    in the future (60 s of clock skew allowed). What it authorizes (key, kind, committee,
    threshold, share version) the caller compares with the ceremony it is asked to run."""
    doc = decode_ceremony_authorization(data)
    a = doc.body
    if a.cluster_id != current.cluster_id:
        raise CeremonyAuthError(
            CeremonyAuthErrorKind.MISMATCH,
            f"cluster_id: the authorization is for {a.cluster_id}, not {current.cluster_id}",
        )
    message = CEREMONY_AUTH_CONTEXT + a.encode()
    keys = {o.officer_id: o.public_key for o in current.officers}
    good: set[str] = set()
    bad: list[str] = []
    strangers: list[str] = []
    for s in doc.signatures:
        key = keys.get(s.officer_id)
        if key is None:
            strangers.append(s.officer_id)
            continue
        try:
            nacl.signing.VerifyKey(key).verify(message, s.signature)
        except nacl.exceptions.BadSignatureError:
            bad.append(s.officer_id)
            continue
        good.add(s.officer_id)
    if len(good) < current.quorum:
        detail = (
            f"ceremony {a.ceremony_id} has {len(good)} valid officer signatures under "
            f"governance version {current.version}, needs {current.quorum}"
        )
        if bad:
            detail += f"; invalid signature from {', '.join(sorted(bad))}"
        if strangers:
            detail += f"; signed by non-officers {', '.join(sorted(strangers))}"
        raise CeremonyAuthError(CeremonyAuthErrorKind.UNDER_SIGNED, detail)
    if now >= a.expires_at:
        raise CeremonyAuthError(
            CeremonyAuthErrorKind.EXPIRED,
            f"ceremony {a.ceremony_id}'s authorization expired at {a.expires_at} (now {now})",
        )
    if a.issued_at > now + 60:
        raise CeremonyAuthError(
            CeremonyAuthErrorKind.EXPIRED,
            f"ceremony {a.ceremony_id}'s authorization is issued at {a.issued_at}, in the future",
        )
    return a
