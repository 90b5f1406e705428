"""The node's signing pipeline (signer_nodes.pipeline): what a node checks before it
releases a share, item by item, in process (issue 16, mutation testing; docs/MUTATION.md).

One module-scoped harness of three in-process nodes, each with its own real SoftHSM2 token
and SQLCipher store (tests/nodes/conftest.py ``InProc``; never a mocked HSM), two FROST
Ed25519 keys and one DKLs23 key from their DKGs: the nodes hold shares only. Every refusal
is asserted by its kind and detail, and that it spent nothing; every share that is
released is aggregated and checked by pynacl (Ed25519) or coincurve (ECDSA). First in
``mutation.toml``'s selection for ``signer-nodes/pipeline.py``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from coincurve import PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from custody import auditchain as audit
from custody.signing import message_to_sign
from mpc import dkls23, frost
from mpc.groups import SECP256K1
from signer_nodes.errors import Kind, NodeError
from signer_nodes.pipeline import MAX_BATCH, MAX_COMMITMENTS, Released, SignItem
from tests.nodes.conftest import INITIATOR, InProc, public_package

FK, EK = "fk", "ek"  # keys of the harness genesis's raw_signing_keys (RAW_KEYS)
FK2 = "k2"  # a second FROST key of the same scheme
SUITE = frost.ciphersuite("ed25519")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProc, Any, Any]]:
    c = InProc(Path(tmp_path_factory.mktemp("pipeline-mutants")), SigningKey.generate())
    try:
        fres = c.dkg("ed25519", FK)
        eres = c.dkg("ecdsa-secp256k1", EK)
        c.dkg("ed25519", FK2)
        yield c, fres, eres
    finally:
        c.close()


# -- helpers of the in-process harness: one copy of each set-up the tests share -------------


def _req(rid: str, key: str = FK, message: str = "00ff") -> dict[str, Any]:
    return {"id": rid, "key_id": key, "kind": "raw", "message": message}


def _package(
    c: InProc,
    parties: tuple[int, ...],
    request: dict[str, Any],
    *,
    key: str = FK,
    scheme: str = "ed25519",
    message: bytes | None = None,
) -> tuple[dict[int, dict[str, str]], bytes]:
    """One fresh nonce of ``key`` from each of ``parties`` and the signing package over
    ``message`` (default: the message the nodes recompute from ``request``)."""
    suite = frost.ciphersuite(scheme)
    nonces = {p: c.nodes[p].frost_commitments(key, 1)[0] for p in parties}
    comms = [
        frost.SigningCommitments.from_bytes(bytes.fromhex(nonces[p]["commitments"]), suite=suite)
        for p in parties
    ]
    if message is None:
        message = message_to_sign(scheme, request)
    return nonces, frost.signing_package(comms, message).to_bytes()


def _aggregate_and_verify(
    fres: dict[str, Any], pkg: bytes, raw_shares: list[Any], request: dict[str, Any]
) -> None:
    """The Ed25519 shares aggregated under the DKG's public package and the signature
    verified by pynacl (not our code) over the recomputed message."""
    shares = [frost.SignatureShare.from_bytes(bytes(x), suite=SUITE) for x in raw_shares]
    package = frost.SigningPackage.from_bytes(pkg, suite=SUITE)
    sig = frost.aggregate(package, shares, public_package(fres, "ed25519"))
    VerifyKey(bytes.fromhex(fres["public_key"])).verify(message_to_sign("ed25519", request), sig)


def _presign(c: InProc, parties: list[int], key: str = EK) -> dict[str, Any]:
    """One DKLs23 presignature of ``key`` by ``parties``; the first party's result."""
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "ecdsa-presign",
        "key_id": key,
        "scheme": "ecdsa-secp256k1",
        "threshold": 2,
        "participants": parties,
    }
    c.run_session(spec)
    out: dict[str, Any] = c.nodes[parties[0]].session_state(str(spec["session_id"]))["result"]
    return out


def _combine_ecdsa(
    pre: dict[str, Any], raw_partials: dict[int, Any], digest: bytes, public_key: str
) -> Any:
    """The nodes' DKLs23 partials combined (public values only) into one signature."""
    public = dkls23.PresignaturePublic(
        bytes.fromhex(pre["presignature_id"]),
        bytes.fromhex(pre["dkls23_key_id"]),
        bytes.fromhex(pre["session_id"]),
        tuple(pre["participants"]),
        SECP256K1.decode_point(bytes.fromhex(pre["R"])),
    )
    partials = [
        dkls23.PartialSignature.from_bytes(bytes(raw), sender=s) for s, raw in raw_partials.items()
    ]
    pk = SECP256K1.decode_point(bytes.fromhex(public_key))
    return dkls23.combine_signature(public, partials, digest, pk)


def _install_policy(c: InProc, policy: Any) -> Any:
    """A successor of the harness genesis with ``policy``, signed by the officers and
    installed on every node; returns its body."""
    from custody import governance as gov

    body = gov.decode(c.genesis).body.successor(policy=policy)
    doc = c.officers.sign(body)
    for nd in c.nodes.values():
        nd.install_governance(doc)
    return body


