"""custody.governance outside its verification and structure functions: the document's
methods and constants, the pinned coordinators (issue 14), and the officer and approver key
files; the checks mutation testing asks to pin (issue 16; docs/MUTATION.md,
"custody/governance.py (session 23)").

Pure, real keys (pynacl Ed25519 and X25519; key files under libsodium's Argon2id at its
interactive cost, the files' encryption XChaCha20-Poly1305); a key file forged by hand
(a header whose public key does not match the sealed seed) is built here with
nacl.bindings from the format the module comment documents."""

from __future__ import annotations

import dataclasses
import hashlib

import cbor2
import nacl.bindings
import nacl.public
import nacl.pwhash
import nacl.signing
import nacl.utils
import pytest

from custody import governance as gov
from custody.policy import Approver, ApproverGroup, Policy, check_policy

PASS = b"correct horse"
OFF = {f"officer-{i}": nacl.signing.SigningKey(bytes([i]) * 32) for i in (1, 2, 3)}
N = {f"node-{i}": nacl.signing.SigningKey(bytes([10 + i]) * 32) for i in (1, 2)}
BOX = {n: bytes(nacl.public.PrivateKey(bytes([20 + i]) * 32).public_key) for i, n in enumerate(N)}
C = [nacl.signing.SigningKey(bytes([30 + i]) * 32) for i in range(3)]


def pk(k: nacl.signing.SigningKey) -> bytes:
    return bytes(k.verify_key)


def body(**changes: object) -> gov.Governance:
    b = gov.Governance(
        cluster_id="c1",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=tuple(gov.Officer(o, pk(k)) for o, k in OFF.items()),
        quorum=2,
        roster=tuple(gov.RosterNode(n, i + 1, pk(k), BOX[n]) for i, (n, k) in enumerate(N.items())),
    )
    return dataclasses.replace(b, **changes)  # type: ignore[arg-type]


def malformed(b: gov.Governance) -> str:
    with pytest.raises(gov.GovernanceError) as e:
        gov.check_body(b)
    assert e.value.kind is gov.GovernanceErrorKind.MALFORMED
    return e.value.detail


def coords(*names: str) -> tuple[gov.PinnedCoordinator, ...]:
    return tuple(gov.PinnedCoordinator(n, pk(C[i])) for i, n in enumerate(names))


# -- the document's methods and constants -------------------------------------------------


def test_formats_1_2_3_in_the_encoding() -> None:
    assert (gov.FORMAT, gov.FORMAT_WITH_POLICY, gov.FORMAT_WITH_PASSKEYS) == (1, 2, 3)
    plain = body()
    raw = cbor2.loads(plain.encode())
    assert raw["format"] == 1 and "policy" not in raw and "coordinators" not in raw
    assert plain.encode() == cbor2.dumps(
        {
            "format": 1,
            "cluster_id": "c1",
            "version": 1,
            "previous": bytes(32),
            "officers": [[o, pk(k)] for o, k in OFF.items()],
            "quorum": 2,
            "roster": [[n.node_id, n.party_id, n.sign_pk, n.box_pk] for n in plain.roster],
            "raw_signing_keys": [],
        },
        canonical=True,
    )
    approver = nacl.signing.SigningKey(b"\x41" * 32)
    policy = check_policy(
        Policy(approver_groups=(ApproverGroup("g", (Approver("ann", pk(approver)),)),))
    )
    with_policy = body(policy=policy)
    assert with_policy.format == 2
    assert cbor2.loads(with_policy.encode())["format"] == 2
    assert gov.decode_body(with_policy.encode()) == with_policy
    assert gov.decode_body(plain.encode()) == plain


def test_the_digest_is_the_documented_sha256_and_the_genesis_names_none() -> None:
    b = body()
    assert gov.GENESIS_PREVIOUS == bytes(32) and len(gov.GENESIS_PREVIOUS) == 32
    want = hashlib.sha256(b"tpwc-governance-digest-v1\x00" + b.encode()).digest()
    assert isinstance(b.digest, bytes) and b.digest == want


