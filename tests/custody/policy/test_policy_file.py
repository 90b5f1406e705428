"""The human policy file: strict parsing with the path of every fault, printing, and the
round trip (hypothesis) through the file, its text and the governance document."""

from __future__ import annotations

import copy
import json
from typing import Any

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from custody import governance as gov
from custody import policy as pol
from custody import policy_file as pf
from tests.custody.policy.helpers import ALICE, BOB, governance

ANN = nacl.signing.SigningKey(b"\x01" * 32)
BOB_KEY = nacl.signing.SigningKey(b"\x02" * 32)


def sample_doc(ann_pk: str | None = None) -> dict[str, Any]:
    """A policy an officer might write: small ETH payments to payees, big ones approved."""
    return {
        "format": "tpwc-policy-v1",
        "rules": [
            {"id": "no-raw", "action": "deny", "kinds": ["raw"]},
            {
                "id": "small-eth",
                "action": "allow",
                "kinds": ["evm-tx"],
                "assets": ["ETH"],
                "chains": ["evm:1"],
                "allowlists": ["payees"],
                "max_amount": "1000000000000000000",
                "velocity": [{"scope": "key", "window": "24h", "limit": "5000000000000000000"}],
            },
            {
                "id": "big-eth",
                "action": "approve",
                "assets": ["ETH"],
                "allowlists": ["payees"],
                "approvals": {"all": [{"group": "treasury", "m": 2}]},
            },
            {
                "id": "office-messages",
                "action": "allow",
                "kinds": ["message"],
                "wallets": ["treasury"],
                "time_of_day": {"start": "08:00", "end": "18:00"},
            },
        ],
        "allowlists": [
            {
                "name": "payees",
                "entries": [
                    {"address": ALICE, "label": "Alice", "active_from": "2027-01-01T00:00:00Z"},
                    {"address": BOB, "active_from": "2027-01-16T00:00:00+01:00"},
                ],
            }
        ],
        "wallets": [{"name": "treasury", "keys": ["key-1", "key-2"]}],
        "approver_groups": [
            {
                "id": "treasury",
                "approvers": [
                    {"id": "ann", "public_key": ann_pk or bytes(ANN.verify_key).hex()},
                    {"id": "bob", "public_key": bytes(BOB_KEY.verify_key).hex()},
                ],
            }
        ],
    }


def test_the_sample_parses_to_the_engine_objects() -> None:
    p = pf.parse_policy(sample_doc())
    assert [r.rule_id for r in p.rules] == ["no-raw", "small-eth", "big-eth", "office-messages"]
    small = p.rules[1]
    assert small.max_amount == 10**18
    assert small.velocity == (pol.Velocity("key", 86_400, 5 * 10**18),)
    assert p.rules[3].time_of_day == pol.TimeWindow(8 * 3600, 18 * 3600)
    assert p.rules[2].approvals == pol.Requirement("all", (pol.GroupQuorum("treasury", 2),))
    entries = p.allowlists[0].entries
    assert entries[0] == pol.AllowlistEntry(ALICE, 1_798_761_600, "Alice")
    assert entries[1].active_from == 1_798_761_600 + 15 * 86_400 - 3600  # +01:00 offset
    assert p.wallets == (pol.Wallet("treasury", frozenset({"key-1", "key-2"})),)
    # and the governance document carries it
    body = governance(p)
    assert gov.decode_body(body.encode()).policy == p


def test_printing_is_the_normal_form() -> None:
    doc = sample_doc()
    printed = pf.print_policy(pf.parse_policy(doc))
    assert printed["allowlists"][0]["entries"][1] == {
        "address": BOB,
        "label": "",
        "active_from": "2027-01-15T23:00:00Z",
    }
    assert printed["rules"][1]["velocity"][0]["window"] == "1d"
    assert pf.print_policy(pf.parse_policy(printed)) == printed
    assert pf.loads(pf.dumps(pf.parse_policy(doc))) == pf.parse_policy(doc)


