"""DKLs23 batched presigning (mpc.dkls23.batch): instance ids, sizing, bounds, the payload
shape and the instance named in an error (issue 16, mutation testing).

Shares from the test-only dealer plus one OT setup (module-scoped; no whole key is formed);
batches of at most three instances. First in ``mutation.toml``'s selection for
``mpc/dkls23/batch.py``; the signatures themselves are checked by coincurve in
``tests/mpc/test_dkls23_batch.py``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from mpc.dkls23.batch import (
    MAX_BATCH,
    PROTOCOL_PRESIGN_BATCH,
    ROUND2_BYTES_PER_INSTANCE,
    BatchPresignSession,
    _in_instance,
    instance_session_id,
    max_batch_for,
)
from mpc.dkls23.keygen import EcdsaKeyShare, OtSetupSession
from mpc.dkls23.params import h
from mpc.dkls23.sign import Presignature, presignature_id_of
from mpc.errors import DecodeError, ProtocolError, UsageError
from mpc.groups import SECP256K1
from mpc.testing import run_local
from mpc.wire import Message
from tests.mpc.conftest import dealer_split_for_tests


@pytest.fixture(scope="module")
def shares() -> dict[int, EcdsaKeyShare]:
    keys = dealer_split_for_tests(SECP256K1, 2, 3)
    sid = os.urandom(32)
    out: dict[int, EcdsaKeyShare] = run_local({i: OtSetupSession(k, sid) for i, k in keys.items()})
    return out


def test_instance_session_ids_are_the_documented_hash() -> None:
    sid = bytes(range(32))
    assert instance_session_id(sid, 3, 1) == h(b"DKLs23 batch instance", sid, 3, 1)
    ids = {instance_session_id(sid, c, k) for c in (1, 2, 3) for k in range(c)}
    assert len(ids) == 6


def test_max_batch_for_at_its_boundaries() -> None:
    per = ROUND2_BYTES_PER_INSTANCE
    assert per == 896 * 4 * 32 + 600
    assert max_batch_for(2, 7 * per) == 7 and max_batch_for(2, 7 * per - 1) == 6
    assert max_batch_for(3, 2 * 3 * per) == 3 and max_batch_for(3, 2 * 3 * per - 1) == 2
    assert max_batch_for(2, 0) == 1 and max_batch_for(2, per - 1) == 1
    assert max_batch_for(2, MAX_BATCH * per) == MAX_BATCH == 32
    assert max_batch_for(2, (MAX_BATCH + 1) * per) == MAX_BATCH
    with pytest.raises(UsageError, match="at least two signers"):
        max_batch_for(1, 10**9)


def test_batch_size_bounds(shares: dict[int, EcdsaKeyShare]) -> None:
    sid = os.urandom(32)
    for bad in (0, MAX_BATCH + 1, True, 2.0, -1):
        with pytest.raises(UsageError, match="batch size must be 1..32"):
            BatchPresignSession(shares[1], sid, (1, 2), bad)  # type: ignore[arg-type]
    one = BatchPresignSession(shares[1], sid, (2, 1), 1)
    assert one.participants == (1, 2) and one.count == 1 and one.expected_kind(1) == "direct"
    top = BatchPresignSession(shares[1], sid, (1, 2), MAX_BATCH)
    assert len(top.instances) == MAX_BATCH
    assert top.instances[5].session_id == instance_session_id(sid, MAX_BATCH, 5)


def test_results_are_in_instance_order_under_their_own_ids(
    shares: dict[int, EcdsaKeyShare],
) -> None:
    sid = os.urandom(32)
    res: dict[int, tuple[Presignature, ...]] = run_local(
        {i: BatchPresignSession(shares[i], sid, (1, 3), 3) for i in (1, 3)}
    )
    kid = shares[1].key_id
    for i in (1, 3):
        assert len(res[i]) == 3
        for k, pre in enumerate(res[i]):
            sid_k = instance_session_id(sid, 3, k)
            assert pre.public.session_id == sid_k and pre.party == i
            assert pre.presignature_id == presignature_id_of(sid_k, kid, (1, 3))
            assert pre.public == res[4 - i][k].public
    assert len({p.public.R for p in res[1]}) == 3


def test_messages_are_one_per_peer_with_every_instance(shares: dict[int, EcdsaKeyShare]) -> None:
    sid = os.urandom(32)
    s = BatchPresignSession(shares[2], sid, (1, 2, 3), 2)
    out = s.start()
    assert [m.recipient for m in out] == [1, 3]
    assert all(m.protocol == PROTOCOL_PRESIGN_BATCH and m.round == 1 for m in out)
    assert all(isinstance(m.payload, dict) and len(m.payload["batch"]) == 2 for m in out)
    assert out[0].payload["batch"][0] != out[0].payload["batch"][1]


def _run(shares: dict[int, EcdsaKeyShare], tamper: Any, count: int = 2) -> None:
    sid = os.urandom(32)
    run_local(
        {i: BatchPresignSession(shares[i], sid, (1, 2), count) for i in (1, 2)}, tamper=tamper
    )


@pytest.mark.parametrize(
    "payload",
    [[], {"batch": [], "x": 1}, {}, {"batch": {}}, {"batch": "ab"}, {"items": []}],
    ids=["a list", "extra field", "empty", "a map", "a string", "another field"],
)
def test_a_batch_message_of_another_shape_is_refused_naming_the_sender(
    shares: dict[int, EcdsaKeyShare], payload: object
) -> None:
    def t(m: Message) -> Message:
        if m.sender == 2 and m.round == 1:
            return dataclasses.replace(m, payload=payload)  # type: ignore[arg-type]
        return m

    with pytest.raises(DecodeError) as e:
        _run(shares, t)
    assert e.value.party == 2


@pytest.mark.parametrize("k", [0, 1, 2])
def test_an_error_in_one_instance_names_the_instance_and_keeps_the_blame(
    shares: dict[int, EcdsaKeyShare], k: int
) -> None:
    def t(m: Message) -> Message:
        if m.sender == 1 and m.round == 2:
            items = [dict(p) for p in m.payload["batch"]]
            items[k]["salt"] = bytes(32)
            return dataclasses.replace(m, payload={"batch": items})
        return m

    want = f"^batch instance {k} of 3: party 1: decommitment"
    with pytest.raises(ProtocolError, match=want) as e:
        _run(shares, t, count=3)
    assert e.value.culprits == (1,)


def test_in_instance_rewrites_only_the_message() -> None:
    err = DecodeError("bad", field="tau", party=3)
    out = _in_instance(err, 4, 9)
    assert out is err and out.args[0] == "batch instance 4 of 9: party 3: field 'tau': bad"
    assert out.field == "tau" and out.party == 3
    bare = ProtocolError("x", culprits=(2,), pair=(1, 2))
    bare.args = ()
    out2 = _in_instance(bare, 0, 1)
    assert out2.args[0].startswith("batch instance 0 of 1: ")
    assert isinstance(out2, ProtocolError) and out2.culprits == (2,) and out2.pair == (1, 2)
