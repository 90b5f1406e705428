"""Zero-share re-randomisation of the additive shares at presign (DKLs23 Protocol 3.6, F_Zero).

Each signer's ``sk_i = lambda_i p(i) + zeta_i`` with ``sum zeta_i = 0``; the pairwise seeds
are per-session Diffie-Hellman secrets from the ephemeral ``E_i`` of round 1 (field ``zk``),
so the share format is unchanged (module docstring of mpc.dkls23.sign). Pinned here: the
``pk_i`` sent in round 2 are re-randomised (not ``lambda_i Y_i``), fresh per session and add
up to the group key; signatures still verify independently (coincurve); and the attacks: a
``pk_j`` inconsistent with j's multiplication input names j, a consistent but wrong zero
share fails the sum check (no one can be named), a bad ``zk`` point names its sender.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import coincurve
import pytest

from mpc.dkls23 import (
    EcdsaKeyShare,
    PresignSession,
    combine_signature,
    sign_with_presignature,
)
from mpc.dkls23.params import Q
from mpc.errors import DecodeError, ProtocolError
from mpc.groups import SECP256K1, Point
from mpc.shamir import lagrange_coefficient
from mpc.testing import MemoryLedger, run_keygen_local, run_local
from mpc.wire import Message
from tests.mpc.test_dkls23_attacks import tamper_payload

G = SECP256K1
SIGNERS = (1, 2, 3)


@pytest.fixture(scope="module")
def keys() -> dict[int, EcdsaKeyShare]:
    return run_keygen_local(3, 4)


def _presign(keys: dict[int, EcdsaKeyShare], **kw: Any) -> tuple[dict[int, Any], dict[int, Point]]:
    """Run a presign; return the presignatures and each signer's pk_i as sent in round 2."""
    sent: dict[int, Point] = {}

    def record(msg: Message) -> Message:
        if msg.round == 2 and "pk" in msg.payload:
            sent[msg.sender] = G.decode_point(msg.payload["pk"])
        return msg

    sid = secrets.token_bytes(32)
    sessions = {i: PresignSession(keys[i], sid, SIGNERS) for i in SIGNERS}
    pres = run_local(sessions, tamper=record, **kw)
    return pres, sent


def test_pk_i_are_rerandomised_fresh_and_add_up(keys: dict[int, EcdsaKeyShare]) -> None:
    pub = keys[1].public
    plain = {i: pub.verifying_shares[i] * lagrange_coefficient(G, i, SIGNERS) for i in SIGNERS}
    pres, pk1 = _presign(keys, wire=True)
    _, pk2 = _presign(keys)
    assert sorted(pk1) == list(SIGNERS)
    assert all(pk1[i] != plain[i] for i in SIGNERS)  # zeta_i != 0: re-randomised
    assert all(pk1[i] != pk2[i] for i in SIGNERS)  # fresh per session
    assert G.sum(list(pk1.values())) == pub.group_public_key == G.sum(list(pk2.values()))
    digest = hashlib.sha256(b"zero-share re-randomised").digest()
    parts = [
        sign_with_presignature(pres[i], keys[i], digest, ledger=MemoryLedger()) for i in SIGNERS
    ]
    sig = combine_signature(pres[1].public, parts, digest, pub.group_public_key)
    vk = coincurve.PublicKey(pub.group_public_key.encode())
    assert vk.verify(sig.to_der(), digest, hasher=None)


def test_pk_inconsistent_with_the_input_names_the_sender(keys: dict[int, EcdsaKeyShare]) -> None:
    other = G.base_mul(7).encode()
    with pytest.raises(ProtocolError) as exc:
        run_local(
            {i: PresignSession(keys[i], b"s" * 32, SIGNERS) for i in SIGNERS},
            tamper=tamper_payload(2, 3, lambda p: p.update(pk=other), 1),
        )
    assert exc.value.culprits == (3,) and exc.value.pair == (1, 3)


class _WrongZeroShare(PresignSession):
    """A malicious signer that shifts its zero share but stays consistent (its pk_i matches
    its multiplication input), so every pairwise check passes."""

    def _zero_share(self, decoded: dict[int, Any]) -> int:
        return (super()._zero_share(decoded) + 1) % Q


def test_consistent_wrong_zero_share_fails_the_sum_check(keys: dict[int, EcdsaKeyShare]) -> None:
    sid = secrets.token_bytes(32)
    sessions = {i: PresignSession(keys[i], sid, SIGNERS) for i in SIGNERS}
    sessions[2] = _WrongZeroShare(keys[2], sid, SIGNERS)
    with pytest.raises(ProtocolError, match="do not add up to the group key") as exc:
        run_local(sessions)
    assert exc.value.culprits == ()


@pytest.mark.parametrize("enc", [b"\x00" * 33, b"\x02" + b"\xff" * 32, b"\x05" * 33])
def test_bad_dh_key_names_its_sender(keys: dict[int, EcdsaKeyShare], enc: bytes) -> None:
    with pytest.raises(DecodeError) as exc:
        run_local(
            {i: PresignSession(keys[i], b"z" * 32, SIGNERS) for i in SIGNERS},
            tamper=tamper_payload(1, 2, lambda p: p.update(zk=enc), 3),
        )
    assert exc.value.party == 2 and exc.value.field == "zk"


def test_a_substituted_dh_key_breaks_only_the_session(keys: dict[int, EcdsaKeyShare]) -> None:
    """A ``zk`` replaced in transit (which the nodes' authenticated envelopes prevent) makes
    the pair's seeds disagree; the session aborts at the sum check instead of signing."""
    other = G.base_mul(11).encode()
    with pytest.raises(ProtocolError, match="do not add up"):
        run_local(
            {i: PresignSession(keys[i], b"y" * 32, SIGNERS) for i in SIGNERS},
            tamper=tamper_payload(1, 2, lambda p: p.update(zk=other), 3),
        )
