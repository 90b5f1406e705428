"""Node share backups: the on-disk format, its verification, recovery key files (issue 13).

A backup of one node is a directory ``DIR/<node_id>/`` written by that node's own process
(``python -m signer_nodes backup export``, :mod:`signer_nodes.backup`)::

    manifest.json      {"manifest": BODY, "signature": hex Ed25519 by the node identity}
    <key_id>.age       the share, age-encrypted (X25519 recipients) to the recovery keys

``BODY`` names the node (id, party, the ``sign_pk`` the roster pins), the recipients, the
governance version it was made under, and per key: scheme, share version, a digest of the
share, the public key package values (public key, threshold, verifying shares, network,
the committee's party ids), the file and its SHA-256. The node signs
``"tpwc-backup-manifest-v1\\0" || canonical JSON of BODY`` with its identity key.

The plaintext share exists only in the exporting node's memory (it is encrypted before
anything is written) and in the restoring node's memory (it is sealed by that node's HSM
before anything is written). Nothing here decrypts a share: verification reads the
manifest, its signature, the age headers and the file digests only.

Recovery identities are age X25519 secret keys kept in a passphrase-encrypted age file
(age's scrypt recipient): :func:`create_identity_file` and :func:`open_identity_file`.

Imports nothing of ours but :mod:`custody.governance` (the roster check).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
import pyrage
from pyrage import passphrase as age_passphrase
from pyrage import x25519

from custody import governance as gov

__all__ = [
    "FORMAT",
    "MANIFEST",
    "BackupError",
    "NodeBackup",
    "manifest_statement",
    "share_digest",
    "parse_recipients",
    "check_age_header",
    "load_node_backup",
    "verify_backups",
    "create_identity_file",
    "open_identity_file",
    "recipient_of",
    "RestoreAuthorization",
]

FORMAT = "tpwc-backup-v1"
MANIFEST = "manifest.json"
STATEMENT_CONTEXT = b"tpwc-backup-manifest-v1\x00"
SHARE_DIGEST_CONTEXT = b"tpwc-backup-share-v1\x00"
AGE_VERSION_LINE = b"age-encryption.org/v1\n"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
PASSPHRASE_ENV = "CUSTODY_RECOVERY_PASSPHRASE"  # noqa: S105 - a variable name


class BackupError(Exception):
    """A backup refused: ``code`` is stable, ``detail`` names the node, key and file."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def canon(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_statement(body: Mapping[str, Any]) -> bytes:
    """The bytes a node's identity key signs for a manifest body."""
    return STATEMENT_CONTEXT + canon(body)


def share_digest(key_id: str, share_version: int, share: bytes) -> str:
    """A digest that names one share (the share version's identity in a backup)."""
    h = hashlib.sha256(SHARE_DIGEST_CONTEXT)
    h.update(canon([key_id, share_version]))
    h.update(share)
    return h.hexdigest()


def parse_recipients(recipients: Iterable[str]) -> list[x25519.Recipient]:
    """age X25519 recipients (``age1...``), each checked; at least one."""
    out = []
    for r in recipients:
        try:
            out.append(x25519.Recipient.from_str(r.strip()))
        except (pyrage.RecipientError, ValueError):
            raise BackupError("bad-recipient", f"{r!r} is not an age X25519 recipient") from None
    if not out:
        raise BackupError("bad-recipient", "at least one --recipient is needed")
    return out


def check_age_header(data: bytes, recipients: int, where: str) -> None:
    """An age v1 file with exactly ``recipients`` X25519 stanzas and a MAC line.

    The header cannot say *which* keys it is encrypted to (X25519 stanzas hold only an
    ephemeral share); that is checked by decrypting, at restore."""
    if not data.startswith(AGE_VERSION_LINE):
        raise BackupError("age-malformed", f"{where}: not an age v1 file")
    end = data.find(b"\n---", len(AGE_VERSION_LINE))
    if end < 0:
        raise BackupError("age-malformed", f"{where}: age header has no MAC line")
    stanzas = [ln for ln in data[len(AGE_VERSION_LINE) : end].split(b"\n") if ln.startswith(b"->")]
    kinds = [s.split(b" ")[1] if len(s.split(b" ")) > 1 else b"" for s in stanzas]
    # rage adds a random "grease" stanza (the age spec: unknown stanzas are ignored)
    kinds = [k for k in kinds if not k.endswith(b"-grease")]
    if any(k != b"X25519" for k in kinds):
        bad = sorted({k.decode(errors="replace") for k in kinds if k != b"X25519"})
        raise BackupError("age-not-x25519", f"{where}: recipient stanzas of type {bad}")
    if len(kinds) != recipients:
        raise BackupError(
            "age-recipients-mismatch",
            f"{where}: {len(kinds)} X25519 recipient stanzas, the manifest names {recipients}",
        )


