"""A repeated DKLs23 presign session id never repeats an OT-extension / multiplication context.

Issue 9, item 3: a restored node forgets that it used a session id; the peer (or whoever
drives the coordinator) runs the same id again. Before the fix, Alice's pads depended only on
the session id and Bob's nonce, so a malicious Bob could replay his nonce, flip his choice
bits and solve ``(tau + tau') / 2`` for Alice's key share. These tests run that attack
against the real code paths (:mod:`mpc.dkls23.mul` and :class:`PresignSession`), check that
it works exactly when Alice's contribution repeats and fails when it is fresh, that
replayed or missing contributions are refused with the culprit named, and that same-id
presignatures still sign (verified by coincurve, low-s, recovery id).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from typing import Any

import coincurve
import pytest

from mpc.dkls23 import (
    EcdsaKeyShare,
    Presignature,
    PresignSession,
    _zq,
    combine_signature,
    sign_with_presignature,
)
from mpc.dkls23.mul import (
    MulAlice,
    MulBob,
    MulReply,
    ext_context,
    mul_context,
    pair_context,
)
from mpc.dkls23.params import COL_BYTES, ETA, WIDTH, Q
from mpc.errors import DecodeError, ProtocolError
from mpc.groups import SECP256K1
from mpc.shamir import lagrange_coefficient
from mpc.testing import MemoryLedger, run_keygen_local, run_local
from mpc.wire import Message

G = SECP256K1
INV2 = pow(2, -1, Q)
SIGNERS = (1, 2)


@pytest.fixture(scope="module")
def keys() -> dict[int, EcdsaKeyShare]:
    return run_keygen_local(2, 3)


def sk_of(keys: dict[int, EcdsaKeyShare], i: int, signers: tuple[int, ...] = SIGNERS) -> int:
    """Party i's additive share sk_i = lambda_i p(i): what Alice feeds the multiplication."""
    return keys[i].key.signing_share * lagrange_coefficient(G, i, signers) % Q


def sk_components(tau: bytes) -> list[int]:
    """tau_{j,2} for every OT j: the derandomised component carrying Alice's sk_i."""
    return _zq.unpack(tau, WIDTH, 1)


def share_guess(tau_a: bytes, tau_b: bytes) -> list[int]:
    """The attacker's combination: (tau_{j,2} + tau'_{j,2}) / 2 for every j."""
    return [
        (x + y) * INV2 % Q for x, y in zip(sk_components(tau_a), sk_components(tau_b), strict=True)
    ]


def sk_differences(tau_a: bytes, tau_b: bytes) -> list[int]:
    """tau_{j,2} - tau'_{j,2}: 0 wherever a pad is reused for the same key share."""
    pairs = zip(sk_components(tau_a), sk_components(tau_b), strict=True)
    return [(x - y) % Q for x, y in pairs]


# -- the attack, at the multiplication level -------------------------------------------------


def _malicious_bob_runs(
    keys: dict[int, EcdsaKeyShare], rho_alice: tuple[bytes, bytes]
) -> tuple[MulReply, MulReply, int]:
    """Two runs in one context; Bob replays his rho and flips every choice bit the 2nd time.

    Alice (party 2) is honest with contribution ``rho_alice[k]`` in run ``k``; Bob (party 1)
    completes both runs (his check passes: his extension is well formed each time).
    """
    ctx = secrets.token_bytes(32)  # the same session context both times (repeated sid)
    rho_b = secrets.token_bytes(32)  # Bob replays his own contribution
    x = secrets.token_bytes(COL_BYTES)
    x_flip = (int.from_bytes(x, "little") ^ ((1 << ETA) - 1)).to_bytes(COL_BYTES, "little")
    sk = sk_of(keys, 2)
    replies = []
    for k, bits in enumerate((x, x_flip)):
        bob = MulBob(keys[1].bob[2], ctx, alice=2, bob=1, rho=rho_b, rng=lambda n, b=bits: b)
        alice = MulAlice(keys[2].alice[1], ctx, alice=2, bob=1, rho=rho_alice[k])
        a = (G.random_scalar(), sk)
        reply, c = alice.round2(bob.round1(), a)
        d = bob.round3(reply, rho_alice=rho_alice[k])
        assert all((c[i] + d[i]) % Q == bob.chi * a[i] % Q for i in range(2))
        replies.append(reply)
    return replies[0], replies[1], sk


def test_attack_recovers_the_share_when_alices_contribution_repeats(
    keys: dict[int, EcdsaKeyShare],
) -> None:
    """Control: the attack is real. With Alice's rho repeated (the old code's situation:
    nothing fresh of hers in the context), every j gives away her share exactly."""
    rho = secrets.token_bytes(32)
    r1, r2, sk = _malicious_bob_runs(keys, (rho, rho))
    assert set(share_guess(r1.tau, r2.tau)) == {sk}