def _velocity_cluster(c: InProc, key: str, limit: int, presigs: int) -> list[str]:
    """``key`` (DKLs23) under one rule: evm-tx of ETH, at most ``limit`` wei an hour per
    key; returns ``presigs`` presignature ids of nodes 1 and 2."""
    from custody import policy as pol

    c.dkg("ecdsa-secp256k1", key)
    rule = pol.Rule(
        "capped",
        "allow",
        kinds=frozenset({"evm-tx"}),
        assets=frozenset({"ETH"}),
        velocity=(pol.Velocity("key", 3600, limit),),
    )
    _install_policy(c, pol.Policy(rules=(rule,)))
    return [str(_presign(c, [1, 2], key)["presignature_id"]) for _ in range(presigs)]


def _evm_request(rid: str, key: str, nonce: int, wei: int) -> dict[str, Any]:
    """An EIP-1559 transfer of ``wei`` to 0xa1..a1 on chain 1, by the harness initiator."""
    import rlp

    fields = [1, nonce, 1, 2, 21_000, bytes.fromhex("a1" * 20), wei, b"", []]
    return {
        "id": rid,
        "key_id": key,
        "kind": "evm-tx",
        "payload": {"tx": "0x02" + rlp.encode(fields).hex()},
        "initiator": INITIATOR,
    }


def _refused(kind: Kind, detail: str, fn: Any, *args: Any, **kw: Any) -> NodeError:
    with pytest.raises(NodeError) as e:
        fn(*args, **kw)
    assert e.value.kind == kind, e.value
    assert detail in e.value.detail, e.value.detail
    return e.value


# -- FROST commitments -------------------------------------------------------------------------


def test_commitment_count_is_an_integer_from_1_to_max(harness: tuple[InProc, Any, Any]) -> None:
    c, _, _ = harness
    node = c.nodes[3]
    want = f"count must be an integer in [1, {MAX_COMMITMENTS}]"
    assert MAX_COMMITMENTS == 1000
    for bad in (0, -1, MAX_COMMITMENTS + 1, True, 1.0, "2", None):
        _refused(Kind.BAD_REQUEST, want, node.frost_commitments, FK, bad)
    one = node.frost_commitments(FK, 1)
    assert len(one) == 1 and set(one[0]) == {"nonce_id", "commitments"}
    full = node.frost_commitments(FK, MAX_COMMITMENTS)
    assert len(full) == MAX_COMMITMENTS and len({x["nonce_id"] for x in full}) == MAX_COMMITMENTS
    for x in full[:3] + full[-3:]:  # each one this node's commitments, held in its pool
        comm = frost.SigningCommitments.from_bytes(bytes.fromhex(x["commitments"]), suite=SUITE)
        assert comm.identifier == 3
        assert node.shares.pool.get(x["nonce_id"]) is not None


# -- item ids --------------------------------------------------------------------------------


def test_item_ids_have_their_exact_form(harness: tuple[InProc, Any, Any]) -> None:
    c, _, _ = harness
    node = c.nodes[1]
    req = _req("ids")
    nonces, pkg = _package(c, (1, 2), req)
    good = nonces[1]["nonce_id"]
    nonce_detail = "nonce_id must be 32 lower-case hex digits"
    for bad in (good[:31], good + "0", good.upper(), 7, None, bytes.fromhex(good), good + "\n"):
        if bad == good:  # an id of digits only has no upper case (probability 2^-21.7)
            continue
        _refused(
            Kind.BAD_REQUEST,
            nonce_detail,
            node.frost_sign,
            FK,
            bad,
            req,
            pkg,
            coordinator_verified=True,
        )
    presig_detail = "presignature_id must be 64 hex digits"
    ereq = _req("eids", EK, hashlib.sha256(b"ids").hexdigest())
    for bad in ("ab" * 31 + "a", "ab" * 32 + "a", 64, None):
        _refused(
            Kind.BAD_REQUEST,
            presig_detail,
            node.ecdsa_sign,
            EK,
            bad,
            ereq,
            coordinator_verified=True,
        )
    assert node.shares.pool.get(good) is not None  # nothing spent by the refusals


# -- FROST: the package and the nonce --------------------------------------------------------


def test_a_package_without_this_node_or_with_other_commitments_is_refused(
    harness: tuple[InProc, Any, Any],
) -> None:
    c, fres, _ = harness
    req = _req("pkg")
    nonces, pkg = _package(c, (2, 3), req)  # a package of nodes 2 and 3
    mine = c.nodes[1].frost_commitments(FK, 1)[0]["nonce_id"]
    _refused(
        Kind.BAD_SIGNING_PACKAGE,
        "this node is not in the signing package",
        c.nodes[1].frost_sign,
        FK,
        mine,
        req,
        pkg,
        coordinator_verified=True,
    )
    # node 2's nonce named with a package carrying node 2's commitments of ANOTHER nonce
    other = c.nodes[2].frost_commitments(FK, 1)[0]["nonce_id"]
    _refused(
        Kind.BAD_SIGNING_PACKAGE,
        "not those of the nonce",
        c.nodes[2].frost_sign,
        FK,
        other,
        req,
        pkg,
        coordinator_verified=True,
    )
    assert c.nodes[1].shares.pool.get(mine) is not None
    assert c.nodes[2].shares.pool.get(other) is not None
    # the honest package still signs, verified by pynacl
    raw = [
        c.nodes[p].frost_sign(FK, nonces[p]["nonce_id"], req, pkg, coordinator_verified=True)
        for p in (2, 3)
    ]
    _aggregate_and_verify(fres, pkg, raw, req)


