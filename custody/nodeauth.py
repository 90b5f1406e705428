"""Coordinator -> signer-node request authentication (docs/NODE_API.md).

Every request except ``GET /health`` carries::

    X-Coordinator-Timestamp: <unix seconds, decimal>
    X-Coordinator-Signature: <hex Ed25519 signature>
    X-Coordinator-Nonce: <32 random hex digits>

over ``b"tpwc-coord-v2\\n" + RECIPIENT + b"\\n" + NONCE + b"\\n" + METHOD + b"\\n" + PATH +
b"\\n" + TIMESTAMP + b"\\n" + sha256(body).hexdigest()``, where ``RECIPIENT`` is the node id
of the node the request is for, so a request signed for one node is refused by every
other, and ``NONCE`` makes two identical requests in one second differ (so a node can
refuse every repeated signature as a replay).
``PATH`` is the request target (path plus ``?query`` if any). Without a recipient the
string is the v1 one (``b"tpwc-coord-v1\\n" + METHOD + ...``), which nodes refuse since
issue 9. A node also refuses a signature it has seen before (replay cache over the
validity window).
Ed25519 comes from pynacl (libsodium); nothing here is hand-rolled crypto.

The coordinator uses :func:`sign_headers`, a node :func:`verify_headers`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

__all__ = [
    "DOMAIN",
    "DOMAIN_V2",
    "MAX_SKEW_SECONDS",
    "TIMESTAMP_HEADER",
    "SIGNATURE_HEADER",
    "NONCE_HEADER",
    "NodeAuthError",
    "signed_bytes",
    "sign_headers",
    "verify_headers",
]

DOMAIN = b"tpwc-coord-v1\n"
DOMAIN_V2 = b"tpwc-coord-v2\n"
MAX_SKEW_SECONDS = 60
TIMESTAMP_HEADER = "X-Coordinator-Timestamp"
SIGNATURE_HEADER = "X-Coordinator-Signature"
NONCE_HEADER = "X-Coordinator-Nonce"


class NodeAuthError(Exception):
    """The request is not signed by the enrolled coordinator (missing, bad or stale)."""


def signed_bytes(
    method: str,
    path: str,
    timestamp: str,
    body: bytes,
    recipient: str | None = None,
    nonce: str = "",
) -> bytes:
    """The exact byte string the coordinator signs (v2 with a ``recipient`` node id)."""
    prefix = (
        DOMAIN
        if recipient is None
        else DOMAIN_V2 + recipient.encode() + b"\n" + nonce.encode() + b"\n"
    )
    return (
        prefix
        + method.upper().encode()
        + b"\n"
        + path.encode()
        + b"\n"
        + timestamp.encode()
        + b"\n"
        + hashlib.sha256(body).hexdigest().encode()
    )


Signer = Callable[[bytes], bytes]


def _signer(signing_key: SigningKey | bytes | Signer) -> Signer:
    if isinstance(signing_key, SigningKey):
        return lambda data: signing_key.sign(data).signature
    if isinstance(signing_key, bytes | bytearray):
        key = SigningKey(bytes(signing_key))
        return lambda data: key.sign(data).signature
    return signing_key


def sign_headers(
    signing_key: SigningKey | bytes | Signer,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    recipient: str | None = None,
) -> dict[str, str]:
    """Headers authenticating one request for node ``recipient`` (its node id; nodes refuse
    a request signed without one). ``signing_key`` is a SigningKey, its 32-byte seed, or a
    function that signs bytes (the coordinator's key in its HSM token)."""
    sign = _signer(signing_key)
    ts = str(int(time.time()) if timestamp is None else int(timestamp))
    if recipient is None:
        sig = sign(signed_bytes(method, path, ts, body))
        return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig.hex()}
    nonce = secrets.token_hex(16)
    sig = sign(signed_bytes(method, path, ts, body, recipient, nonce))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig.hex(), NONCE_HEADER: nonce}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def verify_headers(
    public_key: VerifyKey | bytes,
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
    max_skew: int = MAX_SKEW_SECONDS,
    recipient: str | None = None,
) -> bytes:
    """Raise :class:`NodeAuthError` unless the headers carry a fresh, good coordinator
    signature (for ``recipient``, the verifying node's id, when given); returns the
    signature (the replay cache's key)."""
    ts = _header(headers, TIMESTAMP_HEADER)
    sig_hex = _header(headers, SIGNATURE_HEADER)
    if ts is None or sig_hex is None:
        raise NodeAuthError("missing coordinator signature headers")
    if not ts.isascii() or not ts.isdigit() or len(ts) > 12:
        raise NodeAuthError("malformed timestamp")
    current = time.time() if now is None else now
    if abs(current - int(ts)) > max_skew:
        raise NodeAuthError(f"timestamp more than {max_skew} s off")
    try:
        sig = bytes.fromhex(sig_hex)
    except ValueError:
        raise NodeAuthError("signature is not hex") from None
    if len(sig) != 64:
        raise NodeAuthError("signature must be 64 bytes")
    nonce = ""
    if recipient is not None:
        nonce = _header(headers, NONCE_HEADER) or ""
        if len(nonce) != 32 or not all(c in "0123456789abcdef" for c in nonce):
            raise NodeAuthError(f"missing or malformed {NONCE_HEADER} (32 hex digits)")
    key = public_key if isinstance(public_key, VerifyKey) else VerifyKey(bytes(public_key))
    try:
        key.verify(signed_bytes(method, path, ts, body, recipient, nonce), sig)
    except BadSignatureError:
        raise NodeAuthError(
            "bad coordinator signature"
            + ("" if recipient is None else f" (for recipient {recipient})")
        ) from None
    return sig
