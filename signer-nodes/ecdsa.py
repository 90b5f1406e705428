"""DKLs23 threshold ECDSA sessions on the node: key setup and presigning.

Key setup is :class:`mpc.dkls23.keysetup.KeygenChain` (the FROST KeyGen DKG over
secp256k1, then the pairwise OT setup); its result, an :class:`~mpc.dkls23.EcdsaKeyShare`
(share plus OT seeds), is sealed as the key's share. A presign session
(:class:`mpc.dkls23.PresignSession`) gives a single-use presignature, kept in the node's
memory only (kind ``presig``, :mod:`signer_nodes.pool`); signing with it is the ECDSA
strategy of the one signing pipeline (:mod:`signer_nodes.pipeline`).

A presign spec with a ``derivation_path`` (issue 13) presigns with this node's share
derived for that path (:func:`mpc.hd.derive_ecdsa_share`: the public BIP-32 tweak added to
the Shamir share, the OT seeds kept), the tweak computed here from the path and the key's
root chain code (:func:`custody.signing.root_chain_code`), never taken from the coordinator.
Why before presigning and not at the online step (``w_i += r t phi_i`` would be sound
algebra for DKLs23 Protocol 3.6's ``w_i = H(m) phi_i + r v_i``): with the tweak chosen
after ``R`` is public, ECDSA with additive derivation and presignatures admits forgeries
(Groth and Shoup, EUROCRYPT 2022, ePrint 2021/1330); deriving first fixes the tweak before
``R`` exists and binds the presignature to the child key (its id hashes the child's
:func:`mpc.dkls23.key_id_of`, and ``sign_with_presignature`` refuses another key). The
presignature is kept with its path, and the pipeline signs with it for that path only.

Imports: :mod:`signer_nodes.errors`, ``.shares``, ``.specs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from custody.domain import Scheme
from custody.signing import SignRequestError, root_chain_code
from mpc import dkls23, hd, keyio
from mpc.dkls23.batch import BatchPresignSession
from mpc.dkls23.keysetup import KeygenChain
from mpc.errors import MpcError, ProtocolError
from mpc.wire import Message
from signer_nodes.errors import Kind, NodeError
from signer_nodes.shares import ShareStore
from signer_nodes.specs import SessionSpec, dkg_context

__all__ = [
    "SCHEME",
    "check_scheme",
    "keygen_session",
    "load_share",
    "derive_share",
    "presign_session",
    "RetirementGuard",
    "finish",
    "on_failure",
    "resetup_pairs",
]

SCHEME: Scheme = "ecdsa-secp256k1"  # the domain's one DKLs23 scheme


def keygen_session(spec: SessionSpec, me: int) -> KeygenChain:
    """DKG then OT setup for ``spec`` (kind ``dkg``, this scheme)."""
    return KeygenChain(
        spec.sid, me, list(spec.participants), spec.threshold, dkg_context(SCHEME, spec.key_id)
    )


def load_share(shares: ShareStore, key_id: object) -> dkls23.EcdsaKeyShare:
    """The unsealed ECDSA share of ``key_id`` (unknown-key, wrong-scheme)."""
    row = shares.row(key_id)
    check_scheme(row.key_id, row.scheme)
    return dkls23.EcdsaKeyShare.from_bytes(shares.unseal_share(row))


def derive_share(
    share: dkls23.EcdsaKeyShare, key_id: str, path: tuple[int, ...]
) -> dkls23.EcdsaKeyShare:
    """``share`` derived for the BIP-32 child at ``path`` (``()``: itself); the tweak is
    this node's own computation from the path and the key's root chain code."""
    if not path:
        return share
    try:
        return hd.derive_ecdsa_share(share, root_chain_code(share.public, key_id), path)
    except (MpcError, SignRequestError) as exc:
        raise NodeError(Kind.BAD_REQUEST, f"derivation_path: {exc}") from None


def check_scheme(key_id: str, scheme: str) -> None:
    if scheme != SCHEME:
        raise NodeError(Kind.WRONG_SCHEME, f"key {key_id!r} is {scheme}, not {SCHEME}")


def presign_session(spec: SessionSpec, shares: ShareStore) -> RetirementGuard:
    """A presign session, refused if a retired OT pair (with this node) takes part."""
    retired = shares.retired_ot_peers(spec.key_id) & set(spec.participants)
    if retired:
        raise NodeError(
            Kind.OT_PAIR_RETIRED,
            f"this node's OT setup with parties {sorted(retired)} failed a check and is retired",
            culprits=sorted(retired),
        )
    share = derive_share(load_share(shares, spec.key_id), spec.key_id, spec.path)
    rs: dkls23.PresignSession | BatchPresignSession
    if spec.presign_count == 1:
        rs = dkls23.PresignSession(share, spec.sid, list(spec.participants))
    else:
        rs = BatchPresignSession(share, spec.sid, list(spec.participants), spec.presign_count)
    return RetirementGuard(rs, spec, shares)


class RetirementGuard:
    """A presign session that stops at its next message once one of its OT pairs is retired.

    Source: the DKLs18 errata (ePrint 2018/499, 2023 revision) and DKLs23 (ePrint 2023/765)
    section 5.1 say that base OTs whose extension failed a check (a possible
    selective-failure probe, each abort leaking a bit of the correlation ``Delta``) must never
    be extended again. A retirement (:meth:`ShareStore.retire_ot_pair`, written by the
    failing session's :func:`on_failure`) used to stop only *new* sessions; the pair's other
    sessions already running (four in parallel by default) went on extending the same base
    OTs and running their checks. This wrapper re-reads the durable retired set before every
    message it feeds to the protocol (the retirement is one row of node metadata, so the
    check is cheap) and raises a :class:`~mpc.errors.ProtocolError` naming the pair: the host
    fails the session (:meth:`SessionHost._fail`) and drops its secret state at once.
    """

    def __init__(
        self,
        rs: dkls23.PresignSession | BatchPresignSession,
        spec: SessionSpec,
        shares: ShareStore,
    ) -> None:
        self.rs = rs
        self.spec = spec
        self.shares = shares

    @property
    def protocol(self) -> str:
        return self.rs.protocol

    @property
    def done(self) -> bool:
        return self.rs.done

    @property
    def result(self) -> Any:
        return self.rs.result

    def waiting_for(self) -> tuple[int, ...]:
        return self.rs.waiting_for()

    def start(self) -> list[Message]:
        self.check()
        return self.rs.start()

    def receive(self, msg: Message) -> list[Message]:
        self.check()
        return self.rs.receive(msg)

    def check(self) -> None:
        """Raise if this node retired its OT setup with a peer of the session meanwhile."""
        me = self.rs.me
        retired = sorted(self.shares.retired_ot_peers(self.spec.key_id) & set(self.rs.others))
        if retired:
            pairs = ", ".join(f"({min(me, j)}, {max(me, j)})" for j in retired)
            raise ProtocolError(
                f"OT pair {pairs} of key {self.spec.key_id!r} was retired after a failed check "
                f"while this presign session was running; party {me} stops it here and never "
                f"extends those base OTs again",
                culprits=tuple(retired),
                pair=(min(me, retired[0]), max(me, retired[0])),
            )


def finish(spec: SessionSpec, result: Any, shares: ShareStore) -> dict[str, Any]:
    """Seal the result of an ECDSA keygen or presign session; return its public part."""
    if spec.kind == "dkg":
        share: dkls23.EcdsaKeyShare = result
        pub = share.public
        shares.store_share(
            spec.key_id,
            SCHEME,
            share.to_bytes(),
            pub.group_public_key.encode(),
            keyio.encode_public_key_package(pub),
        )
        return {
            "key_id": spec.key_id,
            "scheme": SCHEME,
            "public_key": pub.group_public_key.encode().hex(),
            "group_public_key": pub.group_public_key.encode().hex(),
            "min_signers": pub.min_signers,
            "verifying_shares": {
                str(i): p.encode().hex() for i, p in sorted(pub.verifying_shares.items())
            },
        }
    path = spec.derivation_path or ""
    if spec.presign_count == 1:
        presig: dkls23.Presignature = result
        _keep(shares, spec.key_id, [presig], path)
        return _public(spec, presig, path)
    batch: tuple[dkls23.Presignature, ...] = result
    if len(batch) != spec.presign_count:
        raise NodeError(Kind.INTERNAL, "a presign batch ended with the wrong count")
    # all or none: the pool refuses the whole batch (pool-full) rather than a part of it
    _keep(shares, spec.key_id, batch, path)
    first = _public(spec, batch[0], path)
    return {
        "key_id": spec.key_id,
        "participants": first["participants"],
        "dkls23_key_id": first["dkls23_key_id"],
        "session_id": spec.session_id,
        "presign_count": len(batch),
        "presignatures": [
            {"presignature_id": p.presignature_id.hex(), "R": p.public.R.encode().hex()}
            for p in batch
        ],
        **({"derivation_path": path} if path else {}),
    }


def _keep(
    shares: ShareStore, key_id: str, presigs: Sequence[dkls23.Presignature], path: str
) -> None:
    """Keep presignatures in the node's memory pool, each under its id (its hash), all or
    none (:meth:`signer_nodes.pool.Pool.add` refuses the lot with ``pool-full``)."""
    shares.add_ledger_items_at(
        "presig", key_id, [(p.presignature_id.hex(), p, p.public.R.encode()) for p in presigs], path
    )


def _public(spec: SessionSpec, presig: dkls23.Presignature, path: str) -> dict[str, Any]:
    p = presig.public
    out = {
        "presignature_id": presig.presignature_id.hex(),
        "key_id": spec.key_id,
        "participants": list(p.signers),
        "R": p.R.encode().hex(),
        "dkls23_key_id": p.key_id.hex(),
        "session_id": p.session_id.hex(),
    }
    if path:
        out["derivation_path"] = path
    return out


def on_failure(spec: SessionSpec, exc: MpcError, me: int, shares: ShareStore) -> None:
    """A presign whose pairwise check with a peer failed retires that pair's OT setup."""
    pair = getattr(exc, "pair", None)
    if spec.kind == "ecdsa-presign" and pair is not None and me in pair:
        shares.retire_ot_pair(spec.key_id, pair[0] + pair[1] - me)


def resetup_pairs(shares: ShareStore, key_id: str, new: dkls23.EcdsaKeyShare) -> dict[str, Any]:
    """Install the result of an authorized OT re-setup; re-enable the key's retired pairs.

    ``new`` is this node's result of :class:`mpc.dkls23.resetup.OtResetupChain` over a
    proactive refresh of ``key_id`` (the refresh of DKLs23 ePrint 2023/765 section 7 / the
    FROST-style refresh of :mod:`mpc.refresh`, then a fresh base-OT setup for every ordered
    pair, DKLs23 section 5 "a fast one-time setup"). Only the ceremony host may call this,
    and only with the result of a ceremony the officers authorized (that check is the
    ceremony wiring's, not this function's). A retired pair's base OTs may never be extended
    again (DKLs18 errata, ePrint 2018/499, 2023 revision); a *new* setup of the pair is a new
    correlation, so the retirement ends with it.

    Refused (bad-request, naming the party) unless the new share is for the same party, the
    same group key, the same threshold and committee, and carries base-OT seeds towards every
    peer that differ from the stored ones (both roles): seeds equal to the old ones are not a
    re-setup. The share is replaced (sealed under the next share version) and the retired
    set cleared in one transaction; returns the public summary.
    """
    row = shares.row(key_id)
    check_scheme(row.key_id, row.scheme)
    old = dkls23.EcdsaKeyShare.from_bytes(shares.unseal_share(row))
    me = old.identifier
    if new.identifier != me:
        raise NodeError(
            Kind.BAD_REQUEST,
            f"re-setup share is party {new.identifier}'s, not this node's (party {me})",
        )
    if new.group_public_key != old.group_public_key:
        raise NodeError(
            Kind.BAD_REQUEST,
            f"party {me}'s re-setup share of key {key_id!r} has another group public key",
        )
    if (
        new.public.min_signers != old.public.min_signers
        or new.public.participants != old.public.participants
    ):
        raise NodeError(
            Kind.BAD_REQUEST,
            f"party {me}'s re-setup share of key {key_id!r} changes the threshold or the "
            f"committee (a resharing, not an OT re-setup)",
        )
    stale = sorted(
        j
        for j in old.bob
        if j not in new.bob
        or j not in new.alice
        or new.bob[j].k0 == old.bob[j].k0
        or new.bob[j].k1 == old.bob[j].k1
        or new.alice[j].kd == old.alice[j].kd
    )
    if stale:
        raise NodeError(
            Kind.BAD_REQUEST,
            f"party {me}'s re-setup share of key {key_id!r} has no fresh base OTs with "
            f"parties {stale}",
            culprits=stale,
        )
    retired = shares.retired_ot_peers(key_id)
    version = shares.replace_share_with_fresh_ots(
        row, new.to_bytes(), keyio.encode_public_key_package(new.public), peers=sorted(retired)
    )
    return {
        "key_id": key_id,
        "party": me,
        "share_version": version,
        "reenabled_peers": sorted(retired),
        "dkls23_key_id": new.key_id.hex(),
    }
