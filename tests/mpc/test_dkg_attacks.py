"""Malicious parties in the DKG: every deviation aborts (fail closed) and names the culprit."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from mpc.dkg import PROTOCOL, DkgSession, EquivocationError
from mpc.errors import DecodeError, MpcError, ProtocolError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.hazmat import echo_digest, round1_payload
from mpc.testing import run_local
from mpc.wire import Message

GROUPS = [ED25519, SECP256K1]
gid = pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
Tamper = Callable[[Message], Message | None]


def sessions(group: Group, t: int, n: int, sid: bytes | None = None) -> dict[int, DkgSession]:
    sid = sid or os.urandom(32)
    ids = list(range(1, n + 1))
    return {i: DkgSession(group, sid, i, ids, t) for i in ids}


def tamper_payload(sender: int, round: int, edit: Callable[[dict[str, Any]], None]) -> Tamper:
    def hook(m: Message) -> Message:
        if m.sender == sender and m.round == round:
            p = dict(m.payload)
            edit(p)
            return replace(m, payload=p)
        return m

    return hook


def bad_point(group: Group) -> bytes:
    """An encoding that is not a valid element (off curve / small order)."""
    if group is ED25519:
        return bytes.fromhex("ec" + "ff" * 30 + "7f")  # y = -1: the point of order 2
    return b"\x02" + bytes(31) + b"\x07"  # x = 7: x^3 + 7 = 350 is not a square mod p


def identity_bytes(group: Group) -> bytes:
    return bytes([1]) + bytes(31) if group is ED25519 else b"\x00" * 33


# -- round 1 ----------------------------------------------------------------------------


@gid
@pytest.mark.parametrize("delta", [+1, -1])
def test_commitment_length_must_be_t(group: Group, delta: int) -> None:
    """Threshold raising (t+1 points) or lowering (t-1) is refused and blamed."""

    def edit(p: dict[str, Any]) -> None:
        c = list(p["commitment"])
        p["commitment"] = c + [group.base_mul(5).encode()] if delta > 0 else c[:-1]

    with pytest.raises(DecodeError) as ei:
        run_local(sessions(group, 3, 4), tamper=tamper_payload(2, 1, edit))
    assert ei.value.party == 2 and ei.value.field == "commitment"


@gid
@pytest.mark.parametrize("kind", ["bad", "identity", "short"])
def test_invalid_commitment_point(group: Group, kind: str) -> None:
    value = {"bad": bad_point(group), "identity": identity_bytes(group), "short": b"\x02"}[kind]

    def edit(p: dict[str, Any]) -> None:
        c = list(p["commitment"])
        c[1] = value
        p["commitment"] = c

    with pytest.raises(DecodeError) as ei:
        run_local(sessions(group, 3, 4), tamper=tamper_payload(3, 1, edit))
    assert ei.value.party == 3 and ei.value.field == "commitment[1]"


@gid
def test_rogue_key_without_knowledge_is_refused(group: Group) -> None:
    """C_i0 replaced by a point whose log the sender does not know (rogue key): PoK fails."""

    def edit(p: dict[str, Any]) -> None:
        c = list(p["commitment"])
        c[0] = group.base_mul(group.random_scalar()).encode()
        p["commitment"] = c

    with pytest.raises(ProtocolError) as ei:
        run_local(sessions(group, 2, 3), tamper=tamper_payload(2, 1, edit))
    assert ei.value.culprits == (2,) and "proof of knowledge" in str(ei.value)


@gid
@pytest.mark.parametrize("field", ["pok_r", "pok_mu", "commitment"])
def test_missing_field(group: Group, field: str) -> None:
    with pytest.raises(DecodeError) as ei:
        run_local(sessions(group, 2, 3), tamper=tamper_payload(1, 1, lambda p: p.pop(field)))
    assert ei.value.party == 1 and ei.value.field == field


@gid
def test_unexpected_field(group: Group) -> None:
    def edit(p: dict[str, Any]) -> None:
        p["extra"] = b""

    with pytest.raises(DecodeError) as ei:
        run_local(sessions(group, 2, 3), tamper=tamper_payload(1, 1, edit))
    assert ei.value.party == 1 and ei.value.field == "extra"


@gid
def test_bad_pok_values(group: Group) -> None:
    def edit(p: dict[str, Any]) -> None:
        p["pok_mu"] = group.encode_scalar(group.random_scalar())

    with pytest.raises(ProtocolError) as ei:
        run_local(sessions(group, 2, 3), tamper=tamper_payload(3, 1, edit))
    assert ei.value.culprits == (3,)

    def edit_r(p: dict[str, Any]) -> None:
        p["pok_r"] = bad_point(group)

    with pytest.raises(DecodeError) as de:
        run_local(sessions(group, 2, 3), tamper=tamper_payload(3, 1, edit_r))
    assert de.value.party == 3 and de.value.field == "pok_r"


@gid
def test_two_rogue_parties_both_named(group: Group) -> None:
    s = sessions(group, 2, 4)
    first = {i: s[i].start()[0] for i in s}
    forged = {
        i: replace(first[i], payload={**first[i].payload, "pok_mu": group.encode_scalar(1)})
        for i in (2, 3)
    }
    for i in (2, 3):
        s[1].receive(forged[i])
    with pytest.raises(ProtocolError) as ei:
        s[1].receive(first[4])
    assert ei.value.culprits == (2, 3)


@gid
def test_replay_from_another_session(group: Group) -> None:
    """Party 2's valid broadcast of session A, replayed into session B: its proof fails."""
    a = sessions(group, 2, 3)
    old = a[2].start()[0]
    b = sessions(group, 2, 3)
    msgs = {i: b[i].start()[0] for i in b}
    replayed = replace(old, session_id=msgs[2].session_id)
    b[1].receive(msgs[3])
    with pytest.raises(ProtocolError) as ei:
        b[1].receive(replayed)
    assert ei.value.culprits == (2,)


