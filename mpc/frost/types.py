"""FROST signing data (RFC 9591 sections 5.1-5.3) and its strict CBOR encodings.

* :class:`SigningNonces` -- a signer's secret nonce pair; single use, zeroed after use;
* :class:`SigningCommitments` -- the public commitments a signer publishes (round one);
* :class:`SigningPackage` -- message plus the sorted commitment list (coordinator to signers);
* :class:`SignatureShare` -- a signer's response (round two).

Each public object has ``to_bytes()`` / ``from_bytes(data, suite=..., party=...)``: canonical
CBOR maps (via :func:`mpc.wire.cbor_dumps`) whose decoding is strict (exact field set, types,
lengths, canonical scalars, on-curve non-identity elements, sorted unique identifiers) and
raises only :class:`~mpc.errors.DecodeError` naming the field and the party.
:class:`SigningNonces` serializes too, for sealed storage on the node (never on the wire).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mpc.errors import DecodeError, NonceReuseError, ProtocolError, UsageError
from mpc.frost.ciphersuite import Ciphersuite, ciphersuite
from mpc.groups import Point
from mpc.wire import cbor_dumps, cbor_loads, point_from, scalar_from

__all__ = [
    "SigningNonces",
    "SigningCommitments",
    "SigningPackage",
    "SignatureShare",
    "signing_package",
]

MAX_IDENTIFIER = 65535


def check_identifier(identifier: object) -> int:
    """A participant identifier: an ``int`` in [1, 65535] (non-zero: RFC 9591 section 3)."""
    if type(identifier) is not int or not 1 <= identifier <= MAX_IDENTIFIER:
        raise UsageError(
            f"participant identifier {identifier!r} must be an integer in [1, {MAX_IDENTIFIER}]",
            party=identifier if type(identifier) is int else None,
        )
    return identifier


def _check_element(suite: Ciphersuite, p: object, what: str, identifier: int) -> None:
    if not isinstance(p, type(suite.group.generator)) or p.is_identity():
        raise ProtocolError(
            f"{what} is not a non-identity {suite.group.name} element", culprits=(identifier,)
        )


@dataclass(frozen=True)
class SigningCommitments:
    """RFC 9591 section 5.1: a signer's ``(hiding_nonce_commitment, binding_nonce_commitment)``."""

    suite: Ciphersuite
    identifier: int
    hiding: Point
    binding: Point

    def __post_init__(self) -> None:
        check_identifier(self.identifier)
        _check_element(self.suite, self.hiding, "hiding nonce commitment", self.identifier)
        _check_element(self.suite, self.binding, "binding nonce commitment", self.identifier)

    def to_bytes(self) -> bytes:
        return cbor_dumps(
            {
                "suite": self.suite.name,
                "id": self.identifier,
                "hiding": self.hiding.encode(),
                "binding": self.binding.encode(),
            }
        )

    @classmethod
    def from_bytes(
        cls, data: bytes, *, suite: Ciphersuite | None = None, party: int | None = None
    ) -> SigningCommitments:
        """Strictly decode; ``party`` (when given) must be the identifier inside."""
        obj = _load_map(data, "commitments", {"suite", "id", "hiding", "binding"}, party)
        s = _suite(obj, suite, party)
        ident = _ident(obj["id"], "id", party)
        if party is not None and ident != party:
            raise DecodeError(f"commitments claim identifier {ident}", field="id", party=party)
        return _commitments_from(s, obj, ident, "")


@dataclass(frozen=True)
class SignatureShare:
    """RFC 9591 section 5.2 output ``sig_share`` of one signer."""

    suite: Ciphersuite
    identifier: int
    share: int = field(repr=False)

    def __post_init__(self) -> None:
        check_identifier(self.identifier)
        if type(self.share) is not int or not 0 <= self.share < self.suite.group.order:
            raise ProtocolError(
                "signature share is not a canonical scalar", culprits=(self.identifier,)
            )

    def to_bytes(self) -> bytes:
        return cbor_dumps(
            {
                "suite": self.suite.name,
                "id": self.identifier,
                "share": self.suite.group.encode_scalar(self.share),
            }
        )

    @classmethod
    def from_bytes(
        cls, data: bytes, *, suite: Ciphersuite | None = None, party: int | None = None
    ) -> SignatureShare:
        """Strictly decode; ``party`` (when given) must be the identifier inside."""
        obj = _load_map(data, "signature_share", {"suite", "id", "share"}, party)
        s = _suite(obj, suite, party)
        ident = _ident(obj["id"], "id", party)
        if party is not None and ident != party:
            raise DecodeError(f"signature share claims identifier {ident}", field="id", party=party)
        z = scalar_from(s.group, obj["share"], "share", ident, allow_zero=True)
        return cls(s, ident, z)


