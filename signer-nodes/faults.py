"""Fault injection, passed in: the points where a test may stop the node.

Production code calls ``faults.reached(point)`` at each named point and passes
:data:`NO_FAULTS`, which does nothing. Tests wire a :class:`FaultHooks` of their own, e.g.
one that exits the process at a chosen point to simulate SIGKILL
(``tests/nodes/crashing_node.py``). No production path reads a crash point from the
environment or exits the process.

Points:

* ``sign-before-mark``: signing, every check passed, the items taken out of the pool, their
  release-log entries not yet written;
* ``sign-after-mark``: the entries are durable, no share computed or released yet;
* ``rotate:1`` .. ``rotate:5`` (and ``rotate:3a``, ``rotate:4a`` inside steps 3 and 4):
  the steps of a seal-key rotation (:mod:`signer_nodes.rotation`);
* ``refresh:pending-stored``: a refresh finished here, its new share sealed beside the
  active one, no done statement given yet; ``refresh:commit``: a commit checked, the
  share not yet switched; ``refresh:committed``: switched, not yet answered
  (:mod:`signer_nodes.ceremonies`).

Imports: nothing of ours.
"""

from __future__ import annotations

from typing import Final, Protocol

__all__ = ["FaultHooks", "NoFaults", "NO_FAULTS", "POINTS"]

SIGN_POINTS: Final = ("sign-before-mark", "sign-after-mark")
ROTATE_POINTS: Final = (
    "rotate:1",
    "rotate:2",
    "rotate:3a",
    "rotate:3",
    "rotate:4a",
    "rotate:4",
    "rotate:5",
)
CEREMONY_POINTS: Final = (
    "refresh:pending-stored",
    "refresh:commit",
    "refresh:committed",
    "reshare:pending-stored",
    "reshare:commit",
    "reshare:committed",
)
POINTS: Final = SIGN_POINTS + ROTATE_POINTS + CEREMONY_POINTS


class FaultHooks(Protocol):
    """Called at each named point (see the module docstring); may raise or never return."""

    def reached(self, point: str) -> None: ...


class NoFaults:
    """The production hooks: every point passes."""

    def reached(self, point: str) -> None:
        return None


NO_FAULTS: Final = NoFaults()
