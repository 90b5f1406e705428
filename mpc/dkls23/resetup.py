"""A ceremony on the Shamir part of a DKLs23 key, then a fresh base-OT setup, as one session.

A :class:`~mpc.dkls23.EcdsaKeyShare` is a Shamir share plus, per peer, the base-OT seeds of
the pairwise F_RVOLE setup (DKLs23 section 5, "a fast one-time setup";
:mod:`mpc.dkls23.keygen`). After a proactive refresh (:class:`mpc.refresh.RefreshSession`)
the seeds of the old epoch must be replaced for the refresh to bring full proactive
security (an adversary that read a node's seeds before still holds them); after a
resharing (:class:`mpc.reshare.ReshareSession`) the new committee's pairs have none.
:class:`OtResetupChain` composes the two stages for one party exactly as
:class:`~mpc.dkls23.keysetup.KeygenChain` composes the DKG and the setup:

1. the ceremony (``frost-refresh`` or ``frost-reshare``) under the caller's session id;
2. :class:`~mpc.dkls23.OtSetupSession` (``dkls23-setup``) on the new key package, under
   :func:`resetup_session_id` of the first, started the moment stage 1 finishes; a peer's
   early setup messages are buffered (at most one per setup round and sender).

The result is the new :class:`~mpc.dkls23.EcdsaKeyShare`, or ``None`` for a resharing
dealer outside the new committee (it gets no share; its session ends with stage 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from mpc.dkls23.keygen import PROTOCOL_SETUP, EcdsaKeyShare, OtSetupSession
from mpc.dkls23.params import GROUP
from mpc.errors import ProtocolError, UsageError
from mpc.session import RoundSession
from mpc.shamir import KeyPackage
from mpc.wire import Message

__all__ = ["OtResetupChain", "resetup_session_id"]

RESETUP_SID_DOMAIN = b"tpwc-dkls23-resetup\x00"


def resetup_session_id(protocol: str, session_id: bytes) -> bytes:
    """Session id of the OT setup (stage 2), derived from stage 1's protocol and session id."""
    return hashlib.sha256(RESETUP_SID_DOMAIN + protocol.encode() + b"\x00" + session_id).digest()


def _new_key(result: Any) -> KeyPackage | None:
    """Stage 1's result as a key package: a refresh gives one, a resharing may give none."""
    if isinstance(result, KeyPackage):
        return result
    key = getattr(result, "key", None)
    if key is None or isinstance(key, KeyPackage):
        return key
    raise UsageError("stage 1 did not produce a key package")


class OtResetupChain:
    """Party ``first.me``: ``first`` (a refresh or reshare session on secp256k1), then OT setup."""

    def __init__(self, first: RoundSession[Any]) -> None:
        if getattr(first, "group", None) is not GROUP:
            raise UsageError("a DKLs23 OT re-setup needs a secp256k1 ceremony")
        self.first = first
        self.session_id = first.session_id
        self.setup_session_id = resetup_session_id(first.protocol, first.session_id)
        self.setup: OtSetupSession | None = None
        self._early: list[Message] = []

    @property
    def accepts(self) -> Mapping[str, bytes]:
        """Protocol name -> session id, for every protocol this session runs."""
        return {self.first.protocol: self.session_id, PROTOCOL_SETUP: self.setup_session_id}

    @property
    def protocol(self) -> str:
        return self.first.protocol if self.setup is None else self.setup.protocol

    @property
    def done(self) -> bool:
        if not self.first.done:
            return False
        return self.setup.done if self.setup is not None else _new_key(self.first.result) is None

    @property
    def result(self) -> EcdsaKeyShare | None:
        """The new key share with fresh OT seeds (secret), or None for a departing dealer."""
        if self.setup is not None:
            return self.setup.result
        if self.first.done and _new_key(self.first.result) is None:
            return None
        raise UsageError(f"{self.first.protocol}: the ceremony has not finished")

    def waiting_for(self) -> tuple[int, ...]:
        return (self.setup or self.first).waiting_for()

    def start(self) -> list[Message]:
        return self._maybe_setup(self.first.start())

    def receive(self, msg: Message) -> list[Message]:
        """Feed one message of either stage; returns what must be sent next."""
        if self.setup is not None:
            return self.setup.receive(msg)
        if msg.protocol == PROTOCOL_SETUP:
            self._buffer(msg)
            return []
        return self._maybe_setup(self.first.receive(msg))

    def _maybe_setup(self, out: list[Message]) -> list[Message]:
        if not self.first.done or self.setup is not None:
            return out
        key = _new_key(self.first.result)
        if key is None:
            if self._early:
                raise ProtocolError(
                    "key-setup messages sent to a party outside the new committee",
                    culprits=tuple(m.sender for m in self._early),
                )
            return out
        self.setup = OtSetupSession(key, self.setup_session_id)
        out = out + self.setup.start()
        early, self._early = self._early, []
        for m in early:
            out += self.setup.receive(m)
        return out

    def _buffer(self, msg: Message) -> None:
        limit = len(OtSetupSession.rounds)
        if sum(1 for m in self._early if m.sender == msg.sender) >= limit:
            raise ProtocolError(
                "too many early key-setup messages before the ceremony finished",
                culprits=(msg.sender,),
            )
        self._early.append(msg)
