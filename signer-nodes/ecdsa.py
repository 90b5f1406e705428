"""DKLs23 threshold ECDSA on the node: keygen (DKG + pairwise OT setup), presign, sign.

Keygen is two protocols back to back in one node session: the FROST KeyGen DKG over
secp256k1 (``frost-dkg``), then :class:`mpc.dkls23.OtSetupSession` (``dkls23-setup``)
under a session id derived from the first. :class:`KeygenChain` runs them as one
round-session-like object and buffers second-stage messages that arrive while this node
is still finishing the DKG. The result, an :class:`~mpc.dkls23.EcdsaKeyShare` (share plus
OT seeds), is sealed as the key's share.

Presignatures are sealed into the ledger (kind ``presig``) with the same write-ahead rule
as FROST nonces: :func:`sign` marks the presignature used and commits before the partial
signature is computed (``sign_with_presignature`` calls our ledger callback first).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from signer_nodes import logs, vault

from custody.signing import SignRequestError, message_to_sign
from mpc import dkls23, keyio
from mpc.dkg import DkgSession
from mpc.errors import MpcError
from mpc.groups import SECP256K1
from mpc.session import RoundSession
from mpc.wire import Message

if TYPE_CHECKING:
    from signer_nodes.node import Node

__all__ = ["KeygenChain", "keygen_session", "presign_session", "finish", "sign", "sign_batch"]

SCHEME = "ecdsa-secp256k1"


class KeygenChain:
    """DKG then OT setup, presented to the node like one RoundSession."""

    def __init__(
        self, sid: bytes, me: int, participants: list[int], t: int, context: bytes
    ) -> None:
        self.sid = sid
        self.sid2 = hashlib.sha256(b"tpwc-dkls23-setup\x00" + sid).digest()
        self.stage1 = DkgSession(SECP256K1, sid, me, participants, t, context)
        self.stage2: dkls23.OtSetupSession | None = None
        self._early: list[Message] = []

    @property
    def accepts(self) -> dict[str, bytes]:
        return {self.stage1.protocol: self.sid, dkls23.keygen.PROTOCOL_SETUP: self.sid2}

    @property
    def protocol(self) -> str:
        return self.stage1.protocol if self.stage2 is None else self.stage2.protocol

    @property
    def done(self) -> bool:
        return self.stage2 is not None and self.stage2.done

    @property
    def result(self) -> dkls23.EcdsaKeyShare:
        assert self.stage2 is not None
        return self.stage2.result

    def waiting_for(self) -> tuple[int, ...]:
        return (self.stage2 or self.stage1).waiting_for()

    def start(self) -> list[Message]:
        return self.stage1.start()

    def receive(self, msg: Message) -> list[Message]:
        if msg.protocol == dkls23.keygen.PROTOCOL_SETUP and self.stage2 is None:
            self._early.append(msg)
            return []
        if self.stage2 is not None:
            return self.stage2.receive(msg)
        out = self.stage1.receive(msg)
        if self.stage1.done:
            self.stage2 = dkls23.OtSetupSession(self.stage1.result, self.sid2)
            out = out + self.stage2.start()
            early, self._early = self._early, []
            for m in early:
                out += self.stage2.receive(m)
        return out


def keygen_session(node: Node, info: dict[str, Any]) -> Any:
    from signer_nodes.protocols import dkg_context

    return KeygenChain(
        bytes.fromhex(info["session_id"]),
        node.party_id,
        info["participants"],
        info["threshold"],
        dkg_context(SCHEME, info["key_id"]),
    )


def _load_share(node: Node, key_id: str) -> dkls23.EcdsaKeyShare:
    from signer_nodes.node import NodeError

    row = node._key_row(key_id)
    if row.scheme != SCHEME:
        raise NodeError(422, "wrong-scheme", f"key {key_id!r} is {row.scheme}, not {SCHEME}")
    return dkls23.EcdsaKeyShare.from_bytes(node._unseal_share(row))


def _retired_key(key_id: str) -> str:
    return f"ot-retired:{key_id}"


def retired_ot_peers(node: Node, key_id: str) -> set[int]:
    """Peers whose OT setup with this node, for this key, failed a check and is retired."""
    raw = node.store.get_meta(_retired_key(key_id))
    return set(json.loads(raw)) if raw else set()


def retire_ot_pair(node: Node, key_id: str, peer: int) -> None:
    """Retire this node's base-OT setup with ``peer`` for ``key_id``, durably.

    A failed OT-extension or multiplication check may be a selective-failure probe: each
    abort can leak a bit of the OT-extension correlation to the peer that caused it. The
    DKLs18 errata (ePrint 2018/499, 2023 revision) therefore require that a pair whose check
    failed never run the extension on the same base OTs again. Until a fresh OT setup for
    the pair exists (a later key-lifecycle ceremony), this node refuses every presign
    session that includes ``peer`` for this key; other signer sets keep working.
    """
    peers = retired_ot_peers(node, key_id) | {peer}
    node.store.set_meta(_retired_key(key_id), json.dumps(sorted(peers)))
    logs.warn("ot_pair.retired", node_id=node.node_id, key_id=key_id, peer=peer)


def presign_session(node: Node, info: dict[str, Any]) -> RoundSession[Any]:
    from signer_nodes.node import NodeError

    retired = retired_ot_peers(node, info["key_id"]) & set(info["participants"])
    if retired:
        raise NodeError(
            409,
            "ot-pair-retired",
            f"this node's OT setup with parties {sorted(retired)} failed a check and is retired",
            culprits=sorted(retired),
        )
    share = _load_share(node, info["key_id"])
    return dkls23.PresignSession(share, bytes.fromhex(info["session_id"]), info["participants"])


def finish(node: Node, info: dict[str, Any], rs: Any) -> dict[str, Any]:
    """Seal the result of an ECDSA keygen or presign session; return its public part."""
    if info["kind"] == "dkg":
        share: dkls23.EcdsaKeyShare = rs.result
        pub = share.public
        node.store_share(
            info["key_id"],
            SCHEME,
            share.to_bytes(),
            pub.group_public_key.encode(),
            keyio.encode_public_key_package(pub),
        )
        return {
            "key_id": info["key_id"],
            "scheme": SCHEME,
            "public_key": pub.group_public_key.encode().hex(),
            "group_public_key": pub.group_public_key.encode().hex(),
            "min_signers": pub.min_signers,
            "verifying_shares": {
                str(i): p.encode().hex() for i, p in sorted(pub.verifying_shares.items())
            },
        }
    presig: dkls23.Presignature = rs.result
    pid = presig.presignature_id.hex()
    p = presig.public
    with node.store.sealing.read():  # seal and insert atomically w.r.t. rotation
        blob = node.vault.seal(
            presig.to_bytes(), vault.ledger_aad(info["key_id"], node.node_id, "presig", pid)
        )
        node.store.add_ledger(
            [(pid, "presig", info["key_id"], p.R.encode(), blob, node.vault.blob_version(blob))]
        )
    return {
        "presignature_id": pid,
        "key_id": info["key_id"],
        "participants": list(p.signers),
        "R": p.R.encode().hex(),
        "dkls23_key_id": p.key_id.hex(),
        "session_id": p.session_id.hex(),
    }


def sign(
    node: Node,
    key_id: str,
    presignature_id: str,
    request: Mapping[str, Any],
    *,
    coordinator_verified: bool,
    requested: bytes | None = None,
) -> bytes:
    """DKLs23 online round with the write-ahead ledger; returns CBOR PartialSignature."""
    from signer_nodes.node import crash_point

    shares: dict[str, dkls23.EcdsaKeyShare] = {}
    with node.store.sealing.read():  # no rotation between load, unseal and mark
        item = _prepare(
            node, key_id, presignature_id, request, coordinator_verified, requested, shares, set()
        )

        def ledger(pid: bytes) -> bool:
            """Write-ahead: durable mark (group commit) before the partial is computed."""
            if pid.hex() != presignature_id:
                return False
            return node.store.mark_used(presignature_id, str(request.get("id")))

        partial = _partial(node, item, shares, ledger)
    crash_point("sign-after-mark")
    return partial


def sign_batch(
    node: Node, items: Sequence[Any], *, coordinator_verified: bool
) -> list[dict[str, Any]]:
    """:func:`sign` for many requests in one call; one result per item, in order:
    ``{"partial": hex}`` or ``{"problem": problem document}``.

    Each item is checked alone (its own recomputed digest and authorization, its own
    presignature; one named twice is refused the second time), so a bad item fails alone.
    The presignatures of the items that passed are marked used in ONE durable commit
    (:meth:`NodeStore.mark_used_many`) before any partial is computed: the ledger callback
    of :func:`mpc.dkls23.sign_with_presignature` then answers from that commit's result."""
    from signer_nodes.node import NodeError, batch_item_request, crash_point

    results: list[dict[str, Any] | None] = [None] * len(items)
    ready: list[tuple[int, _Item]] = []
    shares: dict[str, dkls23.EcdsaKeyShare] = {}
    seen: set[str] = set()
    with node.store.sealing.read():
        for i, raw in enumerate(items):
            try:
                req = batch_item_request(raw)
                ready.append(
                    (
                        i,
                        _prepare(
                            node,
                            raw.get("key_id"),
                            raw.get("presignature_id"),
                            req,
                            coordinator_verified,
                            None,
                            shares,
                            seen,
                        ),
                    )
                )
            except Exception as exc:  # noqa: BLE001 - becomes this item's problem
                results[i] = {"problem": node._item_problem(exc)}
        crash_point("sign-before-mark")
        marked = node.store.mark_used_many(
            [(it.presignature_id, str(it.request.get("id"))) for _, it in ready]
        )
        # Durable now: none of these presignatures can ever be used again.
        for (i, it), ok in zip(ready, marked, strict=True):
            try:
                results[i] = {"partial": _partial(node, it, shares, _marked(it, ok)).hex()}
            except Exception as exc:  # noqa: BLE001
                results[i] = {"problem": node._item_problem(exc)}
    crash_point("sign-after-mark")
    shares.clear()
    return [
        r
        if r is not None
        else {"problem": NodeError(500, "internal", "item not processed").problem()}
        for r in results
    ]