@dataclass
class NodeBackup:
    """One node's backup directory, its manifest verified (signature, files)."""

    path: Path
    body: dict[str, Any]
    signature: bytes

    @property
    def node_id(self) -> str:
        return str(self.body["node_id"])

    @property
    def party_id(self) -> int:
        return int(self.body["party_id"])

    @property
    def sign_pk(self) -> bytes:
        return bytes.fromhex(self.body["sign_pk"])

    @property
    def keys(self) -> list[dict[str, Any]]:
        return list(self.body["keys"])

    def entry(self, key_id: str) -> dict[str, Any]:
        for k in self.keys:
            if k["key_id"] == key_id:
                return k
        raise BackupError("key-missing", f"{self.node_id}: no share of key {key_id!r}")

    def age_file(self, key_id: str) -> bytes:
        """The age file of ``key_id``, its digest and header checked against the manifest."""
        e = self.entry(key_id)
        p = self.path / e["file"]
        try:
            data: bytes = p.read_bytes()
        except OSError:
            raise BackupError(
                "share-missing", f"{self.node_id}: {e['file']} (key {key_id}) is missing"
            ) from None
        if hashlib.sha256(data).hexdigest() != e["file_sha256"]:
            raise BackupError(
                "share-tampered",
                f"{self.node_id}: {e['file']} (key {key_id}) does not match the signed "
                "manifest's SHA-256",
            )
        check_age_header(data, len(self.body["recipients"]), f"{self.node_id}/{e['file']}")
        return data


_BODY_FIELDS = {
    "format",
    "node_id",
    "party_id",
    "sign_pk",
    "cluster_id",
    "governance_version",
    "created_at",
    "recipients",
    "keys",
}
_KEY_FIELDS = {
    "key_id",
    "scheme",
    "share_version",
    "share_digest",
    "public_key",
    "min_signers",
    "verifying_shares",
    "network",
    "committee",
    "file",
    "file_sha256",
}


