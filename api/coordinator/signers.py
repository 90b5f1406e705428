"""Per-scheme signers: one attempt at a signature from ``t`` healthy share holders.

:class:`FrostSigner` (Ed25519, BIP-340; RFC 9591): a pooled commitment per signer, the
signing package, one round of signature shares, aggregate (verified inside
:func:`mpc.frost.aggregate`). :class:`EcdsaSigner` (DKLs23): a presignature whose
participants are healthy, one round of partials, combine (verified by libsecp256k1); for
an ``evm-tx`` the signed transaction is assembled and must recover to the key
(:func:`custody.signing.sign_result`; recovery ids 2/3 are refused). A ``btc-psbt``
request is one FROST signature per input under the key's BIP-86 output key
(:mod:`api.coordinator.psbt`).
Each sign item goes through the node's micro-batching sender; a failed item, a garbage
answer or an invalid share raises :class:`SessionFailed` blaming its node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from api import crypto
from api.coordinator.pools import Commitment, Pools, Presignature
from api.coordinator.psbt import KIND as PSBT_KIND
from api.coordinator.psbt import sign_psbt
from api.coordinator.queue import fence
from api.coordinator.registry import NodeRegistry, raise_refusal, receipt_part
from api.coordinator.types import KeyInfo, SessionFailed, SignResult
from api.nodes import NodeInfo
from custody.domain import SCHEMES, Scheme, spec
from custody.signing import SignRequestError, sign_result
from mpc import frost


class Signer(Protocol):
    async def sign(
        self, key: KeyInfo, body: dict[str, Any], msg: bytes, excluded: set[int]
    ) -> SignResult:
        """One attempt; ``msg`` is :func:`custody.signing.message_to_sign` of ``body``."""
        ...


@contextlib.contextmanager
def _attempt(parties: Iterable[int]) -> Iterator[None]:
    """Name the attempt's signer set on a failure (see ``SessionFailed.signers``)."""
    try:
        yield
    except SessionFailed as e:
        e.signers = tuple(sorted(parties))
        raise


class _Fan:
    """What both signers share: the registry, the pools and the fan-out of sign items."""

    def __init__(self, registry: NodeRegistry, pools: Pools, round_timeout: float) -> None:
        self.registry = registry
        self.pools = pools
        self.timeout = round_timeout

    async def fan_sign(
        self, calls: dict[int, tuple[NodeInfo, str, dict[str, Any]]], field: str
    ) -> tuple[dict[int, bytes], dict[int, Any]]:
        """One sign item per node, each through that node's micro-batching sender
        (:meth:`NodeCaller.sign_item`); a failed item blames as a failed call did, a
        refusal raises :class:`NodesRefused`. Returns the shares and receipt parts."""
        caller = self.registry.caller
        await fence(calls)  # the signer set is durable before any item leaves
        res = await asyncio.gather(
            *(
                asyncio.wait_for(caller.sign_item(n, path, b), self.timeout)
                for n, path, b in calls.values()
            ),
            return_exceptions=True,
        )
        raise_refusal(zip(calls, res, strict=True))
        out: dict[int, bytes] = {}
        receipts: dict[int, Any] = {}
        blame: list[tuple[int, str]] = []
        for p, r in zip(calls, res, strict=True):
            failed = self.registry.failure_blame(p, r, timeout_marks_down=True)
            if failed is not None:
                blame += failed
                continue
            assert isinstance(r, dict)  # not an exception here
            try:
                out[p] = bytes.fromhex(r[field])
            except (KeyError, TypeError, ValueError):
                blame.append((p, f"garbage: no hex {field!r}"))
            receipts[p] = receipt_part(r)
        if blame:
            raise SessionFailed("signing round failed", blame)
        return out, receipts


