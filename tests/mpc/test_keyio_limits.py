"""mpc/keyio.py on its limits: sizes, identifiers, threshold, version type (issue 16).

A sealed key package is read back by a node after a restart or a restore: a package that
decodes differently, or one crafted to cost a node unbounded work, must be refused with the
field named. Each limit is tested on both sides.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from mpc.errors import DecodeError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.keyio import (
    decode_key_package,
    decode_public_key_package,
    encode_key_package,
    encode_public_key_package,
)
from mpc.testing import run_dkg_local
from mpc.wire import cbor_dumps

gid = pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)


def _public_obj(group: Group, t: int = 2, n: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = cbor2.loads(
        encode_public_key_package(run_dkg_local(group, t, n)[0].public)
    )
    return obj


def _refused(data: bytes, field: str, match: str, *, key: bool = False) -> None:
    with pytest.raises(DecodeError, match=match) as exc:
        (decode_key_package if key else decode_public_key_package)(data)
    assert exc.value.field == field, str(exc.value)


@gid
def test_more_than_255_verifying_shares_are_refused_before_any_is_decoded(group: Group) -> None:
    # Attack: a package with thousands of shares to make a node interpolate them all.
    obj = _public_obj(group)
    junk = b"\x00" * 3  # never decoded: the count is checked first
    obj["verifying_shares"] = {i: junk for i in range(1, 257)}
    _refused(cbor_dumps(obj), "verifying_shares", "more than 255 participants")
    obj["verifying_shares"] = {i: junk for i in range(1, 256)}  # 255: the count passes
    with pytest.raises(DecodeError) as exc:
        decode_public_key_package(cbor_dumps(obj))
    assert "participants" not in str(exc.value)
    kp = run_dkg_local(group, 2, 3)[0]
    key = cbor2.loads(encode_key_package(kp))
    key["public"]["verifying_shares"] = {i: junk for i in range(1, 257)}
    _refused(cbor_dumps(key), "public.verifying_shares", "more than 255", key=True)


@gid
def test_threshold_equal_to_the_number_of_shares_is_accepted(group: Group) -> None:
    keys = run_dkg_local(group, 3, 3)
    back = decode_public_key_package(encode_public_key_package(keys[0].public))
    assert back.min_signers == 3 and back.participants == (1, 2, 3)
    obj = cbor2.loads(encode_public_key_package(keys[0].public))
    for t in (4, 1, True, "3"):
        obj["min_signers"] = t
        _refused(cbor_dumps(obj), "min_signers", "min_signers must be an integer in")


@gid
def test_identifier_limits(group: Group) -> None:
    obj = _public_obj(group)
    shares = obj["verifying_shares"]
    for bad in (65536, 0, -1):
        edited = dict(shares)
        edited[bad] = edited.pop(3)
        obj2 = {**obj, "verifying_shares": edited}
        _refused(cbor_dumps(obj2), "verifying_shares", "identifier must be an integer")


@gid
def test_version_must_be_the_integer_one(group: Group) -> None:
    obj = _public_obj(group)
    for v in (True, 1.0, 2, 0):
        _refused(cbor_dumps({**obj, "v": v}), "v", "unsupported version")


def test_not_a_map_is_named() -> None:
    _refused(cbor_dumps([1, 2]), "package", "expected a map")
    _refused(cbor_dumps([1]), "package", "expected a map", key=True)
    kp = run_dkg_local(ED25519, 2, 3)[0]
    key = cbor2.loads(encode_key_package(kp))
    key["public"] = [1]
    _refused(cbor_dumps(key), "public", "expected a map", key=True)


@gid
def test_a_share_off_the_polynomial_is_named_with_the_degree(group: Group) -> None:
    obj = _public_obj(group, 3, 5)
    obj["verifying_shares"][5] = group.base_mul(group.random_scalar()).encode()
    _refused(
        cbor_dumps(obj),
        "verifying_shares[5]",
        "verifying share 5 is not on the degree-2 polynomial of the others",
    )
    obj = _public_obj(group, 2, 4)
    obj["verifying_shares"][4] = group.base_mul(group.random_scalar()).encode()
    _refused(cbor_dumps(obj), "verifying_shares[4]", "not on the degree-1 polynomial")