def test_a_successor_is_the_next_version_chained_to_this_one() -> None:
    g1 = gov.check_body(body())
    g2 = g1.successor(quorum=3)
    assert (g2.version, g2.previous, g2.quorum, g2.cluster_id) == (2, g1.digest, 3, "c1")
    g3 = g2.successor()
    assert (g3.version, g3.previous) == (3, g2.digest)
    for field in ("version", "previous", "cluster_id"):
        with pytest.raises(ValueError, match="follow from the current version"):
            g1.successor(**{field: None})
    with pytest.raises(gov.GovernanceError, match="quorum"):
        g1.successor(quorum=4)  # a proposal is checked


def test_lookups_find_the_one_asked_for() -> None:
    b = body(coordinators=coords("coord-a", "coord-b"))
    assert b.node("node-2") == b.roster[1] and b.node("node-1") == b.roster[0]
    assert b.node("node-9") is None
    assert b.node_by_party(2) == b.roster[1] and b.node_by_party(1) == b.roster[0]
    assert b.node_by_party(3) is None
    assert b.officer("officer-2") == b.officers[1] and b.officer("officer-1") == b.officers[0]
    assert b.officer("mallory") is None
    assert b.coordinator(pk(C[1])).name == "coord-b"  # type: ignore[union-attr]
    assert b.coordinator(pk(C[0])).name == "coord-a"  # type: ignore[union-attr]
    assert b.coordinator(pk(C[2])) is None
    assert body().coordinator(pk(C[0])) is None  # no list: nobody is pinned here


def test_raw_signing_is_per_listed_key_or_every_key_for_the_wildcard() -> None:
    b = body(raw_signing_keys=frozenset({"k1"}))
    assert b.raw_enabled("k1") and not b.raw_enabled("k2")
    dev = body(raw_signing_keys=frozenset({gov.ALL_KEYS}))
    assert dev.raw_enabled("k1") and dev.raw_enabled("anything")
    assert not body().raw_enabled("k1")


def test_refuse_outsiders_lets_the_roster_through_and_names_the_rest() -> None:
    b = body()
    b.refuse_outsiders(["node-1", "node-2"])
    b.refuse_outsiders([])
    with pytest.raises(gov.GovernanceError) as e:
        b.refuse_outsiders(["node-1", "node-9", "node-8"])
    assert e.value.kind is gov.GovernanceErrorKind.UNDER_SIGNED
    assert e.value.detail == "not in governance version 1's roster: node-8, node-9"


def test_with_signature_replaces_an_officers_signature_and_keeps_the_others() -> None:
    doc = gov.unsigned(body())
    doc = doc.with_signature(OFF["officer-1"], "officer-1").with_signature(
        OFF["officer-2"], "officer-2"
    )
    doc = doc.with_signature(OFF["officer-1"], "officer-1")
    assert [s.officer_id for s in doc.signatures] == ["officer-2", "officer-1"]
    message = b"tpwc-governance-v1\x00" + body().encode()
    for s in doc.signatures:
        OFF[s.officer_id].verify_key.verify(message, s.signature)
    assert doc.encode() == cbor2.dumps(
        {
            "body": body().encode(),
            "signatures": [[s.officer_id, s.signature] for s in doc.signatures],
        },
        canonical=True,
    )
    assert gov.verify_genesis(gov.decode(doc.encode())) == body()


def test_every_value_type_is_frozen() -> None:
    b = body(coordinators=coords("coord-a"))
    doc = gov.unsigned(b).with_signature(OFF["officer-1"], "officer-1")
    key, _ = gov.create_officer_key("ann", PASS, cost=gov.INTERACTIVE)
    values = [
        (b, "quorum"),
        (b.officers[0], "public_key"),
        (b.roster[0], "party_id"),
        (b.coordinators[0], "public_key"),  # type: ignore[index]
        (doc, "signatures"),
        (doc.signatures[0], "signature"),
        (gov.INTERACTIVE, "opslimit"),
        (key, "public_key"),
        (
            gov.read_principal_public(
                gov.create_officer_key("bo", PASS, cost=gov.INTERACTIVE)[1], "officer"
            ),
            "public_key",
        ),
    ]
    for value, name in values:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, None)
        hash(value)


