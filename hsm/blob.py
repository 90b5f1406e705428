"""Sealed-blob format and the canonical AAD for sealed shares.

Blob layout (all integers big-endian)::

    offset  size  field
    0       4     magic  b"TPS1"
    4       4     seal key version (u32, >= 1; the token key labelled "custody-seal-v{n}")
    8       12    GCM nonce (IV), random per seal
    20      n     AES-256-GCM ciphertext (n = len(plaintext))
    20+n    16    GCM authentication tag (128 bits)

The AAD given to ``CKM_AES_GCM`` (PKCS#11 Current Mechanisms v2.40 and v3.0, "AES GCM
and CCM", ``CK_GCM_PARAMS``: v3.0 §2.13.5) is ``magic || u32 version || caller_aad``, so
the format and the key version are authenticated along with the caller's context; the
nonce is authenticated by being the GCM IV. A 96-bit random IV with a 128-bit tag
follows NIST SP 800-38D §5.2.1.1 / §8.2.2 (RBG-based IV construction); SP 800-38D §8.3
caps such a key at 2^32 seal operations, which is what seal key rotation
(:meth:`hsm.Hsm.create_seal_key`) is for.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hsm.errors import UnsealError

__all__ = [
    "HEADER_LEN",
    "MAGIC",
    "MAX_KEY_VERSION",
    "MIN_BLOB_LEN",
    "NONCE_LEN",
    "TAG_LEN",
    "SealedHeader",
    "encode_header",
    "gcm_aad",
    "parse_sealed_header",
    "seal_aad",
    "sealed_key_version",
]

MAGIC = b"TPS1"
NONCE_LEN = 12
TAG_LEN = 16
MAX_KEY_VERSION = 0xFFFFFFFF
_HEADER = struct.Struct(">4sI12s")
HEADER_LEN = _HEADER.size  # 20
MIN_BLOB_LEN = HEADER_LEN + TAG_LEN  # 36: empty plaintext

_AAD_DOMAIN = b"tp-custody/seal-aad/v1"
_MAX_U64 = 2**64 - 1


@dataclass(frozen=True)
class SealedHeader:
    """The cleartext header of a sealed blob (authenticated, not secret)."""

    key_version: int
    nonce: bytes


def encode_header(key_version: int, nonce: bytes) -> bytes:
    """Return ``b"TPS1" || u32 key_version || nonce`` (20 bytes)."""
    if not 1 <= key_version <= MAX_KEY_VERSION:
        raise ValueError(f"seal key version must be in 1..2^32-1, got {key_version}")
    if len(nonce) != NONCE_LEN:
        raise ValueError(f"GCM nonce must be {NONCE_LEN} bytes, got {len(nonce)}")
    return _HEADER.pack(MAGIC, key_version, nonce)


def parse_sealed_header(blob: bytes) -> SealedHeader:
    """Parse and sanity-check a blob's header without touching the HSM.

    Version 0 is syntactically accepted here (it is reported later as an unknown key
    version, like any version absent from the token).

    Raises:
        UnsealError: ``bad_header`` if the blob is not bytes, too short, or lacks the magic.
    """
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise UnsealError("bad_header", f"sealed blob must be bytes, got {type(blob).__name__}")
    raw = bytes(blob)
    if len(raw) < MIN_BLOB_LEN:
        raise UnsealError(
            "bad_header",
            f"bad header: sealed blob is {len(raw)} bytes, shorter than the minimum "
            f"{MIN_BLOB_LEN} (20-byte header + 16-byte tag)",
        )
    magic, version, nonce = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise UnsealError(
            "bad_header", f"bad header: magic is {magic!r}, expected {MAGIC!r} (format TPS1)"
        )
    return SealedHeader(key_version=version, nonce=nonce)


def sealed_key_version(blob: bytes) -> int:
    """Return the seal key version a blob was sealed under (e.g. to find blobs to re-seal).

    Raises:
        UnsealError: ``bad_header``.
    """
    return parse_sealed_header(blob).key_version


def gcm_aad(key_version: int, aad: bytes) -> bytes:
    """Return the AAD actually fed to CKM_AES_GCM: ``b"TPS1" || u32 version || aad``."""
    return MAGIC + key_version.to_bytes(4, "big") + bytes(aad)


def _field(name: str, value: object) -> bytes:
    """Encode one text field as ``u32 length || UTF-8``; reject non-str and empty."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} is not valid Unicode text (lone surrogate)") from exc
    return len(data).to_bytes(4, "big") + data


def seal_aad(key_id: str, node_id: str, share_version: int, purpose: str = "share") -> bytes:
    """Return the canonical AAD binding a sealed item to its context.

    Encoding (injective: every field is length-prefixed or fixed-size)::

        u32 len || b"tp-custody/seal-aad/v1"
        u32 len || purpose   (UTF-8)
        u32 len || key_id    (UTF-8)
        u32 len || node_id   (UTF-8)
        u64 share_version

    Use ``purpose`` to separate kinds of sealed items (``"share"``, ``"sqlcipher-key"``,
    ``"base-ot"``...), so a blob of one kind is never accepted as another.

    Raises:
        TypeError: a field has the wrong type (``bool`` is not accepted as a version).
        ValueError: empty text field, lone surrogate, or version outside 0..2^64-1.
    """
    if isinstance(share_version, bool) or not isinstance(share_version, int):
        raise TypeError(f"share_version must be int, got {type(share_version).__name__}")
    if not 0 <= share_version <= _MAX_U64:
        raise ValueError(f"share_version must be in 0..2^64-1, got {share_version}")
    return b"".join(
        (
            len(_AAD_DOMAIN).to_bytes(4, "big") + _AAD_DOMAIN,
            _field("purpose", purpose),
            _field("key_id", key_id),
            _field("node_id", node_id),
            share_version.to_bytes(8, "big"),
        )
    )
