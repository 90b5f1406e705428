"""api.coordinator.pools: presignature results, the idle rule of refills, pooled
commitments checked once on entry; the pool report of /ready."""

from __future__ import annotations

import time
from collections import deque

import pytest

from api import crypto
from api.coordinator import Coordinator, SessionFailed
from api.coordinator.pools import Presignature
from api.nodes import NodeInfo
from mpc import frost
from mpc.groups import ED25519
from tests.api.conftest import nothing_up_my_sleeve_point


def _coordinator(api) -> Coordinator:  # noqa: ANN001
    return api.app.state.coordinator


@pytest.mark.parametrize("bad", ["no-R", "disagree", "not-a-point"])
async def test_presign_results_must_carry_the_same_valid_R(api, bad: str) -> None:  # noqa: ANN001
    c = _coordinator(api)
    R = nothing_up_my_sleeve_point(b"R").hex()
    good = {"presignature_id": "ab" * 32, "R": R}
    results = {1: dict(good), 2: dict(good)}
    if bad == "no-R":
        del results[2]["R"]
    elif bad == "disagree":
        results[2]["R"] = nothing_up_my_sleeve_point(b"other").hex()
    else:
        results[1]["R"] = results[2]["R"] = "02" + "00" * 32

    async def fake_session(nodes, body):  # noqa: ANN001, ANN202
        return results

    c.relay.run = fake_session  # type: ignore[method-assign]
    nodes = [NodeInfo(f"node-{i}", i, "http://127.0.0.1:1", "", "") for i in (1, 2)]
    with pytest.raises(SessionFailed) as e:
        await c.pools.presign("key", nodes)
    culprits = {p for p, _ in e.value.blame}
    assert culprits == ({2} if bad == "no-R" else {1, 2})
    results[1], results[2] = dict(good), dict(good)
    assert await c.pools.presign("key", nodes) == Presignature("ab" * 32, (1, 2), R)


def test_ready_reports_pools_and_presign_refill_waits_for_idle(api) -> None:  # noqa: ANN001
    r = api.client.get("/ready").json()
    assert r["pools"] == {"frost_commitments": 0, "presignatures": 0}
    c = _coordinator(api)
    s = c.settings
    pools = c.pools
    q = deque(range(s.presig_low_water))  # at low water, not below
    assert pools.presig_wanted(q) is True  # idle: refill
    c.activity.last_sign = time.monotonic()
    assert pools.presig_wanted(q) is False  # a signature just started: not idle yet
    c.activity.last_sign = 0.0
    c.activity.signing = 1
    assert pools.presig_wanted(q) is False  # busy signing: wait
    assert pools.presig_wanted(deque(range(s.presig_low_water - 1))) is True  # below: at once
    assert pools.presig_wanted(deque(range(s.presig_target))) is False
    c.activity.signing = 0


def test_pooled_commitments_are_checked_once_on_entry_and_blame_their_node() -> None:
    """Commitments enter the pool decoded and checked (api.crypto.frost_commitments);
    the signing package built from them carries them byte for byte."""
    suite = frost.ciphersuite("ed25519")
    comm = frost.SigningCommitments(suite, 2, ED25519.base_mul(5), ED25519.base_mul(7))
    other = frost.SigningCommitments(suite, 3, ED25519.base_mul(11), ED25519.base_mul(13))
    dec = crypto.frost_commitments("ed25519", 2, comm.to_bytes().hex())
    assert dec == comm
    pkg = crypto.frost_signing_package("ed25519", b"m", {2: dec, 3: other})
    assert pkg.commitment_for(2).to_bytes() == comm.to_bytes()
    assert frost.SigningPackage.from_bytes(pkg.to_bytes(), suite=suite) == pkg
    # another node's commitments, an off-curve point, not hex: each blames the sender
    bad_point = comm.to_bytes().replace(ED25519.base_mul(5).encode(), b"\x02" + b"\xff" * 31)
    for party, raw in ((3, comm.to_bytes().hex()), (2, bad_point.hex()), (2, "zz")):
        with pytest.raises(crypto.Blame) as e:
            crypto.frost_commitments("ed25519", party, raw)
        assert e.value.culprits == (party,)
    with pytest.raises(crypto.Blame):
        crypto.frost_signing_package("ed25519", b"m", {3: dec})  # filed under another party
