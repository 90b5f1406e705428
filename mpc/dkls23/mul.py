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

* round 1, Bob -> Alice: ``rho, u, x_dot, t_dot`` (his contribution, extension + check,
  Fiat-Shamir); Alice's contribution ``rho_A`` reaches Bob by round 2 at the latest (in the
  presignature it travels in Alice's own round-1 message);
* round 2, Alice -> Bob: ``tau`` (derandomisation), ``mu`` and ``r_hash`` (DKLs19
  Protocol 1 step 5; only a hash of ``r`` is sent, as DKLs23 section 5.1 suggests);
* round 3, Bob: verifies the check (DKLs19 Protocol 1 step 6) and outputs ``d``.

Fresh context from both parties (issue 9, item 3). Each party of a pair contributes 32
fresh random bytes ``rho`` per run (in the presignature: one ``rho_i`` per party and session,
sent in its round-1 message to every peer; see :mod:`mpc.dkls23.sign`). Three contexts:

* ``ext_ctx = H(context, alice, bob, rho_B)``: KOS15 Fig. 10 Ext.2 (column PRG) and
  Check.1* (the Fiat-Shamir challenges ``chi_c``). Bob computes both in round 1, before any
  message of Alice can reach him, so only *his* contribution can be bound here;
* ``pair_ctx = H(context, both ids, rho_i, rho_j)`` (:func:`pair_context`, symmetric) and
  ``mul_ctx = H(pair_ctx, alice, bob)``: everything after round 1, i.e. the random-oracle
  hash of T&R.2/T&R.3 that turns rows into pads (the hash whose inputs Alice's secrets
  depend on), Derand.1-2, DKLs19 Protocol 1 step 4 (``chi~, chi^``) and the hash of ``r``
  (step 5/6);
* ``context`` is the caller's session context (for the presignature: session id, key id and
  signer set).

