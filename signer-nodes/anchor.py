"""The node's trust anchor: the governance documents it verified (issue 9).

A node trusts no single party for who its peers are. The officers' governance document
(:mod:`custody.governance`: officer keys, quorum, the roster with each node's pinned
identity keys, the keys with ``raw`` signing enabled) is installed once as a genesis
(``python -m signer_nodes trust``, refused unless the roster pins this node's own
identity), then advanced only by versions that chain and carry the quorums
(``PUT /v1/governance``, :meth:`Anchor.advance` = ``GovernanceState.advance``). Every
installed version is stored durably (the ``governance`` table) and re-verified from the
genesis when the node opens; the node keeps the highest and never goes back.

What the anchor answers for the rest of the node:

* :meth:`Anchor.require`: no governance, no session and no signing (fail closed);
* :meth:`Anchor.peers`: the peers ARE the current roster (``PUT /v1/peers`` only checks);
* :meth:`Anchor.check_parties`: every participant of a session is in the roster;
* :meth:`Anchor.record_committee` / :meth:`Anchor.check_committee`: the identities that
  made a key (at its DKG) must all still be in the roster, as pinned then, for the key to
  be used (a removed or re-keyed member retires the key's committee);
* :meth:`Anchor.raw_allowed`: ``kind: raw`` only for keys the officers listed;
* :meth:`Anchor.verify_ceremony`: a key ceremony's authorization, signed by the officer
  quorum of the installed version (:func:`custody.governance.verify_ceremony_authorization`),
  refused with a stable ``ceremony-*`` 403 code; :meth:`Anchor.parties_of` maps the
  authorized committee (node ids) to the roster's pinned parties, and
  :meth:`Anchor.committee_entry` / :meth:`Anchor.forget_committee` let a ceremony's commit
  write the new committee in its own transaction.

Imports: :mod:`signer_nodes.envelope`, ``.errors``, ``.logs``, ``.store``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence

from custody import governance as gov
from signer_nodes import logs
from signer_nodes.envelope import Peer
from signer_nodes.errors import Kind, NodeError
from signer_nodes.store import NodeStore

__all__ = ["Anchor"]


def _refused(exc: gov.GovernanceError) -> NodeError:
    return NodeError(Kind(exc.kind.value), exc.detail)


def _decode(data: bytes) -> gov.SignedGovernance:
    try:
        return gov.decode(data)
    except gov.GovernanceError as exc:
        raise _refused(exc) from None


class Anchor:
    """The governance this node verified (see the module docstring)."""

    def __init__(self, store: NodeStore, node_id: str, party_id: int, own: Peer) -> None:
        self.store = store
        self.node_id = node_id
        self.party_id = party_id
        self.own = own
        self._lock = threading.Lock()
        self._committees: dict[str, list[tuple[int, str, bytes]]] = {}
        self._state: gov.GovernanceState | None = None
        docs = store.governance_documents()
        if docs:
            # Re-verify the whole stored chain: a row edited in the database does not count.
            state = gov.GovernanceState.from_genesis(gov.decode(docs[0]))
            for d in docs[1:]:
                state.advance(gov.decode(d))
            self._state = state

    # -- the current version -------------------------------------------------------------
    @property
    def current(self) -> gov.Governance | None:
        return None if self._state is None else self._state.current

    def require(self) -> gov.Governance:
        cur = self.current
        if cur is None:
            raise NodeError(
                Kind.GOVERNANCE_MISSING,
                f"{self.node_id} has no governance installed (python -m signer_nodes trust"
                " --governance GENESIS): it takes part in nothing",
            )
        return cur

    def describe(self) -> dict[str, object]:
        cur = self.current
        if cur is None:
            return {"installed": False}
        return {
            "installed": True,
            "cluster_id": cur.cluster_id,
            "version": cur.version,
            "digest": cur.digest.hex(),
            "roster": [n.node_id for n in cur.roster],
            "raw_signing_keys": sorted(cur.raw_signing_keys),
        }

    def install_genesis(self, data: bytes, successors: Sequence[bytes] = ()) -> gov.Governance:
        """Install the trust anchor once; its roster must pin this node's own identity.

        A node that joins later (a restored node under a re-keyed roster entry) installs the
        genesis with its ``successors``, each verified in turn; then the LAST version's
        roster must pin this node's identity."""
        doc = _decode(data)
        if successors:
            return self._install_chain(doc, data, [(_decode(d), d) for d in successors])
        with self._lock:
            if self._state is not None:
                if (
                    self._state.current.version == 1
                    and doc.body.digest == self._state.current.digest
                ):
                    return self._state.current
                raise NodeError(
                    Kind.GOVERNANCE_ROLLBACK,
                    f"{self.node_id} already trusts governance version "
                    f"{self._state.current.version} of cluster {self._state.current.cluster_id};"
                    " a genesis is installed once",
                )
            try:
                state = gov.GovernanceState.from_genesis(doc)
            except gov.GovernanceError as exc:
                raise _refused(exc) from None
            mine = state.current.node(self.node_id)
            if mine is None or (mine.party_id, mine.sign_pk, mine.box_pk) != (
                self.party_id,
                self.own.sign_pk,
                self.own.box_pk,
            ):
                raise NodeError(
                    Kind.IDENTITY_MISMATCH,
                    f"the genesis roster does not pin {self.node_id} (party {self.party_id}) with"
                    " this node's identity keys"
                    + ("" if mine is None else f": it pins sign_pk {mine.sign_pk.hex()[:16]}..."),
                )
            self.store.add_governance(1, state.current.digest, data)
            self._state = state
        logs.event("governance.genesis", node_id=self.node_id, cluster=state.current.cluster_id)
        return state.current

    def _install_chain(
        self,
        doc: gov.SignedGovernance,
        data: bytes,
        rest: Sequence[tuple[gov.SignedGovernance, bytes]],
    ) -> gov.Governance:
        with self._lock:
            if self._state is not None:
                raise NodeError(
                    Kind.GOVERNANCE_ROLLBACK,
                    f"{self.node_id} already trusts governance version "
                    f"{self._state.current.version}; a genesis is installed once",
                )
            try:
                state = gov.GovernanceState.from_genesis(doc)
                for d, _ in rest:
                    state.advance(d)
            except gov.GovernanceError as exc:
                raise _refused(exc) from None
            mine = state.current.node(self.node_id)
            if mine is None or (mine.party_id, mine.sign_pk, mine.box_pk) != (
                self.party_id,
                self.own.sign_pk,
                self.own.box_pk,
            ):
                raise NodeError(
                    Kind.IDENTITY_MISMATCH,
                    f"governance version {state.current.version}'s roster does not pin "
                    f"{self.node_id} (party {self.party_id}) with this node's identity keys",
                )
            self.store.add_governance(1, doc.body.digest, data)
            for d, raw in rest:
                self.store.add_governance(d.body.version, d.body.digest, raw)
            self._state = state
        logs.event(
            "governance.chain",
            node_id=self.node_id,
            cluster=state.current.cluster_id,
            version=state.current.version,
        )
        return state.current

    def advance(self, data: bytes) -> tuple[gov.Governance, bool]:
        """Verify and install the next version; (current, whether it was new)."""
        doc = _decode(data)
        with self._lock:
            if self._state is None:
                raise NodeError(
                    Kind.GOVERNANCE_MISSING,
                    f"{self.node_id} has no genesis: it is installed with `trust`, never over HTTP",
                )
            cur = self._state.current
            if doc.body.digest == cur.digest:
                return cur, False
            trial = gov.GovernanceState(cur)
            try:
                new = trial.advance(doc)
            except gov.GovernanceError as exc:
                logs.warn(
                    "governance.refused",
                    node_id=self.node_id,
                    kind=exc.kind.value,
                    detail=exc.detail,
                )
                raise _refused(exc) from None
            self.store.add_governance(new.version, new.digest, data)
            self._state = trial
        logs.event("governance.installed", node_id=self.node_id, version=new.version)
        return new, True

    # -- what it decides -----------------------------------------------------------------
    def peers(self) -> list[Peer]:
        """The current roster as peers (empty without governance)."""
        cur = self.current
        if cur is None:
            return []
        return [Peer(n.party_id, n.node_id, n.sign_pk, n.box_pk) for n in cur.roster]

    def check_peers(self, peers: Sequence[Peer]) -> int:
        """Refuse any peer that does not match the roster's pinned identity; how many others."""
        cur = self.require()
        bad = []
        for p in peers:
            n = cur.node_by_party(p.party_id)
            if n is None or (n.node_id, n.sign_pk, n.box_pk) != (p.node_id, p.sign_pk, p.box_pk):
                bad.append(p)
        if bad:
            raise NodeError(
                Kind.NOT_IN_ROSTER,
                "peers not matching governance version "
                f"{cur.version}'s roster: "
                + ", ".join(f"{p.node_id} (party {p.party_id})" for p in bad),
                culprits=sorted({p.party_id for p in bad}),
            )
        return len([p for p in peers if p.party_id != self.party_id])

    def check_parties(self, parties: Iterable[int]) -> None:
        cur = self.require()
        me = cur.node(self.node_id)
        if me is None or (me.party_id, me.sign_pk, me.box_pk) != (
            self.party_id,
            self.own.sign_pk,
            self.own.box_pk,
        ):
            raise NodeError(
                Kind.NOT_IN_ROSTER,
                f"{self.node_id} itself is not in governance version {cur.version}'s roster",
            )
        outside = sorted(p for p in set(parties) if cur.node_by_party(p) is None)
        if outside:
            raise NodeError(
                Kind.NOT_IN_ROSTER,
                f"parties {outside} are not in governance version {cur.version}'s roster",
                culprits=outside,
            )

    @staticmethod
    def _committee_meta(key_id: str) -> str:
        return f"committee:{key_id}"

    def record_committee(self, key_id: str, parties: Iterable[int]) -> None:
        """Pin the identities that made ``key_id`` (at its DKG), durably."""
        k, v = self.committee_entry(key_id, parties)
        self.store.set_meta(k, v)
        self._committees.pop(key_id, None)

    def committee_entry(self, key_id: str, parties: Iterable[int]) -> tuple[str, str]:
        """The meta row (key, value) that pins ``parties`` as ``key_id``'s committee, as the
        current roster pins them (a ceremony's commit writes it in its own transaction and
        then calls :meth:`forget_committee`)."""
        by_party = {p.party_id: p for p in self.peers()}
        members = [[p, by_party[p].node_id, by_party[p].sign_pk.hex()] for p in sorted(parties)]
        return self._committee_meta(key_id), json.dumps(members)

    def forget_committee(self, key_id: str) -> None:
        """Drop the cached committee of ``key_id`` (its meta row changed or went away)."""
        self._committees.pop(key_id, None)

    # -- ceremony authorizations (custody.governance) ------------------------------------
    def verify_ceremony(self, authorization: str | None, now: int) -> gov.CeremonyAuthorization:
        """The officers' authorization of a key ceremony, verified under the installed
        governance (quorum, cluster, expiry); NodeError ``not-authorized`` with the stable
        code of :class:`custody.governance.CeremonyAuthErrorKind` otherwise."""
        cur = self.require()
        kinds = gov.CeremonyAuthErrorKind
        if authorization is None:
            raise NodeError(
                Kind.NOT_AUTHORIZED,
                "a key ceremony needs an authorization signed by the officer quorum "
                "(field 'authorization')",
                code=kinds.MISSING.value,
            )
        try:
            data = bytes.fromhex(authorization)
        except ValueError:
            raise NodeError(
                Kind.NOT_AUTHORIZED, "authorization: not hex", code=kinds.MALFORMED.value
            ) from None
        try:
            return gov.verify_ceremony_authorization(data, cur, now)
        except gov.CeremonyAuthError as exc:
            logs.warn(
                "ceremony.refused", node_id=self.node_id, code=exc.kind.value, detail=exc.detail
            )
            raise NodeError(Kind.NOT_AUTHORIZED, exc.detail, code=exc.kind.value) from None

    def parties_of(self, node_ids: Iterable[str]) -> dict[str, int]:
        """node id -> party id of each of ``node_ids`` in the installed roster (a node
        outside it is refused: a committee is made of enrolled nodes only)."""
        cur = self.require()
        out: dict[str, int] = {}
        outside = []
        for nid in node_ids:
            n = cur.node(nid)
            if n is None:
                outside.append(nid)
            else:
                out[nid] = n.party_id
        if outside:
            raise NodeError(
                Kind.NOT_IN_ROSTER,
                f"the authorized committee names nodes outside governance version "
                f"{cur.version}'s roster: {', '.join(sorted(outside))}",
            )
        return out

    def pins(self, parties: Iterable[int]) -> dict[int, bytes]:
        """party -> the Ed25519 identity key the installed roster pins for it."""
        cur = self.require()
        out = {}
        for p in parties:
            n = cur.node_by_party(p)
            if n is None:
                raise NodeError(
                    Kind.NOT_IN_ROSTER,
                    f"party {p} is not in governance version {cur.version}'s roster",
                    culprits=[p],
                )
            out[p] = n.sign_pk
        return out

    def committee(self, key_id: str) -> list[tuple[int, str, bytes]]:
        if key_id not in self._committees:
            raw = self.store.get_meta(self._committee_meta(key_id))
            if raw is None:
                raise NodeError(
                    Kind.NOT_IN_ROSTER, f"key {key_id!r} has no recorded committee on this node"
                )
            self._committees[key_id] = [
                (int(p), str(n), bytes.fromhex(s)) for p, n, s in json.loads(raw)
            ]
        return self._committees[key_id]

    def check_committee(self, key_id: str) -> None:
        """Refuse a key whose committee has a member no longer in the roster as pinned."""
        cur = self.require()
        gone = []
        for party, node_id, sign_pk in self.committee(key_id):
            n = cur.node(node_id)
            if n is None or n.party_id != party or n.sign_pk != sign_pk:
                gone.append((party, node_id))
        if gone:
            raise NodeError(
                Kind.NOT_IN_ROSTER,
                f"key {key_id!r}'s committee has members no longer in governance version "
                f"{cur.version}'s roster: " + ", ".join(f"{n} (party {p})" for p, n in gone),
                culprits=sorted(p for p, _ in gone),
            )

    def raw_allowed(self, key_id: str) -> bool:
        cur = self.current
        return cur is not None and cur.raw_enabled(key_id)
