"""The wire format and the round engine every protocol builds on."""

from __future__ import annotations

import os
from typing import Any

import cbor2
import pytest

from mpc.errors import DecodeError, ProtocolError, UsageError
from mpc.groups import ED25519, SECP256K1
from mpc.session import RoundSession
from mpc.shamir import check_identifiers, check_threshold, lagrange_coefficient
from mpc.testing import run_local
from mpc.wire import Message, decode, encode, take_point, take_scalar

SID = bytes(range(32))


class Toy(RoundSession[int]):
    """Round 1: broadcast a number; round 2: send each peer (number * peer id) directly."""

    protocol = "toy"
    rounds = (1, 2)

    def __init__(self, me: int, parties: list[int], value: int, sid: bytes = SID) -> None:
        super().__init__(session_id=sid, me=me, participants=parties)
        self.value = value
        self.seen: dict[int, int] = {}

    def expected_kind(self, round: int) -> str:
        return "broadcast" if round == 1 else "direct"

    def _start(self) -> list[Message]:
        return [self._msg(1, {"v": self.value})]

    def _process_round(self, round: int, msgs: dict[int, Message]) -> list[Message]:
        if round == 1:
            self.seen = {s: m.payload["v"] for s, m in msgs.items()}
            return [self._msg(2, {"w": self.value * p}, recipient=p) for p in self.others]
        self._finish(sum(m.payload["w"] for m in msgs.values()) + self.value * self.me)
        return []


def toys(n: int = 3) -> dict[int, Toy]:
    parties = list(range(1, n + 1))
    return {p: Toy(p, parties, 10 * p) for p in parties}


def test_toy_completes_in_any_delivery_order_and_over_the_wire() -> None:
    expected = {p: sum(10 * q * p for q in range(1, 4)) for p in range(1, 4)}
    assert run_local(toys()) == expected
    for seed in range(20):
        assert run_local(toys(), order="random", seed=seed, wire=True) == expected


