"""The ceremony authorization's structure and wire form (custody.governance), the checks
mutation testing asks to pin (issue 16; docs/MUTATION.md, "custody/governance.py (session
23)").

Each structural rule of ``check_ceremony_body`` and ``decode_ceremony_authorization`` at
both sides of its bound, with the exact detail (a mutant that refuses the right input for
the wrong reason is a check that moved). Pure and fast, real Ed25519 (pynacl signs; the
quorum signatures of an accepted authorization are also checked by pyca/cryptography over
the body written out with cbor2 from the module's field list)."""

from __future__ import annotations

import dataclasses
import hashlib

import cbor2
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custody import governance as gov
from tests.custody.test_ceremony_authorization import NOW
from tests.custody.test_ceremony_authorization import body as _body

CODES = gov.CeremonyAuthErrorKind
KEYS = {f"officer-{i}": nacl.signing.SigningKey(bytes([i]) * 32) for i in (1, 2, 3)}
GOV = gov.Governance(
    cluster_id="c1",
    version=1,
    previous=gov.GENESIS_PREVIOUS,
    officers=tuple(gov.Officer(o, bytes(k.verify_key)) for o, k in KEYS.items()),
    quorum=2,
    roster=(),
)
ID_ERR = "an id is 1-64 characters of [A-Za-z0-9._:-]"


def body(**changes: object) -> gov.CeremonyAuthorization:
    """test_ceremony_authorization's authorization, with the committee node-1..node-3."""
    return _body(**{"committee": ("node-1", "node-2", "node-3"), **changes})


def ok(**changes: object) -> gov.CeremonyAuthorization:
    b = body(**changes)
    assert gov.check_ceremony_body(b) is b
    return b


def bad(detail: str, code: CODES = CODES.MALFORMED, **changes: object) -> None:
    with pytest.raises(gov.CeremonyAuthError) as e:
        gov.check_ceremony_body(body(**changes))
    assert e.value.kind is code
    assert e.value.detail == detail


def signed(b: gov.CeremonyAuthorization, *by: str) -> gov.SignedCeremonyAuthorization:
    doc = gov.SignedCeremonyAuthorization(b)
    for o in by:
        doc = doc.with_signature(KEYS[o], o)
    return doc


def decode_refused(data: object) -> str:
    with pytest.raises(gov.CeremonyAuthError) as e:
        gov.decode_ceremony_authorization(data)  # type: ignore[arg-type]
    assert e.value.kind is CODES.MALFORMED
    return e.value.detail


def by_hand(b: gov.CeremonyAuthorization) -> bytes:
    """The body's canonical CBOR built here from the documented field list."""
    return cbor2.dumps(
        {
            "format": "tpwc-ceremony-authorization-v1",
            "cluster_id": b.cluster_id,
            "ceremony_id": b.ceremony_id,
            "kind": b.kind,
            "key_id": b.key_id,
            "scheme": b.scheme,
            "public_key": b.public_key,
            "share_version": b.share_version,
            "committee": list(b.committee),
            "threshold": b.threshold,
            "previous_threshold": b.previous_threshold,
            "lower_threshold": b.lower_threshold,
            "issued_at": b.issued_at,
            "expires_at": b.expires_at,
        },
        canonical=True,
    )


# -- the body and its signatures ----------------------------------------------------------


def test_the_body_is_canonical_cbor_of_the_documented_fields_and_its_digest() -> None:
    b = ok()
    assert b.lower_threshold is False  # the default never lowers a threshold
    assert b.encode() == by_hand(b)
    assert list(cbor2.loads(b.encode()))[:3] == ["kind", "format", "key_id"]  # RFC 8949 4.2.1
    want = hashlib.sha256(b"tpwc-ceremony-authorization-v1\x00" + by_hand(b)).digest()
    assert isinstance(b.digest, bytes) and b.digest == want
    assert gov.CEREMONY_AUTH_CONTEXT == b"tpwc-ceremony-authorization-v1\x00"


