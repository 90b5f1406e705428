"""The officers' ceremony authorization (custody.governance): canonical CBOR, signed by the
quorum of the governance version a node holds, strict decoding naming the field at fault,
and every refusal with its stable code."""

from __future__ import annotations

import dataclasses

import cbor2
import nacl.signing
import pytest

from custody import governance as gov

NOW = 1_900_000_000
CODES = gov.CeremonyAuthErrorKind


def officers(n: int = 3) -> dict[str, nacl.signing.SigningKey]:
    return {f"officer-{i}": nacl.signing.SigningKey.generate() for i in range(1, n + 1)}


def governance(keys: dict[str, nacl.signing.SigningKey], quorum: int = 2) -> gov.Governance:
    return gov.Governance(
        cluster_id="c1",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=tuple(gov.Officer(o, bytes(k.verify_key)) for o, k in keys.items()),
        quorum=quorum,
        roster=(),
    )


def body(**changes: object) -> gov.CeremonyAuthorization:
    base = gov.CeremonyAuthorization(
        cluster_id="c1",
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


def signed(
    keys: dict[str, nacl.signing.SigningKey], b: gov.CeremonyAuthorization, *by: str
) -> bytes:
    doc = gov.SignedCeremonyAuthorization(b)
    for o in by or sorted(keys)[:2]:
        doc = doc.with_signature(keys[o], o)
    return doc.encode()


def refused(data: bytes, g: gov.Governance, now: int = NOW + 10) -> gov.CeremonyAuthError:
    with pytest.raises(gov.CeremonyAuthError) as e:
        gov.verify_ceremony_authorization(data, g, now)
    return e.value


def test_a_quorum_signed_authorization_verifies_and_round_trips() -> None:
    keys = officers()
    data = signed(keys, body())
    a = gov.verify_ceremony_authorization(data, governance(keys), NOW + 10)
    assert a == body() and a.digest == body().digest
    assert gov.decode_ceremony_authorization(data).encode() == data
    # canonical CBOR of exactly the documented fields
    raw = cbor2.loads(cbor2.loads(data)["body"])
    assert raw["format"] == gov.CEREMONY_AUTH_FORMAT and raw["committee"] == [
        "node-1",
        "node-2",
        "node-4",
    ]


def test_under_quorum_forged_and_strangers_are_under_signed() -> None:
    keys = officers()
    g = governance(keys)
    e = refused(signed(keys, body(), "officer-1"), g)
    assert e.kind is CODES.UNDER_SIGNED and "1 valid officer signatures" in e.detail
    # the same officer twice does not make a quorum (one signature per officer)
    doc = gov.SignedCeremonyAuthorization(body()).with_signature(keys["officer-1"], "officer-1")
    twice = cbor2.loads(doc.encode())
    twice["signatures"] = twice["signatures"] * 2
    e = refused(cbor2.dumps(twice, canonical=True), g)
    assert e.kind is CODES.MALFORMED and "one per officer" in e.detail
    fakes = {o: nacl.signing.SigningKey.generate() for o in ("officer-1", "officer-2")}
    e = refused(signed(fakes, body()), g)
    assert (
        e.kind is CODES.UNDER_SIGNED and "invalid signature from officer-1, officer-2" in e.detail
    )
    strangers = {o: nacl.signing.SigningKey.generate() for o in ("mallory", "trudy")}
    e = refused(signed(strangers, body()), g)
    assert "non-officers mallory, trudy" in e.detail
    # a governance signature over the same bytes is not an authorization
    b = body()
    sig = keys["officer-1"].sign(gov.SIGNING_CONTEXT + b.encode()).signature
    sig2 = keys["officer-2"].sign(gov.SIGNING_CONTEXT + b.encode()).signature
    doc = cbor2.dumps(
        {"body": b.encode(), "signatures": [["officer-1", sig], ["officer-2", sig2]]},
        canonical=True,
    )
    assert refused(doc, g).kind is CODES.UNDER_SIGNED


def test_a_signed_field_edited_breaks_the_signatures() -> None:
    keys = officers()
    outer = cbor2.loads(signed(keys, body()))
    inner = cbor2.loads(outer["body"])
    inner["committee"] = ["node-1", "node-2", "node-5"]
    outer["body"] = cbor2.dumps(inner, canonical=True)
    e = refused(cbor2.dumps(outer, canonical=True), governance(keys))
    assert e.kind is CODES.UNDER_SIGNED


def test_expiry_future_issue_and_cluster() -> None:
    keys = officers()
    g = governance(keys)
    data = signed(keys, body())
    assert refused(data, g, now=NOW + 600).kind is CODES.EXPIRED
    assert refused(data, g, now=NOW - 61).kind is CODES.EXPIRED  # issued in the future
    gov.verify_ceremony_authorization(data, g, NOW - 60)  # clock skew allowed
    other = dataclasses.replace(g, cluster_id="c2")
    e = refused(data, other)
    assert e.kind is CODES.MISMATCH and "cluster_id" in e.detail


def test_a_lower_threshold_must_be_explicit() -> None:
    with pytest.raises(gov.CeremonyAuthError) as e:
        body(threshold=2, previous_threshold=3).encode()
    assert e.value.kind is CODES.THRESHOLD_DROP and "3 -> 2" in e.value.detail
    ok = body(threshold=2, previous_threshold=3, lower_threshold=True)
    keys = officers()
    assert gov.verify_ceremony_authorization(signed(keys, ok), governance(keys), NOW).threshold == 2
    with pytest.raises(gov.CeremonyAuthError) as e:
        body(lower_threshold=True).encode()
    assert e.value.kind is CODES.MALFORMED and "lower_threshold" in e.value.detail


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "export"}, "kind"),
        ({"ceremony_id": "no spaces allowed"}, "ceremony_id"),
        ({"committee": ("node-2", "node-1")}, "committee"),
        ({"committee": ("node-1", "node-1")}, "committee"),
        ({"committee": ()}, "committee"),
        ({"threshold": 4}, "threshold"),
        ({"threshold": 1, "previous_threshold": 1}, "threshold"),
        ({"share_version": 0}, "share_version"),
        ({"public_key": b"\x01" * 31}, "public_key"),
        ({"expires_at": NOW + 2 * 24 * 3600}, "expires_at"),
        ({"expires_at": NOW}, "expires_at"),
        ({"kind": "refresh", "threshold": 3, "committee": ("a", "b", "c")}, "threshold"),
    ],
)
def test_malformed_bodies_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(gov.CeremonyAuthError) as e:
        body(**changes).encode()
    assert e.value.kind in (CODES.MALFORMED, CODES.THRESHOLD_DROP)
    assert e.value.detail.startswith(field), e.value.detail


def test_strict_decoding() -> None:
    keys = officers()
    g = governance(keys)
    data = signed(keys, body())
    outer = cbor2.loads(data)
    # not canonical: a non-canonical integer encoding of the outer map
    assert refused(data + b"\x00", g).kind is CODES.MALFORMED
    inner = cbor2.loads(outer["body"])
    extra = {**inner, "note": "x"}
    e = refused(
        cbor2.dumps({**outer, "body": cbor2.dumps(extra, canonical=True)}, canonical=True), g
    )
    assert e.kind is CODES.MALFORMED and "expected fields" in e.detail
    wrong = {**inner, "format": "tpwc-ceremony-authorization-v0"}
    e = refused(
        cbor2.dumps({**outer, "body": cbor2.dumps(wrong, canonical=True)}, canonical=True), g
    )
    assert e.kind is CODES.MALFORMED and "format" in e.detail
    assert refused(b"", g).kind is CODES.MALFORMED
    assert refused(b"\xff" * 10, g).kind is CODES.MALFORMED
    bad_sig = {**outer, "signatures": [["officer-1", b"\x00" * 63]]}
    e = refused(cbor2.dumps(bad_sig, canonical=True), g)
    assert e.kind is CODES.MALFORMED and "64 bytes" in e.detail
