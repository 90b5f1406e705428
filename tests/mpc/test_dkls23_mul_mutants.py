"""DKLs23 F_RVOLE (mpc.dkls23.mul): correctness and every check of the OT extension and the
multiplication, each attack named after what it forges (issue 16, mutation testing).

Pure and keyless: the base-OT seeds of one ordered pair are made here directly as the
random OTs they are (Bob keeps both pads per column, Alice her random choice bits Delta
and the chosen pads), so no DKG, no base OT and no signing key is involved; Alice's inputs
are random test scalars. First in ``mutation.toml``'s selection for ``mpc/dkls23/mul.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import secrets
from collections.abc import Callable

import pytest

from mpc.dkls23.mul import (
    RHO_BYTES,
    AliceSeeds,
    BobSeeds,
    MulAlice,
    MulBob,
    MulReply,
    OteExtension,
    _prg_columns,
    check_rho,
    ext_context,
    mul_context,
    pair_context,
)
from mpc.dkls23.params import COL_BYTES, ETA, GROUP, KAPPA, XI, Q, gadget, h
from mpc.errors import DecodeError, ProtocolError, UsageError
from mpc.wire import decode_payload, encode_payload

CTX = b"mul-test-context"
_TAU = XI * 4 * 32
ALICE, BOB = 3, 1


def make_seeds(seed: int = 0) -> tuple[BobSeeds, AliceSeeds]:
    """One ordered pair's random OTs: Bob both pads, Alice Delta and k_{Delta_l}."""
    rnd = random.Random(seed)
    k0 = [rnd.randbytes(32) for _ in range(KAPPA)]
    k1 = [rnd.randbytes(32) for _ in range(KAPPA)]
    delta = rnd.getrandbits(KAPPA) | 1 | 1 << (KAPPA - 1)  # both end columns chosen 1
    delta &= ~(1 << 1)  # and column 1 chosen 0
    kd = [k1[col] if delta >> col & 1 else k0[col] for col in range(KAPPA)]
    return BobSeeds(b"".join(k0), b"".join(k1)), AliceSeeds(delta, b"".join(kd))


SEEDS = make_seeds()


def parties(rho_b: bytes | None = None, rho_a: bytes | None = None) -> tuple[MulBob, MulAlice]:
    bob_seeds, alice_seeds = SEEDS
    rb = rho_b or secrets.token_bytes(RHO_BYTES)
    ra = rho_a or secrets.token_bytes(RHO_BYTES)
    return (
        MulBob(bob_seeds, CTX, alice=ALICE, bob=BOB, rho=rb),
        MulAlice(alice_seeds, CTX, alice=ALICE, bob=BOB, rho=ra),
    )


def fixed_bits(value: int) -> Callable[[int], bytes]:
    """An RNG that returns Bob's choice bits ``value`` (little-endian, as round1 reads them)."""
    return lambda n: value.to_bytes(n, "little")


def flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


A_IN = (0x1234567 * 0xDEADBEEF % Q, Q - 5)


# -- honest runs --------------------------------------------------------------------------


@pytest.mark.parametrize("a", [A_IN, (0, 1), (Q - 1, Q - 1), (Q + 7, 2 * Q - 1)])
def test_the_outputs_add_up_to_chi_times_a(a: tuple[int, int]) -> None:
    """F_RVOLE (DKLs23 Functionality 3.5): c_i + d_i = chi * a_i mod q, chi = <g, x>."""
    bob, alice = parties()
    ext = bob.round1()
    reply, c = alice.round2(ext, a)
    d = bob.round3(reply, rho_alice=alice.rho)
    assert 0 <= c[0] < Q and 0 <= c[1] < Q and 0 <= d[0] < Q and 0 <= d[1] < Q
    for i in range(2):
        assert (c[i] + d[i]) % Q == bob.chi * a[i] % Q, i
    g = gadget(mul_context(pair_context(CTX, ALICE, BOB, alice.rho, bob.rho), ALICE, BOB))
    x = bob._x
    assert bob.chi == sum(g[j] for j in range(XI) if x >> j & 1) % Q
    assert 0 < bob.chi < Q
    assert bob._rows == b""  # Bob's rows are dropped after his output


