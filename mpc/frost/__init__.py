"""FROST (RFC 9591): Ed25519/SHA-512, secp256k1/SHA-256 and the BIP-340 (secp256k1-tr) variant.

Public API::

    suite = frost.ciphersuite("ed25519" | "secp256k1" | "bip340")
    nonces, comm = frost.commit(suite, key_package)            # round one (or preprocess)
    batch = frost.preprocess(suite, key_package, count)       # [(nonces, commitments), ...]
    pkg = frost.signing_package([comm_1, comm_3], message)    # coordinator
    share = frost.sign(pkg, nonces, key_package)              # round two, nonces single use
    sig = frost.aggregate(pkg, [share_1, share_3], public)    # verified before returned
    frost.verify(suite, message, sig, public.group_public_key)
    suite.encode_public_key(public.group_public_key)          # 32-byte x-only for bip340
    taproot_tweak(key_package, merkle_root=b"")               # BIP-341 output-key shares

Wire/storage: ``SigningCommitments``, ``SigningPackage``, ``SignatureShare`` and
``SigningNonces`` have strict ``to_bytes``/``from_bytes`` (canonical CBOR).
Key material is :class:`mpc.shamir.KeyPackage` / :class:`mpc.shamir.PublicKeyPackage`.
The RFC 9591 internals (``nonce_generate`` with fixed randomness, binding factors, group
commitment, challenge) are in :mod:`mpc.hazmat`, not here.
"""

from mpc.frost.ciphersuite import (
    ED25519_SHA512,
    SECP256K1_SHA256,
    SECP256K1_TR,
    Ciphersuite,
    ciphersuite,
)
from mpc.frost.core import (
    aggregate,
    commit,
    preprocess,
    sign,
    verify,
    verify_signature_share,
)
from mpc.frost.taproot import taproot_tweak
from mpc.frost.types import (
    SignatureShare,
    SigningCommitments,
    SigningNonces,
    SigningPackage,
    signing_package,
)

__all__ = [
    "Ciphersuite",
    "ED25519_SHA512",
    "SECP256K1_SHA256",
    "SECP256K1_TR",
    "ciphersuite",
    "commit",
    "preprocess",
    "signing_package",
    "sign",
    "aggregate",
    "verify",
    "verify_signature_share",
    "SigningNonces",
    "SigningCommitments",
    "SigningPackage",
    "SignatureShare",
    "taproot_tweak",
]
