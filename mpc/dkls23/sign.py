"""DKLs23 threshold ECDSA signing (ePrint 2023/765, Protocol 3.6) split into presign + online.

Protocol 3.6 realises the threshold ECDSA functionality (DKLs23 Functionality 3.1) using
F_RVOLE (Functionality 3.5, realised in :mod:`mpc.dkls23.mul` by Protocol 5.2). Notation of
Protocol 3.6 for party ``i`` among the signers ``P`` (|P| >= t):

Round 1 (message independent)
    Sample instance key ``r_i`` and inversion mask ``phi_i``; ``R_i = r_i*G``; commit to
    ``R_i``; and (our additions, see below) a fresh contribution ``rho_i`` and an ephemeral
    Diffie-Hellman key ``E_i`` for the zero-share seeds.
    ``sk_i = lambda_i * p(i) + zeta_i`` (Lagrange coefficient over ``P``; ``zeta_i`` from
    F_Zero, computed at the start of round 2, see "Zero-share re-randomisation"). For every
    ``j != i``: start F_RVOLE with ``i`` as Bob, receiving the random ``chi_{i,j}``
    (:class:`~mpc.dkls23.mul.MulBob`, round 1 of the OT extension).
Round 2 (message independent)
    For every ``j``: as Alice with ``j`` as Bob, input ``(r_i, sk_i)`` and receive
    ``(c_u^{i,j}, c_v^{i,j})``; send ``j`` the decommitment of ``R_i``, ``Gamma^u_{i,j} =
    c_u^{i,j} G``, ``Gamma^v_{i,j} = c_v^{i,j} G`` and ``psi_{i,j} = phi_i - chi_{i,j}``.
Round 3, local part (message independent)
    Receive Bob's outputs ``(d_u^{i,j}, d_v^{i,j})``; verify every decommitment and the
    consistency checks ``chi_{i,j} R_j - Gamma^u_{j,i} = d_u^{i,j} G`` and
    ``chi_{i,j} pk_j - Gamma^v_{j,i} = d_v^{i,j} G``; ``R = sum_j R_j``, ``r = R.x mod q``,
    ``u_i = r_i phi_i + sum_j (r_i psi_{j,i} + c_u^{i,j} + d_u^{i,j})``,
    ``v_i = sk_i phi_i + sum_j (sk_i psi_{j,i} + c_v^{i,j} + d_v^{i,j})``.
    These are kept as the :class:`Presignature`.

    The second check, as printed in the paper, has a typo (a public DKLs23 implementation's
    README reports that the DKLs authors confirmed it). The mathematically correct check,
    used here, has the *peer's* ``pk_j``: F_RVOLE gives ``c_v^{j,i} + d_v^{i,j} = chi_{i,j}
    sk_j`` and ``Gamma^v_{j,i} = c_v^{j,i} G``, so for honest parties exactly
    ``chi_{i,j} pk_j - Gamma^v_{j,i} = d_v^{i,j} G`` holds, mirroring the first check with
    ``R_j`` (``c_u^{j,i} + d_u^{i,j} = chi_{i,j} r_j``). The honest-path tests exercise both
    checks and the attack tests make each one fail.
Round 3, online (the only step that needs the message)
    ``w_i = H(m) phi_i + r v_i``; send ``(u_i, w_i)`` to the combiner
    (:func:`sign_with_presignature`).
Output
    ``s = (sum_i w_i) / (sum_i u_i)``, normalised to low s; verified against the group key
    before it is returned (:func:`combine_signature`).

Since ``sum u_i = r*phi`` and ``sum v_i = sk*phi``, ``s = (H(m) + r*sk) / r_inst``.

Fresh context per run (issue 9, item 3; a departure from the paper, which assumes the
session id unique). Protocol 3.6 and F_RVOLE (Functionality 3.5) take a unique ``sid``
from outside; ours comes from the coordinator and is made unique only by the nodes' session
tables, which a database restore rolls back. A repeated ``sid`` used to repeat the whole
multiplication context of a pair, and a malicious peer could then solve for the other
party's share (the attack is spelled out in :mod:`mpc.dkls23.mul`). So each party draws a
fresh 32-byte ``rho_i`` per session in round 1 and sends it to every peer in its round-1
message (field ``rho``, the OT-extension contribution it also uses as Bob). Bound in:

* ``context = H(sid, key id, signer set)``: every hash below;
* round 1: ``rho_i`` into ``i``'s column PRG and OT-extension check as Bob
  (:func:`~mpc.dkls23.mul.ext_context`) and into ``i``'s commitment to ``R_i``;
* rounds 2-3: ``pair_ctx = H(context, i, j, rho_i, rho_j)``
  (:func:`~mpc.dkls23.mul.pair_context`) into both multiplications of the pair (pads,
  derandomisation, the DKLs19 check), and echoed in round 2 (field ``pair_ctx``): the peer
  refuses, naming the sender, a round 2 computed over any other view of the two
  contributions (e.g. the peer's contribution of an earlier run with the same ``sid``),
  before it uses anything in it. A contribution equal to the receiver's own (reflected) is
  refused too, naming the sender.

Rounds and the session interface are unchanged (a joint session id agreed in a message of
its own, as public implementations do, would cost one more round).
Zero-share re-randomisation (Protocol 3.6 round 1, ``sk_i = lambda_i p(i) + zeta_i`` with
``zeta`` from F_Zero; the public implementations read do the same). F_Zero needs a secret
seed per pair; DKLs23 and those implementations agree the seeds once at key setup and keep
them in the key share. They cannot be derived from the material a pair already holds: after
the base OTs (:mod:`mpc.dkls23.keygen`) Bob holds both pads ``k0, k1`` and Alice ``Delta``
and ``k_Delta``; any value Alice can compute for every ``Delta`` is independent of the pads
(OT receiver privacy), so the pair shares no secret there. Instead of a new share field we
derive the seeds *per session* (issue 13, item 7): each party sends an ephemeral
``E_i = e_i G`` in its round-1 message (field ``zk``; the messages travel in authenticated
envelopes, so nobody in between can substitute it) and the pair's seed is
``H(context, lo, hi, e_i E_j, pair_ctx)``, a Diffie-Hellman secret unknown to every other
party (CDH; a seed from public values such as ``pair_ctx`` alone would let the other
signers, who see every ``rho``, compute ``zeta_i``). Then
``zeta_i = sum_{j != i} sign(j - i) * H_q(seed_{i,j})`` sums to zero over the signers, the
share format is unchanged, and a session's seeds are fresh even if its session id repeats.
As in Protocol 3.6, each party sends ``pk_i = sk_i G`` in round 2 (field ``pk``), the
``Gamma^v`` check uses the received ``pk_j`` (so a ``pk_j`` inconsistent with ``j``'s
multiplication input is caught and names ``j``), and ``sum_j pk_j = pk`` is checked in
round 3 (a consistent but wrong zero share can only be detected there; it names no one).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import coincurve
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from mpc.dkls23.keygen import EcdsaKeyShare
from mpc.dkls23.mul import (
    RHO_BYTES,
    MulAlice,
    MulBob,
    MulReply,
    OteExtension,
    check_rho,
    pair_context,
)
from mpc.dkls23.params import GROUP, Q, h, h_scalars
from mpc.errors import DecodeError, NonceReuseError, ProtocolError, UsageError
from mpc.groups import Point, Secp256k1Point
from mpc.session import RoundSession
from mpc.shamir import check_identifiers, lagrange_coefficient
from mpc.wire import (
    Message,
    cbor_dumps,
    cbor_loads,
    decode_payload,
    encode_payload,
    exact_fields,
    point,
    point_from,
    raw,
    scalar,
    scalar_from,
    take_bytes,
)

PROTOCOL_PRESIGN = "dkls23-presign"


@dataclass(frozen=True)
class PresignRound1(OteExtension):
    """Protocol 3.6 round 1, to each peer ``j``: F_RVOLE as Bob, and the commitment to ``R_i``.

    ``rho`` (from :class:`~mpc.dkls23.mul.OteExtension`) is the sender's fresh contribution
    of this session, the same to every peer (module docstring, "Fresh context per run").
    ``zk`` is the sender's ephemeral Diffie-Hellman key ``E_i = e_i G`` of this session, the
    same to every peer, for the pairwise zero-share seeds (module docstring).
    """

    com: bytes = raw(32)
    zk: Point = point()


@dataclass(frozen=True)
class PresignRound2(MulReply):
    """Protocol 3.6 round 2, to each peer ``j``: F_RVOLE as Alice, decommitment, Gammas, psi.

    ``R`` and ``salt`` open the round-1 commitment; ``gu``, ``gv`` are ``Gamma^u_{i,j}``,
    ``Gamma^v_{i,j}``; ``psi = phi_i - chi_{i,j}`` (zero allowed). ``pair_ctx`` is the
    sender's ``pair_context(context, i, j, rho_i, rho_j)``, our addition: the receiver
    checks it against its own before using the message (module docstring). ``pk`` is the
    sender's re-randomised ``pk_i = sk_i G`` (Protocol 3.6 round 2; ``sk_i`` includes the
    zero share, module docstring "Zero-share re-randomisation").
    """

    R: Point = point()
    salt: bytes = raw(32)
    gu: Point = point()
    gv: Point = point()
    psi: int = scalar(allow_zero=True)
    pair_ctx: bytes = raw(32)
    pk: Point = point()


_PARTIAL_FIELDS = frozenset({"sender", "pid", "R", "u", "w"})


def _fields_of(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


#: storage callback: mark ``presignature_id`` used durably; return False if it already was
Ledger = Callable[[bytes], bool]


def presignature_id_of(session_id: bytes, key_id: bytes, signers: Sequence[int]) -> bytes:
    """Stable id of a presignature: hash of session id, key id and signer set."""
    return h(b"DKLs23 presignature id", session_id, key_id, *sorted(signers))


def _commit(context: bytes, i: int, rho_i: bytes, R: Point, salt: bytes) -> bytes:
    """F_Com as a salted hash (Protocol 3.6, round 1), bound to the session context, sender
    and the sender's fresh ``rho_i`` (our addition: a commitment never repeats with the sid).
    """
    return h(b"DKLs23 commit R_i v2", context, i, rho_i, R.encode(), salt)


def _x_of(R: Point) -> int:
    assert isinstance(R, Secp256k1Point)
    return int.from_bytes(R.x_only(), "big")


# -- presignature ---------------------------------------------------------------------


@dataclass(frozen=True)
class PresignaturePublic:
    """What the combiner needs about a presignature: public values only."""

    presignature_id: bytes
    key_id: bytes
    session_id: bytes
    signers: tuple[int, ...]
    R: Point

    @property
    def r(self) -> int:
        return _x_of(self.R) % Q


class Presignature:
    """Party ``party``'s single-use presignature: ``(phi_i, u_i, v_i)`` for instance point ``R``.

    **Storage contract.** A presignature may be used once. :func:`sign_with_presignature`
    refuses a second use of the same object, and calls the node's ``ledger`` with
    :attr:`presignature_id` *before* it computes the partial signature: the ledger must
    record the id durably (write-ahead) and return False if it was already recorded. So
    two objects rebuilt from the same stored bytes (:meth:`to_bytes`) can never both sign.
    """

    __slots__ = ("public", "party", "_phi", "_u", "_v", "_used")

    def __init__(self, public: PresignaturePublic, party: int, phi: int, u: int, v: int) -> None:
        self.public = public
        self.party = party
        self._phi, self._u, self._v = phi, u, v
        self._used = False

    @property
    def presignature_id(self) -> bytes:
        return self.public.presignature_id

    @property
    def used(self) -> bool:
        return self._used

    def __repr__(self) -> str:
        pid = self.presignature_id.hex()[:16]
        return f"Presignature(id={pid}, party={self.party}, used={self._used})"

    def to_bytes(self) -> bytes:
        """Canonical CBOR (secret: seal before storing)."""
        if self._used:
            raise NonceReuseError(
                "presignature already used; it must not be stored again", party=self.party
            )
        p = self.public
        return cbor_dumps(
            {
                "v": 1,
                "sid": p.session_id,
                "key": p.key_id,
                "signers": list(p.signers),
                "R": p.R.encode(),
                "me": self.party,
                "phi": GROUP.encode_scalar(self._phi),
                "u": GROUP.encode_scalar(self._u),
                "w": GROUP.encode_scalar(self._v),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Presignature:
        obj = cbor_loads(data, what="presignature")
        fields = {"v", "sid", "key", "signers", "R", "me", "phi", "u", "w"}
        if not isinstance(obj, dict) or set(obj) != fields or obj["v"] != 1:
            raise DecodeError("unexpected presignature fields or version", field="presignature")
        sid = take_bytes(obj, "sid", None, length=32)
        key = take_bytes(obj, "key", None, length=32)
        signers = obj["signers"]
        if not isinstance(signers, list) or len(signers) < 2:
            raise DecodeError("bad signer set", field="signers")
        try:
            ids = check_identifiers(GROUP, signers)
        except UsageError as exc:
            raise DecodeError(str(exc), field="signers") from None
        me = obj["me"]
        if type(me) is not int or me not in ids or list(ids) != sorted(ids):
            raise DecodeError("party not in the (sorted) signer set", field="me")
        R = point_from(GROUP, obj["R"], "R", None)
        public = PresignaturePublic(presignature_id_of(sid, key, ids), key, sid, tuple(ids), R)
        return cls(
            public,
            me,
            scalar_from(GROUP, obj["phi"], "phi", None),
            scalar_from(GROUP, obj["u"], "u", None, allow_zero=True),
            scalar_from(GROUP, obj["w"], "w", None, allow_zero=True),
        )


class PresignSession(RoundSession[Presignature]):
    """Rounds 1-2 and the local part of round 3 of DKLs23 Protocol 3.6 for party ``me``.

    ``signers`` (at least ``t``, including ``me``) is the set the presignature is bound to,
    together with the key id and ``session_id`` (which must be fresh per presignature).
    """

    protocol = PROTOCOL_PRESIGN
    rounds = (1, 2)

    def __init__(self, share: EcdsaKeyShare, session_id: bytes, signers: Sequence[int]) -> None:
        ids = tuple(sorted(check_identifiers(GROUP, signers)))
        pub = share.public
        if len(ids) < pub.min_signers:
            raise UsageError(f"{len(ids)} signers cannot sign a {pub.min_signers}-of-n key")
        unknown = [i for i in ids if i not in pub.verifying_shares]
        if unknown:
            raise UsageError(f"signers {unknown} do not hold this key", party=unknown[0])
        super().__init__(session_id=session_id, me=share.identifier, participants=ids)
        missing = [j for j in self.others if j not in share.bob or j not in share.alice]
        if missing:
            raise UsageError(f"no OT setup with {missing}", party=missing[0])
        self.share = share
        self.key_id = share.key_id
        # pk_j = lambda_j * Y_j (Protocol 3.6, round 1 "sk_i"; public counterpart)
        self._pk = {j: pub.verifying_shares[j] * lagrange_coefficient(GROUP, j, ids) for j in ids}
        if GROUP.sum(list(self._pk.values())) != pub.group_public_key:
            raise UsageError("the signer set does not reconstruct the group key")
        self._sk = share.key.signing_share * lagrange_coefficient(GROUP, self.me, ids) % Q
        self._group_pk = pub.group_public_key
        self._e = 0  # ephemeral DH secret for the zero-share seeds, drawn in _start
        self._E: Point = GROUP.identity
        # session context bound into every hash of the run (module docstring)
        self._context = h(b"DKLs23 presign context", session_id, self.key_id, *ids)
        self._rho = b""  # our fresh contribution, drawn in _start
        self._rhos: dict[int, bytes] = {}  # the peers' contributions (round 1)
        self._bobs: dict[int, MulBob] = {}  # one F_RVOLE per peer with us as Bob, see _start
        self._r = 0
        self._phi = 0
        self._R: Point = GROUP.identity
        self._salt = b""
        self._com: dict[int, bytes] = {}
        self._c: dict[int, tuple[int, int]] = {}

    def expected_kind(self, round: int) -> str:
        return "direct"

    def _start(self) -> list[Message]:
        """Round 1: contribution, instance key, mask, commitment, F_RVOLE as Bob with each peer."""
        rng = self._rng
        self._rho = rho = rng(RHO_BYTES)
        self._bobs = {
            j: MulBob(self.share.bob[j], self._context, alice=j, bob=self.me, rho=rho, rng=rng)
            for j in self.others
        }
        self._r = GROUP.random_scalar(rng)
        self._phi = GROUP.random_scalar(rng)
        self._R = GROUP.base_mul(self._r)
        self._salt = rng(32)
        self._e = GROUP.random_scalar(rng)
        self._E = GROUP.base_mul(self._e)
        com = _commit(self._context, self.me, rho, self._R, self._salt)
        out = []
        for j in self.others:
            first = PresignRound1(**_fields_of(self._bobs[j].round1()), com=com, zk=self._E)
            out.append(self._msg(1, encode_payload(first, GROUP), j))
        return out

    def _process_round(self, round: int, msgs: dict[int, Message]) -> list[Message]:
        if round == 1:
            return self._round2(msgs)
        self._finish(self._round3(msgs))
        return []

    def _round2(self, msgs: dict[int, Message]) -> list[Message]:
        """Round 2: F_RVOLE as Alice with input (r_i, sk_i); decommit; Gamma's, psi, pair_ctx.

        Each peer's ``rho_j`` is kept for round 3; a reflected one (equal to ours) is
        refused by :meth:`MulAlice.round2`, naming the peer.
        """
        out = []
        decoded = {
            j: decode_payload(PresignRound1, m.payload, group=GROUP, party=j)
            for j, m in sorted(msgs.items())
        }
        for j, p in decoded.items():  # reflected contributions are refused before any use
            check_rho(p.rho, self._rho, peer=j, me=self.me)
        # zero-share re-randomisation: sk_i += zeta_i, pk_i = sk_i G (module docstring)
        self._sk = (self._sk + self._zero_share(decoded)) % Q
        self._e = 0
        self._pk[self.me] = GROUP.base_mul(self._sk)
        for j, p in decoded.items():
            self._com[j] = p.com
            alice = MulAlice(
                self.share.alice[j],
                self._context,
                alice=self.me,
                bob=j,
                rho=self._rho,
                rng=self._rng,
            )
            reply, (cu, cv) = alice.round2(p, (self._r, self._sk))
            self._rhos[j] = p.rho
            self._c[j] = (cu, cv)
            second = PresignRound2(
                **_fields_of(reply),
                R=self._R,
                salt=self._salt,
                gu=GROUP.base_mul(cu),
                gv=GROUP.base_mul(cv),
                psi=(self._phi - self._bobs[j].bind(p.rho)) % Q,
                pair_ctx=pair_context(self._context, self.me, j, self._rho, p.rho),
                pk=self._pk[self.me],
            )
            out.append(self._msg(2, encode_payload(second, GROUP), j))
        return out

    def _zero_share(self, decoded: dict[int, PresignRound1]) -> int:
        """``zeta_i`` of F_Zero from per-session Diffie-Hellman seeds (module docstring).

        ``seed_{i,j} = H(context, lo, hi, e_i E_j, pair_ctx)``; the pair's term is added by
        the smaller identifier and subtracted by the larger, so the zeta sum to zero.
        """
        zeta = 0
        for j, p in decoded.items():
            lo, hi = min(self.me, j), max(self.me, j)
            dh = (p.zk * self._e).encode()
            pctx = pair_context(self._context, self.me, j, self._rho, p.rho)
            seed = h(b"DKLs23 F_Zero pairwise seed", self._context, lo, hi, dh, pctx)
            (z,) = h_scalars(b"DKLs23 F_Zero share", 1, seed)
            zeta += z if self.me < j else -z
        return zeta % Q

    def _round3(self, msgs: dict[int, Message]) -> Presignature:
        """Protocol 3.6 round 3, local part: decommitments, both consistency checks, u_i, v_i.

        The second check is the corrected one (peer's ``pk_j``, see the module docstring).
        First, each peer's ``pair_ctx`` must equal ours: a round 2 computed over another view
        of the two contributions (a replayed or substituted ``rho``) is refused, naming the
        sender, before any of it is used.
        """
        u = self._r * self._phi
        v = self._sk * self._phi
        R = self._R
        decoded = {
            j: decode_payload(PresignRound2, m.payload, group=GROUP, party=j)
            for j, m in sorted(msgs.items())
        }
        for j, p in decoded.items():
            want = pair_context(self._context, self.me, j, self._rho, self._rhos[j])
            if not secrets.compare_digest(p.pair_ctx, want):
                raise ProtocolError(
                    f"party {j}'s round 2 is bound to another pair context than party "
                    f"{self.me}'s (a replayed or substituted contribution rho)",
                    culprits=(j,),
                    pair=(min(j, self.me), max(j, self.me)),
                )
        # Protocol 3.6 round 3: the re-randomised pk_j must add up to the group key. A wrong
        # pk_j inconsistent with j's input fails j's Gamma^v check below, naming j; one that
        # is consistent (a wrong zero share) shows only here, so check the Gammas first.
        for j, p in decoded.items():
            self._pk[j] = p.pk
        for j, p in decoded.items():
            R_j, salt, gu, gv, psi = p.R, p.salt, p.gu, p.gv, p.psi
            du, dv = self._bobs[j].round3(p, rho_alice=self._rhos[j])
            com = _commit(self._context, j, self._rhos[j], R_j, salt)
            if not secrets.compare_digest(com, self._com[j]):
                raise ProtocolError(
                    "decommitment of R_j does not match its round-1 commitment", culprits=(j,)
                )
            chi = self._bobs[j].chi
            if R_j * chi - gu != GROUP.base_mul(du) or self._pk[j] * chi - gv != GROUP.base_mul(dv):
                raise ProtocolError(
                    f"multiplication consistency (Gamma) check failed: Alice {j}, Bob {self.me}",
                    culprits=(j,),
                    pair=(min(j, self.me), max(j, self.me)),
                )
            cu, cv = self._c[j]
            u += self._r * psi + cu + du
            v += self._sk * psi + cv + dv
            R = R + R_j
        if GROUP.sum([self._pk[j] for j in self.participants]) != self._group_pk:
            raise ProtocolError(
                f"the signers' re-randomised pk_j do not add up to the group key (a wrong zero "
                f"share); party {self.me} cannot tell whose: suspects {list(self.others)}",
                culprits=(),
            )
        if R.is_identity() or _x_of(R) % Q == 0:
            raise ProtocolError("instance point R is degenerate; rerun presign", culprits=())
        public = PresignaturePublic(
            presignature_id_of(self.session_id, self.key_id, self.participants),
            self.key_id,
            self.session_id,
            self.participants,
            R,
        )
        pre = Presignature(public, self.me, self._phi, u % Q, v % Q)
        self._r = self._phi = self._sk = 0
        self._bobs.clear()
        self._c.clear()
        self._rhos.clear()
        return pre


# -- online round and combination ----------------------------------------------------------


@dataclass(frozen=True)
class PartialSignature:
    """One signer's last-round message ``(u_i, w_i)`` for presignature ``presignature_id``."""

    sender: int
    presignature_id: bytes
    R: Point
    u: int = field(repr=False)
    w: int = field(repr=False)

    def to_bytes(self) -> bytes:
        return cbor_dumps(
            {
                "sender": self.sender,
                "pid": self.presignature_id,
                "R": self.R.encode(),
                "u": GROUP.encode_scalar(self.u),
                "w": GROUP.encode_scalar(self.w),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, sender: int) -> PartialSignature:
        """Strict decoding; ``sender`` is the authenticated sender (it must match the body)."""
        obj = cbor_loads(data, what="partial signature", party=sender)
        exact_fields(obj, _PARTIAL_FIELDS, party=sender, what="partial signature")
        if obj["sender"] != sender or type(obj["sender"]) is not int:
            raise DecodeError(
                "sender does not match the authenticated sender", field="sender", party=sender
            )
        return cls(
            sender,
            take_bytes(obj, "pid", sender, length=32),
            point_from(GROUP, obj["R"], "R", sender),
            scalar_from(GROUP, obj["u"], "u", sender, allow_zero=True),
            scalar_from(GROUP, obj["w"], "w", sender, allow_zero=True),
        )


def _digest_int(message_hash: bytes) -> int:
    if not isinstance(message_hash, bytes) or len(message_hash) != 32:
        raise UsageError("message hash must be 32 bytes")
    return int.from_bytes(message_hash, "big") % Q  # bits2int for a 256-bit hash (SEC 1, 4.1.3)


def sign_with_presignature(
    presig: Presignature, share: EcdsaKeyShare, message_hash: bytes, *, ledger: Ledger
) -> PartialSignature:
    """The online round of DKLs23 Protocol 3.6 (round 3): ``w_i = H(m) phi_i + r v_i``.

    Order of operations (the single-use contract): the binding to key and party is checked;
    the object refuses a second use; ``ledger(presignature_id)`` is called and must return
    True (newly recorded, durably) *before* the partial is computed; then the secrets are
    wiped from the object. A False from the ledger raises :class:`NonceReuseError`.
    """
    if presig.public.key_id != share.key_id:
        raise UsageError("presignature belongs to another key", party=presig.party)
    if presig.party != share.identifier:
        raise UsageError("presignature belongs to another party", party=presig.party)
    z = _digest_int(message_hash)
    if presig._used:
        raise NonceReuseError("presignature object already used", party=presig.party)
    presig._used = True
    if not ledger(presig.presignature_id):
        presig._phi = presig._u = presig._v = 0
        raise NonceReuseError(
            f"presignature {presig.presignature_id.hex()} is already marked used in storage",
            party=presig.party,
        )
    w = (z * presig._phi + presig.public.r * presig._v) % Q
    u = presig._u
    presig._phi = presig._u = presig._v = 0
    return PartialSignature(presig.party, presig.presignature_id, presig.public.R, u, w)


@dataclass(frozen=True)
class EcdsaSignature:
    """An ECDSA signature with low ``s`` and its recovery id (bit 0: y parity, bit 1: x >= q)."""

    r: int
    s: int
    recovery_id: int

    def to_der(self) -> bytes:
        return bytes(encode_dss_signature(self.r, self.s))

    def to_compact(self) -> bytes:
        """``r || s || recovery_id`` (65 bytes, libsecp256k1 recoverable form)."""
        return self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big") + bytes([self.recovery_id])


def combine_signature(
    public: PresignaturePublic,
    partials: Iterable[PartialSignature],
    message_hash: bytes,
    group_public_key: Point,
) -> EcdsaSignature:
    """Output step of DKLs23 Protocol 3.6: ``s = sum w_i / sum u_i``, low-s, verified.

    Takes only public values and partial signatures. A partial for another presignature or
    another ``R``, from a non-signer, or duplicated, names its sender. The signature is
    verified with libsecp256k1 (both plain verification and public-key recovery) before it
    is returned. DKLs23 has no per-party check of ``(u_i, w_i)``: when the final signature
    does not verify the combiner can only detect it; the error lists the signers as
    suspects (``culprits`` stays empty).
    """
    _digest_int(message_hash)  # length check
    got: dict[int, PartialSignature] = {}
    for p in partials:
        if p.sender not in public.signers:
            raise ProtocolError(
                "partial signature from a party outside the signer set", culprits=(p.sender,)
            )
        if p.sender in got:
            raise ProtocolError("two partial signatures from one signer", culprits=(p.sender,))
        if p.presignature_id != public.presignature_id:
            raise ProtocolError("partial signature for another presignature", culprits=(p.sender,))
        if p.R != public.R:
            raise ProtocolError(
                "partial signature for another instance point R", culprits=(p.sender,)
            )
        got[p.sender] = p
    missing = [i for i in public.signers if i not in got]
    if missing:
        raise UsageError(f"waiting for partial signatures from {missing}", party=missing[0])
    U = sum(p.u for p in got.values()) % Q
    W = sum(p.w for p in got.values()) % Q
    r = public.r
    Rb = public.R.encode()
    v = (Rb[0] & 1) | (2 if _x_of(public.R) >= Q else 0)
    s = W * GROUP.inv(U) % Q if U else 0
    if s > Q // 2:
        s, v = Q - s, v ^ 1
    sig = EcdsaSignature(r, s, v)
    if s == 0 or not _verify(sig, message_hash, group_public_key):
        raise ProtocolError(
            f"combined signature does not verify; DKLs23 cannot attribute a bad (u_i, w_i): "
            f"suspects {list(public.signers)}",
            culprits=(),
        )
    return sig


def _verify(sig: EcdsaSignature, message_hash: bytes, pk: Point) -> bool:
    """libsecp256k1 verification (low-s enforced) and recovery-id check."""
    assert isinstance(pk, Secp256k1Point)
    try:
        ok = pk.pubkey.verify(sig.to_der(), message_hash, hasher=None)
        rec = coincurve.PublicKey.from_signature_and_message(
            sig.to_compact(), message_hash, hasher=None
        )
    except (ValueError, TypeError):
        return False
    return bool(ok) and rec.format() == pk.encode()


def verify_signature(sig: EcdsaSignature, message_hash: bytes, pk: Point) -> bool:
    """Public helper: verify an ECDSA signature and its recovery id against ``pk``."""
    if not isinstance(message_hash, bytes) or len(message_hash) != 32:
        raise UsageError("message hash must be 32 bytes")
    return _verify(sig, message_hash, pk)
