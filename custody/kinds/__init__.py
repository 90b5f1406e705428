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

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from custody.domain import SCHEMES
from custody.kinds._common import Intent, KindError

if TYPE_CHECKING:
    # the submodules, for type checkers (at run time: __getattr__ below)
    from custody.kinds import btc as btc
    from custody.kinds import evm as evm
    from custody.kinds import iso20022 as iso20022
    from custody.kinds import message as message

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

#: The decoder modules, imported on first use (PEP 562 module ``__getattr__``): their
#: libraries (eth-utils, eth-abi, embit, lxml) are ~0.35 s of the ~1.2 s a signer node or
#: CLI process spends importing at start-up, and most processes decode no payload, or one
#: kind. ``custody.kinds.evm`` etc. and ``from custody.kinds import evm`` work as before.
_DECODERS: Final = frozenset({"btc", "evm", "iso20022", "message"})


def __getattr__(name: str) -> ModuleType:
    if name in _DECODERS:
        return importlib.import_module(f"custody.kinds.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        from custody.kinds import evm  # on first use (_DECODERS)

        return evm.decode(payload)
    if kind == "message":
        from custody.kinds import message  # on first use (_DECODERS)

        return message.decode(payload, scheme=scheme)
    if kind == "btc-psbt":
        from custody.kinds import btc  # on first use (_DECODERS)

        return btc.decode(payload, internal_key=public_key, network=network)
    from custody.kinds import iso20022  # on first use (_DECODERS)

    return iso20022.decode(payload)
