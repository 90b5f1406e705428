"""Proactive refresh (mpc.refresh): same group key, new shares, old and new never combine.

Every signature is checked by an independent verifier (pynacl/cryptography for Ed25519,
coincurve for BIP-340 and ECDSA). No test forms a whole key: the group key is recomputed
from verifying shares in the exponent.
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
from mpc.dkls23 import EcdsaKeyShare, sign_with_presignature
from mpc.errors import DecodeError, ProtocolError, UsageError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.refresh import PROTOCOL, RefreshSession, ecdsa_share_with_ot
from mpc.shamir import KeyPackage, PublicKeyPackage
from mpc.testing import MemoryLedger, run_dkg_local, run_keygen_local, run_local, run_ot_setup_local
from mpc.wire import Message
from tests.mpc.ceremony_util import (
    Tamper,
    add_to_scalar,
    bad_point,
    ecdsa_sign,
    every_subset_gives_group_key,
    identity_bytes,
    run_equivocating,
    tamper,
)
from tests.mpc.conftest import sign_with

SUITES = {"ed25519": ED25519, "bip340": SECP256K1, "secp256k1": SECP256K1}
suite_param = pytest.mark.parametrize("suite_name", list(SUITES))
gid = pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)


def dkg(group: Group, t: int, n: int) -> dict[int, KeyPackage]:
    return {k.identifier: k for k in run_dkg_local(group, t, n)}


def refresh(
    keys: dict[int, KeyPackage],
    participants: list[int] | None = None,
    *,
    tamper: Tamper | None = None,
    **kw: Any,
) -> dict[int, KeyPackage]:
    sid = os.urandom(32)
    ids = participants or sorted(keys)
    sessions = {i: RefreshSession(keys[i], sid, participants, context=b"key-7") for i in ids}
    out: dict[int, KeyPackage] = run_local(sessions, tamper=tamper, **kw)
    return out


# -- honest runs ---------------------------------------------------------------------------


@suite_param
@pytest.mark.parametrize(("t", "n"), [(2, 3), (3, 5)])
def test_refresh_keeps_group_key_and_signs(suite_name: str, t: int, n: int) -> None:
    suite = frost.ciphersuite(suite_name)
    old = dkg(SUITES[suite_name], t, n)
    new = refresh(old, order="random", seed=n, wire=True)
    pub = new[1].public
    assert all(k.public == pub for k in new.values())
    assert pub.group_public_key == old[1].group_public_key
    assert pub.min_signers == t and pub.participants == old[1].public.participants
    for i, k in new.items():
        assert k.signing_share != old[i].signing_share  # re-randomised
        assert k.group.base_mul(k.signing_share) == pub.verifying_shares[i]
        assert pub.verifying_shares[i] != old[i].verifying_share
    assert every_subset_gives_group_key(pub)
    sign_with(suite, new, list(range(n - t + 1, n + 1)), b"after refresh")
    # the old packages were not touched, and still sign until the caller commits the new ones
    sign_with(suite, old, list(range(1, t + 1)), b"old epoch, not yet committed")


@gid
def test_refresh_twice_and_of_a_subset(group: Group) -> None:
    suite = frost.ciphersuite("ed25519" if group is ED25519 else "bip340")
    keys = dkg(group, 2, 4)
    once = refresh(keys)
    twice = refresh(once, participants=[1, 2, 4])  # 3 is left out: dropped from the package
    assert twice[1].public.participants == (1, 2, 4)
    assert twice[1].group_public_key == keys[1].group_public_key
    sign_with(suite, twice, [2, 4], b"subset refresh")
    pairs = {i: frost.commit(suite, k) for i, k in [(1, twice[1]), (3, once[3])]}
    pkg = frost.signing_package([pairs[1][1], pairs[3][1]], b"m")
    with pytest.raises(UsageError) as ei:  # 3 holds no share of the refreshed key
        frost.sign(pkg, pairs[1][0], twice[1])
    assert ei.value.party == 3


@suite_param
def test_old_share_mixed_with_new_names_the_stale_party(suite_name: str) -> None:
    """Signing with one old-epoch share among new ones fails and names the stale signer."""
    suite = frost.ciphersuite(suite_name)
    old = dkg(SUITES[suite_name], 2, 3)
    new = refresh(old)
    mixed = {1: new[1], 3: old[3]}
    pairs = {i: frost.commit(suite, k) for i, k in mixed.items()}
    pkg = frost.signing_package([pairs[1][1], pairs[3][1]], b"mixed epochs")
    shares = [frost.sign(pkg, pairs[i][0], mixed[i]) for i in (1, 3)]
    with pytest.raises(ProtocolError) as ei:  # judged by the new (committed) package
        frost.aggregate(pkg, shares, new[1].public)
    assert ei.value.culprits == (3,)
    with pytest.raises(ProtocolError) as ei:  # and by the old one, the new share is the odd one
        frost.aggregate(pkg, shares, old[1].public)
    assert ei.value.culprits == (1,)


def test_refresh_ecdsa_share_with_old_and_with_fresh_ot() -> None:
    """DKLs23: the Shamir part is refreshed; OT seeds kept (helper) or set up afresh."""
    old = run_keygen_local(2, 3)
    msg = hashlib.sha256(b"ecdsa after refresh").digest()
    _, pres_old = ecdsa_sign(old, [1, 2], hashlib.sha256(b"warm").digest())
    refreshed = refresh({i: s.key for i, s in old.items()}, order="random")
    kept = {i: ecdsa_share_with_ot(refreshed[i], old[i]) for i in old}
    ecdsa_sign(kept, [1, 3], msg)
    assert kept[1].key_id != old[1].key_id and kept[1].group_public_key == old[1].group_public_key
    fresh = run_ot_setup_local(list(refreshed.values()))  # full proactive security: new OTs
    assert fresh[2].bob[1].k0 != old[2].bob[1].k0
    ecdsa_sign(fresh, [2, 3], msg)
    # a presignature of the old epoch is bound to the old key id: refused with the new share
    from mpc.dkls23 import PresignSession

    sid = os.urandom(32)
    pres = run_local({i: PresignSession(old[i], sid, (1, 2)) for i in (1, 2)})
    with pytest.raises(UsageError, match="another key"):
        sign_with_presignature(pres[1], fresh[1], msg, ledger=MemoryLedger())
    assert pres_old  # the warm-up signature used the old shares before the refresh


def test_ecdsa_share_with_ot_refuses_mismatches() -> None:
    old = run_keygen_local(2, 3)
    refreshed = refresh({i: s.key for i, s in old.items()})
    with pytest.raises(UsageError) as ei:
        ecdsa_share_with_ot(refreshed[1], old[2])
    assert ei.value.party == 1
    other = run_keygen_local(2, 3)
    with pytest.raises(UsageError, match="another group key"):
        ecdsa_share_with_ot(refreshed[1], other[1])
    no_seeds = EcdsaKeyShare(old[1].key, {}, {})
    with pytest.raises(UsageError, match="OtSetupSession") as ei:
        ecdsa_share_with_ot(refreshed[1], no_seeds)
    assert ei.value.party == 2


# -- malicious dealers -----------------------------------------------------------------------


@gid
def test_bad_sub_share_names_the_dealer(group: Group) -> None:
    keys = dkg(group, 3, 4)
    hook = tamper(2, 2, add_to_scalar(group, "share", 1), recipient=4)
    with pytest.raises(ProtocolError) as ei:
        refresh(keys, tamper=hook)
    assert ei.value.culprits == (2,)
    assert "does not match the dealer's commitment" in str(ei.value)


@gid
def test_dealing_a_non_zero_secret_is_caught(group: Group) -> None:
    """Dealer 3 shares ``delta + f(x)`` (it would shift the group key by delta G): named."""
    keys = dkg(group, 2, 3)
    errors = {}
    for victim in (1, 2):
        hook = tamper(3, 2, add_to_scalar(group, "share", 12345), recipient=victim)
        with pytest.raises(ProtocolError) as ei:
            refresh(keys, tamper=hook)
        errors[victim] = ei.value.culprits
    assert errors == {1: (3,), 2: (3,)}


@gid
@pytest.mark.parametrize("delta", [+1, -1])
def test_commitment_length_is_t_minus_1(group: Group, delta: int) -> None:
    """A commitment to a constant term (t points) or a lower threshold (t-2) is refused."""
    keys = dkg(group, 3, 4)

    def edit(p: dict[str, Any]) -> None:
        c = list(p["commitment"])
        p["commitment"] = [group.base_mul(7).encode(), *c] if delta > 0 else c[:-1]

    with pytest.raises(DecodeError) as ei:
        refresh(keys, tamper=tamper(2, 1, edit))
    assert ei.value.party == 2 and ei.value.field == "commitment"


@gid
@pytest.mark.parametrize("kind", ["bad", "identity", "short"])
def test_malformed_commitment_point_names_the_dealer(group: Group, kind: str) -> None:
    value = {"bad": bad_point(group), "identity": identity_bytes(group), "short": b"\x02"}[kind]

    def edit(p: dict[str, Any]) -> None:
        p["commitment"] = [value, *p["commitment"][1:]]

    with pytest.raises(DecodeError) as ei:
        refresh(dkg(group, 3, 4), tamper=tamper(4, 1, edit))
    assert ei.value.party == 4 and ei.value.field == "commitment[0]"


@gid
def test_malformed_sub_share_names_the_dealer(group: Group) -> None:
    def edit(p: dict[str, Any]) -> None:
        p["share"] = (group.order).to_bytes(32, "little" if group is ED25519 else "big")

    with pytest.raises(DecodeError) as ei:
        refresh(dkg(group, 2, 3), tamper=tamper(1, 2, edit, recipient=2))
    assert ei.value.party == 1 and ei.value.field == "share"


@gid
def test_equivocating_dealer_is_caught_by_the_echo(group: Group) -> None:
    """Dealer 3 sends one (consistent) commitment and sub-shares to 1, another to 2 and 4."""
    keys = dkg(group, 2, 4)
    sid = os.urandom(32)
    honest = {i: RefreshSession(keys[i], sid) for i in (1, 2, 4)}
    face_a, face_b = RefreshSession(keys[3], sid), RefreshSession(keys[3], sid)
    with pytest.raises(EquivocationError) as ei:
        run_equivocating(honest, 3, {1: face_a, 2: face_b, 4: face_b})
    assert 3 in ei.value.subjects and 3 in ei.value.culprits


@gid
def test_misreported_echo_names_the_reporter(group: Group) -> None:
    def edit(p: dict[str, Any]) -> None:
        echo = list(p["echo"])
        echo[1] = bytes(32)  # party 2's digest of its own broadcast
        p["echo"] = echo

    with pytest.raises(ProtocolError) as ei:
        refresh(dkg(group, 2, 3), tamper=tamper(2, 2, edit, recipient=3))
    assert ei.value.culprits == (2,) and "echo" in str(ei.value)


@gid
def test_message_from_another_session_or_protocol_refused(group: Group) -> None:
    keys = dkg(group, 2, 3)

    def to_dkg(m: Message) -> Message:
        return Message("frost-dkg", m.session_id, m.round, m.sender, m.recipient, m.payload)

    with pytest.raises(DecodeError) as ei:
        refresh(keys, tamper=lambda m: to_dkg(m) if m.sender == 2 else m)
    assert ei.value.party == 2 and ei.value.field == "protocol"
    assert PROTOCOL == "frost-refresh"


# -- usage errors --------------------------------------------------------------------------


@gid
def test_refuses_bad_parameters(group: Group) -> None:
    keys = dkg(group, 3, 4)
    sid = os.urandom(32)
    with pytest.raises(UsageError, match="cannot refresh") as ei:
        RefreshSession(keys[1], sid, [1, 2])
    with pytest.raises(UsageError, match="hold no share") as ei:
        RefreshSession(keys[1], sid, [1, 2, 9])
    assert ei.value.party == 9
    with pytest.raises(UsageError, match="duplicated") as ei:
        RefreshSession(keys[1], sid, [1, 2, 2, 3])
    assert ei.value.party == 2
    with pytest.raises(UsageError, match="zero"):
        RefreshSession(keys[1], sid, [0, 1, 2, 3])
    with pytest.raises(UsageError, match="not among the participants"):
        RefreshSession(keys[1], sid, [2, 3, 4])
    bad = KeyPackage(1, (keys[1].signing_share + 1) % group.order, keys[1].public)
    with pytest.raises(UsageError, match="does not match its verifying share") as ei:
        RefreshSession(bad, sid)
    assert ei.value.party == 1
    with pytest.raises(UsageError, match="context"):
        RefreshSession(keys[1], sid, context=b"x" * 2000)


# -- properties ----------------------------------------------------------------------------


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([ED25519, SECP256K1]),
    st.integers(2, 5).flatmap(lambda n: st.tuples(st.integers(2, n), st.just(n))),
    st.integers(0, 2**16),
)
def test_property_refresh_preserves_the_key(group: Group, tn: tuple[int, int], seed: int) -> None:
    t, n = tn
    keys = dkg(group, t, n)
    new = refresh(keys, order="random", seed=seed)
    pub: PublicKeyPackage = new[1].public
    assert pub.group_public_key == keys[1].group_public_key and pub.min_signers == t
    assert every_subset_gives_group_key(pub)
    assert all(k.group.base_mul(k.signing_share) == k.verifying_share for k in new.values())


# -- DKLs23: refresh then fresh base OTs, as one composite session ---------------------------


@pytest.mark.parametrize("order", ["fifo", "random"])
def test_ecdsa_refresh_chain_gives_fresh_ot_seeds(order: str) -> None:
    from mpc.dkls23.resetup import OtResetupChain, resetup_session_id

    old = run_keygen_local(2, 3)
    sid = os.urandom(32)
    chains = {i: OtResetupChain(RefreshSession(s.key, sid)) for i, s in old.items()}
    assert chains[1].accepts == {
        "frost-refresh": sid,
        "dkls23-setup": resetup_session_id("frost-refresh", sid),
    }
    new: dict[int, EcdsaKeyShare] = run_local(chains, order=order, seed=5)  # type: ignore[arg-type]
    assert all(isinstance(s, EcdsaKeyShare) for s in new.values())
    assert new[1].group_public_key == old[1].group_public_key
    assert new[1].key_id != old[1].key_id and new[3].bob[1].k0 != old[3].bob[1].k0
    ecdsa_sign(new, [1, 2], hashlib.sha256(b"after the refresh ceremony").digest())


def test_ecdsa_refresh_chain_refuses_ed25519_and_early_floods() -> None:
    from mpc.dkls23.resetup import OtResetupChain

    with pytest.raises(UsageError, match="secp256k1"):
        OtResetupChain(RefreshSession(dkg(ED25519, 2, 3)[1], os.urandom(32)))
    old = run_keygen_local(2, 3)
    sid = os.urandom(32)
    chain = OtResetupChain(RefreshSession(old[1].key, sid))
    chain.start()
    with pytest.raises(UsageError, match="not finished"):
        _ = chain.result
    flood = Message("dkls23-setup", chain.setup_session_id, 1, 2, 1, {})
    for _ in range(5):
        chain.receive(flood)
    with pytest.raises(ProtocolError) as ei:
        chain.receive(flood)
    assert ei.value.culprits == (2,)


def test_ceremony_modules_export_only_existing_names() -> None:
    import mpc.dkls23.resetup
    import mpc.hd
    import mpc.refresh
    import mpc.reshare

    for module in (mpc.refresh, mpc.reshare, mpc.hd, mpc.dkls23.resetup):
        assert module.__all__ and all(hasattr(module, n) for n in module.__all__)


# -- garbage payloads only ever raise the typed errors ----------------------------------------


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
@pytest.mark.parametrize("round_", [1, 2])
def test_refresh_garbage_payloads(group: Group, round_: int) -> None:
    from dataclasses import replace

    from tests.mpc.test_fuzz_decoders import FUZZ, _payload_strategy

    keys = dkg(group, 2, 3)

    def fresh() -> tuple[dict[int, RefreshSession], dict[tuple[int, int, int], Message]]:
        sid = os.urandom(32)
        s = {i: RefreshSession(k, sid) for i, k in keys.items()}
        r1 = {i: s[i].start()[0] for i in s}
        msgs = {(1, i, 0): m for i, m in r1.items()}
        for i in s:
            for j in s:
                if j != i:
                    for m in s[j].receive(r1[i]):
                        msgs[(2, m.sender, m.recipient or 0)] = m
        return s, msgs

    _, sample = fresh()

    @FUZZ
    @given(payload=_payload_strategy(dict(sample[(round_, 2, 1 if round_ == 2 else 0)].payload)))
    def run(payload: Any) -> None:
        sid = os.urandom(32)
        s = {i: RefreshSession(k, sid) for i, k in keys.items()}
        r1 = {i: s[i].start()[0] for i in s}
        target = s[1]
        if round_ == 1:
            target.receive(r1[3])
            bad = replace(r1[2], payload=payload)
        else:
            for i in (2, 3):
                target.receive(r1[i])
            r2 = {}
            for j in (2, 3):
                for i in s:
                    if i != j:
                        for m in s[j].receive(r1[i]):
                            r2[(m.sender, m.recipient)] = m
            target.receive(r2[(3, 1)])
            bad = replace(r2[(2, 1)], payload=payload)
        try:
            target.receive(bad)
        except (DecodeError, ProtocolError) as exc:
            assert exc.party == 2 or 2 in getattr(exc, "culprits", ())

    run()


def test_ecdsa_stale_share_among_refreshed_ones_is_named() -> None:
    """DKLs23: party 3 presigns with its old-epoch share; parties 1 and 2 both name it."""
    from mpc.dkls23 import PresignSession

    old = run_keygen_local(2, 3)
    refreshed = refresh({i: s.key for i, s in old.items()})
    new = {i: ecdsa_share_with_ot(refreshed[i], old[i]) for i in old}
    sid = os.urandom(32)
    ss = {1: new[1], 2: new[2], 3: old[3]}
    sessions = {i: PresignSession(s, sid, (1, 2, 3)) for i, s in ss.items()}
    errors: dict[int, ProtocolError] = {}
    queue = [m for s in sessions.values() for m in s.start()]
    while queue:
        m = queue.pop(0)
        p = m.recipient
        assert p is not None
        if p in errors:
            continue
        try:
            queue += sessions[p].receive(m)
        except ProtocolError as exc:
            errors[p] = exc
    assert errors[1].culprits == (3,) and errors[2].culprits == (3,)
    assert not any(s.done for s in sessions.values())
