"""Bit-matrix helpers for the OT extension: transposition and the packed GF(2^128) check hash.

Why by hand: no maintained Python library offers OT extension (or the bit-matrix
transposition and binary-field hashing it needs), and the only fast primitive CPython gives
us for bit vectors is the arbitrary-precision ``int`` (XOR/AND/shift run in C over whole
machine words). So every bit matrix here is one big ``int`` and every operation is a handful
of whole-matrix big-int operations instead of a Python loop over bits.

Conventions: a byte string ``b`` is read as ``int.from_bytes(b, "little")``, so bit ``j`` of
the vector is bit ``j % 8`` of byte ``j // 8``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Final

from gmpy2 import mpz

#: transposition works on 256 x 256 blocks (256 = KAPPA base OTs = columns of the OTE matrix)
BLOCK: Final = 256
_BLOCK_BYTES: Final = BLOCK * BLOCK // 8


def _delta_swap_masks() -> list[tuple[int, int]]:
    """Masks of the recursive block transpose (Hacker's Delight, section 7-3), 8 levels."""
    out: list[tuple[int, int]] = []
    s = BLOCK // 2
    while s:
        row = 0
        for c in range(BLOCK):
            if c & s:
                row |= 1 << c
        m = 0
        for r in range(BLOCK):
            if not r & s:
                m |= row << (BLOCK * r)
        # element (r, c) with r&s == 0, c&s != 0 swaps with (r+s, c-s): BLOCK*s - s bits further
        out.append((s * (BLOCK - 1), m))
        s >>= 1
    return out


_MASKS: Final = _delta_swap_masks()


def transpose_block(x: int) -> int:
    """Transpose a 256 x 256 bit matrix stored row-major (row r = bits [256r, 256r+256))."""
    for d, m in _MASKS:
        t = ((x >> d) ^ x) & m
        x ^= t ^ (t << d)
    return x


def columns_to_rows(cols: Sequence[bytes], nrows: int) -> bytes:
    """Rows ``0..nrows-1`` of the matrix whose 256 columns are ``cols``.

    KOS15 (ePrint 2015/546) Fig. 10, phase "Transpose and Randomize", first step.

    Returns ``nrows * 32`` bytes; row ``j`` is bytes ``[32j, 32j + 32)`` and its bit ``l`` is
    bit ``j`` of column ``l``. ``nrows`` need not be a multiple of ``BLOCK`` (``XI = 896``):
    the last block is transposed whole and cut, so every column must hold
    ``ceil(nrows / BLOCK) * BLOCK`` bits (the ``ETA = XI + S`` extended bits do).
    """
    nblocks = -(-nrows // BLOCK)
    assert len(cols) == BLOCK and all(len(c) >= 32 * nblocks for c in cols)
    out = []
    for b in range(nblocks):
        lo, hi = 32 * b, 32 * b + 32
        m = int.from_bytes(b"".join(c[lo:hi] for c in cols), "little")
        out.append(transpose_block(m).to_bytes(_BLOCK_BYTES, "little"))
    return b"".join(out)[: 32 * nrows]


@lru_cache(maxsize=16)
def _rep(width: int, count: int) -> int:
    return int.from_bytes((b"\x01" + bytes(width // 8 - 1)) * count, "little")


def replicate(value: int, width: int, count: int) -> int:
    """``value`` copied into ``count`` consecutive slots of ``width`` bits (value < 2^width)."""
    return value * _rep(width, count)


def bit_slot_mask(bits: int, width: int, count: int, ones: int | None = None) -> int:
    """``count`` slots of ``width`` bits; slot l: low ``ones`` bits set iff ``bits`` has bit l.

    ``ones`` defaults to the whole slot.
    """
    nb = width // 8
    k = nb if ones is None else ones // 8
    full = b"\xff" * k + bytes(nb - k)
    zero = bytes(nb)
    return int.from_bytes(
        b"".join([full if bits >> col & 1 else zero for col in range(count)]), "little"
    )


# -- GF(2^128) universal hash over column chunks (KOS15 Fig. 10 / SoftSpokenOT consistency check)

SIGMA: Final = 128
_M128: Final = (1 << SIGMA) - 1


@lru_cache(maxsize=4)
def _half_masks(ncols: int) -> tuple[mpz, mpz]:
    """Low 128 bits of 256-bit slots: ``ceil(ncols/2)`` slots, and twice as many."""
    n2 = (ncols + 1) // 2
    return mpz(replicate(_M128, 256, n2)), mpz(replicate(_M128, 256, 2 * n2))


def check_hash(matrix: bytes, ncols: int, chis: Sequence[int]) -> bytes:
    """For every column ``v`` (``len(chis)+1`` chunks of 128 bits): ``v_m + sum_c chi_c * v_c``.

    This is the linear universal hash of the consistency check: KOS15 (ePrint 2015/546)
    Fig. 10, phase "Consistency Check", ``x_dot = x_hat_{m+1} + sum_c chi_c x_hat_c`` and
    likewise for every column ``t^l`` / ``q^l``, with chunk ``m`` (the last ``SIGMA``
    extension bits) as the unweighted mask; SoftSpokenOT (ePrint 2022/192) proves this check
    in its malicious-security section (section 4 in the 2025 revision; the section numbers
    moved between revisions, so we cite it by name). Products are in GF(2^128) modulo
    ``x^128 + x^7 + x^2 + x + 1``.

    ``matrix`` is ``ncols`` columns of equal length, concatenated; the result is the 16-byte
    hash of every column, concatenated (little-endian, like the columns). All columns are
    hashed at once: chunk ``c`` of every column goes into one gmpy2 integer with 256-bit
    slots (even columns in the lower half, odd columns in the upper half, so each 128-bit
    chunk has room for its 255-bit unreduced product), and every step below is a handful
    of whole-vector operations.
    """
    m = len(chis)
    col_bytes = len(matrix) // ncols
    assert col_bytes * ncols == len(matrix) and col_bytes == 16 * (m + 1)
    even, lo = _half_masks(ncols)
    off = 256 * ((ncols + 1) // 2)

    def chunk(c: int) -> mpz:
        d = mpz.from_bytes(
            b"".join([matrix[k : k + 16] for k in range(16 * c, len(matrix), col_bytes)]),
            "little",
        )
        return (d & even) | (((d >> SIGMA) & even) << off)

    chunks = [chunk(c) for c in range(m + 1)]
    # sum_c chi_c * P_c = sum_b x^b * (XOR of P_c over the c with bit b of chi_c set):
    # the 2^m subset XORs once, then one Horner pass over the 128 bit positions.
    subset = [mpz(0)] * (1 << m)
    for mask in range(1, 1 << m):
        low = mask & -mask
        subset[mask] = subset[mask ^ low] ^ chunks[low.bit_length() - 1]
    acc = mpz(0)
    for b in range(SIGMA - 1, -1, -1):
        sel = 0
        for c in range(m):
            sel |= ((chis[c] >> b) & 1) << c
        acc = (acc << 1) ^ subset[sel]
    for _ in range(2):  # reduce every slot modulo the GCM polynomial
        hi = (acc >> SIGMA) & lo
        acc = (acc & lo) ^ hi ^ (hi << 1) ^ (hi << 2) ^ (hi << 7)
    raw: bytes = (chunks[m] ^ acc).to_bytes(off // 4, "little")
    half = off // 8
    return b"".join([raw[half * (col & 1) + 32 * (col >> 1) :][:16] for col in range(ncols)])
