"""DKLs23 key setup: the ECDSA key share and the pairwise base-OT setup session.

DKLs23 (ePrint 2023/765) Protocol 3.6 (signing) needs, besides a Shamir sharing ``p(i)`` of
the secret key (here from :mod:`mpc.dkg` or the dealer import :mod:`mpc.dealer`), an
instance of F_RVOLE (Functionality 3.5) for every ordered pair of parties. Its setup is the
base OTs of the OT extension (DKLs23 section 5, "a fast one-time setup"; KOS15 Fig. 10,
"Initialize", with the base-OT roles reversed): for each ordered pair (Bob, Alice), ``KAPPA``
random OTs (VSOT, DKLs18 Protocol 7) where Bob is the base-OT *sender* (he keeps both pads
``k0, k1``) and Alice the base-OT *receiver* with random choice bits ``Delta`` (she keeps
``Delta`` and ``k_Delta``). Each
party therefore keeps, per peer, a :class:`~mpc.dkls23.mul.BobSeeds` (it is Bob against the
peer) and an :class:`~mpc.dkls23.mul.AliceSeeds` (it is Alice against the peer). These
seeds are secret and stored with the share (sealed by the node's HSM layer).

:class:`OtSetupSession` runs all base OTs of all ordered pairs in one five-round session
(the five messages of VSOT, :mod:`mpc.dkls23.baseot`), every message point-to-point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mpc.dkls23.baseot import VsotReceiver, VsotSender
from mpc.dkls23.mul import AliceSeeds, BobSeeds
from mpc.dkls23.params import GROUP, KAPPA, h
from mpc.errors import DecodeError, UsageError
from mpc.groups import Point
from mpc.session import RoundSession
from mpc.shamir import KeyPackage, PublicKeyPackage, check_identifiers
from mpc.wire import (
    Message,
    cbor_dumps,
    cbor_loads,
    decode_payload,
    encode_payload,
    exact_fields,
    point,
    point_from,
    points,
    raw,
    scalar,
    scalar_from,
)

PROTOCOL_SETUP = "dkls23-setup"


# -- round payloads (VSOT messages 1-5, DKLs18 Protocol 7; see mpc.dkls23.baseot) ---------


@dataclass(frozen=True)
class VsotKey:
    """Round 1 (VSOT message 1): the sender's ``B = b G`` and a Schnorr PoK ``(T, z)`` of ``b``."""

    B: Point = point()
    T: Point = point()
    z: int = scalar()


@dataclass(frozen=True)
class VsotChoice:
    """Round 2 (VSOT message 2): ``A_l = a_l G + omega_l B`` for each of the KAPPA OTs."""

    A: tuple[Point, ...] = points(KAPPA)


@dataclass(frozen=True)
class VsotChallenge:
    """Round 3 (VSOT message 3): the challenges ``xi_l``, 32 bytes each, concatenated."""

    xi: bytes = raw(32 * KAPPA)


@dataclass(frozen=True)
class VsotResponse:
    """Round 4 (VSOT message 4): the responses ``rho'_l``, 32 bytes each, concatenated."""

    resp: bytes = raw(32 * KAPPA)


@dataclass(frozen=True)
class VsotOpening:
    """Round 5 (VSOT message 5): the openings ``(H(rho0_l), H(rho1_l))``, concatenated."""

    open: bytes = raw(64 * KAPPA)


_SETUP_PAYLOADS: dict[int, type] = {
    1: VsotKey,
    2: VsotChoice,
    3: VsotChallenge,
    4: VsotResponse,
    5: VsotOpening,
}
_SHARE_VERSION = 1
_SHARE_FIELDS = frozenset({"v", "id", "t", "pk", "vs", "x", "ot"})


def key_id_of(public: PublicKeyPackage) -> bytes:
    """A stable identifier of a threshold key: hash of t, group key and all verifying shares."""
    parts: list[bytes | int] = [public.min_signers, public.group_public_key.encode()]
    for i in sorted(public.verifying_shares):
        parts += [i, public.verifying_shares[i].encode()]
    return h(b"DKLs23 key id", *parts)


