"""Variable-time edwards25519 arithmetic on PUBLIC points only (DKG public-key derivation).

Why by hand: libsodium (through pynacl) exposes only encoded-point operations, so every
addition re-decodes both inputs (a square root each) and re-encodes the result (an inversion),
and every multiplication is a full 253-bit constant-time ladder even by the scalar 2. The DKG
must evaluate the summed commitment polynomial at every participant id (``n (t-1)``
multiplications by small integers plus ``n t`` additions per party), which through libsodium
costs ~8 ms per party at 7-of-10. Here points stay in extended coordinates, multiplications
by small public integers are double-and-add, and each point is decoded and encoded once.

Scope, deliberately narrow: inputs must already have passed strict decoding
(``ED25519.decode_point``), only public values (commitments, verifying shares) go through
here (not constant time), and callers re-validate outputs with libsodium
(``ED25519.decode_point``) and cross-check their own verifying share against
``ED25519.base_mul(share)``. Formulas: RFC 8032 section 5.1.3 (decoding), 5.1.4 (the unified
addition for a = -1, complete on this curve, used for doubling too), 5.1.2 (encoding).
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2

P = 2**255 - 19
D = (-121665 * int(gmpy2.invert(121666, P))) % P
D2 = 2 * D % P
SQRT_M1 = int(gmpy2.powmod(2, (P - 1) // 4, P))

Ext = tuple[int, int, int, int]  # extended homogeneous coordinates (X, Y, Z, T)


def decode(b: bytes) -> Ext:
    """RFC 8032 section 5.1.3 point decoding (input already validated by libsodium)."""
    n = int.from_bytes(b, "little")
    sign = n >> 255
    y = n & ((1 << 255) - 1)
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    x = u * pow(v, 3, P) * int(gmpy2.powmod(u * pow(v, 7, P), (P - 5) // 8, P)) % P
    vx2 = v * x * x % P
    if vx2 != u:
        if vx2 != (-u) % P:
            raise ValueError("not a curve point")  # unreachable for validated input
        x = x * SQRT_M1 % P
    if (x & 1) != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def encode(p: Ext) -> bytes:
    """RFC 8032 section 5.1.2 point encoding."""
    x, y, z, _ = p
    zi = int(gmpy2.invert(z, P))
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def add(p: Ext, q: Ext) -> Ext:
    """RFC 8032 section 5.1.4 unified addition (complete for a = -1, non-square d)."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * D2 * t2 % P
    d = z1 * 2 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def double(p: Ext) -> Ext:
    """RFC 8032 section 5.1.4 point doubling."""
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def mul_small(p: Ext, k: int) -> Ext:
    """``k * p`` for a small public positive integer ``k`` (left-to-right double-and-add)."""
    bits = bin(k)[3:]  # the leading 1 is the starting value
    acc = p
    for bit in bits:
        acc = double(acc)
        if bit == "1":
            acc = add(acc, p)
    return acc


def polynomial_images(v: Sequence[bytes], xs: Sequence[int]) -> dict[int, bytes]:
    """``sum_k x^k V_k`` (Horner's rule) for each ``x`` in ``xs``, as encodings.

    ``v`` holds validated point encodings of the coefficients ``V_0..V_{t-1}`` (the summed
    commitments). An identity result comes back as the identity's encoding (``01 00..00``);
    callers refuse it.
    """
    pts = [decode(b) for b in v]
    out: dict[int, bytes] = {}
    for x in xs:
        acc = pts[-1]
        for vk in reversed(pts[:-1]):
            acc = add(mul_small(acc, x), vk)
        out[x] = encode(acc)
    return out
