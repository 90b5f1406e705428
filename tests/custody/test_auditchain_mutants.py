"""``custody.auditchain``, the audit hash chain every node and the coordinator share (issue 16).

A review once re-chained the audit log and nothing noticed; the chain's definition is what
a node co-signs, so every byte of it is pinned here from the module docstring, with
nothing of ours but the function under test: the digests are rebuilt with hashlib and
cbor2 directly, and one entry's CBOR is written out byte by byte. Every wire-form check
sits on its limit (the last accepted value passes, the first refused one fails, with the
field and the entry named), and the chain walk is attacked by edit, insertion, deletion,
reordering and re-chaining.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import cbor2
import pytest

from custody import auditchain as ac

PREV = bytes(range(32))
DATA = bytes(range(32, 64))
DIGEST = bytes(range(64, 96))


def sha(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def signed_entry(seq: int = 1, prev: bytes = ac.ZERO, signers: Any = (3, 1)) -> ac.AuditEntry:
    return ac.AuditEntry(seq, prev, "sign.released", DATA, DIGEST, "k-1", signers)


def wire(**change: Any) -> dict[str, Any]:
    """A valid wire entry (a signed one), its fields changed and its hash recomputed by hand."""
    w: dict[str, Any] = {
        "seq": 1,
        "prev": PREV.hex(),
        "kind": "sign.released",
        "data": DATA.hex(),
        "sign": {"request_digest": DIGEST.hex(), "key_id": "k-1", "signers": [2, 1]},
    }
    w.update(change)
    try:
        w["hash"] = hash_by_hand(w).hex()
    except (TypeError, ValueError, AttributeError, KeyError):  # a malformed field: no hash
        w["hash"] = "00" * 32
    return w


def hash_by_hand(w: dict[str, Any]) -> bytes:
    """The module docstring's audit-entry hash over a wire entry (hex undone, signers sorted)."""
    sign = w["sign"]
    body = {
        "seq": w["seq"],
        "prev": bytes.fromhex(w["prev"]),
        "kind": w["kind"],
        "data": bytes.fromhex(w["data"]),
        "sign": None
        if sign is None
        else {
            "request_digest": bytes.fromhex(sign["request_digest"]),
            "key_id": sign["key_id"],
            "signers": sorted(sign["signers"]),
        },
    }
    return sha(b"tpwc-audit-entry-v1\x00", cbor2.dumps(body, canonical=True))


def refused(raw: Any, message: str) -> None:
    with pytest.raises(ac.AuditFormatError) as info:
        ac.parse_audit_entry(raw)
    assert str(info.value) == message


# --- the encodings, pinned ------------------------------------------------------------


def test_an_unsigned_entrys_cbor_is_the_canonical_map_written_out_by_hand() -> None:
    """RFC 8949 section 4.2.1 order (shorter key first, then bytewise): seq, data, kind, prev,
    sign; the hash is SHA-256 of the context tag and exactly these bytes."""
    e = ac.AuditEntry(7, PREV, "dkg", DATA)
    by_hand = (
        b"\xa5"
        + b"\x63seq\x07"
        + b"\x64data\x58\x20"
        + DATA
        + b"\x64kind\x63dkg"
        + b"\x64prev\x58\x20"
        + PREV
        + b"\x64sign\xf6"
    )
    assert e.encode() == by_hand
    assert ac.ZERO == b"\x00" * 32
    assert ac.audit_entry_hash(e) == sha(b"tpwc-audit-entry-v1\x00", by_hand)
    assert e.hash == ac.audit_entry_hash(e)  # a property, not a method


def test_a_signed_entry_encodes_its_sign_map_canonically_with_sorted_signers() -> None:
    e = signed_entry(signers=(3, 1))
    by_hand = cbor2.dumps(
        {
            "sign": {"signers": [1, 3], "key_id": "k-1", "request_digest": DIGEST},
            "data": DATA,
            "kind": "sign.released",
            "prev": ac.ZERO,
            "seq": 1,
        },
        canonical=True,
    )
    assert e.encode() == by_hand
    # the inner map's canonical key order is key_id, signers, request_digest
    inner = by_hand[by_hand.index(b"\x64sign") + 5 :]
    assert inner.startswith(b"\xa3\x66key_id\x63k-1\x67signers\x82\x01\x03\x6erequest_digest")
    # a sign entry without signers encodes an empty list, not a crash
    bare = ac.AuditEntry(2, PREV, "sign.released", DATA, DIGEST, "k-1", None)
    assert cbor2.loads(bare.encode())["sign"]["signers"] == []


