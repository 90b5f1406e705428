"""Mutual TLS between the coordinator and the signer nodes: a dev CA, node certificates
bound to the roster's identities, TLS 1.3 contexts (docs/SECURITY.md "Transport: mutual TLS").

Pure functions over ``cryptography`` (pyca) objects, plus the two small file helpers the
provisioner uses; the services load their contexts from files with :func:`server_context`
and :func:`client_context`. Nothing here does network I/O.

**Who is who.** The CA (``custody up`` makes a dev one, :func:`make_ca`) issues:

- each node a *server* certificate (EKU ``serverAuth`` only) from a CSR the node makes
  itself (:func:`node_csr`): the node's TLS key never leaves its data directory. The CSR
  and the certificate carry the SAN URI ``urn:tpwc:node:<node id>`` and the **identity
  binding** extension (:data:`BINDING_OID`): the node's Ed25519 identity public key (the
  ``sign_pk`` the officers pin in the governance roster) and that key's signature over
  :func:`binding_statement` (the node id and the SHA-256 of the certificate's
  SubjectPublicKeyInfo). The coordinator accepts a node's certificate only if the CA
  signed it **and** :func:`check_node_certificate` passes: SAN naming the node it meant to
  call, binding signature valid, bound key equal to the roster's ``sign_pk``. So a CA
  alone (or a rogue node holding a CA-signed certificate) cannot impersonate another node:
  it would need that node's identity key, which is sealed by the node's HSM.
- the coordinator a *client* certificate (EKU ``clientAuth`` only, SAN URI
  :data:`COORDINATOR_URI`), which every node requires. A node's certificate cannot serve
  as a client certificate (OpenSSL checks the purpose), nor the coordinator's as a server's.

Why a signed extension rather than an SPKI hash in the roster: the roster already pins one
key per node that only the node holds; binding the TLS key to it needs no new governance
field, no re-signing by the officers when a TLS certificate is renewed, and a certificate
can be re-issued by the node alone (new key, new binding, same roster).

Keys are ECDSA P-256 (every TLS 1.3 stack supports it for certificates; Ed25519 TLS
certificates are not universally accepted by clients). Both contexts set
``minimum_version = TLSv1_3``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "BINDING_OID",
    "COORDINATOR_URI",
    "NODE_URI_PREFIX",
    "TlsIdentityError",
    "Ca",
    "make_ca",
    "new_key",
    "binding_statement",
    "node_csr",
    "issue_node",
    "issue_coordinator",
    "issue_frontend",
    "check_node_certificate",
    "spki_sha256",
    "server_context",
    "client_context",
    "load_ca",
    "load_csr",
    "pem",
    "key_pem",
    "write_private",
    "write_public",
]

#: The identity-binding extension (non-critical; a UUID-derived OID, X.667 arc 2.25).
BINDING_OID = x509.ObjectIdentifier("2.25.31490942761704793865979839933092604651")
BINDING_VERSION = 1
BINDING_CONTEXT = b"tpwc/tls-binding/v1\x00"
NODE_URI_PREFIX = "urn:tpwc:node:"
COORDINATOR_URI = "urn:tpwc:coordinator"
CA_DAYS = 3650
LEAF_DAYS = 397


class TlsIdentityError(Exception):
    """A node's certificate does not prove it is the node the coordinator meant to call."""

    def __init__(self, node_id: str, detail: str) -> None:
        super().__init__(f"{node_id}: TLS identity refused: {detail}")
        self.node_id = node_id
        self.detail = detail