def test_key_file_references_are_resolved_by_the_caller() -> None:
    doc = sample_doc()
    doc["approver_groups"][0]["approvers"][0] = {"key_file": "keys/ann.key"}
    assert pf.key_file_references(doc) == ["keys/ann.key"]
    with pytest.raises(pf.PolicyFileError) as e:
        pf.parse_policy(doc)
    assert e.value.path == "approver_groups[0].approvers[0].key_file"
    ann = pol.Approver("ann", bytes(ANN.verify_key))
    assert pf.parse_policy(doc, key_files={"keys/ann.key": ann}) == pf.parse_policy(sample_doc())
    doc["approver_groups"][0]["approvers"][0]["id"] = "anna"
    with pytest.raises(pf.PolicyFileError) as e:
        pf.parse_policy(doc, key_files={"keys/ann.key": ann})
    assert e.value.path == "approver_groups[0].approvers[0].id"
    assert "is approver 'ann'" in str(e.value)
    # an approver key file read for real
    _, blob = gov.create_approver_key("cy", b"passphrase!", cost=gov.INTERACTIVE)
    cy = gov.read_approver_public(blob)
    doc["approver_groups"][0]["approvers"][0] = {"key_file": "cy.key"}
    p = pf.parse_policy(doc, key_files={"cy.key": cy})
    assert p.approver("cy") == cy


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at a path like ``rules[1].velocity[0].window`` (or delete it: ...)."""
    parts: list[str | int] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        parts.append(name)
        for idx in rest.rstrip("]").split("]["):
            if idx:
                parts.append(int(idx))
    target: Any = doc
    for p in parts[:-1]:
        target = target[p]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value


DELETE = object()
PK = bytes(ANN.verify_key).hex()

REFUSALS = [
    ("format", "tpwc-policy-v2", "format", "is not"),
    ("surplus", 1, "surplus", "unknown field"),
    ("rules", DELETE, "rules", "missing"),
    ("rules[1].velocity[0].window", "24 hours", "rules[1].velocity[0].window", "not a duration"),
    ("rules[1].velocity[0].window", "0s", "rules[1].velocity[0].window", "from 1s"),
    ("rules[1].velocity[0].window", "1h1d", "rules[1].velocity[0].window", "not a duration"),
    ("rules[1].velocity[0].window", "01h", "rules[1].velocity[0].window", "not a duration"),
    ("rules[1].velocity[0].scope", "wallet", "rules[1].velocity[0].scope", "key or destination"),
    ("rules[1].velocity[0].limit", 5, "rules[1].velocity[0].limit", "JSON string"),
    ("rules[1].velocity[0].per", "x", "rules[1].velocity[0].per", "unknown field"),
    ("rules[1].velocity", [], "rules[1].velocity", "at least one"),
    ("rules[1].max_amount", 1e18, "rules[1].max_amount", "JSON string"),
    ("rules[1].max_amount", "1.5", "rules[1].max_amount", "whole number"),
    ("rules[1].max_amount", "-1", "rules[1].max_amount", "whole number"),
    ("rules[1].max_amount", "007", "rules[1].max_amount", "whole number"),
    ("rules[1].max_amount", str(2**256 + 1), "rules[1].max_amount", "2**256"),
    ("rules[1].min_amount", str(2 * 10**18), "rules[1].min_amount", "above max_amount"),
    ("rules[1].kinds", ["evm_tx"], "rules[1].kinds[0]", "unknown kind"),
    ("rules[1].kinds", ["evm-tx", "evm-tx"], "rules[1].kinds[1]", "twice"),
    ("rules[1].kinds", [], "rules[1].kinds", "at least one"),
    ("rules[1].kinds", "evm-tx", "rules[1].kinds", "a list"),
    ("rules[1].chains", ["ethereum"], "rules[1].chains[0]", "not a chain"),
    ("rules[1].assets", ["eth"], "rules[1].assets[0]", "not an asset"),
    ("rules[1].operations", ["send"], "rules[1].operations[0]", "unknown operation"),
    ("rules[1].allowlists", ["payes"], "rules[1].allowlists[0]", "no allowlist 'payes'"),
    ("rules[3].wallets", ["tresury"], "rules[3].wallets[0]", "no wallet"),
    ("rules[1].id", "no-raw", "rules[1].id", "also rules[0]"),
    ("rules[1].id", "default-deny", "rules[1].id", "reserved"),
    ("rules[1].id", "has space", "rules[1].id", "not an id"),
    ("rules[1].action", "permit", "rules[1].action", "not one of"),
    ("rules[1].approvals", {"all": [{"group": "treasury", "m": 1}]}, "rules[1].approvals", "only"),
    ("rules[2].approvals", DELETE, "rules[2].approvals", "missing"),
    ("rules[2].approvals", {"every": []}, "rules[2].approvals", "exactly one"),
    ("rules[2].approvals.all[0].m", 3, "rules[2].approvals.all[0].m", "from 1 to the 2"),
    ("rules[2].approvals.all[0].m", 0, "rules[2].approvals.all[0].m", "from 1"),
    ("rules[2].approvals.all[0].group", "ops", "rules[2].approvals.all[0].group", "no approver"),
    (
        "rules[2].approvals.all[0]",
        {"any": [{"all": [{"group": "treasury", "m": 1}]}]},
        "rules[2].approvals.all[0].any[0]",
        "nest one level",
    ),
    ("rules[3].time_of_day.start", "8:00", "rules[3].time_of_day.start", "HH:MM"),
    ("rules[3].time_of_day.end", "24:00", "rules[3].time_of_day.end", "HH:MM"),
    ("rules[3].time_of_day.end", "08:00:00", "rules[3].time_of_day.end", "empty window"),
    ("rules[3].time_of_day.tz", "UTC", "rules[3].time_of_day.tz", "unknown field"),
    (
        "allowlists[0].entries[0].active_from",
        "2027-01-01T00:00:00",
        "allowlists[0].entries[0].active_from",
        "with an offset",
    ),
    (
        "allowlists[0].entries[0].active_from",
        "2027-02-30T00:00:00Z",
        "allowlists[0].entries[0].active_from",
        "day is out of range",
    ),
    (
        "allowlists[0].entries[0].active_from",
        1798761600,
        "allowlists[0].entries[0].active_from",
        "ISO 8601",
    ),
    (
        "allowlists[0].entries[0].active_from",
        "1969-12-31T23:59:59Z",
        "allowlists[0].entries[0].active_from",
        "before 1970",
    ),
    ("allowlists[0].entries[1].address", ALICE.upper(), "allowlists[0].entries[1].address", "also"),
    ("allowlists[0].entries[0].label", "x" * 129, "allowlists[0].entries[0].label", "0-128"),
    ("allowlists[0].entries[0].note", "x", "allowlists[0].entries[0].note", "unknown field"),
    ("wallets[0].keys", [], "wallets[0].keys", "at least one"),
    ("approver_groups[0].approvers", [], "approver_groups[0].approvers", "at least one"),
    (
        "approver_groups[0].approvers[0].public_key",
        PK.upper(),
        "approver_groups[0].approvers[0].public_key",
        "64 lower-case hex",
    ),
    (
        "approver_groups[0].approvers[0].public_key",
        "00" * 32,
        "approver_groups[0].approvers[0].public_key",
        "not a valid Ed25519",
    ),
    (
        "approver_groups[0].approvers[1].id",
        "ann",
        "approver_groups[0].approvers[1]",
        "ann is in treasury twice",
    ),
    (
        "approver_groups[0].approvers[1].public_key",
        PK,
        "approver_groups[0].approvers[1]",
        "already used by approver ann",
    ),
]


@pytest.mark.parametrize(("where", "value", "path", "words"), REFUSALS)
def test_every_refusal_names_its_path(where: str, value: Any, path: str, words: str) -> None:
    doc = copy.deepcopy(sample_doc())
    _set(doc, where, value)
    with pytest.raises(pf.PolicyFileError) as e:
        pf.parse_policy(doc)
    assert e.value.path == path, str(e.value)
    assert words in e.value.reason, str(e.value)
    assert str(e.value).startswith(path + ": ")


def test_an_approver_with_two_keys_and_a_duplicate_group_are_refused() -> None:
    doc = sample_doc()
    doc["approver_groups"].append(
        {"id": "ops", "approvers": [{"id": "ann", "public_key": bytes(BOB_KEY.verify_key).hex()}]}
    )
    with pytest.raises(pf.PolicyFileError) as e:
        pf.parse_policy(doc)
    assert e.value.path == "approver_groups[1].approvers[0]"
    assert "another public key in approver_groups[0]" in e.value.reason
    doc["approver_groups"][1] = copy.deepcopy(doc["approver_groups"][0])
    with pytest.raises(pf.PolicyFileError) as e:
        pf.parse_policy(doc)
    assert e.value.path == "approver_groups[1].id"


def test_json_text_is_parsed_strictly() -> None:
    text = json.dumps(sample_doc())
    assert pf.loads(text) == pf.parse_policy(sample_doc())
    with pytest.raises(pf.PolicyFileError, match="'format' appears twice"):
        pf.loads('{"format": "tpwc-policy-v1", "format": "tpwc-policy-v1", "rules": []}')
    with pytest.raises(pf.PolicyFileError, match="NaN is not JSON"):
        pf.loads('{"format": "tpwc-policy-v1", "rules": [], "x": NaN}')
    with pytest.raises(pf.PolicyFileError) as e:
        pf.loads("[1, 2")
    assert e.value.path == "json"
    with pytest.raises(pf.PolicyFileError) as e:
        pf.loads("[]")
    assert str(e.value) == "(document): an object, not a list"
    # an empty policy is a policy: it denies everything
    assert pf.loads('{"format": "tpwc-policy-v1", "rules": []}') == pol.EMPTY_POLICY


def test_durations_and_instants() -> None:
    assert pf.parse_duration("1w2d3h4m5s") == 9 * 86_400 + 3 * 3600 + 4 * 60 + 5
    assert pf.format_duration(9 * 86_400 + 3 * 3600 + 4 * 60 + 5) == "1w2d3h4m5s"
    assert pf.parse_duration("90s") == 90 and pf.format_duration(90) == "1m30s"
    assert pf.format_duration(0) == "0s"
    for bad in ("", "h", "1H", "1.5h", "-1h", "1 h", "1y", "1s1s"):
        with pytest.raises(pf.PolicyFileError):
            pf.parse_duration(bad)
    assert pf.parse_instant("1970-01-01T00:00Z") == 0
    assert pf.parse_instant("2027-01-15T10:00:00+02:00") == 1_800_000_000
    assert pf.format_instant(1_800_000_000) == "2027-01-15T08:00:00Z"
    for bad in ("2027-01-15", "2027-01-15T08:00:00.5Z", "20270115T080000Z", "2027-01-15 08:00Z"):
        with pytest.raises(pf.PolicyFileError):
            pf.parse_instant(bad)


def test_plain_words() -> None:
    p = pf.parse_policy(sample_doc())
    words = "\n".join(pf.describe_policy(p))
    assert "1. no-raw: DENY when kind raw" in words
    assert "amount at most 1 ETH (1000000000000000000 wei)" in words
    assert "at most 5 ETH (5000000000000000000 wei) per 1d for this key" in words
    assert "REQUIRE APPROVALS when asset ETH" in words
    assert "approvals: 2 of treasury (ann, bob)" in words
    assert "between 08:00 and 18:00 UTC" in words
    assert f"{ALICE} 'Alice' from 2027-01-01T00:00:00Z" in words
    assert pf.format_amount(150, ["EUR"]) == "1.5 EUR (150 minor units)"
    assert pf.format_amount(150, ["JPY"]) == "150 JPY (150 minor units)"
    assert pf.format_amount(150_000_000, ["BTC"]) == "1.5 BTC (150000000 sat)"
    assert pf.format_amount(7, ["0x" + "70" * 20]) == f"7 base units of 0x{'70' * 20}"
    assert pf.format_amount(7, ["ETH", "BTC"]) == "7 base units"
    assert "every request is denied" in "\n".join(pf.describe_policy(pol.EMPTY_POLICY))


# -- the round trip, for every policy the format can express ----------------------------------

ids = st.from_regex(r"\A[a-z][a-z0-9._:-]{0,11}\Z")
amounts = st.integers(0, 2**256)
# distinct valid Ed25519 public keys, made once (key derivation is the slow part)
KEYS = [bytes(nacl.signing.SigningKey(bytes([i]) * 32).verify_key) for i in range(1, 6)]
addresses = st.one_of(
    st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
    st.from_regex(r"\AGB[0-9]{2}[A-Z]{4}[0-9]{14}\Z"),
)
assets = st.one_of(
    st.sampled_from(["ETH", "BTC", "EUR", "JPY"]),
    st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
)
chains = st.one_of(
    st.integers(1, 10**6).map(lambda n: f"evm:{n}"),
    st.sampled_from([f"bitcoin:{n}" for n in ("mainnet", "testnet", "signet", "regtest")]),
)


def fsets(elements: st.SearchStrategy[str], max_size: int = 3) -> st.SearchStrategy[frozenset]:
    return st.frozensets(elements, max_size=max_size)


@st.composite
def policies(draw: st.DrawFn) -> pol.Policy:
    names = draw(st.lists(ids, unique=True, max_size=5))
    approvers = {a: pol.Approver(a, KEYS[i % len(KEYS)]) for i, a in enumerate(names)}
    groups = []
    if approvers:
        for gid in draw(st.lists(ids, unique=True, max_size=3)):
            members = draw(st.lists(st.sampled_from(sorted(approvers)), min_size=1, unique=True))
            groups.append(pol.ApproverGroup(gid, tuple(approvers[m] for m in members)))
    allowlists = [
        pol.Allowlist(
            name,
            tuple(
                pol.AllowlistEntry(
                    a, draw(st.integers(0, pf.MAX_INSTANT)), draw(st.text(max_size=8))
                )
                for a in draw(st.lists(addresses, unique_by=pol.normalize_address, max_size=3))
            ),
        )
        for name in draw(st.lists(ids, unique=True, max_size=2))
    ]
    wallets = [
        pol.Wallet(name, draw(st.frozensets(ids, min_size=1, max_size=3)))
        for name in draw(st.lists(ids, unique=True, max_size=2))
    ]
    sizes = {g.group_id: len(g.approvers) for g in groups}

    def quorum() -> pol.GroupQuorum:
        gid = draw(st.sampled_from(sorted(sizes)))
        return pol.GroupQuorum(gid, draw(st.integers(1, sizes[gid])))

    def requirement(depth: int) -> pol.Requirement:
        terms: list[pol.GroupQuorum | pol.Requirement] = []
        for _ in range(draw(st.integers(1, 3))):
            nested = depth == 0 and draw(st.booleans())
            terms.append(requirement(1) if nested else quorum())
        return pol.Requirement(draw(st.sampled_from(["all", "any"])), tuple(terms))

    rules = []
    for rid in draw(st.lists(ids.filter(lambda s: s != pol.DEFAULT_DENY), unique=True, max_size=4)):
        action = draw(st.sampled_from(["allow", "deny", "approve"] if sizes else ["allow", "deny"]))
        low, high = draw(st.one_of(st.none(), amounts)), draw(st.one_of(st.none(), amounts))
        if low is not None and high is not None and low > high:
            low, high = high, low
        tod = None
        if draw(st.booleans()):
            start, end = draw(st.integers(0, 86_399)), draw(st.integers(0, 86_399))
            tod = pol.TimeWindow(start, end) if start != end else None
        rules.append(
            pol.Rule(
                rule_id=rid,
                action=action,
                kinds=draw(fsets(st.sampled_from(sorted(pf.KNOWN_KINDS)))),
                operations=draw(fsets(st.sampled_from(pol.OPERATIONS))),
                keys=draw(fsets(ids)),
                wallets=draw(fsets(st.sampled_from(sorted(w.name for w in wallets))))
                if wallets
                else frozenset(),
                assets=draw(fsets(assets)),
                chains=draw(fsets(chains)),
                allowlists=draw(fsets(st.sampled_from(sorted(a.name for a in allowlists))))
                if allowlists
                else frozenset(),
                initiators=draw(fsets(ids)),
                min_amount=low,
                max_amount=high,
                velocity=tuple(
                    draw(
                        st.lists(
                            st.builds(
                                pol.Velocity,
                                st.sampled_from(["key", "destination"]),
                                st.integers(1, 366 * 86_400),
                                amounts,
                            ),
                            max_size=2,
                        )
                    )
                ),
                time_of_day=tod,
                approvals=requirement(0) if action == "approve" else None,
            )
        )
    return pol.check_policy(
        pol.Policy(tuple(rules), tuple(allowlists), tuple(wallets), tuple(groups))
    )


@given(policies())
def test_round_trip_through_the_file_and_its_text(p: pol.Policy) -> None:
    doc = pf.print_policy(p)
    assert pf.parse_policy(doc) == p
    assert pf.print_policy(pf.parse_policy(doc)) == doc  # printing is the normal form
    assert pf.loads(pf.dumps(p)) == p
    json.dumps(doc, allow_nan=False)  # plain JSON: strings, small integers, lists, objects


@given(policies())
def test_round_trip_through_the_governance_document(p: pol.Policy) -> None:
    body = governance(p)
    again = gov.decode_body(body.encode()).policy
    assert again == p
    assert pf.parse_policy(pf.print_policy(again)) == p