def test_a_nonce_of_another_key_or_never_issued_is_unknown(
    harness: tuple[InProc, Any, Any],
) -> None:
    c, _, _ = harness
    node = c.nodes[1]
    req = _req("unk")
    nonces, pkg = _package(c, (1, 2), req)
    never = secrets.token_hex(16)
    e = _refused(
        Kind.UNKNOWN_NONCE,
        f"no nonce {never} for key {FK!r}",
        node.frost_sign,
        FK,
        never,
        req,
        pkg,
        coordinator_verified=True,
    )
    assert "a restart discards them" in e.detail
    # a FROST nonce id named for the ECDSA key (another key, another kind)
    ereq = _req("unk-e", EK, hashlib.sha256(b"unk").hexdigest())
    nid = nonces[1]["nonce_id"]
    with pytest.raises(NodeError) as ex:
        node.ecdsa_sign(EK, nid + nid, ereq, coordinator_verified=True)
    assert ex.value.kind == Kind.UNKNOWN_PRESIGNATURE
    assert node.shares.pool.get(nid) is not None


def test_a_nonce_is_released_once_and_a_retry_is_told_why(
    harness: tuple[InProc, Any, Any],
) -> None:
    c, _, _ = harness
    node = c.nodes[1]
    req = _req("once")
    nonces, pkg = _package(c, (1, 2), req)
    nid = nonces[1]["nonce_id"]
    out = node.frost_sign(FK, nid, req, pkg, coordinator_verified=True)
    assert isinstance(out, Released) and out.receipt is not None
    assert set(out.receipt) == {"body", "node"}
    assert node.shares.pool.get(nid) is None and node.store.released(nid)
    e = _refused(
        Kind.NONCE_USED,
        f"nonce {nid} was already used (by a released signature)",
        node.frost_sign,
        FK,
        nid,
        req,
        pkg,
        coordinator_verified=True,
    )
    assert e.code == "nonce-used"


# -- batches -------------------------------------------------------------------------------


def test_a_batch_keeps_order_fails_items_alone_and_refuses_a_repeat(
    harness: tuple[InProc, Any, Any],
) -> None:
    c, fres, _ = harness
    reqs = [_req(f"bt{i}", message=f"{i:02x}" * 4) for i in range(3)]
    made = [_package(c, (1, 3), r) for r in reqs]
    items = [
        SignItem(FK, made[0][0][1]["nonce_id"], reqs[0], package=made[0][1]),
        SignItem(FK, "zz", reqs[1], package=made[1][1]),  # bad id: fails alone
        SignItem(FK, made[2][0][1]["nonce_id"], reqs[2], package=made[2][1]),
        SignItem(FK, made[0][0][1]["nonce_id"], reqs[0], package=made[0][1]),  # repeat
    ]
    out = c.nodes[1].frost_sign_batch(items, coordinator_verified=True)
    assert len(out) == 4
    assert isinstance(out[0], Released) and isinstance(out[2], Released)
    assert isinstance(out[1], NodeError) and out[1].kind == Kind.BAD_REQUEST
    assert isinstance(out[3], NodeError) and out[3].kind == Kind.NONCE_USED
    assert "by an earlier item of this batch" in out[3].detail
    # item 1's nonce was never taken; items 0 and 2 are released and verify (pynacl)
    assert c.nodes[1].shares.pool.get(made[1][0][1]["nonce_id"]) is not None
    for k in (0, 2):
        nonces, pkg = made[k]
        mine = out[k]
        assert isinstance(mine, bytes)
        theirs = c.nodes[3].frost_sign(
            FK, nonces[3]["nonce_id"], reqs[k], pkg, coordinator_verified=True
        )
        _aggregate_and_verify(fres, pkg, [mine, theirs], reqs[k])
    # a single request raises its error instead
    with pytest.raises(NodeError):
        c.nodes[1].frost_sign(FK, "zz", reqs[1], made[1][1], coordinator_verified=True)
    assert MAX_BATCH == 256


# -- ECDSA ---------------------------------------------------------------------------------


