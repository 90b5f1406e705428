"""Key package serialization (mpc.keyio): round trips and strict decoding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from mpc.dealer import split_existing_key
from mpc.errors import DecodeError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.keyio import (
    decode_key_package,
    decode_public_key_package,
    encode_key_package,
    encode_public_key_package,
)
from mpc.shamir import KeyPackage
from mpc.testing import run_dkg_local
from mpc.wire import cbor_dumps

gid = pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)


@pytest.fixture(scope="module", params=[ED25519, SECP256K1], ids=lambda g: g.name)
def pkgs(request: pytest.FixtureRequest) -> list[KeyPackage]:
    out: list[KeyPackage] = run_dkg_local(request.param, 3, 5)
    return out


def same(a: KeyPackage, b: KeyPackage) -> bool:
    return (
        a.identifier == b.identifier
        and a.signing_share == b.signing_share
        and a.group is b.group
        and a.min_signers == b.min_signers
        and a.group_public_key == b.group_public_key
        and dict(a.public.verifying_shares) == dict(b.public.verifying_shares)
    )


def test_round_trip(pkgs: list[KeyPackage]) -> None:
    for kp in pkgs:
        data = encode_key_package(kp)
        back = decode_key_package(data)
        assert same(kp, back)
        assert encode_key_package(back) == data  # canonical: one encoding per package
    pub = pkgs[0].public
    data = encode_public_key_package(pub)
    back = decode_public_key_package(data)
    assert back.group_public_key == pub.group_public_key and back.min_signers == 3
    assert dict(back.verifying_shares) == dict(pub.verifying_shares)
    assert encode_public_key_package(back) == data
    assert pkgs[0].group.encode_scalar(pkgs[0].signing_share) not in data


@gid
def test_dealer_packages_round_trip(group: Group) -> None:
    for kp in split_existing_key(group, group.random_scalar(), 2, [5, 70, 65535]):
        assert same(kp, decode_key_package(encode_key_package(kp)))


def _mutate(kp: KeyPackage, edit: Callable[[dict[str, Any]], None]) -> bytes:
    obj = cbor2.loads(encode_key_package(kp))
    edit(obj)
    return cbor_dumps(obj)


def _other_point(kp: KeyPackage) -> bytes:
    return kp.group.base_mul(kp.group.random_scalar()).encode()


def _setp(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(o: dict[str, Any]) -> None:
        o["public"][key] = value

    return edit


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(o: dict[str, Any]) -> None:
        o[key] = value

    return edit


def _vs(edit_vs: Callable[[dict[int, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(o: dict[str, Any]) -> None:
        edit_vs(o["public"]["verifying_shares"])

    return edit


CASES: list[tuple[str, Callable[[KeyPackage], Callable[[dict[str, Any]], None]], str]] = [
    ("version", lambda kp: _set("v", 2), "v"),
    ("kind", lambda kp: _set("kind", "public-key-package"), "kind"),
    ("extra", lambda kp: _set("note", 1), "note"),
    ("missing share", lambda kp: lambda o: o.pop("signing_share"), "signing_share"),
    ("zero id", lambda kp: _set("identifier", 0), "identifier"),
    ("unknown id", lambda kp: _set("identifier", 9), "identifier"),
    ("id type", lambda kp: _set("identifier", "1"), "identifier"),
    ("share zero", lambda kp: _set("signing_share", bytes(32)), "signing_share"),
    ("share big", lambda kp: _set("signing_share", b"\xff" * 32), "signing_share"),
    ("share short", lambda kp: _set("signing_share", b"\x01" * 31), "signing_share"),
    ("share wrong", lambda kp: _set("signing_share", kp.group.encode_scalar(5)), "signing_share"),
    ("group", lambda kp: _setp("group", "p256"), "public.group"),
    ("group type", lambda kp: _setp("group", 1), "public.group"),
    ("t=1", lambda kp: _setp("min_signers", 1), "public.min_signers"),
    ("t>n", lambda kp: _setp("min_signers", 6), "public.min_signers"),
    ("group key", lambda kp: _setp("group_key", _other_point(kp)), "public.group_key"),
    ("group key bad", lambda kp: _setp("group_key", b"\x05" * 33), "public.group_key"),
    ("public v", lambda kp: _setp("v", 0), "public.v"),
    ("public kind", lambda kp: _setp("kind", "key-package"), "public.kind"),
    ("vs empty", lambda kp: _setp("verifying_shares", {}), "public.verifying_shares"),
    ("vs list", lambda kp: _setp("verifying_shares", []), "public.verifying_shares"),
    (
        "vs id 0",
        lambda kp: _vs(lambda vs: vs.__setitem__(0, vs.pop(5))),
        "public.verifying_shares",
    ),
    (
        "vs off poly",
        lambda kp: _vs(lambda vs: vs.__setitem__(5, _other_point(kp))),
        "public.verifying_shares[5]",
    ),
    (
        "vs identity",
        lambda kp: _vs(
            lambda vs: vs.__setitem__(4, bytes([1]) + bytes(31 if kp.group is ED25519 else 32))
        ),
        "public.verifying_shares[4]",
    ),
]


@pytest.mark.parametrize("name,make,field", CASES, ids=[c[0] for c in CASES])
def test_malformed_key_package(pkgs: list[KeyPackage], name: str, make: Any, field: str) -> None:
    kp = pkgs[0]
    with pytest.raises(DecodeError) as ei:
        decode_key_package(_mutate(kp, make(kp)))
    assert ei.value.field == field, str(ei.value)


def test_non_canonical_and_garbage(pkgs: list[KeyPackage]) -> None:
    data = encode_key_package(pkgs[0])
    obj = cbor2.loads(data)
    noncanon = cbor2.dumps(obj, canonical=False)  # insertion order, not canonical order
    if noncanon != data:
        with pytest.raises(DecodeError):
            decode_key_package(noncanon)
    for bad in (b"", b"\xa0", data[:-1], data + b"\x00", b"\xd8\x1e" + data, "text"):
        with pytest.raises(DecodeError):
            decode_key_package(bad)  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        decode_public_key_package(data)  # a key package is not a public package
    with pytest.raises(DecodeError) as ei:
        decode_key_package(encode_public_key_package(pkgs[0].public))
    assert ei.value.field == "identifier"


def test_consistency_check_can_be_skipped(pkgs: list[KeyPackage]) -> None:
    obj = cbor2.loads(encode_public_key_package(pkgs[0].public))
    obj["verifying_shares"][5] = pkgs[0].group.base_mul(3).encode()
    data = cbor_dumps(obj)
    with pytest.raises(DecodeError):
        decode_public_key_package(data)
    assert decode_public_key_package(data, check=False).verifying_shares[5] is not None
