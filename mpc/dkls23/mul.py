"""Two-party multiplication (F_RVOLE) over OT extension, as DKLs23 uses it.

* F_RVOLE is DKLs23 (ePrint 2023/765) Functionality 3.5; its protocol is DKLs23 Protocol 5.2,
  which is DKLs19 (ePrint 2019/523) Protocol 1 in the "forced reuse" form (Bob's single
  random input serves Alice's whole input vector) over the OT extension made one message
  by Fiat-Shamir (DKLs23 section 5.1).
* OT extension: SoftSpokenOT (Roy, ePrint 2022/192) with ``k = 1``, which has the IKNP/KOS
  shape, described in the notation of KOS15 (ePrint 2015/546) Fig. 10 (the figure of the
  corrected KOS15 with the SoftSpokenOT-proved check). The step labels used below (Ext.1-4,
  Check.1-3, T&R.1-3, Derand.1-2) are our names for the steps of Fig. 10's phases "Extend",
  "Consistency Check" and "Transpose and Randomize", and of the derandomisation that turns
  random OTs into correlated ones (Masny-Rindal, ePrint 2019/706; DKLs18 Protocol 9,
  "Transfer"). ``*`` marks a step replaced by Fiat-Shamir. Roles: Bob (the multiplication's
  receiver) is the OT-extension receiver and was the *sender* of the base OTs; Alice holds
  ``Delta`` (her base-OT choice bits) and ``k_{Delta_l}``.
* Multiplication: Bob's input ``chi = <g, x>`` is random (his choice bits dotted with the
  public gadget vector ``g``), Alice's input is the vector ``a = (a_1, a_2)``; outputs ``c``
  (Alice) and ``d`` (Bob) with ``c_i + d_i = chi * a_i``. The correlated OTs carry
  ``(a_1, a_2, a_hat_1, a_hat_2)``, where ``a_hat`` is Alice's random check pad (DKLs19
  Protocol 1 step 2). Alice's input is known when she acts, so she correlates it directly
  instead of a random pad ``a_tilde`` followed by the adjustment ``gamma_A = a - a_tilde``
  (DKLs19 Protocol 1 steps 7-8 with ``gamma_A = 0``).

Message flow (fits DKLs23's rounds 1-3):

* round 1, Bob -> Alice: ``nonce, u, x_dot, t_dot`` (extension + check, Fiat-Shamir);
* round 2, Alice -> Bob: ``tau`` (derandomisation), ``mu`` and ``r_hash`` (DKLs19
  Protocol 1 step 5; only a hash of ``r`` is sent, as DKLs23 section 5.1 suggests);
* round 3, Bob: verifies the check (DKLs19 Protocol 1 step 6) and outputs ``d``.

Why by hand: no maintained Python library offers OT extension or OT-based multiplication;
the bit matrices are Python ints (see :mod:`mpc.dkls23._bits`), hashing is hashlib.
Nothing here reuses a (session, pair, nonce): every column PRG and every hash is bound to
the session id, Alice's and Bob's identifiers and a fresh nonce chosen by Bob.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from mpc.dkls23 import _bits, _zq
from mpc.dkls23.params import COL_BYTES, ELL, ETA, GADGET, KAPPA, WIDTH, XI, Q, h, h_scalars
from mpc.errors import DecodeError, ProtocolError
from mpc.wire import raw, scalars

_J: Final = [j.to_bytes(2, "big") for j in range(XI)]
_NCHUNK: Final = XI // _bits.SIGMA  # chunks that the check hash weights with chi_c
_TAU_BYTES: Final = XI * WIDTH * 32
Rng = Callable[[int], bytes]


@dataclass(frozen=True)
class BobSeeds:
    """Seeds of the OT-extension receiver against one peer: both base-OT pads per column."""

    k0: bytes = field(repr=False)  # KAPPA * 32 bytes
    k1: bytes = field(repr=False)


@dataclass(frozen=True)
class AliceSeeds:
    """Seeds of the OT-extension sender against one peer: ``Delta`` and ``k_{Delta_l}``."""

    delta: int = field(repr=False)  # KAPPA bits; bit col = Delta_l
    kd: bytes = field(repr=False)  # KAPPA * 32 bytes


@dataclass(frozen=True)
class OteExtension:
    """Bob -> Alice (DKLs23 Protocol 3.6 round 1): KOS15 Fig. 10 Ext.3 and Check.2.

    Bob's fresh ``nonce`` (binds every hash of this multiplication), the extension matrix
    ``u`` (KAPPA columns of ETA bits) and the consistency-check hashes ``x_dot``, ``t_dot``.
    """

    nonce: bytes = raw(32)
    u: bytes = raw(COL_BYTES * KAPPA)
    x_dot: bytes = raw(16)
    t_dot: bytes = raw(16 * KAPPA)


@dataclass(frozen=True)
class MulReply:
    """Alice -> Bob (round 2): Derand.1 ``tau`` and DKLs19 Protocol 1 step 5 ``mu``, ``H(r)``.

    ``tau`` is XI * WIDTH scalars (32 bytes each, big-endian, each checked canonical by
    :meth:`MulBob.round3`); ``mu`` has ELL canonical scalars.
    """

    tau: bytes = raw(_TAU_BYTES)
    mu: tuple[int, ...] = scalars(ELL, allow_zero=True)
    r_hash: bytes = raw(32)


def _ctx(sid: bytes, alice: int, bob: int, nonce: bytes) -> bytes:
    return h(b"DKLs23 OTE context", sid, alice, bob, nonce)


def _prg_columns(ctx: bytes, seeds: bytes) -> list[bytes]:
    """KOS15 Fig. 10, Extend (Ext.2): each base-OT seed to an ETA-bit column (SHAKE-256 PRG)."""
    sh = hashlib.shake_256
    return [
        sh(ctx + _J[col] + seeds[32 * col : 32 * col + 32]).digest(COL_BYTES)
        for col in range(KAPPA)
    ]


def _check_chis(ctx: bytes, u: bytes) -> list[int]:
    """KOS15 Fig. 10 Check.1*: chi_1..chi_m in GF(2^128) by Fiat-Shamir (DKLs23 section 5.1)."""
    raw = hashlib.shake_256(h(b"DKLs23 OTE check", ctx, u)).digest(16 * _NCHUNK)
    return [int.from_bytes(raw[16 * c : 16 * c + 16], "little") for c in range(_NCHUNK)]


def _mul_chis(ctx: bytes, u: bytes, tau: bytes) -> list[int]:
    """DKLs19 Protocol 1 step 4: ``chi~_i, chi^_i`` by Fiat-Shamir over the transcript."""
    return h_scalars(b"DKLs23 mul check", 2 * ELL, ctx, h(b"u", u), h(b"tau", tau))


class MulBob:
    """Bob's side of one multiplication with Alice ``alice`` (Bob = ``bob``) in session ``sid``."""

    def __init__(
        self, seeds: BobSeeds, sid: bytes, *, alice: int, bob: int, rng: Rng = secrets.token_bytes
    ) -> None:
        self._seeds = seeds
        self.sid, self.alice, self.bob = sid, alice, bob
        self._rng = rng
        self.chi = 0
        self._x = 0
        self._rows = b""
        self._ctx = b""
        self._u = b""

    def round1(self) -> OteExtension:
        """KOS15 Fig. 10 Ext.1-3, Check.1*, Check.2, T&R.1 (in DKLs23 Protocol 3.6 round 1).

        Bob samples ETA random choice bits ``x`` (the last S only mask the check), expands his
        two seeds per column, sends ``u^l = t0^l xor t1^l xor x`` and the check hashes. His
        random F_RVOLE input is ``chi = <g, x[:XI]>`` (DKLs19 Protocol 1 with Bob's input
        random: DKLs23 Protocol 5.2, forced reuse).
        """
        nonce = self._rng(32)
        self._ctx = ctx = _ctx(self.sid, self.alice, self.bob, nonce)
        x = int.from_bytes(self._rng(COL_BYTES), "little")
        self._x = x
        t0 = _prg_columns(ctx, self._seeds.k0)
        t1 = _prg_columns(ctx, self._seeds.k1)
        nb = COL_BYTES * KAPPA
        u_int = (
            int.from_bytes(b"".join(t0), "little")
            ^ int.from_bytes(b"".join(t1), "little")
            ^ _bits.replicate(x, ETA, KAPPA)
        )
        self._u = u = u_int.to_bytes(nb, "little")
        chis = _check_chis(ctx, u)
        x_dot = _bits.check_hash(x.to_bytes(COL_BYTES, "little"), 1, chis)
        t_dot = _bits.check_hash(b"".join(t0), KAPPA, chis)
        self._rows = _bits.columns_to_rows(t0, XI)
        xb = map(int, format(x & ((1 << XI) - 1), f"0{XI}b")[::-1])  # bit j of x, j < XI
        self.chi = sum(itertools.compress(GADGET, xb)) % Q
        return OteExtension(nonce, u, x_dot, t_dot)

    def round3(self, msg: MulReply) -> tuple[int, int]:
        """KOS15 Fig. 10 T&R.2, Derand.2; DKLs19 Protocol 1 steps 6 and 8: check, output ``d``.

        Aborts, blaming Alice, unless for every OT ``j`` and input ``i``:
        ``chi~_i z~_B + chi^_i z^_B + r_{j,i} = x_j mu_i`` (compared through a hash of r).
        """
        a = self.alice
        tau, r_hash = msg.tau, msg.r_hash  # lengths and mu checked by mpc.wire.decode_payload
        ct0, ct1, ch0, ch1 = _mul_chis(self._ctx, self._u, tau)
        mu0, mu1 = msg.mu
        taus = _zq.streams(tau)  # tau_{j,i} as four packed vectors over j (see _zq)
        if not all(_zq.below_q(t) for t in taus):
            raise DecodeError("non-canonical scalar", field="tau", party=a)
        prefix = h(b"DKLs23 OTE hash", self._ctx)
        rows, sh = self._rows, hashlib.shake_256
        # T&R.2: v_{x_j} = H(j, t_j), mapped to WIDTH scalars
        ev = b"".join(
            [sh(prefix + _J[j] + rows[32 * j : 32 * j + 32]).digest(128) for j in range(XI)]
        )
        xm = _zq.slot_mask(self._x)  # slot j all-ones iff x_j
        # Derand.2: z_B = x_j * tau_j - v_{x_j} (canonical mod q)
        zt0, zt1, zh0, zh1 = [
            _zq.reduce((t & xm) + _zq.Q2_REP - v, 258)
            for t, v in zip(taus, _zq.streams(ev), strict=True)
        ]
        # DKLs19 Protocol 1 step 6: r_{j,i} must equal x_j mu_i - chi~_i z~_B - chi^_i z^_B
        xb = xm & _zq.ONES  # slot j holds the bit x_j
        r0 = _zq.reduce(xb * mu0 + _zq.Q_REP - _zq.reduce(zt0 * ct0 + zh0 * ch0, 513), 257)
        r1 = _zq.reduce(xb * mu1 + _zq.Q_REP - _zq.reduce(zt1 * ct1 + zh1 * ch1, 513), 257)
        rbuf = _zq.to_bytes((r0 << 256) | r1)
        # step 8: d_i = <g, z~_B,i>
        d0 = sum(map(operator.mul, GADGET, _zq.unpack(_zq.to_bytes(zt0), 4, 3)))
        d1 = sum(map(operator.mul, GADGET, _zq.unpack(_zq.to_bytes(zt1), 4, 3)))
        if not secrets.compare_digest(h(b"DKLs23 mul r", self._ctx, rbuf), r_hash):
            raise ProtocolError(
                f"multiplication check failed: Alice {a} inconsistent towards Bob {self.bob}",
                culprits=(a,),
                pair=(min(a, self.bob), max(a, self.bob)),
            )
        self._rows = b""
        return d0 % Q, d1 % Q


