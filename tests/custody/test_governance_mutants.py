"""Governance verification, the checks mutation testing asks to pin (issue 16; docs/MUTATION.md).

Pure and fast, real Ed25519 (pynacl; the quorum signatures that count also checked by
pyca/cryptography): a stranger's or a forged signature placed *before* a valid quorum does
not stop the count (a loop that gave up at the first bad signature would refuse an honest
document, or, the other way round, count one that is not there); a genesis that is not
version 1; a successor for another cluster; a document of exactly the size bound; the
ceremony authorization's clock window at its edges."""

from __future__ import annotations

import dataclasses

import cbor2
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody import governance as gov
from custody.governance import GovernanceErrorKind as Kind

CLUSTER = "test-cluster"
NOW = 1_900_000_000


@pytest.fixture(scope="module")
def keys() -> dict[str, nacl.signing.SigningKey]:
    return {f"officer-{i}": nacl.signing.SigningKey.generate() for i in (1, 2, 3)}


def body(keys, quorum: int = 2, **changes) -> gov.Governance:
    b = gov.Governance(
        cluster_id=CLUSTER,
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=tuple(gov.Officer(o, bytes(k.verify_key)) for o, k in keys.items()),
        quorum=quorum,
        roster=(),
    )
    return dataclasses.replace(b, **changes)


def signed(b: gov.Governance, keys, *ids: str, extra=()) -> gov.SignedGovernance:
    doc = gov.SignedGovernance(b, tuple(extra))
    for o in ids:
        doc = doc.with_signature(keys[o], o)
    return doc


def test_bad_and_stranger_signatures_before_a_quorum_do_not_stop_the_count(keys) -> None:
    b = body(keys)
    rogue = nacl.signing.SigningKey.generate()
    message = gov.SIGNING_CONTEXT + b.encode()
    first = (
        gov.OfficerSignature("mallory", rogue.sign(message).signature),  # not an officer
        gov.OfficerSignature("officer-3", rogue.sign(message).signature),  # forged
    )
    doc = signed(b, keys, "officer-1", "officer-2", extra=first)
    assert [s.officer_id for s in doc.signatures][:2] == ["mallory", "officer-3"]
    assert gov.valid_signers(doc, b.officers) == {"officer-1", "officer-2"}
    assert gov.verify_genesis(gov.decode(doc.encode())) == b
    for s in doc.signatures[2:]:
        pk = Ed25519PublicKey.from_public_bytes(b.officer(s.officer_id).public_key)
        pk.verify(s.signature, message)
    # and under-signed, the message names both kinds in sorted order
    short = signed(b, keys, "officer-1", extra=first)
    with pytest.raises(gov.GovernanceError) as err:
        gov.verify_genesis(short)
    assert err.value.kind is Kind.UNDER_SIGNED
    assert err.value.detail == (
        "version 1 has 1 valid signatures of its officers, needs 2; "
        "invalid signature from officer-3; signed by non-officers mallory"
    )


def test_exactly_the_quorum_verifies_and_one_less_does_not(keys) -> None:
    b = body(keys, quorum=3)
    assert gov.verify_genesis(signed(b, keys, *keys)).quorum == 3
    with pytest.raises(gov.GovernanceError, match="2 valid signatures of its officers, needs 3$"):
        gov.verify_genesis(signed(b, keys, "officer-1", "officer-2"))


def test_a_genesis_is_version_1(keys) -> None:
    v1 = body(keys)
    v2 = v1.successor()
    with pytest.raises(gov.GovernanceError, match="^a genesis is version 1, not 2$") as err:
        gov.verify_genesis(signed(v2, keys, *keys))
    assert err.value.kind is Kind.UNCHAINED
    assert gov.verify_genesis(signed(v1, keys, *keys), cluster_id=CLUSTER) == v1
    assert gov.verify_genesis(signed(v1, keys, *keys), cluster_id=None) == v1


def test_a_successor_for_another_cluster_is_refused(keys) -> None:
    v1 = body(keys)
    v2 = dataclasses.replace(v1.successor(), cluster_id="other-cluster")
    with pytest.raises(gov.GovernanceError) as err:
        gov.verify_successor(v1, signed(v2, keys, *keys))
    assert err.value.kind is Kind.WRONG_CLUSTER
    assert err.value.detail == "document is for cluster other-cluster, not test-cluster"
    assert gov.verify_successor(v1, signed(v1.successor(), keys, *keys)).version == 2


def test_the_state_is_unchanged_on_a_refusal(keys) -> None:
    v1 = body(keys)
    state = gov.GovernanceState.from_genesis(signed(v1, keys, *keys), cluster_id=CLUSTER)
    with pytest.raises(gov.GovernanceError):
        state.advance(signed(v1.successor(), keys, "officer-1"))
    assert state.current is v1 or state.current == v1
    assert state.advance(signed(v1.successor(), keys, *keys)).version == 2
    assert state.current.version == 2


def test_a_document_at_the_size_bound_is_decoded_not_refused_for_size(keys) -> None:
    limit = gov.MAX_DOCUMENT_BYTES
    # exactly the bound: refused for what it is (not CBOR), not for its size
    with pytest.raises(gov.GovernanceError, match="document") as err:
        gov.decode(b"\xff" * limit)
    assert "at most" not in str(err.value)
    with pytest.raises(gov.GovernanceError, match=f"document: bytes of at most {limit}"):
        gov.decode(b"\xff" * (limit + 1))
    with pytest.raises(gov.GovernanceError, match="document: bytes of at most"):
        gov.decode(signed(body(keys), keys, *keys).encode().hex())  # type: ignore[arg-type]


