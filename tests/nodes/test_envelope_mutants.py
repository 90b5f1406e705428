"""signer_nodes.envelope: every opening check, as an attack, with the reason and the blame
(issue 16, mutation testing). Pure pynacl, no node: transport identities are generated
here (node keys, not threshold keys). Signatures are also checked by ``cryptography``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.public import Box, PrivateKey
from nacl.signing import SigningKey

from mpc.wire import Message, encode
from signer_nodes.envelope import (
    DOMAIN,
    ENVELOPE_VERSION,
    EnvelopeError,
    Peer,
    envelope_hash,
    open_envelope,
    seal,
)

SID = bytes(range(32))
PROTO = "frost-dkg"


class Node:
    def __init__(self, party: int) -> None:
        self.party = party
        self.sign = SigningKey.generate()
        self.box = PrivateKey.generate()
        self.peer = Peer(
            party, f"node-{party}", bytes(self.sign.verify_key), bytes(self.box.public_key)
        )


A, B, C = Node(1), Node(2), Node(3)
PEERS = {n.party: n.peer for n in (A, B, C)}
ACCEPT = {PROTO: SID}


def msg(recipient: int | None = None, **kw: Any) -> Message:
    fields: dict[str, Any] = {
        "protocol": PROTO,
        "session_id": SID,
        "round": 2,
        "sender": 1,
        "recipient": recipient,
        "payload": {"x": b"secret share" if recipient else b"commitment"},
    }
    fields.update(kw)
    return Message(**fields)


def sealed(m: Message, sender: Node = A, to: Node | None = None) -> bytes:
    box_pk = None if to is None else to.peer.box_pk
    return seal(m, sign_key=sender.sign, box_key=sender.box, recipient_box_pk=box_pk)


def forged(fields: list[Any], signer: Node = A) -> bytes:
    """An envelope signed by ``signer`` over exactly ``fields`` (the sender's own lie)."""
    sig = signer.sign.sign(DOMAIN + cbor2.dumps(fields, canonical=True)).signature
    return cbor2.dumps([*fields, sig], canonical=True)


def opened(data: bytes, me: Node = B, accept: dict[str, bytes] = ACCEPT) -> Message:
    return open_envelope(data, me=me.party, box_key=me.box, peers=PEERS, accept=accept)


def refused(data: bytes, me: Node = B, **kw: Any) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as exc:
        opened(data, me, **kw)
    return exc.value


# -- honest envelopes ---------------------------------------------------------------------------


def test_broadcast_is_signed_in_the_clear_and_opens() -> None:
    m = msg()
    data = sealed(m)
    assert opened(data) == m and opened(data, C) == m
    obj = cbor2.loads(data)
    assert obj[:7] == [ENVELOPE_VERSION, PROTO, SID, 2, 1, None, False]
    assert obj[7] == encode(m)
    # the documented signature: Ed25519 over the domain and the canonical first 8 fields
    Ed25519PublicKey.from_public_bytes(A.peer.sign_pk).verify(
        obj[8], b"tpwc-envelope-v1\x00" + cbor2.dumps(obj[:8], canonical=True)
    )
    assert envelope_hash(data) == hashlib.sha256(data).digest()


def test_direct_message_is_boxed_to_its_recipient_only() -> None:
    m = msg(recipient=2)
    data = sealed(m, to=B)
    obj = cbor2.loads(data)
    assert obj[6] is True and b"secret share" not in data
    assert Box(B.box, A.box.public_key).decrypt(obj[7]) == encode(m)
    assert opened(data) == m
    e = refused(data, C)  # delivered to another node: misaddressed, before any decryption
    assert (e.reason, e.party) == ("misaddressed", None)
    with pytest.raises(ValueError, match="recipient's box key"):
        seal(m, sign_key=A.sign, box_key=A.box, recipient_box_pk=None)


# -- refusals -----------------------------------------------------------------------------------


def test_shapes_and_types_are_malformed_and_blame_nobody() -> None:
    good = cbor2.loads(sealed(msg()))
    bad: list[Any] = [
        b"\xff",
        cbor2.dumps(good[:8]),
        cbor2.dumps([*good, 0]),
        cbor2.dumps({"v": 1}),
        cbor2.dumps([2, *good[1:]]),
        cbor2.dumps([True, *good[1:]]),
        cbor2.dumps([*good[:4], True, *good[5:]]),
        cbor2.dumps([*good[:4], "1", *good[5:]]),
        cbor2.dumps([*good[:7], "payload", good[8]]),
        cbor2.dumps([*good[:8], "sig"]),
        cbor2.dumps([*good[:6], 0, *good[7:]]),
        cbor2.dumps([*good[:8], good[8][:63]]),
        cbor2.dumps([*good[:8], good[8] + b"\x00"]),
    ]
    for data in bad:
        e = refused(data)
        assert (e.reason, e.party) == ("malformed", None), data.hex()


def test_unknown_sender_or_one_naming_us_is_refused() -> None:
    e = refused(forged([1, PROTO, SID, 2, 9, None, False, encode(msg(sender=9))]))
    assert e.reason == "unknown-sender"
    e = refused(sealed(msg(sender=2), sender=B))  # our own identity, replayed at us
    assert (e.reason, e.party) == ("unknown-sender", None)


def test_a_signature_that_does_not_verify_blames_nobody() -> None:
    obj = cbor2.loads(sealed(msg()))
    obj[7] = obj[7][:-1] + bytes([obj[7][-1] ^ 1])
    e = refused(cbor2.dumps(obj, canonical=True))
    assert (e.reason, e.party) == ("bad-signature", None)
    signed_by_c = forged([1, PROTO, SID, 2, 1, None, False, encode(msg())], signer=C)
    assert refused(signed_by_c).reason == "bad-signature"  # names 1, signed by 3


def test_protocol_and_session_must_be_the_ones_run() -> None:
    assert refused(sealed(msg(protocol="frost-refresh"))).reason == "wrong-protocol"
    assert refused(forged([1, 7, SID, 2, 1, None, False, b""])).reason == "wrong-protocol"
    assert refused(sealed(msg(session_id=bytes(32)))).reason == "wrong-session"
    other = {"frost-refresh": SID, PROTO: bytes(32)}
    assert refused(sealed(msg()), accept=other).reason == "wrong-session"


def test_boxing_must_match_the_addressing_and_blames_the_signer() -> None:
    inner = encode(msg())
    e = refused(forged([1, PROTO, SID, 2, 1, None, True, inner]))  # broadcast "boxed"
    assert (e.reason, e.party) == ("malformed", 1)
    direct = encode(msg(recipient=2))
    e = refused(forged([1, PROTO, SID, 2, 1, 2, False, direct]))  # direct in the clear
    assert (e.reason, e.party) == ("malformed", 1)
    to_c = bytes(Box(A.box, C.box.public_key).encrypt(direct))
    e = refused(forged([1, PROTO, SID, 2, 1, 2, True, to_c]))  # boxed to someone else
    assert (e.reason, e.party) == ("undecryptable", 1)


def test_inner_message_must_decode_and_repeat_the_signed_header() -> None:
    e = refused(forged([1, PROTO, SID, 2, 1, None, False, b"not cbor"]))
    assert (e.reason, e.party) == ("malformed", 1) and "inner message" in e.detail
    for inner in (msg(round=3), msg(sender=3), msg(recipient=2)):
        e = refused(forged([1, PROTO, SID, 2, 1, None, False, encode(inner)]))
        assert (e.reason, e.party) == ("header-mismatch", 1), inner
    wrong_sid = encode(msg(session_id=bytes(32)))
    e = refused(forged([1, PROTO, SID, 2, 1, None, False, wrong_sid]))
    assert (e.reason, e.party) == ("malformed", 1)


def test_envelope_error_text_names_reason_and_party() -> None:
    assert str(EnvelopeError("bad", "why", party=3)) == "bad: why (party 3)"
    assert str(EnvelopeError("bad", "why")) == "bad: why"
    e = EnvelopeError("r", "d", party=0)
    assert (e.reason, e.detail, e.party, str(e)) == ("r", "d", 0, "r: d (party 0)")


def test_an_enrolled_peer_cannot_be_altered_in_place() -> None:
    """Peers are the enrolled identities every envelope is checked against: frozen."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        A.peer.sign_pk = bytes(C.sign.verify_key)  # type: ignore[misc]
    assert opened(sealed(msg())) == msg()