def test_ecdsa_signs_once_for_the_recomputed_message_only(
    harness: tuple[InProc, Any, Any],
) -> None:
    c, _, eres = harness
    p = _presign(c, [1, 2])
    pid = p["presignature_id"]
    digest = hashlib.sha256(b"pipeline ecdsa").digest()
    req = _req("ecdsa-1", EK, digest.hex())
    other = hashlib.sha256(b"something else").digest()
    e = _refused(
        Kind.NOT_AUTHORIZED,
        "",
        c.nodes[1].ecdsa_sign,
        EK,
        pid,
        req,
        coordinator_verified=True,
        requested=other,
    )
    assert e.code == "message-mismatch"
    parts = {s: c.nodes[s].ecdsa_sign(EK, pid, req, coordinator_verified=True) for s in (1, 2)}
    _refused(
        Kind.PRESIGNATURE_USED,
        "was already used",
        c.nodes[1].ecdsa_sign,
        EK,
        pid,
        req,
        coordinator_verified=True,
    )
    sig = _combine_ecdsa(p, parts, digest, eres["public_key"])
    assert PublicKey(bytes.fromhex(eres["public_key"])).verify(sig.to_der(), digest, hasher=None)


# -- BIP-32 children (issue 13): the node derives the child's key and share itself ------------


def test_a_request_under_a_path_signs_for_the_child_and_a_root_presignature_is_refused(
    harness: tuple[InProc, Any, Any],
) -> None:
    from custody.signing import derive_public, encode_public_key, request_path

    c, fres, _ = harness
    path = "m/0/3"
    req = {
        "id": "child-1",
        "key_id": FK,
        "kind": "message",
        "payload": {"message": "0x" + b"child".hex()},
        "initiator": INITIATOR,
        "derivation_path": path,
    }
    msg = message_to_sign("ed25519", req)
    nonces, pkg_bytes = _package(c, (1, 2), req)
    raw = [
        c.nodes[p].frost_sign(FK, nonces[p]["nonce_id"], req, pkg_bytes, coordinator_verified=True)
        for p in (1, 2)
    ]
    child = derive_public(public_package(fres, "ed25519"), FK, request_path(req))
    shares = [frost.SignatureShare.from_bytes(bytes(x), suite=SUITE) for x in raw]
    pkg = frost.SigningPackage.from_bytes(pkg_bytes, suite=SUITE)
    sig = frost.aggregate(pkg, shares, child)
    VerifyKey(encode_public_key("ed25519", child.group_public_key)).verify(msg, sig)
    with pytest.raises(BadSignatureError):
        VerifyKey(bytes.fromhex(fres["public_key"])).verify(msg, sig)
    # an ECDSA presignature made for the root key is refused for a path, and not spent
    p = _presign(c, [1, 2])
    pid = p["presignature_id"]
    ereq = {**_req("child-e", EK, hashlib.sha256(b"child").hexdigest()), "derivation_path": path}
    e = _refused(
        Kind.UNKNOWN_PRESIGNATURE,
        f"was made for the root key, not for {path}: a presignature signs for its own path only",
        c.nodes[1].ecdsa_sign,
        EK,
        pid,
        ereq,
        coordinator_verified=True,
    )
    assert pid in e.detail
    assert c.nodes[1].shares.ledger_item(pid) is not None


def _entry_of(node: Any, item_id: str) -> tuple[Any, dict[str, Any]]:
    rows = [r for r in node.store.releases_after(0, 10_000) if r.item_id == item_id]
    assert len(rows) == 1
    return rows[0], cbor2.loads(rows[0].entry)


def test_the_release_log_entry_records_the_request_and_chains(
    harness: tuple[InProc, Any, Any],
) -> None:
    """Step 3: the durable entry names the request (digest over id, key, kind and the
    RECOMPUTED message), the signer set, the item and (under a path) the path, and chains."""
    c, _, _ = harness
    node = c.nodes[2]
    for rid, path in (("entry-root", None), ("entry-child", "m/7")):
        req: dict[str, Any] = {**_req(rid), "message": "c0ffee"}
        if path:
            req["derivation_path"] = path
        nonces, pkg = _package(c, (2, 3), req)
        nid = nonces[2]["nonce_id"]
        out = node.frost_sign(FK, nid, req, pkg, coordinator_verified=True)
        row, entry = _entry_of(node, nid)
        assert row.hash == audit.release_hash(row.entry)
        if row.seq > 1:  # chained to the entry before it
            assert row.prev == node.store.releases_after(row.seq - 2, 1)[0].hash
        msg = message_to_sign("ed25519", req)
        assert entry["request_digest"] == audit.request_digest(rid, FK, "raw", msg)
        assert entry["request_id"] == rid and entry["kind"] == "raw" and entry["key_id"] == FK
        assert entry["scheme"] == "ed25519" and entry["signers"] == [2, 3]
        assert entry["item_id"] == nid and entry["seq"] == row.seq
        assert isinstance(entry["time"], int) and entry["time"] > 1_700_000_000
        assert entry.get("derivation_path") == path
        assert entry["approvals"] == [] and entry["policy_version"] == 1
        # the receipt attests exactly this committed entry
        assert isinstance(out, Released) and out.receipt is not None
        att = out.receipt["node"]
        assert att["release_seq"] == row.seq and att["release_hash"] == row.hash.hex()
        assert att["node_id"] == node.node_id


