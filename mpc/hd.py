"""Hierarchical deterministic (non-hardened) derivation of threshold keys, and xpubs.

BIP-32 ("Hierarchical Deterministic Wallets") for secp256k1 keys, and an additive-tweak
scheme of our own for Ed25519, both applied to keys that exist only as Shamir shares: the
public side is derived as usual and each holder adds the accumulated, *public* tweak to its
share, so no whole key ever exists.

secp256k1 (ECDSA and BIP-340): BIP-32 section "Child key derivation (CKD) functions",
"Public parent key -> public child key" (``CKDpub``)
    ``I = HMAC-SHA512(Key = c_par, Data = serP(K_par) || ser32(i))``, ``I_L, I_R`` its halves;
    ``K_i = point(parse256(I_L)) + K_par``, ``c_i = I_R``; refused (BIP-32: "the resulting
    key is invalid, and one should proceed with the next value for i") if ``parse256(I_L) >=
    n`` or ``K_i`` is the point at infinity (probability below 2^-127; an error names the
    index, and the caller picks another). Only ``i < 2^31``: hardened derivation needs the
    parent *private* key (BIP-32 "Private parent key -> private child key"), which never
    exists here, so a hardened index is refused with :class:`HardenedDerivationError`.
Shares (BIP-32 "Public parent key -> public child key", read on the private side)
    Along a path the child key is ``K_par + t G`` with ``t = sum parse256(I_L)`` (mod n): the
    private child key would be ``k_par + t``. For a Shamir sharing, adding the constant ``t``
    to every share adds ``t`` to the secret (the Lagrange coefficients of any signer set sum
    to one), and ``Y_j + t G`` are the verifying shares of the child. So the child
    :class:`~mpc.shamir.KeyPackage` is ``(s_j + t, {Y_l + t G}, K_par + t G)``
    (:func:`derive_key_package`; public side :func:`derive_public_package`); it signs with
    :mod:`mpc.frost` (both the ``bip340`` suite, which negates an odd-Y child key and its
    shares at signing, as for any group key, and the RFC suites) and, as an
    :class:`~mpc.dkls23.EcdsaKeyShare`, with DKLs23 (:func:`derive_ecdsa_share`).
Serialization: BIP-32 section "Serialization format"
    4-byte version (mainnet ``xpub`` 0x0488B21E, testnet ``tpub`` 0x043587CF), depth (1
    byte), parent fingerprint (first 4 bytes of HASH160 of the parent's serP, zero at
    depth 0), child number (ser32), chain code (32 bytes), serP(K) (33 bytes), Base58Check.
    :func:`parse_xpub` refuses private versions (``xprv``/``tprv``: the service never holds a
    whole key), unknown versions, a bad checksum or length, a key that is not a compressed
    point on the curve, and depth-0 keys with a parent fingerprint or child number (BIP-32
    test vector 5).

The chain code (:func:`chain_code_from_dkg`)
    BIP-32 needs a 32-byte chain code next to the root key. Ours is
    ``tagged_hash("TPWC-v1/hd/chain-code", group || lp(context) || serP(Y))`` of the group
    key ``Y`` the DKG produced: a value every party holds at the end of the DKG without a
    further round, derived from what every party contributed (``Y = sum_i C_i0``, the sum of
    every party's constant-term commitment), and **unchanged by refresh and resharing**,
    which keep ``Y`` but change every verifying share and commitment: a hash of the
    commitments or verifying shares would change every derived address at each ceremony.
    A jointly contributed random value (a commit-reveal round at DKG) would keep the chain
    code secret from whoever knows only ``Y``, but must then be stored, backed up and
    carried through every refresh and reshare with the shares, for no security gain here:
    with non-hardened derivation only, the chain code protects no key; what it hides is the
    link between keys (BIP-32 "Security", "Implications": leaking an extended public key
    "can mean loss of privacy"). Consequences, to document for operators: (1) the root
    group key is as sensitive as the xpub (whoever knows it can link every derived key), so
    the root key itself should not be used as an address; (2) BIP-32 "Implications": the
    parent xpub plus any non-hardened child *private* key gives the parent private key. No
    child private key exists here, and a child share is a root share plus a public tweak,
    so ``t`` child shares are exactly as dangerous as ``t`` root shares; but a derived key
    must never be exported whole (a key-export ceremony for one address would give away
    the root and every other address).

Ed25519: an additive-tweak scheme (ours; :func:`ckd_pub_ed25519`)
    ``I = HMAC-SHA512(Key = c_par, Data = "TPWC-v1/hd/ed25519" || A_par || ser32(i))``,
    ``t = int_le(I) mod L`` (a wide reduction: 512 bits onto the 253-bit order),
    ``A_i = A_par + t G``, ``c_i = HMAC-SHA512(c_par, "TPWC-v1/hd/ed25519-chain" || A_par ||
    ser32(i))[:32]``; shares tweaked as above. Limits: it is **not** SLIP-10 (whose Ed25519
    derivation is hardened only) nor BIP32-Ed25519 (Khovratovich-Law, which derives from
    the extended private key and clamps); no other wallet derives the same keys; it is
    non-hardened only; the tweak, and so the link between parent and child, is known to
    anyone holding the parent key and chain code; there is no standard serialization (we
    export ``(A, chain code)`` only). Ed25519 and BIP-340 challenges hash the public key,
    which is what makes Schnorr signatures under additively related keys safe (Morita,
    Schuldt, Matsuda, Hanaoka, Iwata, "On the security of the Schnorr signature scheme and
    DSA against related-key attacks", ICISC 2015).

ECDSA with presignatures (Groth and Shoup, "On the security of ECDSA with additive key
derivation and presignatures", EUROCRYPT 2022, ePrint 2021/1330): when the tweak can be
chosen *after* the presignature's ``R`` is known, there is a cube-root forgery. So the
DKLs23 path derives the share first and presigns with the derived share: the presignature
is bound to the child's key id (:func:`mpc.dkls23.key_id_of`), the tweak is fixed before
``R`` exists, and ``sign_with_presignature`` refuses a presignature of another key. The OT
seeds of the share are independent of the key and are kept. Presignature pools are then
per derived key; tweaking at the online step (``w_i += r t phi_i``) is deliberately absent.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

from mpc.bip340 import tagged_hash
from mpc.dkls23.keygen import EcdsaKeyShare
from mpc.errors import DecodeError, EncodingError, UsageError
from mpc.groups import ED25519, SECP256K1, Group, Point
from mpc.shamir import KeyPackage, PublicKeyPackage

__all__ = [
    "HARDENED",
    "HardenedDerivationError",
    "ExtendedPublicKey",
    "Derivation",
    "parse_path",
    "chain_code_from_dkg",
    "ckd_pub",
    "ckd_pub_ed25519",
    "derive",
    "tweak_public_package",
    "tweak_key_package",
    "derive_public_package",
    "derive_key_package",
    "derive_ecdsa_share",
    "parse_xpub",
    "base58check_encode",
    "base58check_decode",
]

HARDENED = 0x80000000
MAX_DEPTH = 255
CHAIN_CODE_LEN = 32
VERSIONS: dict[str, int] = {"mainnet": 0x0488B21E, "testnet": 0x043587CF}
PRIVATE_VERSIONS: dict[int, str] = {0x0488ADE4: "xprv", 0x04358394: "tprv"}
Network = Literal["mainnet", "testnet"]
_ED_TWEAK = b"TPWC-v1/hd/ed25519"
_ED_CHAIN = b"TPWC-v1/hd/ed25519-chain"
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class HardenedDerivationError(UsageError):
    """A hardened index (>= 2^31) was asked for: it needs the parent private key."""

    def __init__(self, index: int, position: int) -> None:
        self.index = index
        self.position = position
        shown = f"{index - HARDENED}'" if index >= HARDENED else str(index)
        super().__init__(
            f"path step {position} is hardened ({shown}): hardened derivation needs the whole "
            "parent private key, which never exists in threshold custody; use non-hardened "
            "indices (< 2^31) only"
        )


# -- paths -------------------------------------------------------------------------------


def parse_path(path: str | Sequence[int]) -> tuple[int, ...]:
    """A derivation path: ``"m/0/1"``, ``"0/1"``, ``"m"`` or a sequence of indices.

    BIP-32 "The key tree": each index is a 32-bit number. Markers ``'``, ``h``, ``H`` and
    indices ``>= 2^31`` are hardened and refused (:class:`HardenedDerivationError`, naming
    the step); at most 255 steps (the depth is one byte in the serialization).
    """
    if isinstance(path, str):
        parts = path.split("/")
        if parts and parts[0] == "m":
            parts = parts[1:]
        out: list[int] = []
        for pos, p in enumerate(parts, start=1):
            if p and p[-1] in "'hH":
                digits = p[:-1]
                if not digits.isdigit() or not digits.isascii():
                    raise UsageError(f"path step {pos} {p!r} is not an index")
                raise HardenedDerivationError(int(digits) + HARDENED, pos)
            if not p.isdigit() or not p.isascii() or (len(p) > 1 and p[0] == "0"):
                raise UsageError(f"path step {pos} {p!r} is not a canonical decimal index")
            out.append(int(p))
        indices: Sequence[int] = out
    elif isinstance(path, list | tuple):
        indices = cast(Sequence[int], path)
    else:
        raise UsageError("a path is a string like 'm/0/1' or a sequence of indices")
    for pos, i in enumerate(indices, start=1):
        if type(i) is not int or i < 0 or i >= 2**32:
            raise UsageError(f"path step {pos} {i!r} is not a 32-bit index")
        if i >= HARDENED:
            raise HardenedDerivationError(i, pos)
    if len(indices) > MAX_DEPTH:
        raise UsageError(f"path has {len(indices)} steps; at most {MAX_DEPTH}")
    return tuple(indices)


def format_path(path: Sequence[int]) -> str:
    return "/".join(["m", *(str(i) for i in path)])


# -- chain code ----------------------------------------------------------------------------


def chain_code_from_dkg(public: PublicKeyPackage, context: bytes = b"") -> bytes:
    """The root chain code of a DKG key: ``tagged_hash(tag, group || lp(context) || enc(Y))``.

    See the module docstring ("The chain code") for why the group key ``Y`` and not the
    commitments: it is the jointly generated DKG output every party holds, and it survives
    refresh and resharing. ``context`` (e.g. the key id) separates keys that must not share
    a chain code; it must be the same for every party and for the key's whole life.
    """
    if not isinstance(public, PublicKeyPackage):
        raise UsageError("expected a mpc.shamir.PublicKeyPackage")
    if not isinstance(context, bytes) or len(context) > 1024:
        raise UsageError("context must be bytes of at most 1024")
    g = public.group
    data = g.name.encode() + len(context).to_bytes(4, "big") + context
    return tagged_hash("TPWC-v1/hd/chain-code", data + public.group_public_key.encode())


# -- one step -----------------------------------------------------------------------------


def _check_chain_code(chain_code: bytes) -> bytes:
    if not isinstance(chain_code, bytes | bytearray) or len(chain_code) != CHAIN_CODE_LEN:
        raise UsageError(f"chain code must be {CHAIN_CODE_LEN} bytes")
    return bytes(chain_code)


def _check_index(index: int) -> None:
    if type(index) is not int or index < 0 or index >= 2**32:
        raise UsageError(f"child index {index!r} is not a 32-bit index")
    if index >= HARDENED:
        raise HardenedDerivationError(index, 1)


def ckd_pub(parent: Point, chain_code: bytes, index: int) -> tuple[int, Point, bytes]:
    """BIP-32 ``CKDpub((K_par, c_par), i) -> (K_i, c_i)``; returns ``(I_L, K_i, c_i)``.

    Non-hardened ``i`` only. ``parse256(I_L) >= n`` or ``K_i`` at infinity is refused with a
    :class:`~mpc.errors.UsageError` naming the index (BIP-32: proceed with the next index).
    """
    if parent.group is not SECP256K1 or parent.is_identity():
        raise UsageError("BIP-32 CKDpub needs a secp256k1 public key")
    c = _check_chain_code(chain_code)
    _check_index(index)
    i = hmac.new(c, parent.encode() + index.to_bytes(4, "big"), hashlib.sha512).digest()
    il = int.from_bytes(i[:32], "big")
    if il >= SECP256K1.order:
        raise UsageError(f"child {index} is invalid (I_L >= n); use the next index")
    child = SECP256K1.base_mul(il) + parent
    if child.is_identity():
        raise UsageError(f"child {index} is the point at infinity; use the next index")
    return il, child, i[32:]


def ckd_pub_ed25519(parent: Point, chain_code: bytes, index: int) -> tuple[int, Point, bytes]:
    """Our Ed25519 additive-tweak step (module docstring); returns ``(t, A_i, c_i)``."""
    if parent.group is not ED25519 or parent.is_identity():
        raise UsageError("the Ed25519 additive derivation needs an ed25519 public key")
    c = _check_chain_code(chain_code)
    _check_index(index)
    data = parent.encode() + index.to_bytes(4, "big")
    t = int.from_bytes(hmac.new(c, _ED_TWEAK + data, hashlib.sha512).digest(), "little")
    t %= ED25519.order
    child = ED25519.base_mul(t) + parent
    if t == 0 or child.is_identity():
        raise UsageError(f"child {index} is degenerate; use the next index")
    return t, child, hmac.new(c, _ED_CHAIN + data, hashlib.sha512).digest()[:32]


# -- extended public keys ----------------------------------------------------------------


def _hash160(data: bytes) -> bytes:
    sha = hashlib.sha256(data).digest()
    try:
        return hashlib.new("ripemd160", sha).digest()
    except ValueError:  # OpenSSL 3 without the legacy provider
        from Crypto.Hash import RIPEMD160  # pycryptodome (a dependency of eth-hash)

        return bytes(RIPEMD160.new(sha).digest())


@dataclass(frozen=True)
class ExtendedPublicKey:
    """A node of the derivation tree: key, chain code and BIP-32 serialization metadata."""

    key: Point
    chain_code: bytes
    depth: int = 0
    parent_fingerprint: bytes = bytes(4)
    child_number: int = 0

    def __post_init__(self) -> None:
        _check_chain_code(self.chain_code)
        if self.key.group is not SECP256K1 and self.key.group is not ED25519:
            raise UsageError("unsupported group")
        if self.key.is_identity():
            raise UsageError("an extended key cannot be the identity")
        if type(self.depth) is not int or not 0 <= self.depth <= MAX_DEPTH:
            raise UsageError("depth must be in [0, 255]")
        if len(self.parent_fingerprint) != 4 or not 0 <= self.child_number < 2**32:
            raise UsageError("bad parent fingerprint or child number")
        if self.depth == 0 and (self.parent_fingerprint != bytes(4) or self.child_number != 0):
            raise UsageError("a depth-0 key has no parent fingerprint or child number")

    @property
    def group(self) -> Group:
        return self.key.group

    @property
    def fingerprint(self) -> bytes:
        """BIP-32 "Key identifiers": the first 4 bytes of HASH160(serP(K)) (secp256k1 only)."""
        if self.group is not SECP256K1:
            raise UsageError("key fingerprints are defined for secp256k1 keys only")
        return _hash160(self.key.encode())[:4]

    def child(self, index: int) -> tuple[int, ExtendedPublicKey]:
        """One CKDpub step: ``(tweak, child node)``."""
        step = ckd_pub if self.group is SECP256K1 else ckd_pub_ed25519
        if self.depth >= MAX_DEPTH:
            raise UsageError("depth 255 reached")
        tweak, key, cc = step(self.key, self.chain_code, index)
        fp = self.fingerprint if self.group is SECP256K1 else bytes(4)
        return tweak, ExtendedPublicKey(key, cc, self.depth + 1, fp, index)

    def serialize(self, network: Network = "mainnet") -> bytes:
        """BIP-32 "Serialization format": the 78 bytes before Base58Check."""
        if self.group is not SECP256K1:
            raise UsageError("BIP-32 serialization is defined for secp256k1 keys only")
        if network not in VERSIONS:
            raise UsageError(f"network must be one of {sorted(VERSIONS)}")
        return (
            VERSIONS[network].to_bytes(4, "big")
            + bytes([self.depth])
            + self.parent_fingerprint
            + self.child_number.to_bytes(4, "big")
            + self.chain_code
            + self.key.encode()
        )

    def to_xpub(self, network: Network = "mainnet") -> str:
        """``xpub...`` (mainnet) or ``tpub...`` (testnet)."""
        return base58check_encode(self.serialize(network))


def parse_xpub(text: str) -> tuple[ExtendedPublicKey, Network]:
    """Strictly parse a BIP-32 extended *public* key; returns it and its network.

    Every refusal is a :class:`~mpc.errors.DecodeError` naming the field.
    """
    data = base58check_decode(text)
    if len(data) != 78:
        raise DecodeError(f"extended key must be 78 bytes, got {len(data)}", field="length")
    version = int.from_bytes(data[:4], "big")
    if version in PRIVATE_VERSIONS:
        raise DecodeError(
            f"{PRIVATE_VERSIONS[version]}: extended private keys are refused (no whole key)",
            field="version",
        )
    networks = {v: n for n, v in VERSIONS.items()}
    if version not in networks:
        raise DecodeError(f"unknown extended key version {version:#010x}", field="version")
    depth, fp, child = data[4], data[5:9], int.from_bytes(data[9:13], "big")
    if depth == 0 and fp != bytes(4):
        raise DecodeError("depth 0 with a non-zero parent fingerprint", field="fingerprint")
    if depth == 0 and child != 0:
        raise DecodeError("depth 0 with a non-zero child number", field="child_number")
    try:
        key = SECP256K1.decode_point(data[45:78])
    except EncodingError as exc:
        raise DecodeError(str(exc), field="key") from None
    net: Network = "mainnet" if networks[version] == "mainnet" else "testnet"
    return ExtendedPublicKey(key, data[13:45], depth, fp, child), net


# -- paths of several steps -----------------------------------------------------------------


@dataclass(frozen=True)
class Derivation:
    """The result of deriving ``path`` from a root: the child node and the summed tweak."""

    path: tuple[int, ...]
    tweak: int
    node: ExtendedPublicKey

    @property
    def public_key(self) -> Point:
        return self.node.key


def derive(root: ExtendedPublicKey, path: str | Sequence[int]) -> Derivation:
    """Apply CKDpub along ``path``; ``tweak`` is the sum of the steps' ``I_L`` (mod order)."""
    if not isinstance(root, ExtendedPublicKey):
        raise UsageError("expected an ExtendedPublicKey")
    steps = parse_path(path)
    if root.depth + len(steps) > MAX_DEPTH:
        raise UsageError("the derived depth would exceed 255")
    q = root.group.order
    tweak, node = 0, root
    for i in steps:
        t, node = node.child(i)
        tweak = (tweak + t) % q
    return Derivation(steps, tweak, node)


