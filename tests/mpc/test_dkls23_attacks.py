"""DKLs23 attack tests: each fails closed, releases no signature and names the culprit."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from mpc.dkls23 import (
    EcdsaKeyShare,
    OtSetupSession,
    PartialSignature,
    Presignature,
    PresignSession,
    combine_signature,
    sign_with_presignature,
)
from mpc.dkls23.params import Q
from mpc.errors import DecodeError, MpcError, NonceReuseError, ProtocolError
from mpc.groups import SECP256K1
from mpc.testing import MemoryLedger, run_dkg_local, run_keygen_local, run_local
from mpc.wire import Message

G = SECP256K1


@pytest.fixture(scope="module")
def keys() -> dict[int, EcdsaKeyShare]:
    return run_keygen_local(2, 3)


def tamper_payload(
    rnd: int, sender: int, fn: Callable[[dict[str, Any]], None], recipient: int | None = None
) -> Callable[[Message], Message]:
    def t(msg: Message) -> Message:
        if (
            msg.round == rnd
            and msg.sender == sender
            and (recipient is None or msg.recipient == recipient)
        ):
            p = dict(msg.payload)
            fn(p)
            return dataclasses.replace(msg, payload=p)
        return msg

    return t


def flip(b: bytes, i: int = 0) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


def run_presign(
    keys: dict[int, EcdsaKeyShare], signers: tuple[int, ...] = (1, 2, 3), **kw: Any
) -> dict[int, Presignature]:
    sid = secrets.token_bytes(32)
    res: dict[int, Presignature] = run_local(
        {i: PresignSession(keys[i], sid, signers) for i in signers}, **kw
    )
    return res


def expect_blame(
    exc_type: type[MpcError], culprit: int, keys: dict[int, EcdsaKeyShare], tamper: Any
) -> MpcError:
    with pytest.raises(exc_type) as exc:
        run_presign(keys, tamper=tamper)
    err = exc.value
    if isinstance(err, ProtocolError):
        assert err.culprits == (culprit,)
    else:
        assert err.party == culprit
    return err


# -- presignature reuse ------------------------------------------------------------------


def test_presignature_used_twice(keys: dict[int, EcdsaKeyShare]) -> None:
    pres = run_presign(keys, (1, 2))
    ledger = MemoryLedger()
    stored = pres[2].to_bytes()
    sign_with_presignature(pres[2], keys[2], b"\x01" * 32, ledger=ledger)
    with pytest.raises(NonceReuseError) as exc:
        sign_with_presignature(pres[2], keys[2], b"\x02" * 32, ledger=ledger)
    assert exc.value.party == 2
    a, b = Presignature.from_bytes(stored), Presignature.from_bytes(stored)
    with pytest.raises(NonceReuseError):
        sign_with_presignature(a, keys[2], b"\x02" * 32, ledger=ledger)
    with pytest.raises(NonceReuseError):
        sign_with_presignature(b, keys[2], b"\x03" * 32, ledger=ledger)


# -- multiplication and OT extension ---------------------------------------------------------


def test_inconsistent_tau_blames_alice(keys: dict[int, EcdsaKeyShare]) -> None:
    err = expect_blame(
        ProtocolError, 1, keys, tamper_payload(2, 1, lambda p: p.update(tau=flip(p["tau"], 40)), 3)
    )
    assert isinstance(err, ProtocolError) and err.pair == (1, 3)


def test_inconsistent_mu_blames_alice(keys: dict[int, EcdsaKeyShare]) -> None:
    def bad(p: dict[str, Any]) -> None:
        p["mu"] = [((int.from_bytes(p["mu"][0], "big") + 1) % Q).to_bytes(32, "big"), p["mu"][1]]

    expect_blame(ProtocolError, 2, keys, tamper_payload(2, 2, bad, 1))


def test_inconsistent_gamma_blames_sender(keys: dict[int, EcdsaKeyShare]) -> None:
    other = G.base_mul(5).encode()
    expect_blame(ProtocolError, 3, keys, tamper_payload(2, 3, lambda p: p.update(gu=other), 1))
    expect_blame(ProtocolError, 3, keys, tamper_payload(2, 3, lambda p: p.update(gv=other), 2))


def test_wrong_decommitment_blames_sender(keys: dict[int, EcdsaKeyShare]) -> None:
    expect_blame(
        ProtocolError, 2, keys, tamper_payload(2, 2, lambda p: p.update(salt=flip(p["salt"])), 3)
    )


def test_failing_ote_check_blames_bob(keys: dict[int, EcdsaKeyShare]) -> None:
    err = expect_blame(
        ProtocolError, 1, keys, tamper_payload(1, 1, lambda p: p.update(u=flip(p["u"], 100)), 2)
    )
    assert isinstance(err, ProtocolError) and err.pair == (1, 2)
    expect_blame(
        ProtocolError,
        3,
        keys,
        tamper_payload(1, 3, lambda p: p.update(t_dot=flip(p["t_dot"], 7)), 1),
    )
    expect_blame(
        ProtocolError, 2, keys, tamper_payload(1, 2, lambda p: p.update(x_dot=flip(p["x_dot"])), 3)
    )


@pytest.mark.parametrize(
    "field,value",
    [("u", b"\x00" * 10), ("tau_short", None), ("rho", b"x"), ("t_dot", 5), ("extra", b"")],
)
def test_malformed_ote_messages(keys: dict[int, EcdsaKeyShare], field: str, value: Any) -> None:
    def bad(p: dict[str, Any]) -> None:
        if field == "tau_short":
            return
        p[field] = value

    if field == "tau_short":
        t = tamper_payload(2, 2, lambda p: p.update(tau=p["tau"][:-32]), 1)
        err = expect_blame(DecodeError, 2, keys, t)
        assert isinstance(err, DecodeError) and err.field == "tau"
        return
    err = expect_blame(DecodeError, 2, keys, tamper_payload(1, 2, bad, 1))
    assert isinstance(err, DecodeError) and err.field in (field, "payload")


def test_noncanonical_tau_scalar(keys: dict[int, EcdsaKeyShare]) -> None:
    big = (Q + 1).to_bytes(32, "big")
    err = expect_blame(
        DecodeError, 3, keys, tamper_payload(2, 3, lambda p: p.update(tau=big + p["tau"][32:]), 2)
    )
    assert isinstance(err, DecodeError) and err.field == "tau"


@pytest.mark.parametrize(
    "enc", [b"\x02" + b"\x00" * 32, b"\x00" * 33, b"\x04" + b"\x01" * 32, b"\x02" * 32]
)
def test_bad_points_in_presign(keys: dict[int, EcdsaKeyShare], enc: bytes) -> None:
    err = expect_blame(DecodeError, 1, keys, tamper_payload(2, 1, lambda p: p.update(R=enc), 2))
    assert isinstance(err, DecodeError) and err.field == "R"


# -- base OT setup ---------------------------------------------------------------------------


def run_setup(tamper: Any) -> None:

    kps = run_dkg_local(G, 2, 3)
    sid = secrets.token_bytes(32)
    run_local({kp.identifier: OtSetupSession(kp, sid) for kp in kps}, tamper=tamper)


@pytest.mark.parametrize(
    "rnd,fn,exc,field",
    [
        (1, lambda p: p.update(B=b"\x02" + b"\xff" * 32), DecodeError, "B"),  # x >= p: off curve
        (1, lambda p: p.update(B=b"\x00" * 33), DecodeError, "B"),  # identity has no encoding
        (1, lambda p: p.update(z=(5).to_bytes(32, "big")), ProtocolError, None),  # bad PoK
        (2, lambda p: p.update(A=p["A"][:-1]), DecodeError, "A"),  # wrong count
        # one codec (mpc.wire.decode_payload) names the element and the unexpected key
        (2, lambda p: p.update(A=[b"\x03" + b"\x00" * 32] + p["A"][1:]), DecodeError, "A[0]"),
        (3, lambda p: p.update(xi=p["xi"][:-1]), DecodeError, "xi"),
        (4, lambda p: p.update(resp=flip(p["resp"], 3)), ProtocolError, None),  # VSOT check
        (5, lambda p: p.update(open=flip(p["open"], 70)), ProtocolError, None),
        (3, lambda p: p.update(extra=b""), DecodeError, "extra"),  # strict field set
    ],
)
def test_malformed_base_ot(rnd: int, fn: Any, exc: type[MpcError], field: str | None) -> None:
    with pytest.raises(exc) as info:
        run_setup(tamper_payload(rnd, 2, fn, 3))
    err = info.value
    if isinstance(err, ProtocolError):
        assert err.culprits == (2,)
    else:
        assert err.party == 2 and isinstance(err, DecodeError) and err.field == field


# -- replay, dropout, order ------------------------------------------------------------------


def test_message_from_another_session_refused(keys: dict[int, EcdsaKeyShare]) -> None:
    sid_a, sid_b = secrets.token_bytes(32), secrets.token_bytes(32)
    a = {i: PresignSession(keys[i], sid_a, (1, 2)) for i in (1, 2)}
    b = {i: PresignSession(keys[i], sid_b, (1, 2)) for i in (1, 2)}
    a[1].start()
    msgs_a2 = a[2].start()
    b[1].start()
    with pytest.raises(DecodeError) as exc:
        b[1].receive(msgs_a2[0])
    assert exc.value.party == 2 and exc.value.field == "session_id"
    # same payload re-labelled with the other session id: the OTE check binds the session
    relabelled = dataclasses.replace(msgs_a2[0], session_id=sid_b)
    fresh = PresignSession(keys[1], sid_b, (1, 2))
    fresh.start()
    with pytest.raises(ProtocolError) as perr:
        fresh.receive(relabelled)
    assert perr.value.culprits == (2,)


def test_message_replayed_from_another_pair(keys: dict[int, EcdsaKeyShare]) -> None:
    """Party 3 forwards to 2 what 1 sent to 2: the pair-bound OTE check fails and names 3."""
    sid = secrets.token_bytes(32)
    s = {i: PresignSession(keys[i], sid, (1, 2, 3)) for i in (1, 2, 3)}
    out = {i: s[i].start() for i in (1, 2, 3)}
    from_1_to_2 = next(m for m in out[1] if m.recipient == 2)
    forged = dataclasses.replace(from_1_to_2, sender=3)
    with pytest.raises(ProtocolError) as exc:
        s[2].receive(forged)
        s[2].receive(from_1_to_2)
    assert exc.value.culprits == (3,)
    with pytest.raises(ProtocolError):  # fail closed: the session stays dead
        s[2].receive(from_1_to_2)


def test_replayed_round_message_refused(keys: dict[int, EcdsaKeyShare]) -> None:
    sid = secrets.token_bytes(32)
    s = {i: PresignSession(keys[i], sid, (1, 2)) for i in (1, 2)}
    m1 = s[1].start()
    s[2].start()
    s[2].receive(m1[0])
    with pytest.raises(ProtocolError) as exc:
        s[2].receive(m1[0])
    assert exc.value.culprits == (1,)


def test_dropout_reports_whom_we_wait_for(keys: dict[int, EcdsaKeyShare]) -> None:
    sid = secrets.token_bytes(32)
    sessions = {i: PresignSession(keys[i], sid, (1, 2, 3)) for i in (1, 2, 3)}
    with pytest.raises(MpcError):
        run_local(sessions, drop=frozenset({3}))
    assert sessions[1].waiting_for() == (3,) and sessions[2].waiting_for() == (3,)
    assert not sessions[1].done


def test_dropout_in_setup_reports_whom_we_wait_for() -> None:

    kps = run_dkg_local(G, 2, 3)
    sid = secrets.token_bytes(32)
    sessions = {kp.identifier: OtSetupSession(kp, sid) for kp in kps}
    with pytest.raises(MpcError):
        run_local(sessions, drop=frozenset({2}))
    assert sessions[1].waiting_for() == (2,) and sessions[3].waiting_for() == (2,)


# -- combiner --------------------------------------------------------------------------------


def test_bad_partial_fails_closed(keys: dict[int, EcdsaKeyShare]) -> None:
    pres = run_presign(keys, (1, 2))
    h = secrets.token_bytes(32)
    p1 = sign_with_presignature(pres[1], keys[1], h, ledger=MemoryLedger())
    p2 = sign_with_presignature(pres[2], keys[2], h, ledger=MemoryLedger())
    pk = keys[1].group_public_key
    with pytest.raises(ProtocolError, match="suspects"):
        combine_signature(pres[1].public, [p1, dataclasses.replace(p2, w=(p2.w + 1) % Q)], h, pk)
    with pytest.raises(ProtocolError) as exc:
        combine_signature(
            pres[1].public, [p1, dataclasses.replace(p2, presignature_id=b"\x00" * 32)], h, pk
        )
    assert exc.value.culprits == (2,)
    with pytest.raises(ProtocolError) as exc:
        combine_signature(pres[1].public, [p1, p1], h, pk)
    assert exc.value.culprits == (1,)
    with pytest.raises(ProtocolError):  # message other than the one the partials signed
        combine_signature(pres[1].public, [p1, p2], secrets.token_bytes(32), pk)
    assert combine_signature(pres[1].public, [p1, p2], h, pk).s <= Q // 2


def test_bad_psi_is_detected_by_combiner(keys: dict[int, EcdsaKeyShare]) -> None:
    """psi has no pairwise check in DKLs23: a wrong one only makes the final signature fail."""
    t = tamper_payload(2, 2, lambda p: p.update(psi=(7).to_bytes(32, "big")), 1)
    pres = run_presign(keys, (1, 2), tamper=t)
    h = secrets.token_bytes(32)
    parts = [sign_with_presignature(pres[i], keys[i], h, ledger=MemoryLedger()) for i in (1, 2)]
    with pytest.raises(ProtocolError, match="does not verify"):
        combine_signature(pres[1].public, parts, h, keys[1].group_public_key)


def test_partial_decoding_is_strict(keys: dict[int, EcdsaKeyShare]) -> None:
    pres = run_presign(keys, (1, 2))
    p = sign_with_presignature(pres[1], keys[1], b"\x05" * 32, ledger=MemoryLedger())
    assert PartialSignature.from_bytes(p.to_bytes(), sender=1) == p
    with pytest.raises(DecodeError) as exc:
        PartialSignature.from_bytes(p.to_bytes(), sender=2)
    assert exc.value.party == 2
    with pytest.raises(DecodeError):
        PartialSignature.from_bytes(p.to_bytes()[:-1], sender=1)
