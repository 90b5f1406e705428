"""DKLs23 key setup as one composite session: the DKG, then the pairwise base-OT setup.

DKLs23 (ePrint 2023/765) Protocol 3.6 needs two things per party before it can presign: a
Shamir sharing of the secret key and, for every ordered pair of parties, the one-time
setup of F_RVOLE (Functionality 3.5; section 5, "a fast one-time setup": the base OTs of
the OT extension). :class:`KeygenChain` runs both back to back for one party, sans-IO:

1. the FROST KeyGen DKG over secp256k1 (RFC 9591 Appendix C / :class:`mpc.dkg.DkgSession`,
   protocol ``frost-dkg``) under the caller's session id; its result, a
   :class:`~mpc.shamir.KeyPackage`, is the sharing;
2. :class:`~mpc.dkls23.keygen.OtSetupSession` (protocol ``dkls23-setup``) under a second
   session id derived from the first (:func:`setup_session_id`), started the moment the
   DKG finishes, on the key package it produced.

Peers finish the DKG at different moments, so a peer's first setup messages can arrive
while this party is still in the DKG; they are buffered (at most one per setup round and
sender, more is a protocol violation blamed on the sender) and fed to the setup session
when it starts. The result is an :class:`~mpc.dkls23.keygen.EcdsaKeyShare`: the key
package plus the OT seeds (secret; the caller seals it).

The object presents the driving surface of :class:`mpc.session.RoundSession` (``start``,
``receive``, ``done``, ``result``, ``waiting_for``, ``protocol``) plus :attr:`accepts`,
the protocol names it runs with the session id of each, for the envelope layer.
Errors of either stage propagate unchanged and leave that stage dead (fail closed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from mpc.dkg import PROTOCOL as PROTOCOL_DKG
from mpc.dkg import DkgSession
from mpc.dkls23.keygen import PROTOCOL_SETUP, EcdsaKeyShare, OtSetupSession
from mpc.dkls23.params import GROUP
from mpc.errors import ProtocolError, UsageError
from mpc.wire import Message

__all__ = ["KeygenChain", "setup_session_id", "SETUP_SID_DOMAIN"]

SETUP_SID_DOMAIN = b"tpwc-dkls23-setup\x00"


def setup_session_id(session_id: bytes) -> bytes:
    """Session id of the OT setup (stage 2), derived from the DKG's (stage 1) session id."""
    return hashlib.sha256(SETUP_SID_DOMAIN + session_id).digest()


class KeygenChain:
    """Party ``me`` of a ``threshold``-of-``len(participants)`` DKLs23 key setup.

    ``context`` is bound into every DKG proof (:class:`mpc.dkg.DkgSession`), e.g. the key id
    and scheme, so a transcript cannot be reused for another key.
    """

    def __init__(
        self,
        session_id: bytes,
        me: int,
        participants: Sequence[int],
        threshold: int,
        context: bytes = b"",
    ) -> None:
        self.session_id = session_id
        self.setup_session_id = setup_session_id(session_id)
        self.dkg = DkgSession(GROUP, session_id, me, participants, threshold, context)
        self.setup: OtSetupSession | None = None
        self._early: list[Message] = []

    @property
    def accepts(self) -> Mapping[str, bytes]:
        """Protocol name -> session id, for every protocol this session runs."""
        return {PROTOCOL_DKG: self.session_id, PROTOCOL_SETUP: self.setup_session_id}

    @property
    def protocol(self) -> str:
        """The protocol of the stage now running."""
        return self.dkg.protocol if self.setup is None else self.setup.protocol

    @property
    def done(self) -> bool:
        return self.setup is not None and self.setup.done

    @property
    def result(self) -> EcdsaKeyShare:
        """The key share with its OT seeds (secret); only once :attr:`done`."""
        if self.setup is None:
            raise UsageError("key setup: the DKG has not finished")
        return self.setup.result

    def waiting_for(self) -> tuple[int, ...]:
        """Parties the running stage still waits on (see :meth:`RoundSession.waiting_for`)."""
        return (self.setup or self.dkg).waiting_for()

    def start(self) -> list[Message]:
        """Round 1 of the DKG."""
        return self.dkg.start()

    def receive(self, msg: Message) -> list[Message]:
        """Feed one message of either stage; returns what must be sent next."""
        if self.setup is not None:
            return self.setup.receive(msg)
        if msg.protocol == PROTOCOL_SETUP:
            self._buffer(msg)
            return []
        out = self.dkg.receive(msg)
        if self.dkg.done:
            self.setup = OtSetupSession(self.dkg.result, self.setup_session_id)
            out = out + self.setup.start()
            early, self._early = self._early, []
            for m in early:
                out += self.setup.receive(m)
        return out

    def _buffer(self, msg: Message) -> None:
        """Keep an early setup message; at most one per (sender, round) of the setup."""
        limit = len(OtSetupSession.rounds)
        if sum(1 for m in self._early if m.sender == msg.sender) >= limit:
            raise ProtocolError(
                "too many early key-setup messages before the DKG finished",
                culprits=(msg.sender,),
            )
        self._early.append(msg)