def test_a_committed_release_keeps_counting_in_the_velocity_window(inproc: InProc) -> None:
    """After the commit, a released request's reservation is CONFIRMED (it counts for good);
    cancelling it instead would let the next request spend the window again: a velocity
    bypass until the node restarts. Sequential requests of 1000 under a 1500 limit: the
    second is refused."""
    pres = _velocity_cluster(inproc, "vk", 1500, 2)
    node = inproc.nodes[1]

    def request(i: int) -> dict[str, Any]:
        return _evm_request(f"vel-{i}", "vk", i, 1000)

    assert isinstance(node.ecdsa_sign("vk", pres[0], request(0), coordinator_verified=True), bytes)
    e = _refused(
        Kind.NOT_AUTHORIZED,
        "",
        node.ecdsa_sign,
        "vk",
        pres[1],
        request(1),
        coordinator_verified=True,
    )
    assert e.code == "policy-denied"
    assert node.shares.ledger_item(pres[1]) is not None  # refused before it was taken


def test_a_pipeline_without_an_identity_key_releases_without_a_receipt(
    harness: tuple[InProc, Any, Any],
) -> None:
    from signer_nodes.pipeline import SigningPipeline

    c, _, _ = harness
    node = c.nodes[1]
    bare = SigningPipeline(node.shares, 1, node.anchor)  # sign=None: no receipts
    req = _req("no-receipt")
    nonces, pkg = _package(c, (1, 2), req)
    item = SignItem(FK, nonces[1]["nonce_id"], req, package=pkg)
    out = bare.sign_one(bare.frost, item, coordinator_verified=True)
    assert isinstance(out, Released) and out.receipt is None and len(out) > 0


def test_a_nonce_of_another_key_of_the_same_scheme_is_unknown(
    harness: tuple[InProc, Any, Any],
) -> None:
    """A nonce lives in the pool under its own key: naming it for another FROST key (same
    kind of item, package carrying its commitments) is refused before it is taken."""
    c, _, _ = harness
    node = c.nodes[1]
    req = {**_req("cross-key"), "key_id": FK2}
    nonces, pkg = _package(c, (1, 2), req)  # nonces of FK
    nid = nonces[1]["nonce_id"]
    _refused(
        Kind.UNKNOWN_NONCE,
        f"no nonce {nid} for key {FK2!r}",
        node.frost_sign,
        FK2,
        nid,
        req,
        pkg,
        coordinator_verified=True,
    )
    assert node.shares.pool.get(nid) is not None


# -- s22-mutc: the survivors left open by s22-muta ------------------------------------------


def test_a_failed_commit_gives_back_its_velocity_reservation(inproc: InProc) -> None:
    """The release-log commit fails (a real SQLCipher failure: a trigger refusing every
    insert into ``releases``): the request's velocity reservation is CANCELLED, so a later
    request within the limit is allowed; kept, it would count a release that never
    happened and deny the next one (fail closed, but a node denying within its limit).
    After a committed release no reservation is left pending (a pending one is never
    pruned: the window would grow for as long as the node runs)."""
    pres = _velocity_cluster(inproc, "vc", 1500, 2)
    node = inproc.nodes[1]
    with node.store.tx() as cur:
        cur.execute(
            "CREATE TRIGGER no_marks BEFORE INSERT ON releases BEGIN"
            " SELECT RAISE(ABORT, 'disk says no'); END"
        )
    with pytest.raises(Exception, match="disk says no"):
        node.ecdsa_sign(
            "vc", pres[0], _evm_request("vc-0", "vc", 0, 1000), coordinator_verified=True
        )
    with node.store.tx() as cur:
        cur.execute("DROP TRIGGER no_marks")
    window = node.pipeline.window
    assert window.size() == 0 and not window._pending  # nothing counts, nothing pending
    # the burnt presignature stays burnt (taken before the commit); another one signs
    out = node.ecdsa_sign(
        "vc", pres[1], _evm_request("vc-1", "vc", 1, 1000), coordinator_verified=True
    )
    assert isinstance(out, Released) and out.receipt is not None
    assert window.size() == 1 and not window._pending  # counted for good, not pending


