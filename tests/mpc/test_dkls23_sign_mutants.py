"""DKLs23 signing (mpc.dkls23.sign): presignature storage and single use, the session's
parameter checks, the round-3 blame, the online round and the combiner, every signature
checked by coincurve (libsecp256k1's own verify and recovery) and by cryptography (DER),
not only by our combiner (issue 16, mutation testing).

Shares from the test-only dealer plus one OT setup (module-scoped fixtures of shares; no
whole key is formed). First in ``mutation.toml``'s selection for ``mpc/dkls23/sign.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import cbor2
import coincurve
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from mpc.dkls23.keygen import EcdsaKeyShare, OtSetupSession
from mpc.dkls23.params import Q, h
from mpc.dkls23.sign import (
    EcdsaSignature,
    PartialSignature,
    Presignature,
    PresignSession,
    combine_signature,
    presignature_id_of,
    sign_with_presignature,
    verify_signature,
)
from mpc.errors import DecodeError, NonceReuseError, ProtocolError, UsageError
from mpc.groups import SECP256K1
from mpc.shamir import KeyPackage, PublicKeyPackage
from mpc.testing import MemoryLedger, run_local
from mpc.wire import Message
from tests.mpc.conftest import dealer_split_for_tests

G = SECP256K1
DIGEST = hashlib.sha256(b"dkls23 sign mutants").digest()


def _setup(t: int, n: int) -> dict[int, EcdsaKeyShare]:
    keys = dealer_split_for_tests(G, t, n)
    sid = os.urandom(32)
    out: dict[int, EcdsaKeyShare] = run_local({i: OtSetupSession(k, sid) for i, k in keys.items()})
    return out


@pytest.fixture(scope="module")
def shares() -> dict[int, EcdsaKeyShare]:
    return _setup(2, 3)


def presign(
    shares: dict[int, EcdsaKeyShare], signers: tuple[int, ...], **kw: Any
) -> dict[int, Presignature]:
    sid = os.urandom(32)
    out: dict[int, Presignature] = run_local(
        {i: PresignSession(shares[i], sid, signers) for i in signers}, **kw
    )
    return out


def independent_verify(pk: bytes, digest: bytes, sig: EcdsaSignature) -> None:
    """coincurve (verify and recovery from the compact form) and cryptography (DER)."""
    assert coincurve.PublicKey(pk).verify(sig.to_der(), digest, hasher=None)
    rec = coincurve.PublicKey.from_signature_and_message(sig.to_compact(), digest, hasher=None)
    assert rec.format() == pk
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), pk)
    key.verify(sig.to_der(), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    assert 0 < sig.s <= Q // 2 and 0 < sig.r < Q and sig.recovery_id in (0, 1)


def sign(
    shares: dict[int, EcdsaKeyShare], pres: dict[int, Presignature], digest: bytes = DIGEST
) -> tuple[EcdsaSignature, list[PartialSignature]]:
    parts = [
        sign_with_presignature(pres[i], shares[i], digest, ledger=MemoryLedger())
        for i in sorted(pres)
    ]
    first = pres[min(pres)]
    return combine_signature(first.public, parts, digest, shares[1].group_public_key), parts


# -- honest signing, low s and the recovery id ---------------------------------------------------


def test_every_pair_signs_and_independent_verifiers_accept(
    shares: dict[int, EcdsaKeyShare],
) -> None:
    pk = shares[1].group_public_key.encode()
    for signers in ((1, 2), (1, 3), (2, 3), (1, 2, 3)):
        for k in range(2):
            digest = hashlib.sha256(bytes([k]) + bytes(signers)).digest()
            sig, _ = sign(shares, presign(shares, signers), digest)
            independent_verify(pk, digest, sig)
            assert verify_signature(sig, digest, shares[1].group_public_key)
            assert sig.to_compact()[64] == sig.recovery_id and len(sig.to_compact()) == 65


def test_a_high_s_signature_is_not_verified(shares: dict[int, EcdsaKeyShare]) -> None:
    sig, _ = sign(shares, presign(shares, (1, 2)))
    pk = shares[1].group_public_key
    high = EcdsaSignature(sig.r, Q - sig.s, sig.recovery_id ^ 1)
    assert not verify_signature(high, DIGEST, pk)
    wrong_id = EcdsaSignature(sig.r, sig.s, sig.recovery_id ^ 1)
    assert not verify_signature(wrong_id, DIGEST, pk)
    assert not verify_signature(sig, hashlib.sha256(b"other").digest(), pk)
    assert not verify_signature(sig, DIGEST, shares[1].public.verifying_shares[1])
    assert not verify_signature(EcdsaSignature(sig.r, sig.s, 7), DIGEST, pk)
    for bad in (DIGEST[:31], DIGEST + b"\x00", DIGEST.hex()):
        with pytest.raises(UsageError, match="message hash must be 32 bytes"):
            verify_signature(sig, bad, pk)  # type: ignore[arg-type]


# -- presignature storage -----------------------------------------------------------------------


def test_presignature_id_and_public_values(shares: dict[int, EcdsaKeyShare]) -> None:
    sid = bytes(range(32))
    kid = shares[1].key_id
    assert presignature_id_of(sid, kid, [3, 1]) == h(b"DKLs23 presignature id", sid, kid, 1, 3)
    pres = presign(shares, (1, 3))
    pub = pres[1].public
    assert pub == pres[3].public and pub.signers == (1, 3) and pub.key_id == kid
    assert pub.presignature_id == presignature_id_of(pub.session_id, kid, (1, 3))
    assert pub.r == int.from_bytes(pub.R.encode()[1:], "big") % Q
    assert pres[1].presignature_id == pub.presignature_id and not pres[1].used
    text = repr(pres[1])
    assert text == f"Presignature(id={pub.presignature_id.hex()[:16]}, party=1, used=False)"


def test_presignature_round_trip_and_its_layout(shares: dict[int, EcdsaKeyShare]) -> None:
    pre = presign(shares, (1, 2))[2]
    data = pre.to_bytes()
    obj = cbor2.loads(data)
    assert set(obj) == {"v", "sid", "key", "signers", "R", "me", "phi", "u", "w"}
    assert obj["v"] == 1 and obj["me"] == 2 and obj["signers"] == [1, 2]
    back = Presignature.from_bytes(data)
    assert back.public == pre.public and back.party == 2 and back.to_bytes() == data


def _refused(obj: dict[str, Any], fld: str) -> None:
    with pytest.raises(DecodeError) as e:
        Presignature.from_bytes(cbor2.dumps(obj, canonical=True))
    assert e.value.field == fld, (fld, str(e.value))


def test_presignature_fields_are_refused_by_name(shares: dict[int, EcdsaKeyShare]) -> None:
    base = cbor2.loads(presign(shares, (1, 2))[1].to_bytes())
    _refused({**base, "v": 2}, "presignature")
    _refused({**base, "extra": 1}, "presignature")
    _refused({k: v for k, v in base.items() if k != "w"}, "presignature")
    _refused({**base, "sid": base["sid"][:31]}, "sid")
    _refused({**base, "key": base["key"] + b"\x00"}, "key")
    for signers in ([1], [], 5, [1, 0], [1, 1]):
        _refused({**base, "signers": signers}, "signers")
    for me in (3, "1", True):
        _refused({**base, "me": me}, "me")
    _refused({**base, "signers": [2, 1]}, "me")  # not sorted
    _refused({**base, "R": b"\x02" + bytes(32)}, "R")
    _refused({**base, "phi": bytes(32)}, "phi")  # phi_i is a non-zero mask
    _refused({**base, "u": Q.to_bytes(32, "big")}, "u")
    _refused({**base, "w": (Q + 1).to_bytes(32, "big")}, "w")
    zero = Presignature.from_bytes(
        cbor2.dumps({**base, "u": bytes(32), "w": bytes(32)}, canonical=True)
    )
    assert zero.party == 1  # u_i and v_i may be zero
    three = Presignature.from_bytes(cbor2.dumps({**base, "signers": [1, 2, 3]}, canonical=True))
    assert three.public.signers == (1, 2, 3)


# -- the session's parameter checks -------------------------------------------------------------


def test_signer_set_checks(shares: dict[int, EcdsaKeyShare]) -> None:
    sid = os.urandom(32)
    with pytest.raises(UsageError, match="1 signers cannot sign a 2-of-n key"):
        PresignSession(shares[1], sid, [1])
    with pytest.raises(UsageError, match=r"signers \[4, 5\] do not hold this key") as e:
        PresignSession(shares[1], sid, [1, 5, 4])
    assert e.value.party == 4
    s = PresignSession(shares[1], sid, [2, 1])
    assert s.participants == (1, 2) and s.expected_kind(1) == s.expected_kind(2) == "direct"
    share = shares[1]
    for bob, alice in (
        ({3: share.bob[3]}, dict(share.alice)),
        (dict(share.bob), {3: share.alice[3]}),
    ):
        with pytest.raises(UsageError, match=r"no OT setup with \[2\]") as e:
            PresignSession(EcdsaKeyShare(share.key, bob, alice), sid, [1, 2, 3])
        assert e.value.party == 2
    PresignSession(EcdsaKeyShare(share.key, {2: share.bob[2]}, {2: share.alice[2]}), sid, [1, 2])


def test_a_signer_set_that_does_not_reconstruct_the_key_is_refused(
    shares: dict[int, EcdsaKeyShare],
) -> None:
    share = shares[1]
    pub = share.public
    bent = PublicKeyPackage(
        G,
        2,
        pub.group_public_key,
        {**pub.verifying_shares, 2: pub.verifying_shares[2] + G.generator},
    )
    odd = EcdsaKeyShare(KeyPackage(1, share.key.signing_share, bent), share.bob, share.alice)
    with pytest.raises(UsageError, match="does not reconstruct the group key"):
        PresignSession(odd, os.urandom(32), [1, 2])
    PresignSession(odd, os.urandom(32), [1, 3])


# -- round 3 blame --------------------------------------------------------------------------------


def _tamper(rnd: int, sender: int, recipient: int, edit: Any) -> Any:
    def hook(m: Message) -> Message:
        if m.round == rnd and m.sender == sender and m.recipient == recipient:
            p = dict(m.payload)
            edit(p)
            return dataclasses.replace(m, payload=p)
        return m

    return hook


def test_a_round2_bound_to_another_pair_context_is_blamed(shares: dict[int, EcdsaKeyShare]) -> None:
    hook = _tamper(2, 3, 1, lambda p: p.update(pair_ctx=bytes(32)))
    with pytest.raises(
        ProtocolError, match="party 3's round 2 is bound to another pair context"
    ) as e:
        presign(shares, (1, 3), tamper=hook)
    assert e.value.culprits == (3,) and e.value.pair == (1, 3)


def test_a_wrong_decommitment_is_blamed_on_its_sender(shares: dict[int, EcdsaKeyShare]) -> None:
    hook = _tamper(2, 2, 3, lambda p: p.update(R=G.base_mul(5).encode()))
    with pytest.raises(ProtocolError, match="decommitment of R_j") as e:
        presign(shares, (2, 3), tamper=hook)
    assert e.value.culprits == (2,)


@pytest.mark.parametrize("fld", ["gu", "gv"])
def test_each_gamma_check_alone_blames_alice(shares: dict[int, EcdsaKeyShare], fld: str) -> None:
    hook = _tamper(2, 1, 2, lambda p: p.update({fld: G.base_mul(7).encode()}))
    with pytest.raises(ProtocolError, match="Gamma\\) check failed: Alice 1, Bob 2") as e:
        presign(shares, (1, 2), tamper=hook)
    assert e.value.culprits == (1,) and e.value.pair == (1, 2)


def test_a_wrong_pk_is_blamed_by_the_gamma_v_check(shares: dict[int, EcdsaKeyShare]) -> None:
    hook = _tamper(2, 3, 2, lambda p: p.update(pk=G.base_mul(11).encode()))
    with pytest.raises(ProtocolError, match="Gamma") as e:
        presign(shares, (2, 3), tamper=hook)
    assert e.value.culprits == (3,)


def test_a_wrong_psi_passes_presign_and_fails_the_combiner(
    shares: dict[int, EcdsaKeyShare],
) -> None:
    def edit(p: dict[str, Any]) -> None:
        p["psi"] = ((int.from_bytes(p["psi"], "big") + 1) % Q).to_bytes(32, "big")

    pres = presign(shares, (1, 2), tamper=_tamper(2, 2, 1, edit))
    with pytest.raises(ProtocolError, match=r"does not verify.*suspects \[1, 2\]") as e:
        sign(shares, pres)
    assert e.value.culprits == ()


# -- the online round ------------------------------------------------------------------------


def test_online_round_binding_and_hash_checks(shares: dict[int, EcdsaKeyShare]) -> None:
    pres = presign(shares, (1, 2))
    other = _setup(2, 2)
    with pytest.raises(UsageError, match="another key") as e:
        sign_with_presignature(pres[1], other[1], DIGEST, ledger=MemoryLedger())
    assert e.value.party == 1
    with pytest.raises(UsageError, match="another party") as e:
        sign_with_presignature(pres[1], shares[2], DIGEST, ledger=MemoryLedger())
    for bad in (DIGEST[:31], DIGEST + b"\x00", bytearray(DIGEST)):
        with pytest.raises(UsageError, match="message hash must be 32 bytes"):
            sign_with_presignature(pres[1], shares[1], bad, ledger=MemoryLedger())  # type: ignore[arg-type]
    assert not pres[1].used  # a refused call spends nothing
    part = sign_with_presignature(pres[1], shares[1], DIGEST, ledger=MemoryLedger())
    assert pres[1].used and (pres[1]._phi, pres[1]._u, pres[1]._v) == (0, 0, 0)
    assert part.sender == 1 and part.R == pres[1].public.R
    with pytest.raises(NonceReuseError, match="object already used"):
        sign_with_presignature(pres[1], shares[1], DIGEST, ledger=MemoryLedger())


def test_a_ledger_that_refuses_wipes_the_presignature(shares: dict[int, EcdsaKeyShare]) -> None:
    pre = presign(shares, (1, 3))[3]
    with pytest.raises(NonceReuseError, match="already marked used in storage") as e:
        sign_with_presignature(pre, shares[3], DIGEST, ledger=lambda _pid: False)
    assert e.value.party == 3 and pre.used and (pre._phi, pre._u, pre._v) == (0, 0, 0)


def test_the_partial_is_the_documented_formula(shares: dict[int, EcdsaKeyShare]) -> None:
    """w_i = H(m) phi_i + r v_i (Protocol 3.6 round 3), u_i passed on; from public values only
    the combination can be checked, so the check is: the partials of two messages under one
    presignature's twin objects differ exactly by (H(m) - H(m')) phi_i."""
    pres = presign(shares, (1, 2))
    data = pres[1].to_bytes()
    a = Presignature.from_bytes(data)
    b = Presignature.from_bytes(data)
    phi = a._phi
    d2 = hashlib.sha256(b"second").digest()
    pa = sign_with_presignature(a, shares[1], DIGEST, ledger=MemoryLedger())
    pb = sign_with_presignature(b, shares[1], d2, ledger=MemoryLedger())
    z1, z2 = int.from_bytes(DIGEST, "big") % Q, int.from_bytes(d2, "big") % Q
    assert (pa.w - pb.w) % Q == (z1 - z2) * phi % Q and pa.u == pb.u
    with pytest.raises(NonceReuseError, match="it must not be stored again"):
        a.to_bytes()


# -- partial signatures and the combiner -----------------------------------------------------


def test_partial_signature_decoding_is_strict(shares: dict[int, EcdsaKeyShare]) -> None:
    pres = presign(shares, (1, 2))
    part = sign_with_presignature(pres[2], shares[2], DIGEST, ledger=MemoryLedger())
    data = part.to_bytes()
    assert PartialSignature.from_bytes(data, sender=2) == part
    assert "u=" not in repr(part) and "w=" not in repr(part)
    base = cbor2.loads(data)

    def refused(obj: dict[str, Any], sender: int = 2) -> DecodeError:
        with pytest.raises(DecodeError) as e:
            PartialSignature.from_bytes(cbor2.dumps(obj, canonical=True), sender=sender)
        assert e.value.party == sender
        return e.value

    assert refused(base, sender=1).field == "sender"
    assert refused({**base, "sender": 1}).field == "sender"
    one = cbor2.loads(
        sign_with_presignature(pres[1], shares[1], DIGEST, ledger=MemoryLedger()).to_bytes()
    )
    assert refused({**one, "sender": True}, sender=1).field == "sender"
    assert refused({**base, "pid": base["pid"][:31]}).field == "pid"
    assert refused({**base, "R": b"\x04" + bytes(32)}).field == "R"
    assert refused({**base, "u": Q.to_bytes(32, "big")}).field == "u"
    assert refused({**base, "w": Q.to_bytes(32, "big")}).field == "w"
    refused({**base, "more": 1})
    zero = PartialSignature.from_bytes(
        cbor2.dumps({**base, "u": bytes(32), "w": bytes(32)}, canonical=True), sender=2
    )
    assert zero.u == zero.w == 0


def test_the_combiner_names_who_sent_a_wrong_partial(shares: dict[int, EcdsaKeyShare]) -> None:
    pres = presign(shares, (1, 2))
    parts = [
        sign_with_presignature(pres[i], shares[i], DIGEST, ledger=MemoryLedger()) for i in (1, 2)
    ]
    pub, pk = pres[1].public, shares[1].group_public_key
    outsider = dataclasses.replace(parts[1], sender=3)
    cases = [
        ([parts[0], outsider], 3, "outside the signer set"),
        ([parts[0], parts[0]], 1, "two partial signatures from one signer"),
        (
            [parts[0], dataclasses.replace(parts[1], presignature_id=bytes(32))],
            2,
            "another presignature",
        ),
        ([parts[0], dataclasses.replace(parts[1], R=G.generator)], 2, "another instance point R"),
    ]
    for given, culprit, what in cases:
        with pytest.raises(ProtocolError, match=what) as e:
            combine_signature(pub, given, DIGEST, pk)
        assert e.value.culprits == (culprit,)
    with pytest.raises(UsageError, match=r"waiting for partial signatures from \[2\]") as u:
        combine_signature(pub, [parts[0]], DIGEST, pk)
    assert u.value.party == 2
    with pytest.raises(UsageError, match=r"from \[1, 2\]") as u:
        combine_signature(pub, [], DIGEST, pk)
    assert u.value.party == 1
    with pytest.raises(UsageError, match="message hash must be 32 bytes"):
        combine_signature(pub, parts, DIGEST[:16], pk)
    bad_w = dataclasses.replace(parts[1], w=(parts[1].w + 1) % Q)
    with pytest.raises(ProtocolError, match="does not verify"):
        combine_signature(pub, [parts[0], bad_w], DIGEST, pk)
    zero_u = [dataclasses.replace(p, u=0) for p in parts]
    with pytest.raises(ProtocolError, match="does not verify"):
        combine_signature(pub, zero_u, DIGEST, pk)
    with pytest.raises(ProtocolError, match="does not verify"):
        combine_signature(pub, parts, DIGEST, shares[1].public.verifying_shares[2])
    sig = combine_signature(pub, list(reversed(parts)), DIGEST, pk)
    independent_verify(pk.encode(), DIGEST, sig)


def test_the_recovery_id_is_checked_not_only_the_signature(
    shares: dict[int, EcdsaKeyShare],
) -> None:
    """Negating every partial's u gives s' = -s: after low-s normalisation the same (r, s),
    which plain ECDSA verification accepts, but the combiner then derives the recovery id
    from R for the wrong half, and libsecp256k1's recovery gives another key: refused."""
    pres = presign(shares, (1, 3))
    parts = [
        sign_with_presignature(pres[i], shares[i], DIGEST, ledger=MemoryLedger()) for i in (1, 3)
    ]
    pub, pk = pres[1].public, shares[1].group_public_key
    sig = combine_signature(pub, parts, DIGEST, pk)
    independent_verify(pk.encode(), DIGEST, sig)
    flipped = [dataclasses.replace(p, u=(Q - p.u) % Q) for p in parts]
    with pytest.raises(ProtocolError, match="does not verify"):
        combine_signature(pub, flipped, DIGEST, pk)
    assert coincurve.PublicKey(pk.encode()).verify(sig.to_der(), DIGEST, hasher=None)
    R = pub.R.encode()
    high = int.from_bytes(sig.to_compact()[32:64], "big") > Q // 2
    assert not high and sig.recovery_id in ((R[0] & 1), (R[0] & 1) ^ 1)


def test_signature_encodings() -> None:
    sig = EcdsaSignature(5, 7, 1)
    assert sig.to_compact() == (5).to_bytes(32, "big") + (7).to_bytes(32, "big") + b"\x01"
    assert sig.to_der() == bytes.fromhex("3006020105020107")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sig.s = 1  # type: ignore[misc]


def test_verification_failures_of_the_library_are_false_not_errors(
    shares: dict[int, EcdsaKeyShare],
) -> None:
    pk = shares[1].group_public_key
    assert not verify_signature(EcdsaSignature(0, 1, 0), DIGEST, pk)
    assert not verify_signature(EcdsaSignature(Q, 1, 0), DIGEST, pk)
    assert not verify_signature(EcdsaSignature(1, 1, 0), DIGEST, pk)