def tweak_public_package(public: PublicKeyPackage, tweak: int) -> PublicKeyPackage:
    """The public package of the key ``Y + tweak G``: every verifying share plus ``tweak G``."""
    g = public.group
    if type(tweak) is not int or not 0 <= tweak < g.order:
        raise UsageError("tweak must be a scalar")
    tg = g.base_mul(tweak)
    pk = public.group_public_key + tg
    shares = {i: y + tg for i, y in public.verifying_shares.items()}
    if pk.is_identity() or any(y.is_identity() for y in shares.values()):
        raise UsageError("the tweaked key or a tweaked verifying share is the identity")
    return PublicKeyPackage(g, public.min_signers, pk, shares)


def tweak_key_package(key: KeyPackage, tweak: int) -> KeyPackage:
    """Share ``s_j + tweak`` of the key ``Y + tweak G`` (adding a constant to every share)."""
    public = tweak_public_package(key.public, tweak)
    return KeyPackage(key.identifier, (key.signing_share + tweak) % key.group.order, public)


def _root(public: PublicKeyPackage, chain_code: bytes) -> ExtendedPublicKey:
    if not isinstance(public, PublicKeyPackage):
        raise UsageError("expected a mpc.shamir.PublicKeyPackage")
    return ExtendedPublicKey(public.group_public_key, _check_chain_code(chain_code))


