"""Values the coordinator's parts pass each other: failures with blame, keys, results."""

from __future__ import annotations

from dataclasses import dataclass, field
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


class NodesRefused(SessionFailed):
    """A signer node refused to release its share (HTTP 403: the node's own authorization,
    ``signer_nodes.policy``): the request is not authorized in the node's view. Not a node
    fault: nobody is blamed or marked down, and no other signer set is tried (each node
    decides by the same governance, so another set would refuse too, and retrying could
    only probe for a node that disagrees). ``signers`` is still set: another node of the
    set may have released (a velocity window each node counts on its own)."""

    def __init__(self, party: int, node_id: str, code: str, detail: str) -> None:
        super().__init__(f"{node_id}: {code or 'not-authorized'}: {detail}", [])
        self.party = party
        self.node_id = node_id
        self.code = code or "not-authorized"


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
    # set on the child key a derived sign request signs with (api.coordinator.hd.signing_key):
    # public_key and verifying_shares are then the child's at this BIP-32 path
    derivation_path: str | None = None


@dataclass(frozen=True)
class SignResult:
    """An aggregated, verified signature and the parties whose shares made it."""

    signature: bytes
    recovery_id: int | None
    signers: list[int]
    # each releasing node's receipt part, by party: {"body": hex, "node": attestation}
    # (custody.receipts; nodes answer it beside their share)
    receipts: dict[int, Any] = field(default_factory=dict)


@dataclass
class Activity:
    """Signing activity, read by the presignature refill (it waits for quiet moments)."""

    signing: int = 0  # sign requests being signed right now
    last_sign: float = 0.0  # monotonic time the last one started
