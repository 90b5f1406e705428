"""Sign requests and the message a node signs for them.

Both the coordinator and every signer node call :func:`message_to_sign`; a node never takes
the message to sign from the coordinator, it recomputes it from the request payload
(DESIGN.md invariant 2) and refuses when the signing package carries something else.

A request is a JSON object::

    {"id": str, "key_id": str, "kind": "raw" | "payment" | "settlement" | "evm-tx"
     | "message" | "btc-psbt", ...}

The coordinator adds two members to every request it relays, and refuses a client that
sends either: ``"initiator"`` (the principal whose credential created it) and
``"approvals"`` (a list of standard padded base64 strings of
:meth:`custody.approvals.Approval.encode`, ``[]`` until approvers sign). Neither changes the
message signed; a node's policy reads them.

``id`` and ``key_id`` follow the one id rule of :mod:`custody.domain` (1-40 characters of
``[A-Za-z0-9._:-]``); schemes, kinds and what each scheme signs come from there too.

``raw``
    ``"message"``: lower-case hex. The message is those bytes. For
    ``ecdsa-secp256k1`` they must be exactly the 32-byte digest that is signed (the
    caller hashes: Keccak-256 for Ethereum, double SHA-256 for Bitcoin legacy, ...).

``payment`` / ``settlement``
    ``"payload"``: a JSON object describing the payment or settlement (amounts as decimal
    strings or integers in minor units; floats are refused because their canonical form
    is ambiguous). The message is the 32-byte digest::

        SHA-256( b"tpwc-sign-v1\\x00" + kind.encode() + b"\\x00"
                 + canonical_cbor({"id": id, "key_id": key_id, "kind": kind, "payload": payload}) )

    (with ``"derivation_path": path`` in that map when the request names one)

    where ``canonical_cbor`` is RFC 8949 section 4.2.1 deterministic CBOR
    (:func:`mpc.wire.cbor_dumps`). The request id and key id are bound in, so the same
    payload signed for another request or key gives another digest. A ``"message"``
    field, if present, must equal that digest in hex (a client may send it to show what
    it expects); it is never trusted on its own.

The same 32-byte digest is what Ed25519 and BIP-340 sign too (as their message), so one
rule covers every scheme.

``derivation_path`` (optional, every kind; issue 13)
    ``"m/0/7"``: sign under the BIP-32 non-hardened child of the key at that path
    (:mod:`mpc.hd`; Ed25519 keys: the additive-tweak scheme documented there, not
    SLIP-10). Canonical form only (``m`` then 1-:data:`MAX_SIGN_DEPTH` decimal indices
    below 2^31, no leading zeros); a hardened step (``0'``, ``0h``, ``>= 2^31``) is refused
    with :class:`HardenedPathError` naming the step. Absent means the root key; ``"m"``
    alone is refused (one spelling per key). The path is part of the request every node
    recomputes: for ``payment`` / ``settlement`` it is in the digested body (below), for
    every kind it is in the approvals' intent digest (:func:`derivation_summary`, with the
    child's public key and, for ECDSA, its Ethereum address: the sender), and each node
    derives its own share tweak from it and the key's chain code; the coordinator never
    sends a tweak. A ``btc-psbt`` request is decoded for the CHILD's x-only key (its inputs
    must spend the child's BIP-86 output), so is every other kind given ``public_key``.

``evm-tx`` / ``message`` / ``btc-psbt`` / ``iso20022`` (:data:`custody.domain.DECODED_KINDS`)
    ``"payload"``: ``{"tx": "0x02..."}`` (an unsigned EIP-1559 transaction, ECDSA keys
    only), ``{"message": "0x..."}``, ``{"psbt": "<base64>"}`` (BIP-174, BIP-340 keys
    only) or ``{"xml": "..."}`` (an ISO 20022 pacs.008 message, Ed25519 keys only). The
    messages are what :func:`custody.kinds.decode` gives (``Intent.messages``):
    ``keccak256(0x02 || rlp(fields))``, the EIP-191 ``personal_sign`` digest for an ECDSA
    key and the bytes themselves for Ed25519 and BIP-340, or the exclusive C14N of the
    XMLDSig ``SignedInfo`` the node builds over the pacs.008 document's digest
    (:func:`custody.kinds.iso20022.signed_info`): one message; for ``btc-psbt``
    one per input, its BIP-341 sighash (``SIGHASH_DEFAULT``, signed under the key's BIP-86
    output key), at most :data:`custody.domain.MAX_PSBT_INPUTS`. :func:`messages_to_sign`
    gives them; :func:`message_to_sign` gives their concatenation (the one message for the
    first two kinds; for ``btc-psbt`` ``sighash_0 || sighash_1 || ...``, 32 bytes per
    input): the request's ``message``, bound into its audit and release-log digests.
    A ``btc-psbt`` request also carries ``"network"`` (the key's Bitcoin network, which
    names the outputs' addresses in the decoded intent; the sighashes do not depend on it)
    and is decoded for the key's x-only ``public_key`` (every input must spend its BIP-86
    output). No other top-level member is allowed but the coordinator's ``initiator`` and
    ``approvals`` (not part of the message); a ``"message"`` member, if present, must equal
    that message in hex (as for payment). A refused payload names its field as
    ``payload.<path>`` (e.g. ``payload.tx.to``, ``payload.psbt.inputs[1].witness_utxo``).

:func:`sign_result` is what a signed request carries beyond its signature: for ``evm-tx``
``{"signature": {"r", "s", "y_parity"}, "signed_tx": "0x02..."}`` (recovery ids 2 and 3
are refused: no EIP-1559 transaction can carry them); for ``btc-psbt``, whose signature is
the 64-byte BIP-340 signatures of its inputs concatenated in input order,
``{"signed_tx": "<hex>"}`` (:func:`custody.kinds.btc.finalize`); ``None`` for every other
kind.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from custody import kinds
from custody.ceremonies import hd_context
from custody.domain import (
    DECODED_KINDS,
    DIGEST_KINDS,
    KINDS,
    MAX_ID_LEN,
    MAX_MESSAGE,
    MAX_PSBT_INPUTS,
    NETWORKS,
    SCHEME_SPECS,
    SCHEMES,
    is_valid_id,
)
from custody.domain import spec as scheme_spec
from mpc import frost, hd
from mpc.errors import MpcError
from mpc.groups import ED25519, SECP256K1, Point
from mpc.shamir import PublicKeyPackage, lagrange_coefficient
from mpc.wire import cbor_dumps

__all__ = [
    "SCHEMES",
    "KINDS",
    "SignRequestError",
    "HardenedPathError",
    "MAX_SIGN_DEPTH",
    "PATH_MEMBER",
    "request_path",
    "derive_public",
    "root_chain_code",
    "encode_public_key",
    "child_public_key",
    "derivation_summary",
    "message_to_sign",
    "messages_to_sign",
    "canonical_digest",
    "decode_request",
    "sign_result",
]

DOMAIN = b"tpwc-sign-v1\x00"
PATH_MEMBER = "derivation_path"
#: Steps of a sign request's derivation path. BIP-32 allows 255; a signing path is checked
#: and derived by every node for every item, and real wallets' non-hardened tails are 1-3
#: steps (BIP-44 ``.../change/index``), so 16 bounds the work without limiting any use.
MAX_SIGN_DEPTH = 16
_MAX_PATH_CHARS = 16 * 11 + 1
_HEX = re.compile(r"^(?:[0-9a-f]{2})*$")


class SignRequestError(ValueError):
    """The request is malformed; ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str) -> None:
        self.field = field
        super().__init__(f"field {field!r}: {message}")