def test_request_digest_release_hash_and_statements_are_the_documented_bytes() -> None:
    assert ac.request_digest("sr-1", "k-1", "payment", b"\x01\x02") == sha(
        b"tpwc-request-digest-v1\x00",
        b"\x84\x64sr-1\x63k-1\x67payment\x42\x01\x02",
    )
    fields = {"seq": 1, "prev": ac.ZERO, "time": 5, "request_id": "sr-1"}
    encoded = ac.encode_release({"request_id": "sr-1", "time": 5, "prev": ac.ZERO, "seq": 1})
    assert encoded == cbor2.dumps(fields, canonical=True)
    assert encoded.startswith(b"\xa4\x63seq\x01\x64prev\x58\x20")  # canonical order
    assert ac.release_hash(encoded) == sha(b"tpwc-release-v1\x00", encoded)
    assert ac.checkpoint_statement("c-1", "n1", 4, DATA) == (
        b"tpwc-audit-checkpoint-v1\x00"
        + b"\xa4\x63seq\x04\x64head\x58\x20"
        + DATA
        + b"\x67cluster\x63c-1\x67node_id\x62n1"
    )
    assert ac.releases_statement("n1", 4, DATA) == (
        b"tpwc-release-head-v1\x00"
        + b"\xa3\x63seq\x04\x64head\x58\x20"
        + DATA
        + b"\x67node_id\x62n1"
    )


def test_an_entry_is_frozen() -> None:
    e = signed_entry()
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.seq = 2  # type: ignore[misc]


def test_the_wire_form_round_trips_and_carries_the_hash() -> None:
    signed = signed_entry(seq=3, prev=PREV, signers=(3, 1))
    w = ac.entry_wire(signed)
    assert w == {
        "seq": 3,
        "prev": PREV.hex(),
        "kind": "sign.released",
        "data": DATA.hex(),
        "sign": {"request_digest": DIGEST.hex(), "key_id": "k-1", "signers": [1, 3]},
        "hash": hash_by_hand(w).hex(),
    }
    assert ac.parse_audit_entry(w) == dataclasses.replace(signed, signers=(1, 3))
    unsigned = ac.AuditEntry(1, ac.ZERO, "dkg", DATA)
    wu = ac.entry_wire(unsigned)
    assert wu["sign"] is None
    assert ac.parse_audit_entry(wu) == unsigned
    bare = ac.AuditEntry(2, PREV, "sign.released", DATA, DIGEST, "k-1", None)
    assert ac.entry_wire(bare)["sign"]["signers"] == []


# --- the wire form's checks, each on its limit ----------------------------------------


def test_a_valid_wire_entry_parses_with_its_signers_sorted() -> None:
    e = ac.parse_audit_entry(wire())
    assert (e.seq, e.prev, e.kind, e.data) == (1, PREV, "sign.released", DATA)
    assert (e.request_digest, e.key_id, e.signers) == (DIGEST, "k-1", (1, 2))


def test_the_entry_and_seq_checks() -> None:
    refused([wire()], "an entry is an object")
    for bad in (0, -1, True, 1.0, "1", None):
        refused(wire(seq=bad), "seq: a positive integer")
    assert ac.parse_audit_entry(wire(seq=2)).seq == 2


def test_the_kind_check() -> None:
    for bad in ("", "k" * 65, "Sign", "a b", "sign\n", 5, None):
        refused(wire(kind=bad), "entry 1: kind is 1-64 characters of [a-z0-9._:-]")
    for good in ("a", "k" * 64, "a.b_c:d-9"):
        assert ac.parse_audit_entry(wire(kind=good)).kind == good


def test_the_hex_fields() -> None:
    for field in ("prev", "data"):
        for bad in ("00" * 31, "00" * 33, "AB" * 32, "0g" * 32, "00" * 32 + "\n", 5, None):
            refused(wire(**{field: bad}), f"entry 1: {field}: 64 lower-case hex digits")
    w = wire()
    w["hash"] = w["hash"].upper()
    refused(w, "entry 1: hash: 64 lower-case hex digits")
    del w["hash"]
    refused(w, "entry 1: hash: 64 lower-case hex digits")


def test_the_sign_object_checks() -> None:
    refused(wire(sign=[1]), "entry 1: sign is an object or null")
    refused(wire(sign="x"), "entry 1: sign is an object or null")
    sign: dict[str, Any] = {"request_digest": DIGEST.hex(), "key_id": "k-1", "signers": [1]}
    refused(
        wire(sign={**sign, "request_digest": "ab"}),
        "entry 1: sign.request_digest: 64 lower-case hex digits",
    )
    bad_ids: tuple[Any, ...] = ("", "k" * 129, 5, None)
    for bad_id in bad_ids:
        refused(wire(sign={**sign, "key_id": bad_id}), "entry 1: sign.key_id is a key id")
    for good_id in ("k", "k" * 128):
        assert ac.parse_audit_entry(wire(sign={**sign, "key_id": good_id})).key_id == good_id
    bad_sets: tuple[Any, ...] = ([0], [256], [1, -1], [True], [1.0], ["1"], (1,), "1", None)
    for bad_set in bad_sets:
        refused(
            wire(sign={**sign, "signers": bad_set}), "entry 1: sign.signers is a list of party ids"
        )
    good_sets: tuple[list[int], ...] = ([1], [255], [255, 1], [])
    for good_set in good_sets:
        parsed = ac.parse_audit_entry(wire(sign={**sign, "signers": good_set}))
        assert parsed.signers == tuple(sorted(good_set))
    assert ac.parse_audit_entry(wire(sign=None)).request_digest is None


