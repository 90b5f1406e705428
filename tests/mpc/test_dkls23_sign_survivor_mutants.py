"""DKLs23 signing (mpc.dkls23.sign): the survivors of its first full mutation run
(session 22, issue 16; docs/MUTATION.md). Shares from the test-only dealer plus one OT
setup (a module-scoped fixture of shares: no whole key is formed); every signature is
checked by coincurve (libsecp256k1), not only by our combiner.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import coincurve
import pytest

from mpc.dkls23.keygen import EcdsaKeyShare, OtSetupSession
from mpc.dkls23.mul import pair_context
from mpc.dkls23.params import Q, h, h_scalars
from mpc.dkls23.sign import (
    PresignaturePublic,
    PresignRound1,
    PresignRound2,
    PresignSession,
    _commit,
    combine_signature,
    sign_with_presignature,
)
from mpc.errors import ProtocolError, UsageError
from mpc.groups import SECP256K1
from mpc.shamir import lagrange_coefficient
from mpc.testing import MemoryLedger, run_local
from mpc.wire import Message, decode_payload
from tests.mpc.conftest import dealer_split_for_tests

G = SECP256K1
DIGEST = hashlib.sha256(b"dkls23 sign survivors").digest()


@pytest.fixture(scope="module")
def shares() -> dict[int, EcdsaKeyShare]:
    keys = dealer_split_for_tests(G, 2, 3)
    sid = os.urandom(32)
    out: dict[int, EcdsaKeyShare] = run_local({i: OtSetupSession(k, sid) for i, k in keys.items()})
    return out


def _recorded_round2(shares: dict[int, EcdsaKeyShare]) -> tuple[dict[int, Any], Message]:
    """One honest presignature of (1, 2) and party 2's round-2 message to party 1."""
    seen: list[Message] = []

    def hook(m: Message) -> Message:
        if m.round == 2 and m.sender == 2 and m.recipient == 1:
            seen.append(m)
        return m

    sid = os.urandom(32)
    pres = run_local({i: PresignSession(shares[i], sid, (1, 2)) for i in (1, 2)}, tamper=hook)
    assert len(seen) == 1
    return pres, seen[0]


def test_an_honest_psi_of_zero_is_a_scalar_like_any_other(
    shares: dict[int, EcdsaKeyShare],
) -> None:
    """``psi = phi_i - chi_{i,j}`` is uniform mod q: 0 with probability 1/q, and a party
    must not abort an honest run on it (``scalar(allow_zero=True)``)."""
    pres, msg = _recorded_round2(shares)
    for value in (0, 1):
        payload = {**msg.payload, "psi": value.to_bytes(32, "big")}
        got = decode_payload(PresignRound2, payload, group=G, party=2)
        assert got.psi == value
    # the honest run itself signs, checked by libsecp256k1
    parts = [
        sign_with_presignature(pres[i], shares[i], DIGEST, ledger=MemoryLedger()) for i in (1, 2)
    ]
    pk = shares[1].group_public_key
    sig = combine_signature(pres[1].public, parts, DIGEST, pk)
    assert coincurve.PublicKey(pk.encode()).verify(sig.to_der(), DIGEST, hasher=None)


def test_presignature_public_values_cannot_be_altered(shares: dict[int, EcdsaKeyShare]) -> None:
    """What the combiner trusts about a presignature (its id, signers and ``R``) is frozen:
    a caller cannot re-point a stored presignature at another instance point or signer set."""
    pres, _ = _recorded_round2(shares)
    pub = pres[1].public
    assert isinstance(pub, PresignaturePublic)
    for name, value in (("R", G.base_mul(5)), ("signers", (1, 3)), ("presignature_id", bytes(32))):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(pub, name, value)
    assert hash(pub) == hash(pres[2].public)  # frozen dataclasses hash by value


def test_a_share_without_ot_setups_with_two_peers_names_the_first(
    shares: dict[int, EcdsaKeyShare],
) -> None:
    """A signer missing the base OTs of several peers is refused before any round, naming
    the lowest of them (the list, and the party the caller retires or re-runs setup with)."""
    share = shares[1]
    for bob, alice in (({}, dict(share.alice)), (dict(share.bob), {}), ({}, {})):
        with pytest.raises(UsageError, match=r"no OT setup with \[2, 3\]") as e:
            PresignSession(EcdsaKeyShare(share.key, bob, alice), os.urandom(32), [1, 2, 3])
        assert e.value.party == 2


