"""mpc.reshare: payloads, parameter checks, routing and repr (issue 16, mutation testing).

Fast and pure: key packages from the test-only dealer (the secret is never formed), at most
one small resharing per test. First in ``mutation.toml``'s selection for ``mpc/reshare.py``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from mpc import frost
from mpc.errors import ProtocolError, UsageError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.reshare import (
    ReshareResult,
    ReshareRound1,
    ReshareRound2,
    ReshareRound3,
    ReshareSession,
)
from mpc.shamir import KeyPackage, PublicKeyPackage
from mpc.testing import run_local
from mpc.wire import decode_payload, encode_payload
from tests.mpc.ceremony_util import tamper
from tests.mpc.conftest import dealer_split_for_tests, sign_with

gid = pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)


def _sessions(
    keys: dict[int, KeyPackage], dealers: list[int], new: list[int], t_new: int
) -> dict[int, ReshareSession]:
    old = next(iter(keys.values())).public
    sid = os.urandom(32)
    return {
        p: ReshareSession(
            sid, p, old, dealers, new, t_new, key=keys.get(p) if p in dealers else None
        )
        for p in sorted(set(dealers) | set(new))
    }


# -- the payloads ------------------------------------------------------------------------------


def test_reshare_payloads_and_the_result_are_frozen() -> None:
    g = SECP256K1
    one = decode_payload(
        ReshareRound1,
        encode_payload(ReshareRound1((g.base_mul(5), g.base_mul(6))), g),
        group=g,
        party=1,
        sizes={"t": 2},
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.commitment = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ReshareRound2(5).share = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ReshareRound3((bytes(32),)).echo = ()  # type: ignore[misc]
    keys = dealer_split_for_tests(g, 2, 3)
    result = ReshareResult(keys[1].public, keys[1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.key = None  # type: ignore[misc]
    assert result.threshold == 2


@gid
def test_a_zero_sub_share_is_a_scalar_like_any_other(group: Group) -> None:
    """``g_i(j) = 0`` is an honest value (the polynomial may vanish at ``j``); refusing it
    would blame an honest dealer. It decodes as 0."""
    got = decode_payload(
        ReshareRound2, encode_payload(ReshareRound2(0), group), group=group, party=2
    )
    assert got.share == 0


def test_a_sub_share_never_appears_in_a_repr() -> None:
    share = 0x1234567890ABCDEF1234567890ABCDEF
    p = ReshareRound2(share)
    wire = encode_payload(p, SECP256K1)
    enc = SECP256K1.encode_scalar(share)
    for text in (repr(p), repr(wire), str(wire)):
        assert str(share) not in text and enc.hex() not in text and repr(enc) not in text
    assert bytes(wire["share"]) == enc  # the bytes are there, only hidden


def test_the_result_repr_leaves_the_key_package_out() -> None:
    keys = dealer_split_for_tests(ED25519, 2, 3)
    text = repr(ReshareResult(keys[2].public, keys[2]))
    assert text == f"ReshareResult(public={keys[2].public!r})"


# -- parameter checks -------------------------------------------------------------------------


def test_the_first_outsider_dealer_is_named() -> None:
    keys = dealer_split_for_tests(SECP256K1, 2, 3)
    with pytest.raises(UsageError, match=r"dealers \[7, 9\] hold no share") as e:
        ReshareSession(os.urandom(32), 5, keys[1].public, [1, 9, 7], [5, 6], 2)
    assert e.value.party == 7


@gid
def test_exactly_t_old_dealers_suffice(group: Group) -> None:
    keys = dealer_split_for_tests(group, 3, 4)
    res: dict[int, ReshareResult] = run_local(_sessions(keys, [1, 2, 4], [5, 6], 2))
    new = {p: r.key for p, r in res.items() if r.key is not None}
    assert sorted(new) == [5, 6] and res[1].key is None and res[1].public == res[5].public
    assert res[5].public.group_public_key == keys[1].group_public_key
    suite = frost.ciphersuite("ed25519" if group is ED25519 else "bip340")
    sign_with(suite, new, [5, 6], b"t_old dealers")  # pynacl / coincurve
    with pytest.raises(UsageError, match="2 dealers cannot reshare a 3-of-n key"):
        ReshareSession(os.urandom(32), 1, keys[1].public, [1, 2], [5, 6], 2, key=keys[1])


def test_verifying_shares_that_do_not_reconstruct_the_key_are_refused() -> None:
    keys = dealer_split_for_tests(SECP256K1, 2, 3)
    pub = keys[1].public
    bent = PublicKeyPackage(
        pub.group,
        2,
        pub.group_public_key,
        {**pub.verifying_shares, 2: pub.verifying_shares[2] + SECP256K1.generator},
    )
    with pytest.raises(UsageError, match="do not reconstruct the group key"):
        ReshareSession(os.urandom(32), 3, bent, [1, 2], [3, 4], 2)
    ReshareSession(os.urandom(32), 3, bent, [1, 3], [3, 4], 2, key=keys[3])  # 2 not dealing


def test_a_dealer_key_package_must_be_its_own_and_agree() -> None:
    keys = dealer_split_for_tests(SECP256K1, 2, 3)
    pub = keys[1].public
    sid = os.urandom(32)
    other = dealer_split_for_tests(SECP256K1, 2, 3)
    with pytest.raises(UsageError, match="not this party's share of the key") as e:
        ReshareSession(sid, 1, pub, [1, 2], [3, 4], 2, key=keys[2])
    assert e.value.party == 1
    with pytest.raises(UsageError, match="not this party's share of the key"):
        ReshareSession(sid, 1, pub, [1, 2], [3, 4], 2, key=other[1])
    # same identifier and group key, but a verifying share the old package does not hold
    mine = pub.verifying_shares[1] + SECP256K1.generator
    drifted = PublicKeyPackage(
        pub.group, 2, pub.group_public_key, {**pub.verifying_shares, 1: mine}
    )
    own = KeyPackage(1, (keys[1].signing_share + 1) % SECP256K1.order, drifted)
    with pytest.raises(UsageError, match="disagrees with the old public package") as e:
        ReshareSession(sid, 1, pub, [1, 2], [3, 4], 2, key=own)
    assert e.value.party == 1
    with pytest.raises(UsageError, match="needs its old key package") as e:
        ReshareSession(sid, 2, pub, [1, 2], [2, 4], 2)
    assert e.value.party == 2
    with pytest.raises(UsageError, match="only a dealer passes") as e:
        ReshareSession(sid, 3, pub, [1, 2], [3, 4], 2, key=keys[3])
    assert e.value.party == 3


# -- routing and repr -------------------------------------------------------------------------


def test_roles_kinds_and_senders_per_round() -> None:
    keys = dealer_split_for_tests(ED25519, 2, 3)
    ss = _sessions(keys, [1, 2], [2, 3, 4], 2)
    dealer_only, both, member_old, member_new = ss[1], ss[2], ss[3], ss[4]
    assert (dealer_only.is_dealer, dealer_only.is_member) == (True, False)
    assert (both.is_dealer, both.is_member) == (True, True)
    assert (member_old.is_dealer, member_old.is_member) == (False, True)
    assert [both.expected_kind(r) for r in (1, 2, 3)] == ["broadcast", "direct", "broadcast"]
    assert dealer_only.expected_senders(1) == (2,) and both.expected_senders(1) == (1,)
    assert member_new.expected_senders(1) == (1, 2)
    assert dealer_only.expected_senders(2) == ()  # a dealer outside the committee gets nothing
    assert both.expected_senders(2) == (1,) and member_new.expected_senders(2) == (1, 2)
    assert dealer_only.expected_senders(3) == (2, 3, 4)
    assert both.expected_senders(3) == (3, 4) and member_new.expected_senders(3) == (2, 3)
    assert member_new.start() == [] and member_old.start() == []
    out = dealer_only.start()
    assert [(m.round, m.recipient) for m in out] == [(1, None), (2, 2), (2, 3), (2, 4)]
    out = both.start()
    assert [(m.round, m.recipient) for m in out] == [(1, None), (2, 3), (2, 4)]


def test_repr_shows_parameters_and_progress_only() -> None:
    keys = dealer_split_for_tests(SECP256K1, 2, 3)
    s = _sessions(keys, [1, 3], [1, 2, 4, 5], 3)[3]
    text = repr(s)
    assert text.startswith("<ReshareSession secp256k1 2 dealers -> 3-of-4 party=3 round=")
    assert "done=False" in text and str(keys[3].signing_share) not in text


def test_a_dealer_outside_the_new_committee_gets_the_public_package_only() -> None:
    keys = dealer_split_for_tests(SECP256K1, 2, 3)
    res: dict[int, ReshareResult] = run_local(_sessions(keys, [1, 3], [2, 3, 4], 2))
    assert res[1].key is None and res[1].threshold == 2
    assert all(res[p].key is not None for p in (2, 3, 4))
    assert res[1].public.participants == (2, 3, 4)
    for p in (2, 3, 4):
        key = res[p].key
        assert key is not None and key.identifier == p and key.public == res[1].public
        assert SECP256K1.base_mul(key.signing_share) == res[1].public.verifying_shares[p]


def test_a_tampered_sub_share_blames_the_dealer_by_vss() -> None:
    """A sub-share off its dealer's polynomial: the member names the dealer (vss_verify)."""
    keys = dealer_split_for_tests(ED25519, 2, 3)

    def edit(p: dict[str, Any]) -> None:
        s = ED25519.decode_scalar(bytes(p["share"]), allow_zero=True)
        p["share"] = ED25519.encode_scalar((s + 1) % ED25519.order)

    with pytest.raises(ProtocolError, match="reshared sub-share") as e:
        run_local(_sessions(keys, [1, 2], [1, 2, 3], 2), tamper=tamper(2, 2, edit, recipient=3))
    assert e.value.culprits == (2,)
