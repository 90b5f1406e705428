"""The node's velocity window (signer_nodes.velocity) over a real SQLCipher node store:
rebuilt from the release log at open within the policy's longest window, each request
counted once, reservations confirmed or cancelled, old-format entries not counted."""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

from custody import auditchain as audit
from custody import policy as pol
from signer_nodes.store import NodeStore
from signer_nodes.velocity import Counted, ReleaseWindow, horizon

DEST = "0x" + "a1" * 20
HOUR = 3600
POLICY = pol.Policy(
    rules=(
        pol.Rule(
            "r", "allow", kinds=frozenset({"evm-tx"}), velocity=(pol.Velocity("key", HOUR, 10),)
        ),
        pol.Rule(
            "s", "allow", kinds=frozenset({"message"}), velocity=(pol.Velocity("key", 60, 10),)
        ),
    )
)


def _digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def _append(store: NodeStore, at: int, rid: str, amount: int, **extra: Any) -> None:
    fields = {
        "time": at,
        "request_id": rid,
        "request_digest": _digest(rid),
        "kind": "evm-tx",
        "key_id": "k",
        "scheme": "ecdsa-secp256k1",
        "signers": [1, 2],
        "item_id": secrets.token_hex(32),
        "intent_digest": _digest("intent-" + rid),
        "asset": "ETH",
        "transfers": [[DEST, amount]],
        **extra,
    }
    fields = {k: v for k, v in fields.items() if v is not None}

    def build(seq: int, prev: bytes) -> tuple[bytes, bytes]:
        enc = audit.encode_release({**fields, "seq": seq, "prev": prev})
        return enc, audit.release_hash(enc)

    assert store.release_many([(str(fields["item_id"]), "presig", build)])[0] is not None


def _amounts(
    window: ReleaseWindow, now: int, exclude: tuple[str, str, bytes] = ("", "", b"")
) -> list[int]:
    return sorted(r.amount for r in window.history(POLICY, now)("ETH", exclude))


def test_the_window_is_rebuilt_from_the_log_and_counts_each_request_once(tmp_path: Path) -> None:
    assert horizon(POLICY) == HOUR and horizon(pol.EMPTY_POLICY) == 0
    store = NodeStore(tmp_path / "node.db", secrets.token_bytes(32))
    assert store.schema_version() >= 3  # the release log's velocity index (migration 3)
    now = int(time.time())
    _append(store, now - 2 * HOUR, "old", 100)  # committed now, but dated before the window
    _append(store, now - 10, "a", 1)
    _append(store, now - 5, "a", 1)  # a retry of the same request: counted once
    _append(store, now - 5, "b", 2)
    _append(store, now - 4, "legacy", 50, asset=None, transfers=None, intent_digest=None)
    window = ReleaseWindow(store)
    assert _amounts(window, now) == [1, 2]
    # the request being decided is left out of its own history
    assert _amounts(window, now, ("a", "k", _digest("intent-a"))) == [2]
    # the same id with another intent is another request
    token = window.reserve(("a", "k", _digest("other")), Counted(now, "k", "ETH", ((DEST, 4),)))
    assert _amounts(window, now) == [1, 2, 4]
    window.cancel(token)
    assert _amounts(window, now) == [1, 2]
    # two items of one request reserve it twice; one cancelled, one released: it counts
    key = ("c", "k", _digest("intent-c"))
    t1 = window.reserve(key, Counted(now, "k", "ETH", ((DEST, 3),)))
    t2 = window.reserve(key, Counted(now, "k", "ETH", ((DEST, 3),)))
    assert _amounts(window, now) == [1, 2, 3]
    window.cancel(t1)
    window.confirm(t2)
    assert _amounts(window, now) == [1, 2, 3]
    window.cancel(t2)  # a late cancel of a committed request changes nothing
    assert _amounts(window, now) == [1, 2, 3]
    # nothing that moves nothing is reserved
    assert window.reserve(("m", "k", _digest("m")), None) is None
    store.close()


def test_without_velocity_nothing_is_loaded(tmp_path: Path) -> None:
    store = NodeStore(tmp_path / "node.db", secrets.token_bytes(32))
    now = int(time.time())
    _append(store, now - 1, "a", 1)
    window = ReleaseWindow(store)
    assert window.history(pol.EMPTY_POLICY, now)("ETH", ("", "", b"")) == []
    assert window.size() == 0
    assert _amounts(window, now) == [1]  # a policy with velocity widens the window
    store.close()
