"""Fuzz every decoder in mpc: random and mutated bytes only ever raise the typed errors.

Each decoder gets ~200 hypothesis examples of random bytes, random canonical CBOR values
and (where a valid encoding is at hand) byte-level mutations of a valid encoding. Allowed
outcomes: success, :class:`~mpc.errors.DecodeError`, or :class:`~mpc.errors.EncodingError`
where a decoder documents it. Protocol sessions fed garbage payloads may also raise
:class:`~mpc.errors.ProtocolError` (a well-formed but wrong proof or share is blamed).

To add a decoder: append ``(name, function bytes -> object, [valid encodings])`` to
``DECODERS``: wire, key IO, every FROST type of every suite and the DKLs23 types, each
seeded with valid encodings so that mutations reach past the CBOR layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc import dkls23, frost, testing
from mpc.dealer import split_existing_key
from mpc.dkg import PROTOCOL, DkgSession
from mpc.errors import DecodeError, EncodingError, MpcError, ProtocolError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.keyio import (
    decode_key_package,
    decode_public_key_package,
    encode_key_package,
    encode_public_key_package,
)
from mpc.testing import run_local
from mpc.wire import Message, cbor_dumps, decode, encode
from tests.mpc.conftest import dealer_split_for_tests

FUZZ = settings(
    max_examples=50 if os.environ.get("CUSTODY_SLOW_SHORT") == "1" else 200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TYPED = (DecodeError, EncodingError)

# -- inputs ------------------------------------------------------------------------------

cbor_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**66), 2**66),
    st.binary(max_size=70),
    st.text(max_size=20),
    st.sampled_from([b"\x02" + bytes(32), bytes(32), b"\xff" * 32, "ed25519", "secp256k1"]),
)
cbor_value = st.recursive(
    cbor_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-3, 300)), inner, max_size=4),
    ),
    max_leaves=8,
)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid encoding with a few byte edits, a truncation or an extension."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "add"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


def inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    parts = [st.binary(max_size=300), cbor_value.map(cbor_dumps)]
    if seeds:
        parts.append(mutated(seeds))
    return st.one_of(*parts)


# -- the decoders --------------------------------------------------------------------------


def _packages(group: Group) -> tuple[bytes, bytes]:
    kp = split_existing_key(group, group.random_scalar(), 2, [1, 2, 3])[0]
    return encode_key_package(kp), encode_public_key_package(kp.public)


_KP_ED, _PUB_ED = _packages(ED25519)
_KP_K1, _PUB_K1 = _packages(SECP256K1)
_MSG = encode(Message(PROTOCOL, bytes(32), 1, 2, None, {"share": bytes(32), "echo": [b"x"]}))

DECODERS: list[tuple[str, Callable[[bytes], object], list[bytes]]] = [
    ("wire.decode", decode, [_MSG]),
    ("keyio.decode_key_package", decode_key_package, [_KP_ED, _KP_K1]),
    ("keyio.decode_public_key_package", decode_public_key_package, [_PUB_ED, _PUB_K1]),
]


def _frost_seeds(name: str) -> dict[str, list[bytes]]:
    """Valid encodings of every FROST wire/storage type, to mutate."""
    suite = frost.ciphersuite(name)
    keys = dealer_split_for_tests(suite.group, 2, 3)
    (n1, c1), (n2, c2) = frost.commit(suite, keys[1]), frost.commit(suite, keys[2])
    pkg = frost.signing_package([c1, c2], b"\x00fuzz")
    share = frost.sign(pkg, n1, keys[1])
    return {
        "SigningCommitments": [c1.to_bytes(), c2.to_bytes()],
        "SigningNonces": [n2.to_bytes()],
        "SigningPackage": [pkg.to_bytes()],
        "SignatureShare": [share.to_bytes()],
    }


def _dkls_seeds() -> dict[str, list[bytes]]:
    """Valid encodings of the DKLs23 key share, presignature and partial signature."""
    shares = testing.run_keygen_local(2, 3)
    sid = bytes(range(32))
    sessions = {i: dkls23.PresignSession(shares[i], sid, (1, 2)) for i in (1, 2)}
    presigs = run_local(sessions)
    stored = presigs[1].to_bytes()
    partial = dkls23.sign_with_presignature(
        presigs[1], shares[1], bytes(32), ledger=testing.MemoryLedger()
    )
    return {
        "EcdsaKeyShare": [shares[1].to_bytes()],
        "Presignature": [stored],
        "PartialSignature": [partial.to_bytes()],
    }


for _suite in ("ed25519", "secp256k1", "bip340"):
    _suite_obj = frost.ciphersuite(_suite)
    for _cls_name, _blobs in _frost_seeds(_suite).items():
        _cls = getattr(frost, _cls_name)

        def _frost_call(data: bytes, _c: Any = _cls, _s: Any = _suite_obj) -> object:
            return _c.from_bytes(data, suite=_s, party=1)

        DECODERS.append((f"frost.{_suite}.{_cls_name}", _frost_call, _blobs))

_DKLS = _dkls_seeds()
DECODERS += [
    ("dkls23.EcdsaKeyShare", dkls23.EcdsaKeyShare.from_bytes, _DKLS["EcdsaKeyShare"]),
    ("dkls23.Presignature", dkls23.Presignature.from_bytes, _DKLS["Presignature"]),
    (
        "dkls23.PartialSignature",
        lambda data: dkls23.PartialSignature.from_bytes(data, sender=1),
        _DKLS["PartialSignature"],
    ),
]


@pytest.mark.parametrize("name,fn,seeds", DECODERS, ids=[d[0] for d in DECODERS])
def test_decoder_raises_only_typed_errors(
    name: str, fn: Callable[[bytes], object], seeds: list[bytes]
) -> None:
    @FUZZ
    @given(data=inputs(seeds))
    def run(data: bytes) -> None:
        try:
            fn(data)
        except TYPED:
            pass

    run()


# -- the DKG session fed garbage payloads ------------------------------------------------


def _payload_strategy(valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Garbage maps, and valid payloads with one field replaced or byte-mutated."""

    @st.composite
    def edit_one(draw: st.DrawFn) -> dict[str, Any]:
        p = dict(valid)
        key = draw(st.sampled_from(sorted(p)))
        value = p[key]
        if isinstance(value, list) and value and draw(st.booleans()):
            value = list(value)
            k = draw(st.integers(0, len(value) - 1))
            value[k] = draw(st.one_of(cbor_leaf, mutated([value[k]])))
        elif isinstance(value, bytes) and draw(st.booleans()):
            value = draw(mutated([value]))
        else:
            value = draw(cbor_value)
        p[key] = value
        return p

    return st.one_of(edit_one(), st.dictionaries(st.text(max_size=12), cbor_value, max_size=4))


