"""DKLs23 base OT (VSOT, DKLs18 Protocol 7): the honest transfer and every verification step,
each attack named after what it forges (issue 16, mutation testing).

Pure: one VSOT instance per test between a sender and a receiver object, driven by hand.
The sender's secret ``b`` is the protocol's own ephemeral scalar, not a key. First in
``mutation.toml``'s selection for ``mpc/dkls23/baseot.py``.
"""

from __future__ import annotations

import secrets

import pytest

from mpc.dkls23.baseot import VsotReceiver, VsotSender, _pad, _xor
from mpc.dkls23.params import KAPPA, Q, h
from mpc.errors import ProtocolError
from mpc.groups import SECP256K1

G = SECP256K1
CTX = b"vsot-test-ctx"
# choice bits with both ends and a run of each value set
OMEGA = (1 << 0) | (1 << 3) | (1 << 4) | (1 << (KAPPA - 1)) | (0xF0F0 << 100)


def _run(omega: int = OMEGA) -> tuple[VsotSender, VsotReceiver]:
    snd = VsotSender(CTX, receiver=2)
    rcv = VsotReceiver(CTX, omega, sender=1)
    a = rcv.step2(*snd.step1())
    responses = rcv.step4(snd.step3(a))
    rcv.step6(snd.step5(responses))
    return snd, rcv


def test_the_receiver_learns_exactly_the_chosen_pad() -> None:
    snd, rcv = _run()
    rho0, rho1 = snd.output()
    mine = rcv.output()
    assert len(rho0) == len(rho1) == len(mine) == KAPPA
    for col in range(KAPPA):
        bit = OMEGA >> col & 1
        assert mine[col] == (rho1 if bit else rho0)[col], col
        assert mine[col] != (rho0 if bit else rho1)[col], col
    assert len(set(rho0) | set(rho1)) == 2 * KAPPA  # every pad bound to its index


@pytest.mark.parametrize("omega", [0, (1 << KAPPA) - 1])
def test_all_zero_and_all_one_choices(omega: int) -> None:
    snd, rcv = _run(omega)
    want = snd.output()[omega & 1]
    assert rcv.output() == want


def test_pads_are_the_documented_hash_of_the_shared_point() -> None:
    """The pad is H("VSOT pad", ctx, l, point) (params.h), and the opening of the chosen pad is
    H("VSOT H", pad): what the receiver holds hashes to what the sender opens."""
    snd, rcv = _run()
    opened = [h(b"VSOT H", r) for r in rcv.output()]
    rho0, rho1 = snd.output()
    for col in (0, 1, 2, KAPPA - 1):
        side = rho1 if OMEGA >> col & 1 else rho0
        assert opened[col] == h(b"VSOT H", side[col])
    p = G.base_mul(7)
    assert _pad(CTX, 5, p) == h(b"VSOT pad", CTX, 5, p.encode())
    assert (
        _xor(b"\x01" * 32, b"\x03" * 32) == b"\x02" * 32 and len(_xor(bytes(32), bytes(32))) == 32
    )


def test_sender_secret_is_erased_after_the_pads() -> None:
    snd = VsotSender(CTX, receiver=2)
    rcv = VsotReceiver(CTX, 5, sender=1)
    a = rcv.step2(*snd.step1())
    assert snd._b != 0
    snd.step3(a)
    assert snd._b == 0


def test_proof_of_knowledge_is_schnorr_bound_to_the_context() -> None:
    snd = VsotSender(CTX, receiver=2)
    B, T, z = snd.step1()
    e = int.from_bytes(h(b"VSOT dlog proof", CTX, B.encode(), T.encode()), "big") % Q
    assert G.base_mul(z) == T + B * e  # the verification equation, checked here directly
    assert VsotReceiver(CTX, 0, sender=1).step2(B, T, z)


@pytest.mark.parametrize("forgery", ["z+1", "other T", "other B", "other context"])
def test_a_forged_proof_of_knowledge_is_refused_naming_the_sender(forgery: str) -> None:
    snd = VsotSender(CTX, receiver=2)
    B, T, z = snd.step1()
    ctx = CTX
    if forgery == "z+1":
        z = (z + 1) % Q
    elif forgery == "other T":
        T = T + G.generator
    elif forgery == "other B":
        B = B + G.generator
    else:
        ctx = CTX + b"!"
    with pytest.raises(ProtocolError, match="proof of knowledge of the sender's secret") as e:
        VsotReceiver(ctx, 0, sender=1).step2(B, T, z)
    assert e.value.culprits == (1,)


def test_a_choice_point_equal_to_b_is_refused_naming_the_receiver() -> None:
    """A_l = B would make A_l - B the identity (one pad known to everyone)."""
    snd = VsotSender(CTX, receiver=2)
    rcv = VsotReceiver(CTX, OMEGA, sender=1)
    a = rcv.step2(*snd.step1())
    a[17] = snd.B
    with pytest.raises(ProtocolError, match="A_l equals B") as e:
        snd.step3(a)
    assert e.value.culprits == (2,)


@pytest.mark.parametrize("col", [0, 1, KAPPA - 1])
def test_a_wrong_verification_response_is_refused_naming_the_receiver(col: int) -> None:
    snd = VsotSender(CTX, receiver=2)
    rcv = VsotReceiver(CTX, OMEGA, sender=1)
    responses = rcv.step4(snd.step3(rcv.step2(*snd.step1())))
    responses[col] = _xor(responses[col], b"\x00" * 31 + b"\x01")
    with pytest.raises(ProtocolError, match=f"receiver's response {col} does not verify") as e:
        snd.step5(responses)
    assert e.value.culprits == (2,)


def test_a_receiver_that_learned_both_pads_cannot_answer_for_the_other_bit() -> None:
    """Answering H(H(rho)) unmasked for a column whose choice is 1 fails the sender's check."""
    snd = VsotSender(CTX, receiver=2)
    rcv = VsotReceiver(CTX, 1, sender=1)  # column 0 chose 1
    xis = snd.step3(rcv.step2(*snd.step1()))
    responses = rcv.step4(xis)
    responses[0] = h(b"VSOT H", h(b"VSOT H", rcv.output()[0]))  # unmasked
    with pytest.raises(ProtocolError, match="response 0 does not verify"):
        snd.step5(responses)


@pytest.mark.parametrize(
    ("col", "which"), [(0, "chosen"), (0, "other"), (3, "chosen"), (5, "other")]
)
def test_a_wrong_opening_is_refused_naming_the_sender(col: int, which: str) -> None:
    """The opening of the chosen pad must match ours; the other must hash to xi_l with it."""
    snd = VsotSender(CTX, receiver=2)
    rcv = VsotReceiver(CTX, OMEGA, sender=1)
    openings = snd.step5(rcv.step4(snd.step3(rcv.step2(*snd.step1()))))
    o0, o1 = openings[col]
    bit = OMEGA >> col & 1
    flip = secrets.token_bytes(32)
    if (which == "chosen") == bool(bit):
        o1 = flip
    else:
        o0 = flip
    openings[col] = (o0, o1)
    with pytest.raises(ProtocolError, match=f"sender's opening {col} does not verify") as e:
        rcv.step6(openings)
    assert e.value.culprits == (1,)