def test_encode_decode_roundtrip_with_leading_zero_bytes() -> None:
    m = Message("toy", SID, 3, 2, None, {"b": b"\x00\x00\x01", "n": 0})
    assert decode(encode(m)) == m
    assert decode(encode(m)).payload["b"] == b"\x00\x00\x01"


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ([2, "toy", SID, 1, 1, None, {}], "version"),
        ([1, "", SID, 1, 1, None, {}], "protocol"),
        ([1, "toy", SID[:31], 1, 1, None, {}], "session_id"),
        ([1, "toy", SID, -1, 1, None, {}], "round"),
        ([1, "toy", SID, 1, 0, None, {}], "sender"),
        ([1, "toy", SID, 1, True, None, {}], "sender"),
        ([1, "toy", SID, 1, 1, 0, {}], "recipient"),
        ([1, "toy", SID, 1, 1, None, []], "payload"),
        ([1, "toy", SID, 1, 1, None, {1: b""}], "payload"),
        ([1, "toy", SID, 1, 1, None], "envelope"),
    ],
)
def test_decode_rejects_each_bad_field_by_name(obj: list[Any], field: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(cbor2.dumps(obj))
    assert info.value.field == field


def test_decode_rejects_other_session_and_protocol_and_tags() -> None:
    data = encode(Message("toy", SID, 1, 1, None, {}))
    with pytest.raises(DecodeError, match="another session"):
        decode(data, session_id=os.urandom(32))
    with pytest.raises(DecodeError, match="expected protocol"):
        decode(data, protocol="frost")
    for tag in (55799, 2, 1, 99):  # self-describe, bignum, epoch date, unknown tag
        with pytest.raises(DecodeError, match="tag|canonical|invalid CBOR"):
            decode(cbor2.dumps(cbor2.CBORTag(tag, [1, "toy", SID, 1, 1, None, {}])))
    assert data[-1:] == b"\xa0"  # the empty payload map closes the envelope
    unsorted = b"\xa2\x61b\x01\x61a\x02"  # {"b": 1, "a": 2}: keys out of canonical order
    with pytest.raises(DecodeError, match="canonical"):
        decode(data[:-1] + unsorted)
    long_int = b"\xa1\x61a\x18\x01"  # {"a": 1} with a non-shortest integer
    with pytest.raises(DecodeError, match="canonical"):
        decode(data[:-1] + long_int)
    indefinite = b"\xbf\x61a\x01\xff"  # {"a": 1} as an indefinite-length map
    with pytest.raises(DecodeError, match="canonical"):
        decode(data[:-1] + indefinite)
    assert decode(data[:-1] + b"\xa1\x61a\x01").payload == {"a": 1}
    with pytest.raises(DecodeError, match="invalid CBOR"):
        decode(b"\xff\x00")


def test_payload_helpers_name_field_and_party() -> None:
    for g in (ED25519, SECP256K1):
        with pytest.raises(DecodeError) as info:
            take_point(g, {"p": b"\x05" * g.element_len}, "p", 7)
        assert info.value.field == "p" and info.value.party == 7
        with pytest.raises(DecodeError) as info:
            take_scalar(g, {"s": b"\xff" * 32}, "s", 4)
        assert info.value.field == "s" and info.value.party == 4
        with pytest.raises(DecodeError):
            take_scalar(g, {"s": bytes(32)}, "s", 4)  # zero refused by default
        assert take_scalar(g, {"s": bytes(32)}, "s", 4, allow_zero=True) == 0


def test_engine_refuses_replay_equivocation_and_misrouting() -> None:
    sessions = toys()
    out = {p: s.start() for p, s in sessions.items()}
    m1 = out[1][0]
    sessions[2].receive(m1)
    with pytest.raises(ProtocolError) as info:  # same round twice: replay
        sessions[2].receive(m1)
    assert info.value.culprits == (1,)
    with pytest.raises(ProtocolError):  # dead object stays dead
        sessions[2].receive(out[3][0])

    s3 = sessions[3]
    with pytest.raises(DecodeError, match="another session"):
        s3.receive(Message("toy", os.urandom(32), 1, 1, None, {"v": 1}))
    s3b = toys()[3]
    s3b.start()
    with pytest.raises(DecodeError, match="addressed to"):
        s3b.receive(Message("toy", SID, 2, 1, 2, {"w": 1}))
    s3c = toys()[3]
    s3c.start()
    with pytest.raises(DecodeError, match="not another participant"):
        s3c.receive(Message("toy", SID, 1, 9, None, {"v": 1}))
    s3d = toys()[3]
    s3d.start()
    with pytest.raises(DecodeError, match="must be broadcast"):
        s3d.receive(Message("toy", SID, 1, 1, 3, {"v": 1}))


def test_engine_refuses_stale_round_and_reports_whom_it_waits_for() -> None:
    sessions = toys()
    starts = {p: s.start() for p, s in sessions.items()}
    s1 = sessions[1]
    assert set(s1.waiting_for()) == {2, 3}
    s1.receive(starts[2][0])
    assert s1.waiting_for() == (3,)
    out = s1.receive(starts[3][0])
    assert len(out) == 2 and s1.current_round == 2
    with pytest.raises(ProtocolError, match="stale or replayed"):
        s1.receive(starts[2][0])
    with pytest.raises(UsageError, match="no result yet"):
        _ = toys()[1].result


def test_identifiers_and_threshold_checks() -> None:
    for bad in ([0, 1], [1, 1], [-2, 3], [1, SECP256K1.order]):
        with pytest.raises(UsageError):
            check_identifiers(SECP256K1, bad)
    for t, n in [(1, 3), (4, 3), (0, 0)]:
        with pytest.raises(UsageError):
            check_threshold(t, n)
    with pytest.raises(UsageError, match="not in the signer set"):
        lagrange_coefficient(ED25519, 4, [1, 2, 3])
    with pytest.raises(UsageError, match="duplicate"):
        lagrange_coefficient(ED25519, 1, [1, 2, 2])
