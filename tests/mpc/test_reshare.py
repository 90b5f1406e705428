"""Resharing (mpc.reshare): new committee and threshold, same group key, no mixing of epochs.

The acceptance scenario: 2-of-3 -> 3-of-5 -> 2-of-3 with one member replaced, FROST
signing after every step verified by pynacl (Ed25519) and coincurve (BIP-340), the replaced
member's share refused. No whole key is formed: keys are compared in the exponent.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc import frost
from mpc.dkg import EquivocationError
from mpc.errors import DecodeError, ProtocolError, UsageError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.reshare import PROTOCOL, ReshareResult, ReshareSession
from mpc.shamir import KeyPackage, PublicKeyPackage
from mpc.testing import run_dkg_local, run_keygen_local, run_local, run_ot_setup_local
from tests.mpc.ceremony_util import (
    Tamper,
    add_to_scalar,
    bad_point,
    ecdsa_sign,
    every_subset_gives_group_key,
    interpolate_public,
    run_equivocating,
    tamper,
)
from tests.mpc.conftest import sign_with

SUITES = {"ed25519": ED25519, "bip340": SECP256K1}
suite_param = pytest.mark.parametrize("suite_name", list(SUITES))
gid = pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)


def dkg(group: Group, t: int, n: int) -> dict[int, KeyPackage]:
    return {k.identifier: k for k in run_dkg_local(group, t, n)}


def sessions(
    old: PublicKeyPackage,
    keys: dict[int, KeyPackage],
    dealers: list[int],
    new: list[int],
    t_new: int,
    sid: bytes | None = None,
) -> dict[int, ReshareSession]:
    sid = sid or os.urandom(32)
    return {
        p: ReshareSession(
            sid, p, old, dealers, new, t_new, key=keys[p] if p in dealers else None, context=b"k"
        )
        for p in sorted(set(dealers) | set(new))
    }


def reshare(
    keys: dict[int, KeyPackage],
    dealers: list[int],
    new: list[int],
    t_new: int,
    *,
    tamper: Tamper | None = None,
    **kw: Any,
) -> dict[int, ReshareResult]:
    old = next(iter(keys.values())).public
    out: dict[int, ReshareResult] = run_local(
        sessions(old, keys, dealers, new, t_new), tamper=tamper, **kw
    )
    return out


def new_keys(results: dict[int, ReshareResult]) -> dict[int, KeyPackage]:
    return {p: r.key for p, r in results.items() if r.key is not None}


# -- the acceptance scenario ---------------------------------------------------------------


@suite_param
def test_2of3_to_3of5_to_2of3_with_a_member_replaced(suite_name: str) -> None:
    suite = frost.ciphersuite(suite_name)
    group = SUITES[suite_name]
    epoch0 = dkg(group, 2, 3)
    pk = epoch0[1].group_public_key
    sign_with(suite, epoch0, [1, 3], b"epoch 0")

    # 2-of-3 -> 3-of-5: dealers 1 and 3; members 1..5 (1, 3 overlap; 2 only receives)
    res1 = reshare(epoch0, [1, 3], [1, 2, 3, 4, 5], 3, order="random", wire=True)
    epoch1 = new_keys(res1)
    assert sorted(epoch1) == [1, 2, 3, 4, 5]
    pub1 = epoch1[1].public
    assert pub1.group_public_key == pk and pub1.min_signers == 3
    assert all(r.public == pub1 and r.threshold == 3 for r in res1.values())
    assert every_subset_gives_group_key(pub1)
    sign_with(suite, epoch1, [2, 4, 5], b"epoch 1")
    with pytest.raises(UsageError, match="needs 3"):  # the threshold went up for real
        sign_with(suite, epoch1, [4, 5], b"two are not enough")

    # 3-of-5 -> 2-of-3 {1, 2, 6}: member 3 is replaced by 6; dealers 3, 4, 5 (3 deals, leaves)
    res2 = reshare(epoch1, [3, 4, 5], [1, 2, 6], 2, order="random", seed=3, wire=True)
    epoch2 = new_keys(res2)
    assert sorted(epoch2) == [1, 2, 6]
    assert res2[3].key is None and res2[4].key is None  # old-only parties get nothing
    assert res2[3].public == epoch2[1].public  # but see the new public package
    pub2 = epoch2[1].public
    assert pub2.group_public_key == pk and pub2.min_signers == 2
    assert every_subset_gives_group_key(pub2)
    for signers in ([1, 2], [1, 6], [2, 6]):
        sign_with(suite, epoch2, signers, b"epoch 2")

    # The replaced member's old shares (epoch 0 or 1) do not combine with the new ones.
    for stale in (epoch0[3], epoch1[3]):
        # (1) the new committee does not know party 3: signing is refused, naming it
        pairs = {1: frost.commit(suite, epoch2[1]), 3: frost.commit(suite, stale)}
        pkg = frost.signing_package([pairs[1][1], pairs[3][1]], b"mix")
        with pytest.raises(UsageError) as ei:
            frost.sign(pkg, pairs[1][0], epoch2[1])
        assert ei.value.party == 3
        # (2) in public keys only: lambda-weighted, the mix is not the group key
        hybrid = PublicKeyPackage(
            group,
            2,
            pk,
            {1: pub2.verifying_shares[1], 3: stale.verifying_share},
        )
        assert interpolate_public(hybrid, [1, 3]) != pk
        # (3) a real attempt under that hybrid package: every share verifies on its own
        #     against the hybrid, but the signature does not verify under the group key
        k1 = KeyPackage(1, epoch2[1].signing_share, hybrid)
        k3 = KeyPackage(3, stale.signing_share, hybrid)
        pairs = {1: frost.commit(suite, k1), 3: frost.commit(suite, k3)}
        pkg = frost.signing_package([pairs[1][1], pairs[3][1]], b"mix")
        shares = [frost.sign(pkg, pairs[1][0], k1), frost.sign(pkg, pairs[3][0], k3)]
        for s in shares:
            frost.verify_signature_share(pkg, s, hybrid)
        with pytest.raises(ProtocolError, match="although every share does"):
            frost.aggregate(pkg, shares, hybrid)
    # (4) in an epoch-1 signing (3 still a member there), party 1 signing with its new share:
    #     the epoch-1 package names party 1
    new1 = KeyPackage(1, epoch2[1].signing_share, pub1)
    pairs = {1: frost.commit(suite, new1), 3: frost.commit(suite, epoch1[3])}
    pairs[2] = frost.commit(suite, epoch1[2])
    pkg = frost.signing_package([pairs[i][1] for i in (1, 2, 3)], b"mix")
    shares = [
        frost.sign(pkg, pairs[1][0], new1),
        frost.sign(pkg, pairs[2][0], epoch1[2]),
        frost.sign(pkg, pairs[3][0], epoch1[3]),
    ]
    with pytest.raises(ProtocolError) as ei:
        frost.aggregate(pkg, shares, pub1)
    assert ei.value.culprits == (1,)
    # the old packages are untouched: until commit, epoch 1 still signs
    sign_with(suite, epoch1, [1, 3, 5], b"epoch 1, not yet committed")


def test_reshare_ecdsa_key_then_ot_setup_signs() -> None:
    """DKLs23: reshare the Shamir part, set up base OTs for the new committee, sign."""
    old = run_keygen_local(2, 3)
    res = reshare({i: s.key for i, s in old.items()}, [2, 3], [2, 3, 4, 5], 3, order="random")
    shares = run_ot_setup_local(list(new_keys(res).values()))
    assert shares[4].group_public_key == old[1].group_public_key
    sig, _ = ecdsa_sign(shares, [2, 4, 5], hashlib.sha256(b"ecdsa after reshare").digest())
    assert sig.s > 0


@gid
def test_disjoint_committee_and_lower_threshold_explicit(group: Group) -> None:
    """A whole new committee (no overlap); t_new lower than t_old only because it is passed."""
    keys = dkg(group, 3, 4)
    res = reshare(keys, [1, 2, 4], [10, 11, 12], 2)
    assert sorted(new_keys(res)) == [10, 11, 12]
    assert res[10].threshold == 2 and res[1].key is None
    suite = frost.ciphersuite("ed25519" if group is ED25519 else "bip340")
    sign_with(suite, new_keys(res), [10, 12], b"new committee")


# -- malicious dealers -----------------------------------------------------------------------


@gid
def test_constant_term_not_lambda_times_share_names_the_dealer(group: Group) -> None:
    """A dealer that reshares another value (a shift of the key) is named in round 1."""
    keys = dkg(group, 2, 3)

    def edit(p: dict[str, Any]) -> None:
        c = list(p["commitment"])
        c[0] = group.base_mul(99).encode()
        p["commitment"] = c

    with pytest.raises(ProtocolError) as ei:
        reshare(keys, [1, 2], [1, 2, 3, 4], 3, tamper=tamper(2, 1, edit))
    assert ei.value.culprits == (2,) and "constant-term" in str(ei.value)


@gid
def test_bad_sub_share_names_the_dealer(group: Group) -> None:
    keys = dkg(group, 2, 3)
    hook = tamper(1, 2, add_to_scalar(group, "share", 5), recipient=4)
    with pytest.raises(ProtocolError) as ei:
        reshare(keys, [1, 3], [1, 2, 3, 4], 2, tamper=hook)
    assert ei.value.culprits == (1,)


@gid
@pytest.mark.parametrize("delta", [+1, -1])
def test_commitment_length_fixes_the_new_threshold(group: Group, delta: int) -> None:
    """A dealer cannot raise or silently lower t_new: exactly t_new points or refused."""
    keys = dkg(group, 2, 3)

    def edit(p: dict[str, Any]) -> None:
        c = list(p["commitment"])
        p["commitment"] = [*c, group.base_mul(3).encode()] if delta > 0 else c[:-1]

    with pytest.raises(DecodeError) as ei:
        reshare(keys, [1, 2], [1, 2, 3, 4, 5], 3, tamper=tamper(1, 1, edit))
    assert ei.value.party == 1 and ei.value.field == "commitment"


@gid
def test_malformed_commitment_point_names_the_dealer(group: Group) -> None:
    keys = dkg(group, 2, 3)

    def edit(p: dict[str, Any]) -> None:
        p["commitment"] = [*p["commitment"][:1], bad_point(group), *p["commitment"][2:]]

    with pytest.raises(DecodeError) as ei:
        reshare(keys, [2, 3], [1, 2, 3], 3, tamper=tamper(3, 1, edit))
    assert ei.value.party == 3 and ei.value.field == "commitment[1]"


@gid
def test_equivocating_dealer_is_caught_by_the_echo(group: Group) -> None:
    """Dealer 2 sends one commitment (with matching sub-shares) to 1 and 4, another to 3."""
    keys = dkg(group, 2, 3)
    old = keys[1].public
    sid = os.urandom(32)
    all_sessions = sessions(old, keys, [1, 2], [1, 3, 4], 2, sid)
    honest = {p: s for p, s in all_sessions.items() if p != 2}
    face_a = sessions(old, keys, [1, 2], [1, 3, 4], 2, sid)[2]
    face_b = sessions(old, keys, [1, 2], [1, 3, 4], 2, sid)[2]
    with pytest.raises(EquivocationError) as ei:
        run_equivocating(honest, 2, {1: face_a, 4: face_a, 3: face_b})
    assert 2 in ei.value.subjects


@gid
def test_misreported_echo_names_the_member(group: Group) -> None:
    keys = dkg(group, 2, 3)

    def edit(p: dict[str, Any]) -> None:
        p["echo"] = [bytes(32), *p["echo"][1:]]  # member 1 misreports dealer 1 (itself)

    with pytest.raises(ProtocolError) as ei:
        reshare(keys, [1, 2], [1, 2, 3], 2, tamper=tamper(1, 3, edit))
    assert ei.value.culprits == (1,)


@gid
def test_non_dealer_cannot_inject_a_sharing(group: Group) -> None:
    """An old holder that is not a dealer (3) sending a round-1 commitment is refused."""
    keys = dkg(group, 2, 3)
    sid = os.urandom(32)
    ss = sessions(keys[1].public, keys, [1, 2], [1, 2, 4], 2, sid)
    first = ss[1].start()[0]
    forged = type(first)(PROTOCOL, sid, 1, 4, None, first.payload)
    ss[2].start()
    with pytest.raises(DecodeError, match="does not send in round 1") as ei:
        ss[2].receive(forged)
    assert ei.value.party == 4


# -- usage errors --------------------------------------------------------------------------


@gid
def test_refuses_bad_parameters(group: Group) -> None:
    keys = dkg(group, 3, 4)
    old = keys[1].public
    sid = os.urandom(32)
    k1 = keys[1]
    with pytest.raises(UsageError, match="cannot reshare"):
        ReshareSession(sid, 1, old, [1, 2], [1, 2, 3], 2, key=k1)
    with pytest.raises(UsageError, match="hold no share") as ei:
        ReshareSession(sid, 1, old, [1, 2, 7], [1, 2, 3], 2, key=k1)
    assert ei.value.party == 7
    with pytest.raises(UsageError, match="invalid threshold"):
        ReshareSession(sid, 1, old, [1, 2, 3], [1, 2, 3], 1, key=k1)
    with pytest.raises(UsageError, match="invalid threshold"):
        ReshareSession(sid, 1, old, [1, 2, 3], [1, 2, 3], 4, key=k1)
    with pytest.raises(UsageError, match="duplicated") as ei:
        ReshareSession(sid, 1, old, [1, 2, 3], [1, 5, 5], 2, key=k1)
    assert ei.value.party == 5
    with pytest.raises(UsageError, match="zero"):
        ReshareSession(sid, 1, old, [1, 2, 3], [0, 5, 6], 2, key=k1)
    with pytest.raises(UsageError, match="needs its old key package") as ei:
        ReshareSession(sid, 1, old, [1, 2, 3], [5, 6], 2)
    assert ei.value.party == 1
    with pytest.raises(UsageError, match="only a dealer") as ei:
        ReshareSession(sid, 5, old, [1, 2, 3], [5, 6], 2, key=k1)
    with pytest.raises(UsageError, match="not this party's share") as ei:
        ReshareSession(sid, 2, old, [1, 2, 3], [5, 6], 2, key=k1)
    other = dkg(group, 3, 4)
    with pytest.raises(UsageError):
        ReshareSession(sid, 1, other[1].public, [1, 2, 3], [5, 6], 2, key=k1)
    with pytest.raises(UsageError, match="not among the participants"):
        ReshareSession(sid, 9, old, [1, 2, 3], [5, 6], 2)


# -- properties ----------------------------------------------------------------------------


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([ED25519, SECP256K1]),
    st.integers(2, 4),
    st.integers(2, 5).flatmap(lambda n: st.tuples(st.integers(2, n), st.just(n))),
    st.integers(0, 7),
    st.integers(0, 2**16),
)
def test_property_reshare_preserves_the_key(
    group: Group, t_old: int, new_tn: tuple[int, int], shift: int, seed: int
) -> None:
    t_new, n_new = new_tn
    keys = dkg(group, t_old, t_old + 1)
    dealers = list(range(1, t_old + 1))
    new = [shift + j for j in range(1, n_new + 1)]  # overlapping or disjoint
    res = reshare(keys, dealers, new, t_new, order="random", seed=seed)
    pub = next(iter(res.values())).public
    assert pub.group_public_key == keys[1].group_public_key and pub.min_signers == t_new
    assert pub.participants == tuple(new)
    assert every_subset_gives_group_key(pub)
    for k in new_keys(res).values():
        assert k.group.base_mul(k.signing_share) == k.verifying_share


def test_ecdsa_reshare_chain_sets_up_the_new_committee() -> None:
    """Reshare then OT setup as one session per party; a departing dealer ends with None."""
    from mpc.dkls23 import EcdsaKeyShare
    from mpc.dkls23.resetup import OtResetupChain

    old = run_keygen_local(2, 3)
    keys = {i: s.key for i, s in old.items()}
    sid = os.urandom(32)
    ss = sessions(keys[1].public, keys, [1, 3], [2, 3, 4], 2, sid)
    chains = {p: OtResetupChain(s) for p, s in ss.items()}
    out = run_local(chains, order="random", seed=2)  # type: ignore[arg-type]
    assert out[1] is None  # dealer 1 leaves
    new = {p: s for p, s in out.items() if s is not None}
    assert sorted(new) == [2, 3, 4] and all(isinstance(s, EcdsaKeyShare) for s in new.values())
    assert set(new[4].bob) == {2, 3}
    ecdsa_sign(new, [2, 4], hashlib.sha256(b"new committee, new OTs").digest())


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
@pytest.mark.parametrize("round_", [1, 2, 3])
def test_reshare_garbage_payloads(group: Group, round_: int) -> None:
    """Member 4 (not a dealer) fed a garbage round-``round_`` payload from party 2."""
    from dataclasses import replace

    from tests.mpc.test_fuzz_decoders import FUZZ, _payload_strategy

    keys = dkg(group, 2, 3)

    def transcript() -> tuple[dict[int, ReshareSession], list[Any]]:
        ss = sessions(keys[1].public, keys, [1, 2], [1, 2, 4], 2)
        log: list[Any] = []
        queue = [m for s in ss.values() for m in s.start()]
        while queue:
            m = queue.pop(0)
            log.append(m)
            for p in ss:
                if p != m.sender and m.recipient in (None, p):
                    queue += ss[p].receive(m)
        return ss, log

    _, sample_log = transcript()
    sample = next(m for m in sample_log if m.sender == 2 and m.round == round_)

    @FUZZ
    @given(payload=_payload_strategy(dict(sample.payload)))
    def run(payload: Any) -> None:
        ss = sessions(keys[1].public, keys, [1, 2], [1, 2, 4], 2)
        target = ReshareSession(
            ss[4].session_id, 4, keys[1].public, [1, 2], [1, 2, 4], 2, context=b"k"
        )
        target.start()
        queue = [m for s in ss.values() for m in s.start()]
        while queue:
            m = queue.pop(0)
            for p in ss:
                if p != m.sender and m.recipient in (None, p) and p != 4:
                    queue += ss[p].receive(m)
            if m.recipient in (None, 4) and m.sender != 4:
                if m.sender == 2 and m.round == round_:
                    m = replace(m, payload=payload)
                try:
                    target.receive(m)
                except (DecodeError, ProtocolError) as exc:
                    assert exc.party == 2 or 2 in getattr(exc, "culprits", ())
                    return

    run()


def test_reshared_packages_round_trip_through_keyio() -> None:
    from mpc.keyio import decode_key_package, encode_key_package

    keys = dkg(SECP256K1, 2, 3)
    res = reshare(keys, [1, 3], [2, 7, 9], 2)
    for k in new_keys(res).values():
        back = decode_key_package(encode_key_package(k))
        assert back.public == k.public and back.identifier == k.identifier
        assert back.group.base_mul(back.signing_share) == k.verifying_share


@gid
def test_parties_given_different_committees_abort_at_the_echo(group: Group) -> None:
    """Member 3 is told the new committee is {3, 4}; everyone else {3, 4, 5} (same t).

    Without the parameters in the echo digest, 3 would finish with a public package for
    {3, 4} that the others do not have; with them, 3's echo check fails on 4's echo.
    """
    keys = dkg(group, 2, 3)
    old = keys[1].public
    sid = os.urandom(32)
    ss = sessions(old, keys, [1, 2], [3, 4, 5], 2, sid)
    ss[3] = ReshareSession(sid, 3, old, [1, 2], [3, 4], 2, context=b"k")
    queue = [m for s in ss.values() for m in s.start()]
    while queue:
        m = queue.pop(0)
        for p, s in ss.items():
            if p == m.sender or m.recipient not in (None, p) or (p == 3 and m.sender == 5):
                continue
            if p == 3:
                with pytest.raises((ProtocolError, DecodeError)) if m.round == 3 else _noop():
                    queue += s.receive(m)
                if m.round == 3:
                    assert not ss[3].done
                    return
            else:
                queue += s.receive(m)
    raise AssertionError("party 3 never got an echo")


class _noop:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
