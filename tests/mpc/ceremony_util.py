"""Helpers for the key-ceremony tests (refresh, reshare, HD): tampering, equivocation, ECDSA.

Nothing here forms a whole key: keys are checked by recomputing public keys only.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import coincurve

from mpc.dkls23 import (
    EcdsaKeyShare,
    Presignature,
    PresignSession,
    combine_signature,
    sign_with_presignature,
)
from mpc.dkls23.params import Q
from mpc.groups import Group, Point
from mpc.session import RoundSession
from mpc.shamir import PublicKeyPackage, lagrange_coefficient
from mpc.testing import MemoryLedger, run_local
from mpc.wire import Message

Tamper = Callable[[Message], Message | None]


def tamper(
    sender: int, round: int, edit: Callable[[dict[str, Any]], None], recipient: int | None = None
) -> Tamper:
    """Edit the payload of ``sender``'s round-``round`` messages (to ``recipient`` if given)."""

    def hook(m: Message) -> Message:
        if m.sender == sender and m.round == round and recipient in (None, m.recipient):
            p = dict(m.payload)
            edit(p)
            return replace(m, payload=p)
        return m

    return hook


def add_to_scalar(group: Group, field: str, delta: int) -> Callable[[dict[str, Any]], None]:
    def edit(p: dict[str, Any]) -> None:
        s = group.decode_scalar(bytes(p[field]), allow_zero=True)
        p[field] = group.encode_scalar((s + delta) % group.order)

    return edit


def bad_point(group: Group) -> bytes:
    """An encoding that is not a valid element (small order / off the curve)."""
    if group.name == "ed25519":
        return bytes.fromhex("ec" + "ff" * 30 + "7f")
    return b"\x02" + bytes(31) + b"\x07"


def identity_bytes(group: Group) -> bytes:
    return bytes([1]) + bytes(31) if group.name == "ed25519" else b"\x00" * 33


def run_equivocating(
    honest: Mapping[int, RoundSession[Any]],
    evil: int,
    faces: Mapping[int, RoundSession[Any]],
) -> dict[int, Any]:
    """Run ``honest`` sessions with party ``evil`` played by several honest-looking faces.

    ``faces`` maps each honest party to the session that plays ``evil`` towards it (two
    independent sessions with different randomness = two different commitments). Messages
    from a face reach only the parties it faces; messages to ``evil`` reach every face.
    Raises the first error an honest party raises.
    """
    distinct = {id(f): f for f in faces.values()}
    # (message, id of the face that sent it, or None for an honest sender)
    queue: list[tuple[Message, int | None]] = []
    for s in honest.values():
        queue.extend((m, None) for m in s.start())
    for fid, f in distinct.items():
        queue.extend((m, fid) for m in f.start())
    while queue:
        msg, origin = queue.pop(0)
        if origin is not None:
            targets = [p for p, f in faces.items() if id(f) == origin]
        elif msg.recipient is None:
            targets = [p for p in honest if p != msg.sender]
        else:
            targets = [msg.recipient] if msg.recipient in honest else []
        if origin is None and msg.recipient in (None, evil):
            for fid, f in distinct.items():
                queue.extend((m, fid) for m in f.receive(msg))
        for p in targets:
            if msg.recipient in (None, p):
                queue.extend((m, None) for m in honest[p].receive(msg))
    return {p: s.result for p, s in honest.items()}


def interpolate_public(public: PublicKeyPackage, ids: Sequence[int]) -> Point:
    """``sum lambda_j Y_j`` over ``ids``: the key those shares would sign for (public only)."""
    g = public.group
    return g.sum([public.verifying_shares[j] * lagrange_coefficient(g, j, ids) for j in ids])


def every_subset_gives_group_key(public: PublicKeyPackage) -> bool:
    t = public.min_signers
    return all(
        interpolate_public(public, list(s)) == public.group_public_key
        for s in itertools.combinations(public.participants, t)
    )


def ecdsa_sign(
    keys: Mapping[int, EcdsaKeyShare], signers: Sequence[int], msg_hash: bytes
) -> tuple[Any, dict[int, Presignature]]:
    """Presign and sign with DKLs23 and check the signature with coincurve (low s, recovery)."""
    sid = secrets.token_bytes(32)
    ids = tuple(sorted(signers))
    pres: dict[int, Presignature] = run_local(
        {i: PresignSession(keys[i], sid, ids) for i in ids}, order="random"
    )
    parts = [sign_with_presignature(pres[i], keys[i], msg_hash, ledger=MemoryLedger()) for i in ids]
    pk = keys[ids[0]].group_public_key
    sig = combine_signature(pres[ids[0]].public, parts, msg_hash, pk)
    assert 0 < sig.s <= Q // 2
    pk_bytes = pk.encode()
    assert coincurve.PublicKey(pk_bytes).verify(sig.to_der(), msg_hash, hasher=None)
    rec = coincurve.PublicKey.from_signature_and_message(sig.to_compact(), msg_hash, hasher=None)
    assert rec.format() == pk_bytes
    return sig, pres