@dataclass(frozen=True)
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key (a node's or the coordinator's TLS key, or a CA's)."""
    return ec.generate_private_key(ec.SECP256R1())


def spki_sha256(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo (RFC 7469 s2.4's pin input)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def binding_statement(node_id: str, spki_hash: bytes) -> bytes:
    """What a node's identity key signs: context, node id, NUL, SPKI SHA-256."""
    if len(spki_hash) != 32:
        raise ValueError("spki_hash must be 32 bytes")
    return BINDING_CONTEXT + node_id.encode() + b"\x00" + spki_hash


def _binding_der(sign_pk: bytes, signature: bytes) -> bytes:
    """The extension value: a DER OCTET STRING of version (1 byte), sign_pk (32),
    signature (64)."""
    body = bytes([BINDING_VERSION]) + sign_pk + signature
    return b"\x04" + bytes([len(body)]) + body


def _parse_binding(value: bytes) -> tuple[bytes, bytes]:
    """``(sign_pk, signature)`` from the extension value, strictly (ValueError says why)."""
    if len(value) != 99 or value[:2] != b"\x04\x61":
        raise ValueError(f"binding extension is {len(value)} bytes, not a 97-byte OCTET STRING")
    if value[2] != BINDING_VERSION:
        raise ValueError(f"binding version {value[2]} unknown")
    return value[3:35], value[35:99]


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TP Wallet Custody"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_ca(cluster_id: str, *, days: int = CA_DAYS, now: dt.datetime | None = None) -> Ca:
    """A self-signed CA (RFC 5280 s4.2.1.9: cA, pathLen 0; s4.2.1.3: keyCertSign, cRLSign)."""
    key = new_key()
    now = now or _now()
    name = _name(f"tpwc dev CA {cluster_id}")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Ca(key, cert)


def _hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def node_csr(
    node_id: str,
    key: ec.EllipticCurvePrivateKey,
    sign_pk: bytes,
    sign: Callable[[bytes], bytes],
    hosts: Sequence[str],
) -> x509.CertificateSigningRequest:
    """A node's CSR (RFC 2986) for its TLS ``key``: SAN URI ``urn:tpwc:node:<id>`` and the
    hosts it is reached at, and the identity binding signed by ``sign`` (the node's Ed25519
    identity key, whose public key is ``sign_pk``)."""
    signature = sign(binding_statement(node_id, spki_sha256(key.public_key())))
    if len(sign_pk) != 32 or len(signature) != 64:
        raise ValueError("sign_pk must be 32 bytes and the signature 64")
    san = [x509.UniformResourceIdentifier(NODE_URI_PREFIX + node_id), *_hosts(hosts)]
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(node_id))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(BINDING_OID, _binding_der(sign_pk, signature)),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def _leaf(
    ca: Ca,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    san: x509.SubjectAlternativeName,
    eku: x509.ObjectIdentifier,
    days: int,
    now: dt.datetime | None,
    not_before: dt.datetime | None = None,
) -> x509.CertificateBuilder:
    now = now or _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(san, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )


def issue_node(
    ca: Ca,
    csr: x509.CertificateSigningRequest,
    *,
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    """The CA's server certificate for a node's CSR. Refused (ValueError naming the node)
    unless the CSR is self-consistent: its signature (proof of possession of the TLS key),
    one ``urn:tpwc:node:`` SAN, and a binding signature valid under the key it carries.
    (The CA checks the binding only to catch mistakes early: the coordinator's check
    against the roster, :func:`check_node_certificate`, is what grants trust.)"""
    if not csr.is_signature_valid:
        raise ValueError("CSR signature invalid (no proof of possession of its key)")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("CSR key must be ECDSA P-256")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        binding = csr.extensions.get_extension_for_oid(BINDING_OID).value
    except x509.ExtensionNotFound as exc:
        raise ValueError(f"CSR lacks {exc.oid.dotted_string}") from None
    node_id = _node_id(san)
    if node_id is None:
        raise ValueError("CSR has no single urn:tpwc:node: SAN")
    assert isinstance(binding, x509.UnrecognizedExtension)
    _verify_binding(node_id, binding.value, spki_sha256(public_key), None)
    return (
        _leaf(
            ca,
            csr.subject,
            public_key,
            san,
            ExtendedKeyUsageOID.SERVER_AUTH,
            days,
            now,
            not_before,
        )
        .add_extension(binding, critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def issue_coordinator(
    ca: Ca,
    key: ec.EllipticCurvePrivateKey,
    *,
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """The coordinator's client certificate (EKU clientAuth, SAN :data:`COORDINATOR_URI`)."""
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(COORDINATOR_URI)])
    return _leaf(
        ca,
        _name("tpwc coordinator"),
        key.public_key(),
        san,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        days,
        now,
    ).sign(ca.key, hashes.SHA256())


def issue_frontend(
    ca: Ca,
    key: ec.EllipticCurvePrivateKey,
    hosts: Sequence[str],
    *,
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A server certificate for the coordinators' load balancer (HAProxy terminates the
    clients' TLS there): EKU ``serverAuth`` only, SAN the DNS names and addresses clients
    dial. It carries no node URI and no identity binding, so the coordinator never takes
    it for a node (:func:`check_node_certificate`), and no ``clientAuth``, so no node
    takes it for the coordinator."""
    if not hosts:
        raise ValueError("a frontend certificate needs at least one host name or address")
    san = x509.SubjectAlternativeName(_hosts(hosts))
    return _leaf(
        ca, _name("tpwc api"), key.public_key(), san, ExtendedKeyUsageOID.SERVER_AUTH, days, now
    ).sign(ca.key, hashes.SHA256())


def _node_id(san: x509.SubjectAlternativeName) -> str | None:
    uris = [
        u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(NODE_URI_PREFIX)
    ]  # fmt: skip
    return uris[0][len(NODE_URI_PREFIX) :] if len(uris) == 1 else None


def _verify_binding(node_id: str, value: bytes, spki_hash: bytes, sign_pk: bytes | None) -> bytes:
    try:
        bound_pk, signature = _parse_binding(value)
    except ValueError as exc:
        raise TlsIdentityError(node_id, str(exc)) from None
    if sign_pk is not None and bound_pk != sign_pk:
        raise TlsIdentityError(
            node_id,
            f"certificate is bound to identity {bound_pk.hex()[:16]}..., not the roster's "
            f"{sign_pk.hex()[:16]}... (a certificate of another node, or of another key)",
        )
    try:
        Ed25519PublicKey.from_public_bytes(bound_pk).verify(
            signature, binding_statement(node_id, spki_hash)
        )
    except (InvalidSignature, ValueError):
        raise TlsIdentityError(
            node_id,
            "identity binding signature does not verify for this certificate's key "
            "(the TLS key is not the one the node's identity key endorsed)",
        ) from None
    return bound_pk


def check_node_certificate(der: bytes | None, node_id: str, sign_pk: bytes | None) -> bytes:
    """Check the certificate a node presented (after the CA chain was verified by the
    TLS stack) names ``node_id`` and is bound to ``sign_pk`` (the roster's pin; ``None``
    while enrolling: any valid binding, whose key the caller then compares with the
    identity the node reports). Returns the bound identity key; :class:`TlsIdentityError`
    naming the node otherwise."""
    if not der:
        raise TlsIdentityError(node_id, "no certificate presented")
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        binding = cert.extensions.get_extension_for_oid(BINDING_OID).value
    except x509.ExtensionNotFound as exc:
        raise TlsIdentityError(
            node_id, f"certificate lacks extension {exc.oid.dotted_string} (not a node certificate)"
        ) from None
    except ValueError as exc:
        raise TlsIdentityError(node_id, f"certificate does not parse: {exc}") from None
    named = _node_id(san)
    if named != node_id:
        raise TlsIdentityError(node_id, f"certificate names node {named!r}, not {node_id!r}")
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise TlsIdentityError(node_id, "certificate key is not ECDSA")
    if not isinstance(binding, x509.UnrecognizedExtension):
        raise TlsIdentityError(node_id, "binding extension malformed")
    return _verify_binding(node_id, binding.value, spki_sha256(public_key), sign_pk)


# -- contexts -------------------------------------------------------------------------------
def server_context(
    cert_file: Path, key_file: Path, ca_file: Path, password: bytes | None = None
) -> ssl.SSLContext:
    """A node's server context: TLS 1.3 only, a client certificate from ``ca_file``'s CA
    required (OpenSSL checks its EKU is clientAuth)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(ca_file))
    ctx.load_cert_chain(str(cert_file), str(key_file), password=password)
    return ctx


def client_context(
    ca_file: Path, cert_file: Path | None, key_file: Path | None, password: bytes | None = None
) -> ssl.SSLContext:
    """The coordinator's client context: TLS 1.3 only, the server verified against
    ``ca_file`` with its host name (or IP) checked; presents ``cert_file`` when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(ca_file))
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), None if key_file is None else str(key_file), password)
    return ctx


# -- files -----------------------------------------------------------------------------------
def load_ca(cert_file: Path, key_file: Path) -> Ca:
    """The CA from its PEM files (the provisioner's; the key unencrypted, 0600)."""
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_file} is not an ECDSA key")
    return Ca(key, x509.load_pem_x509_certificate(cert_file.read_bytes()))


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    return x509.load_pem_x509_csr(data)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted under ``password`` when given (the node's: HSM-sealed)."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only (0600), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    """Write a certificate (public) atomically, 0644."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
