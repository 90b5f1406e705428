"""Two-party multiplication (F_RVOLE) over OT extension, as DKLs23 uses it.

* OT extension: SoftSpokenOT (Roy, ePrint 2022/192) with ``k = 1``, which is the IKNP/KOS15
  structure (ePrint 2015/546, Fig. 7 / Fig. 10 notation), with the SoftSpokenOT/KOS
  consistency check over GF(2^128) and Fiat-Shamir as in DKLs23 section 5.1. Roles: Bob (the
  multiplication's receiver) is the OT-extension receiver and was the *sender* of the base
  OTs; Alice holds ``Delta`` (her base-OT choice bits) and ``k_{Delta_l}``.
* Multiplication: DKLs19 (ePrint 2019/523) Protocol 1 in the "forced reuse" form of DKLs23
  section 5 / Functionality 3.5 (F_RVOLE): Bob's input ``chi`` is random (his choice bits
  dotted with the public gadget vector), Alice's input is the vector ``a = (a_1, a_2)``;
  outputs ``c`` (Alice) and ``d`` (Bob) with ``c_i + d_i = chi * a_i``. The correlated OTs
  carry ``(a_1, a_2, a_hat_1, a_hat_2)``, where ``a_hat`` is Alice's random check pad.

Message flow (fits DKLs23's rounds 1-3):

* round 1, Bob -> Alice: ``nonce, u, x_dot, t_dot`` (extension + check, Fiat-Shamir);
* round 2, Alice -> Bob: ``tau`` (derandomisation), ``mu`` and ``r_hash`` (multiplication check);
* round 3, Bob: verifies the check and outputs ``d``.

Why by hand: no maintained Python library offers OT extension or OT-based multiplication;
the bit matrices are Python ints (see :mod:`mpc.dkls23._bits`), hashing is hashlib.
Nothing here reuses a (session, pair, nonce): every column PRG and every hash is bound to
the session id, Alice's and Bob's identifiers and a fresh nonce chosen by Bob.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mpc.dkls23 import _bits
from mpc.dkls23.params import COL_BYTES, ELL, ETA, GADGET, KAPPA, Q, WIDTH, XI, h, h_scalars
from mpc.errors import DecodeError, ProtocolError
from mpc.wire import take_bytes, take_list

_J: Final = [j.to_bytes(2, "big") for j in range(XI)]
_NCHUNK: Final = XI // _bits.SIGMA  # chunks that the check hash weights with chi_c
_SEED_BYTES: Final = 32 * KAPPA
_TAU_BYTES: Final = XI * WIDTH * 32


@dataclass(frozen=True)
class BobSeeds:
    """Seeds of the OT-extension receiver against one peer: both base-OT pads per column."""

    k0: bytes = field(repr=False)  # KAPPA * 32 bytes
    k1: bytes = field(repr=False)


@dataclass(frozen=True)
class AliceSeeds:
    """Seeds of the OT-extension sender against one peer: ``Delta`` and ``k_{Delta_l}``."""

    delta: int = field(repr=False)  # KAPPA bits; bit l = Delta_l
    kd: bytes = field(repr=False)  # KAPPA * 32 bytes


def _ctx(sid: bytes, alice: int, bob: int, nonce: bytes) -> bytes:
    return h(b"DKLs23 OTE context", sid, alice, bob, nonce)


def _prg_columns(ctx: bytes, seeds: bytes) -> list[bytes]:
    """KOS15 "Ext.2": expand each base-OT seed to an ETA-bit column (SHAKE-256 as the PRG)."""
    return [
        hashlib.shake_256(ctx + l.to_bytes(2, "big") + seeds[32 * l : 32 * l + 32]).digest(COL_BYTES)
        for l in range(KAPPA)
    ]


def _check_chis(ctx: bytes, u: bytes) -> list[int]:
    """Fiat-Shamir challenges chi_1..chi_m in GF(2^128) (DKLs23 section 5.1)."""
    raw = hashlib.shake_256(h(b"DKLs23 OTE check", ctx, u)).digest(16 * _NCHUNK)
    return [int.from_bytes(raw[16 * c : 16 * c + 16], "little") for c in range(_NCHUNK)]


def _mul_chis(ctx: bytes, u: bytes, tau: bytes) -> list[int]:
    """DKLs19 Protocol 1 step 4: chi_tilde_i, chi_hat_i from the transcript (Fiat-Shamir)."""
    return h_scalars(b"DKLs23 mul check", 2 * ELL, ctx, h(b"u", u), h(b"tau", tau))


class MulBob:
    """Bob's side of one multiplication with Alice ``alice`` (Bob = ``bob``) in session ``sid``."""

    def __init__(self, seeds: BobSeeds, sid: bytes, *, alice: int, bob: int) -> None:
        self._seeds = seeds
        self.sid, self.alice, self.bob = sid, alice, bob
        self.chi = 0
        self._x = 0
        self._rows = b""
        self._ctx = b""
        self._u = b""

    def round1(self) -> dict[str, Any]:
        """KOS15 Ext.1-Ext.3 and the check (Check.1* by Fiat-Shamir, Check.2), DKLs23 round 1.

        Bob samples ETA random choice bits ``x`` (the last S only mask the check), expands his
        two seeds per column, sends ``u^l = t0^l xor t1^l xor x`` and the check hashes. His
        random F_RVOLE input is ``chi = <g, x[:XI]>`` (DKLs23 section 5, forced reuse).
        """
        nonce = secrets.token_bytes(32)
        self._ctx = ctx = _ctx(self.sid, self.alice, self.bob, nonce)
        x = int.from_bytes(secrets.token_bytes(COL_BYTES), "little")
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
        x_dot = _bits.chunk_hash([x.to_bytes(COL_BYTES, "little")], chis) & ((1 << 128) - 1)
        t_dot = _bits.packed_to_bytes(_bits.chunk_hash(t0, chis), KAPPA)
        self._rows = _bits.columns_to_rows(t0, XI)
        g = GADGET
        self.chi = sum(g[j] for j in range(XI) if x >> j & 1) % Q
        return {"nonce": nonce, "u": u, "x_dot": x_dot.to_bytes(16, "little"), "t_dot": t_dot}

    def round3(self, payload: Mapping[str, Any]) -> tuple[int, int]:
        """Derandomise (KOS15 T&R / MR19), run the DKLs19 Protocol 1 check, output ``d``.

        Aborts, blaming Alice, unless for every OT ``j`` and input ``i``:
        ``chi~_i z~_B + chi^_i z^_B + r_{j,i} = x_j mu_i`` (compared through a hash of r).
        """
        a = self.alice
        tau = take_bytes(payload, "tau", a, length=_TAU_BYTES)
        mu_raw = take_list(payload, "mu", a, length=ELL)
        r_hash = take_bytes(payload, "r_hash", a, length=32)
        mu = []
        for m in mu_raw:
            if not isinstance(m, bytes) or len(m) != 32 or int.from_bytes(m, "big") >= Q:
                raise DecodeError("expected a canonical 32-byte scalar", field="mu", party=a)
            mu.append(int.from_bytes(m, "big"))
        ct, ch = _mul_chis(self._ctx, self._u, tau)[:ELL], _mul_chis(self._ctx, self._u, tau)[ELL:]
        prefix = h(b"DKLs23 OTE hash", self._ctx)
        rows, x, g = self._rows, self._x, GADGET
        d0 = d1 = 0
        rbuf = []
        ct0, ct1, ch0, ch1, mu0, mu1 = ct[0], ct[1], ch[0], ch[1], mu[0], mu[1]
        frm = int.from_bytes
        for j in range(XI):
            v = hashlib.shake_256(prefix + _J[j] + rows[32 * j : 32 * j + 32]).digest(128)
            o = 128 * j
            t = tau[o : o + 128]
            tk = (frm(t[0:32], "big"), frm(t[32:64], "big"), frm(t[64:96], "big"), frm(t[96:128], "big"))
            if tk[0] >= Q or tk[1] >= Q or tk[2] >= Q or tk[3] >= Q:
                raise DecodeError("non-canonical scalar", field="tau", party=a)
            v0, v1, v2, v3 = (frm(v[0:32], "big"), frm(v[32:64], "big"), frm(v[64:96], "big"), frm(v[96:128], "big"))
            if x >> j & 1:
                z0, z1, z2, z3 = tk[0] - v0, tk[1] - v1, tk[2] - v2, tk[3] - v3
                r0 = (mu0 - ct0 * z0 - ch0 * z2) % Q
                r1 = (mu1 - ct1 * z1 - ch1 * z3) % Q
            else:
                z0, z1, z2, z3 = -v0, -v1, -v2, -v3
                r0 = (-ct0 * z0 - ch0 * z2) % Q
                r1 = (-ct1 * z1 - ch1 * z3) % Q
            rbuf.append(r0.to_bytes(32, "big") + r1.to_bytes(32, "big"))
            d0 += g[j] * z0
            d1 += g[j] * z1
        if not secrets.compare_digest(h(b"DKLs23 mul r", self._ctx, b"".join(rbuf)), r_hash):
            raise ProtocolError(
                f"multiplication check failed: Alice {a} sent inconsistent values to Bob {self.bob}",
                culprits=(a,),
                pair=(min(a, self.bob), max(a, self.bob)),
            )
        self._rows = b""
        return d0 % Q, d1 % Q