def test_an_edited_field_under_the_old_hash_is_named() -> None:
    w = wire()
    for field, value in (("seq", 2), ("kind", "dkg"), ("data", PREV.hex()), ("sign", None)):
        edited = {**w, field: value}
        seq = edited["seq"]
        refused(edited, f"entry {seq}: hash does not match its fields")
    w2 = wire()
    w2["sign"] = {**w2["sign"], "signers": [1, 3]}
    refused(w2, "entry 1: hash does not match its fields")


# --- the chain walk ---------------------------------------------------------------------


def make_chain(n: int) -> list[ac.AuditEntry]:
    out: list[ac.AuditEntry] = []
    head = ac.ZERO
    for seq in range(1, n + 1):
        e = ac.AuditEntry(seq, head, "dkg", sha(b"%d" % seq))
        out.append(e)
        head = e.hash
    return out


def test_an_honest_chain_extends_its_anchor_and_is_returned() -> None:
    entries = make_chain(4)
    assert ac.chain(entries, 0, ac.ZERO) == entries
    assert ac.chain(entries[2:], 2, entries[1].hash) == entries[2:]
    assert ac.chain((), 5, DATA) == []
    # each link is the previous entry's hash, recomputed by hand
    for a, b in zip(entries, entries[1:], strict=False):
        assert b.prev == sha(b"tpwc-audit-entry-v1\x00", a.encode())


def chain_refused(entries: list[ac.AuditEntry], seq: int, head: bytes, message: str) -> None:
    with pytest.raises(ac.AuditFormatError) as info:
        ac.chain(entries, seq, head)
    assert str(info.value) == message


def test_a_gap_a_repeat_a_reorder_or_a_wrong_anchor_is_named() -> None:
    e = make_chain(4)
    chain_refused([e[0], e[2]], 0, ac.ZERO, "entry 3 does not follow seq 1")  # deleted
    chain_refused([e[0], e[0]], 0, ac.ZERO, "entry 1 does not follow seq 1")  # repeated
    chain_refused([e[1], e[0]], 0, ac.ZERO, "entry 2 does not follow seq 0")  # reordered
    chain_refused(e[1:], 0, ac.ZERO, "entry 2 does not follow seq 0")  # truncated front
    chain_refused(e, 1, ac.ZERO, "entry 1 does not follow seq 1")
    chain_refused(e[1:], 1, DATA, "entry 2 does not chain to the hash of entry 1")
    chain_refused(e, 0, DATA, "entry 1 does not chain to the hash of entry 0")


def test_an_edit_or_insertion_is_named_at_the_next_link() -> None:
    e = make_chain(4)
    edited = dataclasses.replace(e[1], data=DATA)  # same seq and prev, other content
    chain_refused(
        [e[0], edited, e[2], e[3]], 0, ac.ZERO, "entry 3 does not chain to the hash of entry 2"
    )
    inserted = ac.AuditEntry(2, e[0].hash, "dkg", DATA)
    renumbered = [dataclasses.replace(x, seq=x.seq + 1) for x in e[1:]]
    chain_refused(
        [e[0], inserted, *renumbered], 0, ac.ZERO, "entry 3 does not chain to the hash of entry 2"
    )


def test_a_rechained_log_does_not_extend_a_checkpoint_made_before_the_edit() -> None:
    """The review's attack: entry 2 edited and every later prev and hash recomputed. The
    re-chained log is a valid chain from genesis, but not from the head a node co-signed."""
    e = make_chain(4)
    checkpoint = (3, e[2].hash)  # what the nodes signed before the edit
    rechained: list[ac.AuditEntry] = [e[0]]
    for x in e[1:]:
        data = DATA if x.seq == 2 else x.data
        rechained.append(ac.AuditEntry(x.seq, rechained[-1].hash, x.kind, data))
    assert ac.chain(rechained, 0, ac.ZERO) == rechained  # the chain alone cannot tell
    assert rechained[2].hash != checkpoint[1]
    chain_refused(rechained[3:], *checkpoint, "entry 4 does not chain to the hash of entry 3")
    # and parsing the re-chained wire forms changes nothing about that
    parsed = [ac.parse_audit_entry(ac.entry_wire(x)) for x in rechained[3:]]
    chain_refused(parsed, *checkpoint, "entry 4 does not chain to the hash of entry 3")
