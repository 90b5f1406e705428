"""mpc.groups: differential tests against independent references, and strict decoding.

References: py-ecc's pure-Python secp256k1 (add, multiply); a pure-Python edwards25519 written
here from RFC 8032 section 5.1 (no shared code with libsodium); ``cryptography``'s Ed25519
public-key derivation (OpenSSL).
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import example, given, settings
from hypothesis import strategies as st
from py_ecc.secp256k1 import secp256k1 as k1

from mpc.errors import EncodingError
from mpc.groups import ED25519, SECP256K1, group_by_name

FEW = settings(max_examples=30, deadline=None)
scalars_k1 = st.integers(min_value=1, max_value=SECP256K1.order - 1)
scalars_ed = st.integers(min_value=1, max_value=ED25519.order - 1)

# ---------------------------------------------------------------------------------------
# Reference edwards25519 (RFC 8032 section 5.1), extended coordinates, pure Python.
# ---------------------------------------------------------------------------------------
P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Ref = tuple[int, int, int, int]


def ref_add(a: Ref, b: Ref) -> Ref:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def ref_mul(s: int, pt: Ref) -> Ref:
    q: Ref = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = ref_add(q, pt)
        pt = ref_add(pt, pt)
        s >>= 1
    return q


def ref_encode(pt: Ref) -> bytes:
    x, y, z, _ = pt
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def ref_decode(b: bytes) -> Ref | None:
    """RFC 8032 section 5.1.3, lenient about canonicity (so tests can build bad encodings)."""
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if (x & 1) != sign:
        x = P - x
    return (x % P, y % P, 1, x * y % P)


BASE = ref_decode((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))
assert BASE is not None
L = ED25519.order


def torsion_points() -> list[bytes]:
    """The 8 points of the small-order subgroup E[8], computed from a point of order 8."""
    t8 = ref_decode(
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
    )
    assert t8 is not None
    pts = [ref_encode(ref_mul(k, t8)) for k in range(8)]
    assert len(set(pts)) == 8 and ref_encode(ref_mul(8, t8)) == ref_encode((0, 1, 1, 0))
    return pts


# ---------------------------------------------------------------------------------------
# secp256k1 vs py-ecc
# ---------------------------------------------------------------------------------------


def k1_encode(p: tuple[int, int]) -> bytes:
    return bytes([2 + (p[1] & 1)]) + p[0].to_bytes(32, "big")


@FEW
@given(a=scalars_k1, b=scalars_k1)
@example(a=1, b=SECP256K1.order - 1)  # a + b = n: the sum is the point at infinity
def test_secp256k1_matches_py_ecc(a: int, b: int) -> None:
    pa, pb = SECP256K1.base_mul(a), SECP256K1.base_mul(b)
    ra, rb = k1.multiply(k1.G, a), k1.multiply(k1.G, b)
    assert pa.encode() == k1_encode(ra)
    if (a + b) % SECP256K1.order == 0:  # the point at infinity (py-ecc: n * G)
        assert (pa + pb).is_identity() and k1.add(ra, rb) == k1.multiply(k1.G, k1.N)
    else:
        assert (pa + pb).encode() == k1_encode(k1.add(ra, rb))
    assert (pa * b).encode() == k1_encode(k1.multiply(ra, b))
    if a != b:
        assert (pa - pb).encode() == k1_encode(k1.add(ra, (rb[0], k1.P - rb[1])))
    assert SECP256K1.decode_point(pa.encode()) == pa


def test_secp256k1_identity_arithmetic() -> None:
    g = SECP256K1.generator
    assert (g - g).is_identity()
    assert (g + SECP256K1.identity) == g
    assert (g * SECP256K1.order).is_identity()
    assert SECP256K1.base_mul(0).is_identity()
    with pytest.raises(EncodingError):
        SECP256K1.identity.encode()


# ---------------------------------------------------------------------------------------
# Ed25519 vs the RFC 8032 reference and vs cryptography/OpenSSL
# ---------------------------------------------------------------------------------------


@FEW
@given(a=scalars_ed, b=scalars_ed)
@example(a=1, b=ED25519.order - 1)  # a + b = L: the sum is the identity
def test_ed25519_matches_rfc8032_reference(a: int, b: int) -> None:
    pa, pb = ED25519.base_mul(a), ED25519.base_mul(b)
    ra, rb = ref_mul(a, BASE), ref_mul(b, BASE)
    assert pa.encode() == ref_encode(ra)
    if (a + b) % ED25519.order == 0:  # the identity has no encoding in our API
        assert (pa + pb).is_identity()
        assert ref_encode(ref_add(ra, rb)) == bytes([1]) + bytes(31)
    else:
        assert (pa + pb).encode() == ref_encode(ref_add(ra, rb))
    assert (pa * b).encode() == ref_encode(ref_mul(b, ra))
    assert ED25519.decode_point(pa.encode()) == pa


@FEW
@given(seed=st.binary(min_size=32, max_size=32))
def test_ed25519_public_key_derivation_matches_openssl(seed: bytes) -> None:
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a = (a & ((1 << 254) - 8)) | (1 << 254)  # RFC 8032 section 5.1.5 clamping
    theirs = (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    assert ED25519.base_mul(a).encode() == theirs


def test_ed25519_generator_and_order() -> None:
    assert ED25519.generator.encode() == ref_encode(BASE)
    assert (ED25519.generator * L).is_identity()
    assert ED25519.base_mul(L + 5) == ED25519.base_mul(5)


# ---------------------------------------------------------------------------------------
# Strict decoding
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("enc", torsion_points())
def test_ed25519_rejects_every_small_order_point(enc: bytes) -> None:
    with pytest.raises(EncodingError):
        ED25519.decode_point(enc)


def test_ed25519_rejects_mixed_order_points() -> None:
    t8 = ref_decode(bytes.fromhex(torsion_points()[1].hex()))
    assert t8 is not None
    for k in (1, 2, 3):
        good = ref_mul(k * 7919, BASE)
        mixed = ref_encode(ref_add(good, ref_mul(k, t8)))
        assert ED25519.decode_point(ref_encode(good))  # the prime-order part is fine
        with pytest.raises(EncodingError):
            ED25519.decode_point(mixed)


def test_ed25519_rejects_non_canonical_y() -> None:
    # y in [p, 2^255): non-canonical encodings of y - p (both sign bits).
    for y in range(P, 2**255):
        for sign in (0, 1):
            with pytest.raises(EncodingError):
                ED25519.decode_point((y | (sign << 255)).to_bytes(32, "little"))
    # "negative zero": x = 0 with the sign bit set (y = 1 is the identity, y = -1 order 2).
    for y in (1, P - 1):
        with pytest.raises(EncodingError):
            ED25519.decode_point((y | (1 << 255)).to_bytes(32, "little"))


def test_ed25519_rejects_off_curve_and_bad_lengths() -> None:
    off = next(
        y.to_bytes(32, "little")
        for y in range(2, 100)
        if ref_decode(y.to_bytes(32, "little")) is None
    )
    for bad in (off, bytes(31), bytes(33), b"", ED25519.generator.encode() + b"\x00"):
        with pytest.raises(EncodingError):
            ED25519.decode_point(bad)
    with pytest.raises(EncodingError):
        ED25519.decode_point(ED25519.generator.encode().hex())  # type: ignore[arg-type]


def test_secp256k1_rejects_bad_points() -> None:
    g = SECP256K1.generator.encode()
    p = SECP256K1.field_prime
    off_x = next(x for x in range(1, 100) if pow((x**3 + 7) % p, (p - 1) // 2, p) != 1)
    bad = [
        bytes(33),  # "identity" has no 33-byte encoding
        b"\x00" + g[1:],
        b"\x04" + g[1:],
        b"\x05" + g[1:],
        b"\x02" + p.to_bytes(32, "big"),  # x = p (non-canonical 0)
        b"\x02" + (p + 1).to_bytes(32, "big"),  # x >= p
        b"\x02" + off_x.to_bytes(32, "big"),  # not on the curve
        g[:32],
        g + b"\x00",
        b"\x04" + bytes(64),
    ]
    for b in bad:
        with pytest.raises(EncodingError):
            SECP256K1.decode_point(b)
    with pytest.raises(EncodingError):
        SECP256K1.lift_x(off_x.to_bytes(32, "big"))


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
def test_scalar_decoding_is_strict(group: object) -> None:
    from mpc.groups import Group

    assert isinstance(group, Group)
    q = group.order
    enc = group.encode_scalar
    assert group.decode_scalar(enc(5)) == 5
    assert group.decode_scalar(enc(q - 1)) == q - 1
    with pytest.raises(EncodingError):
        group.decode_scalar(enc(0))
    assert group.decode_scalar(enc(0), allow_zero=True) == 0
    order = "little" if group is ED25519 else "big"
    for v in (q, q + 1, 2**256 - 1):
        with pytest.raises(EncodingError):
            group.decode_scalar(v.to_bytes(32, order))  # type: ignore[arg-type]
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(EncodingError):
            group.decode_scalar(bad)
    with pytest.raises(EncodingError):
        group.inv(0)
    assert group.inv(7) * 7 % q == 1


def test_group_by_name() -> None:
    assert group_by_name("ed25519") is ED25519 and group_by_name("secp256k1") is SECP256K1
    with pytest.raises(EncodingError):
        group_by_name("p256")
