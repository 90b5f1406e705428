"""Packed vectors of Z_q scalars: ``XI`` values in one gmpy2 integer ("big-int SIMD").

Why by hand: the multiplication (DKLs19 Protocol 1 as DKLs23 Protocol 5.2 runs it) does the
same few operations on ``XI = 512`` scalars per input (derandomisation ``tau``, the check
values ``r``). A Python loop costs ~1 us per element and operation; one gmpy2 operation on
a 64 KiB integer holding all 512 values costs a few microseconds. No library offers
vectorised arithmetic modulo the secp256k1 order in Python without a new dependency, so the
vector lives in one ``mpz``: element ``j`` sits in the 1024-bit slot ``XI - 1 - j`` (so that
big-endian bytes list ``j = 0`` first) and occupies its low 256 bits when canonical. The
headroom (768 bits) keeps sums and products of two scalars inside their slot, so slot
arithmetic never carries into a neighbour as long as every slot value stays non-negative,
which the callers ensure by adding multiples of ``q`` before subtracting.

Reduction modulo ``q = 2^256 - c`` (``c < 2^129``) folds ``hi * 2^256 + lo`` to
``lo + hi * c`` until the value is below ``2q``, then subtracts ``q`` from the slots that
are at least ``q`` (found by the carry of ``x + c`` into bit 256), all slots at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from gmpy2 import mpz

from mpc.dkls23.params import XI, Q

SLOT: Final = 1024
_N: Final = XI
_W: Final = SLOT // 256  # four 256-bit values per slot when packed densely
_SLOT_BYTES: Final = SLOT // 8
C: Final = (1 << 256) - Q

Vec = Any  # a gmpy2 mpz holding XI slots (gmpy2 ships no type stubs)


def rep(value: int) -> Vec:
    """``value`` (``< 2^SLOT``) in every slot."""
    return ONES * value


ONES: Final = mpz.from_bytes((b"\x00" * (_SLOT_BYTES - 1) + b"\x01") * _N, "big")
LO: Final = ONES * ((1 << 256) - 1)
_HI: Final = ONES * ((1 << (SLOT - 256)) - 1)
_C: Final = ONES * C
Q_REP: Final = ONES * Q
Q2_REP: Final = ONES * (2 * Q)


def reduce(x: Vec, bits: int) -> Vec:
    """Every slot of ``x`` (each ``0 <= value < 2^bits``, ``bits < SLOT``) reduced mod ``q``."""
    b = bits
    while b > 256:
        hb = b - 256
        x = (x & LO) + ((x >> 256) & _HI) * C  # value < 2^256 + 2^(hb + 129)
        if hb <= 126:  # now below 2^256 + 2^255 < 2q
            break
        b = hb + 130
    z = x + _C
    carry = (z >> 256) & ONES  # 1 where x >= q
    return x + carry * C - (carry << 256)


def unpack(buf: bytes, width: int, index: int) -> list[int]:
    """Scalars ``index, index + width, ...`` of ``buf`` (32-byte big-endian values)."""
    frm = int.from_bytes
    step = 32 * width
    return [frm(buf[k : k + 32], "big") for k in range(32 * index, len(buf), step)]


def streams(buf: bytes) -> list[Vec]:
    """Split ``XI * 4`` 32-byte big-endian values ordered ``(j, i)`` into four vectors.

    Vector ``i`` holds the values ``(j, i)`` for ``j < XI`` (not reduced: each ``< 2^256``).
    Value ``(j, i)`` is bits ``[256 (4 (XI-1-j) + 3-i), +256)`` of the big-endian integer,
    so a shift by ``256 (3-i)`` and a mask put it in the low bits of slot ``XI-1-j``.
    """
    assert len(buf) == 32 * _W * _N
    p = mpz.from_bytes(buf, "big")
    return [(p >> (256 * (_W - 1 - i))) & LO for i in range(_W)]


def join(vecs: Sequence[Vec]) -> bytes:
    """Inverse of :func:`streams` for four canonical vectors (each slot value ``< 2^256``)."""
    assert len(vecs) == _W
    acc = vecs[0]
    for v in vecs[1:]:
        acc = (acc << 256) | v
    out: bytes = acc.to_bytes(32 * _W * _N, "big")
    return out


def to_bytes(v: Vec) -> bytes:
    """The whole vector as ``XI`` blocks of 128 bytes (a canonical encoding for hashing)."""
    out: bytes = v.to_bytes(_SLOT_BYTES * _N, "big")
    return out


def below_q(v: Vec) -> bool:
    """True iff every slot value (each ``< 2^256``) is a canonical scalar, i.e. ``< q``."""
    return not ((v + _C) >> 256) & ONES


def slot_mask(bits: int) -> Vec:
    """Slot ``j`` all-ones in its low 256 bits iff bit ``j`` of ``bits`` is set."""
    full = bytes(_SLOT_BYTES - 32) + b"\xff" * 32
    zero = bytes(_SLOT_BYTES)
    return mpz.from_bytes(b"".join([full if bits >> j & 1 else zero for j in range(_N)]), "big")