def test_attack_fails_with_alices_fresh_contribution(keys: dict[int, EcdsaKeyShare]) -> None:
    """The fix: Alice's fresh rho makes the pads of the two runs independent, so the values
    the attacker combines no longer cancel. No j yields the share, and the guesses are
    all different (they are independent random-oracle outputs, not a hidden constant)."""
    r1, r2, sk = _malicious_bob_runs(keys, (secrets.token_bytes(32), secrets.token_bytes(32)))
    guesses = share_guess(r1.tau, r2.tau)
    assert sk not in guesses
    assert len(set(guesses)) == len(guesses)
    # nor does the difference: for the same key share it would be 0 under reused pads
    diffs = sk_differences(r1.tau, r2.tau)
    assert 0 not in diffs
    assert r1.r_hash != r2.r_hash


def test_contexts_bind_both_contributions() -> None:
    ctx, ra, rb = (secrets.token_bytes(32) for _ in range(3))
    # symmetric in the pair, different per direction and per contribution
    assert pair_context(ctx, 1, 2, ra, rb) == pair_context(ctx, 2, 1, rb, ra)
    assert pair_context(ctx, 1, 2, ra, rb) != pair_context(ctx, 1, 2, rb, ra)
    p = pair_context(ctx, 1, 2, ra, rb)
    assert mul_context(p, 1, 2) != mul_context(p, 2, 1)
    assert mul_context(p, 1, 2) != mul_context(
        pair_context(ctx, 1, 2, secrets.token_bytes(32), rb), 1, 2
    )
    assert ext_context(ctx, 2, 1, rb) != ext_context(ctx, 2, 1, ra)
    assert ext_context(ctx, 2, 1, rb) != ext_context(ctx, 1, 2, rb)


def test_reflected_contribution_refused_in_the_multiplication(
    keys: dict[int, EcdsaKeyShare],
) -> None:
    ctx, rho = secrets.token_bytes(32), secrets.token_bytes(32)
    bob = MulBob(keys[1].bob[2], ctx, alice=2, bob=1, rho=rho)
    alice = MulAlice(keys[2].alice[1], ctx, alice=2, bob=1, rho=rho)  # Alice reflects Bob's rho
    with pytest.raises(ProtocolError) as exc:
        alice.round2(bob.round1(), (1, 2))
    assert exc.value.culprits == (1,)  # Alice (honest code) names the Bob who sent her rho
    bob = MulBob(keys[1].bob[2], ctx, alice=2, bob=1, rho=rho)
    alice = MulAlice(keys[2].alice[1], ctx, alice=2, bob=1, rho=secrets.token_bytes(32))
    reply, _ = alice.round2(bob.round1(), (1, 2))
    with pytest.raises(ProtocolError) as exc:
        bob.round3(reply, rho_alice=rho)  # Bob is told Alice's rho equals his own
    assert exc.value.culprits == (2,)
    with pytest.raises(DecodeError) as dexc:
        bob.round3(reply, rho_alice=b"short")
    assert dexc.value.party == 2 and dexc.value.field == "rho"


# -- the same, end to end through PresignSession --------------------------------------------


class Recorder:
    """A run_local tamper hook that records every message and optionally rewrites some."""

    def __init__(self, rewrite: Callable[[Message], Message | None] | None = None) -> None:
        self.msgs: list[Message] = []
        self.rewrite = rewrite

    def __call__(self, msg: Message) -> Message | None:
        self.msgs.append(msg)
        return self.rewrite(msg) if self.rewrite else msg

    def payload(self, rnd: int, sender: int, recipient: int) -> dict[str, Any]:
        for m in self.msgs:
            if (m.round, m.sender, m.recipient) == (rnd, sender, recipient):
                return dict(m.payload)
        raise LookupError((rnd, sender, recipient))


def run_same_sid(
    keys: dict[int, EcdsaKeyShare], sid: bytes, rec: Recorder
) -> dict[int, Presignature]:
    sessions = {i: PresignSession(keys[i], sid, SIGNERS) for i in SIGNERS}
    out: dict[int, Presignature] = run_local(sessions, tamper=rec, wire=True)
    return out


def sign_and_check(keys: dict[int, EcdsaKeyShare], pres: dict[int, Presignature]) -> None:
    """Sign with a fresh ledger per run (the restored node's ledger forgot too); coincurve."""
    msg_hash = secrets.token_bytes(32)
    parts = [
        sign_with_presignature(pres[i], keys[i], msg_hash, ledger=MemoryLedger()) for i in SIGNERS
    ]
    pk = keys[1].group_public_key
    sig = combine_signature(pres[1].public, parts, msg_hash, pk)
    assert 0 < sig.s <= Q // 2
    assert coincurve.PublicKey(pk.encode()).verify(sig.to_der(), msg_hash, hasher=None)
    rec = coincurve.PublicKey.from_signature_and_message(sig.to_compact(), msg_hash, hasher=None)
    assert rec.format() == pk.encode()