@dataclass(frozen=True)
class SigningPackage:
    """The coordinator's request (RFC 9591 section 5.2 inputs): ``commitment_list`` and ``msg``.

    ``commitments`` must be sorted by identifier with no duplicates (RFC 9591 section 4.3);
    :func:`signing_package` sorts for you. Per-package values (binding factors, group
    commitment, challenge, Lagrange coefficients) are computed once and cached on the
    object, keyed by the group public key; the object is immutable so the cache is sound.
    """

    suite: Ciphersuite
    commitments: tuple[SigningCommitments, ...]
    message: bytes
    _cache: dict[bytes, Any] = field(
        default_factory=dict, init=False, compare=False, repr=False, hash=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.message, bytes):
            raise UsageError("message must be bytes")
        if not isinstance(self.commitments, tuple) or not self.commitments:
            raise UsageError("commitment list must be a non-empty tuple")
        prev = 0
        for c in self.commitments:
            if not isinstance(c, SigningCommitments) or c.suite is not self.suite:
                raise UsageError(
                    f"commitment list entry is not {self.suite.name} SigningCommitments"
                )
            if c.identifier == prev:
                raise UsageError(
                    f"identifier {c.identifier} appears twice in the commitment list",
                    party=c.identifier,
                )
            if c.identifier < prev:
                raise UsageError(
                    f"commitment list is not sorted by identifier (at {c.identifier})",
                    party=c.identifier,
                )
            prev = c.identifier

    @property
    def identifiers(self) -> tuple[int, ...]:
        return tuple(c.identifier for c in self.commitments)

    def commitment_for(self, identifier: int) -> SigningCommitments:
        for c in self.commitments:
            if c.identifier == identifier:
                return c
        raise UsageError(
            f"participant {identifier} is not in the signing package", party=identifier
        )

    def to_bytes(self) -> bytes:
        return cbor_dumps(
            {
                "suite": self.suite.name,
                "message": self.message,
                "commitments": [
                    {"id": c.identifier, "hiding": c.hiding.encode(), "binding": c.binding.encode()}
                    for c in self.commitments
                ],
            }
        )

    @classmethod
    def from_bytes(
        cls, data: bytes, *, suite: Ciphersuite | None = None, party: int | None = None
    ) -> SigningPackage:
        """Strictly decode; errors in a commitment entry name that entry's identifier."""
        obj = _load_map(data, "signing_package", {"suite", "message", "commitments"}, party)
        s = _suite(obj, suite, party)
        if not isinstance(obj["message"], bytes):
            raise DecodeError("expected a byte string", field="message", party=party)
        entries = obj["commitments"]
        if not isinstance(entries, list) or not entries:
            raise DecodeError("expected a non-empty array", field="commitments", party=party)
        out: list[SigningCommitments] = []
        prev = 0
        for k, entry in enumerate(entries):
            where = f"commitments[{k}]"
            if not isinstance(entry, dict) or set(entry) != {"id", "hiding", "binding"}:
                raise DecodeError(
                    "expected a map with keys id, hiding, binding", field=where, party=party
                )
            ident = _ident(entry["id"], where + ".id", party)
            if ident <= prev:
                raise DecodeError(
                    f"identifier {ident} is duplicated or out of order (list must be sorted)",
                    field=where + ".id",
                    party=ident,
                )
            prev = ident
            out.append(_commitments_from(s, entry, ident, where + "."))
        return cls(s, tuple(out), obj["message"])


def signing_package(
    commitments: Iterable[SigningCommitments] | Mapping[int, SigningCommitments], message: bytes
) -> SigningPackage:
    """Build a :class:`SigningPackage`, sorting the commitments; duplicates are refused."""
    items = list(commitments.values()) if isinstance(commitments, Mapping) else list(commitments)
    if not items:
        raise UsageError("no commitments")
    if isinstance(commitments, Mapping):
        for k, c in commitments.items():
            if c.identifier != k:
                raise UsageError(f"commitments filed under {k} belong to {c.identifier}", party=k)
    items.sort(key=lambda c: c.identifier)
    return SigningPackage(items[0].suite, tuple(items), message)


