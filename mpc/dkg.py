"""Pedersen distributed key generation with proofs of knowledge (FROST KeyGen).

Implements the key generation of Komlo & Goldberg, "FROST: Flexible Round-Optimized Schnorr
Threshold Signatures" (SAC 2020), Figure 1, "KeyGen", over both groups of :mod:`mpc.groups`,
with the verifiable secret sharing of RFC 9591 Appendix C (``vss_commit``/``vss_verify`` in
:mod:`mpc.shamir`). No party ever holds the group secret; the result of every party is a
:class:`~mpc.shamir.KeyPackage` holding its own signing share and the full
:class:`~mpc.shamir.PublicKeyPackage` (group key and every participant's verifying share).

Rounds (protocol name ``"frost-dkg"``):

Round 1, broadcast (Figure 1, Round 1, steps 1-4)
    Party ``i`` samples ``f_i(x) = a_i0 + a_i1 x + ... + a_i(t-1) x^(t-1)``, broadcasts the
    commitment ``C_i = [a_i0 G, ..., a_i(t-1) G]`` (exactly ``t`` points) and a Schnorr proof
    of knowledge of ``a_i0``: ``(R_i, mu_i)`` with ``R_i = k G``, ``mu_i = k + a_i0 c_i``,
    ``c_i = H(context, session_id, i, C_i0, R_i)`` (see :func:`mpc.hazmat.pok_challenge`).
    Binding the session id, the sender and a domain string makes a proof replayed from
    another session, another sender or another protocol fail (it is what defeats rogue-key
    attacks).

Round 2, point-to-point (Figure 1, Round 2, steps 1-4, plus an echo check)
    Party ``i`` sends ``f_i(j)`` to each ``j`` together with ``echo``: a digest, per sender,
    of every round-1 broadcast it received (its own included). See "Echo check" below.
    The receiver checks the echo, verifies shares against commitments (with blame), and
    derives ``s_j = sum_i f_i(j)``, the group key ``Y = sum_i C_i0`` and each verifying share
    ``Y_l = sum_k l^k V_k`` where ``V_k = sum_i C_ik`` (the commitments are summed first, so
    the public key package costs ``n (t-1)`` scalar multiplications instead of ``n^2 t``).

Echo check (why and how)
    FROST KeyGen assumes a broadcast channel; our transport is point-to-point, so a party
    could send different round-1 broadcasts to different peers. Each party therefore puts,
    in every round-2 message, the list of digests ``D_j(s)`` (one per participant ``s``, in
    participant order) of the round-1 broadcast it received from ``s`` (for ``s = j``, the
    one it sent). Receiver ``k`` compares ``D_j(s)`` with its own ``D_k(s)``:

    * ``s == j`` (j's account of its own broadcast differs from what j sent to k): j is at
      fault, whatever else happened. Certain.
    * ``s == k`` (j claims k sent something k did not): j is at fault (channels are
      authenticated by the node's signed envelopes). Certain.
    * otherwise, either ``s`` equivocated (sent j and k different broadcasts) or ``j``
      misreports; without transferable signatures the protocol layer cannot tell which, so
      an :class:`EquivocationError` names ``s`` as ``subject`` and ``j`` in ``reporters``,
      and ``culprits`` holds all suspects. The node layer holds both signed round-1
      envelopes and can settle it (two validly signed, different broadcasts from ``s``
      convict ``s``).

    A party that equivocates and reports each peer's own view back to it is thus caught by
    every honest pair that received different versions: the DKG always aborts, and every
    honest party's error names the equivocator among the suspects. The check runs before
    any share is used, so an equivocation never yields a key.

Share verification (Figure 1, Round 2, step 2) is batched: a party first checks its
*aggregate* share ``s_j G == sum_k j^k V_k``, which is also the final "verify own share"
check. Only if it fails does it run ``vss_verify`` per sender to find and blame every sender
whose share fails its commitment. Accepting on the aggregate is safe: the aggregate is all
the key depends on, and individually bad shares can only pass if their errors cancel, which
requires the colluding senders to coordinate and still leaves ``j`` with a correct share of
the summed polynomial. (Same idea as small-exponent batch verification, Bellare, Garay and
Rabin, EUROCRYPT 1998, with unit weights because only the sum matters here.)

Zero shares: a share ``f_i(j) = 0`` happens with probability ``1/q`` and is accepted (VSS
decides); an identity group key or verifying share (probability about ``n/q``, or a sign of
a bug) aborts with a :class:`~mpc.errors.ProtocolError` without culprits: rerun the DKG.

Hash to scalar (proof challenge, `pok_challenge`): SHA-512 over the proof's ``R``,
``C_i0`` and a length-prefixed, domain-separated message, reduced modulo the group order (a
wide reduction, 512 bits onto a ~253/256-bit order, bias below 2^-250; RFC 9380 section 5.2
hash_to_field reduces the same way). For ed25519 it is exactly the RFC 8032 challenge, so a
proof is a plain Ed25519 signature and libsodium verifies it; for secp256k1 the digest is
read big-endian. The group name in the domain string separates the two curves. Echo
digests are SHA-256 over length-prefixed fields, also domain-separated.

Secrets: polynomial coefficients and the proof nonce are dropped as soon as the shares and
proof are computed (in :meth:`DkgSession._start`); outgoing shares are wrapped so that
``repr`` of a message never shows them; ``repr`` of a session shows no secret. Python ints
cannot be wiped from memory; nodes keep sessions short-lived.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nacl import bindings as sodium
from nacl.exceptions import BadSignatureError

from mpc import _ed25519_vartime as _edv
from mpc.errors import ProtocolError, UsageError
from mpc.groups import ED25519, SECP256K1, Ed25519Point, Group, Point
from mpc.session import Rng, RoundSession
from mpc.shamir import (
    KeyPackage,
    PublicKeyPackage,
    check_identifiers,
    check_threshold,
    evaluate_polynomial,
    vss_commit,
    vss_verify,
)
from mpc.wire import Message, decode_payload, digests, encode_payload, point, points, scalar

__all__ = [
    "PROTOCOL",
    "DkgSession",
    "EquivocationError",
]

PROTOCOL = "frost-dkg"
_DOMAIN = b"TPWC-v1/frost-dkg/"
MAX_CONTEXT_LEN = 1024
ECHO_LEN = 32
_ED_IDENTITY = bytes([1]) + bytes(31)


class EquivocationError(ProtocolError):
    """Round-1 broadcasts disagree between parties (echo check of :class:`DkgSession`).

    ``mismatches`` lists ``(subject, reporter)`` pairs: the broadcast of ``subject`` as
    reported by ``reporter`` differs from ours. Either ``subject`` equivocated or
    ``reporter`` misreports; ``culprits`` holds every suspect.
    """

    def __init__(self, message: str, *, mismatches: Sequence[tuple[int, int]]) -> None:
        self.mismatches = tuple(sorted(mismatches))
        suspects = {p for pair in self.mismatches for p in pair}
        pair = self.mismatches[0] if len(self.mismatches) == 1 else None
        super().__init__(message, culprits=tuple(suspects), pair=pair)

    @property
    def subjects(self) -> tuple[int, ...]:
        """Parties whose broadcast is in dispute."""
        return tuple(sorted({s for s, _ in self.mismatches}))


@dataclass(frozen=True)
class DkgRound1:
    """Figure 1, Round 1, step 4: the broadcast ``(C_i, sigma_i = (R_i, mu_i))``.

    Exactly ``t`` commitment points: longer would raise the threshold, shorter would give a
    key with a lower one.
    """

    commitment: tuple[Point, ...] = points("t")
    pok_r: Point = point()
    pok_mu: int = scalar(allow_zero=True)


@dataclass(frozen=True)
class DkgRound2:
    """Figure 1, Round 2, step 1: the secret share ``f_i(j)`` (zero allowed) and the echo.

    ``echo`` holds one digest per participant, in participant order (see "Echo check").
    """

    share: int = scalar(allow_zero=True, secret=True)
    echo: tuple[bytes, ...] = digests("n", ECHO_LEN)


# ---------------------------------------------------------------------------------------
# Hashing and the proof of knowledge (Figure 1, Round 1, step 2 and step 5)
# ---------------------------------------------------------------------------------------


def _lp(data: bytes) -> bytes:
    """Length-prefixed field (4-byte big-endian length), so concatenations are unambiguous."""
    return len(data).to_bytes(4, "big") + data


def _pok_challenge(
    group: Group, context: bytes, session_id: bytes, sender: int, c0: Point, r: Point
) -> int:
    """Figure 1, Round 1, step 2: ``c_i = H(i, Phi, g^{a_i0}, R_i)``.

    Here ``c = SHA-512(R || C_i0 || M) mod q`` with the message
    ``M = lp(domain || group || "/pok") || lp(context) || session_id || i`` (``Phi`` is our
    domain string, the caller's context and the session id; ``lp`` is a 4-byte length
    prefix; ``R`` and ``C_i0`` have a fixed length per group, so the input is unambiguous).
    For ed25519 the digest is read little-endian, exactly the RFC 8032 section 5.1.7
    challenge, so ``(R, mu)`` is an Ed25519 signature on ``M`` under ``C_i0`` and libsodium
    verifies it in one double-scalar multiplication; for secp256k1 it is read big-endian.
    """
    digest = hashlib.sha512(
        r.encode() + c0.encode() + _pok_message(group, context, session_id, sender)
    ).digest()
    return int.from_bytes(digest, "little" if group is ED25519 else "big") % group.order


def _pok_message(group: Group, context: bytes, session_id: bytes, sender: int) -> bytes:
    return (
        _lp(_DOMAIN + group.name.encode() + b"/pok")
        + _lp(context)
        + session_id
        + sender.to_bytes(2, "big")
    )


def _prove_knowledge(
    group: Group,
    secret: int,
    c0: Point,
    context: bytes,
    session_id: bytes,
    sender: int,
    rng: Rng = secrets.token_bytes,
) -> tuple[Point, int]:
    """Figure 1, Round 1, step 2: Schnorr proof ``(R, mu)`` of knowledge of ``secret = log C_i0``.

    ``k`` random (from ``rng``), ``R = k G``, ``mu = k + secret * c``.
    """
    k = group.random_scalar(rng)
    r = group.base_mul(k)
    c = _pok_challenge(group, context, session_id, sender, c0, r)
    mu = (k + secret * c) % group.order
    del k
    return r, mu


def _verify_knowledge(
    group: Group, c0: Point, r: Point, mu: int, context: bytes, session_id: bytes, sender: int
) -> bool:
    """Figure 1, Round 1, step 5: check ``R_l == mu_l G - c_l C_l0``.

    For ed25519 the same equation is checked by libsodium's Ed25519 verification (see
    :func:`_pok_challenge`); :func:`_verify_knowledge_generic` is the direct form.
    """
    if group is ED25519:
        msg = _pok_message(group, context, session_id, sender)
        try:
            sodium.crypto_sign_open(r.encode() + group.encode_scalar(mu) + msg, c0.encode())
        except (BadSignatureError, ValueError, TypeError):
            return False
        return True
    return _verify_knowledge_generic(group, c0, r, mu, context, session_id, sender)


def _verify_knowledge_generic(
    group: Group, c0: Point, r: Point, mu: int, context: bytes, session_id: bytes, sender: int
) -> bool:
    """Figure 1, Round 1, step 5 written out: ``mu G - c C_0 == R``."""
    c = _pok_challenge(group, context, session_id, sender, c0, r)
    return group.base_mul(mu) - c0 * c == r


def _round1_payload(
    group: Group,
    coeffs: Sequence[int],
    context: bytes,
    session_id: bytes,
    sender: int,
    rng: Rng = secrets.token_bytes,
) -> dict[str, Any]:
    """Figure 1, Round 1, steps 2-4: the broadcast ``{commitment, pok_r, pok_mu}``.

    Exported by :mod:`mpc.hazmat` so attack tests can build a second, valid-looking
    broadcast for equivocation.
    """
    commitment, r, mu = _round1(group, coeffs, context, session_id, sender, rng)
    return encode_payload(DkgRound1(tuple(commitment), r, mu), group)


def _round1(
    group: Group,
    coeffs: Sequence[int],
    context: bytes,
    session_id: bytes,
    sender: int,
    rng: Rng,
) -> tuple[list[Point], Point, int]:
    commitment = vss_commit(group, coeffs)
    r, mu = _prove_knowledge(group, coeffs[0], commitment[0], context, session_id, sender, rng)
    return commitment, r, mu


def _echo_digest(
    group: Group,
    context: bytes,
    session_id: bytes,
    sender: int,
    commitment: Sequence[Point],
    r: Point,
    mu: int,
) -> bytes:
    """Digest of one *validated* round-1 broadcast, as exchanged by the echo check."""
    h = hashlib.sha256()
    for part in (
        _DOMAIN + group.name.encode() + b"/echo",
        context,
        session_id,
        sender.to_bytes(2, "big"),
        len(commitment).to_bytes(2, "big"),
        *(c.encode() for c in commitment),
        r.encode(),
        group.encode_scalar(mu),
    ):
        h.update(_lp(part))
    return h.digest()


def _evaluate_in_exponent(points: Sequence[Point], x: int) -> Point:
    """``sum_k x^k P_k`` by Horner's rule: ``len(points) - 1`` multiplications by ``x``.

    The public image of a polynomial at ``x`` (RFC 9591 Appendix C.2, the right-hand side
    of ``vss_verify``); used on the summed commitments ``V_k``.
    """
    acc = points[-1]
    for p in reversed(points[:-1]):
        acc = (acc if x == 1 else acc * x) + p
    return acc


# ---------------------------------------------------------------------------------------
# The session
# ---------------------------------------------------------------------------------------


class DkgSession(RoundSession[KeyPackage]):
    """Party ``me`` of a ``threshold``-of-``len(participants)`` FROST KeyGen in ``session_id``.

    ``context`` (optional, at most 1 KiB) is bound into every proof and echo digest, e.g.
    a key id or ceremony id, so a transcript cannot be reused for another purpose.
    """

    protocol = PROTOCOL
    rounds = (1, 2)

    def __init__(
        self,
        group: Group,
        session_id: bytes,
        me: int,
        participants: Sequence[int],
        threshold: int,
        context: bytes = b"",
    ) -> None:
        if group is not ED25519 and group is not SECP256K1:
            raise UsageError(f"unsupported group {group!r}")
        ids = check_identifiers(group, participants)
        check_threshold(threshold, len(ids))
        if not isinstance(context, bytes) or len(context) > MAX_CONTEXT_LEN:
            raise UsageError(f"context must be bytes of at most {MAX_CONTEXT_LEN}")
        super().__init__(session_id=session_id, me=me, participants=ids)
        self.group = group
        self.threshold = threshold
        self.context = context
        # secret state; see _start and _process_round
        self._shares_out: dict[int, int] | None = None
        self._own_share: int | None = None
        self._digests: dict[int, bytes] = {}
        self._commitments: dict[int, Sequence[Point]] = {}

    def __repr__(self) -> str:
        return (
            f"<DkgSession {self.group.name} {self.threshold}-of-{len(self.participants)} "
            f"party={self.me} round={self.current_round} done={self.done}>"
        )

    def expected_kind(self, round: int) -> str:
        return "broadcast" if round == 1 else "direct"

    # -- Round 1 ---------------------------------------------------------------------
    def _start(self) -> list[Message]:
        """Figure 1, Round 1, steps 1-4: sample ``f_i``, commit, prove, broadcast.

        The shares ``f_i(j)`` are computed here (Round 2, step 1) so that the coefficients
        can be dropped at once; they are sent only after every round-1 broadcast checks out.
        """
        g = self.group
        coeffs = [g.random_scalar(self._rng) for _ in range(self.threshold)]
        commitment, r, mu = _round1(g, coeffs, self.context, self.session_id, self.me, self._rng)
        payload = encode_payload(DkgRound1(tuple(commitment), r, mu), g)
        self._shares_out = {j: evaluate_polynomial(g, coeffs, j) for j in self.participants}
        coeffs.clear()  # the polynomial is not needed again (drop it, Figure 1 Round 2 step 4)
        del coeffs
        self._own_share = self._shares_out.pop(self.me)
        self._commitments[self.me] = commitment
        self._digests[self.me] = _echo_digest(
            g, self.context, self.session_id, self.me, commitment, r, mu
        )
        return [self._msg(1, payload)]

    def _process_round(self, round: int, msgs: dict[int, Message]) -> list[Message]:
        if round == 1:
            return self._round1(msgs)
        self._round2(msgs)
        return []

    def _round1(self, msgs: dict[int, Message]) -> list[Message]:
        """Figure 1, Round 1, step 5 (verify every proof), then Round 2, step 1 (send shares)."""
        g = self.group
        t = {"t": self.threshold}
        decoded = {
            s: decode_payload(DkgRound1, msgs[s].payload, group=g, party=s, sizes=t)
            for s in sorted(msgs)
        }
        bad = [
            s
            for s, m in decoded.items()
            if not _verify_knowledge(
                g, m.commitment[0], m.pok_r, m.pok_mu, self.context, self.session_id, s
            )
        ]
        if bad:
            raise ProtocolError(
                "proof of knowledge of the constant term does not verify "
                "(rogue key, replay from another session or sender, or tampering)",
                culprits=tuple(bad),
            )
        for s, m in decoded.items():
            self._commitments[s] = m.commitment
            self._digests[s] = _echo_digest(
                g, self.context, self.session_id, s, m.commitment, m.pok_r, m.pok_mu
            )
        echo = tuple(self._digests[p] for p in self.participants)
        shares, self._shares_out = self._shares_out, None
        assert shares is not None
        out = [self._msg(2, encode_payload(DkgRound2(shares[j], echo), g), j) for j in self.others]
        shares.clear()
        return out

    # -- Round 2 ---------------------------------------------------------------------
    def _round2(self, msgs: dict[int, Message]) -> None:
        """Echo check, then Figure 1, Round 2, steps 2-4 (verify shares, derive keys)."""
        g = self.group
        n = len(self.participants)
        decoded = {
            s: decode_payload(DkgRound2, msgs[s].payload, group=g, party=s, sizes={"n": n})
            for s in sorted(msgs)
        }
        self._check_echo({s: m.echo for s, m in decoded.items()})

        # Step 3: s_j = sum_i f_i(j) (our own f_j(j) included).
        own = self._own_share
        self._own_share = None
        assert own is not None
        share = (own + sum(m.share for m in decoded.values())) % g.order

        group_key, verifying = self._public_package()

        # Step 2 (batched, see module docstring), which is also the own-share check.
        if g.base_mul(share) != verifying[self.me]:
            self._blame_shares({s: m.share for s, m in decoded.items()})
            raise ProtocolError(  # unreachable unless a bug: the sum of valid shares is valid
                "own signing share does not match its verifying share", culprits=()
            )
        self._commitments.clear()
        self._finish(
            KeyPackage(
                identifier=self.me,
                signing_share=share,
                public=PublicKeyPackage(g, self.threshold, group_key, verifying),
            )
        )

    def _public_package(self) -> tuple[Point, dict[int, Point]]:
        """Figure 1, Round 2, step 4: group key ``Y = sum_i C_i0`` and every verifying share.

        The commitments are summed first (``V_k = sum_i C_ik``, the commitment to the summed
        polynomial), then ``Y_j = sum_k j^k V_k`` by Horner's rule. For ed25519 this runs in
        :mod:`mpc._ed25519_vartime` (public data only; results re-validated by libsodium).
        """
        g = self.group
        v = [
            g.sum([self._commitments[i][k] for i in self.participants])
            for k in range(self.threshold)
        ]
        if any(p.is_identity() for p in v):
            raise _identity_error()  # also makes Horner's rule below well defined
        if g is ED25519:
            images = _edv.polynomial_images([p.encode() for p in v], self.participants)
            if _ED_IDENTITY in images.values():
                raise _identity_error()
            # The vartime module returns canonical encodings of sums of subgroup points;
            # the own share is cross-checked against libsodium in _round2.
            verifying: dict[int, Point] = {j: Ed25519Point(e) for j, e in images.items()}
        else:
            verifying = {j: _evaluate_in_exponent(v, j) for j in self.participants}
            if any(y.is_identity() for y in verifying.values()):
                raise _identity_error()
        return v[0], verifying

    def _blame_shares(self, shares: Mapping[int, int]) -> None:
        """Figure 1, Round 2, step 2 per sender (RFC 9591 App. C.2 ``vss_verify``): blame all."""
        bad = []
        for s, sh in sorted(shares.items()):
            try:
                vss_verify(self.group, sh, self.me, self._commitments[s], sender=s)
            except ProtocolError:
                bad.append(s)
        if bad:
            raise ProtocolError(
                f"secret share for party {self.me} does not match the sender's commitment",
                culprits=tuple(bad),
            )

    def _check_echo(self, echoes: Mapping[int, Sequence[bytes]]) -> None:
        """Compare every peer's per-sender digests with ours (see "Echo check" above)."""
        certain: set[int] = set()
        mismatches: list[tuple[int, int]] = []
        for j, echo in echoes.items():
            for s, d in zip(self.participants, echo, strict=True):
                if d == self._digests[s]:
                    continue
                if s in (j, self.me):
                    certain.add(j)
                else:
                    mismatches.append((s, j))
        if certain:
            raise ProtocolError(
                "echo check: misreported its own round-1 broadcast or ours (equivocation)",
                culprits=tuple(certain),
            )
        if mismatches:
            desc = ", ".join(f"party {s} as seen by party {j}" for s, j in sorted(mismatches))
            raise EquivocationError(
                f"echo check: round-1 broadcasts differ ({desc}): the subject equivocated "
                "or the reporter misreports",
                mismatches=mismatches,
            )


def _identity_error() -> ProtocolError:
    return ProtocolError(
        "group key or a verifying share is the identity (probability ~n/q): rerun the DKG",
        culprits=(),
    )