def test_officer_signatures_are_64_bytes_and_one_per_officer(keys) -> None:
    doc = signed(body(keys), keys, "officer-1", "officer-2")
    raw = cbor2.loads(doc.encode())
    for sig in (raw["signatures"][0][1][:63], raw["signatures"][0][1] + b"\x00", "00" * 64):
        bad = {**raw, "signatures": [["officer-1", sig], raw["signatures"][1]]}
        with pytest.raises(gov.GovernanceError, match="^.*signature of officer-1: 64 bytes"):
            gov.decode(cbor2.dumps(bad, canonical=True))
    twice = {**raw, "signatures": [raw["signatures"][0]] * 2}
    with pytest.raises(gov.GovernanceError, match="signatures: one per officer"):
        gov.decode(cbor2.dumps(twice, canonical=True))
    with pytest.raises(gov.GovernanceError, match="body: bytes"):
        gov.decode(cbor2.dumps({**raw, "body": cbor2.loads(raw["body"])}, canonical=True))


# -- ceremony authorizations ------------------------------------------------------------------


def authorization(**changes) -> gov.CeremonyAuthorization:
    base = gov.CeremonyAuthorization(
        cluster_id=CLUSTER,
        ceremony_id="cer_1",
        kind="reshare",
        key_id="key_1",
        scheme="ed25519",
        public_key=bytes(range(32)),
        share_version=1,
        committee=("node-1", "node-2", "node-4"),
        threshold=2,
        previous_threshold=2,
        issued_at=NOW,
        expires_at=NOW + 600,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def auth_signed(a, keys, *ids: str, first=()) -> bytes:
    doc = gov.SignedCeremonyAuthorization(a, tuple(first))
    for o in ids:
        doc = doc.with_signature(keys[o], o)
    return doc.encode()


def test_a_ceremony_authorization_counts_past_bad_and_stranger_signatures(keys) -> None:
    g = body(keys)
    a = authorization()
    message = gov.CEREMONY_AUTH_CONTEXT + a.encode()
    rogue = nacl.signing.SigningKey.generate()
    first = (
        gov.OfficerSignature("mallory", rogue.sign(message).signature),
        gov.OfficerSignature("officer-3", rogue.sign(message).signature),
    )
    data = auth_signed(a, keys, "officer-1", "officer-2", first=first)
    assert gov.verify_ceremony_authorization(data, g, NOW) == a
    with pytest.raises(gov.CeremonyAuthError) as err:
        gov.verify_ceremony_authorization(auth_signed(a, keys, "officer-1", first=first), g, NOW)
    assert err.value.detail == (
        "ceremony cer_1 has 1 valid officer signatures under governance version 1, needs 2; "
        "invalid signature from officer-3; signed by non-officers mallory"
    )
    exact = body(keys, quorum=3)
    assert gov.verify_ceremony_authorization(auth_signed(a, keys, *keys), exact, NOW) == a


def test_the_clock_window_at_its_edges(keys) -> None:
    g = body(keys)
    data = auth_signed(authorization(), keys, "officer-1", "officer-2")
    assert gov.verify_ceremony_authorization(data, g, NOW + 599).expires_at == NOW + 600
    assert gov.verify_ceremony_authorization(data, g, NOW - 60).issued_at == NOW
    for now, what in ((NOW + 600, "expired at"), (NOW - 61, "in the future")):
        with pytest.raises(gov.CeremonyAuthError, match=what) as err:
            gov.verify_ceremony_authorization(data, g, now)
        assert err.value.kind is gov.CeremonyAuthErrorKind.EXPIRED


def test_refusals_of_the_chain_name_the_versions_and_digests(keys) -> None:
    v1 = body(keys)
    v2 = v1.successor()
    fork = dataclasses.replace(v2, previous=bytes(range(32)))
    with pytest.raises(gov.GovernanceError) as err:
        gov.verify_successor(v1, signed(fork, keys, *keys))
    assert err.value.kind is Kind.UNCHAINED
    assert err.value.detail == (
        f"version 2 names previous {bytes(range(32)).hex()[:16]}..., "
        f"but version 1 is {v1.digest.hex()[:16]}..."
    )
    assert len(bytes(range(32)).hex()[:16]) == 16
    v3 = v2.successor()
    with pytest.raises(gov.GovernanceError) as err:
        gov.verify_successor(v1, signed(v3, keys, *keys))
    assert err.value.detail == "version 3 skips version 2: install versions in order"
    with pytest.raises(gov.GovernanceError) as err:
        gov.verify_successor(v2, signed(v2, keys, *keys))
    assert (err.value.kind, err.value.detail) == (
        Kind.ROLLBACK,
        "version 2 is not newer than the installed version 2",
    )
    # each quorum is named: the current version's officers, then the document's own
    with pytest.raises(gov.GovernanceError) as err:
        gov.verify_successor(v1, signed(v2, keys, "officer-1"))
    assert err.value.detail == "version 2 has 1 valid signatures of version 1's officers, needs 2"
