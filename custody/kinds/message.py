"""``message``: an off-chain attestation.

Payload ``{"message": "0x..."}``: the message bytes as ``0x`` hex, at most
:data:`MAX_MESSAGE` bytes (the domain's bound on a raw message). What is signed:

* ``ecdsa-secp256k1``: the EIP-191 version ``0x45`` (``personal_sign``) digest
  ``keccak256(b"\\x19Ethereum Signed Message:\\n" + str(len(m)) + m)``, so the signature is
  what an Ethereum wallet's ``personal_sign`` gives and can never be a transaction;
* ``ed25519`` and ``bip340``: the bytes themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from eth_utils.crypto import keccak

from custody.domain import MAX_MESSAGE as DOMAIN_MAX_MESSAGE
from custody.domain import SCHEMES
from custody.kinds._common import Intent, KindError, hex_bytes, only_fields

__all__ = ["KIND", "Message", "decode", "eip191_digest", "MAX_MESSAGE"]

KIND: Final = "message"
MAX_MESSAGE: Final = DOMAIN_MAX_MESSAGE  # bytes, the domain's bound on a raw message


@dataclass(frozen=True)
class Message(Intent):
    scheme: str
    message: bytes
    text: str | None  # the message as UTF-8 text when it is printable, for approvers
    standard: str  # "eip-191" or "raw"

    def summary(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "standard": self.standard,
            "message": "0x" + self.message.hex(),
            "text": self.text,
            "length": len(self.message),
        }


def eip191_digest(message: bytes) -> bytes:
    """EIP-191 version ``0x45``: ``keccak256("\\x19Ethereum Signed Message:\\n" + len + m)``."""
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def _text(message: bytes) -> str | None:
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c in "\n\t" for c in text) else None


def decode(payload: Mapping[str, Any], *, scheme: str) -> Message:
    """Decode a ``message`` payload for a key of ``scheme``."""
    if scheme not in SCHEMES:
        raise KindError(KIND, "scheme", f"unknown scheme {scheme!r}")
    only_fields(KIND, payload, {"message"}, {"message"})
    msg = hex_bytes(KIND, "message", payload["message"], MAX_MESSAGE)
    if scheme == "ecdsa-secp256k1":
        return Message(KIND, (eip191_digest(msg),), scheme, msg, _text(msg), "eip-191")
    return Message(KIND, (msg,), scheme, msg, _text(msg), "raw")