def test_the_state_holds_what_it_verified() -> None:
    doc = gov.unsigned(body())
    for o in ("officer-1", "officer-2"):
        doc = doc.with_signature(OFF[o], o)
    state = gov.GovernanceState.from_genesis(doc, cluster_id="c1")
    assert isinstance(state, gov.GovernanceState) and state.current == body()
    nxt = gov.unsigned(body().successor(quorum=3))
    for o in OFF:
        nxt = nxt.with_signature(OFF[o], o)
    assert state.advance(nxt).version == 2 and state.current.quorum == 3
    with pytest.raises(gov.GovernanceError):
        gov.GovernanceState.from_genesis(doc, cluster_id="c2")


# -- pinned coordinators (issue 14) -------------------------------------------------------


def test_coordinators_are_pinned_and_round_trip() -> None:
    b = gov.check_body(body(coordinators=coords("coord-a", "coord-b")))
    raw = cbor2.loads(b.encode())
    assert raw["coordinators"] == [["coord-a", pk(C[0])], ["coord-b", pk(C[1])]]
    assert gov.decode_body(b.encode()) == b
    assert gov.decode_body(body().encode()).coordinators is None


def test_a_pinned_list_is_a_nonempty_tuple() -> None:
    want = "coordinators: at least one (leave the field out for each node's init key)"
    assert malformed(body(coordinators=())) == want
    assert malformed(body(coordinators=list(coords("coord-a")))) == want


def test_each_pinned_coordinator_is_checked() -> None:
    assert malformed(body(coordinators=(gov.PinnedCoordinator("bad name", pk(C[0])),))) == (
        "coordinators[0].name: an id is 1-64 characters of [A-Za-z0-9._:-]"
    )
    assert malformed(body(coordinators=(gov.PinnedCoordinator("c", b"\x01" * 31),))) == (
        "coordinator c: public_key: an Ed25519 public key is 32 bytes"
    )
    two = (gov.PinnedCoordinator("c", pk(C[0])), gov.PinnedCoordinator("c", pk(C[1])))
    assert malformed(body(coordinators=two)) == "coordinators: duplicate name c"
    same = (gov.PinnedCoordinator("a", pk(C[0])), gov.PinnedCoordinator("b", pk(C[0])))
    assert malformed(body(coordinators=same)) == "coordinator b: public key used by another"


def test_a_coordinator_key_is_never_an_officers_or_a_nodes() -> None:
    for key in (pk(OFF["officer-2"]), pk(N["node-1"])):
        pinned = (gov.PinnedCoordinator("coord-a", pk(C[0])), gov.PinnedCoordinator("x", key))
        assert malformed(body(coordinators=pinned)) == (
            "coordinator x: public key is an officer's or a node's"
        )


def test_decode_body_reads_the_coordinator_pairs() -> None:
    raw = cbor2.loads(body(coordinators=coords("coord-a")).encode())
    raw["coordinators"] = [["coord-a"]]
    with pytest.raises(gov.GovernanceError, match=r"^coordinators\[0\]: a list of 2$"):
        gov.decode_body(cbor2.dumps(raw, canonical=True))
    raw["coordinators"] = [["coord-a", pk(C[0]), b""]]
    with pytest.raises(gov.GovernanceError, match=r"^coordinators\[0\]: a list of 2$"):
        gov.decode_body(cbor2.dumps(raw, canonical=True))


# -- key files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def officer_file() -> tuple[gov.Officer, bytes]:
    return gov.create_officer_key("alice", PASS, cost=gov.INTERACTIVE)


@pytest.fixture(scope="module")
def approver_file() -> tuple[Approver, bytes]:
    return gov.create_approver_key("ann", PASS, cost=gov.INTERACTIVE)


def test_a_key_file_opens_with_its_passphrase_to_the_key_it_names(officer_file) -> None:
    officer, blob = officer_file
    assert gov.read_officer_public(blob) == officer
    opened, signer = gov.open_officer_key(blob, PASS)
    assert opened == officer and bytes(signer.verify_key) == officer.public_key
    key = gov.read_principal_public(blob, "officer")
    assert (key.kind, key.principal_id, key.public_key) == ("officer", "alice", officer.public_key)


def test_key_files_and_their_headers_are_canonical_cbor(officer_file) -> None:
    _, blob = officer_file
    outer = cbor2.loads(blob)
    assert set(outer) == {"header", "nonce", "sealed"}
    assert cbor2.dumps(outer, canonical=True) == blob
    header = cbor2.loads(outer["header"])
    assert cbor2.dumps(header, canonical=True) == outer["header"]
    assert header["format"] == "tpwc-officer-key-v1" and header["officer_id"] == "alice"
    assert (header["opslimit"], header["memlimit"]) == (
        gov.INTERACTIVE.opslimit,
        gov.INTERACTIVE.memlimit,
    )


