"""RFC 9591 and ZcashFoundation FROST test vectors, byte for byte, for all three ciphersuites."""

from __future__ import annotations

from typing import Any

import pytest

from mpc import frost, hazmat
from mpc.frost import Ciphersuite
from mpc.groups import Secp256k1Point
from mpc.shamir import KeyPackage, PublicKeyPackage, lagrange_coefficient
from tests.mpc.conftest import independent_verify, load_json

CASES = [
    ("rfc9591/frost-ed25519-sha512.json", "ed25519"),
    ("rfc9591/frost-secp256k1-sha256.json", "secp256k1"),
    ("zcash-frost/frost-ed25519-vectors.json", "ed25519"),
    ("zcash-frost/frost-secp256k1-vectors.json", "secp256k1"),
    ("zcash-frost/frost-secp256k1-tr-vectors.json", "bip340"),
]


def _setup(rel: str, suite_name: str) -> tuple[Ciphersuite, dict[str, Any], dict[int, KeyPackage]]:
    v = load_json(rel)
    suite = frost.ciphersuite(suite_name)
    g = suite.group
    inp = v["inputs"]
    pk = g.decode_point(bytes.fromhex(inp.get("group_public_key") or inp["verifying_key_key"]))
    shares = {
        p["identifier"]: g.decode_scalar(bytes.fromhex(p["participant_share"]))
        for p in inp["participant_shares"]
    }
    verifying = {i: g.base_mul(s) for i, s in shares.items()}
    public = PublicKeyPackage(g, int(v["config"]["MIN_PARTICIPANTS"]), pk, verifying)
    return suite, v, {i: KeyPackage(i, s, public) for i, s in shares.items()}


@pytest.mark.parametrize(("rel", "suite_name"), CASES)
def test_vector_byte_for_byte(rel: str, suite_name: str) -> None:
    suite, v, keys = _setup(rel, suite_name)
    g = suite.group
    public = keys[1].public
    msg = bytes.fromhex(v["inputs"]["message"])
    ids = v["inputs"]["participant_list"]

    # The shares are a sharing of the group key (checked in the exponent, without the secret).
    for subset in (ids, [1, 2], [2, 3]):
        acc = g.sum(
            [public.verifying_shares[i] * lagrange_coefficient(g, i, subset) for i in subset]
        )
        assert acc == public.group_public_key

    # Round one: nonces from the given randomness, commitments.
    nonces: dict[int, frost.SigningNonces] = {}
    for out in v["round_one_outputs"]["outputs"]:
        i = out["identifier"]
        sk = keys[i].signing_share
        d = hazmat.nonce_generate(suite, sk, bytes.fromhex(out["hiding_nonce_randomness"]))
        e = hazmat.nonce_generate(suite, sk, bytes.fromhex(out["binding_nonce_randomness"]))
        assert g.encode_scalar(d).hex() == out["hiding_nonce"]
        assert g.encode_scalar(e).hex() == out["binding_nonce"]
        nonces[i] = frost.SigningNonces.from_scalars(suite, i, d, e)
        assert nonces[i].commitments.hiding.encode().hex() == out["hiding_nonce_commitment"]
        assert nonces[i].commitments.binding.encode().hex() == out["binding_nonce_commitment"]
    assert sorted(nonces) == ids

    # Binding factors (RFC 9591 section 4.4), input and output.
    pkg = frost.signing_package([nonces[i].commitments for i in ids], msg)
    pkg = frost.SigningPackage.from_bytes(pkg.to_bytes(), suite=suite)  # through the wire form
    rho = hazmat.compute_binding_factors(suite, public.group_public_key, pkg.commitments, msg)
    prefix = (
        public.group_public_key.encode()
        + suite.H4(msg)
        + suite.H5(hazmat.encode_group_commitment_list(suite, pkg.commitments))
    )
    for out in v["round_one_outputs"]["outputs"]:
        i = out["identifier"]
        assert (prefix + g.encode_scalar(i)).hex() == out["binding_factor_input"]
        assert g.encode_scalar(rho[i]).hex() == out["binding_factor"]

    # Round two: signature shares; aggregation; the final signature.
    shares = {}
    for out in v["round_two_outputs"]["outputs"]:
        i = out["identifier"]
        shares[i] = frost.sign(pkg, nonces[i], keys[i])
        assert g.encode_scalar(shares[i].share).hex() == out["sig_share"]
        frost.verify_signature_share(pkg, shares[i], public)
    sig = frost.aggregate(pkg, shares, public, verify_shares=True)
    assert sig.hex() == v["final_output"]["sig"]
    assert len(sig) == suite.signature_len
    pk_bytes = suite.encode_public_key(public.group_public_key)
    assert frost.verify(suite, msg, sig, pk_bytes)
    assert frost.verify(suite, msg, sig, public.group_public_key)
    assert not frost.verify(suite, msg + b"!", sig, pk_bytes)
    independent_verify(suite, msg, sig, pk_bytes)


def test_tr_vector_key_is_even_and_signature_is_bip340() -> None:
    suite, v, keys = _setup("zcash-frost/frost-secp256k1-tr-vectors.json", "bip340")
    pk = keys[1].group_public_key
    assert isinstance(pk, Secp256k1Point) and pk.has_even_y()
    assert len(bytes.fromhex(v["final_output"]["sig"])) == 64