class HardenedPathError(SignRequestError):
    """A hardened step in ``derivation_path`` (it needs the whole parent private key, which
    never exists here); ``step`` is its 1-based position."""

    def __init__(self, message: str, *, step: int) -> None:
        self.step = step
        super().__init__(message, field=PATH_MEMBER)


def request_path(request: Mapping[str, Any]) -> tuple[int, ...]:
    """The request's ``derivation_path`` as indices (``()`` for none: the root key).

    BIP-32 "The key tree" indices, non-hardened only, canonical spelling only (module
    docstring); raises :class:`HardenedPathError` (naming the step) or
    :class:`SignRequestError` (``field="derivation_path"``)."""
    raw = request.get(PATH_MEMBER) if isinstance(request, Mapping) else None
    if raw is None:
        return ()
    if not isinstance(raw, str) or len(raw) > _MAX_PATH_CHARS:
        raise SignRequestError(
            f"must be a path string like 'm/0/7' of at most {MAX_SIGN_DEPTH} steps",
            field=PATH_MEMBER,
        )
    if not raw.startswith("m/"):
        raise SignRequestError(
            "must start with 'm/' (omit the member to sign with the root key)", field=PATH_MEMBER
        )
    try:
        steps = hd.parse_path(raw)
    except hd.HardenedDerivationError as exc:
        raise HardenedPathError(str(exc), step=exc.position) from None
    except MpcError as exc:
        raise SignRequestError(str(exc), field=PATH_MEMBER) from None
    if not 1 <= len(steps) <= MAX_SIGN_DEPTH:
        raise SignRequestError(
            f"{len(steps)} steps: a signing path has 1 to {MAX_SIGN_DEPTH}", field=PATH_MEMBER
        )
    if hd.format_path(steps) != raw:
        raise SignRequestError(f"not canonical: write {hd.format_path(steps)!r}", field=PATH_MEMBER)
    return steps