class MulAlice:
    """Alice's side of one multiplication with Bob ``bob`` in session ``sid``."""

    def __init__(
        self, seeds: AliceSeeds, sid: bytes, *, alice: int, bob: int, rng: Rng = secrets.token_bytes
    ) -> None:
        self._seeds = seeds
        self.sid, self.alice, self.bob = sid, alice, bob
        self._rng = rng

    def round2(self, msg: OteExtension, a: tuple[int, int]) -> tuple[MulReply, tuple[int, int]]:
        """KOS15 Fig. 10 Ext.4, Check.3, T&R.1, T&R.3, Derand.1; DKLs19 Protocol 1 steps 3-5, 8.

        Verifies Bob's extension (blaming Bob), derives ``z_A = H(q_j)`` and sends
        ``tau_j = H(q_j xor Delta) - z_A + (a_1, a_2, a_hat_1, a_hat_2)``, the check values
        ``mu_i = chi~_i a_i + chi^_i a_hat_i`` and a hash of
        ``r_{j,i} = chi~_i z~_A + chi^_i z^_A``.
        Returns the payload for Bob and Alice's output ``c = sum_j g_j z~_A``.
        """
        b = self.bob
        nonce, u, t_dot = msg.nonce, msg.u, msg.t_dot  # lengths checked by decode_payload
        x_dot = int.from_bytes(msg.x_dot, "little")
        ctx = _ctx(self.sid, self.alice, b, nonce)
        delta = self._seeds.delta
        # Ext.4: q^l = t^l_{Delta_l} xor Delta_l * u^l
        col_mask = _bits.bit_slot_mask(delta, ETA, KAPPA)
        q_int = int.from_bytes(b"".join(_prg_columns(ctx, self._seeds.kd)), "little") ^ (
            int.from_bytes(u, "little") & col_mask
        )
        qb = q_int.to_bytes(COL_BYTES * KAPPA, "little")
        qcols = [qb[COL_BYTES * col : COL_BYTES * (col + 1)] for col in range(KAPPA)]
        # Check.3: q_dot^l == t_dot^l + Delta_l * x_dot for every column l
        chis = _check_chis(ctx, u)
        expect = int.from_bytes(t_dot, "little") ^ (
            _bits.replicate(x_dot, 128, KAPPA) & _bits.bit_slot_mask(delta, 128, KAPPA)
        )
        q_dot = _bits.check_hash(qb, KAPPA, chis)
        if not secrets.compare_digest(q_dot, expect.to_bytes(16 * KAPPA, "little")):
            raise ProtocolError(
                f"OT-extension consistency check failed: Bob {b} towards Alice {self.alice}",
                culprits=(b,),
                pair=(min(b, self.alice), max(b, self.alice)),
            )
        rows0 = _bits.columns_to_rows(qcols, XI)
        rows1 = (int.from_bytes(rows0, "little") ^ _bits.replicate(delta, KAPPA, XI)).to_bytes(
            len(rows0), "little"
        )
        prefix = h(b"DKLs23 OTE hash", ctx)
        # uniform in Z_q up to a bias below 2^-256 (64 bytes reduced mod q)
        a_hat = tuple(int.from_bytes(self._rng(64), "big") % Q for _ in range(2))
        al0, al1, al2, al3 = a[0] % Q, a[1] % Q, a_hat[0], a_hat[1]
        sh = hashlib.shake_256
        # T&R.3: v_0 = H(j, q_j), v_1 = H(j, q_j xor Delta), each mapped to WIDTH scalars
        e0 = b"".join(
            [sh(prefix + _J[j] + rows0[32 * j : 32 * j + 32]).digest(128) for j in range(XI)]
        )
        e1 = b"".join(
            [sh(prefix + _J[j] + rows1[32 * j : 32 * j + 32]).digest(128) for j in range(XI)]
        )
        v0s = _zq.streams(e0)  # z_A: (z~_1, z~_2, z^_1, z^_2) as packed vectors over j
        # Derand.1: z_A = v_0, tau = v_1 - v_0 + alpha (canonical mod q)
        tau = _zq.join(
            [
                _zq.reduce(v1 + _zq.rep(al + 2 * Q) - v0, 258)
                for v0, v1, al in zip(v0s, _zq.streams(e1), (al0, al1, al2, al3), strict=True)
            ]
        )
        # step 8: c_i = <g, z~_A,i>
        c0 = sum(map(operator.mul, GADGET, _zq.unpack(e0, WIDTH, 0)))
        c1 = sum(map(operator.mul, GADGET, _zq.unpack(e0, WIDTH, 1)))
        ct0, ct1, ch0, ch1 = _mul_chis(ctx, u, tau)
        # step 5: r_{j,i} = chi~_i z~_A + chi^_i z^_A
        zt0, zt1, zh0, zh1 = v0s
        r0 = _zq.reduce(zt0 * ct0 + zh0 * ch0, 513)
        r1 = _zq.reduce(zt1 * ct1 + zh1 * ch1, 513)
        rbuf = _zq.to_bytes((r0 << 256) | r1)
        mu = ((ct0 * al0 + ch0 * al2) % Q, (ct1 * al1 + ch1 * al3) % Q)
        out = MulReply(tau, mu, h(b"DKLs23 mul r", ctx, rbuf))
        return out, (c0 % Q, c1 % Q)