def test_the_zero_shares_are_the_documented_pairwise_terms(
    shares: dict[int, EcdsaKeyShare],
) -> None:
    """Protocol 3.6's re-randomisation ``sk_i = lambda_i x_i + zeta_i`` with the module
    docstring's F_Zero: ``seed_{i,j} = H(context, lo, hi, e_i E_j, pair_ctx)``, the pair's
    term added by the smaller identifier and subtracted by the larger. Each round-2 ``pk``
    is checked against that formula rebuilt here (the ephemeral ``e_i`` read from the
    sessions before round 2), so a node that added where its peers subtract (the sum would
    still be zero between nodes of the same build, not between builds) is caught."""
    ids = (1, 2, 3)
    sid = os.urandom(32)
    sessions = {i: PresignSession(shares[i], sid, ids) for i in ids}
    e: dict[int, int] = {}
    first: dict[int, PresignRound1] = {}
    pks: dict[int, Any] = {}

    def hook(m: Message) -> Message:
        if not e:  # every session has started, none has reached round 2
            e.update({i: s._e for i, s in sessions.items()})
        if m.round == 1:
            first[m.sender] = decode_payload(PresignRound1, m.payload, group=G, party=m.sender)
        else:
            pks[m.sender] = decode_payload(PresignRound2, m.payload, group=G, party=m.sender).pk
        return m

    pres = run_local(sessions, tamper=hook)
    assert all(v != 0 for v in e.values()) and set(pks) == set(ids)
    context = h(b"DKLs23 presign context", sid, shares[1].key_id, *ids)
    zeta = {}
    for i in ids:
        acc = 0
        for j in ids:
            if j == i:
                continue
            lo, hi = min(i, j), max(i, j)
            dh = (first[j].zk * e[i]).encode()
            pctx = pair_context(context, i, j, first[i].rho, first[j].rho)
            seed = h(b"DKLs23 F_Zero pairwise seed", context, lo, hi, dh, pctx)
            (z,) = h_scalars(b"DKLs23 F_Zero share", 1, seed)
            acc += z if i < j else -z
        zeta[i] = acc % Q
    assert sum(zeta.values()) % Q == 0 and all(zeta.values())
    pub = shares[1].public
    for i in ids:
        lam = lagrange_coefficient(G, i, ids)
        assert pks[i] == pub.verifying_shares[i] * lam + G.base_mul(zeta[i]), i
    # and the presignature signs (libsecp256k1)
    parts = [sign_with_presignature(pres[i], shares[i], DIGEST, ledger=MemoryLedger()) for i in ids]
    sig = combine_signature(pres[1].public, parts, DIGEST, pub.group_public_key)
    assert coincurve.PublicKey(pub.group_public_key.encode()).verify(
        sig.to_der(), DIGEST, hasher=None
    )


def test_a_partial_signature_cannot_be_altered(shares: dict[int, EcdsaKeyShare]) -> None:
    pres, _ = _recorded_round2(shares)
    part = sign_with_presignature(pres[1], shares[1], DIGEST, ledger=MemoryLedger())
    for name, value in (("sender", 2), ("u", 1), ("w", 1), ("R", G.base_mul(3))):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(part, name, value)


def test_a_signer_who_cancels_the_instance_point_gets_no_presignature(
    shares: dict[int, EcdsaKeyShare],
) -> None:
    """An attacker who could choose ``R_2 = -R_1`` (the round-1 commitment stops this: it
    would have to know ``R_1`` before committing, simulated here by reading party 1's ``r_1``
    and rewriting party 2's commitment and input) makes ``R`` the identity: ``r`` would be
    undefined. Party 1 refuses it as degenerate (Protocol 3.6 round 3) after every
    consistency check has passed (party 2's multiplication input is consistent with its
    ``R_2``), and hands out nothing."""
    ids = (1, 2)
    sid = os.urandom(32)
    sessions = {i: PresignSession(shares[i], sid, ids) for i in ids}
    cheat = sessions[2]
    rewritten: list[int] = []

    def hook(m: Message) -> Message | None:
        if not rewritten:  # both have started: party 2 now "learns" r_1 and cancels it
            cheat._r = (-sessions[1]._r) % Q
            cheat._R = G.base_mul(cheat._r)
            rewritten.append(1)
        if m.round == 1 and m.sender == 2:
            com = _commit(cheat._context, 2, cheat._rho, cheat._R, cheat._salt)
            return dataclasses.replace(m, payload={**m.payload, "com": com})
        return m

    with pytest.raises(ProtocolError, match="instance point R is degenerate; rerun presign") as e:
        run_local(sessions, tamper=hook)
    assert e.value.culprits == ()
    assert not sessions[1].done