@dataclass(frozen=True)
class EcdsaKeyShare:
    """One party's DKLs23 key share: its Shamir share plus the OT seeds against every peer.

    Secret: ``key.signing_share`` and every seed; none appears in ``repr``. Serialise with
    :meth:`to_bytes` only to hand the bytes to the HSM sealing layer.
    """

    key: KeyPackage
    bob: Mapping[int, BobSeeds] = field(repr=False)
    alice: Mapping[int, AliceSeeds] = field(repr=False)

    @property
    def identifier(self) -> int:
        return self.key.identifier

    @property
    def public(self) -> PublicKeyPackage:
        return self.key.public

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.key.public)

    @property
    def group_public_key(self) -> Point:
        return self.key.public.group_public_key

    def to_bytes(self) -> bytes:
        """Canonical CBOR of the whole share (secret: seal it before it touches storage)."""
        pub = self.key.public
        return cbor_dumps(
            {
                "v": _SHARE_VERSION,
                "id": self.identifier,
                "t": pub.min_signers,
                "pk": pub.group_public_key.encode(),
                "vs": {i: p.encode() for i, p in pub.verifying_shares.items()},
                "x": GROUP.encode_scalar(self.key.signing_share),
                "ot": {
                    j: [
                        self.bob[j].k0,
                        self.bob[j].k1,
                        self.alice[j].delta.to_bytes(32, "big"),
                        self.alice[j].kd,
                    ]
                    for j in self.bob
                },
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> EcdsaKeyShare:
        """Strictly decode :meth:`to_bytes` output (DecodeError names the field)."""
        obj = cbor_loads(data, what="key share")
        exact_fields(obj, _SHARE_FIELDS, party=None, what="key share")
        if obj["v"] != _SHARE_VERSION:
            raise DecodeError("unsupported key share version", field="v")
        me, t = obj["id"], obj["t"]
        vs_raw = obj["vs"]
        if not isinstance(vs_raw, dict):
            raise DecodeError("expected a map", field="vs")
        try:
            ids = check_identifiers(GROUP, list(vs_raw))
        except UsageError as exc:
            raise DecodeError(str(exc), field="vs") from None
        if type(me) is not int or me not in ids:
            raise DecodeError("identifier not among the participants", field="id")
        if type(t) is not int or not (2 <= t <= len(ids)):
            raise DecodeError("bad threshold", field="t")
        vs = {i: point_from(GROUP, p, "vs", None) for i, p in vs_raw.items()}
        pk = point_from(GROUP, obj["pk"], "pk", None)
        x = scalar_from(GROUP, obj["x"], "x", None)
        if GROUP.base_mul(x) != vs[me]:
            raise DecodeError("signing share does not match its verifying share", field="x")
        ot = obj["ot"]
        if not isinstance(ot, dict) or set(ot) != set(ids) - {me}:
            raise DecodeError("expected seeds for every peer", field="ot")
        bob: dict[int, BobSeeds] = {}
        alice: dict[int, AliceSeeds] = {}
        for j, entry in ot.items():
            if (
                not isinstance(entry, list)
                or len(entry) != 4
                or not all(isinstance(e, bytes) for e in entry)
                or [len(e) for e in entry] != [32 * KAPPA, 32 * KAPPA, 32, 32 * KAPPA]
            ):
                raise DecodeError(f"bad OT seeds for peer {j}", field="ot")
            bob[j] = BobSeeds(entry[0], entry[1])
            alice[j] = AliceSeeds(int.from_bytes(entry[2], "big"), entry[3])
        public = PublicKeyPackage(GROUP, t, pk, vs)
        return cls(KeyPackage(me, x, public), bob, alice)


def _split(data: bytes, size: int) -> list[bytes]:
    """The KAPPA consecutive ``size``-byte pieces of a concatenated VSOT message."""
    return [data[size * col : size * (col + 1)] for col in range(KAPPA)]


def _ctx(sid: bytes, sender: int, receiver: int) -> bytes:
    return h(b"DKLs23 base OT", sid, sender, receiver)


class OtSetupSession(RoundSession[EcdsaKeyShare]):
    """Base OTs for every ordered pair (F_RVOLE setup, DKLs23 Functionality 3.5 / section 5).

    Party ``me`` runs, with every peer ``j``, one VSOT as sender (-> its BobSeeds vs j) and
    one as receiver with random ``Delta`` (-> its AliceSeeds vs j). Rounds 1-5 carry VSOT
    messages 1-5 (:mod:`mpc.dkls23.baseot`) in both directions at once (a round-r message
    from ``j`` holds message r of the VSOT in which ``j`` has the role that sends it).
    """

    protocol = PROTOCOL_SETUP
    rounds = (1, 2, 3, 4, 5)

    def __init__(self, key: KeyPackage, session_id: bytes) -> None:
        if key.group is not GROUP:
            raise UsageError("DKLs23 needs a secp256k1 key package")
        super().__init__(
            session_id=session_id, me=key.identifier, participants=key.public.participants
        )
        self.key = key
        self._senders: dict[int, VsotSender] = {}
        self._receivers: dict[int, VsotReceiver] = {}

    def expected_kind(self, round: int) -> str:
        return "direct"

    def _start(self) -> list[Message]:
        """VSOT message 1 towards every peer (we are sender)."""
        out = []
        for j in self.others:
            s = VsotSender(_ctx(self.session_id, self.me, j), receiver=j, rng=self._rng)
            self._senders[j] = s
            out.append(self._msg(1, encode_payload(VsotKey(*s.step1()), GROUP), j))
        return out

    def _process_round(self, round: int, msgs: dict[int, Message]) -> list[Message]:
        out: list[Message] = []
        decoded: dict[int, object] = {
            j: decode_payload(_SETUP_PAYLOADS[round], m.payload, group=GROUP, party=j)
            for j, m in sorted(msgs.items())
        }
        for j, p in decoded.items():
            if isinstance(p, VsotKey):  # VSOT message 2: we are receiver of j's VSOT
                delta = int.from_bytes(self._rng(KAPPA // 8), "big")  # KAPPA random bits
                r = VsotReceiver(_ctx(self.session_id, j, self.me), delta, sender=j, rng=self._rng)
                self._receivers[j] = r
                choice = VsotChoice(tuple(r.step2(p.B, p.T, p.z)))
                out.append(self._msg(2, encode_payload(choice, GROUP), j))
            elif isinstance(p, VsotChoice):  # VSOT message 3: we are sender
                xis = self._senders[j].step3(p.A)
                out.append(self._msg(3, encode_payload(VsotChallenge(b"".join(xis)), GROUP), j))
            elif isinstance(p, VsotChallenge):  # VSOT message 4: we are receiver
                resp = self._receivers[j].step4(_split(p.xi, 32))
                out.append(self._msg(4, encode_payload(VsotResponse(b"".join(resp)), GROUP), j))
            elif isinstance(p, VsotResponse):  # VSOT message 5: we are sender
                opens = self._senders[j].step5(_split(p.resp, 32))
                opening = VsotOpening(b"".join(a + b for a, b in opens))
                out.append(self._msg(5, encode_payload(opening, GROUP), j))
            else:  # VSOT final check: we are receiver
                assert isinstance(p, VsotOpening)
                self._receivers[j].step6([(o[:32], o[32:]) for o in _split(p.open, 64)])
        if round == 5:
            bob, alice = {}, {}
            for j in self.others:
                k0, k1 = self._senders[j].output()
                bob[j] = BobSeeds(b"".join(k0), b"".join(k1))
                r = self._receivers[j]
                alice[j] = AliceSeeds(r.omega, b"".join(r.output()))
            self._senders.clear()
            self._receivers.clear()
            self._finish(EcdsaKeyShare(self.key, bob, alice))
        return out
