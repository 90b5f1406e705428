"""The share store: key shares, sealed by the HSM, and the single-use items in memory.

Every share (FROST key package or DKLs23 key share) is sealed by the HSM with an AAD
naming what it is (:mod:`signer_nodes.vault`) before it is written to the database
(:mod:`.store`), and is unsealed only for the one operation that needs it. Sealing and
inserting run under ``store.sealing`` as reader, so a seal-key rotation never interleaves
with them. Single-use items (FROST nonce pairs, DKLs23 presignatures) are NOT sealed or
stored: they live in the process's :class:`~signer_nodes.pool.Pool` only, so no restore of
the disk can bring one back (issue 9).

Also kept here, because it is a property of a key's stored OT seeds: the peers whose
pairwise OT setup for a key is retired after a failed check (:meth:`ShareStore.retire_ot_pair`).

Imports: :mod:`signer_nodes.errors`, ``.logs``, ``.pool``, ``.store``, ``.vault``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from custody.domain import ID_ALPHABET, MAX_ID_LEN, is_valid_id
from signer_nodes import logs, vault
from signer_nodes.errors import Kind, NodeError
from signer_nodes.pool import Pool, PoolItem
from signer_nodes.store import KeyRow, NodeStore

__all__ = ["ShareStore", "check_key_id"]


def check_key_id(key_id: object) -> str:
    """``key_id`` if it is a valid key id by the domain's one rule (NodeError otherwise)."""
    if not is_valid_id(key_id):
        raise NodeError(
            Kind.BAD_REQUEST, f"key_id must be 1-{MAX_ID_LEN} characters of {ID_ALPHABET}"
        )
    assert isinstance(key_id, str)  # is_valid_id checked it
    return key_id