def test_a_passphrase_has_at_least_8_bytes() -> None:
    gov.create_officer_key("p8", b"12345678", cost=gov.INTERACTIVE)
    with pytest.raises(gov.OfficerKeyError, match="^a passphrase has at least 8 bytes$"):
        gov.create_officer_key("p7", b"1234567", cost=gov.INTERACTIVE)
    with pytest.raises(gov.OfficerKeyError):
        gov.create_approver_key("p0", b"", cost=gov.INTERACTIVE)


def test_an_unknown_kind_of_principal_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="^unknown principal kind 'admin'$"):
        gov.create_principal_key("admin", "x", PASS, cost=gov.INTERACTIVE)  # type: ignore[arg-type]


def test_an_approver_file_is_never_taken_for_an_officers(officer_file, approver_file) -> None:
    approver, ablob = approver_file
    _, oblob = officer_file
    assert gov.read_approver_public(ablob) == approver
    assert gov.open_approver_key(ablob, PASS)[0] == approver
    with pytest.raises(gov.OfficerKeyError) as e:
        gov.open_officer_key(ablob, PASS)
    assert str(e.value) == "not an officer key file: it is an approver key file"
    with pytest.raises(gov.OfficerKeyError) as e:
        gov.read_approver_public(oblob)
    assert str(e.value) == "not an approver key file: it is an officer key file"


def _edit_header(blob: bytes, **fields: object) -> bytes:
    outer = cbor2.loads(blob)
    header = {**cbor2.loads(outer["header"]), **fields}
    header = {k: v for k, v in header.items() if v is not ...}
    return cbor2.dumps({**outer, "header": cbor2.dumps(header, canonical=True)}, canonical=True)


def test_what_is_not_a_key_file_is_named_as_such(officer_file) -> None:
    _, blob = officer_file
    outer = cbor2.loads(blob)
    cases = {
        b"garbage": "not an officer key file",
        cbor2.dumps([1, 2]): "not an officer key file",
        cbor2.dumps({"header": b"\xff", "nonce": b"", "sealed": b""}): "not an officer key file",
        cbor2.dumps({k: v for k, v in outer.items() if k != "nonce"}): "not an officer key file",
        cbor2.dumps(
            {**outer, "header": cbor2.dumps([1])}
        ): "not an officer key file (unknown format)",
        _edit_header(blob, format="tpwc-admin-key-v1"): "not an officer key file (unknown format)",
        _edit_header(blob, officer_id=7): "not an officer key file (no officer_id)",
        _edit_header(blob, officer_id=...): "not an officer key file (no officer_id)",
    }
    for data, message in cases.items():
        with pytest.raises(gov.OfficerKeyError) as e:
            gov.read_officer_public(data)
        assert str(e.value) == message, data[:20]
        with pytest.raises(gov.OfficerKeyError):
            gov.open_officer_key(data, PASS)


@pytest.mark.parametrize(
    "fields",
    [
        {"salt": ...},  # KeyError
        {"opslimit": ...},  # KeyError
        {"salt": "x" * 16},  # a plain TypeError (nacl's kdf)
        {"salt": b"x" * 15},  # nacl's ValueError (a CryptoError)
        {"opslimit": "3"},  # nacl's TypeError (a CryptoError)
        {"memlimit": 1},
        {"officer_id": "mallory"},  # an edited header is the AEAD's associated data
    ],
)
def test_an_altered_header_is_one_error(officer_file, fields) -> None:
    _, blob = officer_file
    with pytest.raises(
        gov.OfficerKeyError, match="^wrong passphrase, or the key file was altered$"
    ):
        gov.open_officer_key(_edit_header(blob, **fields), PASS)


def test_a_wrong_passphrase_is_the_same_error(officer_file) -> None:
    _, blob = officer_file
    with pytest.raises(
        gov.OfficerKeyError, match="^wrong passphrase, or the key file was altered$"
    ):
        gov.open_officer_key(blob, b"wrong horse")


