"""The DKG transcript, rebuilt byte for byte from the documented formulas (mpc/dkg.py).

The recorded vectors (tests/vectors/own/) pin the wire bytes of one seeded run; here every
field of the proof-of-knowledge challenge and of the echo digest is rebuilt by hand from the
module docstring (domain separator, 4-byte length prefixes, the 2-byte sender, the 2-byte
commitment count), so a change to any of them fails with the field in view:

* an ed25519 proof must be a plain Ed25519 signature (checked by pynacl and cryptography)
  of ``M = lp("TPWC-v1/frost-dkg/ed25519/pok") || lp(context) || session_id || i (2 bytes)``
  under ``C_i0``; a secp256k1 proof must satisfy ``mu G = R + c C_i0`` with
  ``c = SHA-512(R || C_i0 || M)`` read big-endian, checked with coincurve (libsecp256k1);
* every echo digest is ``SHA-256`` over the length-prefixed fields, 32 bytes each.

And the identity checks on the group key and the verifying shares (issue 16): dealers
whose polynomials cancel, in the group key or at one participant, abort the DKG with no
key for anyone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Callable, Sequence

import coincurve
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.signing import VerifyKey

from mpc import hazmat
from mpc.dkg import ECHO_LEN, DkgRound1, DkgRound2, DkgSession
from mpc.errors import ProtocolError, UsageError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.testing import run_local
from mpc.wire import Message, decode_payload

CONTEXT = b"key:treasury-1"


def lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def pok_message(group: Group, session_id: bytes, sender: int) -> bytes:
    return (
        lp(b"TPWC-v1/frost-dkg/" + group.name.encode() + b"/pok")
        + lp(CONTEXT)
        + session_id
        + sender.to_bytes(2, "big")
    )


def run_recorded(
    group: Group, t: int, n: int
) -> tuple[bytes, dict[int, DkgRound1], list[Message], dict[int, object]]:
    sid = secrets.token_bytes(32)
    ids = list(range(1, n + 1))
    sessions = {i: DkgSession(group, sid, i, ids, t, CONTEXT) for i in ids}
    seen: list[Message] = []

    def record(m: Message) -> Message:
        seen.append(m)
        return m

    results = run_local(sessions, wire=True, tamper=record)
    round1 = {
        m.sender: decode_payload(DkgRound1, m.payload, group=group, party=m.sender, sizes={"t": t})
        for m in seen
        if m.round == 1
    }
    assert sorted(round1) == ids  # one broadcast per party (run_local delivers it once)
    return sid, round1, [m for m in seen if m.round == 2], results


@pytest.mark.parametrize(("t", "n"), [(2, 3), (3, 4)])
def test_ed25519_proof_is_a_plain_ed25519_signature_of_the_documented_message(
    t: int, n: int
) -> None:
    sid, round1, _, _ = run_recorded(ED25519, t, n)
    for s, b in round1.items():
        msg = pok_message(ED25519, sid, s)
        sig = b.pok_r.encode() + b.pok_mu.to_bytes(32, "little")
        pk = b.commitment[0].encode()
        VerifyKey(pk).verify(msg, sig)  # raises on a bad signature
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
        # the same proof under another sender field (3 bytes, or another sender) fails
        wrong = msg[:-2] + s.to_bytes(3, "big")
        with pytest.raises(Exception, match="[Ss]ignature"):
            VerifyKey(pk).verify(wrong, sig)
        with pytest.raises(Exception, match="[Ss]ignature"):
            VerifyKey(pk).verify(pok_message(ED25519, sid, s % n + 1), sig)


def test_secp256k1_proof_satisfies_the_documented_equation_in_libsecp256k1() -> None:
    sid, round1, _, _ = run_recorded(SECP256K1, 3, 4)
    order = SECP256K1.order
    for s, b in round1.items():
        r, c0 = b.pok_r.encode(), b.commitment[0].encode()
        digest = hashlib.sha512(r + c0 + pok_message(SECP256K1, sid, s)).digest()
        c = int.from_bytes(digest, "big") % order
        lhs = coincurve.PublicKey.from_secret(b.pok_mu.to_bytes(32, "big"))
        rhs = coincurve.PublicKey.combine_keys(
            [coincurve.PublicKey(r), coincurve.PublicKey(c0).multiply(c.to_bytes(32, "big"))]
        )
        assert lhs.format() == rhs.format()
        # read little-endian (the ed25519 rule) the equation fails
        c_le = int.from_bytes(digest, "little") % order
        wrong = coincurve.PublicKey.combine_keys(
            [coincurve.PublicKey(r), coincurve.PublicKey(c0).multiply(c_le.to_bytes(32, "big"))]
        )
        assert lhs.format() != wrong.format()


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
def test_echo_digests_are_the_documented_sha256_of_each_broadcast(group: Group) -> None:
    t, n = 2, 3
    sid, round1, round2, results = run_recorded(group, t, n)

    def digest(s: int) -> bytes:
        b = round1[s]
        h = hashlib.sha256()
        for part in (
            b"TPWC-v1/frost-dkg/" + group.name.encode() + b"/echo",
            CONTEXT,
            sid,
            s.to_bytes(2, "big"),
            len(b.commitment).to_bytes(2, "big"),
            *(p.encode() for p in b.commitment),
            b.pok_r.encode(),
            group.encode_scalar(b.pok_mu),
        ):
            h.update(lp(part))
        return h.digest()

    expected = tuple(digest(s) for s in range(1, n + 1))
    assert ECHO_LEN == 32 and all(len(d) == ECHO_LEN for d in expected)
    assert len(round2) == n * (n - 1)
    for m in round2:
        p = decode_payload(DkgRound2, m.payload, group=group, party=m.sender, sizes={"n": n})
        assert p.echo == expected, f"echo of party {m.sender} to {m.recipient}"
        assert hazmat.echo_digest(
            group, CONTEXT, sid, m.sender, round1[m.sender].commitment,
            round1[m.sender].pok_r, round1[m.sender].pok_mu,
        ) == expected[m.sender - 1]  # fmt: skip
    # and the run gave one key, whose group key is the sum of the constant terms
    keys = list(results.values())
    y = group.sum([round1[s].commitment[0] for s in range(1, n + 1)])
    assert all(k.public.group_public_key == y for k in keys)  # type: ignore[attr-defined]


# -- identity group key or verifying share ---------------------------------------------------


def scripted(group: Group, scalars: Sequence[int]) -> Callable[[int], bytes]:
    """An rng whose first draws of ``random_scalar`` are ``scalars`` (then OS randomness)."""
    queue = [s % group.order for s in scalars]

    def rng(k: int) -> bytes:
        if k == 64 and queue:
            return queue.pop(0).to_bytes(64, "big")
        return secrets.token_bytes(k)

    return rng


def run_with_polynomials(group: Group, polys: dict[int, list[int]], t: int) -> None:
    sid = secrets.token_bytes(32)
    ids = sorted(polys)
    sessions = {i: DkgSession(group, sid, i, ids, t, CONTEXT) for i in ids}
    for i, s in sessions.items():
        hazmat.set_rng(s, scripted(group, polys[i]))
    run_local(sessions, wire=True)


def rand(group: Group) -> int:
    return group.random_scalar()


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
def test_dealers_whose_polynomials_cancel_get_no_key(group: Group) -> None:
    # Every dealer's proof is valid, but the polynomials sum to zero: the group key (and
    # every coefficient of the summed polynomial) is the identity. Nobody gets a key.
    q = group.order
    a, b = [rand(group), rand(group)], [rand(group), rand(group)]
    c = [(-a[k] - b[k]) % q for k in range(2)]
    with pytest.raises(ProtocolError, match="identity") as exc:
        run_with_polynomials(group, {1: a, 2: b, 3: c}, 2)
    assert exc.value.culprits == ()


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
@pytest.mark.parametrize("victim", [1, 3])
def test_dealers_who_zero_one_verifying_share_get_no_key(group: Group, victim: int) -> None:
    # The summed polynomial F(x) = u (x - victim): the group key -u victim G is fine, but
    # the victim's verifying share F(victim) G is the identity (a signing share of 0 that
    # every party would accept). The identity check aborts the DKG for everyone.
    q = group.order
    u = rand(group)
    target = [(-u * victim) % q, u]
    a, b = [rand(group), rand(group)], [rand(group), rand(group)]
    c = [(target[k] - a[k] - b[k]) % q for k in range(2)]
    with pytest.raises(ProtocolError, match="identity") as exc:
        run_with_polynomials(group, {1: a, 2: b, 3: c}, 2)
    assert exc.value.culprits == ()


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
def test_scripted_polynomials_that_do_not_cancel_give_the_expected_key(group: Group) -> None:
    # The control for the two tests above: the same scripted run with polynomials that do
    # not cancel finishes, with the group key sum_i a_i0 G.
    q = group.order
    polys = {i: [rand(group), rand(group)] for i in (1, 2, 3)}
    sid = secrets.token_bytes(32)
    sessions = {i: DkgSession(group, sid, i, [1, 2, 3], 2, CONTEXT) for i in polys}
    for i, s in sessions.items():
        hazmat.set_rng(s, scripted(group, polys[i]))
    keys = run_local(sessions, wire=True)
    # (sum of the dealers' public constant terms: the secret itself is never summed here)
    y = group.sum([group.base_mul(p[0]) for p in polys.values()])
    assert all(keys[j].public.group_public_key == y for j in (1, 2, 3))
    for j in (1, 2, 3):
        fj = sum(p[0] + p[1] * j for p in polys.values()) % q
        assert keys[j].signing_share == fj


# -- session parameters ----------------------------------------------------------------------


def test_context_is_bytes_of_at_most_one_kib() -> None:
    sid = secrets.token_bytes(32)
    DkgSession(ED25519, sid, 1, [1, 2], 2, b"c" * 1024)  # the limit itself is accepted
    for bad in (b"c" * 1025, "text", bytearray(b"c")):
        with pytest.raises(UsageError, match="context must be bytes of at most 1024"):
            DkgSession(ED25519, sid, 1, [1, 2], 2, bad)  # type: ignore[arg-type]


def test_only_the_two_groups_are_supported() -> None:
    class Other(type(ED25519)):  # type: ignore[misc]
        name = "other"

    with pytest.raises(UsageError, match="unsupported group"):
        DkgSession(Other(), secrets.token_bytes(32), 1, [1, 2], 2)


# -- payload types -----------------------------------------------------------------------------


def test_round2_shares_never_appear_in_a_repr() -> None:
    # A log line or traceback showing a round-2 message must not show the secret share.
    group, n = SECP256K1, 3
    _, _, round2, _ = run_recorded(group, 2, n)
    for m in round2:
        p = decode_payload(DkgRound2, m.payload, group=group, party=m.sender, sizes={"n": n})
        enc = group.encode_scalar(p.share)
        for text in (repr(m), repr(m.payload), str(m.payload), repr(p)):
            assert enc.hex() not in text and str(p.share) not in text
            assert repr(enc) not in text
        assert bytes(m.payload["share"]) == enc  # the bytes are there, only hidden


def test_a_zero_proof_response_is_decoded_and_then_blamed_as_a_bad_proof() -> None:
    # mu = 0 is a scalar like any other (Figure 1: mu = k + a c mod q); a proof carrying it
    # fails verification and names its sender, as any forged proof does.
    sid = secrets.token_bytes(32)
    ids = [1, 2, 3]
    sessions = {i: DkgSession(ED25519, sid, i, ids, 2, CONTEXT) for i in ids}

    def zero_mu(m: Message) -> Message:
        if m.round == 1 and m.sender == 2:
            return dataclasses.replace(m, payload={**m.payload, "pok_mu": bytes(32)})
        return m

    with pytest.raises(ProtocolError, match="proof of knowledge") as exc:
        run_local(sessions, wire=True, tamper=zero_mu)
    assert exc.value.culprits == (2,)


def test_decoded_payloads_are_frozen() -> None:
    _, round1, round2, _ = run_recorded(ED25519, 2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        round1[1].pok_mu = 0  # type: ignore[misc]
    p = decode_payload(DkgRound2, round2[0].payload, group=ED25519, party=None, sizes={"n": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.share = 0  # type: ignore[misc]
