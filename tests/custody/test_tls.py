"""custody.tls: the dev CA, node certificates bound to the roster identity, the identity
check the coordinator runs on every new node connection, and the TLS 1.3 contexts (real
handshakes over a loopback socket pair, real OpenSSL verification)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from nacl.signing import SigningKey

from custody import tls


def _node(ca: tls.Ca, node_id: str = "node-1", ident: SigningKey | None = None, **kw: object):
    ident = ident or SigningKey.generate()
    key = tls.new_key()
    csr = tls.node_csr(
        node_id,
        key,
        bytes(ident.verify_key),
        lambda m: ident.sign(m).signature,
        ["127.0.0.1", "localhost"],
    )
    return ident, key, tls.issue_node(ca, csr, **kw)  # type: ignore[arg-type]


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_ca_is_a_path_length_zero_ca() -> None:
    ca = tls.make_ca("c1")
    bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    assert ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    ca.cert.verify_directly_issued_by(ca.cert)


def test_node_certificate_names_the_node_and_is_bound_to_its_identity() -> None:
    ca = tls.make_ca("c1")
    ident, _, cert = _node(ca)
    cert.verify_directly_issued_by(ca.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:tpwc:node:node-1" in san.get_values_for_type(x509.UniformResourceIdentifier)
    pk = bytes(ident.verify_key)
    assert tls.check_node_certificate(_der(cert), "node-1", pk) == pk
    # while enrolling (no pin yet) the bound key is returned for the caller to compare
    assert tls.check_node_certificate(_der(cert), "node-1", None) == pk


def test_another_nodes_certificate_is_refused_naming_the_node() -> None:
    ca = tls.make_ca("c1")
    ident, _, cert = _node(ca, "node-3")
    with pytest.raises(tls.TlsIdentityError, match="node-2: .*names node 'node-3'"):
        tls.check_node_certificate(_der(cert), "node-2", bytes(ident.verify_key))


def test_same_ca_other_identity_key_is_refused() -> None:
    """A rogue node with a CA-signed certificate for node-2's name, bound to a key of its
    own: the roster pins node-2's identity, so it is refused."""
    ca = tls.make_ca("c1")
    real = SigningKey.generate()
    _, _, rogue = _node(ca, "node-2")
    with pytest.raises(tls.TlsIdentityError, match="node-2: .*not the roster's"):
        tls.check_node_certificate(_der(rogue), "node-2", bytes(real.verify_key))