@gid
def test_replay_from_another_sender(group: Group) -> None:
    """Party 3 copies party 2's broadcast (same session): the proof binds the sender."""
    s = sessions(group, 2, 3)
    msgs = {i: s[i].start()[0] for i in s}
    s[1].receive(msgs[2])
    with pytest.raises(ProtocolError) as ei:
        s[1].receive(replace(msgs[2], sender=3))
    assert ei.value.culprits == (3,)


@gid
def test_header_checks(group: Group) -> None:
    s = sessions(group, 2, 3)
    msgs = {i: s[i].start()[0] for i in s}
    cases: list[tuple[Message, type[MpcError], str | None]] = [
        (replace(msgs[2], session_id=os.urandom(32)), DecodeError, "session_id"),
        (replace(msgs[2], round=3), DecodeError, "round"),
        (replace(msgs[2], protocol="frost-sign"), DecodeError, "protocol"),
        (replace(msgs[2], recipient=1), DecodeError, "recipient"),  # round 1 is broadcast
        (replace(msgs[2], round=2), DecodeError, "recipient"),  # round 2 is direct
        (replace(msgs[2], round=2, recipient=3), DecodeError, "recipient"),  # not for us
    ]
    for bad, err, field in cases:
        fresh = sessions(group, 2, 3, sid=msgs[2].session_id)
        fresh[1].start()
        with pytest.raises(err) as ei:
            fresh[1].receive(bad)
        assert ei.value.party == 2 and getattr(ei.value, "field", None) == field
    for sender in (1, 4, 0):  # ourselves, outside the set, the invalid id 0
        fresh = sessions(group, 2, 3, sid=msgs[2].session_id)
        fresh[1].start()
        with pytest.raises(DecodeError) as de:
            fresh[1].receive(replace(msgs[2], sender=sender))
        assert de.value.field == "sender"


