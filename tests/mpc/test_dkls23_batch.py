"""DKLs23 batched presigning (issue 13): k independent instances in one session.

Every signature is checked by coincurve (libsecp256k1 through its own API, not our
combiner). Attack tests: a bad instance fails the whole batch and names the party and pair,
exactly as a single presign does; a presignature of a batch signs once only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Callable
from typing import Any

import coincurve
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from mpc.dkls23 import (
    EcdsaKeyShare,
    Presignature,
    combine_signature,
    presignature_id_of,
    sign_with_presignature,
)
from mpc.dkls23.batch import (
    MAX_BATCH,
    PROTOCOL_PRESIGN_BATCH,
    BatchPresignSession,
    instance_session_id,
    max_batch_for,
)
from mpc.errors import DecodeError, NonceReuseError, ProtocolError, UsageError
from mpc.testing import MemoryLedger, run_keygen_local, run_local
from mpc.wire import Message


@pytest.fixture(scope="module")
def keys() -> dict[int, EcdsaKeyShare]:
    return run_keygen_local(2, 3)


@pytest.fixture(scope="module")
def keys35() -> dict[int, EcdsaKeyShare]:
    return run_keygen_local(3, 5)


def run_batch(
    keys: dict[int, EcdsaKeyShare],
    signers: tuple[int, ...],
    k: int,
    sid: bytes | None = None,
    **kw: Any,
) -> dict[int, tuple[Presignature, ...]]:
    sid = sid or secrets.token_bytes(32)
    out: dict[int, tuple[Presignature, ...]] = run_local(
        {i: BatchPresignSession(keys[i], sid, signers, k) for i in signers}, wire=True, **kw
    )
    return out


def coincurve_verify(pk: bytes, digest: bytes, r: int, s: int) -> bool:
    der = encode_dss_signature(r, s)
    return bool(coincurve.PublicKey(pk).verify(der, digest, hasher=None))


def sign_all(
    keys: dict[int, EcdsaKeyShare],
    res: dict[int, tuple[Presignature, ...]],
    k: int,
    ledgers: dict[int, MemoryLedger],
    digest: bytes,
) -> tuple[int, int]:
    signers = sorted(res)
    parts = [sign_with_presignature(res[i][k], keys[i], digest, ledger=ledgers[i]) for i in signers]
    sig = combine_signature(res[signers[0]][k].public, parts, digest, keys[1].group_public_key)
    return sig.r, sig.s


@pytest.mark.parametrize(("t", "signers", "k"), [(2, (1, 2), 4), (2, (1, 3), 1), (3, (1, 3, 5), 2)])
def test_batch_presignatures_each_sign_and_verify_with_coincurve(
    keys: dict[int, EcdsaKeyShare],
    keys35: dict[int, EcdsaKeyShare],
    t: int,
    signers: tuple[int, ...],
    k: int,
) -> None:
    ks = keys if t == 2 else keys35
    sid = secrets.token_bytes(32)
    res = run_batch(ks, signers, k, sid=sid)
    assert all(len(res[i]) == k for i in signers)
    pk = ks[1].group_public_key.encode()
    ledgers = {i: MemoryLedger() for i in signers}
    for j in range(k):
        # all parties agree on instance j; its id is the single presign id of sid_j
        pub = res[signers[0]][j].public
        assert all(res[i][j].public == pub for i in signers)
        assert pub.session_id == instance_session_id(sid, k, j)
        assert pub.presignature_id == presignature_id_of(pub.session_id, ks[1].key_id, signers)
        digest = hashlib.sha256(b"batch %d" % j).digest()
        r, s = sign_all(ks, res, j, ledgers, digest)
        assert coincurve_verify(pk, digest, r, s)
        assert not coincurve_verify(pk, hashlib.sha256(b"other").digest(), r, s)


def test_instances_are_independent(keys: dict[int, EcdsaKeyShare]) -> None:
    """Fresh randomness per instance: distinct R, ids and session ids within and across
    batches, even when the coordinator repeats the batch's session id."""
    sid = secrets.token_bytes(32)
    a = run_batch(keys, (1, 2), 4, sid=sid)
    b = run_batch(keys, (1, 2), 4, sid=sid)
    rs = {p.public.R.encode() for p in a[1] + b[1]}
    assert len(rs) == 8
    assert len({p.presignature_id for p in a[1]}) == 4
    # a repeated session id gives the same ids (a node's pool refuses the duplicate) but
    # never the same instance point or secrets
    assert [p.presignature_id for p in a[1]] == [p.presignature_id for p in b[1]]
    assert len({instance_session_id(sid, 4, j) for j in range(4)} | {sid}) == 5
    assert instance_session_id(sid, 4, 0) != instance_session_id(sid, 3, 0)


def tamper_instance(
    rnd: int, sender: int, instance: int, fn: Callable[[dict[str, Any]], None]
) -> Callable[[Message], Message]:
    def t(msg: Message) -> Message:
        if msg.round == rnd and msg.sender == sender:
            items = [dict(p) for p in msg.payload["batch"]]
            fn(items[instance])
            return dataclasses.replace(msg, payload={"batch": items})
        return msg

    return t


def flip(b: bytes, i: int = 0) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