def _fresh(group: Group) -> tuple[dict[int, DkgSession], dict[int, Message]]:
    sid = os.urandom(32)
    s = {i: DkgSession(group, sid, i, [1, 2, 3], 2) for i in (1, 2, 3)}
    return s, {i: s[i].start()[0] for i in s}


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
def test_dkg_round1_garbage(group: Group) -> None:
    _, r1 = _fresh(group)

    @FUZZ
    @given(payload=_payload_strategy(dict(r1[2].payload)))
    def run(payload: Any) -> None:
        s, msgs = _fresh(group)
        s[1].receive(msgs[3])
        try:
            s[1].receive(replace(msgs[2], payload=payload))
        except (DecodeError, ProtocolError):
            assert s[1]._error is not None
        except MpcError as exc:  # any other typed error is a bug here
            raise AssertionError(f"unexpected {type(exc).__name__}: {exc}") from exc

    run()


@pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)
def test_dkg_round2_garbage(group: Group) -> None:
    def to_round2() -> tuple[dict[int, DkgSession], dict[tuple[int, int], Message]]:
        s, r1 = _fresh(group)
        out: list[Message] = []
        for i in s:
            for j in s:
                if j != i:
                    out += s[j].receive(r1[i])
        return s, {(m.sender, m.recipient or 0): m for m in out}

    _, sample = to_round2()

    @FUZZ
    @given(payload=_payload_strategy(dict(sample[(2, 1)].payload)))
    def run(payload: Any) -> None:
        s, r2 = to_round2()
        s[1].receive(r2[(3, 1)])
        try:
            s[1].receive(replace(r2[(2, 1)], payload=payload))
        except (DecodeError, ProtocolError):
            assert s[1]._error is not None
        except MpcError as exc:
            raise AssertionError(f"unexpected {type(exc).__name__}: {exc}") from exc

    run()