def test_chi_uses_exactly_the_first_xi_choice_bits() -> None:
    """Bob's last S choice bits only mask the check; flipping them leaves chi unchanged."""
    bob_seeds, _ = SEEDS
    rb = secrets.token_bytes(32)
    ra = secrets.token_bytes(32)
    x = secrets.randbits(ETA)
    chis = []
    for bits in (x, x ^ (1 << XI), x ^ (1 << (ETA - 1))):
        b = MulBob(
            bob_seeds,
            CTX,
            alice=ALICE,
            bob=BOB,
            rho=rb,
            rng=fixed_bits(bits),
        )
        b.round1()
        chis.append(b.bind(ra))
    assert chis[0] == chis[1] == chis[2]
    b = MulBob(
        bob_seeds,
        CTX,
        alice=ALICE,
        bob=BOB,
        rho=rb,
        rng=fixed_bits(x ^ 1 << (XI - 1)),
    )
    b.round1()
    assert b.bind(ra) != chis[0]


def test_message_sizes() -> None:
    bob, alice = parties()
    ext = bob.round1()
    assert len(ext.rho) == 32 and len(ext.u) == COL_BYTES * KAPPA == 128 * 256
    assert len(ext.x_dot) == 16 and len(ext.t_dot) == 16 * KAPPA
    reply, _ = alice.round2(ext, A_IN)
    assert len(reply.tau) == XI * 4 * 32 and len(reply.mu) == 2 and len(reply.r_hash) == 32