def test_binding_copied_onto_another_tls_key_does_not_verify() -> None:
    """The real node's binding extension (signed by its identity) copied into a CA-signed
    certificate for another TLS key: the signature covers the SPKI hash, so it fails."""
    ca = tls.make_ca("c1")
    ident, _, real = _node(ca, "node-2")
    binding = real.extensions.get_extension_for_oid(tls.BINDING_OID)
    san = real.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    other = tls.new_key()
    forged = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(ca.cert.subject)
        .public_key(other.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(real.not_valid_before_utc)
        .not_valid_after(real.not_valid_after_utc)
        .add_extension(san.value, critical=False)
        .add_extension(binding.value, critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    with pytest.raises(tls.TlsIdentityError, match="binding signature does not verify"):
        tls.check_node_certificate(_der(forged), "node-2", bytes(ident.verify_key))


def test_certificate_without_binding_is_refused() -> None:
    ca = tls.make_ca("c1")
    cert = tls.issue_coordinator(ca, tls.new_key())
    with pytest.raises(tls.TlsIdentityError, match="lacks extension .*not a node certificate"):
        tls.check_node_certificate(_der(cert), "node-1", None)
    with pytest.raises(tls.TlsIdentityError, match="no certificate presented"):
        tls.check_node_certificate(None, "node-1", None)


def test_ca_refuses_a_csr_whose_binding_is_not_signed_by_the_key_it_carries() -> None:
    ca = tls.make_ca("c1")
    ident, liar = SigningKey.generate(), SigningKey.generate()
    csr = tls.node_csr(
        "node-1", tls.new_key(), bytes(ident.verify_key), lambda m: liar.sign(m).signature, []
    )
    with pytest.raises(tls.TlsIdentityError, match="node-1: .*does not verify"):
        tls.issue_node(ca, csr)


def test_binding_statement_is_domain_separated_and_checks_length() -> None:
    h = bytes(32)
    assert tls.binding_statement("n", h).startswith(b"tpwc/tls-binding/v1\x00n\x00")
    assert tls.binding_statement("n1", h) != tls.binding_statement("n", b"1" + h[1:])
    with pytest.raises(ValueError, match="32 bytes"):
        tls.binding_statement("n", b"short")


def test_encrypted_key_pem_needs_its_passphrase() -> None:
    key = tls.new_key()
    data = tls.key_pem(key, b"pass-phrase")
    assert b"ENCRYPTED" in data
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(data, password=None)
    again = serialization.load_pem_private_key(data, password=b"pass-phrase")
    assert tls.spki_sha256(again.public_key()) == tls.spki_sha256(key.public_key())  # type: ignore[arg-type]


def test_write_private_is_0600(tmp_path: Path) -> None:
    p = tmp_path / "k"
    tls.write_private(p, b"x")
    assert p.stat().st_mode & 0o777 == 0o600


# -- real handshakes over a socket pair ------------------------------------------------------
@pytest.fixture
def material(tmp_path: Path) -> dict[str, Path]:
    ca = tls.make_ca("c1")
    _, node_key, node_cert = _node(ca)
    coord_key = tls.new_key()
    files = {
        "ca": (tls.pem(ca.cert), False),
        "node.crt": (tls.pem(node_cert), False),
        "node.key": (tls.key_pem(node_key, b"pw"), True),
        "client.crt": (tls.pem(tls.issue_coordinator(ca, coord_key)), False),
        "client.key": (tls.key_pem(coord_key), True),
        "other.crt": (tls.pem(tls.issue_coordinator(tls.make_ca("rogue"), coord_key)), False),
    }
    out = {}
    for name, (data, private) in files.items():
        (tls.write_private if private else tls.write_public)(tmp_path / name, data)
        out[name] = tmp_path / name
    return out


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str | None, str | None]:
    """Run both sides over a socket pair; each side's error (None: it succeeded), after one
    byte each way (TLS 1.3 reports a refused client certificate after the handshake)."""
    a, b = socket.socketpair()
    errors: dict[str, str | None] = {"server": None, "client": None}

    def serve() -> None:
        try:
            with server.wrap_socket(a, server_side=True) as s:
                s.sendall(b"s")
                s.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors["server"] = str(exc)

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client.wrap_socket(b, server_hostname="127.0.0.1") as c:
            c.sendall(b"c")
            if not c.recv(1):
                raise ssl.SSLError("connection closed")
    except (ssl.SSLError, OSError) as exc:
        errors["client"] = str(exc)
    finally:
        b.close()
    t.join(10)
    a.close()
    return errors["server"], errors["client"]


def _server(m: dict[str, Path]) -> ssl.SSLContext:
    return tls.server_context(m["node.crt"], m["node.key"], m["ca"], b"pw")


def test_mutual_tls13_handshake(material: dict[str, Path]) -> None:
    server = _server(material)
    client = tls.client_context(material["ca"], material["client.crt"], material["client.key"])
    assert server.minimum_version == client.minimum_version == ssl.TLSVersion.TLSv1_3
    assert _handshake(server, client) == (None, None)


def test_server_refuses_a_client_without_certificate(material: dict[str, Path]) -> None:
    client = tls.client_context(material["ca"], None, None)
    server_error, client_error = _handshake(_server(material), client)
    assert server_error is not None and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in server_error
    assert client_error is not None


def test_server_refuses_a_client_certificate_of_another_ca(material: dict[str, Path]) -> None:
    client = tls.client_context(material["ca"], material["other.crt"], material["client.key"])
    server_error, _ = _handshake(_server(material), client)
    assert server_error is not None and "certificate verify failed" in server_error


def test_server_refuses_a_node_certificate_as_client(material: dict[str, Path]) -> None:
    """Role separation: a node's (serverAuth) certificate cannot act as the coordinator."""
    client = tls.client_context(material["ca"], material["node.crt"], material["node.key"], b"pw")
    server_error, _ = _handshake(_server(material), client)
    assert server_error is not None and "unsuitable certificate purpose" in server_error


def test_server_refuses_tls12(material: dict[str, Path]) -> None:
    client = tls.client_context(material["ca"], material["client.crt"], material["client.key"])
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    server_error, client_error = _handshake(_server(material), client)
    assert server_error is not None and "UNSUPPORTED_PROTOCOL" in server_error.upper()
    assert client_error is not None


def test_client_refuses_an_expired_server_certificate(tmp_path: Path) -> None:
    ca = tls.make_ca("c1")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    _, key, cert = _node(ca, now=past, days=1)
    tls.write_public(tmp_path / "ca", tls.pem(ca.cert))
    tls.write_public(tmp_path / "n.crt", tls.pem(cert))
    tls.write_private(tmp_path / "n.key", tls.key_pem(key))
    coord = tls.new_key()
    tls.write_public(tmp_path / "c.crt", tls.pem(tls.issue_coordinator(ca, coord)))
    tls.write_private(tmp_path / "c.key", tls.key_pem(coord))
    server = tls.server_context(tmp_path / "n.crt", tmp_path / "n.key", tmp_path / "ca")
    client = tls.client_context(tmp_path / "ca", tmp_path / "c.crt", tmp_path / "c.key")
    _, client_error = _handshake(server, client)
    assert client_error is not None and "certificate has expired" in client_error
