"""The one write-ahead signing pipeline (DESIGN.md invariant 3: one nonce, one use).

Every signing request, FROST or ECDSA, single or batch, goes through
:meth:`SigningPipeline.sign_one` / :meth:`SigningPipeline.sign_batch`, in this order:

1. **parse**: the body (or batch item) becomes a typed :class:`SignItem`;
2. **check and authorize**: the key and its scheme, the message *recomputed* from the
   request (``custody.signing.message_to_sign``), the scheme's own input (the FROST
   signing package), then :func:`signer_nodes.policy.authorize` (the one authorization
   seam: the active governance's policy, the approvals, ``raw_signing_keys``, velocity
   from this node's own release log, :mod:`signer_nodes.velocity`, the request reserved
   in its window while decided), the key's committee still in the governance roster
   (:mod:`signer_nodes.anchor`), then the single-use item (in the in-memory pool, for this
   key, not released before, not named earlier in the same call, matching the package),
   the unsealing (once per call and key) of the share, and last the item is TAKEN out of
   the pool (:mod:`signer_nodes.pool`: it exists nowhere else, so it is burned from here on);
3. **release-log entry, durably**: the items that passed get their hash-chained
   release-log entries (request digest, kind, key, signer set, item id, time, and the
   authorization: intent digest, initiator, policy version, rule, counted approvals,
   asset and transfers) in ONE
   commit (:meth:`NodeStore.release_many`, joining the store's group commit with any
   concurrent request); it returns only after that COMMIT has returned. The entry is the
   durable "used" record: nothing leaves before its entry is durable;
4. **compute**: only then is any partial signature computed, for the items whose mark
   this call made;
5. **release**: the caller gets the bytes (a batch: one outcome per item, in order), a
   :class:`Released` carrying this node's receipt attestation (:mod:`custody.receipts`,
   signed with its identity key over the committed entry's seq and hash).

Steps 2-3 run under ``store.sealing`` as reader, so a seal-key rotation never interleaves
with load, unseal and mark. A bad item of a batch fails alone (its outcome is its error);
a failing commit fails the whole call closed (nothing computed, nothing released; the
taken items are burned).

What differs between schemes is a small :class:`Strategy`: :class:`FrostStrategy` (RFC
9591 s5.2) and :class:`EcdsaStrategy` (DKLs23 Protocol 3.6, round 3). The fault hooks
(:mod:`signer_nodes.faults`) are called at ``sign-before-mark`` and ``sign-after-mark``.

A ``btc-psbt`` request is one FROST item per input (:mod:`signer_nodes.taproot`): step 2
recomputes every input's sighash, takes the one of the item's ``input_index`` as the message
the package must carry, and signs with the share tweaked to the BIP-86 output key (once per
call and key, in the call's memory only), after checking the item's ``output_key`` is it.

A request with a ``derivation_path`` (issue 13) signs under the key's BIP-32 non-hardened
child there, and this node derives everything for it itself, from the path and the key
it stored at DKG: the child's public package (:func:`custody.signing.derive_public` of the
stored public package, under the key's root chain code), for which the request is decoded
and authorized (the policy and the approvals' intent see the CHILD's key and address: an
evm-tx's sender, a btc-psbt's inputs and change under the child's BIP-86 output key), and
the child's share (share + the same public tweak; FROST RFC 9591 s5.2 then signs with it,
the tweak being fixed before the signing package exists; for btc-psbt the BIP-86 tweak
comes on top of the child, as BIP-86 wallets derive the child first and then
taproot-tweak it). The coordinator sends only the path, never a tweak, so a coordinator
that sends different paths to different nodes gets shares for different keys, which do
not aggregate (FROST binds the group key in every binding factor and the challenge,
s4.4-4.6) or a refusal (a DKLs23 presignature is made for one path, kept with it, and
refused for any other before it is taken). The derived share lives in the call's memory
only, like the unsealed share. The path is in the release-log entry, and in the
receipt and approvals through the intent digest.

Imports: :mod:`signer_nodes.anchor`, ``.audit``, ``.ecdsa``, ``.errors``, ``.faults``,
``.logs``, ``.policy``, ``.pool``, ``.protocols``, ``.shares``, ``.specs``, ``.taproot``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from custody import auditchain as audit
from custody import receipts
from custody.signing import (
    PATH_MEMBER,
    SignRequestError,
    derive_public,
    encode_public_key,
    messages_to_sign,
    request_path,
    root_chain_code,
)
from mpc import dkls23, frost, hd, keyio
from mpc.errors import MpcError, NonceReuseError
from signer_nodes import ecdsa, logs, taproot
from signer_nodes.anchor import Anchor
from signer_nodes.errors import Kind, NodeError
from signer_nodes.faults import NO_FAULTS, FaultHooks
from signer_nodes.policy import (
    Authorization,
    AuthorizationContext,
    NotAuthorized,
    authorize,
    request_key,
)
from signer_nodes.pool import PoolItem
from signer_nodes.protocols import frost_suite, load_key_package
from signer_nodes.shares import ShareStore
from signer_nodes.specs import hex_field, sign_request
from signer_nodes.store import KeyRow
from signer_nodes.velocity import Counted, ReleaseWindow, RequestKey

__all__ = [
    "MAX_BATCH",
    "MAX_COMMITMENTS",
    "SignItem",
    "Prepared",
    "Outcome",
    "Strategy",
    "FrostStrategy",
    "EcdsaStrategy",
    "SigningPipeline",
]

MAX_BATCH = 256  # sign items per batch call
MAX_COMMITMENTS = 1000  # FROST nonce pairs per commitments call

Outcome = bytes | Exception


class Released(bytes):
    """A released partial signature (the bytes, as before) and this node's receipt
    attestation for it (:mod:`custody.receipts`): ``{"body": hex, "node": {...}}``."""

    receipt: dict[str, Any] | None

    def __new__(cls, data: bytes, receipt: dict[str, Any] | None = None) -> Released:
        obj = super().__new__(cls, data)
        obj.receipt = receipt
        return obj


@dataclass(frozen=True)
class SignItem:
    """One parsed sign request: which key, which ledger item, the request to recompute the
    message from, and the scheme's own input (FROST: the signing package; ECDSA: the
    message the caller asks for, ``None`` meaning the recomputed one)."""

    key_id: object
    item_id: object
    request: Mapping[str, Any]
    package: bytes | None = None
    requested: bytes | None = None
    # btc-psbt (FROST) items: the input signed, the output key named (:mod:`.taproot`)
    input_index: object = None
    output_key: object = None


@dataclass
class Prepared:
    """A sign item that passed every check; ``secret`` is the unsealed nonce/presignature."""

    key_id: str
    item_id: str
    request: Mapping[str, Any]
    public: Any  # FROST: the SigningPackage; ECDSA: the digest
    secret: Any = field(repr=False)
    release: dict[str, Any] = field(default_factory=dict)  # the release-log fields
    key_slot: str = ""  # where the call keeps the key to sign with (default: key_id)
    auth: Authorization | None = None
    reservation: RequestKey | None = None  # its velocity reservation (signer_nodes.velocity)
    entry: list[bytes] = field(default_factory=list)  # [entry hash], set at commit
    receipt_body: bytes = b""  # custody.receipts.ReceiptBody, canonical CBOR


class Strategy(Protocol):
    """What one scheme family contributes to the pipeline."""

    ledger_kind: str  # ledger rows: "nonce" or "presig"
    noun: str  # in messages: "nonce" or "presignature"
    result_field: str  # in responses: "signature_share" or "partial"
    unknown: Kind
    used: Kind
    reuse_event: str
    signed_event: str

    def parse(self, raw: Any) -> SignItem: ...

    def check_scheme(self, row: KeyRow) -> None: ...

    def requested(self, row: KeyRow, item: SignItem, message: bytes) -> tuple[bytes, Any]:
        """(message the caller asks to sign, the scheme's parsed public input)."""
        ...

    def check_item_id(self, item_id: object) -> str: ...

    def check_ledger(self, ledger: PoolItem, public: Any) -> None: ...

    def signers(self, ledger: PoolItem, public: Any) -> list[int]: ...

    def load_key(self, plain: bytes) -> Any: ...

    def derive(self, key: Any, key_id: str, path: tuple[int, ...]) -> Any:
        """The key share of the BIP-32 child at ``path`` (this node's own tweak)."""
        ...

    def compute(self, prepared: Prepared, key: Any) -> bytes: ...


class FrostStrategy:
    """FROST (RFC 9591): nonces are preprocessed (s5.1), signing is s5.2 ``sign``."""

    ledger_kind = "nonce"
    noun = "nonce"
    result_field = "signature_share"
    unknown = Kind.UNKNOWN_NONCE
    used = Kind.NONCE_USED
    reuse_event = "nonce.reuse_refused"
    signed_event = "frost.signed"

    def __init__(self, shares: ShareStore, party_id: int, anchor: Anchor) -> None:
        self.shares = shares
        self.party_id = party_id
        self.anchor = anchor

    def commitments(self, key_id: object, count: object) -> list[dict[str, str]]:
        """RFC 9591 s5.1 ahead of time: keep each nonce pair in memory only (the pool),
        publish commitments (``[{"nonce_id", "commitments"}]``)."""
        if type(count) is not int or not 1 <= count <= MAX_COMMITMENTS:
            raise NodeError(Kind.BAD_REQUEST, f"count must be an integer in [1, {MAX_COMMITMENTS}]")
        row = self.shares.row(key_id)
        suite = frost_suite(row.scheme)
        self.anchor.check_committee(row.key_id)
        kp = load_key_package(self.shares.unseal_share(row))
        batch = frost.preprocess(suite, kp, count)
        del kp
        pairs = [(nonces, comm.to_bytes()) for nonces, comm in batch]
        del batch
        ids = self.shares.add_ledger_items("nonce", row.key_id, pairs)
        logs.event("nonces.added", node_id=self.shares.node_id, key_id=row.key_id, count=count)
        return [
            {"nonce_id": i, "commitments": pub.hex()}
            for i, (_, pub) in zip(ids, pairs, strict=True)
        ]

    def parse(self, raw: Any) -> SignItem:
        req = sign_request(raw)
        return SignItem(
            raw.get("key_id"),
            raw.get("nonce_id"),
            req,
            package=hex_field(raw, "signing_package"),
            input_index=raw.get("input_index"),
            output_key=raw.get("output_key"),
        )

    def check_scheme(self, row: KeyRow) -> None:
        frost_suite(row.scheme)

    def requested(self, row: KeyRow, item: SignItem, message: bytes) -> tuple[bytes, Any]:
        try:
            package = frost.SigningPackage.from_bytes(
                item.package or b"", suite=frost_suite(row.scheme)
            )
        except MpcError as exc:
            raise NodeError(Kind.BAD_SIGNING_PACKAGE, str(exc)) from None
        return package.message, package

    def check_item_id(self, item_id: object) -> str:
        if not isinstance(item_id, str) or not re.fullmatch(r"[0-9a-f]{32}", item_id):
            raise NodeError(Kind.BAD_REQUEST, "nonce_id must be 32 lower-case hex digits")
        return item_id

    def check_ledger(self, ledger: PoolItem, public: Any) -> None:
        try:
            mine = public.commitment_for(self.party_id)
        except MpcError:
            raise NodeError(
                Kind.BAD_SIGNING_PACKAGE, "this node is not in the signing package"
            ) from None
        if mine.to_bytes() != ledger.public:
            raise NodeError(
                Kind.BAD_SIGNING_PACKAGE,
                "package carries commitments for this node that are not those of the nonce",
            )

    def signers(self, ledger: PoolItem, public: Any) -> list[int]:
        return sorted(public.identifiers)

    def load_key(self, plain: bytes) -> Any:
        return load_key_package(plain)

    def derive(self, key: Any, key_id: str, path: tuple[int, ...]) -> Any:
        """``s_j + t`` of the child at ``path`` (:func:`mpc.hd.derive_key_package`)."""
        try:
            return hd.derive_key_package(key, root_chain_code(key.public, key_id), path)
        except MpcError as exc:
            raise NodeError(Kind.BAD_REQUEST, f"derivation_path: {exc}") from None

    def compute(self, prepared: Prepared, key: Any) -> bytes:
        try:
            share = frost.sign(prepared.public, prepared.secret, key)
        except MpcError as exc:
            raise NodeError(
                Kind.BAD_SIGNING_PACKAGE, str(exc), culprits=getattr(exc, "culprits", ())
            ) from None
        return share.to_bytes()


class EcdsaStrategy:
    """DKLs23 (ePrint 2023/765) Protocol 3.6 round 3 with a presignature from the ledger."""

    ledger_kind = "presig"
    noun = "presignature"
    result_field = "partial"
    unknown = Kind.UNKNOWN_PRESIGNATURE
    used = Kind.PRESIGNATURE_USED
    reuse_event = "presig.reuse_refused"
    signed_event = "ecdsa.signed"

    def parse(self, raw: Any) -> SignItem:
        req = sign_request(raw)
        return SignItem(raw.get("key_id"), raw.get("presignature_id"), req)

    def check_scheme(self, row: KeyRow) -> None:
        ecdsa.check_scheme(row.key_id, row.scheme)

    def requested(self, row: KeyRow, item: SignItem, message: bytes) -> tuple[bytes, Any]:
        return (message if item.requested is None else item.requested), message

    def check_item_id(self, item_id: object) -> str:
        if not isinstance(item_id, str) or len(item_id) != 64:
            raise NodeError(Kind.BAD_REQUEST, "presignature_id must be 64 hex digits")
        return item_id

    def check_ledger(self, ledger: PoolItem, public: Any) -> None:
        return None

    def signers(self, ledger: PoolItem, public: Any) -> list[int]:
        return sorted(ledger.secret.public.signers)

    def load_key(self, plain: bytes) -> Any:
        return dkls23.EcdsaKeyShare.from_bytes(plain)

    def derive(self, key: Any, key_id: str, path: tuple[int, ...]) -> Any:
        """The DKLs23 share of the child (:func:`signer_nodes.ecdsa.derive_share`)."""
        return ecdsa.derive_share(key, key_id, path)

    def compute(self, prepared: Prepared, key: Any) -> bytes:
        # The pipeline made the durable mark already; the ledger callback reports it.
        def ledger(pid: bytes) -> bool:
            return pid.hex() == prepared.item_id

        try:
            partial = dkls23.sign_with_presignature(
                prepared.secret, key, prepared.public, ledger=ledger
            )
        except NonceReuseError as exc:
            raise NodeError(Kind.PRESIGNATURE_USED, str(exc)) from None
        except MpcError as exc:
            raise NodeError(Kind.BAD_REQUEST, str(exc)) from None
        return partial.to_bytes()


class SigningPipeline:
    """The write-ahead pipeline of one node (see the module docstring)."""

    def __init__(
        self,
        shares: ShareStore,
        party_id: int,
        anchor: Anchor,
        *,
        faults: FaultHooks = NO_FAULTS,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.shares = shares
        self.sign = sign  # the node's identity signature (receipts); None: no receipts
        self.anchor = anchor
        self.store = shares.store
        self.node_id = shares.node_id
        self.faults = faults
        self.frost = FrostStrategy(shares, party_id, anchor)
        self.ecdsa = EcdsaStrategy()
        self.window = ReleaseWindow(self.store)
        if anchor.current is not None:  # rebuild the velocity window from the log at open
            self.window.history(anchor.current.policy, int(time.time()))

    def sign_one(self, strategy: Strategy, item: Any, *, coordinator_verified: bool) -> bytes:
        """One request (a :class:`SignItem` or a body to parse); raises its error."""
        out = self._run(strategy, [item], coordinator_verified, fail_alone=False)[0]
        assert isinstance(out, bytes)  # fail_alone=False raised any error
        return out

    def sign_batch(
        self, strategy: Strategy, items: Sequence[Any], *, coordinator_verified: bool
    ) -> list[Outcome]:
        """Many requests; one outcome per item, in order: the bytes or the item's error."""
        return self._run(strategy, items, coordinator_verified, fail_alone=True)

    # -- the steps -------------------------------------------------------------------------
    def _run(
        self, strategy: Strategy, items: Sequence[Any], verified: bool, *, fail_alone: bool
    ) -> list[Outcome]:
        results: list[Outcome | None] = [None] * len(items)
        ready: list[tuple[int, Prepared]] = []
        keys: dict[str, Any] = {}
        seen: set[str] = set()
        with self.store.sealing.read():
            for i, raw in enumerate(items):
                try:
                    item = raw if isinstance(raw, SignItem) else strategy.parse(raw)
                    ready.append((i, self._prepare(strategy, item, verified, keys, seen)))
                except Exception as exc:  # noqa: BLE001 - becomes this item's outcome
                    if not fail_alone:
                        raise
                    results[i] = exc
            # The items are out of the pool (taken): from here on they are burnt, whatever
            # happens. A failure before the commit leaves them "in flight" for good, so a
            # retry is told nonce-used, never handed the secret again.
            self.faults.reached("sign-before-mark")
            try:
                marked = self.store.release_many(
                    [(p.item_id, strategy.ledger_kind, _builder(p)) for _, p in ready]
                )
            except BaseException:
                for _, p in ready:
                    self.window.cancel(p.reservation)
                raise
            self.shares.pool.settle([p.item_id for _, p in ready])
            for (_, p), seq in zip(ready, marked, strict=True):
                (self.window.cancel if seq is None else self.window.confirm)(p.reservation)
            # Durable now: each item's release-log entry is committed (and the item is
            # gone from memory). A failed commit raised above: nothing computed or released.
        self.faults.reached("sign-after-mark")
        for (i, p), seq in zip(ready, marked, strict=True):
            try:
                if seq is None:
                    raise NodeError(strategy.used, f"{strategy.noun} {p.item_id} was already used")
                results[i] = Released(
                    strategy.compute(p, keys[p.key_slot or p.key_id]), self._receipt(p, seq)
                )
                ids: dict[str, Any] = {f"{strategy.noun}_id": p.item_id}
                logs.event(
                    strategy.signed_event,
                    node_id=self.node_id,
                    key_id=p.key_id,
                    request_id=p.request.get("id"),
                    **ids,
                )
            except Exception as exc:  # noqa: BLE001
                if not fail_alone:
                    raise
                results[i] = exc
        keys.clear()
        return [
            r if r is not None else NodeError(Kind.INTERNAL, "item not processed") for r in results
        ]

    def _prepare(
        self,
        strategy: Strategy,
        item: SignItem,
        verified: bool,
        keys: dict[str, Any],
        seen: set[str],
    ) -> Prepared:
        """Every check that precedes the mark, in order (module docstring, step 2).
        Caller holds ``sealing`` as reader."""
        row = self.shares.row(item.key_id)
        strategy.check_scheme(row)
        self.anchor.check_committee(row.key_id)
        try:
            path = request_path(item.request)
            public_key = self._public_key(row, path, keys)
            messages = messages_to_sign(row.scheme, item.request, public_key=public_key)
        except SignRequestError as exc:
            raise NodeError(Kind.BAD_REQUEST, f"request {exc}") from None
        message = b"".join(messages)  # the request's message (its release-log digest)
        if item.request.get("kind") == taproot.KIND:
            taproot.check_network(row.key_id, item.request, self.shares.network(row.key_id))
        expected = taproot.item_message(item.request, messages, item.input_index, item.output_key)
        requested, public = strategy.requested(row, item, expected)
        governance = self.anchor.require()
        now = int(time.time())
        with self.window.guard(governance.policy):
            auth = self._authorize(
                row, item.request, expected, requested, verified, now, public_key
            )
            rid = str(item.request.get("id"))
            reservation = self.window.reserve(
                request_key(rid, row.key_id, auth.intent_digest),
                None
                if auth.asset is None
                else Counted(now, row.key_id, auth.asset, tuple(auth.transfers)),
            )
        try:
            prepared = self._prepare_item(strategy, item, row, message, public, keys, seen, path)
        except BaseException:
            self.window.cancel(reservation)
            raise
        prepared.auth, prepared.reservation = auth, reservation
        prepared.release.update(_release_fields(auth, governance.digest, now))
        r = prepared.release
        prepared.receipt_body = receipts.ReceiptBody(
            cluster_id=governance.cluster_id,
            request_id=r["request_id"],
            key_id=row.key_id,
            kind=r["kind"],
            scheme=row.scheme,
            message=message,
            request_digest=r["request_digest"],
            intent_digest=auth.intent_digest,
            policy_version=auth.decision.policy_version,
            governance_digest=governance.digest,
            rule=auth.decision.rule_id,
            approvals=auth.approvals,
            signers=tuple(r["signers"]),
        ).encode()
        return prepared

    def _public_key(self, row: KeyRow, path: tuple[int, ...], keys: dict[str, Any]) -> bytes:
        """The public key a request signs under: the key's own, or its child's at ``path``,
        derived here from the public package this node stored at DKG (kept for the call
        beside the unsealed shares, under :func:`_slot`)."""
        if not path:
            return row.public_key
        slot = "pk:" + _slot(row.key_id, path)
        if slot not in keys:
            try:
                root = keyio.decode_public_key_package(row.public_info, check=False)
            except MpcError as exc:
                raise NodeError(Kind.INTERNAL, f"stored public package: {exc}") from None
            child = derive_public(root, row.key_id, path)
            keys[slot] = encode_public_key(row.scheme, child.group_public_key)
        out = keys[slot]
        assert isinstance(out, bytes)
        return out

    def _receipt(self, p: Prepared, seq: int) -> dict[str, Any] | None:
        """This node's attestation of a committed release (:mod:`custody.receipts`)."""
        if self.sign is None or not p.entry:
            return None
        statement = receipts.node_statement(p.receipt_body, self.node_id, seq, p.entry[0])
        attestation = receipts.Attestation(self.node_id, seq, p.entry[0], self.sign(statement))
        return {"body": p.receipt_body.hex(), "node": attestation.to_json()}

    def _prepare_item(
        self,
        strategy: Strategy,
        item: SignItem,
        row: KeyRow,
        message: bytes,
        public: Any,
        keys: dict[str, Any],
        seen: set[str],
        path: tuple[int, ...] = (),
    ) -> Prepared:
        """The single-use item's checks, the unsealing, the take (module docstring, step 2,
        after the authorization)."""
        item_id = strategy.check_item_id(item.item_id)
        ledger = self.shares.ledger_item(item_id)
        if ledger is None and (
            item_id in seen or self.shares.pool.in_flight(item_id) or self.store.released(item_id)
        ):
            logs.warn(
                strategy.reuse_event,
                node_id=self.node_id,
                key_id=row.key_id,
                **{f"{strategy.noun}_id": item_id},
                request_id=item.request.get("id"),
            )
            by = "an earlier item of this batch" if item_id in seen else "a released signature"
            raise NodeError(strategy.used, f"{strategy.noun} {item_id} was already used (by {by})")
        if ledger is None or ledger.kind != strategy.ledger_kind or ledger.key_id != row.key_id:
            raise NodeError(
                strategy.unknown,
                f"no {strategy.noun} {item_id} for key {row.key_id!r} (outstanding ones live in"
                " memory only: a restart discards them)",
            )
        path_text = hd.format_path(path) if path else ""
        if ledger.kind == "presig" and ledger.path != path_text:
            # made with the share derived for another path (or the root): never used here
            made = ledger.path or "the root key"
            raise NodeError(
                strategy.unknown,
                f"presignature {item_id} of key {row.key_id!r} was made for {made}, not for "
                f"{path_text or 'the root key'}: a presignature signs for its own path only",
            )
        strategy.check_ledger(ledger, public)
        if row.key_id not in keys:
            keys[row.key_id] = strategy.load_key(self.shares.unseal_share(row))
        key_slot = _slot(row.key_id, path)
        if key_slot not in keys:  # the child's share: this node's own tweak (issue 13)
            keys[key_slot] = strategy.derive(keys[row.key_id], row.key_id, path)
        if item.input_index is not None:  # btc-psbt: the BIP-86 output-key share (of the child)
            base = key_slot
            key_slot = taproot.slot(base)
            if key_slot not in keys:
                keys[key_slot] = taproot.tweak(keys[base])
            taproot.check_output_key(row.key_id, keys[key_slot], item.output_key)
        if self.shares.take_ledger_item(item_id) is None:  # a concurrent request took it
            raise NodeError(strategy.used, f"{strategy.noun} {item_id} was already used")
        seen.add(item_id)
        kind = str(item.request.get("kind"))
        release = {
            "time": int(time.time()),
            "request_id": str(item.request.get("id")),
            "request_digest": audit.request_digest(
                str(item.request.get("id")), row.key_id, kind, message
            ),
            "kind": kind,
            "key_id": row.key_id,
            "scheme": row.scheme,
            "signers": strategy.signers(ledger, public),
            "item_id": item_id,
        }
        if path_text:  # the release-log entry names the path signed under
            release[PATH_MEMBER] = path_text
        return Prepared(row.key_id, item_id, item.request, public, ledger.secret, release, key_slot)

    def _authorize(
        self,
        row: KeyRow,
        request: Mapping[str, Any],
        recomputed: bytes,
        requested: bytes,
        coordinator_verified: bool,
        now: int,
        public_key: bytes | None = None,
    ) -> Authorization:
        """The authorization seam (:mod:`signer_nodes.policy`) over the active governance
        and this node's own release history; refusals are logged."""
        governance = self.anchor.require()
        try:
            auth = authorize(
                AuthorizationContext(
                    node_id=self.node_id,
                    key_id=row.key_id,
                    scheme=row.scheme,
                    request=request,
                    recomputed_message=recomputed,
                    requested_message=requested,
                    coordinator_verified=coordinator_verified,
                    raw_enabled=governance.raw_enabled(row.key_id),
                    governance=governance,
                    now=now,
                    history=self.window.history(governance.policy, now),
                    public_key=row.public_key if public_key is None else public_key,
                    passkey_floor=self.store.passkey_floor,
                )
            )
            for pc in auth.passkey_counters:  # issue 15: recorded before any release
                if not self.store.record_passkey_counter(
                    pc.credential_id, pc.sign_count, pc.assertion_digest
                ):
                    raise NotAuthorized(
                        "passkey-stale-counter",
                        f"passkey of {pc.approver_id}: signature counter {pc.sign_count} was"
                        " overtaken by another assertion of the same credential",
                    )
            return auth
        except NotAuthorized as exc:
            logs.warn(
                "sign.refused",
                node_id=self.node_id,
                key_id=row.key_id,
                reason=exc.reason,
                request_id=request.get("id"),
            )
            raise NodeError(Kind.NOT_AUTHORIZED, exc.detail, code=exc.reason) from None


def _slot(key_id: str, path: tuple[int, ...]) -> str:
    """Where a call keeps the share of ``key_id``'s child at ``path`` (``key_id`` itself for
    the root; ``@`` is outside the key-id alphabet, so no key id collides with a slot)."""
    return key_id if not path else f"{key_id}@{hd.format_path(path)}"


def _release_fields(auth: Authorization, governance_digest: bytes, now: int) -> dict[str, Any]:
    """What the release-log entry records of the authorization (custody.auditchain): the
    decision, the approvals that counted, and what velocity counts (asset, transfers)."""
    return {
        "time": now,
        "intent_digest": auth.intent_digest,
        "initiator": auth.initiator,
        "policy_version": auth.decision.policy_version,
        "governance_digest": governance_digest,
        "rule": auth.decision.rule_id,
        "approvals": [[a, d] for a, d in auth.approvals],
        "asset": auth.asset,
        "transfers": [[t.destination, t.amount] for t in auth.transfers],
    }


def _builder(prepared: Prepared) -> Any:
    """The release-log entry builder for one item: seq and prev come at commit time; the
    entry's hash is kept for the receipt."""
    fields = prepared.release

    def build(seq: int, prev: bytes) -> tuple[bytes, bytes]:
        encoded = audit.encode_release({**fields, "seq": seq, "prev": prev})
        h = audit.release_hash(encoded)
        prepared.entry[:] = [h]
        return encoded, h

    return build
