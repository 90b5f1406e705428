"""The policy's structure and wire form, the checks mutation testing of ``check_policy``,
``decode_policy`` and their helpers asks to pin (issue 16; docs/MUTATION.md, session 23).

Pure and fast (first in ``custody/policy.py``'s mutation selection). Each test names the
check it pins; refusals are asserted by their exact message (anchored), so a check that
fires late, with another field's words, or only as a wrapped error is told apart. Passkey
credentials are real EC P-256 keys of the software authenticator
(``tests/console/authenticator.py``); Ed25519 approver keys are pynacl keys."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import replace
from typing import Any

import cbor2
import nacl.signing
import pytest

from custody import policy as pol
from custody.policy import Rule
from tests.console.authenticator import SoftAuthenticator
from tests.custody.policy.helpers import ALICE, approvers

F = frozenset


def key() -> bytes:
    return bytes(nacl.signing.SigningKey.generate().verify_key)


def check(**fields: Any) -> pol.Policy:
    return pol.check_policy(pol.Policy(**fields))


def refused(message: str, **fields: Any) -> None:
    with pytest.raises(pol.PolicyError, match="^" + re.escape(message) + "$"):
        check(**fields)


def need(*terms: Any) -> tuple[Rule, ...]:
    return (Rule("r", "approve", approvals=pol.Requirement("all", terms)),)


# -- approver groups --------------------------------------------------------------------------


def test_a_passkey_approver_listed_twice_in_one_group_is_refused() -> None:
    """Found by this session's review of the passkey branch: the "twice" check sat after the
    passkey branch's ``continue``, so a group could list one passkey approver twice, and
    ``verify_approvals`` counts a group's members, so one approval met a 2-of-2 quorum."""
    alice = pol.Approver("alice", b"", SoftAuthenticator().credential)
    refused(
        "approver group t: alice twice",
        approver_groups=(pol.ApproverGroup("t", (alice, alice)),),
        rules=need(pol.GroupQuorum("t", 2)),
    )
    g, _ = approvers("t", 1)
    (bob,) = g.approvers
    # and a passkey approver beside an Ed25519 approver of the same id, in either order
    for pair in (
        (alice, replace(bob, approver_id="alice")),
        (replace(bob, approver_id="alice"), alice),
    ):
        refused("approver group t: alice twice", approver_groups=(pol.ApproverGroup("t", pair),))
    # the same passkey approver in two groups is one approver (allowed)
    two = check(
        approver_groups=(pol.ApproverGroup("t", (alice,)), pol.ApproverGroup("u", (alice,)))
    )
    assert [len(x.approvers) for x in two.approver_groups] == [1, 1]


def test_an_ed25519_approver_after_a_passkey_approver_is_still_checked() -> None:
    alice = pol.Approver("alice", b"", SoftAuthenticator().credential)
    g, _ = approvers("t", 2)
    b1, b2 = g.approvers
    assert check(approver_groups=(pol.ApproverGroup("t", (alice, b1)),)).approver("t-1") == b1
    refused(
        "approver t-1: public_key is 32 bytes",
        approver_groups=(pol.ApproverGroup("t", (alice, replace(b1, public_key=bytes(31)))),),
    )
    refused(
        "approver t-2: public key used by another approver",
        approver_groups=(
            pol.ApproverGroup("t", (b1, alice, replace(b2, public_key=b1.public_key))),
        ),
    )


def test_a_malformed_passkey_credential_is_a_policy_error_naming_the_approver() -> None:
    cred = SoftAuthenticator().credential
    for change, field in (
        ({"credential_id": bytes(15)}, "credential_id: 16-1023 bytes"),
        ({"rp_id": "Local Host"}, "rp_id: a lower-case host name"),
    ):
        bad = pol.Approver("alice", b"", replace(cred, **change))
        refused(
            f"approver alice: passkey.{field}",
            approver_groups=(pol.ApproverGroup("t", (bad,)),),
        )


def test_one_passkey_credential_cannot_belong_to_two_approvers() -> None:
    cred = SoftAuthenticator().credential
    refused(
        "approver bob: passkey credential used by another approver",
        approver_groups=(
            pol.ApproverGroup("t", (pol.Approver("alice", b"", cred),)),
            pol.ApproverGroup("u", (pol.Approver("bob", b"", cred),)),
        ),
    )


# -- rules ------------------------------------------------------------------------------------


