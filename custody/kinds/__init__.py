"""Chain-aware request kinds: pure, strict decoders of what a key is asked to sign.

The coordinator and every signer node call :func:`decode` on the payload bytes they were
given; nothing here does I/O. A decoder returns an :class:`Intent` (a typed dataclass per
kind: what the request does, in :meth:`Intent.summary` as plain JSON for policies and
approvers, and ``messages``, the exact bytes each signature signs) or raises
:class:`KindError` naming the field; it raises nothing else.

=============== ============================== =============================================
kind            payload                        signs (``Intent.messages``)
=============== ============================== =============================================
``evm-tx``      ``{"tx": "0x02..."}``          ``keccak256(0x02 || rlp(fields))``
``btc-psbt``    ``{"psbt": "<base64>"}``       each input's BIP-341 sighash (key path)
``iso20022``    ``{"xml": "..."}`` (pacs.008)  exc-c14n ``ds:SignedInfo`` over its digest
``message``     ``{"message": "0x..."}``       EIP-191 digest (ECDSA), the bytes otherwise
=============== ============================== =============================================

:data:`KINDS` are the names to merge into :data:`custody.domain.KINDS`. Assembling results:
:func:`custody.kinds.evm.result` and :func:`custody.kinds.btc.finalize`. Addresses a key
shows: :mod:`custody.kinds.addresses`.

May import: ``mpc`` and third-party encoding libraries (rlp, eth-utils, eth-abi, embit,
lxml).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from custody.domain import SCHEMES
from custody.kinds import btc, evm, iso20022, message
from custody.kinds._common import Intent, KindError

__all__ = ["ChainKind", "KINDS", "SCHEMES_OF", "Intent", "KindError", "decode"]

ChainKind = Literal["evm-tx", "btc-psbt", "iso20022", "message"]
KINDS: Final[tuple[ChainKind, ...]] = get_args(ChainKind)
# Which key schemes may sign each kind.
SCHEMES_OF: Final[dict[str, tuple[str, ...]]] = {
    "evm-tx": ("ecdsa-secp256k1",),
    "btc-psbt": ("bip340",),
    "iso20022": ("ed25519",),  # XMLDSig EdDSA-Ed25519 (RFC 9231) over its SignedInfo
    "message": SCHEMES,
}


def decode(
    kind: str,
    payload: Mapping[str, Any],
    *,
    scheme: str,
    public_key: bytes = b"",
    network: str = "mainnet",
) -> Intent:
    """Decode ``payload`` of ``kind`` for a key of ``scheme`` (its ``public_key``, and for
    ``btc-psbt`` the key's Bitcoin ``network``). Raises only :class:`KindError`."""
    if kind not in SCHEMES_OF:
        raise KindError(str(kind)[:40], "kind", f"must be one of {list(KINDS)}")
    if scheme not in SCHEMES_OF[kind]:
        raise KindError(kind, "scheme", f"a {scheme!r} key cannot sign {kind}")
    if kind == "evm-tx":
        return evm.decode(payload)
    if kind == "message":
        return message.decode(payload, scheme=scheme)
    if kind == "btc-psbt":
        return btc.decode(payload, internal_key=public_key, network=network)
    return iso20022.decode(payload)