def derive_public(public: PublicKeyPackage, key_id: str, path: tuple[int, ...]) -> PublicKeyPackage:
    """The public package of the child of ``key_id`` (root package ``public``) at ``path``:
    BIP-32 CKDpub from the key's root chain code (:func:`mpc.hd.chain_code_from_dkg` under
    :func:`custody.ceremonies.hd_context`), every verifying share plus the same tweak.
    ``()`` gives ``public`` itself. The coordinator and every node call this on the public
    package they hold (a node: the one it stored at DKG), so they agree without a message.
    Raises :class:`SignRequestError` for the (~2^-127) invalid child."""
    if not path:
        return public
    try:
        return hd.derive_public_package(public, root_chain_code(public, key_id), path)
    except MpcError as exc:
        raise SignRequestError(str(exc), field=PATH_MEMBER) from None


def root_chain_code(public: PublicKeyPackage, key_id: str) -> bytes:
    """The key's BIP-32 root chain code (:func:`mpc.hd.chain_code_from_dkg` of its group
    key under :func:`custody.ceremonies.hd_context`), the same for the coordinator and every
    node, unchanged by refresh and resharing."""
    return hd.chain_code_from_dkg(public, hd_context(key_id))


def child_public_key(
    scheme: str,
    key_id: str,
    public_key: bytes,
    verifying_shares: Mapping[str, str],
    threshold: int,
    request: Mapping[str, Any],
) -> bytes:
    """The public key ``request`` signs under, from the key's public values as the API shows
    them (a client's own derivation, e.g. the approver's CLI): the key's own without a
    ``derivation_path``, else the child's. The root point is interpolated in the exponent
    from ``threshold`` verifying shares (RFC 9591 section 4.2), since an x-only BIP-340 key
    lacks the Y parity the chain code hashes; it must encode to ``public_key``. Raises
    :class:`SignRequestError`."""
    path = request_path(request)
    if not path:
        return public_key
    group = SECP256K1 if scheme_spec(scheme).curve == "secp256k1" else ED25519
    try:
        shares = {int(i): group.decode_point(bytes.fromhex(v)) for i, v in verifying_shares.items()}
        ids = sorted(shares)[:threshold]
        if len(ids) < threshold:
            raise ValueError("fewer verifying shares than the threshold")
        root = group.sum([shares[i] * lagrange_coefficient(group, i, ids) for i in ids])
        if encode_public_key(scheme, root) != public_key:
            raise ValueError("the verifying shares do not interpolate to the public key")
        public = PublicKeyPackage(group, threshold, root, shares)
    except (MpcError, ValueError) as exc:
        raise SignRequestError(str(exc), field="public_key") from None
    return encode_public_key(scheme, derive_public(public, key_id, path).group_public_key)


