"""Resharing a threshold key to a new committee and threshold (protocol ``frost-reshare``).

Verifiable secret redistribution: Desmedt and Jajodia, "Redistributing Secret Shares to New
Access Structures and Its Applications" (GMU tech. report ISSE-TR-97-01, 1997), made
verifiable by Wong, Wang and Wing, "Verifiable Secret Redistribution for Threshold Sharing
Schemes" (CMU-CS-02-114, 2002; IEEE SISW 2002 "... for Archive Systems"), the redistribution
protocol (cited below as "WWW02 redistribution", steps in its order); as in tss-lib's
``ecdsa/resharing``. The group key stays the same, the new committee gets a fresh
``t_new``-of-``n_new`` sharing, and an old holder outside the new committee gets nothing.

Parties: ``dealers``, at least ``t_old`` holders of the old key, and ``new_participants``,
the new committee. The sets may overlap; every party (dealer or new member) runs one
session over ``participants = dealers | new_participants``. Every party must hold the old
:class:`~mpc.shamir.PublicKeyPackage` from an authenticated source (for a node: the key's
record pinned by governance), since the checks below are against it.

Round 1, broadcast from each dealer (WWW02 redistribution, step 1)
    Dealer ``i`` with old share ``s_i`` and Lagrange coefficient ``lambda_i`` over the dealer
    set (RFC 9591 section 4.2) samples ``g_i(x) = lambda_i s_i + a_i1 x + ... +
    a_i(t_new - 1) x^(t_new - 1)`` and broadcasts ``C_i = [g_i's coefficients * G]``:
    exactly ``t_new`` points, so neither the dealer nor the coordinator can change the
    threshold. Every party checks ``C_i0 == lambda_i Y_i`` (``Y_i`` the dealer's old
    verifying share; WWW02's "the commitment to the old share" check) and names a dealer
    whose constant term differs, then checks ``sum_i C_i0 == Y``, the group key.
Round 2, point-to-point from each dealer to each new member (WWW02 redistribution, step 2)
    ``g_i(j)``. Dealers send it in ``start()``, together with round 1; the session buffers
    a share that arrives before its commitment.
Round 3, broadcast from each new member (echo; not in WWW02, which assumes a broadcast
    channel): one digest per dealer of the round-1 broadcast it received, bound to the
    session, the context and the ceremony parameters (old group key and threshold, dealers,
    new committee, ``t_new``), so parties given different parameters abort here at the
    latest instead of finishing with different public packages. It is sent only
    after the member verified ``s_j' G == sum_k j^k V_k``, ``V_k = sum_i C_ik`` (batched; on
    failure every dealer whose ``g_i(j)`` fails ``vss_verify`` is named). Every party then
    compares the echoes with its own digests (:func:`mpc._ceremony.check_echo`): a dealer
    that sent different commitments to different parties is caught
    (:class:`~mpc.dkg.EquivocationError`) before anyone takes a result.
Output (WWW02 redistribution, step 3)
    ``s_j' = sum_i g_i(j)``; verifying shares ``Y_l' = sum_k l^k V_k`` for each new member
    ``l``; the group key ``V_0 = Y`` unchanged; threshold ``t_new`` recorded in the result.
    A :class:`ReshareResult` holds the new public package and, for a new member, its new
    :class:`~mpc.shamir.KeyPackage` (``None`` for a dealer that is not in the new
    committee: it should erase its old share once the new committee has committed).

The old shares are not touched: until the caller commits the new packages the old
committee still signs. The new sharing is a fresh polynomial: an old share (of a member
replaced or not) does not combine with new shares (``tests/mpc/test_reshare.py`` signs with
such a mix and shows it fails).

ECDSA (DKLs23) keys: the new committee's pairs have no base OTs; run an
:class:`~mpc.dkls23.OtSetupSession` on each new key package to get the
:class:`~mpc.dkls23.EcdsaKeyShare`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mpc._ceremony import (
    ECHO_LEN,
    blame_shares,
    check_context,
    check_echo,
    check_key_package,
    check_public_package,
    echo_digest,
    images,
    params_digest,
    sum_commitments,
)
from mpc.errors import ProtocolError, UsageError
from mpc.groups import Point
from mpc.session import RoundSession
from mpc.shamir import (
    KeyPackage,
    PublicKeyPackage,
    check_identifiers,
    check_threshold,
    evaluate_polynomial,
    lagrange_coefficient,
    vss_commit,
)
from mpc.wire import Message, decode_payload, digests, encode_payload, points, scalar

__all__ = ["PROTOCOL", "ReshareSession", "ReshareResult"]

PROTOCOL = "frost-reshare"


@dataclass(frozen=True)
class ReshareRound1:
    """WWW02 redistribution step 1: the commitment to ``g_i`` (exactly ``t_new`` points)."""

    commitment: tuple[Point, ...] = points("t")


@dataclass(frozen=True)
class ReshareRound2:
    """WWW02 redistribution step 2: the sub-share ``g_i(j)`` (zero allowed)."""

    share: int = scalar(allow_zero=True, secret=True)


@dataclass(frozen=True)
class ReshareRound3:
    """Echo: one digest per dealer (dealer order) of the round-1 broadcast received."""

    echo: tuple[bytes, ...] = digests("d", ECHO_LEN)


@dataclass(frozen=True)
class ReshareResult:
    """The outcome for one party: the new public package and, for a new member, its key."""

    public: PublicKeyPackage
    key: KeyPackage | None = field(repr=False)

    @property
    def threshold(self) -> int:
        return self.public.min_signers


class ReshareSession(RoundSession[ReshareResult]):
    """Party ``me`` of a resharing of the key ``old_public`` from ``dealers`` to a new committee.

    ``key`` is ``me``'s old key package, required exactly when ``me`` is a dealer.
    ``new_threshold`` is explicit (no default: the threshold never changes silently) and is
    what the result records; ``2 <= new_threshold <= len(new_participants)``. ``context``
    (at most 1 KiB, e.g. key id and ceremony id) is bound into every echo digest.
    """

    protocol = PROTOCOL
    rounds = (1, 2, 3)

    def __init__(
        self,
        session_id: bytes,
        me: int,
        old_public: PublicKeyPackage,
        dealers: Sequence[int],
        new_participants: Sequence[int],
        new_threshold: int,
        key: KeyPackage | None = None,
        context: bytes = b"",
    ) -> None:
        check_public_package(old_public)
        check_context(context)
        g = old_public.group
        dealer_ids = tuple(sorted(check_identifiers(g, dealers)))
        new_ids = tuple(sorted(check_identifiers(g, new_participants)))
        check_threshold(new_threshold, len(new_ids))
        outsiders = [i for i in dealer_ids if i not in old_public.verifying_shares]
        if outsiders:
            raise UsageError(
                f"dealers {outsiders} hold no share of the old key", party=outsiders[0]
            )
        if len(dealer_ids) < old_public.min_signers:
            raise UsageError(
                f"{len(dealer_ids)} dealers cannot reshare a {old_public.min_signers}-of-n key"
            )
        # lambda_i over the dealer set, and the public image lambda_i Y_i each C_i0 must equal
        self._lambdas = {i: lagrange_coefficient(g, i, dealer_ids) for i in dealer_ids}
        self._c0 = {i: old_public.verifying_shares[i] * self._lambdas[i] for i in dealer_ids}
        if g.sum(list(self._c0.values())) != old_public.group_public_key:
            raise UsageError("the dealers' verifying shares do not reconstruct the group key")
        if me in dealer_ids:
            if key is None:
                raise UsageError("a dealer needs its old key package", party=me)
            check_key_package(key)
            if key.identifier != me or key.public.group_public_key != old_public.group_public_key:
                raise UsageError("key package is not this party's share of the key", party=me)
            if key.verifying_share != old_public.verifying_shares[me]:
                raise UsageError("key package disagrees with the old public package", party=me)
        elif key is not None:
            raise UsageError("only a dealer passes its old key package", party=me)
        super().__init__(
            session_id=session_id,
            me=me,
            participants=sorted(set(dealer_ids) | set(new_ids)),
        )
        self.group = g
        self.old_public = old_public
        self.dealers = dealer_ids
        self.new_participants = new_ids
        self.new_threshold = new_threshold
        self.context = context
        self._params = params_digest(
            old_public.group_public_key.encode(),
            old_public.min_signers,
            dealer_ids,
            new_ids,
            new_threshold,
        )
        self._key = key
        self._own_share: int | None = None
        self._commitments: dict[int, tuple[Point, ...]] = {}
        self._digests: dict[int, bytes] = {}
        self._share: int | None = None

    def __repr__(self) -> str:
        return (
            f"<ReshareSession {self.group.name} {len(self.dealers)} dealers -> "
            f"{self.new_threshold}-of-{len(self.new_participants)} party={self.me} "
            f"round={self.current_round} done={self.done}>"
        )

    @property
    def is_dealer(self) -> bool:
        return self.me in self.dealers

    @property
    def is_member(self) -> bool:
        return self.me in self.new_participants

    def expected_kind(self, round: int) -> str:
        return "direct" if round == 2 else "broadcast"

    def expected_senders(self, round: int) -> tuple[int, ...]:
        if round == 1:
            return tuple(d for d in self.dealers if d != self.me)
        if round == 2:
            return tuple(d for d in self.dealers if d != self.me) if self.is_member else ()
        return tuple(j for j in self.new_participants if j != self.me)

    def _digest(self, dealer: int, commitment: Sequence[Point]) -> bytes:
        return echo_digest(
            PROTOCOL, self.group, self.context, self._params, self.session_id, dealer, commitment
        )

    # -- rounds 1 and 2 (dealers) ----------------------------------------------------
    def _start(self) -> list[Message]:
        """WWW02 redistribution steps 1-2: deal ``lambda_i s_i``; commitment and sub-shares."""
        if not self.is_dealer:
            return []
        g = self.group
        key = self._key
        assert key is not None
        coeffs = [key.signing_share * self._lambdas[self.me] % g.order] + [
            g.random_scalar(self._rng) for _ in range(self.new_threshold - 1)
        ]
        commitment = tuple(vss_commit(g, coeffs))
        shares = {j: evaluate_polynomial(g, coeffs, j) for j in self.new_participants}
        coeffs.clear()
        self._key = None  # the old share is not needed again in this session
        self._commitments[self.me] = commitment
        self._digests[self.me] = self._digest(self.me, commitment)
        out = [self._msg(1, encode_payload(ReshareRound1(commitment), g))]
        for j in self.new_participants:
            if j == self.me:
                self._own_share = shares[j]
            else:
                out.append(self._msg(2, encode_payload(ReshareRound2(shares[j]), g), j))
        shares.clear()
        return out

    def _process_round(self, round: int, msgs: dict[int, Message]) -> list[Message]:
        if round == 1:
            self._round1(msgs)
            return []
        if round == 2:
            return self._round2(msgs) if self.is_member else []
        self._finish(self._round3(msgs))
        return []

    def _round1(self, msgs: dict[int, Message]) -> None:
        """Check every dealer's constant term against ``lambda_i Y_i``, and their sum vs ``Y``."""
        g = self.group
        t = {"t": self.new_threshold}
        for s in sorted(msgs):
            m = decode_payload(ReshareRound1, msgs[s].payload, group=g, party=s, sizes=t)
            if m.commitment[0] != self._c0[s]:
                raise ProtocolError(
                    "dealer's constant-term commitment is not lambda_i times its old verifying "
                    "share (it does not reshare its share of this key)",
                    culprits=(s,),
                )
            self._commitments[s] = m.commitment
            self._digests[s] = self._digest(s, m.commitment)
        total = g.sum([self._commitments[d][0] for d in self.dealers])
        if total != self.old_public.group_public_key:  # pragma: no cover - implied by the above
            raise ProtocolError("dealers' constant terms do not sum to the group key")

    # -- round 2 (new members) ---------------------------------------------------------
    def _round2(self, msgs: dict[int, Message]) -> list[Message]:
        """WWW02 redistribution step 3: verify the sub-shares (batched, blame), then echo."""
        g = self.group
        shares = {
            s: decode_payload(ReshareRound2, msgs[s].payload, group=g, party=s).share
            for s in sorted(msgs)
        }
        total = (sum(shares.values()) + (self._own_share or 0)) % g.order
        self._own_share = None
        v = self._summed()
        if g.base_mul(total) != images(g, v, [self.me])[self.me]:
            blame_shares(g, self.me, shares, self._commitments, "reshared sub-share")
            raise ProtocolError("new share does not match its verifying share", culprits=())
        self._share = total
        echo = tuple(self._digests[d] for d in self.dealers)
        return [self._msg(3, encode_payload(ReshareRound3(echo), g))]

    def _summed(self) -> list[Point]:
        v = sum_commitments(
            self.group, [self._commitments[d] for d in self.dealers], self.new_threshold
        )
        if any(p.is_identity() for p in v):
            raise ProtocolError(
                "summed commitment has an identity coefficient (dealers cancelled each other, "
                "or probability ~1/q): rerun the resharing",
                culprits=(),
            )
        return v

    # -- round 3 (everyone) ------------------------------------------------------------
    def _round3(self, msgs: dict[int, Message]) -> ReshareResult:
        """Echo check, then the new public package (and key, for a member)."""
        g = self.group
        d = {"d": len(self.dealers)}
        echoes = {
            s: decode_payload(ReshareRound3, msgs[s].payload, group=g, party=s, sizes=d).echo
            for s in sorted(msgs)
        }
        check_echo(self.me, self.dealers, self._digests, echoes)
        v = self._summed()
        verifying = images(g, v, self.new_participants)
        if any(y.is_identity() for y in verifying.values()):
            raise ProtocolError(
                "a new verifying share is the identity (probability ~n/q): rerun", culprits=()
            )
        if v[0] != self.old_public.group_public_key:  # pragma: no cover - checked in round 1
            raise ProtocolError("the new sharing is of another group key")
        self._commitments.clear()
        public = PublicKeyPackage(g, self.new_threshold, v[0], verifying)
        if not self.is_member:
            return ReshareResult(public, None)
        share, self._share = self._share, None
        assert share is not None
        if share == 0 or g.base_mul(share) != verifying[self.me]:
            raise ProtocolError("new share does not match its verifying share", culprits=())
        return ReshareResult(public, KeyPackage(self.me, share, public))