def test_a_truncated_ciphertext_is_the_same_error(officer_file) -> None:
    # shorter than the 16-byte tag: libsodium's binding raises a plain ValueError (cffi's
    # "negative array length"), not one of nacl's CryptoErrors
    _, blob = officer_file
    outer = cbor2.loads(blob)
    for sealed in (b"x", outer["sealed"][:15], b""):
        data = cbor2.dumps({**outer, "sealed": sealed}, canonical=True)
        with pytest.raises(gov.OfficerKeyError, match="^wrong passphrase, or the key file"):
            gov.open_officer_key(data, PASS)


def test_a_file_whose_header_names_another_public_key_is_refused() -> None:
    # well formed and decrypting, but the sealed seed is not the named key's: built by hand
    seed = bytes([7]) * 32
    other = nacl.signing.SigningKey(bytes([8]) * 32)
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    cost = gov.INTERACTIVE
    header = cbor2.dumps(
        {
            "format": "tpwc-officer-key-v1",
            "officer_id": "eve",
            "public_key": bytes(other.verify_key),
            "salt": salt,
            "opslimit": cost.opslimit,
            "memlimit": cost.memlimit,
        },
        canonical=True,
    )
    key = nacl.pwhash.argon2id.kdf(32, PASS, salt, opslimit=cost.opslimit, memlimit=cost.memlimit)
    nonce = nacl.utils.random(24)
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(seed, header, nonce, key)
    blob = cbor2.dumps({"header": header, "nonce": nonce, "sealed": sealed}, canonical=True)
    assert gov.read_officer_public(blob).public_key == bytes(other.verify_key)
    with pytest.raises(
        gov.OfficerKeyError, match="^key file's public key does not match its secret$"
    ):
        gov.open_officer_key(blob, PASS)
    # the same file with the right public key opens (the forgery above differs only there)
    right = cbor2.loads(header)
    right["public_key"] = bytes(nacl.signing.SigningKey(seed).verify_key)
    h2 = cbor2.dumps(right, canonical=True)
    sealed2 = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(seed, h2, nonce, key)
    blob2 = cbor2.dumps({"header": h2, "nonce": nonce, "sealed": sealed2}, canonical=True)
    assert gov.open_officer_key(blob2, PASS)[1].encode() == seed


# -- the document's size bound ------------------------------------------------------------


def _entry(size: int) -> int:
    """CBOR bytes of one signature entry with an id of ``size`` characters: array(2) 1,
    the text header 1 or 2, the id, the byte-string header 2 and 64 bytes."""
    return 1 + (1 if size < 24 else 2) + size + 2 + 64


def _signed_of(total: int) -> bytes:
    """A quorum-signed genesis of exactly ``total`` bytes: stranger entries whose ids are
    sized to fit (decoding does not ask who signed; verification skips strangers)."""
    doc = gov.unsigned(body())
    for o in ("officer-1", "officer-2"):
        doc = doc.with_signature(OFF[o], o)
    extra: list[gov.OfficerSignature] = []

    def entry(size: int) -> gov.OfficerSignature:
        return gov.OfficerSignature(f"x{len(extra):05d}".ljust(size, "p"), bytes(64))

    def encoded() -> bytes:
        return dataclasses.replace(doc, signatures=(*doc.signatures, *extra)).encode()

    bulk = (total - len(encoded()) - 4 * _entry(64)) // _entry(64)
    extra += [gov.OfficerSignature(f"x{i:05d}".ljust(64, "p"), bytes(64)) for i in range(bulk)]
    while total - len(encoded()) > 2 * _entry(64):
        extra.append(entry(64))
    room = total - len(encoded())
    for a in range(6, 65):
        for b in range(6, 65):
            if _entry(a) + _entry(b) == room:
                extra += [entry(a), entry(b)]
                data = encoded()
                assert len(data) == total
                return data
    raise AssertionError(room)


def test_a_signed_document_of_exactly_256_kib_is_verified_and_one_byte_more_is_refused() -> None:
    assert gov.MAX_DOCUMENT_BYTES == 262144
    at = _signed_of(262144)
    assert gov.verify_genesis(gov.decode(at), cluster_id="c1") == body()
    with pytest.raises(gov.GovernanceError) as e:
        gov.decode(_signed_of(262145))
    assert e.value.detail == "document: bytes of at most 262144"
