"""Typed errors of the protocol layer.

Every error says *what* was wrong and, where a peer is responsible, *who*: the
``party`` attribute (or ``culprits`` for several) is the participant identifier
of the peer at fault, so callers can blame and route around it.
"""

from __future__ import annotations


class MpcError(Exception):
    """Base class of every error raised by :mod:`mpc`."""

    def __init__(self, message: str, *, party: int | None = None) -> None:
        self.party = party
        prefix = f"party {party}: " if party is not None else ""
        super().__init__(prefix + message)


class EncodingError(MpcError):
    """A scalar or group element failed strict decoding (length, range, curve, subgroup)."""


class DecodeError(MpcError):
    """A wire message failed strict decoding; ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None, party: int | None = None):
        self.field = field
        where = f"field {field!r}: " if field else ""
        super().__init__(where + message, party=party)


class ProtocolError(MpcError):
    """A peer deviated from the protocol; ``culprits`` names every party at fault.

    Where a check only identifies a pair (e.g. a failing pairwise OT-extension check),
    ``pair`` is set to ``(detecting party, peer)`` and ``culprits`` holds the peer as seen
    from the detecting party: the fault is on that link, and the driver (which sees every
    party's report) decides whom to route around.
    """

    def __init__(
        self,
        message: str,
        *,
        culprits: tuple[int, ...] = (),
        pair: tuple[int, int] | None = None,
    ) -> None:
        self.culprits = tuple(sorted(set(culprits)))
        self.pair = pair
        party = self.culprits[0] if len(self.culprits) == 1 else None
        if len(self.culprits) > 1:
            message = f"parties {list(self.culprits)}: " + message
        super().__init__(message, party=party)


class UsageError(MpcError):
    """The caller (not a peer) misused an object: wrong state, reused nonce, bad parameters."""


class NonceReuseError(UsageError):
    """A single-use nonce or presignature was asked for a second time."""
