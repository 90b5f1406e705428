"""``btc-psbt`` at the coordinator: one FROST signature per input, under the BIP-86 output key.

A PSBT with ``k`` inputs (:mod:`custody.kinds.btc`) is ``k`` FROST(BIP-340) signatures by
one signer set of ``t`` nodes: per node, ``k`` pooled commitments (each input its own
nonce), one signing package per input over that input's BIP-341 sighash, and ``k`` sign
items per node that name their input (``input_index``) and the output key (``output_key``)
the coordinator aggregates under. The coordinator never tweaks a secret: each node tweaks
its own share (:mod:`signer_nodes.taproot`); here only the public package is tweaked
(:func:`api.crypto.taproot_public`: BIP-341 ``taproot_tweak_pubkey``, BIP-86 empty
merkle root) so that each node's share is checked and each signature aggregated under
``Q``. Every aggregate is verified again by libsecp256k1 (coincurve's BIP-340 verifier)
under ``x(Q)``, then :func:`custody.signing.sign_result` (BIP-174 "Input Finalizer":
:func:`custody.kinds.btc.finalize`, which checks each signature once more) must build the
network transaction. The request's ``signature`` is the ``k`` signatures concatenated in
input order; a failure of any input fails the attempt, blames whoever caused it, and the
coordinator's retry signs every input again on another signer set.

:func:`request_message` is what the sign-request route and the signing service call to get
a request's message for any kind: it binds a ``btc-psbt`` request to the key's network
(refusing another one) and passes the key's public key to
:func:`custody.signing.message_to_sign`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import coincurve

from api import crypto
from api.coordinator.pools import Commitment, Pools
from api.coordinator.queue import fence
from api.coordinator.registry import NodeRegistry, raise_refusal, receipt_part
from api.coordinator.types import KeyInfo, SessionFailed, SignResult
from api.nodes import NodeInfo
from custody.signing import SignRequestError, message_to_sign, sign_result

__all__ = ["KIND", "request_message", "sign_psbt"]

KIND = "btc-psbt"
SIGHASH_LEN = 32


def request_message(key: KeyInfo, body: dict[str, Any]) -> bytes:
    """The message of ``body`` for ``key`` (:func:`custody.signing.message_to_sign`); a
    ``btc-psbt`` body gets the key's ``network`` (a different one given is refused)."""
    if body.get("kind") == KIND:
        network = key.network or "mainnet"
        given = body.setdefault("network", network)
        if given != network:
            raise SignRequestError(
                f"key {key.id!r} is a {network} key; a PSBT for {given!r} is refused",
                field="network",
            )
    public_key = bytes.fromhex(key.public_key) if key.public_key else None
    return message_to_sign(key.scheme, body, public_key=public_key)