def test_payloads_and_seeds_are_frozen_and_seeds_hidden() -> None:
    bob_seeds, alice_seeds = SEEDS
    for obj, name in ((bob_seeds, "k0"), (alice_seeds, "delta")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, b"")
    assert "k0=" not in repr(bob_seeds) and "k1=" not in repr(bob_seeds)
    assert "delta=" not in repr(alice_seeds) and "kd=" not in repr(alice_seeds)
    bob, alice = parties()
    ext = bob.round1()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ext.u = b""  # type: ignore[misc]
    reply, _ = alice.round2(ext, A_IN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.tau = b""  # type: ignore[misc]


# -- contexts ---------------------------------------------------------------------------------


def test_contexts_are_the_documented_hashes() -> None:
    ra, rb = bytes(range(32)), bytes(range(32, 64))
    assert ext_context(CTX, ALICE, BOB, rb) == h(
        b"DKLs23 OTE extension context v2", CTX, ALICE, BOB, rb
    )
    pc = pair_context(CTX, ALICE, BOB, ra, rb)
    assert pc == h(b"DKLs23 pair context", CTX, BOB, ALICE, rb, ra)  # sorted by identifier
    assert pc == pair_context(CTX, BOB, ALICE, rb, ra)  # symmetric
    assert pc != pair_context(CTX, ALICE, BOB, rb, ra)  # but each rho stays with its party
    assert mul_context(pc, ALICE, BOB) == h(b"DKLs23 OTE/mul context v2", pc, ALICE, BOB)
    assert mul_context(pc, ALICE, BOB) != mul_context(pc, BOB, ALICE)
    with pytest.raises(UsageError, match="a pair needs two parties"):
        pair_context(CTX, 2, 2, ra, rb)


def test_contributions_are_checked_naming_the_peer() -> None:
    own = bytes(32)
    check_rho(bytes(range(32)), own, peer=4, me=2)
    for bad in (b"", bytes(31), bytes(33), "0" * 32):
        with pytest.raises(DecodeError, match="32-byte contribution") as e:
            check_rho(bad, own, peer=4, me=2)  # type: ignore[arg-type]
        assert e.value.party == 4 and e.value.field == "rho"
    with pytest.raises(ProtocolError, match="party 4 sent party 2's own contribution") as p:
        check_rho(own, own, peer=4, me=2)
    assert p.value.culprits == (4,) and p.value.pair == (2, 4)
    with pytest.raises(ProtocolError) as p:
        check_rho(own, own, peer=1, me=2)
    assert p.value.pair == (1, 2)


def test_rho_length_is_checked_on_construction() -> None:
    bob_seeds, alice_seeds = SEEDS
    for n in (31, 33):
        with pytest.raises(UsageError, match="rho must be RHO_BYTES bytes"):
            MulBob(bob_seeds, CTX, alice=ALICE, bob=BOB, rho=bytes(n))
        with pytest.raises(UsageError, match="rho must be RHO_BYTES bytes"):
            MulAlice(alice_seeds, CTX, alice=ALICE, bob=BOB, rho=bytes(n))


def test_bind_order_idempotence_and_a_second_contribution() -> None:
    bob, alice = parties()
    with pytest.raises(UsageError, match="before round1"):
        bob.bind(alice.rho)
    bob.round1()
    chi = bob.bind(alice.rho)
    assert bob.bind(alice.rho) == chi
    with pytest.raises(ProtocolError, match="party 3 gave party 1 two different") as e:
        bob.bind(secrets.token_bytes(32))
    assert e.value.culprits == (ALICE,) and e.value.pair == (1, 3)


def test_a_reflected_contribution_is_refused_by_both_sides() -> None:
    rho = secrets.token_bytes(32)
    bob, alice = parties(rho_b=rho, rho_a=rho)
    ext = bob.round1()
    with pytest.raises(ProtocolError, match="party 1 sent party 3's own contribution") as e:
        alice.round2(ext, A_IN)
    assert e.value.culprits == (BOB,)
    with pytest.raises(ProtocolError, match="party 3 sent party 1's own contribution") as e:
        bob.bind(rho)
    assert e.value.culprits == (ALICE,)


# -- Bob cheats: the OT-extension consistency check (KOS15 Fig. 10, Check.3) --------------------


def _alice_refuses_bob(ext: OteExtension, alice: MulAlice) -> None:
    with pytest.raises(ProtocolError, match="consistency check failed: Bob 1 towards Alice 3") as e:
        alice.round2(ext, A_IN)
    assert e.value.culprits == (BOB,) and e.value.pair == (1, 3)


@pytest.mark.parametrize("col", [0, 1, KAPPA - 1])
@pytest.mark.parametrize("bit", [0, XI - 1, XI, ETA - 1])
def test_a_flipped_bit_of_u_fails_the_consistency_check(col: int, bit: int) -> None:
    """Selective failure: a column of u built with other choice bits (one bit differs)."""
    bob, alice = parties()
    ext = bob.round1()
    u = flip(ext.u, 8 * COL_BYTES * col + bit)
    _alice_refuses_bob(dataclasses.replace(ext, u=u), alice)


@pytest.mark.parametrize("bit", [0, 127])
def test_a_wrong_x_dot_fails_the_consistency_check(bit: int) -> None:
    bob, alice = parties()
    ext = bob.round1()
    _alice_refuses_bob(dataclasses.replace(ext, x_dot=flip(ext.x_dot, bit)), alice)


@pytest.mark.parametrize("bit", [0, 8 * 16 * 1 + 3, 8 * 16 * KAPPA - 1])
def test_a_wrong_t_dot_fails_the_consistency_check(bit: int) -> None:
    bob, alice = parties()
    ext = bob.round1()
    _alice_refuses_bob(dataclasses.replace(ext, t_dot=flip(ext.t_dot, bit)), alice)


def test_an_extension_under_another_context_fails_the_check() -> None:
    """Bob's extension is bound to ext_ctx (context, direction, his rho): replaying it under
    another rho (or towards another Alice) is refused by the check."""
    bob, alice = parties()
    ext = bob.round1()
    _alice_refuses_bob(dataclasses.replace(ext, rho=secrets.token_bytes(32)), alice)
    other = MulAlice(SEEDS[1], CTX + b"!", alice=ALICE, bob=BOB, rho=alice.rho)
    _alice_refuses_bob(ext, other)


# -- Alice cheats: DKLs19 Protocol 1 step 6 ----------------------------------------------------


def _bob_refuses_alice(reply: MulReply, bob: MulBob, rho_a: bytes) -> None:
    with pytest.raises(
        ProtocolError, match="check failed: Alice 3 inconsistent towards Bob 1"
    ) as e:
        bob.round3(reply, rho_alice=rho_a)
    assert e.value.culprits == (ALICE,) and e.value.pair == (1, 3)


def _run_to_reply() -> tuple[MulBob, MulAlice, MulReply]:
    bob, alice = parties()
    reply, _ = alice.round2(bob.round1(), A_IN)
    return bob, alice, reply


def _tau_with(reply: MulReply, index: int, delta: int) -> MulReply:
    tau = bytearray(reply.tau)
    v = (int.from_bytes(tau[32 * index : 32 * index + 32], "big") + delta) % Q
    tau[32 * index : 32 * index + 32] = v.to_bytes(32, "big")
    return dataclasses.replace(reply, tau=bytes(tau))


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4 * XI - 1, 4 * 17 + 2])
def test_an_inconsistent_tau_is_blamed_on_alice(index: int) -> None:
    """Each of the four correlated scalars of any OT j (a_1, a_2, a_hat_1, a_hat_2)."""
    bob, alice, reply = _run_to_reply()
    _bob_refuses_alice(_tau_with(reply, index, 1), bob, alice.rho)


