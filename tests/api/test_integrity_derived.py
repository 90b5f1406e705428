"""api.integrity for derived signatures (issue 13): a stored signature made under the child
at the body's ``derivation_path`` verifies under that child only, re-derived from the key's
public values; another path, the root key, or a row without the key's public values fail."""

from __future__ import annotations

from api.integrity import stored_signature_ok
from custody.signing import derive_public, encode_public_key, message_to_sign, root_chain_code
from mpc import frost, hd
from mpc.groups import SECP256K1
from mpc.testing import run_dkg_local
from tests.mpc.conftest import sign_with


def test_a_derived_signature_verifies_under_its_own_child_only() -> None:
    keys = {k.identifier: k for k in run_dkg_local(SECP256K1, 2, 3)}
    root = keys[1].public
    body = {
        "id": "sr-1",
        "key_id": "kd",
        "kind": "message",
        "payload": {"message": "0x6869"},
        "derivation_path": "m/0/7",
    }
    cc = root_chain_code(root, "kd")
    child = {i: hd.derive_key_package(k, cc, (0, 7)) for i, k in keys.items()}
    sig = sign_with(frost.ciphersuite("bip340"), child, [1, 2], message_to_sign("bip340", body))
    pk = encode_public_key("bip340", root.group_public_key).hex()
    info = {
        "id": "kd",
        "threshold": 2,
        "verifying_shares": {str(i): p.encode().hex() for i, p in root.verifying_shares.items()},
    }
    row = {"body": body, "signature": sig.hex(), "recovery_id": None}
    assert stored_signature_ok("bip340", pk, row, info)
    assert not stored_signature_ok("bip340", pk, row)  # no public values: never verifies
    other = {**row, "body": {**body, "derivation_path": "m/0/8"}}
    assert not stored_signature_ok("bip340", pk, other, info)
    no_path = {**row, "body": {k: v for k, v in body.items() if k != "derivation_path"}}
    assert not stored_signature_ok("bip340", pk, no_path, info)
    assert not stored_signature_ok("bip340", pk, row, {**info, "id": "another-key"})
    child_pk = encode_public_key("bip340", derive_public(root, "kd", (0, 7)).group_public_key)
    assert child_pk.hex() != pk
