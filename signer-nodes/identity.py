"""The node's identity keys and its enrolled peers; sealing and opening envelopes.

A node has two long-term keys: an Ed25519 signing key (it signs every envelope it sends)
and an X25519 box key (direct envelopes are encrypted to it). Both are sealed by the HSM
at rest (:mod:`signer_nodes.vault`, AAD purpose ``identity``) and unsealed once, when the
node opens; they stay inside this object and are never returned or logged. Peers (party id,
node id, public keys) come from the governance roster (:mod:`signer_nodes.anchor`), never
from the coordinator.

Imports: :mod:`signer_nodes.envelope`, ``.store``, ``.vault``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from mpc.wire import Message
from signer_nodes import vault
from signer_nodes.envelope import Peer, open_envelope, seal
from signer_nodes.store import NodeStore

__all__ = ["Identity"]

KINDS = ("sign", "box")


class Identity:
    """This node's keys (secret, in memory) and its view of the peers."""

    def __init__(self, v: vault.Vault, store: NodeStore, node_id: str, party_id: int) -> None:
        self.node_id = node_id
        self.party_id = party_id
        self._store = store
        #: Where the peers come from: the node wires the governance roster in here.
        self.roster: Callable[[], Sequence[Peer]] = list
        self._sign_key = SigningKey(self._unseal(v, store, "sign"))
        self._box_key = PrivateKey(self._unseal(v, store, "box"))

    @staticmethod
    def provision(v: vault.Vault, store: NodeStore, node_id: str) -> None:
        """Create both identity keys, seal them and store them (a new node only)."""
        sk = SigningKey.generate()
        bk = PrivateKey.generate()
        for kind, secret, public in (
            ("sign", bytes(sk), bytes(sk.verify_key)),
            ("box", bytes(bk), bytes(bk.public_key)),
        ):
            blob = v.seal(secret, vault.identity_aad(node_id, kind))
            store.put_identity(kind, public, blob, v.blob_version(blob))

    def _unseal(self, v: vault.Vault, store: NodeStore, kind: str) -> bytes:
        _, blob, _ = store.get_identity(kind)
        return v.unseal(blob, vault.identity_aad(self.node_id, kind))

    @property
    def sign_pk(self) -> bytes:
        return bytes(self._sign_key.verify_key)

    @property
    def box_pk(self) -> bytes:
        return bytes(self._box_key.public_key)

    def sign_statement(self, statement: bytes) -> bytes:
        """This node's Ed25519 signature over a statement (release head, checkpoint)."""
        return bytes(self._sign_key.sign(statement).signature)

    # -- peers ---------------------------------------------------------------------------
    def peers(self) -> dict[int, Peer]:
        """The peers: the current governance roster (``roster``), and this node itself."""
        out = {p.party_id: p for p in self.roster() if p.node_id != self.node_id}
        out[self.party_id] = Peer(self.party_id, self.node_id, self.sign_pk, self.box_pk)
        return out

    # -- envelopes -----------------------------------------------------------------------
    def seal(self, msg: Message, peers: Mapping[int, Peer]) -> bytes:
        """Sign ``msg`` (and box it to its recipient if it is direct)."""
        to_pk = None if msg.recipient is None else peers[msg.recipient].box_pk
        return seal(msg, sign_key=self._sign_key, box_key=self._box_key, recipient_box_pk=to_pk)

    def open(self, raw: bytes, peers: Mapping[int, Peer], accept: Mapping[str, bytes]) -> Message:
        """Verify and open an envelope addressed to this node (``envelope.EnvelopeError``)."""
        return open_envelope(
            raw, me=self.party_id, box_key=self._box_key, peers=peers, accept=accept
        )