Why both contributions, and why this split. The attack of issue 9: if ``mul_ctx`` repeats
(the old code bound it to the session id and a nonce chosen by Bob *alone*, so a malicious
Bob could repeat it whenever Alice accepted a session id twice, e.g. after her database was
restored), Bob runs the extension twice from the same seeds with complementary choice bits
``x' = not x``. Then Alice's pads swap: ``v_0' = v_1`` and ``v_1' = v_0`` (T&R.3), so
``tau + tau' = alpha + alpha'`` and the key-share component (equal in both runs) comes out
as ``(tau_{j,2} + tau'_{j,2}) / 2 = sk_i``. The pads are the outputs of the row hash of
T&R.3, which KOS15 Fig. 10 treats as a random oracle; it protects the sender only while her
``(tweak, row)`` queries never repeat across runs with the same ``Delta`` (the tweakable
correlation robustness of Guo, Katz, Wang, Yu, ePrint 2019/074, that base-OT reuse needs). Binding
Alice's fresh ``rho_A`` into ``mul_ctx`` makes her tweaks unique whatever the session id or
Bob does, so the pads of two runs are independent random-oracle outputs. Each party's
secrets are protected by its *own* randomness: Alice's input ``alpha`` by ``rho_A`` (pads);
Bob's choice bits ``x`` by the PRG output of the seeds Alice lacks, under ``ext_ctx`` with
his own ``rho_B``. Binding ``rho_A`` into ``ext_ctx`` as well would protect nobody (Bob knows
both PRG seeds of every column, so the PRG context hides nothing from him) and would cost an
extra message round before the extension; public DKLs23 implementations agree a joint session
id in a message of its own first, we keep DKLs23's round count instead. This binding of extra
per-run nonces into the contexts is a departure from the papers, which assume a unique
session id given from outside (the ``sid`` of DKLs23 Functionality 3.5); we do not trust the
session id to be unique, because it comes from storage a restore can roll back.

Why by hand: no maintained Python library offers OT extension or OT-based multiplication;
the bit matrices are Python ints (see :mod:`mpc.dkls23._bits`), hashing is hashlib.
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
from mpc.dkls23.params import COL_BYTES, ELL, ETA, KAPPA, WIDTH, XI, Q, gadget, h, h_scalars
from mpc.errors import DecodeError, ProtocolError, UsageError
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

    Bob's fresh contribution ``rho`` (32 bytes; bound into ``ext_ctx`` and, with Alice's,
    into ``mul_ctx``: see the module docstring), the extension matrix ``u`` (KAPPA columns of
    ETA bits) and the consistency-check hashes ``x_dot``, ``t_dot``.
    """

    rho: bytes = raw(32)
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


#: length of each party's fresh contribution ``rho``
RHO_BYTES: Final = 32


def ext_context(context: bytes, alice: int, bob: int, rho_bob: bytes) -> bytes:
    """``ext_ctx``: KOS15 Fig. 10 Ext.2 (column PRG) and Check.1* (``chi_c``) of one run.

    Bob derives both in round 1, before anything from Alice can reach him, so the fresh part
    is his ``rho_B`` only (module docstring: the PRG hides nothing from Bob, who knows both
    seeds; it hides Bob's ``x`` from Alice, and Bob's own fresh ``rho_B`` is what keeps it
    fresh). Bound to the caller's ``context`` and the direction ``(alice, bob)``.
    """
    return h(b"DKLs23 OTE extension context v2", context, alice, bob, rho_bob)


def pair_context(context: bytes, i: int, j: int, rho_i: bytes, rho_j: bytes) -> bytes:
    """``pair_ctx = H(context, lo, hi, rho_lo, rho_hi)``: both contributions of the pair.

    Symmetric in ``(i, rho_i)``, ``(j, rho_j)``, so both directions of the pair (``i`` as
    Bob and ``i`` as Alice) derive it alike; :func:`mul_context` adds the direction. A
    departure from the papers (which take one unique ``sid``, DKLs23 Functionality 3.5):
    each party's fresh ``rho`` is bound in so that no run can repeat a context even if the
    session id does (module docstring).
    """
    if i == j:
        raise UsageError("a pair needs two parties")
    (lo, r_lo), (hi, r_hi) = sorted(((i, rho_i), (j, rho_j)))
    return h(b"DKLs23 pair context", context, lo, hi, r_lo, r_hi)


def mul_context(pair_ctx: bytes, alice: int, bob: int) -> bytes:
    """``mul_ctx``: T&R.2/3 row hash, Derand, DKLs19 Protocol 1 steps 4-6 of one direction."""
    return h(b"DKLs23 OTE/mul context v2", pair_ctx, alice, bob)


def check_rho(rho: bytes, own: bytes, *, peer: int, me: int) -> None:
    """Refuse a missing, short or reflected contribution, naming the peer who sent it."""
    if not isinstance(rho, bytes) or len(rho) != RHO_BYTES:
        raise DecodeError(f"expected a {RHO_BYTES}-byte contribution", field="rho", party=peer)
    if secrets.compare_digest(rho, own):
        raise ProtocolError(
            f"party {peer} sent party {me}'s own contribution rho back (a replayed context)",
            culprits=(peer,),
            pair=(min(peer, me), max(peer, me)),
        )


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
    """Bob's side of one multiplication with Alice ``alice`` (Bob = ``bob``) in ``context``.

    ``rho`` is Bob's fresh contribution for this run (:data:`RHO_BYTES` random bytes, never
    reused: the caller draws it from its RNG; in a presignature it is the party's one
    ``rho_i`` of the session).
    """

    def __init__(
        self,
        seeds: BobSeeds,
        context: bytes,
        *,
        alice: int,
        bob: int,
        rho: bytes,
        rng: Rng = secrets.token_bytes,
    ) -> None:
        if len(rho) != RHO_BYTES:
            raise UsageError("rho must be RHO_BYTES bytes")
        self._seeds = seeds
        self.context, self.alice, self.bob, self.rho = context, alice, bob, rho
        self._rng = rng
        self.chi = 0
        self._x = 0
        self._rows = b""
        self._mctx = b""
        self._g: tuple[int, ...] = ()
        self._rho_alice = b""
        self._u = b""

    def round1(self) -> OteExtension:
        """KOS15 Fig. 10 Ext.1-3, Check.1*, Check.2, T&R.1 (in DKLs23 Protocol 3.6 round 1).

        Bob samples ETA random choice bits ``x`` (the last S only mask the check), expands his
        two seeds per column, sends ``u^l = t0^l xor t1^l xor x`` and the check hashes. His
        random F_RVOLE input is ``chi = <g, x[:XI]>`` (DKLs19 Protocol 1 with Bob's input
        random: DKLs23 Protocol 5.2, forced reuse). Ext.2 and Check.1* are under
        ``ext_ctx`` (context, direction, Bob's fresh ``rho``); see the module docstring for
        why Alice's contribution cannot and need not enter here.
        """
        ctx = ext_context(self.context, self.alice, self.bob, self.rho)
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
        return OteExtension(self.rho, u, x_dot, t_dot)

    def bind(self, rho_alice: bytes) -> int:
        """Bind Alice's contribution; derive ``mul_ctx``, the gadget ``g`` and ``chi = <g, x>``.

        Called once Alice's ``rho_A`` has arrived (in the presignature: round 2, before
        ``psi = phi - chi`` is sent; :meth:`round3` calls it if the caller did not). The
        gadget is derived from ``mul_ctx``, i.e. from both parties' fresh contributions
        (:func:`mpc.dkls23.params.gadget`; docs/decisions/dkls23-gadget.md). A missing, short
        or reflected ``rho_alice``, or a second, different one, is refused naming Alice.
        """
        a = self.alice
        if self._mctx:
            if not secrets.compare_digest(rho_alice, self._rho_alice):
                raise ProtocolError(
                    f"party {a} gave party {self.bob} two different contributions rho",
                    culprits=(a,),
                    pair=(min(a, self.bob), max(a, self.bob)),
                )
            return self.chi
        if not self._u:
            raise UsageError("MulBob.bind before round1")
        check_rho(rho_alice, self.rho, peer=a, me=self.bob)
        self._rho_alice = rho_alice
        self._mctx = mul_context(
            pair_context(self.context, a, self.bob, rho_alice, self.rho), a, self.bob
        )
        self._g = gadget(self._mctx)
        xb = map(int, format(self._x & ((1 << XI) - 1), f"0{XI}b")[::-1])  # bit j, j < XI
        self.chi = sum(itertools.compress(self._g, xb)) % Q
        return self.chi

    def round3(self, msg: MulReply, *, rho_alice: bytes) -> tuple[int, int]:
        """KOS15 Fig. 10 T&R.2, Derand.2; DKLs19 Protocol 1 steps 6 and 8: check, output ``d``.

        ``rho_alice`` is Alice's contribution for this run: T&R.2 (Bob's pads), the
        challenges of step 4 and the hash of ``r`` are under ``mul_ctx`` bound to both
        contributions (module docstring). A missing, short or reflected ``rho_alice`` is
        refused, naming Alice. Aborts, blaming Alice, unless for every OT ``j`` and input
        ``i``: ``chi~_i z~_B + chi^_i z^_B + r_{j,i} = x_j mu_i`` (compared through a hash
        of r).
        """
        a = self.alice
        self.bind(rho_alice)
        tau, r_hash = msg.tau, msg.r_hash  # lengths and mu checked by mpc.wire.decode_payload
        ct0, ct1, ch0, ch1 = _mul_chis(self._mctx, self._u, tau)
        mu0, mu1 = msg.mu
        taus = _zq.streams(tau)  # tau_{j,i} as four packed vectors over j (see _zq)
        if not all(_zq.below_q(t) for t in taus):
            raise DecodeError("non-canonical scalar", field="tau", party=a)
        prefix = h(b"DKLs23 OTE hash", self._mctx)
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
        # step 8: d_i = <g, z~_B,i> (g derived from mul_ctx, see bind)
        g = self._g
        d0 = sum(map(operator.mul, g, _zq.unpack(_zq.to_bytes(zt0), 4, 3)))
        d1 = sum(map(operator.mul, g, _zq.unpack(_zq.to_bytes(zt1), 4, 3)))
        if not secrets.compare_digest(h(b"DKLs23 mul r", self._mctx, rbuf), r_hash):
            raise ProtocolError(
                f"multiplication check failed: Alice {a} inconsistent towards Bob {self.bob}",
                culprits=(a,),
                pair=(min(a, self.bob), max(a, self.bob)),
            )
        self._rows = b""
        return d0 % Q, d1 % Q


class MulAlice:
    """Alice's side of one multiplication with Bob ``bob`` in ``context``.

    ``rho`` is Alice's fresh contribution for this run (:data:`RHO_BYTES` random bytes from
    her own RNG; Bob must receive it before his round 3). It is what makes her pads fresh.
    """

    def __init__(
        self,
        seeds: AliceSeeds,
        context: bytes,
        *,
        alice: int,
        bob: int,
        rho: bytes,
        rng: Rng = secrets.token_bytes,
    ) -> None:
        if len(rho) != RHO_BYTES:
            raise UsageError("rho must be RHO_BYTES bytes")
        self._seeds = seeds
        self.context, self.alice, self.bob, self.rho = context, alice, bob, rho
        self._rng = rng

    def round2(self, msg: OteExtension, a: tuple[int, int]) -> tuple[MulReply, tuple[int, int]]:
        """KOS15 Fig. 10 Ext.4, Check.3, T&R.1, T&R.3, Derand.1; DKLs19 Protocol 1 steps 3-5, 8.

        Refuses a reflected contribution (Bob's ``rho`` equal to Alice's own), naming Bob.
        Ext.4 and Check.3 are under ``ext_ctx`` (Bob's ``rho``); T&R.3, Derand.1 and DKLs19
        Protocol 1 steps 4-5 under ``mul_ctx`` (both contributions, module docstring), so
        Alice's pads are fresh even if the session id and Bob's whole message repeat.
        Verifies Bob's extension (blaming Bob), derives ``z_A = H(q_j)`` and sends
        ``tau_j = H(q_j xor Delta) - z_A + (a_1, a_2, a_hat_1, a_hat_2)``, the check values
        ``mu_i = chi~_i a_i + chi^_i a_hat_i`` and a hash of
        ``r_{j,i} = chi~_i z~_A + chi^_i z^_A``.
        Returns the payload for Bob and Alice's output ``c = sum_j g_j z~_A``.
        """
        b = self.bob
        u, t_dot = msg.u, msg.t_dot  # lengths checked by decode_payload
        check_rho(msg.rho, self.rho, peer=b, me=self.alice)
        x_dot = int.from_bytes(msg.x_dot, "little")
        ctx = ext_context(self.context, self.alice, b, msg.rho)
        mctx = mul_context(
            pair_context(self.context, self.alice, b, self.rho, msg.rho), self.alice, b
        )
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
        prefix = h(b"DKLs23 OTE hash", mctx)
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
        # step 8: c_i = <g, z~_A,i>, g derived from mul_ctx (both contributions)
        g = gadget(mctx)
        c0 = sum(map(operator.mul, g, _zq.unpack(e0, WIDTH, 0)))
        c1 = sum(map(operator.mul, g, _zq.unpack(e0, WIDTH, 1)))
        ct0, ct1, ch0, ch1 = _mul_chis(mctx, u, tau)
        # step 5: r_{j,i} = chi~_i z~_A + chi^_i z^_A
        zt0, zt1, zh0, zh1 = v0s
        r0 = _zq.reduce(zt0 * ct0 + zh0 * ch0, 513)
        r1 = _zq.reduce(zt1 * ct1 + zh1 * ch1, 513)
        rbuf = _zq.to_bytes((r0 << 256) | r1)
        mu = ((ct0 * al0 + ch0 * al2) % Q, (ct1 * al1 + ch1 * al3) % Q)
        out = MulReply(tau, mu, h(b"DKLs23 mul r", mctx, rbuf))
        return out, (c0 % Q, c1 % Q)