def test_repeated_session_id_between_honest_parties_is_fresh_and_signs(
    keys: dict[int, EcdsaKeyShare],
) -> None:
    """A restored node runs a session id again: every correlation of the pair is new."""
    sid = secrets.token_bytes(32)
    ra, rb = Recorder(), Recorder()
    pa, pb = run_same_sid(keys, sid, ra), run_same_sid(keys, sid, rb)
    for s, r in ((1, 2), (2, 1)):
        a1, b1 = ra.payload(1, s, r), rb.payload(1, s, r)
        a2, b2 = ra.payload(2, s, r), rb.payload(2, s, r)
        assert a1["rho"] != b1["rho"]  # fresh contribution from each party
        assert a1["u"] != b1["u"] and a1["t_dot"] != b1["t_dot"]  # fresh extension
        assert a2["pair_ctx"] != b2["pair_ctx"]  # fresh pair context
        assert a2["r_hash"] != b2["r_hash"]
        # the attacker's combination of the two transcripts reveals nothing of sk_s
        sk = sk_of(keys, s)
        assert sk not in share_guess(a2["tau"], b2["tau"])
        diffs = sk_differences(a2["tau"], b2["tau"])
        assert 0 not in diffs  # no pad reused: for equal sk_s a reused pad would give 0
    assert pa[1].public.R != pb[1].public.R
    sign_and_check(keys, pa)
    sign_and_check(keys, pb)


def test_replayed_round1_gets_fresh_pads_and_is_refused(keys: dict[int, EcdsaKeyShare]) -> None:
    """Party 2 replays its whole round-1 message of an earlier run with the same session id
    (the attacker's way to recreate the old context). Party 1's round-2 answer is under a
    new context anyway (fresh pads: tau shares no pad with the old run), and party 1 then
    refuses party 2's round 2, which cannot match her fresh pair context."""
    sid = secrets.token_bytes(32)
    old = Recorder()
    run_same_sid(keys, sid, old)
    replay = old.payload(1, 2, 1)
    s1, s2 = (PresignSession(keys[i], sid, SIGNERS) for i in SIGNERS)
    (m1,), (m2,) = s1.start(), s2.start()
    (answer,) = s1.receive(dataclasses.replace(m2, payload=replay))  # party 1's round 2
    (r2,) = s2.receive(m1)
    with pytest.raises(ProtocolError) as exc:
        s1.receive(r2)
    assert exc.value.culprits == (2,)
    assert "pair context" in str(exc.value)
    t_old, t_new = old.payload(2, 1, 2)["tau"], answer.payload["tau"]
    diffs = sk_differences(t_old, t_new)
    assert 0 not in diffs  # same u, same x, same sid: the old code reused every pad here


def _payload_rewrite(
    rnd: int, sender: int, recipient: int, fn: Callable[[dict[str, Any]], None]
) -> Callable[[Message], Message]:
    def t(m: Message) -> Message:
        if (m.round, m.sender, m.recipient) == (rnd, sender, recipient):
            p = dict(m.payload)
            fn(p)
            return dataclasses.replace(m, payload=p)
        return m

    return t


def test_peer_replaying_our_old_contribution_is_refused_and_named(
    keys: dict[int, EcdsaKeyShare],
) -> None:
    """Party 2 binds its round 2 to party 1's contribution of the earlier run (it answers
    as if the old context were current): party 1 refuses it before using any of it."""
    sid = secrets.token_bytes(32)
    old = Recorder()
    run_same_sid(keys, sid, old)
    old_ctx = old.payload(2, 2, 1)["pair_ctx"]
    rec = Recorder(_payload_rewrite(2, 2, 1, lambda p: p.update(pair_ctx=old_ctx)))
    with pytest.raises(ProtocolError) as exc:
        run_same_sid(keys, sid, rec)
    assert exc.value.culprits == (2,) and "pair context" in str(exc.value)


def test_peer_reflecting_our_contribution_is_refused_and_named(
    keys: dict[int, EcdsaKeyShare],
) -> None:
    seen: dict[str, bytes] = {}

    def reflect(m: Message) -> Message:
        if (m.round, m.sender) == (1, 1):
            seen["rho1"] = m.payload["rho"]
        if (m.round, m.sender, m.recipient) == (1, 2, 1):
            return dataclasses.replace(m, payload={**m.payload, "rho": seen["rho1"]})
        return m

    with pytest.raises(ProtocolError) as exc:
        run_same_sid(keys, secrets.token_bytes(32), Recorder(reflect))
    assert exc.value.culprits == (2,) and "own contribution" in str(exc.value)


@pytest.mark.parametrize(
    "rnd,field,value",
    [
        (1, "rho", None),  # omitted
        (1, "rho", b"\x01" * 31),  # short
        (1, "rho", b"\x01" * 33),  # long
        (1, "rho", "not bytes"),
        (2, "pair_ctx", None),
        (2, "pair_ctx", b"\x02" * 16),
    ],
)
def test_contribution_fields_decoded_strictly(
    keys: dict[int, EcdsaKeyShare], rnd: int, field: str, value: Any
) -> None:
    def fn(p: dict[str, Any]) -> None:
        if value is None:
            del p[field]
        else:
            p[field] = value

    rec = Recorder(_payload_rewrite(rnd, 2, 1, fn))
    with pytest.raises(DecodeError) as exc:
        run_same_sid(keys, secrets.token_bytes(32), rec)
    assert exc.value.party == 2 and exc.value.field == field