@gid
def test_duplicate_and_stale_messages(group: Group) -> None:
    s = sessions(group, 2, 3)
    msgs = {i: s[i].start()[0] for i in s}
    s[1].receive(msgs[2])
    with pytest.raises(ProtocolError) as ei:
        s[1].receive(msgs[2])
    assert ei.value.culprits == (2,)
    with pytest.raises(ProtocolError):  # fail closed: dead object repeats the error
        s[1].receive(msgs[3])

    s = sessions(group, 2, 3, sid=msgs[2].session_id)
    msgs = {i: s[i].start()[0] for i in s}
    s[1].receive(msgs[2])
    s[1].receive(msgs[3])  # round 1 done
    with pytest.raises(ProtocolError) as ei:
        s[1].receive(msgs[3])  # stale round-1 replay
    assert ei.value.culprits == (3,)


@gid
def test_round1_payload_in_round2(group: Group) -> None:
    s = sessions(group, 2, 3)
    msgs = {i: s[i].start()[0] for i in s}
    s[1].receive(msgs[2])
    s[1].receive(msgs[3])
    with pytest.raises(DecodeError) as ei:
        s[1].receive(replace(msgs[2], round=2, recipient=1))
        s[1].receive(replace(msgs[3], round=2, recipient=1))
    assert ei.value.party == 2 and ei.value.field == "echo"


# -- round 2 ----------------------------------------------------------------------------


@gid
def test_tampered_share_blames_sender(group: Group) -> None:
    def hook(m: Message) -> Message:
        if m.sender == 2 and m.round == 2 and m.recipient == 3:
            s = group.decode_scalar(m.payload["share"], allow_zero=True)
            return replace(m, payload={**m.payload, "share": group.encode_scalar(s + 1)})
        return m

    s = sessions(group, 3, 4)
    with pytest.raises(ProtocolError) as ei:
        run_local(s, tamper=hook)
    assert ei.value.culprits == (2,) and "share" in str(ei.value)
    assert isinstance(s[3]._error, ProtocolError) and s[3]._error.culprits == (2,)


@gid
def test_all_bad_shares_named(group: Group) -> None:
    def hook(m: Message) -> Message:
        if m.sender in (1, 4) and m.round == 2 and m.recipient == 2:
            return replace(m, payload={**m.payload, "share": group.encode_scalar(0)})
        return m

    s = sessions(group, 2, 4)
    with pytest.raises(ProtocolError) as ei:
        run_local(s, tamper=hook)
    assert ei.value.culprits == (1, 4)


@gid
def test_cancelling_share_errors_still_give_a_correct_share(group: Group) -> None:
    """Batched verification accepts errors that cancel exactly; the share is still right."""

    def hook(m: Message) -> Message:
        if m.round == 2 and m.recipient == 3 and m.sender in (1, 2):
            s = group.decode_scalar(m.payload["share"], allow_zero=True)
            d = 12345 if m.sender == 1 else -12345
            return replace(m, payload={**m.payload, "share": group.encode_scalar(s + d)})
        return m

    res = run_local(sessions(group, 2, 3), tamper=hook)
    assert group.base_mul(res[3].signing_share) == res[1].public.verifying_shares[3]


@gid
def test_noncanonical_share_is_decode_error(group: Group) -> None:
    def edit(p: dict[str, Any]) -> None:
        p["share"] = b"\xff" * 32

    with pytest.raises(DecodeError) as ei:
        run_local(sessions(group, 2, 3), tamper=tamper_payload(2, 2, edit))
    assert ei.value.party == 2 and ei.value.field == "share"


@gid
@pytest.mark.parametrize("bad", [[], "short-digest", "wrong-type"])
def test_malformed_echo(group: Group, bad: str | list[bytes]) -> None:
    def edit(p: dict[str, Any]) -> None:
        echo = list(p["echo"])
        if bad == []:
            p["echo"] = echo[:-1]
        elif bad == "short-digest":
            p["echo"] = [*echo[:-1], echo[-1][:31]]
        else:
            p["echo"] = [*echo[:-1], 5]

    with pytest.raises(DecodeError) as ei:
        run_local(sessions(group, 2, 3), tamper=tamper_payload(3, 2, edit))
    assert ei.value.party == 3 and ei.value.field is not None
    assert ei.value.field.startswith("echo")


