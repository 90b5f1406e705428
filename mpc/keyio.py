"""Canonical CBOR serialization of key packages (sealed storage, public export).

Formats (CBOR maps with text keys, canonical encoding RFC 8949 section 4.2.1, version 1):

``PublicKeyPackage``::

    {"v": 1, "kind": "public-key-package", "group": "ed25519" | "secp256k1",
     "min_signers": t, "group_key": <element>, "verifying_shares": {id: <element>, ...}}

``KeyPackage`` (secret: only ever written into an HSM-sealed blob, never to a file)::

    {"v": 1, "kind": "key-package", "identifier": id, "signing_share": <scalar>,
     "public": <PublicKeyPackage map as above>}

Elements and scalars use the group's RFC 9591 SerializeElement / SerializeScalar encodings.

Decoding is strict and raises only :class:`~mpc.errors.DecodeError` whose ``field`` names
the offending field: bytes must be the canonical encoding (so one package has exactly one
byte string), exact key sets, known version and kind, valid identifiers and threshold,
every element a valid non-identity group element, the signing share non-zero and matching
its verifying share, and (by default) every verifying share on one polynomial of degree
``< min_signers`` whose value at 0 is the group key (checked by Lagrange interpolation in
the exponent from the first ``t`` shares, RFC 9591 section 4.2; ``(n - t + 1) t`` scalar
multiplications).
"""

from __future__ import annotations

from typing import Any

from mpc.errors import DecodeError, EncodingError, MpcError
from mpc.groups import Group, Point, group_by_name
from mpc.shamir import MAX_PARTIES, KeyPackage, PublicKeyPackage, lagrange_coefficient
from mpc.wire import cbor_dumps, cbor_loads, exact_fields, point_from, scalar_from

__all__ = [
    "FORMAT_VERSION",
    "encode_public_key_package",
    "decode_public_key_package",
    "encode_key_package",
    "decode_key_package",
]

FORMAT_VERSION = 1
_PUB_KIND = "public-key-package"
_KEY_KIND = "key-package"
_PUB_FIELDS = frozenset({"v", "kind", "group", "min_signers", "group_key", "verifying_shares"})
_KEY_FIELDS = frozenset({"v", "kind", "identifier", "signing_share", "public"})


def _public_map(pub: PublicKeyPackage) -> dict[str, Any]:
    return {
        "v": FORMAT_VERSION,
        "kind": _PUB_KIND,
        "group": pub.group.name,
        "min_signers": pub.min_signers,
        "group_key": pub.group_public_key.encode(),
        "verifying_shares": {i: y.encode() for i, y in pub.verifying_shares.items()},
    }


def encode_public_key_package(pub: PublicKeyPackage) -> bytes:
    """Canonical CBOR of a public key package (raises EncodingError for an identity element)."""
    return cbor_dumps(_public_map(pub))


def encode_key_package(kp: KeyPackage) -> bytes:
    """Canonical CBOR of a key package. SECRET: seal it (hsm/) before it leaves memory."""
    return cbor_dumps(
        {
            "v": FORMAT_VERSION,
            "kind": _KEY_KIND,
            "identifier": kp.identifier,
            "signing_share": kp.group.encode_scalar(kp.signing_share),
            "public": _public_map(kp.public),
        }
    )


# -- decoding ----------------------------------------------------------------------------


def _fields(obj: Any, expected: frozenset[str], kind: str, prefix: str) -> dict[str, Any]:
    if not isinstance(obj, dict):  # a CBOR map decodes to a dict
        raise DecodeError("expected a map", field=prefix.rstrip(".") or "package")
    exact_fields(obj, expected, party=None, prefix=prefix)
    if type(obj["v"]) is not int or obj["v"] != FORMAT_VERSION:
        raise DecodeError(f"unsupported version {obj['v']!r}", field=prefix + "v")
    if obj["kind"] != kind:
        raise DecodeError(f"expected kind {kind!r}", field=prefix + "kind")
    return obj