def test_a_psbt_under_a_path_is_authorized_against_the_childs_key(inproc: InProc) -> None:
    """The authorization seam sees the CHILD's key for a request under a derivation path:
    a btc-psbt whose inputs spend the child's BIP-86 output is allowed and signed (the
    aggregate verified by libsecp256k1 under the child's output key); handed the root key,
    the seam would find inputs that are not the key's and refuse the honest request."""
    from coincurve import PublicKeyXOnly

    from custody import policy as pol
    from custody.kinds.addresses import p2tr_script, taproot_output_key
    from custody.signing import derive_public, messages_to_sign
    from tests.custody.kinds.btc_build import b64, build_psbt
    from tests.nodes.conftest import public_package
    from tests.nodes.test_derived_sign import embit_child, xpub_of

    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "dkg",
        "key_id": "tp",
        "scheme": "bip340",
        "threshold": 2,
        "participants": [1, 2, 3],
        "network": "regtest",
    }
    inproc.run_session(spec)
    res = dict(inproc.nodes[1].session_state(str(spec["session_id"]))["result"])
    root = public_package(res, "bip340")
    child = embit_child(xpub_of("tp", root, "testnet"), "m/0/7")[1:]  # x-only, by embit
    _install_policy(
        inproc, pol.Policy(rules=(pol.Rule("psbt", "allow", kinds=frozenset({"btc-psbt"})),))
    )
    amounts = [60_000]
    ins = [(secrets.token_bytes(32), 0, amounts[0], 0xFFFFFFFD)]
    outs = [(p2tr_script(taproot_output_key(child)), amounts[0] - 400)]
    req = {
        "id": "psbt-child",
        "key_id": "tp",
        "kind": "btc-psbt",
        "payload": b64(build_psbt(child, ins, outs)),
        "network": "regtest",
        "initiator": INITIATOR,
        "derivation_path": "m/0/7",
    }
    output_key = taproot_output_key(child)
    (sighash,) = messages_to_sign("bip340", req, public_key=child)
    suite = frost.ciphersuite("bip340")
    nonces, pkg_bytes = _package(inproc, (1, 2), req, key="tp", scheme="bip340", message=sighash)
    pkg = frost.SigningPackage.from_bytes(pkg_bytes, suite=suite)
    shares = []
    for p in (1, 2):
        node = inproc.nodes[p]
        item = SignItem(
            "tp",
            nonces[p]["nonce_id"],
            req,
            package=pkg.to_bytes(),
            input_index=0,
            output_key=output_key.hex(),
        )
        out = node.pipeline.sign_one(node.pipeline.frost, item, coordinator_verified=True)
        shares.append(frost.SignatureShare.from_bytes(bytes(out), suite=suite))
    tweaked = frost.taproot_tweak(derive_public(root, "tp", (0, 7)))
    sig = frost.aggregate(pkg, shares, tweaked)
    assert PublicKeyXOnly(output_key).verify(sig, sighash)  # libsecp256k1, the child's Q


def _released_behind_the_pool(node: Any, nonce_id: str) -> None:
    """Commit a release-log entry for ``nonce_id`` straight into the node's store (a real
    SQLCipher commit) while the nonce is still in the memory pool: the state a second
    writer of the same store would leave. The pipeline's commit then reports the item as
    already released (``seq`` None) AFTER the mark, in the compute step."""

    def build(seq: int, prev: bytes) -> tuple[bytes, bytes]:
        enc = audit.encode_release({"seq": seq, "prev": prev, "item_id": nonce_id})
        return enc, audit.release_hash(enc)

    assert node.store.release(nonce_id, "nonce", build) is not None
    assert node.shares.pool.get(nonce_id) is not None


def test_an_item_the_commit_reports_released_raises_alone_or_fails_alone(
    harness: tuple[InProc, Any, Any],
) -> None:
    """A failure after the mark (the commit says the nonce was already released) is the
    single request's own NodeError (nonce-used), raised; in a batch it is that item's
    outcome and the others are released (and verify under pynacl)."""
    c, fres, _ = harness
    node = c.nodes[1]
    req = _req("behind-1", message="b1" * 4)
    nonces, pkg = _package(c, (1, 3), req)
    nid = nonces[1]["nonce_id"]
    _released_behind_the_pool(node, nid)
    _refused(
        Kind.NONCE_USED,
        f"nonce {nid} was already used",
        node.frost_sign,
        FK,
        nid,
        req,
        pkg,
        coordinator_verified=True,
    )
    reqs = [_req(f"behind-b{i}", message=f"c{i}" * 4) for i in range(2)]
    made = [_package(c, (1, 3), r) for r in reqs]
    _released_behind_the_pool(node, made[0][0][1]["nonce_id"])
    items = [SignItem(FK, made[k][0][1]["nonce_id"], reqs[k], package=made[k][1]) for k in (0, 1)]
    out = node.frost_sign_batch(items, coordinator_verified=True)
    assert isinstance(out[0], NodeError) and out[0].kind == Kind.NONCE_USED, out[0]
    assert "was already used" in out[0].detail
    assert isinstance(out[1], Released)
    theirs = c.nodes[3].frost_sign(
        FK, made[1][0][3]["nonce_id"], reqs[1], made[1][1], coordinator_verified=True
    )
    _aggregate_and_verify(fres, made[1][1], [out[1], theirs], reqs[1])


