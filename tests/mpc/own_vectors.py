"""Our own recorded vectors for the DKG and DKLs23 presigning: how they are computed.

Every random draw of every party comes from :func:`mpc.testing.seeded_rng` (set with
:func:`mpc.hazmat.set_rng`), so a run is a pure function of its seed. ``build`` returns
the whole record: inputs (seed, session ids, sizes), every round's wire messages as hex
(canonical CBOR of :func:`mpc.wire.encode`, in delivery order), the resulting public key
and verifying shares, each party's *test* signing share, and a final signature.

``scripts/make_own_vectors.py`` writes these records to ``tests/vectors/own/``;
``tests/mpc/test_own_vectors.py`` recomputes them and compares byte for byte. Fixed seeds
are acceptable here only: these are test fixtures, never used by the service.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from mpc import dkls23, frost, hazmat
from mpc.dkg import DkgSession
from mpc.groups import ED25519, SECP256K1, Group
from mpc.session import RoundSession
from mpc.shamir import KeyPackage, PublicKeyPackage
from mpc.testing import MemoryLedger, run_local, seeded_rng
from mpc.wire import Message, encode

FORMAT = "tpwc-own-vector-v1"
MESSAGE = b"TP Wallet Custody own test vector"

# name -> (kind, parameters)
VECTORS: dict[str, dict[str, Any]] = {
    "dkg-ed25519-2of3": {"kind": "dkg", "group": "ed25519", "t": 2, "n": 3, "signers": [1, 3]},
    "dkg-secp256k1-3of5": {
        "kind": "dkg",
        "group": "secp256k1",
        "t": 3,
        "n": 5,
        "signers": [2, 4, 5],
    },
    "dkls23-presign-2of3": {"kind": "dkls23", "t": 2, "n": 3, "signers": [1, 3]},
}


def _seed(name: str) -> bytes:
    return hashlib.sha256(b"TPWC own vectors/" + name.encode()).digest()


def _sub(seed: bytes, label: str, party: int | None = None) -> bytes:
    tail = b"" if party is None else party.to_bytes(2, "big")
    return hashlib.sha256(seed + b"/" + label.encode() + tail).digest()


def _run(
    sessions: Mapping[int, RoundSession[Any]], seed: bytes, label: str
) -> tuple[dict[int, Any], dict[str, list[str]]]:
    """Run with party ``i`` drawing from ``seeded_rng(_sub(seed, label, i))``; record."""
    for i, s in sessions.items():
        hazmat.set_rng(s, seeded_rng(_sub(seed, label, i)))
    rounds: dict[str, list[str]] = {}

    def record(m: Message) -> Message:
        rounds.setdefault(str(m.round), []).append(encode(m).hex())
        return m

    return run_local(sessions, wire=True, tamper=record), rounds


def _public(pub: PublicKeyPackage) -> dict[str, Any]:
    return {
        "group_public_key": pub.group_public_key.encode().hex(),
        "verifying_shares": {
            str(i): p.encode().hex() for i, p in sorted(pub.verifying_shares.items())
        },
    }


def _shares(group: Group, keys: Mapping[int, KeyPackage]) -> dict[str, str]:
    return {str(i): group.encode_scalar(k.signing_share).hex() for i, k in sorted(keys.items())}


def _dkg(
    seed: bytes, group: Group, t: int, n: int, label: str
) -> tuple[dict[int, KeyPackage], Any]:
    sid = _sub(seed, label + "/session")
    ids = list(range(1, n + 1))
    sessions = {i: DkgSession(group, sid, i, ids, t, context=b"own-vector") for i in ids}
    keys, rounds = _run(sessions, seed, label)
    return keys, {"session_id": sid.hex(), "context": b"own-vector".hex(), "rounds": rounds}


def _frost_signature(
    seed: bytes, suite: frost.Ciphersuite, keys: Mapping[int, KeyPackage], signers: list[int]
) -> dict[str, Any]:
    """RFC 9591 sections 5.1-5.3 with nonces from ``nonce_generate`` on seeded randomness."""
    nonces, comms = {}, {}
    for i in signers:
        rng = seeded_rng(_sub(seed, "frost-nonces", i))
        sk = keys[i].signing_share
        d = hazmat.nonce_generate(suite, sk, rng(32))
        e = hazmat.nonce_generate(suite, sk, rng(32))
        nonces[i] = frost.SigningNonces.from_scalars(suite, i, d, e)
        comms[i] = nonces[i].commitments
    pkg = frost.signing_package(comms, MESSAGE)
    shares = {i: frost.sign(pkg, nonces[i], keys[i]) for i in signers}
    public = keys[signers[0]].public
    sig = frost.aggregate(pkg, shares, public, verify_shares=True)
    return {
        "suite": suite.name,
        "signers": signers,
        "message": MESSAGE.hex(),
        "commitments": {str(i): comms[i].to_bytes().hex() for i in signers},
        "shares": {str(i): shares[i].to_bytes().hex() for i in signers},
        "public_key": suite.encode_public_key(public.group_public_key).hex(),
        "signature": sig.hex(),
    }


def build_dkg(name: str, group_name: str, t: int, n: int, signers: list[int]) -> dict[str, Any]:
    seed = _seed(name)
    group = {"ed25519": ED25519, "secp256k1": SECP256K1}[group_name]
    keys, transcript = _dkg(seed, group, t, n, "dkg")
    publics = [_public(k.public) for k in keys.values()]
    assert all(p == publics[0] for p in publics), "parties disagree on the public key package"
    suite = frost.ciphersuite("ed25519" if group is ED25519 else "bip340")
    return {
        "format": FORMAT,
        "name": name,
        "protocol": "frost-dkg",
        "inputs": {"seed": seed.hex(), "group": group_name, "t": t, "n": n},
        "dkg": transcript,
        "outputs": {**publics[0], "signing_shares": _shares(group, keys)},
        "signature": _frost_signature(seed, suite, keys, signers),
    }


def build_dkls23(name: str, t: int, n: int, signers: list[int]) -> dict[str, Any]:
    seed = _seed(name)
    keys, dkg_transcript = _dkg(seed, SECP256K1, t, n, "dkg")
    sid_setup = _sub(seed, "ot-setup/session")
    shares, setup_rounds = _run(
        {i: dkls23.OtSetupSession(k, sid_setup) for i, k in keys.items()}, seed, "ot-setup"
    )
    sid_pre = _sub(seed, "presign/session")
    presigs, pre_rounds = _run(
        {i: dkls23.PresignSession(shares[i], sid_pre, signers) for i in signers}, seed, "presign"
    )
    public = presigs[signers[0]].public
    digest = hashlib.sha256(MESSAGE).digest()
    partials = [  # each signer has its own ledger (one per node)
        dkls23.sign_with_presignature(presigs[i], shares[i], digest, ledger=MemoryLedger())
        for i in signers
    ]
    pk = keys[1].public.group_public_key
    sig = dkls23.combine_signature(public, partials, digest, pk)
    return {
        "format": FORMAT,
        "name": name,
        "protocol": "dkls23",
        "inputs": {"seed": seed.hex(), "t": t, "n": n, "signers": signers},
        "dkg": dkg_transcript,
        "ot_setup": {
            "session_id": sid_setup.hex(),
            "rounds": setup_rounds,
            # the OT seeds are large: the whole key share of each party, by digest
            "key_share_sha256": {
                str(i): hashlib.sha256(s.to_bytes()).hexdigest() for i, s in sorted(shares.items())
            },
        },
        "presign": {
            "session_id": sid_pre.hex(),
            "rounds": pre_rounds,
            "presignature_id": public.presignature_id.hex(),
            "R": public.R.encode().hex(),
        },
        "outputs": {
            **_public(keys[1].public),
            "signing_shares": _shares(SECP256K1, keys),
            "key_id": shares[1].key_id.hex(),
        },
        "signature": {
            "message_hash": digest.hex(),
            "partials": {str(p.sender): p.to_bytes().hex() for p in partials},
            "der": sig.to_der().hex(),
            "compact": sig.to_compact().hex(),
        },
    }


BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {"dkg": build_dkg, "dkls23": build_dkls23}


def build(name: str) -> dict[str, Any]:
    params = dict(VECTORS[name])
    kind = params.pop("kind")
    if kind == "dkg":
        return build_dkg(name, params["group"], params["t"], params["n"], params["signers"])
    return build_dkls23(name, params["t"], params["n"], params["signers"])
