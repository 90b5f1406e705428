"""DKLs23 key setup (keygen.py, keysetup.py, resetup.py): the share format decoded strictly
field by field, the base-OT seeds of every pair consistent, and the composite sessions'
routing, buffering and blame (issue 16, mutation testing).

Key shares from the test-only dealer plus one OT setup run per module (a module-scoped
fixture of shares: no whole key is formed). First in ``mutation.toml``'s selections for
``mpc/dkls23/keygen.py``, ``keysetup.py`` and ``resetup.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import cbor2
import pytest

from mpc.dkls23.keygen import (
    PROTOCOL_SETUP,
    EcdsaKeyShare,
    OtSetupSession,
    VsotChallenge,
    VsotChoice,
    VsotKey,
    VsotOpening,
    VsotResponse,
    _split,
    key_id_of,
)
from mpc.dkls23.keysetup import SETUP_SID_DOMAIN, KeygenChain, setup_session_id
from mpc.dkls23.mul import AliceSeeds, BobSeeds
from mpc.dkls23.params import KAPPA, h
from mpc.dkls23.resetup import OtResetupChain, _new_key, resetup_session_id
from mpc.errors import DecodeError, ProtocolError, UsageError
from mpc.groups import ED25519, SECP256K1
from mpc.refresh import RefreshSession
from mpc.reshare import ReshareResult, ReshareSession
from mpc.shamir import KeyPackage
from mpc.testing import run_local
from mpc.wire import Message
from tests.mpc.conftest import dealer_split_for_tests


@pytest.fixture(scope="module")
def keys() -> dict[int, KeyPackage]:
    return dealer_split_for_tests(SECP256K1, 2, 3)


@pytest.fixture(scope="module")
def shares(keys: dict[int, KeyPackage]) -> dict[int, EcdsaKeyShare]:
    sid = os.urandom(32)
    out: dict[int, EcdsaKeyShare] = run_local({i: OtSetupSession(k, sid) for i, k in keys.items()})
    return out


# -- OtSetupSession ---------------------------------------------------------------------------


def test_every_pair_holds_random_ots_in_both_directions(shares: dict[int, EcdsaKeyShare]) -> None:
    """Bob's two pads per column against Alice's Delta and chosen pads (KOS15 "Initialize")."""
    for b in (1, 2, 3):
        for a in (1, 2, 3):
            if a == b:
                continue
            bob, alice = shares[b].bob[a], shares[a].alice[b]
            assert len(bob.k0) == len(bob.k1) == len(alice.kd) == 32 * KAPPA
            assert 0 < alice.delta < 1 << KAPPA
            k0, k1, kd = _split(bob.k0, 32), _split(bob.k1, 32), _split(alice.kd, 32)
            for col in range(KAPPA):
                assert kd[col] == (k1 if alice.delta >> col & 1 else k0)[col], (b, a, col)
                assert k0[col] != k1[col]
    assert shares[1].bob[2].k0 != shares[2].bob[1].k0  # each direction its own base OTs
    # Delta is KAPPA random bits: over the six ordered pairs one of the top 32 bits is set
    # unless the draw is short (an honest failure has probability 2^-192)
    assert any(
        shares[a].alice[b].delta >> (KAPPA - 32) for a in (1, 2, 3) for b in (1, 2, 3) if a != b
    )
    assert set(shares[2].bob) == set(shares[2].alice) == {1, 3}


def test_setup_session_checks_and_routing(keys: dict[int, KeyPackage]) -> None:
    ed = dealer_split_for_tests(ED25519, 2, 3)
    with pytest.raises(UsageError, match="needs a secp256k1 key package"):
        OtSetupSession(ed[1], os.urandom(32))
    s = OtSetupSession(keys[2], os.urandom(32))
    assert [s.expected_kind(r) for r in s.rounds] == ["direct"] * 5 and s.rounds == (1, 2, 3, 4, 5)
    out = s.start()
    assert [(m.round, m.recipient) for m in out] == [(1, 1), (1, 3)]


def test_split_cuts_kappa_pieces() -> None:
    data = bytes(range(256)) * (KAPPA * 2 // 256) * 32
    pieces = _split(data[: 64 * KAPPA], 64)
    assert len(pieces) == KAPPA and all(len(p) == 64 for p in pieces)
    assert b"".join(pieces) == data[: 64 * KAPPA]


def test_a_short_challenge_message_is_refused_naming_the_sender(
    keys: dict[int, KeyPackage],
) -> None:
    sid = os.urandom(32)

    def tamper(m: Message) -> Message:
        if m.round == 3 and m.sender == 3:
            return Message(
                m.protocol, m.session_id, 3, 3, m.recipient, {"xi": bytes(32 * KAPPA - 1)}
            )
        return m

    with pytest.raises(DecodeError) as e:
        run_local({i: OtSetupSession(k, sid) for i, k in keys.items()}, tamper=tamper)
    assert e.value.party == 3 and e.value.field == "xi"


def test_setup_payloads_are_frozen() -> None:
    g = SECP256K1.generator
    for obj, name in (
        (VsotKey(g, g, 1), "z"),
        (VsotChoice((g,) * KAPPA), "A"),
        (VsotChallenge(bytes(32 * KAPPA)), "xi"),
        (VsotResponse(bytes(32 * KAPPA)), "resp"),
        (VsotOpening(bytes(64 * KAPPA)), "open"),
        (BobSeeds(b"", b""), "k0"),
        (AliceSeeds(0, b""), "kd"),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, None)


# -- the share format ------------------------------------------------------------------------


def test_key_id_is_the_documented_hash(shares: dict[int, EcdsaKeyShare]) -> None:
    pub = shares[1].public
    parts: list[bytes | int] = [2, pub.group_public_key.encode()]
    for i in (1, 2, 3):
        parts += [i, pub.verifying_shares[i].encode()]
    assert key_id_of(pub) == h(b"DKLs23 key id", *parts) == shares[3].key_id
    assert shares[1].identifier == 1 and shares[1].group_public_key == pub.group_public_key


def _obj(share: EcdsaKeyShare) -> dict[str, Any]:
    obj: dict[str, Any] = cbor2.loads(share.to_bytes())
    return obj


def _refused(obj: object, fld: str, match: str = "") -> None:
    with pytest.raises(DecodeError, match=match or None) as e:
        EcdsaKeyShare.from_bytes(cbor2.dumps(obj, canonical=True))
    assert e.value.field == fld, (fld, str(e.value))


def test_share_round_trip_and_its_layout(shares: dict[int, EcdsaKeyShare]) -> None:
    s = shares[2]
    assert EcdsaKeyShare.from_bytes(s.to_bytes()) == s
    obj = _obj(s)
    assert set(obj) == {"v", "id", "t", "pk", "vs", "x", "ot"} and obj["v"] == 1 and obj["id"] == 2
    assert obj["t"] == 2 and obj["x"] == SECP256K1.encode_scalar(s.key.signing_share)
    assert sorted(obj["ot"]) == [1, 3]
    k0, k1, delta, kd = obj["ot"][3]
    assert (k0, k1, kd) == (s.bob[3].k0, s.bob[3].k1, s.alice[3].kd)
    assert delta == s.alice[3].delta.to_bytes(32, "big")


def test_share_fields_are_refused_by_name(shares: dict[int, EcdsaKeyShare]) -> None:
    s = shares[2]
    base = _obj(s)
    _refused({**base, "v": 2}, "v", "unsupported key share version")
    _refused({**base, "vs": [1, 2]}, "vs", "expected a map")
    _refused({**base, "vs": {0: b"", **base["vs"]}}, "vs")
    for me in (4, "2", True):
        _refused({**base, "id": me}, "id", "identifier not among the participants")
    for t in (1, 4, True, "2", 0):
        _refused({**base, "t": t}, "t", "bad threshold")
    _refused({**base, "vs": {**base["vs"], 3: b"\x02" + bytes(32)}}, "vs")
    _refused({**base, "pk": b"\x05" + bytes(32)}, "pk")
    _refused({**base, "x": bytes(32)}, "x")
    other = SECP256K1.encode_scalar((s.key.signing_share + 1) % SECP256K1.order)
    _refused({**base, "x": other}, "x", "signing share does not match")
    _refused({**base, "ot": [1]}, "ot", "expected seeds for every peer")
    _refused({**base, "ot": {1: base["ot"][1]}}, "ot", "expected seeds for every peer")
    _refused({**base, "ot": {**base["ot"], 2: base["ot"][1]}}, "ot", "expected seeds")
    good = base["ot"][3]
    n = 32 * KAPPA
    for bad in (
        {0: good[0]},
        good[:3],
        [*good, b""],
        [good[0], good[1], 5, good[3]],
        [good[0][:-1], good[1], good[2], good[3]],
        [good[0], good[1] + b"\x00", good[2], good[3]],
        [good[0], good[1], good[2][:31], good[3]],
        [good[0], good[1], good[2], good[3][: n - 1]],
    ):
        _refused({**base, "ot": {1: base["ot"][1], 3: bad}}, "ot", "bad OT seeds for peer 3")
    # the bounds themselves are accepted: t = n (3) decodes as a 3-of-3 share
    full = EcdsaKeyShare.from_bytes(cbor2.dumps({**base, "t": 3}, canonical=True))
    assert full.key.min_signers == 3
    with pytest.raises(DecodeError):
        EcdsaKeyShare.from_bytes(cbor2.dumps({**base, "extra": 1}, canonical=True))


def test_share_repr_hides_the_seeds(shares: dict[int, EcdsaKeyShare]) -> None:
    s = shares[1]
    text = repr(s)
    assert s.bob[2].k0[:8].hex() not in text and "bob=" not in text and "alice=" not in text
    assert isinstance(s.bob[2], BobSeeds) and isinstance(s.alice[2], AliceSeeds)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.key = shares[2].key  # type: ignore[misc]


# -- KeygenChain -----------------------------------------------------------------------------


def test_setup_session_id_and_accepts() -> None:
    sid = bytes(range(32))
    assert setup_session_id(sid) == hashlib.sha256(b"tpwc-dkls23-setup\x00" + sid).digest()
    assert SETUP_SID_DOMAIN == b"tpwc-dkls23-setup\x00"
    chain = KeygenChain(sid, 2, [1, 2, 3], 2, b"ctx")
    assert chain.protocol == "frost-dkg" and not chain.done
    assert chain.accepts == {"frost-dkg": sid, PROTOCOL_SETUP: setup_session_id(sid)}


def test_early_setup_messages_are_counted_per_sender() -> None:
    sid = os.urandom(32)
    chain = KeygenChain(sid, 1, [1, 2, 3], 2)
    chain.start()
    for sender in (2, 3):
        for rnd in range(1, 6):
            assert (
                chain.receive(Message(PROTOCOL_SETUP, setup_session_id(sid), rnd, sender, 1, {}))
                == []
            )
    with pytest.raises(ProtocolError, match="too many early key-setup messages") as e:
        chain.receive(Message(PROTOCOL_SETUP, setup_session_id(sid), 1, 3, 1, {}))
    assert e.value.culprits == (3,)


def _deliver(chains: dict[int, Any], queue: list[Message], hold: Any = None) -> None:
    """Deliver ``queue`` in order; ``hold(m, t)`` delays a delivery until nothing else moves."""
    held: list[tuple[Message, int]] = []
    for _ in range(10_000):
        if not queue and held and (hold is None or not any(hold(m, t) for m, t in held)):
            for m, t in held:
                queue.extend(chains[t].receive(m))
            held = []
        if not queue:
            return
        m = queue.pop(0)
        targets = [m.recipient] if m.recipient is not None else [p for p in chains if p != m.sender]
        for t in targets:
            if hold is not None and hold(m, t):
                held.append((m, t))
            else:
                queue.extend(chains[t].receive(m))
    raise AssertionError("the sessions did not finish")


def test_chain_feeds_early_setup_messages_when_the_dkg_finishes() -> None:
    """Party 3's last DKG messages are held back until parties 1 and 2 are in the setup, so
    their first setup messages reach 3 early; the chain must replay them when its DKG ends."""
    sid = os.urandom(32)
    chains = {p: KeygenChain(sid, p, [1, 2, 3], 2) for p in (1, 2, 3)}

    def hold(m: Message, t: int) -> bool:
        late = m.protocol == "frost-dkg" and m.round == 2 and t == 3
        return late and not (chains[1].setup and chains[2].setup)

    _deliver(chains, [m for c in chains.values() for m in c.start()], hold)
    assert chains[3]._early == [] and chains[3].setup is not None
    assert all(c.done for c in chains.values())
    keys = {c.result.group_public_key for c in chains.values()}
    assert len(keys) == 1 and chains[3].protocol == PROTOCOL_SETUP
    assert chains[3].waiting_for() == ()


# -- OtResetupChain --------------------------------------------------------------------------


def test_resetup_session_id_is_bound_to_protocol_and_sid() -> None:
    sid = bytes(32)
    want = hashlib.sha256(b"tpwc-dkls23-resetup\x00" + b"frost-refresh" + b"\x00" + sid).digest()
    assert resetup_session_id("frost-refresh", sid) == want
    assert resetup_session_id("frost-reshare", sid) != want


def test_new_key_of_each_stage_result(keys: dict[int, KeyPackage]) -> None:
    assert _new_key(keys[1]) is keys[1]
    assert _new_key(ReshareResult(keys[1].public, keys[1])) is keys[1]
    assert _new_key(ReshareResult(keys[1].public, None)) is None
    with pytest.raises(UsageError, match="stage 1 did not produce a key package"):
        _new_key(ReshareResult(keys[1].public, "key"))  # type: ignore[arg-type]


def test_a_departing_dealer_ends_after_the_reshare(keys: dict[int, KeyPackage]) -> None:
    sid = os.urandom(32)
    old = keys[1].public
    chains = {
        p: OtResetupChain(
            ReshareSession(sid, p, old, [1, 2], [2, 3, 4], 2, key=keys.get(p) if p < 3 else None)
        )
        for p in (1, 2, 3, 4)
    }
    assert chains[1].protocol == "frost-reshare"
    with pytest.raises(UsageError, match="frost-reshare: the ceremony has not finished"):
        _ = chains[1].result
    assert not chains[1].done
    res = run_local(chains)  # type: ignore[arg-type]
    assert res[1] is None and chains[1].done and chains[1].setup is None
    assert chains[1].waiting_for() == ()
    for p in (2, 3, 4):
        assert isinstance(res[p], EcdsaKeyShare) and chains[p].protocol == PROTOCOL_SETUP
        assert set(res[p].bob) == {2, 3, 4} - {p}


def test_setup_messages_sent_to_a_departing_dealer_are_blamed(keys: dict[int, KeyPackage]) -> None:
    sid = os.urandom(32)
    old = keys[1].public
    chains = {
        p: OtResetupChain(
            ReshareSession(sid, p, old, [1, 2], [2, 3], 2, key=keys.get(p) if p < 3 else None)
        )
        for p in (1, 2, 3)
    }
    stray = Message(PROTOCOL_SETUP, chains[1].setup_session_id, 1, 3, 1, {})
    queue = [m for c in chains.values() for m in c.start()]
    chains[1].receive(stray)
    with pytest.raises(ProtocolError, match="outside the new committee") as e:
        while queue:
            m = queue.pop(0)
            targets = (
                [m.recipient] if m.recipient is not None else [p for p in chains if p != m.sender]
            )
            for t in targets:
                queue.extend(chains[t].receive(m))
    assert e.value.culprits == (3,)


def test_resetup_buffer_is_counted_per_sender_and_refresh_gives_new_seeds(
    keys: dict[int, KeyPackage], shares: dict[int, EcdsaKeyShare]
) -> None:
    sid = os.urandom(32)
    chain = OtResetupChain(RefreshSession(keys[1], sid))
    assert chain.accepts == {
        "frost-refresh": sid,
        PROTOCOL_SETUP: resetup_session_id("frost-refresh", sid),
    }
    assert chain.protocol == "frost-refresh" and chain.session_id == sid
    chain.start()
    for sender in (2, 3):
        for rnd in range(1, 6):
            chain.receive(Message(PROTOCOL_SETUP, chain.setup_session_id, rnd, sender, 1, {}))
    with pytest.raises(ProtocolError, match="too many early key-setup messages") as e:
        chain.receive(Message(PROTOCOL_SETUP, chain.setup_session_id, 1, 2, 1, {}))
    assert e.value.culprits == (2,)
    sid = os.urandom(32)
    chains = {i: OtResetupChain(RefreshSession(k, sid)) for i, k in keys.items()}
    new = run_local(chains)  # type: ignore[arg-type]
    for i in (1, 2, 3):
        assert isinstance(new[i], EcdsaKeyShare) and chains[i].done
        assert new[i].group_public_key == keys[1].group_public_key
        assert new[i].bob[1 if i != 1 else 2].k0 != shares[i].bob[1 if i != 1 else 2].k0
    with pytest.raises(UsageError, match="needs a secp256k1 ceremony"):
        OtResetupChain(RefreshSession(dealer_split_for_tests(ED25519, 2, 3)[1], sid))
    with pytest.raises(UsageError, match="needs a secp256k1 ceremony"):
        OtResetupChain(object())  # type: ignore[arg-type]


def test_resetup_chain_replays_early_setup_messages(keys: dict[int, KeyPackage]) -> None:
    """Party 3's last refresh messages are held back until 1 and 2 are in the setup: their
    setup messages reach 3 early, and its chain must feed them to the setup when it starts."""
    sid = os.urandom(32)
    chains = {i: OtResetupChain(RefreshSession(k, sid)) for i, k in keys.items()}

    def hold(m: Message, t: int) -> bool:
        late = m.protocol == "frost-refresh" and m.round == 2 and t == 3
        return late and not (chains[1].setup and chains[2].setup)

    _deliver(chains, [m for c in chains.values() for m in c.start()], hold)
    assert chains[3]._early == [] and all(c.done for c in chains.values())
    assert all(isinstance(c.result, EcdsaKeyShare) for c in chains.values())