def test_bad_tau_in_one_instance_fails_the_batch_naming_alice(
    keys: dict[int, EcdsaKeyShare],
) -> None:
    """Party 2 cheats in instance 2's multiplication (round 2, tau): party 1 (Bob) fails
    the whole batch with the single presign's error, naming party 2 and the pair."""
    bad = tamper_instance(2, 2, 2, lambda p: p.update(tau=flip(p["tau"], 40)))
    with pytest.raises(ProtocolError) as ei:
        run_batch(keys, (1, 2), 4, tamper=bad)
    e = ei.value
    assert e.culprits == (2,) and e.pair == (1, 2)
    assert "batch instance 2 of 4" in str(e) and "multiplication check failed" in str(e)


def test_bad_extension_in_one_instance_fails_the_batch_naming_bob(
    keys: dict[int, EcdsaKeyShare],
) -> None:
    """Party 1 sends an inconsistent OT extension in instance 3 (round 1, u): Alice (party
    3) refuses it, naming party 1 and the pair (the node then retires the pair)."""
    bad = tamper_instance(1, 1, 3, lambda p: p.update(u=flip(p["u"], 100)))
    with pytest.raises(ProtocolError) as ei:
        run_batch(keys, (1, 3), 4, tamper=bad)
    e = ei.value
    assert e.culprits == (1,) and e.pair == (1, 3)
    assert "batch instance 3 of 4" in str(e) and "consistency check failed" in str(e)


def test_bad_gamma_in_first_instance_names_the_sender(keys: dict[int, EcdsaKeyShare]) -> None:
    """Instance 0's Gamma^u replaced: the detecting party names the sender."""
    other = keys[1].group_public_key.encode()

    def swap_gu(p: dict[str, Any]) -> None:
        p["gu"] = other

    with pytest.raises(ProtocolError) as ei:
        run_batch(keys, (2, 3), 3, tamper=tamper_instance(2, 3, 0, swap_gu))
    assert ei.value.culprits == (3,) and "batch instance 0 of 3" in str(ei.value)


@pytest.mark.parametrize(
    ("mangle", "what"),
    [
        (lambda items: items[:-1], "list of 3"),
        (lambda items: items + items[:1], "list of 3"),
        (lambda items: items[:2] + [b"x"], "must be a map"),
    ],
)
def test_malformed_batch_is_refused_naming_the_sender(
    keys: dict[int, EcdsaKeyShare], mangle: Callable[[list[Any]], list[Any]], what: str
) -> None:
    def t(msg: Message) -> Message:
        if msg.round == 1 and msg.sender == 2:
            return dataclasses.replace(msg, payload={"batch": mangle(list(msg.payload["batch"]))})
        return msg

    with pytest.raises(DecodeError) as ei:
        run_batch(keys, (1, 2), 3, tamper=t)
    assert ei.value.party == 2 and ei.value.field == "batch" and what in str(ei.value)


def test_extra_field_is_refused(keys: dict[int, EcdsaKeyShare]) -> None:
    def t(msg: Message) -> Message:
        if msg.round == 2 and msg.sender == 1:
            return dataclasses.replace(msg, payload={**msg.payload, "more": b""})
        return msg

    with pytest.raises(DecodeError) as ei:
        run_batch(keys, (1, 2), 2, tamper=t)
    assert ei.value.party == 1


def test_messages_are_one_per_peer_and_round(keys35: dict[int, EcdsaKeyShare]) -> None:
    sid = secrets.token_bytes(32)
    s = BatchPresignSession(keys35[1], sid, (1, 2, 3), 5)
    out = s.start()
    assert sorted(m.recipient for m in out if m.recipient is not None) == [2, 3]
    assert all(m.protocol == PROTOCOL_PRESIGN_BATCH and m.session_id == sid for m in out)
    assert all(len(m.payload["batch"]) == 5 for m in out)


def test_batch_presignature_signs_once_only(keys: dict[int, EcdsaKeyShare]) -> None:
    res = run_batch(keys, (1, 2), 2)
    ledgers = {i: MemoryLedger() for i in (1, 2)}
    d = hashlib.sha256(b"once").digest()
    sign_all(keys, res, 1, ledgers, d)
    with pytest.raises(NonceReuseError):
        sign_with_presignature(res[1][1], keys[1], d, ledger=ledgers[1])
    # the same presignature rebuilt from its bytes is refused by the ledger
    again = Presignature.from_bytes(res[2][0].to_bytes())
    sign_with_presignature(res[2][0], keys[2], d, ledger=ledgers[2])
    with pytest.raises(NonceReuseError):
        sign_with_presignature(again, keys[2], d, ledger=ledgers[2])


def test_parameters() -> None:
    with pytest.raises(UsageError):
        BatchPresignSession(run_keygen_local(2, 2)[1], secrets.token_bytes(32), (1, 2), 0)
    with pytest.raises(UsageError):
        BatchPresignSession(
            run_keygen_local(2, 2)[1], secrets.token_bytes(32), (1, 2), MAX_BATCH + 1
        )
    assert max_batch_for(2, 900_000) == 7
    assert max_batch_for(3, 900_000) == 3
    assert max_batch_for(9, 900_000) == 1
    assert max_batch_for(2, 10**9) == MAX_BATCH
