"""FROST KeyGen (mpc.dkg): honest runs, key consistency in the exponent, dropout, hygiene."""

from __future__ import annotations

import os
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import VerifyKey

from mpc import _ed25519_vartime as edv
from mpc.dkg import PROTOCOL, DkgSession, _pok_message
from mpc.errors import UsageError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.hazmat import (
    evaluate_in_exponent,
    prove_knowledge,
    verify_knowledge,
    verify_knowledge_generic,
)
from mpc.shamir import KeyPackage, lagrange_coefficient
from mpc.testing import run_dkg_local, run_local

GROUPS = [ED25519, SECP256K1]
gid = pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)


def sessions(group: Group, t: int, n: int, context: bytes = b"") -> dict[int, DkgSession]:
    sid = os.urandom(32)
    ids = list(range(1, n + 1))
    return {i: DkgSession(group, sid, i, ids, t, context) for i in ids}


def check_consistent(group: Group, pkgs: list[KeyPackage], t: int, n: int) -> None:
    """Every party agrees on the public package; own shares match; t shares give the key."""
    first = pkgs[0].public
    assert first.min_signers == t and first.participants == tuple(range(1, n + 1))
    assert not first.group_public_key.is_identity()
    for kp in pkgs:
        assert kp.public.group_public_key == first.group_public_key
        assert dict(kp.public.verifying_shares) == dict(first.verifying_shares)
        assert group.base_mul(kp.signing_share) == kp.verifying_share
    ids = list(range(1, n + 1))
    for subset in (ids[:t], ids[-t:], random.Random(n).sample(ids, t)):
        # Lagrange in the exponent; the secret scalar is never formed.
        y = group.sum(
            [first.verifying_shares[i] * lagrange_coefficient(group, i, subset) for i in subset]
        )
        assert y == first.group_public_key


@gid
@pytest.mark.parametrize("t,n", [(2, 3), (3, 5), (5, 9)])
def test_t_of_n(group: Group, t: int, n: int) -> None:
    pkgs = run_dkg_local(group, t, n)
    check_consistent(group, pkgs, t, n)


@gid
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_delivery_order(group: Group, seed: int) -> None:
    s = sessions(group, 3, 5, b"key-42")
    res = run_local(s, order="random", seed=seed)
    check_consistent(group, [res[i] for i in range(1, 6)], 3, 5)


@gid
def test_wire_round_trip(group: Group) -> None:
    s = sessions(group, 2, 3)
    res = run_local(s, wire=True, order="random", seed=7)
    check_consistent(group, [res[i] for i in range(1, 4)], 2, 3)


@gid
def test_non_contiguous_identifiers(group: Group) -> None:
    sid = os.urandom(32)
    ids = [3, 17, 200, 65535]
    res = run_local({i: DkgSession(group, sid, i, ids, 3) for i in ids}, order="random")
    pub = res[3].public
    assert pub.participants == tuple(ids)
    for i in ids:
        assert group.base_mul(res[i].signing_share) == pub.verifying_shares[i]
    for subset in ([3, 17, 200], [17, 200, 65535], [3, 200, 65535]):
        y = group.sum(
            [pub.verifying_shares[i] * lagrange_coefficient(group, i, subset) for i in subset]
        )
        assert y == pub.group_public_key


@pytest.fixture(scope="module", params=GROUPS, ids=lambda g: g.name)
def dkg_5_of_9(request: pytest.FixtureRequest) -> list[KeyPackage]:
    pkgs: list[KeyPackage] = run_dkg_local(request.param, 5, 9)
    return pkgs


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_t_shares_interpolate_to_group_key(
    dkg_5_of_9: list[KeyPackage], data: st.DataObject
) -> None:
    pub = dkg_5_of_9[0].public
    g = pub.group
    subset = data.draw(st.lists(st.integers(1, 9), min_size=5, max_size=5, unique=True))
    y = g.sum([pub.verifying_shares[i] * lagrange_coefficient(g, i, subset) for i in subset])
    assert y == pub.group_public_key
    # t-1 shares interpolate to something else (a different degree-3 polynomial)
    fewer = subset[:4]
    y4 = g.sum([pub.verifying_shares[i] * lagrange_coefficient(g, i, fewer) for i in fewer])
    assert y4 != pub.group_public_key


@gid
def test_dropout_in_round_1_is_named(group: Group) -> None:
    s = sessions(group, 2, 3)
    with pytest.raises(UsageError):
        run_local(s, drop=frozenset({3}))
    assert s[1].waiting_for() == (3,) and s[2].waiting_for() == (3,)
    assert s[1].current_round == 1