class MulAlice:
    """Alice's side of one multiplication with Bob ``bob`` in session ``sid``."""

    def __init__(self, seeds: AliceSeeds, sid: bytes, *, alice: int, bob: int) -> None:
        self._seeds = seeds
        self.sid, self.alice, self.bob = sid, alice, bob

    def round2(self, payload: Mapping[str, Any], a: tuple[int, int]) -> tuple[dict[str, Any], tuple[int, int]]:
        """Alice's round: KOS15 Ext.4 and Check.3, T&R.3, Derand.1; DKLs19 Protocol 1 steps 3-5.

        Verifies Bob's extension (blaming Bob), derives ``z_A = H(q_j)`` and sends
        ``tau_j = H(q_j xor Delta) - z_A + (a_1, a_2, a_hat_1, a_hat_2)``, the check values
        ``mu_i = chi~_i a_i + chi^_i a_hat_i`` and a hash of ``r_{j,i} = chi~_i z~_A + chi^_i z^_A``.
        Returns the payload for Bob and Alice's output ``c = sum_j g_j z~_A``.
        """
        b = self.bob
        nonce = take_bytes(payload, "nonce", b, length=32)
        u = take_bytes(payload, "u", b, length=COL_BYTES * KAPPA)
        x_dot = int.from_bytes(take_bytes(payload, "x_dot", b, length=16), "little")
        t_dot = take_bytes(payload, "t_dot", b, length=16 * KAPPA)
        ctx = _ctx(self.sid, self.alice, b, nonce)
        delta = self._seeds.delta
        # Ext.4: q^l = t^l_{Delta_l} xor Delta_l * u^l
        col_mask = 0
        full = (1 << ETA) - 1
        for l in range(KAPPA):
            if delta >> l & 1:
                col_mask |= full << (ETA * l)
        q_int = int.from_bytes(b"".join(_prg_columns(ctx, self._seeds.kd)), "little") ^ (
            int.from_bytes(u, "little") & col_mask
        )
        qb = q_int.to_bytes(COL_BYTES * KAPPA, "little")
        qcols = [qb[COL_BYTES * l : COL_BYTES * (l + 1)] for l in range(KAPPA)]
        # Check.3: q_dot^l == t_dot^l + Delta_l * x_dot for every column l
        chis = _check_chis(ctx, u)
        expect = _bits.bytes_to_packed(t_dot, KAPPA) ^ (
            _bits.spread(x_dot) & _bits.slot_mask(delta, KAPPA)
        )
        if _bits.chunk_hash(qcols, chis) != expect:
            raise ProtocolError(
                f"OT-extension consistency check failed: Bob {b} is inconsistent with Alice {self.alice}",
                culprits=(b,),
                pair=(min(b, self.alice), max(b, self.alice)),
            )
        rows0 = _bits.columns_to_rows(qcols, XI)
        rows1 = (
            int.from_bytes(rows0, "little") ^ _bits.replicate(delta, KAPPA, XI)
        ).to_bytes(len(rows0), "little")
        prefix = h(b"DKLs23 OTE hash", ctx)
        a_hat = (secrets.randbelow(Q), secrets.randbelow(Q))
        al0, al1, al2, al3 = a[0] % Q, a[1] % Q, a_hat[0], a_hat[1]
        g = GADGET
        frm = int.from_bytes
        taus = []
        z = []
        c0 = c1 = 0
        for j in range(XI):
            pj = prefix + _J[j]
            e0 = hashlib.shake_256(pj + rows0[32 * j : 32 * j + 32]).digest(128)
            e1 = hashlib.shake_256(pj + rows1[32 * j : 32 * j + 32]).digest(128)
            v0, v1, v2, v3 = (frm(e0[0:32], "big"), frm(e0[32:64], "big"), frm(e0[64:96], "big"), frm(e0[96:128], "big"))
            taus.append(
                ((frm(e1[0:32], "big") - v0 + al0) % Q).to_bytes(32, "big")
                + ((frm(e1[32:64], "big") - v1 + al1) % Q).to_bytes(32, "big")
                + ((frm(e1[64:96], "big") - v2 + al2) % Q).to_bytes(32, "big")
                + ((frm(e1[96:128], "big") - v3 + al3) % Q).to_bytes(32, "big")
            )
            z.append((v0, v1, v2, v3))
            c0 += g[j] * v0
            c1 += g[j] * v1
        tau = b"".join(taus)
        mc = _mul_chis(ctx, u, tau)
        ct0, ct1, ch0, ch1 = mc[0], mc[1], mc[2], mc[3]
        rbuf = b"".join(
            ((ct0 * v0 + ch0 * v2) % Q).to_bytes(32, "big") + ((ct1 * v1 + ch1 * v3) % Q).to_bytes(32, "big")
            for v0, v1, v2, v3 in z
        )
        mu = [((ct0 * al0 + ch0 * al2) % Q).to_bytes(32, "big"), ((ct1 * al1 + ch1 * al3) % Q).to_bytes(32, "big")]
        out = {"tau": tau, "mu": mu, "r_hash": h(b"DKLs23 mul r", ctx, rbuf)}
        return out, (c0 % Q, c1 % Q)