async def sign_psbt(
    registry: NodeRegistry,
    pools: Pools,
    timeout: float,
    key: KeyInfo,
    body: dict[str, Any],
    msg: bytes,
    excluded: set[int],
) -> SignResult:
    """One attempt at every input of a ``btc-psbt`` request (module docstring); ``msg`` is
    the concatenation of the inputs' sighashes (:func:`request_message`)."""
    if not msg or len(msg) % SIGHASH_LEN:
        raise SessionFailed("btc-psbt: the message is not a list of sighashes", [])
    sighashes = [msg[i : i + SIGHASH_LEN] for i in range(0, len(msg), SIGHASH_LEN)]
    try:
        output_key, output_shares = crypto.taproot_public(
            key.scheme, key.public_key, key.verifying_shares, key.threshold
        )
    except ValueError as e:
        raise SessionFailed(f"btc-psbt: no Taproot output key: {e}", []) from None
    nodes = registry.pick(key.nodes, key.threshold, excluded)
    commitments: dict[int, list[Commitment]] = {}
    for n in nodes:
        commitments[n.party_id] = [await pools.take_commitment(key, n) for _ in sighashes]
    try:
        packages = [
            crypto.frost_signing_package(
                key.scheme, m, {p: c[i].commitments for p, c in commitments.items()}
            )
            for i, m in enumerate(sighashes)
        ]
    except crypto.Blame as e:
        raise SessionFailed(str(e), [(c, "garbage commitments") for c in e.culprits]) from None
    try:
        shares, receipts = await _fan(
            registry, timeout, key, body, nodes, commitments, packages, output_key
        )
        signatures = []
        for i, (m, package) in enumerate(zip(sighashes, packages, strict=True)):
            try:
                sig = await asyncio.to_thread(
                    crypto.frost_aggregate,
                    key.scheme,
                    output_key,
                    output_shares,
                    key.threshold,
                    package,
                    {p: s[i] for p, s in shares.items()},
                    m,
                )
            except crypto.Blame as e:
                raise SessionFailed(
                    f"input {i}: {e}",
                    [(c, f"invalid signature share (input {i})") for c in e.culprits],
                ) from None
            # an independent verifier (libsecp256k1): BIP-340 under the output key x(Q)
            if not coincurve.PublicKeyXOnly(bytes.fromhex(output_key)).verify(sig, m):
                raise SessionFailed(f"input {i}: signature does not verify under x(Q)", [])
            signatures.append(sig)
        signature = b"".join(signatures)
        try:
            sign_result(key.scheme, body, signature, None, bytes.fromhex(key.public_key))
        except SignRequestError as e:
            raise SessionFailed(f"signature unusable for btc-psbt: {e}", []) from None
    except SessionFailed as e:
        e.signers = tuple(sorted(commitments))
        raise
    return SignResult(signature, None, sorted(commitments), receipts)


async def _fan(
    registry: NodeRegistry,
    timeout: float,
    key: KeyInfo,
    body: dict[str, Any],
    nodes: list[NodeInfo],
    commitments: dict[int, list[Commitment]],
    packages: list[Any],
    output_key: str,
) -> tuple[dict[int, list[bytes]], dict[int, Any]]:
    """Every node's ``k`` sign items, each through the node's micro-batching sender (so
    they reach its one pipeline together, in one batch call and one durable commit when
    the sender is idle); per node, its share of each input, or the blame of any failure."""
    caller = registry.caller
    calls = [
        (
            n,
            i,
            {
                "key_id": key.id,
                "nonce_id": commitments[n.party_id][i].nonce_id,
                "request": body,
                "signing_package": package.to_bytes().hex(),
                "input_index": i,
                "output_key": output_key,
            },
        )
        for n in nodes
        for i, package in enumerate(packages)
    ]
    await fence(n.party_id for n in nodes)  # durable before any item leaves
    res = await asyncio.gather(
        *(
            asyncio.wait_for(caller.sign_item(n, "/v1/frost/sign-batch", item), timeout)
            for n, _, item in calls
        ),
        return_exceptions=True,
    )
    raise_refusal((n.party_id, r) for (n, _, _), r in zip(calls, res, strict=True))
    out: dict[int, list[bytes]] = {n.party_id: [b""] * len(packages) for n in nodes}
    receipts: dict[int, Any] = {}
    blame: dict[int, str] = {}
    for (n, i, _), r in zip(calls, res, strict=True):
        p = n.party_id
        failed = registry.failure_blame(p, r, timeout_marks_down=True)
        if failed is not None:
            for c, reason in failed:
                blame.setdefault(c, f"{reason} (input {i})")
            continue
        assert isinstance(r, dict)  # not an exception here
        try:
            out[p][i] = bytes.fromhex(r["signature_share"])
        except (KeyError, TypeError, ValueError):
            blame.setdefault(p, f"garbage: no hex 'signature_share' (input {i})")
        if i == 0:  # one attestation per node: the release of the first input
            receipts[p] = receipt_part(r)
    if blame:
        raise SessionFailed("signing round failed", sorted(blame.items()))
    return out, receipts