def _marked(item: _Item, ok: bool) -> Callable[[bytes], bool]:
    """The ledger callback of a batch item: the batch's durable commit already decided."""

    def ledger(pid: bytes) -> bool:
        return ok and pid.hex() == item.presignature_id

    return ledger


@dataclass
class _Item:
    """One ECDSA sign item that passed every check; its presignature is unsealed (secret)."""

    key_id: str
    presignature_id: str
    request: Mapping[str, Any]
    digest: bytes
    presig: dkls23.Presignature = field(repr=False)


def _prepare(
    node: Node,
    key_id: Any,
    presignature_id: Any,
    request: Mapping[str, Any],
    coordinator_verified: bool,
    requested: bytes | None,
    shares: dict[str, dkls23.EcdsaKeyShare],
    seen: set[str],
) -> _Item:
    """Every check before the mark: key and scheme, the digest recomputed from the request,
    authorization, the presignature (known, for this key, unused, not named earlier in
    this batch); then unseal it and (once per ``shares`` cache) the key share."""
    from signer_nodes.node import NodeError

    row = node._key_row(key_id)
    if row.scheme != SCHEME:
        raise NodeError(422, "wrong-scheme", f"key {key_id!r} is {row.scheme}, not {SCHEME}")
    try:
        digest = message_to_sign(SCHEME, request)
    except SignRequestError as exc:
        raise NodeError(422, "bad-request", f"request {exc}") from None
    node._authorize(
        row, request, digest, digest if requested is None else requested, coordinator_verified
    )
    if not isinstance(presignature_id, str) or len(presignature_id) != 64:
        raise NodeError(422, "bad-request", "presignature_id must be 64 hex digits")
    item = node.store.get_ledger(presignature_id)
    if item is None or item.kind != "presig" or item.key_id != key_id:
        raise NodeError(
            404, "unknown-presignature", f"no presignature {presignature_id} for key {key_id!r}"
        )
    if item.used or presignature_id in seen:
        logs.warn(
            "presig.reuse_refused",
            node_id=node.node_id,
            key_id=key_id,
            presignature_id=presignature_id,
        )
        by = item.used_by if item.used else "an earlier item of this batch"
        raise NodeError(
            409,
            "presignature-used",
            f"presignature {presignature_id} was already used (by {by})",
        )
    presig = dkls23.Presignature.from_bytes(
        node.vault.unseal(
            item.sealed, vault.ledger_aad(key_id, node.node_id, "presig", presignature_id)
        )
    )
    if key_id not in shares:
        shares[key_id] = dkls23.EcdsaKeyShare.from_bytes(node._unseal_share(row))
    seen.add(presignature_id)
    return _Item(key_id, presignature_id, request, digest, presig)


def _partial(
    node: Node,
    item: _Item,
    shares: dict[str, dkls23.EcdsaKeyShare],
    ledger: Callable[[bytes], bool],
) -> bytes:
    """DKLs23 online round for a checked item; ``ledger`` makes (or reports) the durable
    mark, which :func:`mpc.dkls23.sign_with_presignature` requires before computing."""
    from signer_nodes.node import NodeError

    try:
        partial = dkls23.sign_with_presignature(
            item.presig, shares[item.key_id], item.digest, ledger=ledger
        )
    except MpcError as exc:
        raise NodeError(
            409, "presignature-used" if "used" in str(exc) else "bad-request", str(exc)
        ) from None
    logs.event(
        "ecdsa.signed",
        node_id=node.node_id,
        key_id=item.key_id,
        presignature_id=item.presignature_id,
        request_id=item.request.get("id"),
    )
    return partial.to_bytes()
