"""DKLs23 threshold ECDSA: correctness, independent verification, binding and storage contract."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import secrets
import typing

import coincurve
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc.dealer import split_existing_key
from mpc.dkls23 import (
    EcdsaKeyShare,
    PartialSignature,
    Presignature,
    PresignaturePublic,
    PresignSession,
    _bits,
    combine_signature,
    sign_with_presignature,
)
from mpc.dkls23.mul import MulAlice, MulBob
from mpc.dkls23.params import Q
from mpc.errors import NonceReuseError, ProtocolError, UsageError
from mpc.groups import SECP256K1
from mpc.shamir import KeyPackage
from mpc.testing import MemoryLedger, run_keygen_local, run_local, run_ot_setup_local

G = SECP256K1


def dealer_import_for_tests(secret: int, t: int, n: int) -> list[KeyPackage]:
    """Dealer import (:func:`mpc.dealer.split_existing_key`) of a known secret, for tests.

    Used by the test that checks the secret never appears in any protocol value.
    """
    return split_existing_key(G, secret, t, list(range(1, n + 1)))


@pytest.fixture(scope="module")
def keys23() -> dict[int, EcdsaKeyShare]:
    return run_keygen_local(2, 3)


@pytest.fixture(scope="module")
def keys35() -> dict[int, EcdsaKeyShare]:
    return run_keygen_local(3, 5)


def presign(
    keys: dict[int, EcdsaKeyShare], signers: tuple[int, ...], **kw: typing.Any
) -> dict[int, Presignature]:
    sid = secrets.token_bytes(32)
    res: dict[int, Presignature] = run_local(
        {i: PresignSession(keys[i], sid, signers) for i in signers}, **kw
    )
    return res


def sign(
    keys: dict[int, EcdsaKeyShare], signers: tuple[int, ...], msg_hash: bytes, **kw: typing.Any
):  # type: ignore[no-untyped-def]
    pres = presign(keys, signers, **kw)
    parts = [
        sign_with_presignature(pres[i], keys[i], msg_hash, ledger=MemoryLedger()) for i in signers
    ]
    pub = pres[signers[0]].public
    assert all(p.public == pub for p in pres.values())
    return combine_signature(pub, parts, msg_hash, keys[signers[0]].group_public_key)


def check_independently(sig, msg_hash: bytes, pk_bytes: bytes) -> None:  # type: ignore[no-untyped-def]
    assert 0 < sig.s <= Q // 2, "high s"
    assert coincurve.PublicKey(pk_bytes).verify(sig.to_der(), msg_hash, hasher=None)
    rec = coincurve.PublicKey.from_signature_and_message(sig.to_compact(), msg_hash, hasher=None)
    assert rec.format() == pk_bytes
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), pk_bytes)
    pub.verify(sig.to_der(), msg_hash, ec.ECDSA(Prehashed(hashes.SHA256())))  # raises if invalid


# -- building blocks -----------------------------------------------------------------------


def test_transpose_matches_naive() -> None:
    cols = [secrets.token_bytes(80) for _ in range(256)]
    rows = _bits.columns_to_rows(cols, 512)
    ints = [int.from_bytes(c, "little") for c in cols]
    for j in (0, 1, 255, 256, 511):
        r = int.from_bytes(rows[32 * j : 32 * j + 32], "little")
        assert all((r >> col) & 1 == (ints[col] >> j) & 1 for col in range(256))


def test_chunk_hash_matches_gf128_reference() -> None:
    def gmul(a: int, b: int) -> int:
        r = 0
        for i in range(128):
            if b >> i & 1:
                r ^= a << i
        for i in range(254, 127, -1):
            if r >> i & 1:
                r ^= (1 << i) ^ (0x87 << (i - 128))
        return r

    cols = [secrets.token_bytes(80) for _ in range(256)]
    chis = [secrets.randbits(128) for _ in range(4)]
    out = _bits.check_hash(b"".join(cols), 256, chis)
    assert len(out) == 16 * 256
    assert _bits.check_hash(cols[7], 1, chis) == out[16 * 7 : 16 * 8]
    for col in (0, 100, 255):
        v = int.from_bytes(cols[col], "little")
        ch = [(v >> (128 * c)) & ((1 << 128) - 1) for c in range(5)]
        want = ch[4]
        for c in range(4):
            want ^= gmul(ch[c], chis[c])
        assert int.from_bytes(out[16 * col : 16 * col + 16], "little") == want


def test_rvole_multiplication_correct(keys23: dict[int, EcdsaKeyShare]) -> None:
    ctx = secrets.token_bytes(32)
    rho_b, rho_a = secrets.token_bytes(32), secrets.token_bytes(32)
    bob = MulBob(keys23[1].bob[2], ctx, alice=2, bob=1, rho=rho_b)
    alice = MulAlice(keys23[2].alice[1], ctx, alice=2, bob=1, rho=rho_a)
    a = (G.random_scalar(), G.random_scalar())
    msg, c = alice.round2(bob.round1(), a)
    d = bob.round3(msg, rho_alice=rho_a)
    assert all((c[i] + d[i]) % Q == bob.chi * a[i] % Q for i in range(2))


# -- signing -------------------------------------------------------------------------------


def test_every_t_subset_signs_2_of_3(keys23: dict[int, EcdsaKeyShare]) -> None:
    pk = keys23[1].group_public_key.encode()
    for signers in [(1, 2), (1, 3), (2, 3), (1, 2, 3)]:
        h = hashlib.sha256(repr(signers).encode()).digest()
        check_independently(sign(keys23, signers, h), h, pk)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_t_subset_of_3_of_5_signs(
    keys35: dict[int, EcdsaKeyShare], data: st.DataObject
) -> None:
    size = data.draw(st.integers(3, 4))
    signers = tuple(sorted(data.draw(st.permutations([1, 2, 3, 4, 5]))[:size]))
    h = data.draw(st.binary(min_size=32, max_size=32))
    check_independently(sign(keys35, signers, h), h, keys35[1].group_public_key.encode())


def test_fewer_than_t_cannot_sign(keys35: dict[int, EcdsaKeyShare]) -> None:
    for signers in itertools.combinations(range(1, 6), 2):
        with pytest.raises(UsageError):
            PresignSession(keys35[signers[0]], secrets.token_bytes(32), signers)
    # Even lying about the threshold does not help: t-1 shares do not determine the key.
    fake = {}
    for i in (1, 2):
        k = keys35[i]
        pub = dataclasses.replace(k.public, min_signers=2)
        fake[i] = dataclasses.replace(k, key=dataclasses.replace(k.key, public=pub))
    with pytest.raises(UsageError, match="reconstruct"):
        PresignSession(fake[1], secrets.token_bytes(32), (1, 2))


def test_eip1559_transaction_recovers_group_address(keys23: dict[int, EcdsaKeyShare]) -> None:
    from eth_account import Account
    from eth_account.typed_transactions import TypedTransaction
    from eth_keys import keys as eth_keys

    tx = {
        "type": 2,
        "chainId": 1,
        "nonce": 7,
        "maxPriorityFeePerGas": 2_000_000_000,
        "maxFeePerGas": 30_000_000_000,
        "gas": 21000,
        "to": "0x000000000000000000000000000000000000dEaD",
        "value": 10**15,
        "data": b"",
        "accessList": [],
    }
    digest = TypedTransaction.from_dict(tx).hash()
    sig = sign(keys23, (1, 3), digest)
    raw = TypedTransaction.from_dict(
        {**tx, "v": sig.recovery_id & 1, "r": sig.r, "s": sig.s}
    ).encode()
    pk = coincurve.PublicKey(keys23[1].group_public_key.encode()).format(compressed=False)
    address = eth_keys.PublicKey(pk[1:]).to_checksum_address()
    assert sig.recovery_id < 2
    assert Account.recover_transaction(raw) == address


def test_random_delivery_order_and_wire_roundtrip(keys35: dict[int, EcdsaKeyShare]) -> None:
    h = secrets.token_bytes(32)
    for seed in range(3):
        sig = sign(keys35, (1, 3, 5), h, order="random", seed=seed, wire=True)
        check_independently(sig, h, keys35[1].group_public_key.encode())


def test_ot_setup_random_order_with_dealer_import() -> None:
    kps = dealer_import_for_tests(G.random_scalar(), 2, 3)
    shares = run_ot_setup_local(kps, order="random", seed=3)
    h = secrets.token_bytes(32)
    check_independently(sign(shares, (2, 3), h), h, shares[2].group_public_key.encode())


# -- storage, binding ----------------------------------------------------------------------


def test_key_share_roundtrip_and_repr(keys23: dict[int, EcdsaKeyShare]) -> None:
    k = keys23[2]
    assert EcdsaKeyShare.from_bytes(k.to_bytes()) == k
    text = repr(k)
    assert hex(k.key.signing_share)[2:] not in text and "k0" not in text and "delta" not in text


def test_presignature_single_use_object_and_storage(keys23: dict[int, EcdsaKeyShare]) -> None:
    """Intended storage pattern: store sealed bytes; rebuild; the node ledger marks the id first."""
    pres = presign(keys23, (1, 2))
    stored = pres[1].to_bytes()  # what the node seals into its database
    ledger = MemoryLedger()  # stands for the node's durable presignature ledger
    h = secrets.token_bytes(32)
    first = Presignature.from_bytes(stored)
    part = sign_with_presignature(first, keys23[1], h, ledger=ledger)
    assert first.used and part.presignature_id in ledger.used
    with pytest.raises(NonceReuseError):
        sign_with_presignature(first, keys23[1], h, ledger=ledger)  # same object
    second = Presignature.from_bytes(stored)  # e.g. after a crash and restart
    with pytest.raises(NonceReuseError):
        sign_with_presignature(second, keys23[1], secrets.token_bytes(32), ledger=ledger)
    with pytest.raises(NonceReuseError):
        first.to_bytes()


def test_ledger_failure_releases_nothing(keys23: dict[int, EcdsaKeyShare]) -> None:
    pres = presign(keys23, (1, 2))

    def broken(_: bytes) -> bool:
        raise OSError("disk full")

    with pytest.raises(OSError):
        sign_with_presignature(pres[1], keys23[1], secrets.token_bytes(32), ledger=broken)
    with pytest.raises(NonceReuseError):  # and the object is spent anyway (fail closed)
        sign_with_presignature(pres[1], keys23[1], secrets.token_bytes(32), ledger=MemoryLedger())


def test_presignature_bound_to_key_signers_session(
    keys23: dict[int, EcdsaKeyShare], keys35: dict[int, EcdsaKeyShare]
) -> None:
    h = secrets.token_bytes(32)
    pres = presign(keys23, (1, 2))
    with pytest.raises(UsageError, match="another key"):
        sign_with_presignature(pres[1], keys35[1], h, ledger=MemoryLedger())
    with pytest.raises(UsageError, match="another party"):
        sign_with_presignature(pres[1], keys23[2], h, ledger=MemoryLedger())
    other_session = presign(keys23, (1, 2))
    other_set = presign(keys23, (2, 3))
    p1 = sign_with_presignature(pres[1], keys23[1], h, ledger=MemoryLedger())
    for bad in (other_session[2], other_set[2]):
        p2 = sign_with_presignature(bad, keys23[2], h, ledger=MemoryLedger())
        with pytest.raises(ProtocolError) as exc:
            combine_signature(pres[1].public, [p1, p2], h, keys23[1].group_public_key)
        assert exc.value.culprits == (2,)


def test_combiner_holds_only_public_values() -> None:
    hints = typing.get_type_hints(combine_signature)
    assert set(hints) == {"public", "partials", "message_hash", "group_public_key", "return"}
    assert hints["public"] is PresignaturePublic
    assert {f.name for f in dataclasses.fields(PresignaturePublic)} == {
        "presignature_id",
        "key_id",
        "session_id",
        "signers",
        "R",
    }
    assert {f.name for f in dataclasses.fields(PartialSignature)} == {
        "sender",
        "presignature_id",
        "R",
        "u",
        "w",
    }


def test_no_value_anywhere_equals_the_private_key() -> None:
    """Setup, presign and sign on a dealer-imported key: the key is in no message or output."""
    secret = G.random_scalar()
    kps = dealer_import_for_tests(secret, 2, 3)
    needles = [secret.to_bytes(32, "big"), ((Q - secret) % Q).to_bytes(32, "big")]
    seen: list[bytes] = []

    def record(msg):  # type: ignore[no-untyped-def]
        from mpc.wire import encode

        seen.append(encode(msg))
        return msg

    sid = secrets.token_bytes(32)
    from mpc.dkls23 import OtSetupSession

    shares = run_local({k.identifier: OtSetupSession(k, sid) for k in kps}, tamper=record)
    psid = secrets.token_bytes(32)
    pres = run_local({i: PresignSession(shares[i], psid, (1, 3)) for i in (1, 3)}, tamper=record)
    seen += [pres[i].to_bytes() for i in (1, 3)] + [shares[i].to_bytes() for i in shares]
    h = secrets.token_bytes(32)
    parts = [sign_with_presignature(pres[i], shares[i], h, ledger=MemoryLedger()) for i in (1, 3)]
    seen += [p.to_bytes() for p in parts]
    sig = combine_signature(pres[1].public, parts, h, shares[1].group_public_key)
    seen.append(sig.to_compact())
    for blob in seen:
        for n in needles:
            assert n not in blob


def test_packed_zq_vectors_match_scalar_arithmetic() -> None:
    """_zq (the packed Z_q vectors of the multiplication) agrees with plain ints mod q."""
    from gmpy2 import mpz

    from mpc.dkls23 import _zq
    from mpc.dkls23.params import XI, Q

    vals = [secrets.randbits(256) for _ in range(4 * XI)]
    buf = b"".join(v.to_bytes(32, "big") for v in vals)
    vecs = _zq.streams(buf)
    assert _zq.join(vecs) == buf
    assert _zq.unpack(_zq.to_bytes(vecs[2]), 4, 3) == vals[2::4]
    assert _zq.unpack(buf, 4, 1) == vals[1::4]
    edge = [0, 1, Q - 1, Q, Q + 1, 2 * Q - 1]
    for bits in (256, 257, 258, 300, 387, 513):
        xs = [secrets.randbits(bits) for _ in range(XI)]
        special = [e for e in edge if e < 1 << bits] + [(1 << bits) - 1]
        xs[: len(special)] = special
        v = mpz.from_bytes(b"".join(x.to_bytes(128, "big") for x in xs), "big")
        assert _zq.unpack(_zq.to_bytes(_zq.reduce(v, bits)), 4, 3) == [x % Q for x in xs]
    canon = [secrets.randbelow(Q) for _ in range(XI)]
    good = mpz.from_bytes(b"".join(x.to_bytes(128, "big") for x in canon), "big")
    assert _zq.below_q(good)
    canon[7] = Q  # one non-canonical slot
    bad = mpz.from_bytes(b"".join(x.to_bytes(128, "big") for x in canon), "big")
    assert not _zq.below_q(bad)
    mask = _zq.slot_mask(0b101)
    assert _zq.unpack(_zq.to_bytes(mask & _zq.ONES), 4, 3)[:4] == [1, 0, 1, 0]