def _identifier(group: Group, value: Any, field: str) -> int:
    if type(value) is not int or not (1 <= value <= 65535) or value >= group.order:
        raise DecodeError("identifier must be an integer in [1, 65535]", field=field)
    return value


def _check_consistent(
    group: Group, t: int, group_key: Point, shares: dict[int, Point], prefix: str
) -> None:
    base = sorted(shares)[:t]

    def interpolate(x: int) -> Point:
        return group.sum([shares[i] * lagrange_coefficient(group, i, base, at=x) for i in base])

    if interpolate(0) != group_key:
        raise DecodeError(
            "group key is not interpolated by the verifying shares", field=prefix + "group_key"
        )
    for j in sorted(shares)[t:]:
        if interpolate(j) != shares[j]:
            raise DecodeError(
                f"verifying share {j} is not on the degree-{t - 1} polynomial of the others",
                field=f"{prefix}verifying_shares[{j}]",
            )


def _public_from(obj: Any, prefix: str, check: bool) -> PublicKeyPackage:
    m = _fields(obj, _PUB_FIELDS, _PUB_KIND, prefix)
    if not isinstance(m["group"], str):
        raise DecodeError("expected a group name", field=prefix + "group")
    try:
        group = group_by_name(m["group"])
    except EncodingError:
        raise DecodeError(f"unknown group {m['group']!r}", field=prefix + "group") from None
    raw = m["verifying_shares"]
    if not isinstance(raw, dict) or not raw:
        raise DecodeError("expected a non-empty map", field=prefix + "verifying_shares")
    if len(raw) > MAX_PARTIES:
        raise DecodeError(
            f"more than {MAX_PARTIES} participants", field=prefix + "verifying_shares"
        )
    t = m["min_signers"]
    if type(t) is not int or not (2 <= t <= len(raw)):
        raise DecodeError(
            f"min_signers must be an integer in [2, {len(raw)}]", field=prefix + "min_signers"
        )
    shares: dict[int, Point] = {}
    for i, enc in raw.items():
        ident = _identifier(group, i, prefix + "verifying_shares")
        shares[ident] = point_from(group, enc, f"{prefix}verifying_shares[{ident}]", None)
    group_key = point_from(group, m["group_key"], prefix + "group_key", None)
    if check:
        _check_consistent(group, t, group_key, shares, prefix)
    return PublicKeyPackage(group, t, group_key, dict(sorted(shares.items())))


def _guard(fn: Any, data: Any, what: str, check: bool) -> Any:
    obj = cbor_loads(data, what=what)
    try:
        return fn(obj, check)
    except DecodeError:
        raise
    except MpcError as exc:  # e.g. an EncodingError from arithmetic: still a decoding failure
        raise DecodeError(str(exc), field=what) from None


def decode_public_key_package(data: bytes, *, check: bool = True) -> PublicKeyPackage:
    """Strictly decode :func:`encode_public_key_package` output (``check``: consistency)."""
    pub: PublicKeyPackage = _guard(
        lambda obj, c: _public_from(obj, "", c), data, "public_key_package", check
    )
    return pub


def _key_from(obj: Any, check: bool) -> KeyPackage:
    m = _fields(obj, _KEY_FIELDS, _KEY_KIND, "")
    pub = _public_from(m["public"], "public.", check)
    ident = _identifier(pub.group, m["identifier"], "identifier")
    if ident not in pub.verifying_shares:
        raise DecodeError(f"identifier {ident} has no verifying share", field="identifier")
    share = scalar_from(pub.group, m["signing_share"], "signing_share", None)
    if pub.group.base_mul(share) != pub.verifying_shares[ident]:
        raise DecodeError("signing share does not match its verifying share", field="signing_share")
    return KeyPackage(identifier=ident, signing_share=share, public=pub)


def decode_key_package(data: bytes, *, check: bool = True) -> KeyPackage:
    """Strictly decode :func:`encode_key_package` output (``check``: public consistency)."""
    kp: KeyPackage = _guard(_key_from, data, "key_package", check)
    return kp
