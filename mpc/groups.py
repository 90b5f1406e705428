"""Prime-order groups: secp256k1 (libsecp256k1 via coincurve) and Ed25519 (libsodium via pynacl).

The curve arithmetic itself is never written by hand here: every multiplication and
addition is done by libsecp256k1 or libsodium. This module only adds what the protocols
need on top: one small interface for both curves, scalars as Python ints reduced modulo the
group order, an explicit identity element, and *strict* decoding:

* scalars: exact length, canonical (``< order``), non-zero unless explicitly allowed;
* secp256k1 points: 33-byte compressed SEC1 only (SEC 1 v2, section 2.3.4), x < p, on the curve;
* Ed25519 points: 32 bytes, canonical y, on the curve, not of small order, in the prime-order
  subgroup (RFC 9591 section 6.1 DeserializeElement; RFC 8032 section 5.1.3), which is what
  libsodium's ``crypto_core_ed25519_is_valid_point`` checks.

The identity is representable (sums can cancel) but has no encoding: ``encode`` refuses it,
as RFC 9591 section 4 requires of SerializeElement.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Final

import coincurve
import gmpy2
from nacl import bindings as sodium

from mpc.errors import EncodingError

__all__ = [
    "Point",
    "Group",
    "Ed25519Group",
    "Secp256k1Group",
    "ED25519",
    "SECP256K1",
    "group_by_name",
]


class Point(ABC):
    """An element of a prime-order group. Immutable; ``==`` compares group and value."""

    __slots__ = ()
    group: Group

    @abstractmethod
    def __add__(self, other: Point) -> Point: ...

    @abstractmethod
    def __sub__(self, other: Point) -> Point: ...

    @abstractmethod
    def __neg__(self) -> Point: ...

    @abstractmethod
    def __mul__(self, scalar: int) -> Point: ...

    def __rmul__(self, scalar: int) -> Point:
        return self * scalar

    @abstractmethod
    def is_identity(self) -> bool: ...

    @abstractmethod
    def encode(self) -> bytes:
        """Canonical encoding (RFC 9591 SerializeElement); raises EncodingError for the identity."""

    def __repr__(self) -> str:
        if self.is_identity():
            return f"{self.group.name}.identity"
        return f"{self.group.name}.Point({self.encode().hex()})"


class Group(ABC):
    """A prime-order group with scalar field Z/order."""

    name: str
    order: int
    scalar_len: int = 32
    element_len: int

    # -- scalars -------------------------------------------------------------------------
    def random_scalar(self, rng: Callable[[int], bytes] = secrets.token_bytes) -> int:
        """Uniform non-zero scalar (RFC 9591 section 4.1, RandomScalar).

        ``rng(n)`` returns ``n`` random bytes: the OS CSPRNG unless a session's randomness
        was replaced through :func:`mpc.hazmat.set_rng` (recorded vectors only).
        """
        while True:
            # 64 random bytes reduced mod order: bias below 2^-250 (cf. RFC 9380 section 5).
            s = int.from_bytes(rng(64), "big") % self.order
            if s:
                return s

    @abstractmethod
    def encode_scalar(self, s: int) -> bytes:
        """Canonical fixed-length scalar encoding (RFC 9591 SerializeScalar)."""

    @abstractmethod
    def _scalar_int(self, data: bytes) -> int: ...

    def decode_scalar(self, data: bytes, *, allow_zero: bool = False) -> int:
        """Strict scalar decoding (RFC 9591 DeserializeScalar): exact length, ``< order``."""
        if not isinstance(data, bytes | bytearray) or len(data) != self.scalar_len:
            raise EncodingError(f"{self.name} scalar must be {self.scalar_len} bytes")
        s = self._scalar_int(bytes(data))
        if s >= self.order:
            raise EncodingError(f"{self.name} scalar is not canonical (>= group order)")
        if s == 0 and not allow_zero:
            raise EncodingError(f"{self.name} scalar is zero")
        return s

    def inv(self, s: int) -> int:
        """Multiplicative inverse modulo the order (gmpy2: constant factors matter in hot loops)."""
        if s % self.order == 0:
            raise EncodingError(f"{self.name}: zero has no inverse")
        return int(gmpy2.invert(s, self.order))

    # -- elements ------------------------------------------------------------------------
    @property
    @abstractmethod
    def identity(self) -> Point: ...

    @property
    @abstractmethod
    def generator(self) -> Point: ...

    @abstractmethod
    def base_mul(self, s: int) -> Point:
        """``s * G`` (RFC 9591 ScalarBaseMult)."""

    @abstractmethod
    def decode_point(self, data: bytes) -> Point:
        """Strict element decoding (RFC 9591 DeserializeElement); rejects the identity."""

    def sum(self, points: list[Point]) -> Point:
        acc = self.identity
        for p in points:
            acc = acc + p
        return acc

    def __repr__(self) -> str:
        return f"<group {self.name}>"


# ---------------------------------------------------------------------------------------
# Ed25519 (libsodium)
# ---------------------------------------------------------------------------------------

_ED_L: Final = 2**252 + 27742317777372353535851937790883648493
_ED_IDENTITY: Final = bytes([1]) + bytes(31)


class Ed25519Point(Point):
    __slots__ = ("_b",)

    def __init__(self, b: bytes) -> None:
        self._b = b  # canonical encoding; only built from validated input or libsodium output

    def __add__(self, other: Point) -> Point:
        assert isinstance(other, Ed25519Point)
        return Ed25519Point(sodium.crypto_core_ed25519_add(self._b, other._b))

    def __sub__(self, other: Point) -> Point:
        assert isinstance(other, Ed25519Point)
        return Ed25519Point(sodium.crypto_core_ed25519_sub(self._b, other._b))

    def __neg__(self) -> Point:
        return Ed25519Point(sodium.crypto_core_ed25519_sub(_ED_IDENTITY, self._b))

    def __mul__(self, scalar: int) -> Point:
        s = scalar % _ED_L
        if s == 0 or self._b == _ED_IDENTITY:
            return ED25519.identity
        return Ed25519Point(
            sodium.crypto_scalarmult_ed25519_noclamp(s.to_bytes(32, "little"), self._b)
        )

    def is_identity(self) -> bool:
        return self._b == _ED_IDENTITY

    def encode(self) -> bytes:
        if self._b == _ED_IDENTITY:
            raise EncodingError("ed25519: the identity element has no encoding")
        return self._b

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ed25519Point) and other._b == self._b

    def __hash__(self) -> int:
        return hash(("ed25519", self._b))


class Ed25519Group(Group):
    """The prime-order subgroup of edwards25519 (RFC 8032), order L = 2^252 + 2774...493."""

    name = "ed25519"
    order = _ED_L
    element_len = 32

    def __init__(self) -> None:
        self._identity = Ed25519Point(_ED_IDENTITY)
        self._generator = Ed25519Point(
            sodium.crypto_scalarmult_ed25519_base_noclamp((1).to_bytes(32, "little"))
        )

    def encode_scalar(self, s: int) -> bytes:
        return (s % _ED_L).to_bytes(32, "little")

    def _scalar_int(self, data: bytes) -> int:
        return int.from_bytes(data, "little")

    @property
    def identity(self) -> Point:
        return self._identity

    @property
    def generator(self) -> Point:
        return self._generator

    def base_mul(self, s: int) -> Point:
        s %= _ED_L
        if s == 0:
            return self._identity
        return Ed25519Point(sodium.crypto_scalarmult_ed25519_base_noclamp(s.to_bytes(32, "little")))

    def decode_point(self, data: bytes) -> Point:
        if not isinstance(data, bytes | bytearray) or len(data) != 32:
            raise EncodingError("ed25519 element must be 32 bytes")
        data = bytes(data)
        # libsodium: canonical, on curve, not small order (so not the identity), in the
        # prime-order subgroup.
        if not sodium.crypto_core_ed25519_is_valid_point(data):
            raise EncodingError(
                "ed25519 element is not a canonical point of the prime-order subgroup"
            )
        return Ed25519Point(data)


# ---------------------------------------------------------------------------------------
# secp256k1 (libsecp256k1 through coincurve)
# ---------------------------------------------------------------------------------------

_K_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_K_P: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F


class Secp256k1Point(Point):
    __slots__ = ("_k",)

    def __init__(self, k: coincurve.PublicKey | None) -> None:
        self._k = k  # None is the point at infinity

    @property
    def pubkey(self) -> coincurve.PublicKey:
        if self._k is None:
            raise EncodingError("secp256k1: the identity element has no public key form")
        return self._k

    def __add__(self, other: Point) -> Point:
        assert isinstance(other, Secp256k1Point)
        if self._k is None:
            return other
        if other._k is None:
            return self
        try:
            return Secp256k1Point(coincurve.PublicKey.combine_keys([self._k, other._k]))
        except ValueError:  # libsecp256k1 reports the point at infinity as an error
            return SECP256K1.identity

    def __sub__(self, other: Point) -> Point:
        return self + (-other)

    def __neg__(self) -> Point:
        if self._k is None:
            return self
        c = self._k.format(compressed=True)
        return Secp256k1Point(coincurve.PublicKey(bytes([c[0] ^ 1]) + c[1:]))

    def __mul__(self, scalar: int) -> Point:
        s = scalar % _K_N
        if s == 0 or self._k is None:
            return SECP256K1.identity
        return Secp256k1Point(self._k.multiply(s.to_bytes(32, "big")))

    def is_identity(self) -> bool:
        return self._k is None

    def encode(self) -> bytes:
        if self._k is None:
            raise EncodingError("secp256k1: the identity element has no encoding")
        return self._k.format(compressed=True)

    def has_even_y(self) -> bool:
        return self.encode()[0] == 2

    def x_only(self) -> bytes:
        """The 32-byte x coordinate (BIP-340 section "Public Key Generation")."""
        return self.encode()[1:]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secp256k1Point):
            return False
        if self._k is None or other._k is None:
            return self._k is None and other._k is None
        return self._k.format() == other._k.format()

    def __hash__(self) -> int:
        return hash(("secp256k1", None if self._k is None else self._k.format()))


class Secp256k1Group(Group):
    """secp256k1 (SEC 2 v2, section 2.4.1): big-endian scalars, 33-byte compressed points."""

    name = "secp256k1"
    order = _K_N
    field_prime = _K_P
    element_len = 33

    def __init__(self) -> None:
        self._identity = Secp256k1Point(None)
        self._generator = Secp256k1Point(coincurve.PublicKey.from_secret((1).to_bytes(32, "big")))

    def encode_scalar(self, s: int) -> bytes:
        return (s % _K_N).to_bytes(32, "big")

    def _scalar_int(self, data: bytes) -> int:
        return int.from_bytes(data, "big")

    @property
    def identity(self) -> Point:
        return self._identity

    @property
    def generator(self) -> Point:
        return self._generator

    def base_mul(self, s: int) -> Point:
        s %= _K_N
        if s == 0:
            return self._identity
        return Secp256k1Point(coincurve.PublicKey.from_secret(s.to_bytes(32, "big")))

    def decode_point(self, data: bytes) -> Point:
        if not isinstance(data, bytes | bytearray) or len(data) != 33:
            raise EncodingError("secp256k1 element must be 33 bytes (compressed SEC1)")
        data = bytes(data)
        if data[0] not in (2, 3):
            raise EncodingError("secp256k1 element must start with 0x02 or 0x03")
        try:
            # libsecp256k1 rejects x >= p and x not on the curve.
            return Secp256k1Point(coincurve.PublicKey(data))
        except ValueError:
            raise EncodingError("secp256k1 element is not a point on the curve") from None

    def lift_x(self, x: bytes) -> Secp256k1Point:
        """BIP-340 ``lift_x``: the point with x coordinate ``x`` and even y, strictly decoded."""
        if not isinstance(x, bytes | bytearray) or len(x) != 32:
            raise EncodingError("secp256k1 x-only key must be 32 bytes")
        p = self.decode_point(b"\x02" + bytes(x))
        assert isinstance(p, Secp256k1Point)
        return p


ED25519: Final = Ed25519Group()
SECP256K1: Final = Secp256k1Group()
# Point.group (used by repr): set once both groups exist.
Ed25519Point.group = ED25519
Secp256k1Point.group = SECP256K1


def group_by_name(name: str) -> Group:
    """Look a group up by its name (``"ed25519"`` or ``"secp256k1"``)."""
    if name == "ed25519":
        return ED25519
    if name == "secp256k1":
        return SECP256K1
    raise EncodingError(f"unknown group {name!r}")
