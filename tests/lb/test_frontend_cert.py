"""The load balancer's server certificate (custody.tls.issue_frontend): serverAuth only, the
hosts clients dial, and never mistaken for a node (no node URI, no identity binding)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from custody import tls


def test_frontend_certificate_is_a_server_certificate_for_its_hosts() -> None:
    ca = tls.make_ca("lb-test")
    cert = tls.issue_frontend(ca, tls.new_key(), ["api.example", "127.0.0.1"])
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert not san.get_values_for_type(x509.UniformResourceIdentifier)
    cert.verify_directly_issued_by(ca.cert)


def test_frontend_certificate_is_refused_as_a_node() -> None:
    ca = tls.make_ca("lb-test")
    cert = tls.issue_frontend(ca, tls.new_key(), ["node-1"])
    with pytest.raises(tls.TlsIdentityError, match="node-1"):
        tls.check_node_certificate(cert.public_bytes(Encoding.DER), "node-1", b"\x01" * 32)


def test_frontend_certificate_needs_a_host() -> None:
    with pytest.raises(ValueError, match="at least one host"):
        tls.issue_frontend(tls.make_ca("lb-test"), tls.new_key(), [])