def test_rule_ids_are_unique_and_default_deny_is_reserved() -> None:
    refused(
        "rule r: duplicate (or reserved) rule id", rules=(Rule("r", "deny"), Rule("r", "allow"))
    )
    refused(
        "rule default-deny: duplicate (or reserved) rule id", rules=(Rule("default-deny", "deny"),)
    )
    assert [r.rule_id for r in check(rules=(Rule("r", "deny"), Rule("s", "deny"))).rules] == [
        "r",
        "s",
    ]


def test_unknown_names_are_refused_naming_the_first_in_sorted_order() -> None:
    refused(
        "rule r: unknown operations ['burn', 'mint']",
        rules=(Rule("r", "allow", operations=F({"mint", "burn", "transfer"})),),
    )
    refused("rule r: no wallet 'a'", rules=(Rule("r", "allow", wallets=F({"b", "a"})),))
    refused("rule r: no allowlist 'a'", rules=(Rule("r", "allow", allowlists=F({"b", "a"})),))
    # one known and one unknown: the unknown one is named
    w = pol.Wallet("a", F({"k"}))
    refused(
        "rule r: no wallet 'b'", rules=(Rule("r", "allow", wallets=F({"a", "b"})),), wallets=(w,)
    )
    assert check(rules=(Rule("r", "allow", operations=F(pol.OPERATIONS)),))


def test_a_time_of_day_with_equal_bounds_is_refused() -> None:
    for s in (0, 5, 86_399):
        refused(
            "rule r: time_of_day start and end differ",
            rules=(Rule("r", "allow", time_of_day=pol.TimeWindow(s, s)),),
        )


def test_requirements_nest_one_level_and_every_term_is_checked() -> None:
    g, _ = approvers("t", 3)
    nested = pol.Requirement("any", (pol.GroupQuorum("t", 1),))
    assert check(rules=need(nested, nested), approver_groups=(g,))
    # a term after a nested requirement is still checked (the loop goes on past it)
    refused(
        r"rule r: approvals.terms[1].m (t): an integer in [1, 3]",
        rules=need(nested, pol.GroupQuorum("t", 4)),
        approver_groups=(g,),
    )
    refused(
        "rule r: approvals.terms[1]: no approver group 'x'",
        rules=need(nested, pol.GroupQuorum("x", 1)),
        approver_groups=(g,),
    )
    refused(
        "rule r: approvals.terms[0].terms[1].m (t): an integer in [1, 3]",
        rules=need(pol.Requirement("any", (pol.GroupQuorum("t", 1), pol.GroupQuorum("t", 0)))),
        approver_groups=(g,),
    )
    # two levels down is refused, at the second level, however deep
    deep = pol.Requirement("all", (nested,))
    refused(
        "rule r: approvals.terms[0].terms[0]: requirements nest one level only",
        rules=need(deep),
        approver_groups=(g,),
    )
    refused(
        "rule r: approvals.terms[0].terms[0]: requirements nest one level only",
        rules=need(pol.Requirement("all", (deep,))),
        approver_groups=(g,),
    )


# -- the objects ------------------------------------------------------------------------------


def test_every_policy_type_is_frozen_and_hashable() -> None:
    cred = SoftAuthenticator().credential
    objects: list[Any] = [
        pol.Approver("a", key()),
        pol.Approver("p", b"", cred),
        pol.ApproverGroup("g", ()),
        pol.AllowlistEntry("x", 0),
        pol.Allowlist("l", ()),
        pol.Wallet("w", F({"k"})),
        pol.GroupQuorum("g", 1),
        pol.Requirement("all", (pol.GroupQuorum("g", 1),)),
        pol.Velocity("key", 1, 1),
        pol.TimeWindow(0, 1),
        Rule("r", "deny"),
        pol.EMPTY_POLICY,
        pol.Facts("raw", "k", "i"),
        pol.Decision("deny", "r", pol.Reason.DENIED),
    ]
    for obj in objects:
        field = dataclasses.fields(obj)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, getattr(obj, field))
        hash(obj)


def test_a_decision_defaults_to_no_requirement_version_0_and_no_digest() -> None:
    d = pol.Decision("approve", "r", pol.Reason.APPROVALS_REQUIRED)
    assert (d.requirement, d.policy_version, d.governance_digest, d.detail) == (None, 0, b"", "")


def test_a_policy_is_empty_only_without_any_part() -> None:
    assert pol.EMPTY_POLICY.empty is True
    g, _ = approvers("t", 1)
    for part in (
        {"rules": (Rule("r", "deny"),)},
        {"allowlists": (pol.Allowlist("l", ()),)},
        {"wallets": (pol.Wallet("w", F({"k"})),)},
        {"approver_groups": (g,)},
    ):
        assert check(**part).empty is False, part


