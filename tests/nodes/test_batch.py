"""Batch signing endpoints (NODE_API.md v1.3): every item is checked alone and fails alone
with its own problem document; the good items' marks share one durable commit; a nonce or
presignature named twice in one batch is refused the second time; SIGKILL before or after
the batch's commit never lets a nonce be used twice. Signatures are checked by pynacl and
coincurve."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

import httpx
import pytest
from coincurve import PublicKey
from fastapi.testclient import TestClient
from nacl.signing import VerifyKey

from custody.nodeauth import sign_headers
from custody.signing import message_to_sign
from mpc import dkls23, frost
from mpc.groups import SECP256K1
from tests.nodes.conftest import Coordinator, InProc, NodeRefused, public_package


def _post(client: TestClient, inproc: InProc, path: str, body: Any) -> httpx.Response:
    raw = json.dumps(body).encode()
    headers = {
        **sign_headers(inproc.key, "POST", path, raw, recipient=client.app.state.node_id),
        "content-type": "application/json",
    }
    return client.post(path, content=raw, headers=headers)


def _package(scheme: str, comms: dict[int, dict[str, str]], msg: bytes) -> str:
    suite = frost.ciphersuite(scheme)
    return (
        frost.signing_package(
            [
                frost.SigningCommitments.from_bytes(bytes.fromhex(c["commitments"]), suite=suite)
                for c in comms.values()
            ],
            msg,
        )
        .to_bytes()
        .hex()
    )


@pytest.mark.parametrize("scheme", ["ed25519", "bip340"])
def test_frost_batch_bad_items_fail_alone(inproc: InProc, scheme: str) -> None:
    from signer_nodes.service import create_app

    res = inproc.dkg(scheme, "bk")
    public = public_package(res, scheme)
    suite = frost.ciphersuite(scheme)
    n1, n2 = inproc.nodes[1], inproc.nodes[2]
    c1 = n1.frost_commitments("bk", 5)
    c2 = n2.frost_commitments("bk", 5)
    reqs = [
        {"id": f"b{i}", "key_id": "bk", "kind": "raw", "message": f"{i:02x}" * 8} for i in range(5)
    ]
    pkgs = [
        _package(scheme, {1: c1[i], 2: c2[i]}, message_to_sign(scheme, reqs[i])) for i in range(5)
    ]

    def item(i: int, comm: dict[str, str], **over: Any) -> dict[str, Any]:
        return {
            "key_id": "bk",
            "nonce_id": comm["nonce_id"],
            "request": reqs[i],
            "signing_package": pkgs[i],
            **over,
        }

    # nonce 1 of node 1 is used before the batch (by a single sign)
    n1.frost_sign(
        "bk", c1[1]["nonce_id"], reqs[1], bytes.fromhex(pkgs[1]), coordinator_verified=True
    )
    other = {**reqs[2], "message": "ff" * 8}  # request whose message is not the package's
    batch1 = [
        item(0, c1[0]),  # good
        item(1, c1[1]),  # nonce used already
        item(2, c1[2], request=other),  # message mismatch
        item(
            3, c1[3], key_id="no-such-key", request={**reqs[3], "key_id": "no-such-key"}
        ),  # unknown key
        item(4, c1[4]),  # good
        item(0, c1[0]),  # same nonce again in the batch
        "not an object",
    ]
    commits = n1.store.commits
    with TestClient(create_app(n1)) as client:
        r = _post(client, inproc, "/v1/frost/sign-batch", {"items": batch1})
        assert r.status_code == 200, r.text
        out = r.json()["results"]
        assert len(out) == len(batch1)
        assert n1.store.commits == commits + 1  # the two good marks: one durable commit
        kinds = [o["problem"]["type"].rsplit(":", 1)[1] if "problem" in o else "ok" for o in out]
        assert kinds == [
            "ok",
            "nonce-used",
            "message-mismatch",
            "unknown-key",
            "ok",
            "nonce-used",
            "bad-request",
        ]
        assert [o["problem"]["status"] for o in out if "problem" in o] == [409, 403, 404, 409, 422]
        assert "earlier item of this batch" in out[5]["problem"]["detail"]
        # malformed batches are refused as a whole, unsigned ones too
        assert _post(client, inproc, "/v1/frost/sign-batch", {"items": []}).status_code == 422
        assert _post(client, inproc, "/v1/frost/sign-batch", {"items": {}}).status_code == 422
        unsigned = client.post("/v1/frost/sign-batch", json={"items": batch1[:1]})
        assert unsigned.status_code == 401
    with TestClient(create_app(n2)) as client:
        r2 = _post(
            client, inproc, "/v1/frost/sign-batch", {"items": [item(0, c2[0]), item(4, c2[4])]}
        )
        out2 = r2.json()["results"]
    vk = VerifyKey(bytes.fromhex(res["public_key"]))
    for i, mine, theirs in ((0, out[0], out2[0]), (4, out[4], out2[1])):
        sig = frost.aggregate(
            frost.SigningPackage.from_bytes(bytes.fromhex(pkgs[i]), suite=suite),
            [
                frost.SignatureShare.from_bytes(bytes.fromhex(s["signature_share"]), suite=suite)
                for s in (mine, theirs)
            ],
            public,
        )
        msg = message_to_sign(scheme, reqs[i])
        if scheme == "ed25519":
            vk.verify(msg, sig)
        else:
            from coincurve import PublicKeyXOnly

            assert PublicKeyXOnly(bytes.fromhex(res["public_key"])).verify(sig, msg)
    # refused before the nonce was touched: the mismatched and unknown-key items' nonces
    # are still outstanding (in memory), the used and signed ones are released
    assert [n1.shares.pool.get(c1[i]["nonce_id"]) is None for i in range(5)] == [
        True,
        True,
        False,
        False,
        True,
    ]


def test_ecdsa_batch_bad_items_fail_alone(inproc: InProc) -> None:
    from signer_nodes.service import create_app

    key = inproc.dkg("ecdsa-secp256k1", "ek")
    pres = []
    for _ in range(2):
        spec = {
            "session_id": secrets.token_hex(32),
            "kind": "ecdsa-presign",
            "key_id": "ek",
            "scheme": "ecdsa-secp256k1",
            "threshold": 2,
            "participants": [1, 2],
        }
        inproc.run_session(spec)
        pres.append(inproc.nodes[1].session_state(spec["session_id"])["result"])
    digests = [hashlib.sha256(b"batch %d" % i).digest() for i in range(2)]
    reqs = [
        {"id": f"e{i}", "key_id": "ek", "kind": "raw", "message": d.hex()}
        for i, d in enumerate(digests)
    ]

    def item(i: int, **over: Any) -> dict[str, Any]:
        return {
            "key_id": "ek",
            "presignature_id": pres[i]["presignature_id"],
            "request": reqs[i],
            **over,
        }

    results = {}
    for party in (1, 2):
        batch = (
            [
                item(0),
                item(0),
                item(1, presignature_id="ab" * 32),
                item(1, request={**reqs[1], "key_id": "other"}),
                item(1),
            ]
            if party == 1
            else [item(0), item(1)]
        )
        with TestClient(create_app(inproc.nodes[party])) as client:
            r = _post(client, inproc, "/v1/ecdsa/sign-batch", {"items": batch})
            assert r.status_code == 200, r.text
            results[party] = r.json()["results"]
    kinds = [o["problem"]["type"].rsplit(":", 1)[1] if "problem" in o else "ok" for o in results[1]]
    assert kinds == ["ok", "presignature-used", "unknown-presignature", "key-mismatch", "ok"]
    pk = SECP256K1.decode_point(bytes.fromhex(key["public_key"]))
    for i, (mine, theirs) in enumerate(
        [(results[1][0], results[2][0]), (results[1][4], results[2][1])]
    ):
        p = pres[i]
        public = dkls23.PresignaturePublic(
            bytes.fromhex(p["presignature_id"]),
            bytes.fromhex(p["dkls23_key_id"]),
            bytes.fromhex(p["session_id"]),
            tuple(p["participants"]),
            SECP256K1.decode_point(bytes.fromhex(p["R"])),
        )
        partials = [
            dkls23.PartialSignature.from_bytes(bytes.fromhex(x["partial"]), sender=s)
            for s, x in ((1, mine), (2, theirs))
        ]
        sig = dkls23.combine_signature(public, partials, digests[i], pk)
        assert PublicKey(bytes.fromhex(key["public_key"])).verify(
            sig.to_der(), digests[i], hasher=None
        )


def _batch_call(cluster: Coordinator, party: int, items: list[dict[str, Any]]) -> list[Any]:
    return list(
        cluster.call(cluster.nodes[party], "POST", "/v1/frost/sign-batch", {"items": items})[
            "results"
        ]
    )


def test_sigkill_around_the_batch_commit(cluster: Coordinator) -> None:
    """Killed after the batch's commit (before any share left): every nonce of the batch
    is burnt (its release entry is durable: ``nonce-used``). Killed before it: nothing was
    released and the nonces died with the process (memory only: ``unknown-nonce``)."""
    res = cluster.dkg("ed25519", "kb", 2, [1, 2, 3])
    victim = cluster.nodes[1]
    for point, burnt in (("sign-after-mark", True), ("sign-before-mark", False)):
        victim.stop()
        victim.start(crash_at=point)
        c1 = cluster.commitments(1, "kb", 4)
        c2 = cluster.commitments(2, "kb", 4)
        reqs = [
            {"id": f"{point}-{i}", "key_id": "kb", "kind": "raw", "message": f"{i:04x}"}
            for i in range(4)
        ]
        pkgs = [
            _package("ed25519", {1: c1[i], 2: c2[i]}, message_to_sign("ed25519", reqs[i]))
            for i in range(4)
        ]
        items = [
            {
                "key_id": "kb",
                "nonce_id": c1[i]["nonce_id"],
                "request": reqs[i],
                "signing_package": pkgs[i],
            }
            for i in range(4)
        ]
        with pytest.raises((httpx.HTTPError, NodeRefused)):
            _batch_call(cluster, 1, items)
        assert victim.proc is not None and victim.proc.wait(10) == 137
        victim.proc = None
        victim.start()
        out = _batch_call(cluster, 1, items)
        want = "nonce-used" if burnt else "unknown-nonce"
        assert all(o["problem"]["type"] == f"urn:tpwc:node:{want}" for o in out), out
        releases = cluster.call(victim, "GET", "/v1/releases?after=0")["entries"]
        released = {e["item_id"] for e in releases}
        assert all((c["nonce_id"] in released) == burnt for c in c1)
    assert res["public_key"]
