"""Our recorded DKG and DKLs23 vectors replay byte for byte; their signatures verify elsewhere.

The files in tests/vectors/own/ are written by scripts/make_own_vectors.py from fixed test
seeds (tests/mpc/own_vectors.py). Here every file is recomputed and compared as text, each
recorded message must decode strictly, every share must match its verifying share, and
every signature is checked by a verifier that is not ours: pynacl and cryptography for
Ed25519, coincurve (libsecp256k1) for BIP-340 and ECDSA.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import coincurve
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from nacl.signing import VerifyKey

from mpc.groups import ED25519, SECP256K1, Group
from mpc.wire import decode
from tests.mpc.own_vectors import VECTORS, build

ROOT = Path(__file__).resolve().parents[2]
OWN = ROOT / "tests" / "vectors" / "own"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((OWN / f"{name}.json").read_text())
    return data


def test_every_vector_file_is_generated() -> None:
    assert {p.stem for p in OWN.glob("*.json")} == set(VECTORS)
    assert any(n.startswith("dkg-") for n in VECTORS)
    assert any(n.startswith("dkls23-presign-") for n in VECTORS)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_replays_byte_for_byte(name: str) -> None:
    text = json.dumps(build(name), indent=1, sort_keys=True) + "\n"
    assert text == (OWN / f"{name}.json").read_text()


def _check_transcript(rounds: dict[str, list[str]], protocol: str, count: dict[str, int]) -> None:
    assert {r: len(m) for r, m in rounds.items()} == count
    for r, msgs in rounds.items():
        for h in msgs:
            m = decode(bytes.fromhex(h), protocol=protocol)
            assert m.round == int(r)


def _check_shares(group: Group, outputs: dict[str, Any]) -> None:
    vs = outputs["verifying_shares"]
    assert set(vs) == set(outputs["signing_shares"])
    for i, sk in outputs["signing_shares"].items():
        point = group.base_mul(group.decode_scalar(bytes.fromhex(sk)))
        assert point.encode().hex() == vs[i]


@pytest.mark.parametrize("name", sorted(n for n in VECTORS if n.startswith("dkg-")))
def test_dkg_vector_is_consistent_and_its_signature_verifies(name: str) -> None:
    v = load(name)
    t, n = v["inputs"]["t"], v["inputs"]["n"]
    group = ED25519 if v["inputs"]["group"] == "ed25519" else SECP256K1
    _check_transcript(v["dkg"]["rounds"], "frost-dkg", {"1": n, "2": n * (n - 1)})
    _check_shares(group, v["outputs"])
    assert len(v["signature"]["signers"]) == t
    sig = bytes.fromhex(v["signature"]["signature"])
    msg = bytes.fromhex(v["signature"]["message"])
    pk = bytes.fromhex(v["signature"]["public_key"])
    if group is ED25519:
        assert pk.hex() == v["outputs"]["group_public_key"]
        VerifyKey(pk).verify(msg, sig)  # raises on a bad signature
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
    else:
        assert v["signature"]["suite"] == "bip340" and len(sig) == 64
        assert pk.hex() == v["outputs"]["group_public_key"][2:]  # x-only
        assert coincurve.PublicKeyXOnly(pk).verify(sig, msg)
        assert not coincurve.PublicKeyXOnly(pk).verify(sig, msg + b"!")


@pytest.mark.parametrize("name", sorted(n for n in VECTORS if n.startswith("dkls23-")))
def test_dkls23_vector_is_consistent_and_its_signature_verifies(name: str) -> None:
    v = load(name)
    n, signers = v["inputs"]["n"], v["inputs"]["signers"]
    _check_transcript(v["dkg"]["rounds"], "frost-dkg", {"1": n, "2": n * (n - 1)})
    pairs = n * (n - 1)
    _check_transcript(v["ot_setup"]["rounds"], "dkls23-setup", {str(r): pairs for r in range(1, 6)})
    k = len(signers)
    _check_transcript(
        v["presign"]["rounds"], "dkls23-presign", {"1": k * (k - 1), "2": k * (k - 1)}
    )
    _check_shares(SECP256K1, v["outputs"])
    pk = bytes.fromhex(v["outputs"]["group_public_key"])
    digest = bytes.fromhex(v["signature"]["message_hash"])
    der = bytes.fromhex(v["signature"]["der"])
    compact = bytes.fromhex(v["signature"]["compact"])
    assert coincurve.PublicKey(pk).verify(der, digest, hasher=None)
    recovered = coincurve.PublicKey.from_signature_and_message(compact, digest, hasher=None)
    assert recovered.format() == pk
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), pk)
    key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))  # raises on a bad signature
    assert compact[:32].hex() == v["presign"]["R"][2:]  # r is the x of the presigned R


def test_the_service_never_reads_our_vectors() -> None:
    users = []
    for folder in ("mpc", "api", "custody", "signer-nodes", "hsm", "payments"):
        for path in (ROOT / folder).rglob("*.py"):
            if "vectors/own" in path.read_text() or "own_vectors" in path.read_text():
                users.append(str(path.relative_to(ROOT)))
    assert users == []