class FrostSigner(_Fan):
    async def sign(
        self, key: KeyInfo, body: dict[str, Any], msg: bytes, excluded: set[int]
    ) -> SignResult:
        if body.get("kind") == PSBT_KIND:  # one signature per input (api.coordinator.psbt)
            return await sign_psbt(
                self.registry, self.pools, self.timeout, key, body, msg, excluded
            )
        nodes = self.registry.pick(key.nodes, key.threshold, excluded)
        commitments = await self._take_commitments(key, nodes)
        try:
            package = crypto.frost_signing_package(
                key.scheme, msg, {p: c.commitments for p, c in commitments.items()}
            )
        except crypto.Blame as e:
            raise SessionFailed(str(e), [(c, "garbage commitments") for c in e.culprits]) from None
        with _attempt(commitments):
            return await self._frost_round(key, body, msg, nodes, commitments, package)

    async def _take_commitments(self, key: KeyInfo, nodes: list[NodeInfo]) -> dict[int, Commitment]:
        """One commitment per signer, the dry pools' fetches in parallel: with empty pools a
        FROST signature then costs two round trips (commitments, shares) for any threshold,
        not t + 1 (measured by the latency study, docs/PERFORMANCE.md). Every node that
        failed its fetch is blamed, not only the first."""
        got = await asyncio.gather(
            *(self.pools.take_commitment(key, n) for n in nodes), return_exceptions=True
        )
        failed = [g for g in got if isinstance(g, BaseException)]
        if failed:
            for g in failed:
                if not isinstance(g, SessionFailed):
                    raise g
            blame = [b for g in failed if isinstance(g, SessionFailed) for b in g.blame]
            raise SessionFailed("commitment fetch failed", blame)
        return {n.party_id: g for n, g in zip(nodes, got, strict=True) if isinstance(g, Commitment)}

    async def _frost_round(
        self,
        key: KeyInfo,
        body: dict[str, Any],
        msg: bytes,
        nodes: list[NodeInfo],
        commitments: dict[int, Commitment],
        package: frost.SigningPackage,
    ) -> SignResult:
        package_hex = package.to_bytes().hex()
        calls = {
            n.party_id: (
                n,
                "/v1/frost/sign-batch",
                {
                    "key_id": key.id,
                    "nonce_id": commitments[n.party_id].nonce_id,
                    "request": body,
                    "signing_package": package_hex,
                },
            )
            for n in nodes
        }
        shares, receipts = await self.fan_sign(calls, "signature_share")
        try:
            # in a worker thread: the curve arithmetic (libsodium / libsecp256k1) drops
            # the GIL, so it runs beside the event loop instead of stalling it
            sig = await asyncio.to_thread(
                crypto.frost_aggregate,
                key.scheme,
                key.public_key,
                key.verifying_shares,
                key.threshold,
                package,
                shares,
                msg,
            )
        except crypto.Blame as e:
            raise SessionFailed(
                str(e), [(c, "invalid signature share") for c in e.culprits]
            ) from None
        return SignResult(sig, None, sorted(shares), receipts)


class EcdsaSigner(_Fan):
    async def sign(
        self, key: KeyInfo, body: dict[str, Any], msg: bytes, excluded: set[int]
    ) -> SignResult:
        pre = await self.pools.take_presignature(key, excluded)
        nodes = [nd for p in pre.parties if (nd := self.registry.by_party(p)) is not None]
        calls = {
            n.party_id: (
                n,
                "/v1/ecdsa/sign-batch",
                {"key_id": key.id, "presignature_id": pre.id, "request": body},
            )
            for n in nodes
        }
        with _attempt(pre.parties):
            return await self._ecdsa_round(key, body, msg, pre, calls)

    async def _ecdsa_round(
        self,
        key: KeyInfo,
        body: dict[str, Any],
        msg: bytes,
        pre: Presignature,
        calls: dict[int, tuple[NodeInfo, str, dict[str, Any]]],
    ) -> SignResult:
        partials, receipts = await self.fan_sign(calls, "partial")
        try:
            sig, recid = await asyncio.to_thread(
                crypto.ecdsa_combine,
                key.public_key,
                pre.id,
                pre.parties,
                pre.r_point,
                partials,
                msg,
            )
        except crypto.Blame as e:
            raise SessionFailed(str(e), [(c, "invalid partial") for c in e.culprits]) from None
        except crypto.Unattributable as e:
            raise SessionFailed(str(e), [], suspects=e.suspects) from None
        if body.get("kind") == "evm-tx":
            # The verified signature must make a broadcastable transaction of this key:
            # y_parity 0/1 (recovery ids 2 and 3 are refused), recovering to the key. The
            # answer re-assembles the same transaction from the stored signature.
            try:
                sign_result(key.scheme, body, sig, recid, bytes.fromhex(key.public_key))
            except SignRequestError as e:
                raise SessionFailed(f"signature unusable for evm-tx: {e}", []) from None
        return SignResult(sig, recid, sorted(partials), receipts)


def signers_by_scheme(
    registry: NodeRegistry, pools: Pools, round_timeout: float
) -> dict[Scheme, Signer]:
    """The signer of each scheme (FROST for the FROST schemes, DKLs23 for ECDSA)."""
    frost = FrostSigner(registry, pools, round_timeout)
    ecdsa = EcdsaSigner(registry, pools, round_timeout)
    return {s: (frost if spec(s).is_frost else ecdsa) for s in SCHEMES}