def test_the_groups_a_requirement_names_include_nested_ones() -> None:
    req = pol.Requirement(
        "any",
        (
            pol.GroupQuorum("a", 1),
            pol.Requirement("all", (pol.GroupQuorum("b", 1), pol.GroupQuorum("c", 2))),
            pol.GroupQuorum("a", 2),
        ),
    )
    assert req.groups() == F({"a", "b", "c"})
    assert pol.Requirement("all", ()).groups() == F()


def test_lookups_by_id_find_the_named_group_and_approver() -> None:
    t, _ = approvers("t", 2)
    u, _ = approvers("u", 1)
    p = check(approver_groups=(t, u))
    assert p.group("u") is u and p.group("t") is t and p.group("v") is None
    assert p.approver("u-1") is u.approvers[0] and p.approver("t-2") is t.approvers[1]
    assert p.approver("v-1") is None
    assert t.member("t-2") is t.approvers[1] and t.member("u-1") is None


# -- the wire form ----------------------------------------------------------------------------


def _canonical(policy: pol.Policy) -> dict[str, Any]:
    """The wire form as a governance document carries it: canonical CBOR, decoded again."""
    raw: dict[str, Any] = cbor2.loads(cbor2.dumps(policy.to_cbor(), canonical=True))
    return raw


def test_passkey_and_ed25519_approvers_round_trip_through_canonical_cbor() -> None:
    cred = SoftAuthenticator().credential
    g, _ = approvers("t", 1)
    group = pol.ApproverGroup("t", (*g.approvers, pol.Approver("alice", b"", cred)))
    policy = check(approver_groups=(group,))
    raw = _canonical(policy)
    assert raw["approver_groups"][0][1] == [
        ["t-1", g.approvers[0].public_key],
        ["alice", cred.to_cbor()],
    ]
    assert pol.decode_policy(raw) == policy
    assert pol.decode_policy(raw).approver("alice").passkey == cred  # type: ignore[union-attr]


def test_a_malformed_passkey_map_is_named_as_the_approvers_not_wrapped() -> None:
    base = pol.EMPTY_POLICY.to_cbor()
    groups = [["t", [["alice", {"credential_id": b""}]]]]
    with pytest.raises(pol.PolicyError, match=r"^approver alice: expected fields") as err:
        pol.decode_policy({**base, "approver_groups": groups})
    assert err.value.__cause__ is None  # PasskeyError replaced, not chained


def test_the_wire_form_names_the_field_exactly() -> None:
    g, _ = approvers("t", 2)
    good = _canonical(check(rules=need(pol.GroupQuorum("t", 1)), approver_groups=(g,)))
    rule = good["rules"][0]

    def bad(message: str, **changes: Any) -> None:
        with pytest.raises(pol.PolicyError, match="^" + re.escape(message) + "$"):
            pol.decode_policy({**good, **changes})

    bad(
        "rules[0]: a map with id, action and known conditions only",
        rules=[{**rule, "colour": ["red"]}],
    )
    bad("rules[0]: a map with id, action and known conditions only", rules=[{"action": "deny"}])
    bad("rules[1]: a map with id, action and known conditions only", rules=[rule, ["r"]])
    bad("rules[0].approvals.terms: a list", rules=[{**rule, "approvals": ["all", "t"]}])
    bad(
        "rules[0].approvals: [op, terms] with op all or any",
        rules=[{**rule, "approvals": ["all", [], 1]}],
    )
    bad("rules[0].approvals: a list", rules=[{**rule, "approvals": "all"}])
    # a term that is neither a quorum nor a requirement
    bad("rules[0].approvals.terms[0]: a list", rules=[{**rule, "approvals": ["all", [5]]}])
    bad(
        "rules[0].approvals.terms[0]: [op, terms] with op all or any",
        rules=[{**rule, "approvals": ["all", [[1, 1]]]}],
    )
    bad(
        "rules[0].approvals.terms[0]: [op, terms] with op all or any",
        rules=[{**rule, "approvals": ["all", [["t", 1, 1]]]}],
    )
    bad(
        "rules[0].approvals.terms[1].m: an integer in [1, 255]",
        rules=[{**rule, "approvals": ["any", [["t", 1], ["t", True]]]}],
    )
    bad("rules[0].velocity: a list", rules=[{**rule, "velocity": {"key": 1}}])
    bad("rules[0].velocity: items are lists of 3", rules=[{**rule, "velocity": [["key", 1, 2, 3]]}])
    bad("rules[0].velocity: items are lists of 3", rules=[{**rule, "velocity": ["key"]}])
    bad("rules[0].time_of_day: [start, end]", rules=[{**rule, "time_of_day": [1]}])
    bad(
        "rules[0].initiators: a non-empty sorted list (one encoding per policy)",
        rules=[{**rule, "initiators": ["b", "a"]}],
    )
    bad("allowlists: a list", allowlists={"l": []})
    bad("allowlists: items are lists of 2", allowlists=[["l", [], 1]])
    bad("allowlist l: a list", allowlists=[["l", "a"]])
    bad("allowlist l: items are lists of 3", allowlists=[["l", [["a", 0, ""], ["b", 0, "", 1]]]])
    bad("wallets: items are lists of 2", wallets=[["w"]])
    bad("wallet w: distinct strings", wallets=[["w", ["k", "k"]]])
    bad("approver_groups: items are lists of 2", approver_groups=[["t"]])
    bad("approver group t: a list", approver_groups=[["t", "t-1"]])
    for fields in ({k: v for k, v in good.items() if k != "wallets"}, {**good, "extra": []}):
        with pytest.raises(
            pol.PolicyError,
            match=re.escape(
                "policy: expected fields ['allowlists', 'approver_groups', 'rules', 'wallets']"
            ),
        ):
            pol.decode_policy(fields)


