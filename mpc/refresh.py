"""Proactive refresh of a threshold key: same group key, new shares (protocol ``frost-refresh``).

Herzberg, Jarecki, Krawczyk, Yung, "Proactive Secret Sharing Or: How to Cope With Perpetual
Leakage" (CRYPTO 1995), the periodic share renewal protocol (cited below as "HJKY95
renewal", steps in its order): every holder deals a random sharing
of **zero** with Feldman commitments, every holder verifies the sub-shares it receives
against the commitments and adds them to its share. The secret is unchanged (the dealt
secrets are all zero), the shares are re-randomised, and shares of different epochs do not
combine: an adversary must corrupt ``t`` holders *within one epoch*. ZcashFoundation FROST
(``frost_core::keys::refresh``: with a dealer, ``compute_refreshing_shares`` and
``refresh_share``, or DKG-style as here; it also lets a refresh drop participants) and
cb-mpc do the same.

Rounds (every participant is both dealer and receiver):

Round 1, broadcast (HJKY95 renewal, step 1)
    Party ``i`` samples ``delta_i(x) = a_i1 x + ... + a_i(t-1) x^(t-1)`` (constant term
    **zero**) and broadcasts ``C_i = [a_i1 G, ..., a_i(t-1) G]``: exactly ``t - 1`` points.
    The constant term's commitment is the identity by construction, so the wire form has no
    field for it: a dealer cannot commit to a non-zero constant, a payload with ``t`` points
    is refused as malformed (naming the dealer), and a dealer that shares a non-zero secret
    nevertheless has sub-shares that fail ``vss_verify`` against the implied identity
    constant (named in round 2).
Round 2, point-to-point (HJKY95 renewal, steps 2-3, plus the echo of :mod:`mpc.dkg`)
    Party ``i`` sends ``delta_i(j)`` to each ``j`` with ``echo``, one digest per participant
    of the round-1 broadcast it received from it (its own for itself), bound to the session,
    the context and the parameters (group key, ``t``, participants). Receiver ``j`` runs
    the echo check (:func:`mpc._ceremony.check_echo`: a dealer sending different
    commitments to different holders is caught, :class:`~mpc.dkg.EquivocationError`), then
    verifies ``delta(j) G == sum_k j^k V_k`` with ``V_k = sum_i C_ik`` (batched, as in the
    DKG; on failure each dealer's sub-share is checked alone and every bad dealer named),
    and sets ``s_j' = s_j + delta(j)``.
Output (HJKY95 renewal, step 4; RFC 9591 section 4.2)
    Verifying shares ``Y_l' = Y_l + sum_k l^k V_k``; the group key is *checked*: a ``t``-set
    of the new verifying shares must interpolate (in the exponent) to the old group key, and
    ``s_j' G == Y_j'``. The result is a **new** :class:`~mpc.shamir.KeyPackage`; the old one
    is not touched and stays valid until the caller commits the new one (a failed or
    interrupted refresh loses nothing). Old and new shares never combine: the old package
    cannot verify a new signature share and the new package names a stale share at
    aggregation (:func:`mpc.frost.aggregate`).

Participants: by default every holder of the key; a subset of at least ``t`` holders may
refresh alone, and the holders left out are dropped from the new package (their old shares
no longer combine with the new ones).

No proof of knowledge is needed (unlike the DKG): the constant term is fixed to zero, so a
dealer cannot bias the group key (rogue key) and the group key check catches any deviation.

DKLs23 ECDSA keys (:class:`~mpc.dkls23.EcdsaKeyShare`) are a Shamir share (refreshed here,
exactly as above) plus, per peer, the base-OT seeds of the pairwise F_RVOLE setup
(:mod:`mpc.dkls23.keygen`, :class:`~mpc.dkls23.mul.BobSeeds` and
:class:`~mpc.dkls23.mul.AliceSeeds`). The seeds do not depend on the key, so a refreshed
share may be rebuilt with the old ones (:func:`ecdsa_share_with_ot`), but an adversary who
read a node's seeds in an earlier epoch still holds them: full proactive security needs a
fresh :class:`~mpc.dkls23.OtSetupSession` on the refreshed key package (what
:class:`~mpc.dkls23.keysetup.KeygenChain` composes after the DKG), whose result is the
refreshed :class:`~mpc.dkls23.EcdsaKeyShare`. Presignatures of the old key are bound to its
key id (:func:`mpc.dkls23.key_id_of` hashes the verifying shares) and cannot be used with
the refreshed share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mpc._ceremony import (
    ECHO_LEN,
    blame_shares,
    check_context,
    check_echo,
    check_key_package,
    echo_digest,
    images,
    params_digest,
    sum_commitments,
)
from mpc.dkls23.keygen import EcdsaKeyShare
from mpc.errors import ProtocolError, UsageError
from mpc.groups import Point
from mpc.session import RoundSession
from mpc.shamir import (
    KeyPackage,
    PublicKeyPackage,
    check_identifiers,
    evaluate_polynomial,
    lagrange_coefficient,
    vss_commit,
)
from mpc.wire import Message, decode_payload, digests, encode_payload, points, scalar

__all__ = ["PROTOCOL", "RefreshSession", "ecdsa_share_with_ot"]

PROTOCOL = "frost-refresh"


@dataclass(frozen=True)
class RefreshRound1:
    """HJKY95 renewal step 1: commitments to ``a_i1..a_i(t-1)`` (the constant is zero).

    Exactly ``t - 1`` points; the commitment to the constant term is the identity and is not
    sent (the identity has no encoding, RFC 9591 section 4 SerializeElement).
    """

    commitment: tuple[Point, ...] = points("t1")


@dataclass(frozen=True)
class RefreshRound2:
    """HJKY95 renewal step 2: the sub-share ``delta_i(j)`` (zero allowed) and the echo."""

    share: int = scalar(allow_zero=True, secret=True)
    echo: tuple[bytes, ...] = digests("n", ECHO_LEN)


class RefreshSession(RoundSession[KeyPackage]):
    """Holder ``key.identifier``'s part of a proactive refresh of ``key`` in ``session_id``.

    ``participants`` (default: every holder in ``key.public``) must be holders of the key,
    at least ``t`` of them. ``context`` (at most 1 KiB, e.g. key id and ceremony id) is
    bound into every echo digest. The result is a new key package with the same group key
    and threshold; ``key`` is not modified.
    """

    protocol = PROTOCOL
    rounds = (1, 2)

    def __init__(
        self,
        key: KeyPackage,
        session_id: bytes,
        participants: Sequence[int] | None = None,
        context: bytes = b"",
    ) -> None:
        check_key_package(key)
        check_context(context)
        old = key.public
        g = key.group
        ids = check_identifiers(g, old.participants if participants is None else participants)
        outsiders = [i for i in ids if i not in old.verifying_shares]
        if outsiders:
            raise UsageError(
                f"participants {outsiders} hold no share of this key", party=outsiders[0]
            )
        if len(ids) < old.min_signers:
            raise UsageError(f"{len(ids)} participants cannot refresh a {old.min_signers}-of-n key")
        super().__init__(session_id=session_id, me=key.identifier, participants=ids)
        self.group = g
        self.key = key
        self.threshold = old.min_signers
        self.context = context
        self._params = params_digest(
            old.group_public_key.encode(), self.threshold, self.participants
        )
        self._shares_out: dict[int, int] | None = None
        self._own_delta: int | None = None
        self._commitments: dict[int, tuple[Point, ...]] = {}
        self._digests: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return (
            f"<RefreshSession {self.group.name} {self.threshold}-of-{len(self.participants)} "
            f"party={self.me} round={self.current_round} done={self.done}>"
        )

    def expected_kind(self, round: int) -> str:
        return "broadcast" if round == 1 else "direct"

    def _sizes(self) -> dict[str, int]:
        return {"t1": self.threshold - 1, "n": len(self.participants)}

    # -- round 1 -----------------------------------------------------------------------
    def _start(self) -> list[Message]:
        """HJKY95 renewal step 1: a random sharing of zero; broadcast its commitment.

        The sub-shares are computed now so the coefficients can be dropped at once; they are
        sent only once every round-1 broadcast has been received (round 2).
        """
        g = self.group
        coeffs = [0] + [g.random_scalar(self._rng) for _ in range(self.threshold - 1)]
        commitment = tuple(vss_commit(g, coeffs[1:]))
        self._shares_out = {j: evaluate_polynomial(g, coeffs, j) for j in self.participants}
        coeffs.clear()
        self._own_delta = self._shares_out.pop(self.me)
        self._commitments[self.me] = commitment
        self._digests[self.me] = self._digest(self.me, commitment)
        return [self._msg(1, encode_payload(RefreshRound1(commitment), g))]

    def _digest(self, dealer: int, commitment: Sequence[Point]) -> bytes:
        return echo_digest(
            PROTOCOL, self.group, self.context, self._params, self.session_id, dealer, commitment
        )

    def _process_round(self, round: int, msgs: dict[int, Message]) -> list[Message]:
        if round == 1:
            return self._round1(msgs)
        self._finish(self._round2(msgs))
        return []

    def _round1(self, msgs: dict[int, Message]) -> list[Message]:
        """Keep each dealer's commitment and digest; send sub-shares with the echo (step 2)."""
        g = self.group
        for s in sorted(msgs):
            m = decode_payload(
                RefreshRound1, msgs[s].payload, group=g, party=s, sizes=self._sizes()
            )
            self._commitments[s] = m.commitment
            self._digests[s] = self._digest(s, m.commitment)
        echo = tuple(self._digests[p] for p in self.participants)
        shares, self._shares_out = self._shares_out, None
        assert shares is not None
        out = [
            self._msg(2, encode_payload(RefreshRound2(shares[j], echo), g), j) for j in self.others
        ]
        shares.clear()
        return out

    # -- round 2 -----------------------------------------------------------------------
    def _round2(self, msgs: dict[int, Message]) -> KeyPackage:
        """Echo check, HJKY95 renewal steps 3-4: verify sub-shares, add, check the key."""
        g = self.group
        q = g.order
        decoded = {
            s: decode_payload(RefreshRound2, msgs[s].payload, group=g, party=s, sizes=self._sizes())
            for s in sorted(msgs)
        }
        check_echo(
            self.me, self.participants, self._digests, {s: m.echo for s, m in decoded.items()}
        )
        own = self._own_delta
        self._own_delta = None
        assert own is not None
        delta = (own + sum(m.share for m in decoded.values())) % q

        # V_k = sum_i C_ik for k = 1..t-1; V_0 is the identity (every constant term is zero).
        v = [g.identity] + sum_commitments(
            g, [self._commitments[p] for p in self.participants], self.threshold - 1
        )
        deltas = images(g, v, self.participants)
        if g.base_mul(delta) != deltas[self.me]:
            blame_shares(
                g,
                self.me,
                {s: m.share for s, m in decoded.items()},
                {s: (g.identity, *c) for s, c in self._commitments.items()},
                "refresh sub-share",
            )
            raise ProtocolError(  # unreachable unless a bug: the sum of valid shares is valid
                "refreshed share does not match its verifying share", culprits=()
            )
        self._commitments.clear()

        old = self.key.public
        verifying = {j: old.verifying_shares[j] + deltas[j] for j in self.participants}
        if any(y.is_identity() for y in verifying.values()):
            raise ProtocolError(
                "a refreshed verifying share is the identity (probability ~n/q): rerun",
                culprits=(),
            )
        share = (self.key.signing_share + delta) % q
        if g.base_mul(share) != verifying[self.me]:  # pragma: no cover - follows from above
            raise ProtocolError("refreshed share does not match its verifying share")
        check_group_key(old, verifying, self.threshold)
        return KeyPackage(
            identifier=self.me,
            signing_share=share,
            public=PublicKeyPackage(g, self.threshold, old.group_public_key, verifying),
        )