def encode_public_key(scheme: str, point: Point) -> bytes:
    """A key's public key as the service shows it: SEC1 compressed (ECDSA), x-only
    (BIP-340), RFC 8032 (Ed25519)."""
    if scheme == "ecdsa-secp256k1":
        return point.encode()
    return frost.ciphersuite(scheme).encode_public_key(point)


def derivation_summary(
    scheme: str, request: Mapping[str, Any], public_key: bytes | None
) -> dict[str, Any] | None:
    """What an intent summary says of a derived request (``None`` for the root key): the
    path, the child's ``public_key`` (the one the request was decoded for) and, for an
    ECDSA key, its Ethereum ``address`` (an evm-tx's sender). Approvals bind it through
    the intent digest (:func:`custody.approvals.request_intent`), so an approval for one
    path never counts for another."""
    path = request_path(request)
    if not path:
        return None
    out: dict[str, Any] = {"path": hd.format_path(path)}
    if public_key is not None:
        out["public_key"] = public_key.hex()
        if scheme == "ecdsa-secp256k1":
            # on first use: custody.kinds.addresses imports eth-utils (~0.3 s a process)
            from custody.kinds.addresses import ethereum_address

            try:
                out["address"] = ethereum_address(public_key)
            except kinds.KindError as exc:
                raise SignRequestError(exc.detail, field="public_key") from None
    return out


def _text_id(request: Mapping[str, Any], name: str) -> str:
    value = request.get(name)
    if not is_valid_id(value):
        raise SignRequestError(f"must be 1-{MAX_ID_LEN} characters of [A-Za-z0-9._:-]", field=name)
    assert isinstance(value, str)
    return value


