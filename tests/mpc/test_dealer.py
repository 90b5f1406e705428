"""Dealer import (mpc.dealer): RFC 9591 vectors byte for byte, and split_existing_key."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from mpc.dealer import secret_share_shard, split_existing_key, trusted_dealer_keygen
from mpc.errors import UsageError
from mpc.groups import ED25519, SECP256K1, Group
from mpc.shamir import lagrange_coefficient

# vendored copies, checked against tests/vectors/SHA256SUMS
VECTORS = Path(__file__).resolve().parents[1] / "vectors"
FILES = [
    ("rfc9591/frost-ed25519-sha512.json", ED25519),
    ("rfc9591/frost-secp256k1-sha256.json", SECP256K1),
    ("zcash-frost/frost-ed25519-vectors.json", ED25519),
    ("zcash-frost/frost-secp256k1-vectors.json", SECP256K1),
]
gid = pytest.mark.parametrize("group", [ED25519, SECP256K1], ids=lambda g: g.name)


def scalar(group: Group, hexstr: str) -> int:
    return group.decode_scalar(bytes.fromhex(hexstr))


@pytest.mark.parametrize("rel,group", FILES, ids=[f for f, _ in FILES])
def test_trusted_dealer_keygen_matches_vectors(rel: str, group: Group) -> None:
    v = json.loads((VECTORS / rel).read_text())
    cfg, inp = v["config"], v["inputs"]
    secret = scalar(group, inp["group_secret_key"])
    coeffs = [scalar(group, c) for c in inp["share_polynomial_coefficients"]]
    shares, group_key, commitment = trusted_dealer_keygen(
        group,
        secret,
        int(cfg["MAX_PARTICIPANTS"]),
        int(cfg["MIN_PARTICIPANTS"]),
        coefficients=coeffs,
    )
    expected = {p["identifier"]: p["participant_share"] for p in inp["participant_shares"]}
    assert {i: group.encode_scalar(s).hex() for i, s in shares} == expected
    pk_hex = inp.get("group_public_key") or inp["verifying_key_key"]
    assert group_key.encode().hex() == pk_hex
    assert len(commitment) == int(cfg["MIN_PARTICIPANTS"])


@gid
@pytest.mark.parametrize("t,n", [(2, 3), (3, 5), (4, 7)])
def test_split_existing_key(group: Group, t: int, n: int) -> None:
    secret = group.random_scalar()
    pkgs = split_existing_key(group, secret, t, list(range(1, n + 1)))
    pub = pkgs[0].public
    assert pub.group_public_key == group.base_mul(secret)
    assert all(kp.public is pub for kp in pkgs)
    for kp in pkgs:
        assert group.base_mul(kp.signing_share) == kp.verifying_share
    shares = {kp.identifier: kp.signing_share for kp in pkgs}
    ids = sorted(shares)
    for subset in itertools.combinations(ids, t):
        # Reconstruction is allowed here only: this is the dealer-import path under test.
        rec = sum(lagrange_coefficient(group, i, subset) * shares[i] for i in subset)
        assert rec % group.order == secret
        y = group.sum(
            [pub.verifying_shares[i] * lagrange_coefficient(group, i, subset) for i in subset]
        )
        assert y == pub.group_public_key
    fewer = ids[: t - 1]
    if len(fewer) >= 2:
        rec = sum(lagrange_coefficient(group, i, fewer) * shares[i] for i in fewer)
        assert rec % group.order != secret


@gid
def test_deterministic_rng_and_arbitrary_ids(group: Group) -> None:
    r1, r2 = random.Random(5), random.Random(5)
    ids = [9, 4, 1000]
    a = split_existing_key(group, 77, 2, ids, rng=lambda: r1.randrange(1, group.order))
    b = split_existing_key(group, 77, 2, ids, rng=lambda: r2.randrange(1, group.order))
    assert [k.signing_share for k in a] == [k.signing_share for k in b]
    assert [k.identifier for k in a] == ids


@gid
def test_secret_not_in_repr(group: Group) -> None:
    secret = group.random_scalar()
    kp = split_existing_key(group, secret, 2, [1, 2, 3])[0]
    text = repr(kp)
    assert str(secret) not in text and str(kp.signing_share) not in text
    assert group.encode_scalar(kp.signing_share).hex() not in text


@gid
@pytest.mark.parametrize(
    "args",
    [
        {"secret": 0},
        {"secret": -1},
        {"secret": "order"},
        {"threshold": 1},
        {"threshold": 4},
        {"participants": [1, 1, 2]},
        {"participants": [0, 1, 2]},
        {"rng": "zero"},
    ],
)
def test_bad_input_refused(group: Group, args: dict[str, object]) -> None:
    kw: dict[str, object] = {"secret": 5, "threshold": 2, "participants": [1, 2, 3]}
    kw.update(args)
    if kw["secret"] == "order":  # noqa: S105 (a marker, not a password)
        kw["secret"] = group.order
    rng = (lambda: group.order) if kw.pop("rng", None) == "zero" else None
    with pytest.raises(UsageError):
        split_existing_key(
            group,
            kw["secret"],
            kw["threshold"],
            kw["participants"],  # type: ignore[arg-type]
            rng=rng,
        )


def test_rfc_dealer_input_checks() -> None:
    with pytest.raises(UsageError):
        trusted_dealer_keygen(ED25519, 5, 3, 2, coefficients=[1, 2])
    with pytest.raises(UsageError):
        trusted_dealer_keygen(ED25519, 0, 3, 2)
    with pytest.raises(UsageError):
        secret_share_shard(ED25519, 0, [0], [1, 2])  # all-zero polynomial: zero shares