def derive_public_package(
    public: PublicKeyPackage, chain_code: bytes, path: str | Sequence[int]
) -> PublicKeyPackage:
    """The child's public package at ``path`` from the root key ``public`` (coordinator side)."""
    return tweak_public_package(public, derive(_root(public, chain_code), path).tweak)


def derive_key_package(key: KeyPackage, chain_code: bytes, path: str | Sequence[int]) -> KeyPackage:
    """The child's key package at ``path``: each node derives its own share's tweak."""
    if not isinstance(key, KeyPackage):
        raise UsageError("expected a mpc.shamir.KeyPackage")
    return tweak_key_package(key, derive(_root(key.public, chain_code), path).tweak)


def derive_ecdsa_share(
    share: EcdsaKeyShare, chain_code: bytes, path: str | Sequence[int]
) -> EcdsaKeyShare:
    """A DKLs23 share of the child at ``path``: derived Shamir part, the same OT seeds.

    Presign with the result (module docstring: the tweak must be fixed before ``R``).
    """
    if not isinstance(share, EcdsaKeyShare):
        raise UsageError("expected a mpc.dkls23.EcdsaKeyShare")
    return EcdsaKeyShare(derive_key_package(share.key, chain_code, path), share.bob, share.alice)


# -- Base58Check (BIP-32 "Serialization format": "Base58Check-encoded") -------------------


def base58check_encode(payload: bytes) -> str:
    """Base58 of ``payload || SHA256d(payload)[:4]`` (leading zero bytes as ``1``)."""
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + "".join(reversed(out))


def base58check_decode(text: str) -> bytes:
    """Inverse of :func:`base58check_encode`; a bad character or checksum is a DecodeError."""
    if not isinstance(text, str) or not 0 < len(text) <= 200:
        raise DecodeError("expected a Base58Check string", field="base58")
    n = 0
    for ch in text:
        k = _B58.find(ch)
        if k < 0:
            raise DecodeError(f"invalid Base58 character {ch!r}", field="base58")
        n = n * 58 + k
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    data = bytes(pad) + body
    if len(data) < 4:
        raise DecodeError("too short for a checksum", field="checksum")
    payload, check = data[:-4], data[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != check:
        raise DecodeError("invalid Base58Check checksum", field="checksum")
    return payload
