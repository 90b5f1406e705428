"""Signed, and for point-to-point messages encrypted, envelopes around protocol messages.

DESIGN.md "Wire and transport". An envelope is canonical CBOR (RFC 8949 s4.2.1)::

    [version, protocol, session_id, round, sender, recipient, boxed, payload, signature]

* ``payload`` is ``mpc.wire.encode(msg)``; for a direct message (``recipient`` set) it is
  NaCl ``Box(sender_x25519_sk, recipient_x25519_pk).encrypt(...)`` of those bytes
  (XSalsa20-Poly1305 with a random 24-byte nonce, prefixed), and ``boxed`` is true.
  Broadcasts are signed but not encrypted (every participant must read them).
* ``signature`` is the sender's Ed25519 signature over
  ``b"tpwc-envelope-v1\\x00" + canonical_cbor([version .. payload])``: everything else.

Opening checks, in order: shape and types; the sender is a known peer and the signature
verifies under its enrolled key; protocol and session id are the ones expected; the
recipient is us (or a broadcast); the box opens with our key; the inner message's header
equals the signed outer header. Each failure raises :class:`EnvelopeError` with a reason
code and, where the signed sender is provably at fault, ``party``.

Replay (the same envelope again) is refused by the caller, which remembers the hash of
every envelope it accepted (:func:`envelope_hash`); the round engine in ``mpc.session``
additionally refuses a second, different message for a round (equivocation, blamed).

All primitives are pynacl (libsodium); only the framing is ours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from mpc.errors import DecodeError
from mpc.wire import Message, cbor_dumps, cbor_loads, decode, encode

__all__ = ["ENVELOPE_VERSION", "Peer", "EnvelopeError", "seal", "open_envelope", "envelope_hash"]

ENVELOPE_VERSION = 1
DOMAIN = b"tpwc-envelope-v1\x00"


@dataclass(frozen=True)
class Peer:
    """A participant's enrolled public identity."""

    party_id: int
    node_id: str
    sign_pk: bytes
    box_pk: bytes


class EnvelopeError(Exception):
    """An envelope was refused; ``reason`` is a stable code, ``party`` the provable culprit."""

    def __init__(self, reason: str, detail: str, *, party: int | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.party = party
        super().__init__(f"{reason}: {detail}" + (f" (party {party})" if party is not None else ""))


def _signed_part(fields: list[Any]) -> bytes:
    return DOMAIN + cbor_dumps(fields)


def seal(
    msg: Message,
    *,
    sign_key: SigningKey,
    box_key: PrivateKey,
    recipient_box_pk: bytes | None,
) -> bytes:
    """Wrap ``msg`` for the wire: sign it, and box it to the recipient if it is direct."""
    inner = encode(msg)
    if msg.recipient is None:
        boxed, payload = False, inner
    else:
        if recipient_box_pk is None:
            raise ValueError("a direct message needs the recipient's box key")
        boxed, payload = True, bytes(Box(box_key, PublicKey(recipient_box_pk)).encrypt(inner))
    fields: list[Any] = [
        ENVELOPE_VERSION,
        msg.protocol,
        msg.session_id,
        msg.round,
        msg.sender,
        msg.recipient,
        boxed,
        payload,
    ]
    sig = sign_key.sign(_signed_part(fields)).signature
    return cbor_dumps([*fields, sig])


def envelope_hash(data: bytes) -> bytes:
    """Identity of an envelope for replay detection."""
    return hashlib.sha256(data).digest()


def open_envelope(
    data: bytes,
    *,
    me: int,
    box_key: PrivateKey,
    peers: Mapping[int, Peer],
    accept: Mapping[str, bytes],
) -> Message:
    """Verify and open an envelope addressed to party ``me``; see the module docstring.

    ``accept`` maps each protocol name the session runs to its session id.
    """
    try:
        obj = cbor_loads(data, what="envelope")
    except DecodeError as exc:
        raise EnvelopeError("malformed", str(exc)) from None
    if not isinstance(obj, list) or len(obj) != 9:
        raise EnvelopeError("malformed", "envelope must be a 9-element array")
    version, proto, sid, rnd, sender, recipient, boxed, payload, sig = obj
    if version != ENVELOPE_VERSION or type(version) is not int:
        raise EnvelopeError("malformed", f"unsupported envelope version {version!r}")
    if type(sender) is not int or not isinstance(payload, bytes) or not isinstance(sig, bytes):
        raise EnvelopeError("malformed", "sender, payload or signature has the wrong type")
    if type(boxed) is not bool or len(sig) != 64:
        raise EnvelopeError("malformed", "boxed flag or signature length")
    peer = peers.get(sender)
    if peer is None or sender == me:
        raise EnvelopeError("unknown-sender", f"sender {sender} is not an enrolled peer")
    try:
        VerifyKey(peer.sign_pk).verify(_signed_part(obj[:8]), sig)
    except (BadSignatureError, ValueError):
        # Not provably the sender's fault: anyone can make an unsigned blob naming it.
        raise EnvelopeError(
            "bad-signature", f"signature does not verify under party {sender}'s key"
        ) from None
    # From here on the sender signed what we see.
    if not isinstance(proto, str) or proto not in accept:
        raise EnvelopeError("wrong-protocol", f"protocol {proto!r} is not run in this session")
    protocol, session_id = proto, accept[proto]
    if sid != session_id:
        raise EnvelopeError("wrong-session", "envelope belongs to another session")
    if recipient is not None and recipient != me:
        raise EnvelopeError("misaddressed", f"addressed to party {recipient}, not {me}")
    if boxed != (recipient is not None):
        raise EnvelopeError(
            "malformed", "direct messages must be boxed, broadcasts must not", party=sender
        )
    if boxed:
        try:
            inner = Box(box_key, PublicKey(peer.box_pk)).decrypt(payload)
        except CryptoError:
            raise EnvelopeError(
                "undecryptable", "payload is not encrypted to this node", party=sender
            ) from None
    else:
        inner = payload
    try:
        msg = decode(inner, protocol=protocol, session_id=session_id)
    except DecodeError as exc:
        raise EnvelopeError("malformed", f"inner message: {exc}", party=sender) from None
    if (msg.round, msg.sender, msg.recipient) != (rnd, sender, recipient):
        raise EnvelopeError(
            "header-mismatch", "inner message header differs from the signed envelope", party=sender
        )
    return msg