@gid
def test_dropout_in_round_2_is_named(group: Group) -> None:
    s = sessions(group, 3, 4)

    def party_4_crashes_after_round_1(m):  # type: ignore[no-untyped-def]
        return None if (m.sender == 4 and m.round == 2) else m

    with pytest.raises(UsageError):
        run_local(s, tamper=party_4_crashes_after_round_1)
    for i in (1, 2, 3):
        assert s[i].current_round == 2 and s[i].waiting_for() == (4,)


def test_secrets_not_in_repr() -> None:
    s = sessions(ED25519, 2, 3)
    out1 = {i: s[i].start() for i in s}
    out2 = []
    for i in s:
        for j in s:
            if j != i:
                out2 += s[j].receive(out1[i][0])
    for m in out2:
        share_hex = bytes(m.payload["share"]).hex()
        assert share_hex not in repr(m) and "payload" not in repr(m)
    for m in out2:
        s[m.recipient].receive(m)  # type: ignore[index]
    for i in s:
        kp = s[i].result
        assert str(kp.signing_share) not in repr(kp)
        assert ED25519.encode_scalar(kp.signing_share).hex() not in repr(kp)
        assert "signing_share" not in repr(kp)
        assert repr(s[i]).startswith("<DkgSession ed25519 2-of-3 party=")
        assert s[i]._shares_out is None and s[i]._own_share is None


def test_proof_of_knowledge_is_a_standard_ed25519_signature() -> None:
    """The ed25519 PoK is an RFC 8032 signature: two independent verifiers accept it."""
    sid = os.urandom(32)
    a = ED25519.random_scalar()
    c0 = ED25519.base_mul(a)
    r, mu = prove_knowledge(ED25519, a, c0, b"ctx", sid, 7)
    sig = r.encode() + ED25519.encode_scalar(mu)
    msg = _pok_message(ED25519, b"ctx", sid, 7)
    VerifyKey(c0.encode()).verify(msg, sig)
    Ed25519PublicKey.from_public_bytes(c0.encode()).verify(sig, msg)
    assert verify_knowledge(ED25519, c0, r, mu, b"ctx", sid, 7)
    assert verify_knowledge_generic(ED25519, c0, r, mu, b"ctx", sid, 7)


@gid
def test_proof_binds_session_sender_context(group: Group) -> None:
    sid = os.urandom(32)
    a = group.random_scalar()
    c0 = group.base_mul(a)
    r, mu = prove_knowledge(group, a, c0, b"ctx", sid, 2)
    assert verify_knowledge(group, c0, r, mu, b"ctx", sid, 2)
    assert verify_knowledge_generic(group, c0, r, mu, b"ctx", sid, 2)
    for args in [(b"ctx", os.urandom(32), 2), (b"ctx", sid, 3), (b"ctx2", sid, 2)]:
        assert not verify_knowledge(group, c0, r, mu, *args)
        assert not verify_knowledge_generic(group, c0, r, mu, *args)
    assert not verify_knowledge(group, c0, r, (mu + 1) % group.order, b"ctx", sid, 2)
    assert not verify_knowledge(group, c0 + group.generator, r, mu, b"ctx", sid, 2)


@settings(max_examples=30, deadline=None)
@given(
    t=st.integers(1, 6),
    xs=st.lists(st.integers(1, 65535), min_size=1, max_size=4, unique=True),
)
def test_vartime_evaluation_matches_libsodium(t: int, xs: list[int]) -> None:
    pts = [ED25519.base_mul(ED25519.random_scalar()) for _ in range(t)]
    fast = edv.polynomial_images([p.encode() for p in pts], xs)
    for x in xs:
        assert fast[x] == evaluate_in_exponent(pts, x).encode()
    for k in (1, 2, 3, 255, 65535):
        assert edv.encode(edv.mul_small(edv.decode(pts[0].encode()), k)) == (pts[0] * k).encode()
    both = edv.add(edv.decode(pts[0].encode()), edv.decode(pts[-1].encode()))
    assert edv.encode(both) == (pts[0] + pts[-1]).encode()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 1},
        {"threshold": 4},
        {"participants": [1, 2, 2]},
        {"participants": [0, 1, 2]},
        {"participants": [1, 2, 65536]},
        {"me": 9},
        {"session_id": b"short"},
        {"context": b"x" * 2000},
        {"group": object()},
    ],
)
def test_bad_parameters_are_usage_errors(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "group": ED25519,
        "session_id": os.urandom(32),
        "me": 1,
        "participants": [1, 2, 3],
        "threshold": 2,
    }
    args.update(kwargs)
    with pytest.raises(UsageError):
        DkgSession(**args)  # type: ignore[arg-type]


def test_protocol_name() -> None:
    assert DkgSession.protocol == PROTOCOL == "frost-dkg"
