"""``btc-psbt`` at the node: which input a FROST item signs, and the share it signs with.

A ``btc-psbt`` request (:mod:`custody.kinds.btc`) is signed as one FROST item per input,
each with its own nonce (the coordinator's sender normally puts the items of one request in
one ``sign-batch`` call, so one durable commit of the pipeline covers them). Each item
names its input (``input_index``) and the x-only output key the coordinator will aggregate
and verify under (``output_key``). The node never takes either on trust:

* the message it may sign for the item is the sighash of that input, recomputed by the
  node from the PSBT (BIP-341 "Common signature message", ``SIGHASH_DEFAULT``;
  :func:`custody.signing.messages_to_sign`), and the pipeline's authorization seam refuses a
  signing package whose message differs (another input's sighash included);
* it signs with its own share tweaked to the key's BIP-86 output key
  (:func:`mpc.frost.taproot_tweak`: BIP-341 ``taproot_tweak_seckey`` applied to the share,
  BIP-86 "no script path", so ``Q = P + int(hash_TapTweak(x(P)))*G``); the share is never
  combined with another, and the tweaked package lives only in the call's memory, like the
  unsealed share it comes from (never persisted, dropped when the call ends);
* the ``output_key`` the item names must be ``x(Q)`` of its own tweaked package, so a
  coordinator that means to aggregate under the internal (untweaked) key, or under another
  key's output key, is refused before any nonce is taken.

The request's ``network`` (which names the outputs' addresses in the decoded intent, never
the sighashes) must be the one the node recorded at the key's DKG (:func:`check_network`).

Which key a request kind signs under is the node's decision: ``btc-psbt`` always under the
output key, every other kind under the key itself. The tweaked package is computed once per
call and key (beside the unsealed share, under :func:`slot`) and, like the unsealed share,
dropped when the call ends.

Imports: :mod:`signer_nodes.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from custody.domain import MAX_PSBT_INPUTS
from mpc import frost
from mpc.shamir import KeyPackage
from signer_nodes.errors import Kind, NodeError

__all__ = ["KIND", "check_network", "check_output_key", "item_message", "slot", "tweak"]

KIND = "btc-psbt"


def item_message(
    request: Mapping[str, Any], messages: Sequence[bytes], index: object, output_key: object
) -> bytes:
    """The message a sign item of ``request`` may sign: for ``btc-psbt`` the recomputed
    sighash of input ``index`` (BIP-341: one signature message per input); for any other
    kind the request's one message, and ``index`` and ``output_key`` must be absent."""
    if request.get("kind") != KIND:
        for name, value in (("input_index", index), ("output_key", output_key)):
            if value is not None:
                raise NodeError(Kind.BAD_REQUEST, f"{name} is only for btc-psbt items")
        (message,) = messages
        return message
    if type(index) is not int or not 0 <= index < len(messages):
        raise NodeError(
            Kind.BAD_REQUEST,
            f"input_index must be an integer in [0, {len(messages) - 1}] (the PSBT has "
            f"{len(messages)} input(s); at most {MAX_PSBT_INPUTS} per request)",
        )
    return messages[index]


def check_network(key_id: str, request: Mapping[str, Any], recorded: str) -> None:
    """A ``btc-psbt`` request must name the network this node recorded at the key's DKG
    (the coordinator cannot re-label the outputs' addresses per request)."""
    if request.get("network") != recorded:
        raise NodeError(
            Kind.BAD_REQUEST,
            f"request field 'network': key {key_id!r} is a {recorded} key (recorded at its "
            f"DKG), not {str(request.get('network'))[:16]!r}",
        )


def slot(key_id: str) -> str:
    """Where a call keeps the tweaked package of ``key_id`` beside the share itself
    (``/`` is outside the key-id alphabet, so no key id can collide with it)."""
    return key_id + "/taproot"


def _xonly_hex(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise NodeError(Kind.BAD_REQUEST, "output_key must be 64 hex digits (x-only key)")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise NodeError(Kind.BAD_REQUEST, "output_key is not hex") from None


def tweak(key: KeyPackage) -> KeyPackage:
    """``key`` tweaked to its BIP-86 output key (BIP-341 ``taproot_tweak_seckey`` on the
    share, empty merkle root: BIP-86 "Address derivation"); see the module docstring."""
    try:
        return frost.taproot_tweak(key)
    except Exception as exc:  # UsageError: not secp256k1, tweak out of range (~2^-128)
        raise NodeError(Kind.WRONG_SCHEME, f"no Taproot output key: {exc}") from None


def check_output_key(key_id: str, tweaked: KeyPackage, claimed: object) -> None:
    """The item's ``output_key`` must be ``x(Q)`` of this node's own tweaked package."""
    want = frost.ciphersuite("bip340").encode_public_key(tweaked.public.group_public_key)
    if _xonly_hex(claimed) != want:
        raise NodeError(
            Kind.BAD_SIGNING_PACKAGE,
            f"output_key is not the BIP-86 output key of key {key_id!r} ({want.hex()}): "
            "this node signs btc-psbt inputs under that key only",
        )
