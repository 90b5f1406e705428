"""mpc.groups: the checks and edge cases that mutation testing found untested (issue 16).

Pure functions, no hypothesis: this file runs first in ``mutation.toml``'s selection for
``mpc/groups.py``. References are independent of the module: ``cryptography`` (OpenSSL)
for secp256k1 points, the curve equation itself, and RFC 8032 / SEC 2 constants.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mpc.errors import EncodingError
from mpc.groups import ED25519, SECP256K1, Ed25519Point, Group, Point, Secp256k1Point

GROUPS = pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)

# SEC 2 v2 section 2.4.1 and RFC 8032 section 5.1, written out (not taken from the module).
SEC2_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SEC2_P = 2**256 - 2**32 - 977
SEC2_G = bytes.fromhex("0279BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798")
RFC8032_L = 2**252 + 27742317777372353535851937790883648493
RFC8032_B = bytes.fromhex("5866666666666666666666666666666666666666666666666666666666666666")
ED_IDENTITY = bytes([1]) + bytes(31)  # (x, y) = (0, 1)


def openssl_k1(s: int) -> bytes:
    """``s * G`` on secp256k1 computed by OpenSSL (compressed SEC1)."""
    key = ec.derive_private_key(s, ec.SECP256K1())
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)


# -- the interfaces ---------------------------------------------------------------------------


def test_interfaces_cannot_be_instantiated_without_every_operation() -> None:
    """A Point or Group missing an operation must fail at construction, not at first use."""
    assert Point.__abstractmethods__ == frozenset(
        {"__add__", "__sub__", "__neg__", "__mul__", "is_identity", "encode"}
    )
    assert Group.__abstractmethods__ == frozenset(
        {"encode_scalar", "_scalar_int", "identity", "generator", "base_mul", "decode_point"}
    )
    with pytest.raises(TypeError):
        Point()  # type: ignore[abstract]
    with pytest.raises(TypeError):
        Group()  # type: ignore[abstract]


@GROUPS
def test_constants_are_the_standards(group: Group) -> None:
    want_order = RFC8032_L if group is ED25519 else SEC2_N
    want_g = RFC8032_B if group is ED25519 else SEC2_G
    assert group.order == want_order
    assert group.generator.encode() == want_g
    assert group.generator == group.base_mul(1)
    assert group.scalar_len == 32 == len(group.encode_scalar(1))
    assert group.element_len == len(group.generator.encode())
    assert (group.generator * (group.order - 1)) == -group.generator
    assert (group.generator * (group.order + 1)) == group.generator
    assert SECP256K1.field_prime == SEC2_P


def test_secp256k1_generator_is_on_the_curve_mod_the_field_prime() -> None:
    p = SECP256K1.field_prime
    x = int.from_bytes(SECP256K1.generator.encode()[1:], "big")
    y_sq = (x**3 + 7) % p
    y = pow(y_sq, (p + 1) // 4, p)
    assert y * y % p == y_sq


# -- scalars ------------------------------------------------------------------------------------


@GROUPS
def test_scalar_encoding_reduces_and_uses_the_groups_byte_order(group: Group) -> None:
    order = "little" if group is ED25519 else "big"
    assert group.encode_scalar(group.order + 5) == (5).to_bytes(32, order)  # type: ignore[arg-type]
    assert group.encode_scalar(-1) == (group.order - 1).to_bytes(32, order)  # type: ignore[arg-type]
    assert group.decode_scalar(bytearray(group.encode_scalar(9))) == 9  # type: ignore[arg-type]
    with pytest.raises(EncodingError, match="must be 32 bytes"):
        group.decode_scalar(group.encode_scalar(9).hex())  # type: ignore[arg-type]
    nine = group.encode_scalar(9)
    for bad in (nine[:31], nine[1:], nine + b"\x01", b"\x01" + nine):  # non-zero, wrong length
        with pytest.raises(EncodingError, match="must be 32 bytes"):
            group.decode_scalar(bad)
    with pytest.raises(EncodingError, match="not canonical"):
        group.decode_scalar(group.order.to_bytes(32, order))  # type: ignore[arg-type]
    with pytest.raises(EncodingError, match="is zero"):
        group.decode_scalar(bytes(32))


@GROUPS
def test_inverse_of_a_multiple_of_the_order_is_refused(group: Group) -> None:
    for s in (0, group.order, 2 * group.order):
        with pytest.raises(EncodingError, match="zero has no inverse"):
            group.inv(s)
    for s in (1, 2, group.order - 1, group.order + 3):
        assert group.inv(s) * s % group.order == 1


# -- points -----------------------------------------------------------------------------------


@GROUPS
def test_identity_laws(group: Group) -> None:
    g, o = group.generator, group.identity
    assert o.is_identity() and not g.is_identity()
    assert g + o == g and o + g == g and o + o == o
    assert (g - g).is_identity() and (g + -g).is_identity()
    assert (-o).is_identity() and o == -o
    assert (o * 5).is_identity() and (5 * o).is_identity()
    assert (g * 0).is_identity() and (g * group.order).is_identity()
    assert group.base_mul(0).is_identity() and group.base_mul(group.order).is_identity()
    assert group.sum([]).is_identity()
    assert group.sum([g, g, g]) == g * 3 == 3 * g == group.base_mul(3)
    assert o != g and g != o
    with pytest.raises(EncodingError, match="identity"):
        o.encode()


@GROUPS
def test_points_compare_by_group_and_value_and_hash_alike(group: Group) -> None:
    g2, also = group.base_mul(2), group.generator + group.generator
    assert g2 == also and hash(g2) == hash(also)
    assert g2 != group.base_mul(3)
    assert hash(group.identity) == hash(group.identity + group.identity)
    other = SECP256K1 if group is ED25519 else ED25519
    assert g2 != other.base_mul(2) and group.identity != other.identity
    assert g2 != g2.encode()  # type: ignore[comparison-overlap]


@GROUPS
def test_repr_names_the_group_and_the_encoding(group: Group) -> None:
    g = group.generator
    assert repr(g) == f"{group.name}.Point({g.encode().hex()})"
    assert repr(group.identity) == f"{group.name}.identity"
    assert repr(group) == f"<group {group.name}>"


def test_ed25519_identity_is_the_point_0_1() -> None:
    assert ED25519.identity == Ed25519Point(ED_IDENTITY)
    assert Ed25519Point(ED_IDENTITY).is_identity()
    g = ED25519.generator
    assert (g - g) == Ed25519Point(ED_IDENTITY)
    assert (-g) + g == ED25519.identity


@pytest.mark.parametrize("s", [1, 2, 3, 5, 7, 2**200 + 1, SEC2_N - 2, SEC2_N - 1])
def test_secp256k1_arithmetic_matches_openssl(s: int) -> None:
    """Both parities of y: negation flips the prefix 02/03, exactly (``^ 1``, not ``| 1``)."""
    p = SECP256K1.base_mul(s)
    assert p.encode() == openssl_k1(s)
    assert (-p).encode() == openssl_k1(SEC2_N - s)
    assert (p + p).encode() == openssl_k1(2 * s % SEC2_N)
    assert (p - SECP256K1.generator).is_identity() == (s == 1)
    if s != 1:
        assert (p - SECP256K1.generator).encode() == openssl_k1(s - 1)
    assert (SECP256K1.generator * s).encode() == openssl_k1(s)
    assert isinstance(p, Secp256k1Point)
    assert p.has_even_y() == (openssl_k1(s)[0] == 2)
    assert p.x_only() == openssl_k1(s)[1:]
    assert p.pubkey.format(compressed=True) == openssl_k1(s)


def test_secp256k1_identity_has_no_public_key() -> None:
    o = SECP256K1.identity
    assert isinstance(o, Secp256k1Point)
    with pytest.raises(EncodingError, match="no public key form"):
        _ = o.pubkey


def test_secp256k1_point_decoding_takes_bytearray_and_names_the_reason() -> None:
    g = SECP256K1.generator.encode()
    assert SECP256K1.decode_point(bytearray(g)) == SECP256K1.generator  # type: ignore[arg-type]
    with pytest.raises(EncodingError, match="33 bytes"):
        SECP256K1.decode_point(g.hex())  # type: ignore[arg-type]
    for bad in (g[:32], g + b"\x00", b"\x02" + bytes(33), b"\x02" * 32):
        with pytest.raises(EncodingError, match=r"must be 33 bytes \(compressed SEC1\)"):
            SECP256K1.decode_point(bad)
    with pytest.raises(EncodingError, match="0x02 or 0x03"):
        SECP256K1.decode_point(b"\x04" + g[1:])
    x_off = next(x for x in range(1, 100) if pow(x**3 + 7, (SEC2_P - 1) // 2, SEC2_P) != 1)
    with pytest.raises(EncodingError, match="not a point on the curve"):
        SECP256K1.decode_point(b"\x02" + x_off.to_bytes(32, "big"))


def test_lift_x_is_the_even_y_point_and_strict_about_length() -> None:
    odd = next(s for s in range(1, 50) if openssl_k1(s)[0] == 3)
    x = openssl_k1(odd)[1:]
    lifted = SECP256K1.lift_x(x)
    assert lifted.has_even_y() and lifted == -SECP256K1.base_mul(odd)
    assert SECP256K1.lift_x(bytearray(x)) == lifted  # type: ignore[arg-type]
    for bad in (x[:31], x + b"\x00", x.hex()):
        with pytest.raises(EncodingError, match="x-only key must be 32 bytes"):
            SECP256K1.lift_x(bad)  # type: ignore[arg-type]


def test_ed25519_point_decoding_takes_bytearray() -> None:
    g = ED25519.generator.encode()
    assert ED25519.decode_point(bytearray(g)) == ED25519.generator  # type: ignore[arg-type]
    with pytest.raises(EncodingError, match="prime-order subgroup"):
        ED25519.decode_point(ED_IDENTITY)