def test_signatures_are_over_the_context_and_the_body_and_one_per_officer() -> None:
    doc = signed(ok(), "officer-1", "officer-2", "officer-1")
    assert [s.officer_id for s in doc.signatures] == ["officer-2", "officer-1"]
    message = b"tpwc-ceremony-authorization-v1\x00" + by_hand(doc.body)
    for s in doc.signatures:
        pk = Ed25519PublicKey.from_public_bytes(bytes(KEYS[s.officer_id].verify_key))
        pk.verify(s.signature, message)  # pyca/cryptography, independent of pynacl
    data = doc.encode()
    assert data == cbor2.dumps(
        {
            "body": by_hand(doc.body),
            "signatures": [[s.officer_id, s.signature] for s in doc.signatures],
        },
        canonical=True,
    )
    a = gov.verify_ceremony_authorization(data, GOV, NOW)
    assert a == doc.body


def test_the_body_and_the_signed_document_are_frozen() -> None:
    doc = signed(ok(), "officer-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.body.threshold = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.signatures = ()  # type: ignore[misc]
    assert hash(doc) == hash(signed(ok(), "officer-1"))


# -- check_ceremony_body, field by field ---------------------------------------------------


def test_every_kind_is_accepted_and_nothing_else() -> None:
    ok(kind="refresh")
    ok(kind="ot-resetup")
    ok(kind="reshare")
    ok(kind="restore", committee=("node-2",))
    bad("kind: one of ['refresh', 'reshare', 'ot-resetup', 'restore'], not 'export'", kind="export")


def test_ids_are_checked_with_their_field_named() -> None:
    ok(cluster_id="a", ceremony_id="c" * 64)
    bad(f"cluster_id: {ID_ERR}", cluster_id="")
    bad(f"ceremony_id: {ID_ERR}", ceremony_id="c" * 65)
    bad(f"ceremony_id: {ID_ERR}", ceremony_id=7)
    bad(f"ceremony_id: {ID_ERR}", ceremony_id="cer_1\n")


def test_key_id_of_1_to_128_characters() -> None:
    ok(key_id="k")
    ok(key_id="k" * 128)
    for key_id in ("", "k" * 129, b"key_1", 5, ["k"]):
        bad("key_id: 1-128 characters", key_id=key_id)


def test_scheme_of_1_to_32_characters() -> None:
    ok(scheme="s")
    ok(scheme="s" * 32)
    for scheme in ("", "s" * 33, b"ed25519", 5, ["s"]):
        bad("scheme: a scheme name", scheme=scheme)


def test_public_key_of_32_or_33_bytes() -> None:
    ok(public_key=b"\x02" * 32)
    ok(public_key=b"\x02" * 33)
    for pk in (b"\x02" * 31, b"\x02" * 34, b"", bytearray(32), "02" * 16, 5):
        bad("public_key: 32 or 33 bytes", public_key=pk)


def test_share_version_from_1_to_2_to_the_31() -> None:
    ok(share_version=1)
    ok(share_version=2**31)
    for v in (0, -1, 2**31 + 1, True, 1.0, "1", None):
        bad("share_version: an integer in [1, 2147483648]", share_version=v)


def test_the_committee_is_a_nonempty_sorted_tuple_of_distinct_ids() -> None:
    ok(committee=("a", "b"))
    bad("committee: at least one node id", committee=())
    bad("committee: at least one node id", committee=["node-1", "node-2"])
    bad(f"committee[0]: {ID_ERR}", committee=("bad id", "node-2"))
    bad(f"committee[1]: {ID_ERR}", committee=("node-1", 5))
    bad("committee: distinct node ids in sorted order", committee=("node-2", "node-1"))
    bad("committee: distinct node ids in sorted order", committee=("node-1", "node-1"))


def test_thresholds_from_2_to_255() -> None:
    big = tuple(f"n{i:03d}" for i in range(255))
    ok(threshold=255, previous_threshold=255, committee=big)
    ok(threshold=2, previous_threshold=255, lower_threshold=True, committee=big)
    for t in (1, 256, 0, True, 2.0):
        bad("threshold: an integer in [2, 255]", threshold=t, previous_threshold=3)
    for t in (1, 256, True, 2.0):
        bad("previous_threshold: an integer in [2, 255]", previous_threshold=t)


def test_a_threshold_up_to_the_committee_size() -> None:
    ok(threshold=3, previous_threshold=3)
    bad("threshold: 4 is more than the committee's 3 nodes", threshold=4, previous_threshold=4)


def test_a_restore_names_exactly_one_node_and_is_not_bound_by_its_size() -> None:
    a = ok(kind="restore", committee=("node-2",), threshold=3, previous_threshold=3)
    assert a.threshold == 3  # the key's threshold, above its one-node committee
    bad("committee: a restore names exactly the restored node", kind="restore")
    bad(
        "committee: a restore names exactly the restored node",
        kind="restore",
        committee=("node-1", "node-2"),
    )


def test_lower_threshold_is_a_boolean() -> None:
    for flag in (1, 0, "yes", None):
        bad("lower_threshold: a boolean", lower_threshold=flag)


def test_only_a_reshare_changes_the_threshold() -> None:
    ok(threshold=3, previous_threshold=2)  # a reshare may raise it
    for kind in ("refresh", "ot-resetup"):
        bad(f"threshold: a {kind} keeps the threshold", kind=kind, threshold=3)
        bad(f"threshold: a {kind} keeps the threshold", kind=kind, previous_threshold=3)
        bad(f"threshold: a {kind} keeps the threshold", kind=kind, lower_threshold=True)
    bad(
        "threshold: a restore keeps the threshold",
        kind="restore",
        committee=("node-2",),
        threshold=2,
        previous_threshold=3,
    )


def test_a_threshold_drop_is_explicit_and_the_flag_only_with_a_drop() -> None:
    bad(
        "threshold: 3 -> 2 lowers the threshold, which the authorization must say "
        "explicitly (lower_threshold)",
        CODES.THRESHOLD_DROP,
        previous_threshold=3,
    )
    assert ok(previous_threshold=3, lower_threshold=True).threshold == 2
    assert ok(previous_threshold=255, lower_threshold=True).threshold == 2
    bad("lower_threshold: set, but the threshold does not drop", lower_threshold=True)
    bad(
        "lower_threshold: set, but the threshold does not drop",
        lower_threshold=True,
        threshold=3,
        previous_threshold=2,
    )


def test_times_from_0_to_2_to_the_40() -> None:
    ok(issued_at=0, expires_at=600)
    ok(issued_at=2**40 - 600, expires_at=2**40)
    for t in (-1, 2**40 + 1, True, 1.5, "0"):
        bad("issued_at: an integer in [0, 1099511627776]", issued_at=t, expires_at=600)
    bad("issued_at: an integer in [0, 1099511627776]", issued_at=2**40 + 1, expires_at=2**40 + 2)
    for t in (-1, 2**40 + 1, True, 1.5):
        bad("expires_at: an integer in [0, 1099511627776]", issued_at=0, expires_at=t)
    # expires_at 0 is an integer of the range, refused for its order
    bad("expires_at: after issued_at and at most 86400 s later", issued_at=0, expires_at=0)


def test_the_lifetime_is_positive_and_at_most_a_day() -> None:
    assert gov.MAX_CEREMONY_AUTH_LIFETIME == 86400
    ok(expires_at=NOW + 1)
    ok(expires_at=NOW + 86400)
    for d in (0, -1, 86401, 2 * 86400):
        bad("expires_at: after issued_at and at most 86400 s later", expires_at=NOW + d)


# -- decode_ceremony_authorization ---------------------------------------------------------


def _entry(size: int) -> int:
    """CBOR bytes of one signature entry with an id of ``size`` characters:
    array(2) 1, the text header 1 or 2, the id, the byte-string header 2 and 64 bytes."""
    return 1 + (1 if size < 24 else 2) + size + 2 + 64


def _padded(total: int) -> bytes:
    """A signed authorization of exactly ``total`` bytes (extra signature entries whose
    ids are sized to fit: decoding does not ask who the signers are)."""
    base = signed(ok(), "officer-1", "officer-2")
    extra: list[gov.OfficerSignature] = []

    def entry(size: int) -> gov.OfficerSignature:
        return gov.OfficerSignature(f"x{len(extra):03d}".ljust(size, "p"), bytes(64))

    def length() -> int:
        doc = dataclasses.replace(base, signatures=(*base.signatures, *extra))
        return len(doc.encode())

    while total - length() > 2 * _entry(64):
        extra.append(entry(60))
    room = total - length()
    for a in range(4, 65):
        for b in range(4, 65):
            if _entry(a) + _entry(b) == room:
                extra += [entry(a)]
                extra += [entry(b)]
                assert length() == total
                doc = dataclasses.replace(base, signatures=(*base.signatures, *extra))
                return doc.encode()
    raise AssertionError(room)


def test_a_document_of_exactly_16_kib_decodes_and_one_byte_more_is_refused() -> None:
    assert gov.MAX_CEREMONY_AUTH_BYTES == 16384
    at = _padded(16384)
    assert len(at) == 16384
    doc = gov.decode_ceremony_authorization(at)
    assert doc.body == ok() and len(doc.signatures) > 2
    assert gov.verify_ceremony_authorization(at, GOV, NOW) == ok()
    over = _padded(16385)
    assert decode_refused(over) == "authorization: bytes of at most 16384"


def test_only_nonempty_bytes_are_decoded() -> None:
    data = signed(ok(), "officer-1", "officer-2").encode()
    for d in (b"", bytearray(data), data.hex(), memoryview(data), None):
        assert decode_refused(d) == "authorization: bytes of at most 16384"
    # one byte that is CBOR (an empty map) is read, and refused for its fields
    assert decode_refused(b"\xa0").startswith("authorization: expected fields")


def test_the_outer_map_body_and_signature_list() -> None:
    b = ok()
    enc = b.encode()
    assert decode_refused(cbor2.dumps({"body": enc.hex(), "signatures": []})) == "body: bytes"
    assert decode_refused(cbor2.dumps({"body": enc, "signatures": {}})) == "signatures: a list"
    assert decode_refused(cbor2.dumps({"body": enc, "signatures": [["officer-1"]]})) == (
        "signatures[0]: a list of 2"
    )
    three = [["officer-1", bytes(64), b""]]
    assert decode_refused(cbor2.dumps({"body": enc, "signatures": three})) == (
        "signatures[0]: a list of 2"
    )
    assert decode_refused(cbor2.dumps([enc, []])).startswith("authorization: expected fields")
    # governance's own errors come out as ceremony errors, never escape as another type
    inner_extra = cbor2.dumps({**cbor2.loads(enc), "note": "x"}, canonical=True)
    detail = decode_refused(cbor2.dumps({"body": inner_extra, "signatures": []}, canonical=True))
    assert detail.startswith("body: expected fields")


def _with_inner(**fields: object) -> bytes:
    inner = {**cbor2.loads(ok().encode()), **fields}
    return cbor2.dumps(
        {"body": cbor2.dumps(inner, canonical=True), "signatures": []}, canonical=True
    )


def test_the_inner_format_and_committee_type() -> None:
    assert decode_refused(_with_inner(format="tpwc-ceremony-authorization-v2")) == (
        "format: 'tpwc-ceremony-authorization-v2' is not tpwc-ceremony-authorization-v1"
    )
    assert decode_refused(_with_inner(committee="node-1")) == "committee: a list of node ids"
    assert decode_refused(_with_inner(committee={"node-1": 1})) == "committee: a list of node ids"
    # the decoded body goes through the structural rules
    assert decode_refused(_with_inner(threshold=1, previous_threshold=1)) == (
        "threshold: an integer in [2, 255]"
    )
    assert gov.decode_ceremony_authorization(_with_inner()).body == ok()


def test_signature_entries_are_an_officer_id_and_64_bytes_once_each() -> None:
    b = ok()
    sig = KEYS["officer-1"].sign(gov.CEREMONY_AUTH_CONTEXT + b.encode()).signature

    def doc(*sigs: list[object]) -> bytes:
        return cbor2.dumps({"body": b.encode(), "signatures": list(sigs)}, canonical=True)

    for s in (sig[:63], sig + b"\x00", sig.hex()[:64], 5, None):
        assert decode_refused(doc(["officer-1", s])) == "signature of officer-1: 64 bytes"
    assert decode_refused(doc(["bad id", sig])) == f"signatures[0].officer_id: {ID_ERR}"
    assert decode_refused(doc(["officer-1", sig], ["officer-1", sig])) == (
        "signatures: one per officer"
    )
    got = gov.decode_ceremony_authorization(doc(["officer-1", sig], ["officer-2", bytes(64)]))
    assert got.signatures == (
        gov.OfficerSignature("officer-1", sig),
        gov.OfficerSignature("officer-2", bytes(64)),
    )
