"""Base OT: Verified Simplest OT (VSOT), DKLs18 (ePrint 2018/499) Protocol 7, as used by DKLs19/23.

DKLs18 Protocol 7 (Appendix A in the July 2023 revision) is Chou-Orlandi "Simplest OT"
(ePrint 2015/267) plus a verification phase. We run its random-OT part only: the paper's last
steps encrypt chosen messages, which base OTs for an OT extension do not need (public
implementations call the random-OT part "steps 1 to 8" and the encryption "steps 9 and 10").

One VSOT instance produces ``KAPPA`` random 1-of-2 OTs between a *sender* (who learns both
pads ``rho0_l, rho1_l``) and a *receiver* (who chooses bits ``omega_l`` and learns
``rho_{omega_l}``). It is run once per ordered pair of parties at key setup; the OT
extension then reuses its output for every signature (DKLs23 section 5: the base OTs are "a
fast one-time setup").

Our five messages (the paper's step numbers are not repeated here; each message is named by
what it does in Protocol 7):

1. Sender: ``b`` random, ``B = b*G``, Schnorr proof of knowledge of ``b`` (the paper's
   F_ZK^RDL, made non-interactive with Fiat-Shamir bound to the context).
2. Receiver: verifies the proof; for each ``l``: ``a_l`` random, ``A_l = a_l*G + omega_l*B``,
   ``rho_l = H(l, a_l*B)``.
3. Sender: ``rho0_l = H(l, b*A_l)``, ``rho1_l = H(l, b*(A_l - B))``; challenge
   ``xi_l = H(H(rho0_l)) xor H(H(rho1_l))`` (start of the verification phase).
4. Receiver: response ``rho'_l = H(H(rho_l)) xor omega_l*xi_l``.
5. Sender: aborts unless ``rho'_l == H(H(rho0_l))``; opens ``(H(rho0_l), H(rho1_l))``.
6. Receiver (local): aborts unless ``H(rho_l)`` equals the opened value for ``omega_l`` and
   the openings hash to ``xi_l``.

The verification (3-6) is what makes the simplest OT simulatable against a malicious
receiver/sender in the sense DKLs18 needs. Every hash is bound to a context (session id,
sender, receiver) and to the index ``l``, so one sender key ``B`` serves all ``KAPPA``
transfers and nothing replays across sessions or pairs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from mpc.dkls23.params import GROUP, KAPPA, Q, h
from mpc.errors import ProtocolError
from mpc.groups import Point

_G = GROUP
Rng = Callable[[int], bytes]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(32, "big")


def _pad(ctx: bytes, col: int, p: Point) -> bytes:
    return h(b"VSOT pad", ctx, col, p.encode())


def _hh(x: bytes) -> bytes:
    return h(b"VSOT H", x)


# -- step 1 ------------------------------------------------------------------------------


class VsotSender:
    """The sender side of one VSOT instance (DKLs18 Protocol 7, random-OT part)."""

    def __init__(self, ctx: bytes, *, receiver: int, rng: Rng = secrets.token_bytes) -> None:
        self.ctx = ctx
        self.receiver = receiver
        self._rng = rng
        self._b = _G.random_scalar(rng)
        self.B = _G.base_mul(self._b)
        self._rho0: list[bytes] = []
        self._rho1: list[bytes] = []

    def step1(self) -> tuple[Point, Point, int]:
        """Message 1 (Protocol 7, sender's key): ``B`` and a Schnorr PoK ``(T, z)`` of ``b``."""
        k = _G.random_scalar(self._rng)
        T = _G.base_mul(k)
        e = int.from_bytes(h(b"VSOT dlog proof", self.ctx, self.B.encode(), T.encode()), "big") % Q
        return self.B, T, (k + e * self._b) % Q

    def step3(self, A: Sequence[Point]) -> list[bytes]:
        """Message 3 (Protocol 7, pads and verification challenge): both pads, ``xi_l``."""
        bB = self.B * self._b
        xis = []
        for col, a_l in enumerate(A):
            if a_l == self.B:  # A_l - B would be the identity: refuse (no pad from the identity)
                raise ProtocolError("VSOT: A_l equals B", culprits=(self.receiver,))
            bA = a_l * self._b
            r0 = _pad(self.ctx, col, bA)
            r1 = _pad(self.ctx, col, bA - bB)
            self._rho0.append(r0)
            self._rho1.append(r1)
            xis.append(_xor(_hh(_hh(r0)), _hh(_hh(r1))))
        self._b = 0
        return xis

    def step5(self, responses: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """Message 5 (Protocol 7, verification): check, open ``(H(rho0_l), H(rho1_l))``."""
        for col, resp in enumerate(responses):
            if not secrets.compare_digest(resp, _hh(_hh(self._rho0[col]))):
                raise ProtocolError(
                    f"VSOT: receiver's response {col} does not verify", culprits=(self.receiver,)
                )
        return [(_hh(r0), _hh(r1)) for r0, r1 in zip(self._rho0, self._rho1, strict=True)]

    def output(self) -> tuple[list[bytes], list[bytes]]:
        """The sender's pads ``(rho0, rho1)``: the OT-extension receiver's seeds ``k0, k1``."""
        return self._rho0, self._rho1


class VsotReceiver:
    """The receiver side of one VSOT instance (DKLs18 Protocol 7) with choice bits ``omega``."""

    def __init__(
        self, ctx: bytes, omega: int, *, sender: int, rng: Rng = secrets.token_bytes
    ) -> None:
        self.ctx = ctx
        self.sender = sender
        self._rng = rng
        self.omega = omega
        self._rho: list[bytes] = []
        self._xi: list[bytes] = []

    def step2(self, B: Point, T: Point, z: int) -> list[Point]:
        """Message 2 (Protocol 7, receiver's choice): check PoK; ``A_l = a_l*G + omega_l*B``."""
        e = int.from_bytes(h(b"VSOT dlog proof", self.ctx, B.encode(), T.encode()), "big") % Q
        if _G.base_mul(z) != T + B * e:
            raise ProtocolError(
                "VSOT: proof of knowledge of the sender's secret fails", culprits=(self.sender,)
            )
        out = []
        for col in range(KAPPA):
            a = _G.random_scalar(self._rng)
            A = _G.base_mul(a)
            if self.omega >> col & 1:
                A = A + B
            self._rho.append(_pad(self.ctx, col, B * a))
            out.append(A)
        return out

    def step4(self, xis: Sequence[bytes]) -> list[bytes]:
        """Message 4 (Protocol 7, verification response): ``H(H(rho_l)) xor omega_l * xi_l``."""
        self._xi = list(xis)
        out = []
        for col, xi in enumerate(xis):
            hh = _hh(_hh(self._rho[col]))
            out.append(_xor(hh, xi) if self.omega >> col & 1 else hh)
        return out

    def step6(self, openings: Sequence[tuple[bytes, bytes]]) -> None:
        """Protocol 7, receiver's final verification: openings against our pad and ``xi_l``."""
        for col, (o0, o1) in enumerate(openings):
            mine = o1 if self.omega >> col & 1 else o0
            if not secrets.compare_digest(mine, _hh(self._rho[col])) or not secrets.compare_digest(
                _xor(_hh(o0), _hh(o1)), self._xi[col]
            ):
                raise ProtocolError(
                    f"VSOT: sender's opening {col} does not verify", culprits=(self.sender,)
                )

    def output(self) -> list[bytes]:
        """The receiver's pads ``rho_{omega_l}``: the OT-extension sender's seeds ``k_Delta``."""
        return self._rho