class SigningNonces:
    """RFC 9591 section 5.1 ``nonce``: a signer's secret ``(hiding_nonce, binding_nonce)``.

    Single use: :meth:`take` hands the scalars out once, then the object zeroes its
    fields and refuses every later use with :class:`~mpc.errors.NonceReuseError`
    (Python ints are immutable, so the zeroing drops this object's references; it cannot
    scrub copies the interpreter made). ``commitments`` is the public half.
    """

    __slots__ = ("suite", "identifier", "commitments", "_hiding", "_binding", "_used")

    def __init__(self, suite: Ciphersuite, identifier: int, hiding: int, binding: int) -> None:
        """Nonces from given scalars; the commitments are always computed from them.

        RFC 9591 section 5.1, last steps: ``D = G * hiding``, ``E = G * binding``. Use
        :func:`mpc.frost.commit` for fresh nonces; this constructor serves storage and
        test vectors.
        """
        check_identifier(identifier)
        q = suite.group.order
        if not all(type(v) is int and 0 < v < q for v in (hiding, binding)):
            raise UsageError("nonces must be non-zero canonical scalars", party=identifier)
        g = suite.group
        self.suite = suite
        self.identifier = identifier
        self.commitments = SigningCommitments(
            suite, identifier, g.base_mul(hiding), g.base_mul(binding)
        )
        self._hiding = hiding
        self._binding = binding
        self._used = False

    @classmethod
    def from_scalars(
        cls, suite: Ciphersuite, identifier: int, hiding: int, binding: int
    ) -> SigningNonces:
        """Same as the constructor (named for readability at call sites)."""
        return cls(suite, identifier, hiding, binding)

    @property
    def used(self) -> bool:
        return self._used

    def take(self) -> tuple[int, int]:
        """Hand out ``(hiding, binding)`` exactly once; zero the object; then refuse."""
        if self._used:
            raise NonceReuseError("signing nonces were already used", party=self.identifier)
        out = (self._hiding, self._binding)
        self._used = True
        self._hiding = self._binding = 0
        return out

    def to_bytes(self) -> bytes:
        """Serialize for sealed storage (the node seals these bytes with its HSM key)."""
        if self._used:
            raise NonceReuseError("refusing to serialize used nonces", party=self.identifier)
        g = self.suite.group
        return cbor_dumps(
            {
                "suite": self.suite.name,
                "id": self.identifier,
                "hiding": g.encode_scalar(self._hiding),
                "binding": g.encode_scalar(self._binding),
            }
        )

    @classmethod
    def from_bytes(
        cls, data: bytes, *, suite: Ciphersuite | None = None, party: int | None = None
    ) -> SigningNonces:
        """Strictly decode stored nonces; the commitments are recomputed from the scalars."""
        obj = _load_map(data, "signing_nonces", {"suite", "id", "hiding", "binding"}, party)
        s = _suite(obj, suite, party)
        ident = _ident(obj["id"], "id", party)
        if party is not None and ident != party:
            raise DecodeError(f"nonces belong to identifier {ident}", field="id", party=party)
        d = scalar_from(s.group, obj["hiding"], "hiding", ident)
        e = scalar_from(s.group, obj["binding"], "binding", ident)
        return cls.from_scalars(s, ident, d, e)

    def __repr__(self) -> str:
        state = "used" if self._used else "fresh"
        return f"<SigningNonces {self.suite.name} id={self.identifier} {state}>"


# -- decoding helpers ---------------------------------------------------------------------


def _load_map(data: bytes, what: str, keys: set[str], party: int | None) -> dict[str, Any]:
    obj = cbor_loads(data, what=what, party=party)
    if not isinstance(obj, dict):
        raise DecodeError("expected a CBOR map", field=what, party=party)
    if set(obj) != keys:
        extra = sorted(map(str, set(obj) - keys))
        missing = sorted(keys - set(obj))
        raise DecodeError(
            f"unexpected fields {extra}, missing fields {missing}", field=what, party=party
        )
    return obj


def _suite(obj: Mapping[str, Any], expected: Ciphersuite | None, party: int | None) -> Ciphersuite:
    name = obj["suite"]
    try:
        s = ciphersuite(name)
    except UsageError:
        raise DecodeError(f"unknown ciphersuite {name!r}", field="suite", party=party) from None
    if expected is not None and s is not expected:
        raise DecodeError(
            f"expected ciphersuite {expected.name!r}, got {name!r}", field="suite", party=party
        )
    return s


def _ident(value: Any, name: str, party: int | None) -> int:
    if type(value) is not int or not 1 <= value <= MAX_IDENTIFIER:
        raise DecodeError(
            f"identifier must be an integer in [1, {MAX_IDENTIFIER}]", field=name, party=party
        )
    return value


def _commitments_from(
    s: Ciphersuite, obj: Mapping[str, Any], ident: int, prefix: str
) -> SigningCommitments:
    d = point_from(s.group, obj["hiding"], prefix + "hiding", ident)
    e = point_from(s.group, obj["binding"], prefix + "binding", ident)
    return SigningCommitments(s, ident, d, e)