def test_a_passkey_approval_signs_in_process_and_its_counter_is_recorded(inproc: InProc) -> None:
    """Issue 15 through the pipeline, in process: a request above the limit approved by a
    key-file approver and a passkey approver signs (the combined ECDSA signature checked
    by coincurve); the counter is recorded by the node before the release, so a second
    assertion with the same counter (a cloned authenticator) is refused."""
    import time

    from custody import approvals as appr
    from custody import policy as pol
    from tests.console.authenticator import SoftAuthenticator
    from tests.nodes.test_passkey_nodes import _statement, _wire
    from tests.nodes.test_policy_enforcement import ALICE, KEY, _approval, _policy, _request

    key = inproc.dkg("ecdsa-secp256k1", KEY)
    treasury = {f"treasury-{i}": SigningKey.generate() for i in (1, 2, 3)}
    base = _policy(int(time.time()), treasury, {"ops-1": SigningKey.generate()})
    alice = SoftAuthenticator()
    groups = tuple(
        pol.ApproverGroup(g.group_id, (*g.approvers, pol.Approver("alice", b"", alice.credential)))
        if g.group_id == "treasury"
        else g
        for g in base.approver_groups
    )
    g = _install_policy(inproc, pol.Policy(base.rules, base.allowlists, base.wallets, groups))
    t1 = treasury["treasury-1"]

    def approved(req: dict[str, Any], approval: appr.PasskeyApproval) -> dict[str, Any]:
        return {**req, "approvals": [_approval(t1, "treasury-1", req, g), _wire(approval)]}

    alice.counter = 20
    big = _request("pk-inproc-1", ALICE, 5000)
    request = approved(big, alice.approve(_statement(big, g, "alice")))  # counter 21
    pre = _presign(inproc, [1, 2], KEY)
    parts = {
        p: inproc.nodes[p].ecdsa_sign(
            KEY, pre["presignature_id"], request, coordinator_verified=True
        )
        for p in (1, 2)
    }
    digest = message_to_sign("ecdsa-secp256k1", request)
    pk = bytes.fromhex(key["public_key"])
    sig = _combine_ecdsa(pre, parts, digest, key["public_key"])
    raw = sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big")
    recovered = PublicKey.from_signature_and_message(
        raw + bytes([sig.recovery_id]), digest, hasher=None
    )
    assert recovered.format() == PublicKey(pk).format()  # coincurve, not our code
    # the counter 21 is the node's now: a clone still at 20 approves another request
    other = _request("pk-inproc-2", ALICE, 5000)
    alice.counter = 20
    cloned = approved(other, alice.approve(_statement(other, g, "alice")))
    pre2 = _presign(inproc, [1, 2], KEY)
    e = _refused(
        Kind.NOT_AUTHORIZED,
        "21 does not exceed 21",
        inproc.nodes[1].ecdsa_sign,
        KEY,
        pre2["presignature_id"],
        cloned,
        coordinator_verified=True,
    )
    assert e.code == "passkey-stale-counter"


def test_a_prepared_items_repr_never_shows_its_secret() -> None:
    """``Prepared.secret`` (the unsealed nonce or presignature) is kept out of the
    dataclass repr, so no log line or traceback that formats an item carries it."""
    from signer_nodes.pipeline import Prepared

    marker = "5ec2e7" * 8
    p = Prepared("k", "i" * 32, {"id": "r"}, b"public", bytes.fromhex(marker))
    assert marker not in repr(p) and repr(bytes.fromhex(marker)) not in repr(p)
    assert "secret" not in repr(p) and "'k'" in repr(p)


def test_a_corrupt_stored_public_package_is_an_internal_error_under_a_path(
    harness: tuple[InProc, Any, Any],
) -> None:
    """The public package a node stored at DKG is what it derives a child from: corrupt in
    the store (a real SQLCipher update), a request under a derivation path is refused as
    the node's own ``internal`` error naming the stored package, and nothing is taken."""
    c, _, _ = harness
    c.dkg("ed25519", "kbad")
    node = c.nodes[1]
    with node.store.tx() as cur:
        cur.execute("UPDATE keys SET public_info = ? WHERE key_id = ?", (b"\xa1\x00", "kbad"))
    req = {
        "id": "bad-pkg",
        "key_id": "kbad",
        "kind": "message",
        "payload": {"message": "0x" + b"child".hex()},
        "initiator": INITIATOR,
        "derivation_path": "m/0/1",
    }
    nonces, pkg = _package(c, (1, 2), req, key="kbad")
    nid = nonces[1]["nonce_id"]
    _refused(
        Kind.INTERNAL,
        "stored public package:",
        node.frost_sign,
        "kbad",
        nid,
        req,
        pkg,
        coordinator_verified=True,
    )
    assert node.shares.pool.get(nid) is not None


# -- s23-mutn: the survivors of the run of the mutants no sample had reached ---------------


def test_a_sign_item_cannot_be_altered(harness: tuple[InProc, Any, Any]) -> None:
    """A parsed item is what every later step reads (the key, the item id, the request the
    message is recomputed from): frozen, so no step can swap one of them under the next."""
    import dataclasses

    item = SignItem(FK, "00" * 16, _req("frozen"), package=b"\x00")
    for name, value in (("key_id", EK), ("item_id", "11" * 16), ("request", {})):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(item, name, value)
    assert item.key_id == FK and item.item_id == "00" * 16


