"""Values the coordinator's parts pass each other: failures with blame, keys, results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.problems import Problem
from custody.domain import Scheme


class SessionFailed(Exception):
    """A multi-party session or signing attempt failed; ``blame`` lists (party, reason).
    ``suspects``: when the failure cannot be attributed (a DKLs23 signature that does not
    verify), the signer set, of whom one or more is faulty; nobody is blamed for it."""

    def __init__(
        self, detail: str, blame: list[tuple[int, str]], suspects: tuple[int, ...] = ()
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.blame = blame
        self.suspects = suspects
        # the signer set of the attempt (set by the signer): its nodes may have released
        # shares, which the audit log must record for the nodes' checkpoints
        self.signers: tuple[int, ...] = ()


def problem_doc(
    slug: str, title: str, detail: str, status: int = 502, **extra: Any
) -> dict[str, Any]:
    """An RFC 9457 document stored on a key or sign request (not raised)."""
    return Problem(status, slug, title, detail, **extra).document()


@dataclass(frozen=True)
class KeyInfo:
    """An active key as signing needs it (public data only)."""

    id: str
    scheme: Scheme
    threshold: int
    nodes: list[str]
    public_key: str
    verifying_shares: dict[str, str]
    network: str | None = None  # bip340 keys: the Bitcoin network chosen at creation


@dataclass(frozen=True)
class SignResult:
    """An aggregated, verified signature and the parties whose shares made it."""

    signature: bytes
    recovery_id: int | None
    signers: list[int]


@dataclass
class Activity:
    """Signing activity, read by the presignature refill (it waits for quiet moments)."""

    signing: int = 0  # sign requests being signed right now
    last_sign: float = 0.0  # monotonic time the last one started