def _hex(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise SignRequestError("must be lower-case hex with an even number of digits", field=name)
    if len(value) > 2 * MAX_MESSAGE:
        raise SignRequestError(f"longer than {MAX_MESSAGE} bytes", field=name)
    return bytes.fromhex(value)


def _check_json(value: Any, path: str, depth: int = 0) -> None:
    """Accept only JSON values with one canonical CBOR form (no floats), depth <= 16."""
    if depth > 16:
        raise SignRequestError("nested too deeply", field=path)
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise SignRequestError("integer out of range", field=path)
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise SignRequestError("object keys must be strings", field=path)
            _check_json(v, f"{path}.{k}", depth + 1)
        return
    raise SignRequestError(
        f"{type(value).__name__} is not allowed (use strings for amounts)", field=path
    )


def canonical_digest(request: Mapping[str, Any]) -> bytes:
    """The 32-byte digest of a ``payment`` or ``settlement`` request (see module docstring)."""
    kind = request.get("kind")
    if kind not in DIGEST_KINDS:
        raise SignRequestError("must be 'payment' or 'settlement'", field="kind")
    payload = request.get("payload")
    if not isinstance(payload, dict) or not payload:
        raise SignRequestError("must be a non-empty object", field="payload")
    _check_json(payload, "payload")
    body = {
        "id": _text_id(request, "id"),
        "key_id": _text_id(request, "key_id"),
        "kind": kind,
        "payload": payload,
    }
    path = request_path(request)
    if path:  # bound into the digest; absent for the root key (digests as before)
        body[PATH_MEMBER] = hd.format_path(path)
    return hashlib.sha256(DOMAIN + kind.encode() + b"\x00" + cbor_dumps(body)).digest()


#: ``initiator`` and ``approvals`` are set by the coordinator (the principal who created the
#: request, the approvals it collected); they are not part of the message to sign, and the
#: nodes check them against their own policy (``signer_nodes.policy``).
_DECODED_MEMBERS = frozenset(
    {"id", "key_id", "kind", "payload", "message", "initiator", "approvals", PATH_MEMBER}
)
_PSBT_MEMBERS = _DECODED_MEMBERS | {"network"}
PSBT_SIGNATURE_LEN = 64  # bytes per input in a btc-psbt request's signature


def decode_request(
    scheme: str, request: Mapping[str, Any], *, public_key: bytes | None = None
) -> kinds.Intent:
    """The decoded intent of an ``evm-tx`` / ``message`` / ``btc-psbt`` request for a key of
    ``scheme`` (``btc-psbt``: with its x-only ``public_key``) (:class:`SignRequestError`
    naming the field otherwise)."""
    if not isinstance(request, Mapping):
        raise SignRequestError("must be an object", field="request")
    kind = request.get("kind")
    if kind not in DECODED_KINDS:
        raise SignRequestError(f"must be one of {list(DECODED_KINDS)}", field="kind")
    allowed = _PSBT_MEMBERS if kind == "btc-psbt" else _DECODED_MEMBERS
    for name in request:
        if name not in allowed:
            raise SignRequestError(f"unknown member of a {kind} request", field=str(name)[:40])
    if "payload" not in request:
        raise SignRequestError("missing", field="payload")
    network = "mainnet"
    if kind == "btc-psbt" and scheme in kinds.SCHEMES_OF["btc-psbt"]:
        network = request.get("network")  # type: ignore[assignment]
        if network not in NETWORKS:
            raise SignRequestError(f"must be one of {list(NETWORKS)}", field="network")
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise SignRequestError(
                "the key's 32-byte x-only public key is needed to decode a PSBT",
                field="public_key",
            )
    payload = request["payload"]
    psbt = payload.get("psbt") if isinstance(payload, Mapping) and len(payload) == 1 else None
    if kind == "btc-psbt" and isinstance(psbt, str) and len(psbt) <= _PSBT_MEMO_CHARS:
        # one decode for the k items of a request (each carries it; a node signs them all)
        return _decode_psbt(scheme, psbt, public_key or b"", str(network))
    return _decode(kind, payload, scheme, public_key or b"", str(network))


def _decode(kind: str, payload: Any, scheme: str, public_key: bytes, network: str) -> kinds.Intent:
    try:
        intent = kinds.decode(kind, payload, scheme=scheme, public_key=public_key, network=network)
    except kinds.KindError as exc:
        name = exc.field if exc.field in ("scheme", "kind", "payload") else f"payload.{exc.field}"
        raise SignRequestError(exc.detail, field=name) from None
    if len(intent.messages) > MAX_PSBT_INPUTS:
        raise SignRequestError(
            f"{len(intent.messages)} inputs: at most {MAX_PSBT_INPUTS} are signed per request",
            field="payload.psbt.inputs",
        )
    return intent


_PSBT_MEMO_CHARS = 96 * 1024  # base64 characters of a PSBT whose decoding is remembered


@functools.lru_cache(maxsize=64)
def _decode_psbt(scheme: str, psbt: str, public_key: bytes, network: str) -> kinds.Intent:
    """:func:`_decode` of ``{"psbt": psbt}``, remembered (a pure function of its arguments;
    the intent is immutable; refusals are not remembered)."""
    return _decode("btc-psbt", {"psbt": psbt}, scheme, public_key, network)


def _psbt_signatures(signature: bytes, count: int | None = None) -> list[bytes]:
    n = PSBT_SIGNATURE_LEN
    if not signature or len(signature) % n or (count is not None and len(signature) != n * count):
        want = "64 bytes per input" if count is None else f"{count} x 64 bytes (one per input)"
        raise SignRequestError(f"must be {want}", field="signature")
    return [signature[i : i + n] for i in range(0, len(signature), n)]


def sign_result(
    scheme: str,
    request: Mapping[str, Any],
    signature: bytes,
    recovery_id: int | None,
    public_key: bytes | None = None,
) -> dict[str, Any] | None:
    """What a signed ``request`` carries beyond its signature (module docstring): for
    ``evm-tx`` the signature split for Ethereum and the signed transaction, checked to
    recover to ``public_key`` when given; for ``btc-psbt`` the finalized transaction, each
    input's signature checked under the output key of ``public_key`` when given (without
    it, re-assembled from a stored, verified signature); ``None`` for any other kind.
    Raises :class:`SignRequestError` (``signature...``) for a signature that cannot be
    used, such as recovery id 2 or 3."""
    if request.get("kind") == "btc-psbt":
        return _psbt_result(scheme, request, signature, public_key)
    if request.get("kind") != "evm-tx":
        return None
    intent = decode_request(scheme, request)
    assert isinstance(intent, kinds.evm.EvmTx)
    if len(signature) != 64 or recovery_id is None:
        raise SignRequestError("must be 64 bytes r || s with a recovery id", field="signature")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    try:
        return kinds.evm.result(intent, r, s, recovery_id, public_key=public_key)
    except kinds.KindError as exc:
        raise SignRequestError(exc.detail, field=exc.field) from None


def _psbt_result(
    scheme: str, request: Mapping[str, Any], signature: bytes, public_key: bytes | None
) -> dict[str, Any]:
    """BIP-174 "Input Finalizer" for key-path inputs: each input's final witness is its
    signature (BIP-341 key path, ``SIGHASH_DEFAULT``: 64 bytes, no sighash byte)."""
    try:
        if public_key is not None:
            intent = decode_request(scheme, request, public_key=public_key)
            assert isinstance(intent, kinds.btc.BtcPsbt)
            sigs = _psbt_signatures(signature, len(intent.messages))
            return {"signed_tx": kinds.btc.finalize(intent, sigs)}
        payload = request.get("payload")
        psbt = payload.get("psbt") if isinstance(payload, Mapping) else None
        raw = base64.b64decode(str(psbt), validate=True)
        return {"signed_tx": kinds.btc.assemble(raw, _psbt_signatures(signature))}
    except SignRequestError:
        raise
    except kinds.KindError as exc:
        raise SignRequestError(exc.detail, field=exc.field) from None
    except (ValueError, TypeError, binascii.Error) as exc:
        raise SignRequestError(f"cannot assemble the transaction: {exc}", field="payload") from None


def messages_to_sign(
    scheme: str, request: Mapping[str, Any], *, public_key: bytes | None = None
) -> tuple[bytes, ...]:
    """Each message a signer signs for ``request``, in order: one for every kind but
    ``btc-psbt``, whose messages are its inputs' BIP-341 sighashes (``public_key``: the
    key's x-only key, which every input must pay). Their concatenation is
    :func:`message_to_sign`. Raises :class:`SignRequestError` naming the field."""
    if isinstance(request, Mapping) and request.get("kind") == "btc-psbt":
        message = message_to_sign(scheme, request, public_key=public_key)
        n = 32
        return tuple(message[i : i + n] for i in range(0, len(message), n))
    return (message_to_sign(scheme, request, public_key=public_key),)


def message_to_sign(
    scheme: str, request: Mapping[str, Any], *, public_key: bytes | None = None
) -> bytes:
    """Recompute the exact message bytes a signer signs for ``request`` under ``scheme``
    (``btc-psbt``: the concatenation of its inputs' sighashes, :func:`messages_to_sign`;
    ``public_key`` is needed for that kind only).

    Raises :class:`SignRequestError` naming the field for any malformed request.
    """
    if scheme not in SCHEMES:
        raise SignRequestError(f"unknown scheme {scheme!r}", field="scheme")
    if not isinstance(request, Mapping):
        raise SignRequestError("must be an object", field="request")
    _text_id(request, "id")
    _text_id(request, "key_id")
    kind = request.get("kind")
    if kind not in KINDS:
        raise SignRequestError(f"must be one of {list(KINDS)}", field="kind")
    request_path(request)  # a malformed or hardened path is refused for every kind
    if kind == "raw":
        msg = _hex(request.get("message"), "message")
        if SCHEME_SPECS[scheme].raw_message == "digest32" and len(msg) != 32:
            raise SignRequestError("ECDSA signs a 32-byte digest", field="message")
        return msg
    if kind in DECODED_KINDS:
        digest = b"".join(decode_request(scheme, request, public_key=public_key).messages)
    else:
        digest = canonical_digest(request)
    if "message" in request and _hex(request["message"], "message") != digest:
        raise SignRequestError(
            "does not match the message recomputed from the payload", field="message"
        )
    return digest