def check_group_key(old: PublicKeyPackage, verifying: dict[int, Point], t: int) -> None:
    """RFC 9591 section 4.2 in the exponent: ``t`` new verifying shares give the old group key."""
    g = old.group
    subset = sorted(verifying)[:t]
    pk = g.sum([verifying[j] * lagrange_coefficient(g, j, subset) for j in subset])
    if pk != old.group_public_key:
        raise ProtocolError(
            "refreshed verifying shares do not interpolate to the group public key", culprits=()
        )


def ecdsa_share_with_ot(key: KeyPackage, ot_from: EcdsaKeyShare) -> EcdsaKeyShare:
    """A DKLs23 key share made of the refreshed Shamir part ``key`` and ``ot_from``'s OT seeds.

    The seeds (:mod:`mpc.dkls23.keygen`: per peer the base-OT pads as Bob and ``Delta``,
    ``k_Delta`` as Alice) do not depend on the key, so signing works with them; but they are
    the *old* epoch's seeds: for full proactive security run a fresh
    :class:`~mpc.dkls23.OtSetupSession` on ``key`` instead (its result is the share). Only
    the seeds of peers that are still in ``key``'s committee are kept; a peer without seeds
    is refused (run the OT setup).
    """
    if not isinstance(key, KeyPackage) or not isinstance(ot_from, EcdsaKeyShare):
        raise UsageError("expected a KeyPackage and an EcdsaKeyShare")
    if key.identifier != ot_from.identifier:
        raise UsageError(
            f"OT seeds belong to party {ot_from.identifier}, not {key.identifier}",
            party=key.identifier,
        )
    if key.group is not ot_from.key.group or key.group_public_key != ot_from.group_public_key:
        raise UsageError("the refreshed key package is for another group key", party=key.identifier)
    check_key_package(key)
    peers = [j for j in key.public.participants if j != key.identifier]
    missing = [j for j in peers if j not in ot_from.bob or j not in ot_from.alice]
    if missing:
        raise UsageError(
            f"no OT seeds with {missing}: run an OtSetupSession on the new key package",
            party=missing[0],
        )
    return EcdsaKeyShare(
        key, {j: ot_from.bob[j] for j in peers}, {j: ot_from.alice[j] for j in peers}
    )