def load_node_backup(path: Path, *, sign_pk: bytes | None = None) -> NodeBackup:
    """Read ``path/manifest.json``, check its shape and its signature (under ``sign_pk``
    when given, else under the key the manifest names), and every file it lists."""
    mf = path / MANIFEST
    try:
        doc = json.loads(mf.read_text())
    except OSError:
        raise BackupError("manifest-missing", f"{path}: no {MANIFEST}") from None
    except ValueError:
        raise BackupError("manifest-malformed", f"{mf}: not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"manifest", "signature"}:
        raise BackupError("manifest-malformed", f"{mf}: needs exactly manifest and signature")
    body = doc["manifest"]
    if not isinstance(body, dict) or set(body) != _BODY_FIELDS or body["format"] != FORMAT:
        raise BackupError("manifest-malformed", f"{mf}: not a {FORMAT} manifest body")
    if not isinstance(body["keys"], list) or any(
        not isinstance(k, dict) or set(k) != _KEY_FIELDS for k in body["keys"]
    ):
        raise BackupError("manifest-malformed", f"{mf}: malformed key entries")
    try:
        signature = bytes.fromhex(doc["signature"])
        named = bytes.fromhex(body["sign_pk"])
    except (TypeError, ValueError):
        raise BackupError("manifest-malformed", f"{mf}: signature and sign_pk are hex") from None
    expected = named if sign_pk is None else sign_pk
    if named != expected:
        raise BackupError(
            "manifest-wrong-signer",
            f"{body['node_id']}: the manifest names sign_pk {named.hex()[:16]}..., the roster "
            f"pins {expected.hex()[:16]}...",
        )
    try:
        nacl.signing.VerifyKey(expected).verify(manifest_statement(body), signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        raise BackupError(
            "manifest-bad-signature",
            f"{body['node_id']}: the manifest's signature does not verify under its node's "
            f"identity key {expected.hex()[:16]}...",
        ) from None
    nb = NodeBackup(path, body, signature)
    for k in nb.keys:
        nb.age_file(k["key_id"])
    return nb


@dataclass
class BackupSet:
    """Every node backup under a directory, checked together."""

    nodes: list[NodeBackup]
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # key id -> public entry
    holders: dict[str, list[int]] = field(default_factory=dict)  # key id -> parties


def _roster_pins(chain: Sequence[gov.Governance]) -> dict[str, set[bytes]]:
    pins: dict[str, set[bytes]] = {}
    for g in chain:
        for n in g.roster:
            pins.setdefault(n.node_id, set()).add(n.sign_pk)
    return pins


def verify_backups(
    root: Path, *, governance: Sequence[gov.Governance] = (), require_all: bool = True
) -> BackupSet:
    """Verify every ``root/<node>/`` backup: manifest signatures (against the sign_pk the
    governance roster pinned for that node id in any given version, when governance is
    given), age headers, file digests; and completeness: for every key, at least its
    threshold of distinct parties, all agreeing on its public values."""
    dirs = sorted(p for p in Path(root).iterdir() if p.is_dir())
    if not dirs:
        raise BackupError("backup-empty", f"{root}: no node backup directories")
    pins = _roster_pins(governance)
    nodes = []
    for d in dirs:
        nb = load_node_backup(d)
        if governance:
            pinned = pins.get(nb.node_id)
            if not pinned:
                raise BackupError(
                    "manifest-not-in-roster", f"{nb.node_id}: not in the governance roster"
                )
            if nb.sign_pk not in pinned:
                raise BackupError(
                    "manifest-wrong-signer",
                    f"{nb.node_id}: signed by {nb.sign_pk.hex()[:16]}..., which the roster "
                    "never pinned for this node",
                )
        nodes.append(nb)
    seen_party: dict[int, str] = {}
    for nb in nodes:
        if nb.party_id in seen_party:
            raise BackupError(
                "backup-duplicate-party",
                f"{nb.node_id} and {seen_party[nb.party_id]} both hold party {nb.party_id}",
            )
        seen_party[nb.party_id] = nb.node_id
    out = BackupSet(nodes)
    public = ("scheme", "public_key", "min_signers", "verifying_shares", "network", "committee")
    for nb in nodes:
        for k in nb.keys:
            pub = {f: k[f] for f in public}
            kid = k["key_id"]
            have = out.keys.setdefault(kid, pub)
            if canon(have) != canon(pub):
                raise BackupError(
                    "backup-inconsistent",
                    f"{nb.node_id}: key {kid}'s public values differ from another node's",
                )
            out.holders.setdefault(kid, []).append(nb.party_id)
    if require_all:
        for kid, pub in out.keys.items():
            held = sorted(out.holders[kid])
            if len(held) < int(pub["min_signers"]):
                missing = sorted(set(pub["committee"]) - set(held))
                raise BackupError(
                    "backup-incomplete",
                    f"key {kid}: shares of parties {held} only, {pub['min_signers']} needed "
                    f"(missing parties {missing})",
                )
    return out


# -- recovery identities ------------------------------------------------------------------
def create_identity_file(passphrase: str) -> tuple[bytes, str]:
    """A new recovery identity: (its passphrase-encrypted age file, its ``age1`` recipient)."""
    ident = x25519.Identity.generate()
    text = f"# tpwc recovery identity\n# public key: {ident.to_public()}\n{ident}\n"
    return age_passphrase.encrypt(text.encode(), passphrase), str(ident.to_public())


#: How often :func:`open_identity_file` asks age again when it refuses the file's scrypt
#: work factor as excessive (below).
WORK_FACTOR_TRIES = 3


def _decrypt_identity(data: bytes, passphrase: str) -> bytes:
    """age's passphrase decryption, with its work-factor refusal told apart.

    age (rage, through pyrage) times a small scrypt at every decryption and refuses a file
    whose work factor is more than 16 times what it measured (about 16 s here): on a busy
    machine one slow measurement refuses a file that an idle moment encrypted, with an
    error that is not the passphrase's. pyrage offers no work-factor parameter, so that
    refusal is asked again (a new measurement) a few times, then reported by name; every
    other failure is the passphrase's (age cannot tell a wrong one from a damaged file).
    """
    for attempt in range(WORK_FACTOR_TRIES):
        try:
            return bytes(age_passphrase.decrypt(data, passphrase))
        except pyrage.DecryptError as exc:
            if "Excessive work" not in str(exc):
                break
            if attempt + 1 == WORK_FACTOR_TRIES:
                found = re.search(rb"\n-> scrypt \S+ ([0-9]+)\n", data)
                log_n = found.group(1).decode() if found else "?"
                raise BackupError(
                    "identity-work-factor",
                    f"age refused the identity file's scrypt work factor 2^{log_n} as more "
                    "than this machine can derive in about 16 s now: open it on a less busy "
                    "machine",
                ) from None
            time.sleep(0.5 * (attempt + 1))
    raise BackupError(
        "identity-wrong-passphrase", "cannot open the identity file (wrong passphrase?)"
    )


def open_identity_file(data: bytes, passphrase: str) -> x25519.Identity:
    """The X25519 identity inside a passphrase-encrypted (or, refused: plain) key file."""
    if not data.startswith(AGE_VERSION_LINE):
        raise BackupError("identity-malformed", "the identity file is not an age file")
    if data.count(b"-> scrypt ") != 1:
        raise BackupError(
            "identity-unprotected", "the identity file must be passphrase-encrypted (age -p)"
        )
    try:
        text = _decrypt_identity(data, passphrase).decode()
    except UnicodeDecodeError:
        raise BackupError("identity-malformed", "the identity file is not UTF-8 text") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(IDENTITY_PREFIX)]
    if len(lines) != 1:
        raise BackupError("identity-malformed", "the identity file holds no single X25519 key")
    try:
        return x25519.Identity.from_str(lines[0])
    except (pyrage.IdentityError, ValueError):
        raise BackupError("identity-malformed", "the identity file's key is malformed") from None


def recipient_of(identity: x25519.Identity) -> str:
    return str(identity.to_public())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- restore authorizations ---------------------------------------------------------------
AUTH_CONTEXT = b"tpwc-restore-authorization-v1\x00"


@dataclass(frozen=True)
class RestoreAuthorization:
    """The officers' word that a restored node carries on a backed-up node's key shares.

    Re-keying a roster entry alone retires every key committee the node was in (the old
    identity's share must not sign). A restore is the one case where the new identity holds
    the same share: the officers say so, for named keys, from the backed-up identity
    (``from_sign_pk``, the manifest's signer) to the one the roster now pins
    (``to_sign_pk``), signed by a quorum of the governance version that pins it."""

    cluster_id: str
    governance_version: int
    node_id: str
    party_id: int
    from_sign_pk: str
    to_sign_pk: str
    key_ids: tuple[str, ...]
    signatures: tuple[tuple[str, str], ...] = ()
    #: key id -> hex of the officers' signed ``restore`` ceremony authorization of that key
    #: (:class:`custody.governance.CeremonyAuthorization`: the key, the backup's share
    #: version, the restored node as its committee, an expiry and a one-time id); each is
    #: signed on its own, so it travels beside the body, outside the statement above
    ceremonies: tuple[tuple[str, str], ...] = ()

    def body(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "governance_version": self.governance_version,
            "node_id": self.node_id,
            "party_id": self.party_id,
            "from_sign_pk": self.from_sign_pk,
            "to_sign_pk": self.to_sign_pk,
            "key_ids": sorted(self.key_ids),
        }

    def statement(self) -> bytes:
        return AUTH_CONTEXT + canon(self.body())

    def with_signature(
        self, signer: nacl.signing.SigningKey, officer_id: str
    ) -> RestoreAuthorization:
        sig = signer.sign(self.statement()).signature.hex()
        rest = tuple(s for s in self.signatures if s[0] != officer_id)
        return RestoreAuthorization(**{**self.__dict__, "signatures": (*rest, (officer_id, sig))})

    def encode(self) -> bytes:
        return canon(
            {
                "body": self.body(),
                "signatures": [list(s) for s in self.signatures],
                "ceremonies": dict(sorted(self.ceremonies)),
            }
        )

    def ceremony(self, key_id: str) -> str | None:
        """The hex restore ceremony authorization of ``key_id``, if the file carries one."""
        return dict(self.ceremonies).get(key_id)

    @classmethod
    def decode(cls, data: bytes) -> RestoreAuthorization:
        try:
            doc = json.loads(data)
            b = doc["body"]
            return cls(
                str(b["cluster_id"]),
                int(b["governance_version"]),
                str(b["node_id"]),
                int(b["party_id"]),
                str(b["from_sign_pk"]),
                str(b["to_sign_pk"]),
                tuple(str(k) for k in b["key_ids"]),
                tuple((str(o), str(s)) for o, s in doc["signatures"]),
                tuple(sorted((str(k), str(v)) for k, v in doc.get("ceremonies", {}).items())),
            )
        except (ValueError, KeyError, TypeError):
            raise BackupError("authorization-malformed", "not a restore authorization") from None

    def verify(self, current: gov.Governance) -> None:
        """Refused unless a quorum of ``current``'s officers signed it, it names ``current``,
        and ``current``'s roster pins ``to_sign_pk`` for the node."""
        if (self.cluster_id, self.governance_version) != (current.cluster_id, current.version):
            raise BackupError(
                "authorization-stale",
                f"it names governance version {self.governance_version} of {self.cluster_id}; "
                f"version {current.version} of {current.cluster_id} is installed",
            )
        n = current.node(self.node_id)
        if n is None or n.party_id != self.party_id or n.sign_pk.hex() != self.to_sign_pk:
            raise BackupError(
                "authorization-not-roster",
                f"version {current.version}'s roster does not pin {self.node_id} with the "
                "authorized identity",
            )
        valid = set()
        for oid, sig in self.signatures:
            o = current.officer(oid)
            if o is None:
                continue
            try:
                nacl.signing.VerifyKey(o.public_key).verify(self.statement(), bytes.fromhex(sig))
            except (nacl.exceptions.BadSignatureError, ValueError):
                continue
            valid.add(oid)
        if len(valid) < current.quorum:
            raise BackupError(
                "authorization-under-signed",
                f"{len(valid)} valid officer signatures, quorum {current.quorum}",
            )