def test_a_signing_package_that_does_not_decode_is_refused_before_the_nonce_is_taken(
    harness: tuple[InProc, Any, Any],
) -> None:
    """Bytes that are no RFC 9591 signing package (truncated, garbage, empty) are the
    node's ``bad-signing-package`` with the decoder's reason, never a raw MpcError; the
    nonce stays in the pool and then signs with the honest package."""
    c, fres, _ = harness
    node = c.nodes[1]
    req = _req("undecodable", message="d0" * 4)
    nonces, pkg = _package(c, (1, 2), req)
    nid = nonces[1]["nonce_id"]
    for bad in (pkg[:-1], b"\xff" * 40, b""):
        e = _refused(
            Kind.BAD_SIGNING_PACKAGE,
            "",
            node.frost_sign,
            FK,
            nid,
            req,
            bad,
            coordinator_verified=True,
        )
        assert e.detail, e
        assert node.shares.pool.get(nid) is not None
    raw = [
        c.nodes[p].frost_sign(FK, nonces[p]["nonce_id"], req, pkg, coordinator_verified=True)
        for p in (1, 2)
    ]
    _aggregate_and_verify(fres, pkg, raw, req)


def test_a_package_below_the_threshold_is_refused_by_the_signing_step(
    harness: tuple[InProc, Any, Any],
) -> None:
    """A package carrying only this node's commitments (1 signer of a 2-of-3 key) passes
    every check before the mark (the node is in it, with its own nonce's commitments) and
    is refused by RFC 9591 section 5.2's own check in ``frost.sign``: the node's
    ``bad-signing-package`` naming the count, no share released; the nonce is burnt (it
    was marked before the computation), so a retry is told ``nonce-used``."""
    c, _, _ = harness
    node = c.nodes[1]
    req = _req("alone", message="a1" * 4)
    nonces, pkg = _package(c, (1,), req)
    nid = nonces[1]["nonce_id"]
    _refused(
        Kind.BAD_SIGNING_PACKAGE,
        "signing package has 1 signers, the key needs 2",
        node.frost_sign,
        FK,
        nid,
        req,
        pkg,
        coordinator_verified=True,
    )
    _refused(
        Kind.NONCE_USED,
        f"nonce {nid} was already used",
        node.frost_sign,
        FK,
        nid,
        req,
        pkg,
        coordinator_verified=True,
    )


def test_a_presignature_held_under_another_id_is_refused_as_used_by_the_signing_step(
    harness: tuple[InProc, Any, Any],
) -> None:
    """DKLs23's own single-use defence, behind the pool's: a presignature object that the
    node's memory pool holds under a second id (the state a pool bug would leave) is marked
    under that id, then ``sign_with_presignature`` asks the ledger about the object's own
    id, is told no, and refuses: the node's ``presignature-used`` naming the presignature,
    not a generic bad request, and no partial. The object is burnt with it: under its own
    id it is refused too, and never signs."""
    import dataclasses

    c, _, _ = harness
    node = c.nodes[1]
    p = _presign(c, [1, 2])
    pid = p["presignature_id"]
    held = node.shares.ledger_item(pid)
    assert held is not None
    alias = secrets.token_hex(32)
    node.shares.pool.add([dataclasses.replace(held, item_id=alias)])
    req = _req("alias", EK, hashlib.sha256(b"alias").hexdigest())
    _refused(
        Kind.PRESIGNATURE_USED,
        f"presignature {pid} is already marked used in storage",
        node.ecdsa_sign,
        EK,
        alias,
        req,
        coordinator_verified=True,
    )
    _refused(
        Kind.PRESIGNATURE_USED,
        "presignature object already used",
        node.ecdsa_sign,
        EK,
        pid,
        req,
        coordinator_verified=True,
    )


def test_another_nodes_presignature_in_this_nodes_pool_is_a_bad_request_without_a_partial(
    harness: tuple[InProc, Any, Any],
) -> None:
    """A presignature of node 2 held in node 1's pool (the state a pool bug, or a share
    store mixed up between nodes, would leave) passes the pipeline's checks (same key,
    same kind) and is refused by DKLs23's own check that a presignature belongs to the
    share's party: the node's ``bad-request``, no partial. Node 2's own copy still signs."""
    import dataclasses

    c, _, eres = harness
    p = _presign(c, [1, 2])
    pid = p["presignature_id"]
    theirs = c.nodes[2].shares.ledger_item(pid)
    assert theirs is not None
    alias = secrets.token_hex(32)
    c.nodes[1].shares.pool.add([dataclasses.replace(theirs, item_id=alias)])
    digest = hashlib.sha256(b"mixed pools").digest()
    req = _req("mixed", EK, digest.hex())
    _refused(
        Kind.BAD_REQUEST,
        "presignature belongs to another party",
        c.nodes[1].ecdsa_sign,
        EK,
        alias,
        req,
        coordinator_verified=True,
    )
    parts = {s: c.nodes[s].ecdsa_sign(EK, pid, req, coordinator_verified=True) for s in (1, 2)}
    sig = _combine_ecdsa(p, parts, digest, eres["public_key"])
    assert PublicKey(bytes.fromhex(eres["public_key"])).verify(sig.to_der(), digest, hasher=None)