@pytest.mark.parametrize("i", [0, 1])
def test_an_inconsistent_mu_is_blamed_on_alice(i: int) -> None:
    bob, alice, reply = _run_to_reply()
    mu = list(reply.mu)
    mu[i] = (mu[i] + 1) % Q
    _bob_refuses_alice(dataclasses.replace(reply, mu=tuple(mu)), bob, alice.rho)


def test_a_wrong_r_hash_is_blamed_on_alice() -> None:
    bob, alice, reply = _run_to_reply()
    _bob_refuses_alice(dataclasses.replace(reply, r_hash=flip(reply.r_hash, 255)), bob, alice.rho)


def test_a_reply_computed_for_another_context_is_blamed_on_alice() -> None:
    bob, alice = parties()
    ext = bob.round1()
    other = MulAlice(SEEDS[1], CTX, alice=ALICE, bob=BOB, rho=secrets.token_bytes(32))
    reply, _ = other.round2(ext, A_IN)
    _bob_refuses_alice(reply, bob, alice.rho)  # computed under another rho_A than Bob binds


@pytest.mark.parametrize("index", [0, 3, 4 * XI - 1])
@pytest.mark.parametrize("value", [Q, Q + 1, 2**256 - 1])
def test_a_non_canonical_tau_scalar_is_a_decode_error_naming_alice(index: int, value: int) -> None:
    bob, alice, reply = _run_to_reply()
    tau = bytearray(reply.tau)
    tau[32 * index : 32 * index + 32] = value.to_bytes(32, "big")
    with pytest.raises(DecodeError, match="non-canonical scalar") as e:
        bob.round3(dataclasses.replace(reply, tau=bytes(tau)), rho_alice=alice.rho)
    assert e.value.party == ALICE and e.value.field == "tau"


def test_an_alice_with_other_seeds_fails_the_consistency_check() -> None:
    """Alice's Delta or pads not matching Bob's seeds (a corrupted share) fail Check.3."""
    bob, _ = parties()
    ext = bob.round1()
    bad = MulAlice(make_seeds(1)[1], CTX, alice=ALICE, bob=BOB, rho=secrets.token_bytes(32))
    _alice_refuses_bob(ext, bad)
    one = SEEDS[1]
    kd = bytearray(one.kd)
    kd[0] ^= 1
    bad = MulAlice(
        AliceSeeds(one.delta, bytes(kd)), CTX, alice=ALICE, bob=BOB, rho=secrets.token_bytes(32)
    )
    _alice_refuses_bob(ext, bad)


def test_alice_check_pads_are_fresh_per_run() -> None:
    """a_hat from Alice's RNG: two runs under the same transcript give different mu."""
    draws: list[int] = []

    def rng(n: int) -> bytes:
        draws.append(n)
        return secrets.token_bytes(n)

    bob_seeds, alice_seeds = SEEDS
    bob = MulBob(bob_seeds, CTX, alice=ALICE, bob=BOB, rho=secrets.token_bytes(32))
    ext = bob.round1()
    ra = secrets.token_bytes(32)
    one = MulAlice(alice_seeds, CTX, alice=ALICE, bob=BOB, rho=ra, rng=rng)
    r1, c1 = one.round2(ext, A_IN)
    assert draws == [64, 64]
    r2, c2 = MulAlice(alice_seeds, CTX, alice=ALICE, bob=BOB, rho=ra).round2(ext, A_IN)
    assert c1 == c2 and r1.mu != r2.mu
    assert bob.round3(r1, rho_alice=ra) == MulBob.round3(
        _fresh_bob_like(bob_seeds, ext, bob), r2, rho_alice=ra
    )