class ShareStore:
    """Sealed shares and ledger items of one node (see the module docstring)."""

    def __init__(self, v: vault.Vault, store: NodeStore, node_id: str) -> None:
        self.vault = v
        self.store = store
        self.node_id = node_id
        self.pool = Pool()

    # -- shares --------------------------------------------------------------------------
    def exists(self, key_id: str) -> bool:
        return self.store.get_key(key_id) is not None

    def row(self, key_id: object) -> KeyRow:
        """The stored row of ``key_id`` (bad-request, unknown-key)."""
        kid = check_key_id(key_id)
        row = self.store.get_key(kid)
        if row is None:
            raise NodeError(Kind.UNKNOWN_KEY, f"no share of key {kid!r} on {self.node_id}")
        return row

    def set_network(self, key_id: str, network: str) -> None:
        """Record a BIP-340 key's Bitcoin network (from its DKG spec), before its share."""
        self.store.set_meta("network:" + key_id, network)

    def network(self, key_id: str) -> str:
        """The Bitcoin network recorded at ``key_id``'s DKG (``mainnet`` for a key made
        before networks were recorded, as the coordinator's default)."""
        return self.store.get_meta("network:" + key_id) or "mainnet"

    def unseal_share(self, row: KeyRow) -> bytes:
        """The plaintext share of ``row`` (secret: the caller drops it after one use)."""
        return self.vault.unseal(
            row.sealed_share, vault.share_aad(row.key_id, self.node_id, row.share_version)
        )

    def store_share(
        self,
        key_id: str,
        scheme: str,
        share_cbor: bytes,
        public_key: bytes,
        public_info: bytes,
        share_version: int = 1,
    ) -> None:
        """Seal and insert a new share, atomically with respect to rotation."""
        with self.store.sealing.read():
            blob = self.vault.seal(share_cbor, vault.share_aad(key_id, self.node_id, share_version))
            self.store.put_key(
                KeyRow(
                    key_id,
                    scheme,
                    share_version,
                    public_key,
                    public_info,
                    blob,
                    self.vault.blob_version(blob),
                )
            )
        logs.event(
            "key.stored",
            node_id=self.node_id,
            key_id=key_id,
            scheme=scheme,
            share_version=share_version,
        )

    def replace_share_with_fresh_ots(
        self, row: KeyRow, share_cbor: bytes, public_info: bytes, *, peers: Sequence[int]
    ) -> int:
        """Replace ``row``'s share after an OT re-setup and re-enable ``peers``, atomically.

        Compare-and-swap on ``row.share_version`` (a concurrent replacement loses with a
        bad-request naming the version); the new share is sealed under ``share_version + 1``
        (the version is in the AAD, so the old sealed blob can never be put back in its
        place) and, in the same transaction, ``peers`` leave the key's retired set. Returns
        the new share version.
        """
        new_version = row.share_version + 1
        meta = self._retired_meta(row.key_id)
        with self.store.sealing.read():
            blob = self.vault.seal(
                share_cbor, vault.share_aad(row.key_id, self.node_id, new_version)
            )
            with self.store.tx() as c:
                cur = c.execute(
                    "UPDATE keys SET sealed_share = ?, seal_version = ?, share_version = ?,"
                    " public_info = ? WHERE key_id = ? AND share_version = ?",
                    (
                        blob,
                        self.vault.blob_version(blob),
                        new_version,
                        public_info,
                        row.key_id,
                        row.share_version,
                    ),
                )
                if cur.rowcount != 1:
                    raise NodeError(
                        Kind.BAD_REQUEST,
                        f"share of key {row.key_id!r} is no longer at version "
                        f"{row.share_version} (replaced concurrently)",
                    )
                r = c.execute("SELECT v FROM meta WHERE k = ?", (meta,)).fetchone()
                left = sorted(set(json.loads(r[0]) if r else []) - set(peers))
                c.execute(
                    "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET"
                    " v = excluded.v",
                    (meta, json.dumps(left)),
                )
        logs.event(
            "ot_pair.resetup",
            node_id=self.node_id,
            key_id=row.key_id,
            share_version=new_version,
            peers=sorted(peers),
        )
        return new_version

    # -- single-use items (memory only) ------------------------------------------------
    def add_ledger_items(
        self, kind: str, key_id: str, items: Sequence[tuple[Any, bytes]]
    ) -> list[str]:
        """Keep each ``(secret, public)`` as an outstanding item of ``kind`` in memory (a
        fresh random id each; ids are returned in order). Never sealed, never on disk."""
        made = [
            PoolItem(secrets.token_hex(16), kind, key_id, public, secret)
            for secret, public in items
        ]
        self.pool.add(made)
        return [it.item_id for it in made]

    def add_ledger_item(
        self, kind: str, key_id: str, item_id: str, secret: Any, public: bytes, path: str = ""
    ) -> None:
        """Keep one item under a given id (a presignature's id is its hash), in memory;
        ``path``: the derivation path it was made for ("" for the root key)."""
        self.pool.add([PoolItem(item_id, kind, key_id, public, secret, path)])

    def add_ledger_items_at(
        self, kind: str, key_id: str, items: Sequence[tuple[str, Any, bytes]], path: str = ""
    ) -> None:
        """Keep several ``(item id, secret, public)`` under their given ids, all or none
        (a DKLs23 presign batch, issue 13: :meth:`Pool.add` refuses the lot when full)."""
        self.pool.add(
            [PoolItem(i, kind, key_id, public, secret, path) for i, secret, public in items]
        )

    def ledger_item(self, item_id: str) -> PoolItem | None:
        return self.pool.get(item_id)

    def take_ledger_item(self, item_id: str) -> PoolItem | None:
        """Remove the item for its one use (None if a concurrent request took it)."""
        return self.pool.take(item_id)

    # -- retired OT pairs ------------------------------------------------------------------
    @staticmethod
    def _retired_meta(key_id: str) -> str:
        return f"ot-retired:{key_id}"

    def retired_ot_peers(self, key_id: str) -> set[int]:
        """Peers whose OT setup with this node, for this key, failed a check and is retired."""
        raw = self.store.get_meta(self._retired_meta(key_id))
        return set(json.loads(raw)) if raw else set()

    def retire_ot_pair(self, key_id: str, peer: int) -> None:
        """Retire this node's base-OT setup with ``peer`` for ``key_id``, durably.

        A failed OT-extension or multiplication check may be a selective-failure probe:
        each abort can leak a bit of the OT-extension correlation to the peer that caused
        it. The DKLs18 errata (ePrint 2018/499, 2023 revision) therefore require that a
        pair whose check failed never run the extension on the same base OTs again. Until a
        fresh OT setup for the pair exists (a later key-lifecycle ceremony), this node
        refuses every presign session that includes ``peer`` for this key; other signer
        sets keep working.
        """
        peers = self.retired_ot_peers(key_id) | {peer}
        self.store.set_meta(self._retired_meta(key_id), json.dumps(sorted(peers)))
        logs.warn("ot_pair.retired", node_id=self.node_id, key_id=key_id, peer=peer)
