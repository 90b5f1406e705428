"""mpc.wire's one codec for round payloads: strict, and every error names field and party."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from mpc.errors import DecodeError
from mpc.groups import ED25519, SECP256K1, Group, Point
from mpc.wire import (
    SecretBytes,
    decode_payload,
    digests,
    encode_payload,
    point,
    points,
    raw,
    scalar,
    scalars,
)


@dataclass(frozen=True)
class Toy:
    tag: bytes = raw(4)
    k: int = scalar()
    k0: int = scalar(allow_zero=True, secret=True)
    p: Point = point()
    ps: tuple[Point, ...] = points("t")
    ks: tuple[int, ...] = scalars(2)
    ds: tuple[bytes, ...] = digests("n", 8)


def sample(g: Group) -> Toy:
    G = g.base_mul(1)
    return Toy(b"abcd", 5, 0, G, (G, G + G), (1, 2), (b"x" * 8,) * 3)


SIZES = {"t": 2, "n": 3}
gid = pytest.mark.parametrize("g", [ED25519, SECP256K1], ids=lambda g: g.name)


@gid
def test_round_trip_and_frozen(g: Group) -> None:
    obj = sample(g)
    enc = encode_payload(obj, g)
    assert enc["k"] == g.encode_scalar(5) and enc["ps"][1] == (g.base_mul(2)).encode()
    assert isinstance(enc["k0"], SecretBytes) and repr(enc["k0"]) == "<secret 32 bytes>"
    assert "k0" not in repr(obj)
    assert decode_payload(Toy, enc, group=g, party=4, sizes=SIZES) == obj
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.k = 6  # type: ignore[misc]


def _bad(g: Group) -> list[tuple[str, Any, str]]:
    G = g.base_mul(1).encode()
    identity = bytes(33) if g is SECP256K1 else bytes([1]) + bytes(31)
    off_curve = b"\x02" + b"\xff" * 32 if g is SECP256K1 else b"\xff" * 31 + b"\x7f"
    return [
        ("tag", b"abc", "tag"),  # wrong length
        ("tag", "abcd", "tag"),  # wrong type
        ("k", bytes(32), "k"),  # zero refused
        ("k", g.order.to_bytes(32, "little" if g is ED25519 else "big"), "k"),  # non-canonical
        ("k", 5, "k"),
        ("p", identity, "p"),
        ("p", off_curve, "p"),
        ("p", G[:-1], "p"),
        ("ps", [G], "ps"),  # count from sizes
        ("ps", G, "ps"),
        ("ps", [G, off_curve], "ps[1]"),
        ("ks", [g.encode_scalar(1), b"\x01"], "ks[1]"),
        ("ds", [b"x" * 8, b"x" * 7, b"x" * 8], "ds[1]"),
        ("ds", [b"x" * 8] * 4, "ds"),
    ]


@gid
def test_each_malformed_field_is_named_with_its_party(g: Group) -> None:
    good = encode_payload(sample(g), g)
    for name, value, field in _bad(g):
        with pytest.raises(DecodeError) as ei:
            decode_payload(Toy, {**good, name: value}, group=g, party=7, sizes=SIZES)
        assert (ei.value.field, ei.value.party) == (field, 7), (name, value)


def test_field_set_is_exact() -> None:
    good = encode_payload(sample(ED25519), ED25519)
    cases: list[tuple[Any, str]] = [
        ({k: v for k, v in good.items() if k not in ("ks", "p")}, "ks"),  # first missing, sorted
        ({**good, "zz": b"", "aa": b""}, "aa"),  # first unexpected, sorted
        ([1, 2], "payload"),
    ]
    for payload, field in cases:
        with pytest.raises(DecodeError) as ei:
            decode_payload(Toy, payload, group=ED25519, party=3, sizes=SIZES)
        assert (ei.value.field, ei.value.party) == (field, 3)


def test_undeclared_field_is_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Loose:
        x: int

    with pytest.raises(TypeError, match="not declared"):
        decode_payload(Loose, {"x": 1}, group=ED25519, party=1)
