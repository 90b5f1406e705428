"""mpc.refresh: the parameter checks on both sides and the repr (issue 16, mutation testing).

Fast: key packages from the test-only dealer (no whole key is ever formed), one refresh run
of exactly ``t`` holders. First in ``mutation.toml``'s selection for ``mpc/refresh.py``.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from mpc import frost
from mpc.dkls23 import EcdsaKeyShare
from mpc.errors import ProtocolError, UsageError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.refresh import (
    RefreshRound1,
    RefreshRound2,
    RefreshSession,
    check_group_key,
    ecdsa_share_with_ot,
)
from mpc.shamir import KeyPackage
from mpc.testing import run_keygen_local, run_local
from mpc.wire import decode_payload, encode_payload
from tests.mpc.conftest import dealer_split_for_tests, sign_with

gid = pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)


@gid
def test_exactly_t_holders_may_refresh_and_the_rest_are_dropped(group: Group) -> None:
    keys = dealer_split_for_tests(group, 3, 5)
    sid = os.urandom(32)
    ids = [1, 3, 5]
    new: dict[int, KeyPackage] = run_local(
        {i: RefreshSession(keys[i], sid, ids, context=b"k") for i in ids}
    )
    assert new[3].public.participants == (1, 3, 5) and new[3].min_signers == 3
    assert new[3].group_public_key == keys[3].group_public_key
    assert all(new[i].signing_share != keys[i].signing_share for i in ids)
    suite = frost.ciphersuite("ed25519" if group is ED25519 else "bip340")
    sign_with(suite, new, ids, b"refreshed by exactly t holders")
    with pytest.raises(UsageError, match="2 participants cannot refresh a 3-of-n key"):
        RefreshSession(keys[1], sid, [1, 3])


@gid
def test_the_first_outsider_is_named(group: Group) -> None:
    keys = dealer_split_for_tests(group, 2, 3)
    with pytest.raises(UsageError, match=r"participants \[7, 9\] hold no share") as exc:
        RefreshSession(keys[1], os.urandom(32), [1, 2, 7, 9])
    assert exc.value.party == 7


def test_repr_shows_parameters_and_progress_only() -> None:
    keys = dealer_split_for_tests(SECP256K1, 2, 3)
    session = RefreshSession(keys[2], os.urandom(32))
    text = repr(session)
    assert text.startswith("<RefreshSession secp256k1 2-of-3 party=2 round=")
    assert "done=False" in text and str(keys[2].signing_share) not in text
    assert session.expected_kind(1) == "broadcast" and session.expected_kind(2) == "direct"


def test_check_group_key_uses_t_shares_and_names_a_mismatch() -> None:
    keys = dealer_split_for_tests(ED25519, 2, 4)
    public = keys[1].public
    shares = dict(public.verifying_shares)
    check_group_key(public, shares, 2)
    shares[4] = shares[4] + ED25519.generator  # only the first t (1, 2) are interpolated
    check_group_key(public, shares, 2)
    shares[1] = shares[1] + ED25519.generator
    with pytest.raises(ProtocolError, match="do not interpolate to the group public key"):
        check_group_key(public, shares, 2)


def test_ecdsa_share_with_ot_takes_only_its_two_types() -> None:
    key = dealer_split_for_tests(SECP256K1, 2, 3)[1]
    share = EcdsaKeyShare(key, {}, {})
    for args in ((key, "share"), ("key", share), (key, key)):
        with pytest.raises(UsageError, match="expected a KeyPackage and an EcdsaKeyShare"):
            ecdsa_share_with_ot(*args)


@gid
def test_a_zero_sub_share_is_a_scalar_like_any_other(group: Group) -> None:
    """delta_i(j) = 0 is an honest value (t >= 3: x (a_1 + a_2 x) vanishes at j = -a_1/a_2);
    refusing it would blame an honest dealer. It decodes as 0."""
    echo = (bytes(32), bytes(range(32)), bytes(32))
    wire = encode_payload(RefreshRound2(0, echo), group)
    got = decode_payload(RefreshRound2, wire, group=group, party=2, sizes={"n": 3, "t1": 2})
    assert got.share == 0 and got.echo == echo


def test_a_sub_share_never_appears_in_a_repr() -> None:
    """A log line or traceback showing a round-2 payload must not show the secret sub-share."""
    share = 0x1234567890ABCDEF1234567890ABCDEF
    p = RefreshRound2(share, (bytes(32),) * 3)
    wire = encode_payload(p, SECP256K1)
    enc = SECP256K1.encode_scalar(share)
    for text in (repr(p), repr(wire), str(wire)):
        assert str(share) not in text and enc.hex() not in text and repr(enc) not in text
    assert bytes(wire["share"]) == enc  # the bytes are there, only hidden


def test_decoded_refresh_payloads_are_frozen() -> None:
    g = ED25519
    one = decode_payload(
        RefreshRound1,
        encode_payload(RefreshRound1((g.base_mul(5),)), g),
        group=g,
        party=1,
        sizes={"t1": 1, "n": 3},
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.commitment = ()  # type: ignore[misc]
    two = RefreshRound2(5, (bytes(32),) * 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        two.share = 0  # type: ignore[misc]


def test_ecdsa_share_needs_both_seed_halves_with_every_peer() -> None:
    """Seeds as Bob without the ones as Alice (or the reverse) are refused, naming the peer:
    signing with that peer would need both (DKLs23 F_RVOLE runs in both directions)."""
    old = run_keygen_local(2, 3)[1]
    assert ecdsa_share_with_ot(old.key, old).bob.keys() == {2, 3}
    for bob, alice in ((dict(old.bob), {}), ({}, dict(old.alice))):
        with pytest.raises(UsageError, match=r"no OT seeds with \[2, 3\]") as exc:
            ecdsa_share_with_ot(old.key, EcdsaKeyShare(old.key, bob, alice))
        assert exc.value.party == 2
    only_2 = EcdsaKeyShare(old.key, {2: old.bob[2]}, dict(old.alice))
    with pytest.raises(UsageError, match=r"no OT seeds with \[3\]"):
        ecdsa_share_with_ot(old.key, only_2)
