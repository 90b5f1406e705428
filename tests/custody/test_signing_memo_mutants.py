"""custody.signing's remembered PSBT decoding: bounded, used, and never a different answer.

A ``btc-psbt`` request of k inputs reaches a node as k items that each carry the same PSBT;
``decode_request`` remembers the decoding (``_decode_psbt``, an LRU cache) so the node
decodes it once. The cache is bounded by entry count and by the size of what it keeps
(PSBTs of at most ``_PSBT_MEMO_CHARS`` base64 characters): a larger one is decoded
directly every time, with the same result. These tests answer the survivors of
``custody/signing.py`` that docs/MUTATION.md first listed as equivalent (issue 16).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from custody import signing
from custody.signing import SignRequestError, decode_request
from mpc import frost
from mpc.groups import SECP256K1
from tests.custody.kinds.btc_build import b64, build_psbt
from tests.custody.test_signing_limits import req
from tests.mpc.conftest import dealer_split_for_tests


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    signing._decode_psbt.cache_clear()
    yield
    signing._decode_psbt.cache_clear()


def _internal_key() -> bytes:
    shares = dealer_split_for_tests(SECP256K1, 2, 3)
    return frost.ciphersuite("bip340").encode_public_key(shares[1].public.group_public_key)


def _psbt(internal: bytes, *, data: int = 0) -> dict[str, str]:
    """A one-input PSBT paying a P2WPKH output, with an ``OP_RETURN`` of ``data`` bytes."""
    outs = [(b"\x00\x14" + bytes(20), 500)]
    if data:
        outs.insert(0, (b"\x6a" + bytes(data), 0))
    ins = [(secrets.token_bytes(32), 0, 1_000, 0)]
    return b64(build_psbt(internal, ins, outs))


def _request(payload: Any) -> dict[str, Any]:
    return req("btc-psbt", payload=payload, network="testnet")


def test_the_items_of_one_psbt_request_decode_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    internal = _internal_key()
    r = _request(_psbt(internal))
    calls: list[str] = []
    real = signing._decode

    def counting(kind: str, *args: Any) -> Any:
        calls.append(kind)
        return real(kind, *args)

    monkeypatch.setattr(signing, "_decode", counting)
    first = decode_request("bip340", r, public_key=internal)
    again = decode_request("bip340", dict(r), public_key=internal)
    assert again is first and len(first.messages) == 1
    assert calls == ["btc-psbt"]
    assert signing._decode_psbt.cache_info().hits == 1


def test_only_psbts_up_to_96_kib_of_base64_are_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache's memory bound: its entries keep PSBTs of at most 96 KiB base64 each."""
    assert signing._PSBT_MEMO_CHARS == 96 * 1024
    remembered: list[int] = []

    def recording(scheme: str, psbt: str, public_key: bytes, network: str) -> Any:
        remembered.append(len(psbt))
        return signing._decode("btc-psbt", {"psbt": psbt}, scheme, public_key, network)

    monkeypatch.setattr(signing, "_decode_psbt", recording)
    internal = _internal_key()
    for size in (96 * 1024, 96 * 1024 + 1):  # not base64 of a PSBT: refused either way
        with pytest.raises(SignRequestError) as exc:
            decode_request("bip340", _request({"psbt": "A" * size}), public_key=internal)
        assert exc.value.field == "payload.psbt"
    assert remembered == [96 * 1024]


def test_a_psbt_above_the_memo_bound_decodes_directly_with_its_key() -> None:
    """Past the bound the same decoder runs, with the same key: the same intent, not kept."""
    internal = _internal_key()
    payload = _psbt(internal, data=80_000)
    assert len(payload["psbt"]) > signing._PSBT_MEMO_CHARS
    intent = decode_request("bip340", _request(payload), public_key=internal)
    assert len(intent.messages) == 1 and len(intent.messages[0]) == 32
    assert signing._decode_psbt.cache_info().currsize == 0
    small = _psbt(internal)
    assert len(decode_request("bip340", _request(small), public_key=internal).messages) == 1
    assert signing._decode_psbt.cache_info().currsize == 1
