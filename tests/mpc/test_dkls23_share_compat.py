"""Old DKLs23 key shares still load and sign after the hardening of issue 13, item 7.

``tests/mpc/fixtures/dkls23-share-v1-2of3.json`` holds two parties' ``EcdsaKeyShare.to_bytes``
(format v1) written by the code *before* the transcript-derived gadget, the new ``XI`` and
the zero-share re-randomisation (commit 9ab1472; test key material from a throw-away test
keygen, never used by the service). None of those changes touches the share format (the
base OTs are ``KAPPA`` per ordered pair, independent of ``XI``; the zero-share seeds are per
session), so the version stays 1; this test pins that such a share decodes and signs, and
that an unknown version is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cbor2
import coincurve
import pytest

from mpc.dkls23 import (
    EcdsaKeyShare,
    PresignSession,
    combine_signature,
    sign_with_presignature,
)
from mpc.errors import DecodeError
from mpc.testing import MemoryLedger, run_local

DATA = Path(__file__).parent / "fixtures" / "dkls23-share-v1-2of3.json"


def _old() -> tuple[dict[int, bytes], bytes]:
    obj = json.loads(DATA.read_text())
    return {int(i): bytes.fromhex(h) for i, h in obj["shares"].items()}, bytes.fromhex(
        obj["group_public_key"]
    )


def test_v1_shares_written_before_the_hardening_load_and_sign() -> None:
    raw, pk_bytes = _old()
    shares = {i: EcdsaKeyShare.from_bytes(b) for i, b in raw.items()}
    assert all(s.to_bytes() == raw[i] for i, s in shares.items())  # byte-identical format
    assert shares[1].group_public_key.encode() == pk_bytes
    sid = hashlib.sha256(b"old share, new presign").digest()
    pre = run_local({i: PresignSession(shares[i], sid, [1, 2]) for i in (1, 2)})
    digest = hashlib.sha256(b"signed with a v1 share").digest()
    parts = [
        sign_with_presignature(pre[i], shares[i], digest, ledger=MemoryLedger()) for i in (1, 2)
    ]
    sig = combine_signature(pre[1].public, parts, digest, shares[1].group_public_key)
    assert coincurve.PublicKey(pk_bytes).verify(sig.to_der(), digest, hasher=None)


def test_unknown_share_version_refused() -> None:
    raw, _ = _old()
    obj = cbor2.loads(raw[1])
    obj["v"] = 2
    with pytest.raises(DecodeError) as exc:
        EcdsaKeyShare.from_bytes(cbor2.dumps(obj, canonical=True))
    assert exc.value.field == "v"