def _fresh_bob_like(seeds: BobSeeds, ext: OteExtension, bob: MulBob) -> MulBob:
    """A second Bob with the same choice bits and rho (to check the second reply)."""
    x = bob._x
    twin = MulBob(seeds, CTX, alice=ALICE, bob=BOB, rho=ext.rho, rng=fixed_bits(x))
    assert twin.round1() == ext
    return twin


# -- encodings: a recorded transcript ------------------------------------------------------------


def _counter_rng() -> Callable[[int], bytes]:
    n = [0]

    def rng(k: int) -> bytes:
        n[0] += 1
        return hashlib.shake_256(b"alice rng %d" % n[0]).digest(k)

    return rng


def test_recorded_transcript_of_one_multiplication() -> None:
    """No RFC or paper gives vectors for this F_RVOLE: the transcript of one run with fixed
    seeds, contributions and randomness, recorded from this implementation (session 21).
    It pins every encoding of the run: the labels, the 2-byte OT index in the column PRG
    and the row hash, the seed slicing, the check and the derandomisation. A change here
    breaks every stored presignature's compatibility between nodes of different versions."""
    x = random.Random(7).getrandbits(ETA)
    bob = MulBob(SEEDS[0], CTX, alice=ALICE, bob=BOB, rho=bytes(range(32)), rng=fixed_bits(x))
    alice = MulAlice(
        SEEDS[1], CTX, alice=ALICE, bob=BOB, rho=bytes(range(32, 64)), rng=_counter_rng()
    )
    ext = bob.round1()
    reply, c = alice.round2(ext, (5, 7))
    d = bob.round3(reply, rho_alice=alice.rho)
    digest = hashlib.sha256(ext.u + ext.x_dot + ext.t_dot).hexdigest()
    assert digest == "c272a2b3625e5b670be93d951942cc40d62d1f96a927148fe5ee21db317b8082"
    mu = b"".join(m.to_bytes(32, "big") for m in reply.mu)
    digest = hashlib.sha256(reply.tau + mu + reply.r_hash).hexdigest()
    assert digest == "3846601da4619b594d84f686cb50948da818826da19c629375358dee333313b9"
    assert bob.chi == 0x41BD82844DFDB2C901F783F5C5226A93FCDB1E871ABC54B6791C37850431E2DA
    assert c[0] == 0x5BCEF0FA63933D9F36E0AF765017AACE9E2D5853105866DA9A8465AAD4C810D5
    assert d[0] == 0xECE49B9B2261404DD2F4E45689946A15521A4050755540B5C308AFEE40315D6D
    assert (c[0] + d[0]) % Q == bob.chi * 5 % Q and (c[1] + d[1]) % Q == bob.chi * 7 % Q


@pytest.mark.parametrize("col", [0, 1, 2, KAPPA - 1])
def test_each_column_of_the_prg_depends_on_all_of_its_own_seed_only(col: int) -> None:
    """KOS15 Ext.2: column l is PRG(seed l); every byte of seed l matters, no other seed does."""
    seeds = bytes(range(256)) * (32 * KAPPA // 256)
    base = _prg_columns(CTX, seeds)
    assert len(base) == KAPPA and all(len(c) == COL_BYTES for c in base)
    assert len(set(base)) == KAPPA
    for byte in (32 * col, 32 * col + 31):
        changed = _prg_columns(CTX, seeds[:byte] + bytes([seeds[byte] ^ 1]) + seeds[byte + 1 :])
        assert changed[col] != base[col], byte
        assert [c for k, c in enumerate(changed) if k != col] == [
            c for k, c in enumerate(base) if k != col
        ]


def test_a_zero_mu_is_a_scalar_like_any_other() -> None:
    """mu_i = chi~_i a_i + chi^_i a_hat_i is 0 with probability 1/q for an honest Alice;
    refusing it would blame her. It decodes as 0; a non-canonical one is refused."""
    reply = MulReply(bytes(_TAU), (0, Q - 1), bytes(32))
    got = decode_payload(MulReply, encode_payload(reply, GROUP), group=GROUP, party=3)
    assert got.mu == (0, Q - 1)
    wire = dict(encode_payload(reply, GROUP))
    wire["mu"] = [Q.to_bytes(32, "big"), bytes(32)]
    with pytest.raises(DecodeError) as e:
        decode_payload(MulReply, wire, group=GROUP, party=3)
    assert e.value.party == 3