def test_the_wire_form_of_each_field_lands_in_its_place() -> None:
    g, _ = approvers("t", 3)
    rule = Rule(
        "r",
        "approve",
        kinds=F({"btc-psbt"}),
        initiators=F({"ops-1", "ops-2"}),
        min_amount=3,
        max_amount=9,
        velocity=(pol.Velocity("destination", 7, 8),),
        time_of_day=pol.TimeWindow(100, 50),
        approvals=pol.Requirement(
            "any", (pol.Requirement("all", (pol.GroupQuorum("t", 2),)), pol.GroupQuorum("t", 3))
        ),
    )
    policy = check(
        rules=(rule,),
        allowlists=(
            pol.Allowlist("l", (pol.AllowlistEntry(ALICE, 11, "x"), pol.AllowlistEntry("bc1q", 0))),
        ),
        wallets=(pol.Wallet("w", F({"k2", "k1"})),),
        approver_groups=(g,),
    )
    raw = _canonical(policy)
    assert raw["rules"] == [
        {
            "id": "r",
            "action": "approve",
            "kinds": ["btc-psbt"],
            "initiators": ["ops-1", "ops-2"],
            "min_amount": 3,
            "max_amount": 9,
            "velocity": [["destination", 7, 8]],
            "time_of_day": [100, 50],
            "approvals": ["any", [["all", [["t", 2]]], ["t", 3]]],
        }
    ]
    assert raw["allowlists"] == [["l", [[ALICE, 11, "x"], ["bc1q", 0, ""]]]]
    assert raw["wallets"] == [["w", ["k1", "k2"]]]
    back = pol.decode_policy(raw)
    assert back == policy
    r = back.rules[0]
    assert (r.min_amount, r.max_amount, r.time_of_day) == (3, 9, pol.TimeWindow(100, 50))
    assert r.velocity == (pol.Velocity("destination", 7, 8),)
    assert back.allowlists[0].entries[1] == pol.AllowlistEntry("bc1q", 0, "")
    # a bare deny rule encodes as its id and action only
    assert _canonical(check(rules=(Rule("d", "deny"),)))["rules"] == [{"id": "d", "action": "deny"}]


def test_a_list_among_a_passkeys_origins_is_refused_by_name() -> None:
    """A passkey map whose origins hold a list: check_credential once raised TypeError
    (``set()`` of an unhashable origin) before its per-origin check, which decode_policy's
    last resort turned into "policy: unhashable type"; since session 23 the origin is
    refused by name, as a PolicyError with no TypeError behind it."""
    cred = SoftAuthenticator().credential.to_cbor()
    base = pol.EMPTY_POLICY.to_cbor()
    groups = [["t", [["alice", {**cred, "origins": [["https://example.com"]]}]]]]
    with pytest.raises(pol.PolicyError, match=r"^approver alice\.origins: \[") as err:
        pol.decode_policy({**base, "approver_groups": groups})
    assert not isinstance(err.value.__cause__, TypeError)