# -- echo check: equivocation ----------------------------------------------------------


def _digest_of(group: Group, m: Message) -> bytes:
    p = m.payload
    cmt = [group.decode_point(c) for c in p["commitment"]]
    r = group.decode_point(p["pok_r"])
    mu = group.decode_scalar(p["pok_mu"], allow_zero=True)
    return echo_digest(group, b"", m.session_id, m.sender, cmt, r, mu)


def _equivocation_run(group: Group, smart: bool) -> dict[int, MpcError]:
    """Party 1 sends broadcast A to party 2 and a different valid broadcast B to 3 and 4."""
    s = sessions(group, 2, 4)
    r1 = {i: s[i].start()[0] for i in s}
    sid = r1[1].session_id
    coeffs = [group.random_scalar(), group.random_scalar()]
    alt = Message(PROTOCOL, sid, 1, 1, None, round1_payload(group, coeffs, b"", sid, 1))
    errors: dict[int, MpcError] = {}
    out: list[Message] = []
    for i in s:
        for j in s:
            if j != i:
                out += s[j].receive(alt if (i == 1 and j in (3, 4)) else r1[i])
    alt_digest = _digest_of(group, alt)
    for m in out:
        assert m.recipient is not None
        if smart and m.sender == 1 and m.recipient in (3, 4):
            # a careful equivocator reports to each peer that peer's own view
            m = replace(m, payload={**m.payload, "echo": [alt_digest, *m.payload["echo"][1:]]})
        try:
            s[m.recipient].receive(m)
        except MpcError as exc:
            errors.setdefault(m.recipient, exc)
    for i in (2, 3, 4):
        assert not s[i].done and s[i]._error is not None
        errors.setdefault(i, s[i]._error)
    return errors


@gid
def test_equivocation_aborts_and_names_sender(group: Group) -> None:
    errors = _equivocation_run(group, smart=False)
    # Party 3 got B, but party 1's own echo says A: certain.
    assert type(errors[3]) is ProtocolError and errors[3].culprits == (1,)
    assert type(errors[4]) is ProtocolError and errors[4].culprits == (1,)
    # Party 2 got A, parties 3 and 4 report B: party 1 equivocated or both misreport.
    e2 = errors[2]
    assert isinstance(e2, EquivocationError)
    assert e2.subjects == (1,) and e2.mismatches == ((1, 3), (1, 4))
    assert e2.culprits == (1, 3, 4)


@gid
def test_careful_equivocation_still_aborts_everyone(group: Group) -> None:
    errors = _equivocation_run(group, smart=True)
    for i in (2, 3, 4):
        e = errors[i]
        assert isinstance(e, EquivocationError) and e.subjects == (1,), (i, e)
        assert 1 in e.culprits
    assert errors[3].mismatches == ((1, 2),) and errors[3].pair == (1, 2)


@gid
def test_echo_misreport_about_recipient_is_certain(group: Group) -> None:
    """Party 2 tells party 3 that 3's broadcast was something else: 2 is at fault."""

    def hook(m: Message) -> Message:
        if m.sender == 2 and m.round == 2 and m.recipient == 3:
            echo = list(m.payload["echo"])
            echo[2] = os.urandom(32)
            return replace(m, payload={**m.payload, "echo": echo})
        return m

    s = sessions(group, 2, 3)
    with pytest.raises(ProtocolError) as ei:
        run_local(s, tamper=hook)
    assert type(ei.value) is ProtocolError and ei.value.culprits == (2,)


@gid
def test_echo_misreport_about_third_party(group: Group) -> None:
    def hook(m: Message) -> Message:
        if m.sender == 2 and m.round == 2 and m.recipient == 3:
            echo = list(m.payload["echo"])
            echo[0] = os.urandom(32)  # about party 1
            return replace(m, payload={**m.payload, "echo": echo})
        return m

    with pytest.raises(EquivocationError) as ei:
        run_local(sessions(group, 2, 3), tamper=hook)
    assert ei.value.mismatches == ((1, 2),) and ei.value.culprits == (1, 2)
