"""The policy engine: each rule type, ordering and first match, deny by default, facts of
real decoded intents, and the policy's place in the governance document."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import cbor2
import coincurve
import pytest

from custody import governance as gov
from custody import policy as pol
from custody.kinds import decode
from custody.kinds.addresses import bitcoin_p2tr_address, p2tr_script, taproot_output_key
from custody.policy import Reason, Rule
from tests.custody.kinds.btc_build import b64, build_psbt
from tests.custody.kinds.test_iso20022 import pacs008
from tests.custody.policy.helpers import (
    ALICE,
    BOB,
    T0,
    TOKEN,
    approvers,
    erc20_transfer,
    evm_tx,
    facts,
    governance,
)

F = frozenset
ETH = 10**18


def ev(rules: list[Rule], f: pol.Facts, now: int = T0, **kw) -> pol.Decision:
    policy = pol.check_policy(
        pol.Policy(
            rules=tuple(rules),
            allowlists=(
                pol.Allowlist(
                    "payees", (pol.AllowlistEntry(ALICE.upper().replace("0X", "0x"), 0),)
                ),
            ),
            wallets=(pol.Wallet("treasury", F({"key-1", "key-2"})),),
            approver_groups=(approvers("treasury", 3)[0],),
        )
    )
    return pol.evaluate(policy, f, now=now, **kw)


def test_deny_by_default_for_the_empty_policy_and_when_nothing_matches() -> None:
    d = pol.evaluate(pol.EMPTY_POLICY, facts(), now=T0)
    assert (d.action, d.rule_id, d.reason) == ("deny", "default-deny", Reason.NO_RULE)
    d = ev([Rule("only-btc", "allow", assets=F({"BTC"}))], facts())
    assert (d.action, d.rule_id, d.reason) == ("deny", pol.DEFAULT_DENY, "policy-no-rule-matched")


def test_first_match_wins_in_order() -> None:
    allow, deny = Rule("a", "allow"), Rule("d", "deny")
    assert ev([allow, deny], facts()).rule_id == "a"
    d = ev([deny, allow], facts())
    assert (d.action, d.rule_id, d.reason) == ("deny", "d", Reason.DENIED)
    # a rule that does not match is skipped, the next one decides
    assert ev([Rule("big", "deny", min_amount=2 * ETH), allow], facts()).rule_id == "a"
    assert (
        ev([Rule("big", "deny", min_amount=2 * ETH), allow], facts(amount=3 * ETH)).rule_id == "big"
    )


@pytest.mark.parametrize(
    ("rule", "matching", "other"),
    [
        (Rule("r", "allow", kinds=F({"evm-tx"})), facts(), facts(kind="message")),
        (Rule("r", "allow", keys=F({"key-1"})), facts(), facts(key="key-9")),
        (Rule("r", "allow", wallets=F({"treasury"})), facts(key="key-2"), facts(key="key-3")),
        (Rule("r", "allow", assets=F({"ETH"})), facts(), replace(facts(), asset="BTC")),
        (Rule("r", "allow", chains=F({"evm:1"})), facts(), replace(facts(), chain="evm:137")),
        (
            Rule("r", "allow", operations=F({"transfer"})),
            facts(),
            replace(facts(), operation="call"),
        ),
        (Rule("r", "allow", initiators=F({"req-1"})), facts(), facts(initiator="req-2")),
        (Rule("r", "allow", max_amount=ETH), facts(amount=ETH), facts(amount=ETH + 1)),
        (Rule("r", "allow", min_amount=ETH), facts(amount=ETH), facts(amount=ETH - 1)),
        (Rule("r", "allow", allowlists=F({"payees"})), facts(to=ALICE), facts(to=BOB)),
        (
            Rule("r", "allow", velocity=(pol.Velocity("key", 3600, 2 * ETH),)),
            facts(amount=2 * ETH),
            facts(amount=2 * ETH + 1),
        ),
    ],
)
def test_each_condition_matches_and_refuses(
    rule: Rule, matching: pol.Facts, other: pol.Facts
) -> None:
    assert ev([rule], matching).action == "allow"
    assert ev([rule], other).rule_id == "default-deny"


def test_conditions_on_assets_amounts_or_destinations_never_match_a_request_without_them() -> None:
    msg = pol.Facts(kind="message", key_id="key-1", initiator="req-1")
    assert msg.amount is None
    for rule in (
        Rule("r", "allow", assets=F({"ETH"})),
        Rule("r", "allow", chains=F({"evm:1"})),
        Rule("r", "allow", max_amount=10),
        Rule("r", "allow", allowlists=F({"payees"})),
        Rule("r", "allow", velocity=(pol.Velocity("key", 60, 10**30),)),
    ):
        assert ev([rule], msg).rule_id == "default-deny"
    assert ev([Rule("r", "allow", kinds=F({"message"}))], msg).action == "allow"


def test_time_of_day_window_is_half_open_and_wraps_midnight() -> None:
    day = T0 - T0 % 86_400
    office = Rule("office", "allow", time_of_day=pol.TimeWindow(9 * 3600, 17 * 3600))
    assert ev([office], facts(), now=day + 9 * 3600).action == "allow"
    assert ev([office], facts(), now=day + 9 * 3600 - 1).action == "deny"
    assert ev([office], facts(), now=day + 17 * 3600 - 1).action == "allow"
    assert ev([office], facts(), now=day + 17 * 3600).action == "deny"
    night = Rule("night", "deny", time_of_day=pol.TimeWindow(22 * 3600, 6 * 3600))
    for hour, hit in ((23, True), (0, True), (5, True), (6, False), (21, False)):
        assert (
            ev([night, Rule("a", "allow")], facts(), now=day + hour * 3600).rule_id == "night"
        ) is hit


def test_approve_action_carries_its_requirement_and_the_governance_it_was_made_under() -> None:
    req = pol.Requirement("all", (pol.GroupQuorum("treasury", 2),))
    d = ev(
        [Rule("big", "approve", approvals=req)],
        facts(),
        policy_version=7,
        governance_digest=b"d" * 32,
    )
    assert (d.action, d.reason, d.requirement) == ("approve", Reason.APPROVALS_REQUIRED, req)
    assert (d.policy_version, d.governance_digest) == (7, b"d" * 32)
    assert ev([Rule("a", "allow")], facts()).requirement is None


def test_facts_of_real_intents() -> None:
    f = pol.facts_of(evm_tx(ALICE, 5), key_id="k", initiator="i")
    assert (f.asset, f.chain, f.operation, f.amount) == ("ETH", "evm:1", "transfer", 5)
    assert f.transfers == (pol.Transfer(ALICE.lower(), 5),)
    f = pol.facts_of(evm_tx(ALICE, 0, chain_id=10, data=b"\x01\x02"), key_id="k", initiator="i")
    assert (f.chain, f.operation) == ("evm:10", "call")
    f = pol.facts_of(erc20_transfer(BOB, 123), key_id="k", initiator="i")
    assert (f.asset, f.operation, f.transfers) == (TOKEN, "transfer", (pol.Transfer(BOB, 123),))
    # a rule names a token in any case; ETH sent along with an ERC-20 call is not understood
    rule = Rule("usdc", "allow", assets=F({"0x" + "70" * 20}), max_amount=123)
    assert ev([rule], f).action == "allow"
    with pytest.raises(pol.PolicyError, match="also sends ETH"):
        pol.facts_of(replace(erc20_transfer(BOB, 1), value=1), key_id="k", initiator="i")

    internal = bytes.fromhex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    ours = p2tr_script(taproot_output_key(internal))
    payee_key = coincurve.PrivateKey(b"\x02" * 32).public_key.format()[1:]
    payee = p2tr_script(taproot_output_key(payee_key))
    psbt = build_psbt(internal, [(b"\x11" * 32, 0, 100_000, 0)], [(payee, 60_000), (ours, 30_000)])
    intent = decode("btc-psbt", b64(psbt), scheme="bip340", public_key=internal, network="signet")
    f = pol.facts_of(intent, key_id="k", initiator="i")
    addr = bitcoin_p2tr_address(payee_key, "signet")
    assert (f.asset, f.chain, f.transfers) == (
        "BTC",
        "bitcoin:signet",
        (pol.Transfer(addr, 60_000),),
    )

    f = pol.facts_of(
        decode("iso20022", {"xml": pacs008(amount="1234.5")}, scheme="ed25519"),
        key_id="k",
        initiator="i",
    )
    assert (f.asset, f.operation, f.amount) == ("EUR", "payment", 123_450)
    assert f.transfers[0].destination == "FR1420041010050500013M02606"
    jpy = decode("iso20022", {"xml": pacs008(amount="1000", ccy="JPY")}, scheme="ed25519")
    assert pol.facts_of(jpy, key_id="k", initiator="i").amount == 1000
    assert pol.minor_units("KWD", Decimal("1.234")) == 1234
    with pytest.raises(pol.PolicyError, match="minor units"):
        pol.minor_units("EUR", Decimal("0.001"))
    assert pol.facts_of("raw", key_id="k", initiator="i") == pol.Facts("raw", "k", "i")


def test_decide_keeps_raw_signing_keys_and_denies_what_it_cannot_state() -> None:
    g = governance(pol.EMPTY_POLICY, raw=frozenset({"dev-key"}))
    d = pol.decide(g, "raw", key_id="dev-key", initiator="i", now=T0)
    assert (d.action, d.reason, d.policy_version, d.governance_digest) == (
        "allow",
        Reason.RAW_SIGNING,
        1,
        g.digest,
    )
    assert pol.decide(g, "raw", key_id="other", initiator="i", now=T0).action == "deny"
    assert pol.decide(g, evm_tx(), key_id="dev-key", initiator="i", now=T0).reason == Reason.NO_RULE
    bad = replace(erc20_transfer(BOB, 1), value=1)
    d = pol.decide(g, bad, key_id="dev-key", initiator="i", now=T0)
    assert (d.action, d.reason) == ("deny", Reason.NOT_UNDERSTOOD)


def _demo_policy() -> pol.Policy:
    group, _ = approvers("treasury", 3)
    return pol.Policy(
        rules=(
            Rule("no-raw", "deny", kinds=F({"raw"})),
            Rule(
                "small",
                "allow",
                kinds=F({"evm-tx", "btc-psbt"}),
                allowlists=F({"payees"}),
                max_amount=ETH,
                velocity=(
                    pol.Velocity("key", 86_400, 5 * ETH),
                    pol.Velocity("destination", 3600, 2 * ETH),
                ),
                time_of_day=pol.TimeWindow(0, 86_399),
                initiators=F({"req-1"}),
            ),
            Rule(
                "big",
                "approve",
                wallets=F({"treasury"}),
                approvals=pol.Requirement(
                    "any",
                    (
                        pol.GroupQuorum("treasury", 2),
                        pol.Requirement("all", (pol.GroupQuorum("treasury", 1),)),
                    ),
                ),
            ),
        ),
        allowlists=(pol.Allowlist("payees", (pol.AllowlistEntry(ALICE, T0, "alice"),)),),
        wallets=(pol.Wallet("treasury", F({"key-1"})),),
        approver_groups=(group,),
    )


def test_governance_carries_the_policy_in_format_2_and_keeps_format_1_without_one() -> None:
    plain = governance(pol.EMPTY_POLICY)
    raw = cbor2.loads(plain.encode())
    assert raw["format"] == gov.FORMAT == 1 and "policy" not in raw
    assert gov.decode_body(plain.encode()) == plain
    g = governance(_demo_policy(), version=2)
    body = cbor2.loads(g.encode())
    assert body["format"] == gov.FORMAT_WITH_POLICY == 2
    again = gov.decode_body(g.encode())
    assert again == g and again.digest == g.digest
    assert again.approver("treasury-1") is not None and again.approver("nobody") is None
    # a successor can change the policy; the chain is the same as for the roster
    v3 = g.successor(policy=pol.EMPTY_POLICY)
    assert v3.previous == g.digest and cbor2.loads(v3.encode())["format"] == 1


def _with(body: dict, **changes) -> bytes:
    return cbor2.dumps({**body, **changes}, canonical=True)


def test_policy_wire_form_is_strict() -> None:
    g = governance(_demo_policy())
    body = cbor2.loads(g.encode())
    with pytest.raises(gov.GovernanceError, match="format"):
        gov.decode_body(_with(body, policy=pol.EMPTY_POLICY.to_cbor()))
    with pytest.raises(gov.GovernanceError, match="expected fields"):
        gov.decode_body(_with(body, format=1))
    plain = cbor2.loads(governance(pol.EMPTY_POLICY).encode())
    with pytest.raises(gov.GovernanceError, match="expected fields"):
        gov.decode_body(_with(plain, policy=body["policy"]))
    rules = body["policy"]["rules"]
    for bad, message in (
        ({**rules[0], "colour": ["red"]}, "known conditions"),
        ({**rules[0], "kinds": ["raw", "evm-tx"]}, "sorted"),
        ({**rules[0], "max_amount": None}, "one encoding|integer"),
        ({**rules[0], "action": "maybe"}, "action"),
    ):
        policy = {**body["policy"], "rules": [bad, *rules[1:]]}
        with pytest.raises(gov.GovernanceError, match=message) as err:
            gov.decode_body(_with(body, policy=policy))
        assert err.value.kind is gov.GovernanceErrorKind.MALFORMED


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: replace(p, rules=(*p.rules, p.rules[0])), "duplicate"),
        (lambda p: replace(p, rules=(Rule("default-deny", "deny"),)), "reserved"),
        (lambda p: replace(p, rules=(Rule("r", "allow", wallets=F({"nope"})),)), "no wallet"),
        (lambda p: replace(p, rules=(Rule("r", "allow", allowlists=F({"nope"})),)), "no allowlist"),
        (lambda p: replace(p, rules=(Rule("r", "approve"),)), "approvals exactly"),
        (
            lambda p: replace(p, rules=(Rule("r", "allow", operations=F({"mint"})),)),
            "unknown operations",
        ),
        (
            lambda p: replace(
                p,
                rules=(
                    Rule(
                        "r",
                        "approve",
                        approvals=pol.Requirement("all", (pol.GroupQuorum("treasury", 4),)),
                    ),
                ),
            ),
            "m",
        ),
        (
            lambda p: replace(
                p,
                rules=(
                    Rule(
                        "r",
                        "approve",
                        approvals=pol.Requirement("all", (pol.GroupQuorum("risk", 1),)),
                    ),
                ),
            ),
            "no approver group",
        ),
        (
            lambda p: replace(
                p,
                rules=(
                    Rule(
                        "r",
                        "approve",
                        approvals=pol.Requirement(
                            "all",
                            (
                                pol.Requirement(
                                    "any",
                                    (pol.Requirement("all", (pol.GroupQuorum("treasury", 1),)),),
                                ),
                            ),
                        ),
                    ),
                ),
            ),
            "one level",
        ),
        (
            lambda p: replace(p, rules=(Rule("r", "allow", time_of_day=pol.TimeWindow(5, 5)),)),
            "differ",
        ),
        (
            lambda p: replace(
                p, rules=(Rule("r", "allow", velocity=(pol.Velocity("key", 0, 1),)),)
            ),
            "window",
        ),
        (
            lambda p: replace(
                p,
                approver_groups=(
                    *p.approver_groups,
                    replace(p.approver_groups[0], group_id="risk"),
                ),
            ),
            "",
        ),
        (
            lambda p: replace(
                p,
                approver_groups=(
                    pol.ApproverGroup(
                        "g", (pol.Approver("x", p.approver_groups[0].approvers[0].public_key),)
                    ),
                    *p.approver_groups,
                ),
            ),
            "used by another approver",
        ),
    ],
)
def test_structural_refusals_name_the_field(change, message: str) -> None:
    policy = _demo_policy()
    bad = change(policy)
    try:
        pol.check_policy(bad)
    except pol.PolicyError as exc:
        assert message in str(exc)
        with pytest.raises(gov.GovernanceError, match="policy"):
            governance(bad)
    else:  # the same approvers in a second group is allowed
        assert message == ""


def test_an_officer_key_cannot_be_an_approver_key() -> None:
    g = governance(_demo_policy())
    officer = g.officers[0]
    group = pol.ApproverGroup(
        "treasury",
        (*g.policy.approver_groups[0].approvers, pol.Approver("mallory", officer.public_key)),
    )
    with pytest.raises(gov.GovernanceError, match="officer"):
        gov.check_body(replace(g, policy=replace(g.policy, approver_groups=(group,))))
