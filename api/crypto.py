"""The coordinator's only cryptography: public-key checks, FROST signing packages and
aggregation (mpc.frost), DKLs23 combining (mpc.dkls23), verification. No secrets here.

This is the single seam between the orchestrator and :mod:`mpc`; every failure that a
party caused is raised as :class:`Blame` naming the culprits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from custody.signing import SignRequestError
from custody.signing import message_to_sign as _message_to_sign

PUBLIC_KEY_LEN = {"ed25519": 32, "bip340": 32, "ecdsa-secp256k1": 33}


class Blame(Exception):
    """Input from ``culprits`` (party ids) was invalid."""

    def __init__(self, message: str, culprits: tuple[int, ...]) -> None:
        super().__init__(message)
        self.culprits = culprits


def message_to_sign(scheme: str, request: Mapping[str, Any]) -> bytes:
    return _message_to_sign(scheme, request)


__all__ = ["Blame", "SignRequestError", "message_to_sign", "check_public_key",
           "frost_signing_package", "frost_aggregate", "ecdsa_combine", "verify"]


def check_public_key(scheme: str, public_key: str, verifying_shares: Mapping[str, str]) -> None:
    """Lengths and encodings of a DKG result; raises ValueError."""
    pk = bytes.fromhex(public_key)
    if len(pk) != PUBLIC_KEY_LEN[scheme]:
        raise ValueError(f"public key must be {PUBLIC_KEY_LEN[scheme]} bytes")
    if not verifying_shares:
        raise ValueError("no verifying shares")
    for party, vs in verifying_shares.items():
        if int(party) <= 0:
            raise ValueError("bad party id")
        bytes.fromhex(vs)


def frost_signing_package(scheme: str, msg: bytes, commitments: Mapping[int, str]) -> bytes:
    raise NotImplementedError("waiting for mpc.frost")


def frost_aggregate(scheme: str, public_key: str, verifying_shares: Mapping[str, str], t: int,
                    package: bytes, shares: Mapping[int, bytes], msg: bytes) -> bytes:
    raise NotImplementedError("waiting for mpc.frost")


def ecdsa_combine(public_key: str, verifying_shares: Mapping[str, str],
                  partials: Mapping[int, bytes], msg: bytes) -> tuple[bytes, int]:
    raise NotImplementedError("waiting for mpc.dkls23")


def verify(scheme: str, public_key: bytes, msg: bytes, signature: bytes) -> bool:
    raise NotImplementedError("waiting for mpc")
