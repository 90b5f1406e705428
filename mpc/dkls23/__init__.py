"""DKLs23 threshold ECDSA on secp256k1.

Doerner, Kondi, Lee, shelat, "Threshold ECDSA in Three Rounds", IEEE S&P 2024, ePrint 2023/765.

Public API:

* key setup: :class:`EcdsaKeyShare`, :class:`OtSetupSession` (pairwise base OTs after the
  DKG or dealer import); in-process runners and the in-memory ledger of tests are in
  :mod:`mpc.testing`;
* presigning: :class:`PresignSession` (rounds 1-2 and the local part of round 3, message
  independent) giving a single-use :class:`Presignature`;
* online: :func:`sign_with_presignature` (one message per signer, ledger written first),
  :func:`combine_signature` (public values only; verifies; low-s; recovery id).

Module map: ``baseot`` (VSOT, DKLs18 Protocol 7), ``mul`` (OT extension in KOS15 Fig. 10 /
SoftSpokenOT form + F_RVOLE, DKLs23 Functionality 3.5 / Protocol 5.2 = DKLs19 Protocol 1),
``keygen`` (the pairwise base-OT setup), ``sign`` (DKLs23 Protocol 3.6).
"""

from mpc.dkls23.keygen import (
    EcdsaKeyShare,
    OtSetupSession,
    key_id_of,
)
from mpc.dkls23.sign import (
    EcdsaSignature,
    Ledger,
    PartialSignature,
    Presignature,
    PresignaturePublic,
    PresignSession,
    combine_signature,
    presignature_id_of,
    sign_with_presignature,
    verify_signature,
)

__all__ = [
    "EcdsaKeyShare",
    "OtSetupSession",
    "key_id_of",
    "EcdsaSignature",
    "Ledger",
    "PartialSignature",
    "Presignature",
    "PresignaturePublic",
    "PresignSession",
    "combine_signature",
    "presignature_id_of",
    "sign_with_presignature",
    "verify_signature",
]
