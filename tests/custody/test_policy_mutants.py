"""The policy engine, the checks mutation testing asks to pin (issue 16; docs/MUTATION.md).

Pure and fast: every structural bound of :func:`custody.policy.check_policy` at its limit
and one past (rules, ids, keys, addresses, labels, time locks, velocity windows, times of
day, quorums), the wire form's strictness by field, velocity with a zero amount and with two
outputs to one destination, an allowlist naming one address twice, the compiled-policy cache
(keyed by identity: a reused id must not serve another policy's lists; bounded), and the
facts of each intent type."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import nacl.signing
import pytest

from custody import policy as pol
from custody.policy import Rule
from tests.custody.policy.helpers import ALICE, BOB, T0, approvers, facts

F = frozenset


def key() -> bytes:
    return bytes(nacl.signing.SigningKey.generate().verify_key)


def check(**fields) -> pol.Policy:
    return pol.check_policy(pol.Policy(**fields))


def refused(message: str, **fields) -> None:
    with pytest.raises(pol.PolicyError, match=message):
        check(**fields)


# -- structure --------------------------------------------------------------------------------


def test_at_most_1000_rules() -> None:
    rules = tuple(Rule(f"r{i}", "deny") for i in range(1000))
    assert len(check(rules=rules).rules) == 1000
    refused(r"^rules: at most 1000$", rules=(*rules, Rule("r1000", "deny")))


def test_ids_are_1_to_64_characters_of_the_id_alphabet() -> None:
    assert check(rules=(Rule("a" * 64, "deny"),)).rules[0].rule_id == "a" * 64
    for bad in ("", "a" * 65, "a b", "a\n", 7):
        refused(r"^rules.rule_id: an id is 1-64", rules=(Rule(bad, "deny"),))  # type: ignore[arg-type]
    with pytest.raises(pol.PolicyError, match=r"^policy: a Policy$"):
        pol.check_policy({"rules": []})  # type: ignore[arg-type]


def test_approver_groups_their_members_and_their_keys() -> None:
    g, _ = approvers("t", 2)
    a1, a2 = g.approvers
    refused("approver_groups: duplicate group t", approver_groups=(g, g))
    refused("approver group t: at least one approver", approver_groups=(replace(g, approvers=()),))
    refused("approver group t: t-1 twice", approver_groups=(replace(g, approvers=(a1, a1)),))
    for bad in (bytes(31), bytes(33), a1.public_key.hex()):
        refused(
            "approver t-1: public_key is 32 bytes",
            approver_groups=(replace(g, approvers=(replace(a1, public_key=bad), a2)),),
        )
    # the same approver in two groups: one key only
    other = pol.ApproverGroup("u", (replace(a1, public_key=key()),))
    refused("approver t-1: a different key in another group", approver_groups=(g, other))
    same = pol.ApproverGroup("u", (a1,))
    assert check(approver_groups=(g, same)).approver("t-1") == a1
    # one key for two approvers
    twin = pol.ApproverGroup("u", (replace(a2, approver_id="mallory"),))
    refused("approver mallory: public key used by another approver", approver_groups=(g, twin))


def test_passkey_approvers_carry_no_public_key_and_one_key_each() -> None:
    from tests.console.authenticator import SoftAuthenticator

    cred = SoftAuthenticator().credential
    alice = pol.Approver("alice", b"", cred)
    g = pol.ApproverGroup("t", (alice,))
    assert check(approver_groups=(g,)).approver("alice") == alice
    refused(
        "approver alice: a passkey and a public_key",
        approver_groups=(pol.ApproverGroup("t", (replace(alice, public_key=key()),)),),
    )
    # in two groups with one credential: allowed; with another credential: refused
    assert check(approver_groups=(g, pol.ApproverGroup("u", (alice,)))).group("u") is not None
    other = replace(alice, passkey=SoftAuthenticator().credential)
    refused(
        "approver alice: a different key in another group",
        approver_groups=(g, pol.ApproverGroup("u", (other,))),
    )


def test_allowlist_entries_at_their_bounds() -> None:
    def one(entry: pol.AllowlistEntry) -> pol.Policy:
        return check(allowlists=(pol.Allowlist("l", (entry,)),))

    assert one(pol.AllowlistEntry("a" * 128, 2**63, "x" * 128)).allowlists[0].entries[0].label
    assert one(pol.AllowlistEntry("a", 0, ""))
    for bad, message in (
        (pol.AllowlistEntry("", 0), "allowlist l: addresses of 1-128 characters"),
        (pol.AllowlistEntry("a" * 129, 0), "allowlist l: addresses of 1-128 characters"),
        (pol.AllowlistEntry(b"a", 0), "allowlist l: addresses of 1-128 characters"),  # type: ignore[arg-type]
        (pol.AllowlistEntry("a", -1), r"active_from: an integer in \[0, 9223372036854775808\]"),
        (pol.AllowlistEntry("a", 2**63 + 1), "active_from: an integer"),
        (pol.AllowlistEntry("a", True), "active_from: an integer"),
        (pol.AllowlistEntry("a", 0, "x" * 129), "label of <= 128 characters"),
        (pol.AllowlistEntry("a", 0, None), "label of <= 128 characters"),  # type: ignore[arg-type]
    ):
        refused(message, allowlists=(pol.Allowlist("l", (bad,)),))
    al = pol.Allowlist("l", ())
    refused("allowlists: duplicate l", allowlists=(al, al))
    w = pol.Wallet("w", F({"k"}))
    refused("wallets: duplicate w", wallets=(w, w))
    refused("wallet w: key_ids: a set of strings of 1-128", wallets=(pol.Wallet("w", F({""})),))
    assert check(wallets=(pol.Wallet("w", F({"k" * 128})),)).wallets[0]
    refused("wallet w: key_ids", wallets=(pol.Wallet("w", F({"k" * 129})),))
    refused("wallet w: key_ids", wallets=(pol.Wallet("w", {"k"}),))  # type: ignore[arg-type]


def test_rule_conditions_at_their_bounds() -> None:
    assert check(rules=(Rule("r", "deny", initiators=F({"i" * 64}), kinds=F({"k" * 128})),))
    refused(
        "rule r: initiators: a set of strings of 1-64",
        rules=(Rule("r", "deny", initiators=F({"i" * 65})),),
    )
    refused(
        "rule r: kinds: a set of strings of 1-128", rules=(Rule("r", "deny", kinds=F({"k" * 129})),)
    )
    refused(
        r"rule r: action is one of \['allow', 'deny', 'approve'\]", rules=(Rule("r", "permit"),)
    )  # type: ignore[arg-type]
    for name in ("min_amount", "max_amount"):
        assert check(rules=(Rule("r", "deny", **{name: 0}),))
        assert check(rules=(Rule("r", "deny", **{name: 2**256}),))
        for bad in (-1, 2**256 + 1, True):
            refused(
                rf"rule r: {name}: an integer in \[0, ", rules=(Rule("r", "deny", **{name: bad}),)
            )


def test_velocity_and_time_of_day_at_their_bounds() -> None:
    def v(scope="key", window=60, limit=1) -> tuple[Rule, ...]:
        return (Rule("r", "allow", velocity=(pol.Velocity(scope, window, limit),)),)

    assert check(rules=v(window=1)) and check(rules=v(window=366 * 86_400))
    assert check(rules=v(scope="destination", limit=0))
    for bad in (0, 366 * 86_400 + 1):
        refused(r"rule r: velocity window: an integer in \[1, 31622400\]", rules=v(window=bad))
    refused("rule r: velocity limit", rules=v(limit=-1))
    refused("rule r: velocity scope is key or destination", rules=v(scope="wallet"))
    refused(
        "rule r: velocity scope",
        rules=(Rule("r", "allow", velocity=((("key", 1, 1)),)),),  # type: ignore[arg-type]
    )
    refused("rule r: velocity is a tuple", rules=(Rule("r", "allow", velocity=[]),))  # type: ignore[arg-type]

    def tod(start, end) -> tuple[Rule, ...]:
        return (Rule("r", "allow", time_of_day=pol.TimeWindow(start, end)),)

    assert check(rules=tod(0, 86_399)) and check(rules=tod(86_399, 0))
    refused(r"time_of_day.start: an integer in \[0, 86399\]", rules=tod(-1, 5))
    refused(r"time_of_day.end: an integer in \[0, 86399\]", rules=tod(5, 86_400))
    refused(r"time_of_day.start", rules=tod(86_400, 5))
    refused("time_of_day start and end differ", rules=(Rule("r", "allow", time_of_day=(1, 2)),))  # type: ignore[arg-type]


def test_quorums_are_1_to_the_group_size() -> None:
    g, _ = approvers("t", 3)

    def need(*terms) -> tuple[Rule, ...]:
        return (Rule("r", "approve", approvals=pol.Requirement("all", terms)),)

    for m in (1, 3):
        assert check(rules=need(pol.GroupQuorum("t", m)), approver_groups=(g,))
    for m in (0, 4):
        refused(
            r"terms\[0\].m \(t\): an integer in \[1, 3\]",
            rules=need(pol.GroupQuorum("t", m)),
            approver_groups=(g,),
        )
    refused("at least one term", rules=need(), approver_groups=(g,))
    refused("a group quorum or a requirement", rules=need(("t", 1)), approver_groups=(g,))
    refused(
        "a requirement with op all or any",
        rules=(
            Rule("r", "approve", approvals=pol.Requirement("some", (pol.GroupQuorum("t", 1),))),
        ),  # type: ignore[arg-type]
        approver_groups=(g,),
    )
    nested = pol.Requirement("any", (pol.GroupQuorum("t", 1),))
    assert check(rules=need(nested, pol.GroupQuorum("t", 2)), approver_groups=(g,))
    refused(
        "approvals exactly when the action is approve",
        rules=(Rule("r", "allow", approvals=nested),),
        approver_groups=(g,),
    )


# -- the wire form ----------------------------------------------------------------------------


def _wire(policy: pol.Policy) -> dict:
    return policy.to_cbor()


def test_the_wire_form_round_trips_every_condition() -> None:
    g, _ = approvers("t", 3)
    req = pol.Requirement(
        "any", (pol.GroupQuorum("t", 2), pol.Requirement("all", (pol.GroupQuorum("t", 1),)))
    )
    rule = Rule(
        "r",
        "approve",
        kinds=F({"evm-tx"}),
        operations=F({"transfer"}),
        keys=F({"k"}),
        wallets=F({"w"}),
        assets=F({"ETH"}),
        chains=F({"evm:1"}),
        allowlists=F({"l"}),
        min_amount=0,
        max_amount=5,
        velocity=(pol.Velocity("key", 60, 5), pol.Velocity("destination", 1, 0)),
        time_of_day=pol.TimeWindow(0, 1),
        initiators=F({"i"}),
        approvals=req,
    )
    policy = check(
        rules=(rule, Rule("d", "deny")),
        allowlists=(pol.Allowlist("l", (pol.AllowlistEntry(ALICE, 5, "alice"),)),),
        wallets=(pol.Wallet("w", F({"k", "j"})),),
        approver_groups=(g,),
    )
    assert pol.decode_policy(_wire(policy)) == policy
    assert pol.decode_policy(_wire(pol.EMPTY_POLICY)) == pol.EMPTY_POLICY
    assert pol.EMPTY_POLICY.empty is True and policy.empty is False
    assert replace(pol.EMPTY_POLICY, wallets=policy.wallets).empty is False


def test_the_wire_form_is_strict_by_field() -> None:
    g, _ = approvers("t", 2)
    good = _wire(
        check(
            rules=(
                Rule("r", "approve", approvals=pol.Requirement("all", (pol.GroupQuorum("t", 1),))),
            ),
            approver_groups=(g,),
        )
    )
    rule = good["rules"][0]

    def bad(message: str, **changes) -> None:
        with pytest.raises(pol.PolicyError, match=message):
            pol.decode_policy({**good, **changes})

    bad(r"^policy: expected fields", extra=[])
    with pytest.raises(pol.PolicyError, match=r"^policy: expected fields"):
        pol.decode_policy([good])
    bad(r"^rules: a list$", rules=())
    bad(r"^rules\[0\]: a map with id, action", rules=[{"id": "r"}])
    bad(r"^rules\[0\]: a map with id, action", rules=[[rule]])
    bad(r"^rules\[0\].kinds: distinct strings$", rules=[{**rule, "kinds": ["a", "a"]}])
    bad(r"^rules\[0\].kinds: distinct strings$", rules=[{**rule, "kinds": [1]}])
    bad(r"^rules\[0\].kinds: a non-empty sorted list", rules=[{**rule, "kinds": []}])
    bad(r"^rules\[0\].kinds: a non-empty sorted list", rules=[{**rule, "kinds": ["b", "a"]}])
    bad(r"^rules\[0\].velocity: absent rather than empty$", rules=[{**rule, "velocity": []}])
    bad(r"^rules\[0\].velocity: items are lists of 3$", rules=[{**rule, "velocity": [["key", 1]]}])
    bad(r"^rules\[0\].time_of_day: \[start, end\]$", rules=[{**rule, "time_of_day": [1, 2, 3]}])
    bad(r"^rules\[0\].time_of_day: a list$", rules=[{**rule, "time_of_day": 5}])
    bad(
        r"^rules\[0\].approvals: \[op, terms\]", rules=[{**rule, "approvals": ["some", [["t", 1]]]}]
    )
    bad(r"^rules\[0\].approvals: \[op, terms\]", rules=[{**rule, "approvals": ["all"]}])
    bad(
        r"^rules\[0\].approvals.terms\[0\].m: an integer in \[1, 255\]",
        rules=[{**rule, "approvals": ["all", [["t", 0]]]}],
    )
    bad(
        r"^rules\[0\].approvals.terms\[0\].m: an integer in \[1, 255\]",
        rules=[{**rule, "approvals": ["all", [["t", 256]]]}],
    )
    # a term named "all" or "any" is a nested requirement, not a group of that name
    bad(
        r"^rules\[0\].approvals.terms\[0\].terms: a list$",
        rules=[{**rule, "approvals": ["all", [["any", 1]]]}],
    )
    bad(r"^allowlists: items are lists of 2$", allowlists=[["l"]])
    bad(r"^allowlist l: items are lists of 3$", allowlists=[["l", [["a", 0]]]])
    bad(r"^wallet w: a non-empty sorted list", wallets=[["w", []]])
    bad(r"^approver group t: items are lists of 2$", approver_groups=[["t", [["t-1"]]]])
    bad(r"approver x: expected fields", approver_groups=[["t", [["x", {"credential_id": b""}]]]])


# -- evaluation -------------------------------------------------------------------------------


def test_a_zero_amount_under_a_velocity_limit_already_reached_is_allowed() -> None:
    """A request moving nothing adds nothing: ``used + 0 <= limit`` at the limit."""
    policy = check(rules=(Rule("v", "allow", velocity=(pol.Velocity("key", 60, 7),)),))
    history = [pol.Release(T0, "key-1", "ETH", "x", 7)]
    assert pol.evaluate(policy, facts(amount=0), now=T0, history=history).action == "allow"
    assert pol.evaluate(policy, facts(amount=1), now=T0, history=history).action == "deny"
    # past the limit already (a lower limit since, or releases by other means): even a zero
    # amount does not fit any more
    over = [pol.Release(T0, "key-1", "ETH", "x", 8)]
    assert pol.evaluate(policy, facts(amount=0), now=T0, history=over).action == "deny"


def test_destination_velocity_sums_two_outputs_to_one_destination() -> None:
    policy = check(rules=(Rule("v", "allow", velocity=(pol.Velocity("destination", 60, 10),)),))

    def two(a: int, b: int, history=()) -> str:
        f = pol.Facts(
            "btc-psbt",
            "k",
            "i",
            "transfer",
            "BTC",
            "bitcoin:mainnet",
            (pol.Transfer("d", a), pol.Transfer("d", b)),
        )
        return pol.evaluate(policy, f, now=T0, history=list(history)).action

    assert two(5, 5) == "allow" and two(5, 6) == "deny"
    assert two(4, 5, [pol.Release(T0, "k2", "BTC", "d", 1)]) == "allow"
    assert two(4, 5, [pol.Release(T0, "k2", "BTC", "d", 2)]) == "deny"
    # another asset's or another destination's releases do not count
    assert (
        two(5, 5, [pol.Release(T0, "k2", "ETH", "d", 9), pol.Release(T0, "k", "BTC", "e", 9)])
        == "allow"
    )


def test_an_allowlist_naming_one_address_twice_opens_at_the_earlier_time() -> None:
    entries = (
        pol.AllowlistEntry(ALICE.upper().replace("0X", "0x"), T0 + 100),
        pol.AllowlistEntry(ALICE, T0),
    )
    for order in (entries, entries[::-1]):
        policy = check(
            rules=(Rule("p", "allow", allowlists=F({"l"})),),
            allowlists=(pol.Allowlist("l", order),),
        )
        assert pol.evaluate(policy, facts(to=ALICE), now=T0).action == "allow"
        assert pol.evaluate(policy, facts(to=ALICE), now=T0 - 1).action == "deny"
    # a destination in the second of two named allowlists is enough
    policy = check(
        rules=(Rule("p", "allow", allowlists=F({"a", "b"})),),
        allowlists=(
            pol.Allowlist("a", (pol.AllowlistEntry(BOB, 0),)),
            pol.Allowlist("b", (pol.AllowlistEntry(ALICE, 0),)),
        ),
    )
    assert pol.evaluate(policy, facts(to=ALICE), now=T0).action == "allow"


def test_an_asset_rule_compares_tokens_in_lower_case_and_names_as_given() -> None:
    token = "0x" + "Ab" * 20
    policy = check(
        rules=(Rule("t", "allow", assets=F({token})), Rule("b", "allow", assets=F({"BTC"})))
    )
    f = replace(facts(), asset=token.lower())
    assert pol.evaluate(policy, f, now=T0).rule_id == "t"
    assert pol.evaluate(policy, replace(facts(), asset="BTC"), now=T0).rule_id == "b"
    assert pol.evaluate(policy, replace(facts(), asset="btc"), now=T0).rule_id == "default-deny"


def test_the_compiled_cache_never_serves_another_policy_and_stays_bounded() -> None:
    pol._CACHE.clear()  # whatever earlier tests left (its bound would clear it midway)
    a = check(
        rules=(Rule("p", "allow", allowlists=F({"l"})),),
        allowlists=(pol.Allowlist("l", (pol.AllowlistEntry(BOB, 0),)),),
    )
    b = check(
        rules=(Rule("p", "allow", allowlists=F({"l"})),),
        allowlists=(pol.Allowlist("l", (pol.AllowlistEntry(ALICE, 0),)),),
    )
    assert pol.evaluate(a, facts(to=BOB), now=T0).action == "allow"
    compiled = pol._CACHE[id(a)][1]
    assert pol.evaluate(a, facts(to=ALICE), now=T0).action == "deny"
    assert pol._CACHE[id(a)][1] is compiled  # built once per policy, then reused
    pol.evaluate(b, facts(to=ALICE), now=T0)
    pol.evaluate(a, facts(to=ALICE), now=T0)
    assert pol._CACHE[id(a)][1] is compiled  # and kept beside another policy's
    # b's id once held a (a freed policy's id reused): the entry must not be served
    pol._CACHE[id(b)] = pol._CACHE[id(a)]
    assert pol.evaluate(b, facts(to=ALICE), now=T0).action == "allow"
    assert pol.evaluate(b, facts(to=BOB), now=T0).action == "deny"
    assert pol._CACHE[id(b)][0] is b
    keep = [check(rules=(Rule(f"r{i}", "allow"),)) for i in range(200)]
    for p in keep:
        pol.evaluate(p, facts(), now=T0)
    assert len(pol._CACHE) <= 65


def test_the_facts_amount_is_none_without_an_asset_and_the_sum_with_one() -> None:
    f = pol.Facts("x", "k", "i", transfers=(pol.Transfer("d", 5),))
    assert f.amount is None
    assert (
        replace(f, asset="BTC", transfers=(pol.Transfer("d", 5), pol.Transfer("e", 6))).amount == 11
    )
    assert replace(f, asset="BTC", transfers=()).amount == 0


def test_addresses_normalize_by_family() -> None:
    assert pol.normalize_address(" 0xAB cd ") == "0xabcd"
    for prefix in ("bc1", "tb1", "bcrt1", "BC1"):
        assert pol.normalize_address(prefix + "QXY") == (prefix + "qxy").lower()
    assert pol.normalize_address("FR76 3000 6000 01") == "FR763000600001"  # an IBAN as given
    assert pol.normalize_address("1BoatSLRHt") == "1BoatSLRHt"  # base58 is case-sensitive


def test_minor_units_by_currency() -> None:
    assert pol.minor_units("EUR", Decimal("1.23")) == 123
    assert pol.minor_units("JPY", Decimal("123")) == 123
    assert pol.minor_units("KWD", Decimal("1.234")) == 1234
    assert pol.minor_units("CLF", Decimal("1.2345")) == 12345
    for ccy, amount in (("JPY", "1.5"), ("EUR", "0.001"), ("KWD", "0.0001")):
        with pytest.raises(pol.PolicyError, match=f"amount {amount} {ccy} is not a whole number"):
            pol.minor_units(ccy, Decimal(amount))


def test_facts_of_a_message_and_of_what_is_not_an_intent() -> None:
    class Message:
        kind = "message"

    assert pol.facts_of(Message(), key_id="k", initiator="i") == pol.Facts("message", "k", "i")
    with pytest.raises(pol.PolicyError, match="not an intent: object"):
        pol.facts_of(object(), key_id="k", initiator="i")

    class Odd:
        kind = 7

    with pytest.raises(pol.PolicyError, match="not an intent: Odd"):
        pol.facts_of(Odd(), key_id="k", initiator="i")


def test_the_time_window_wraps_midnight_at_its_edges() -> None:
    w = pol.TimeWindow(86_399, 1)
    day = 86_400 * 20_000
    assert [w.contains(day + s) for s in (86_398, 86_399, 0, 1)] == [False, True, True, False]
    assert [pol.TimeWindow(0, 86_399).contains(day + s) for s in (0, 86_398, 86_399)] == [
        True,
        True,
        False,
    ]


def test_the_default_deny_says_how_many_rules_it_tried() -> None:
    policy = check(rules=(Rule("a", "allow", kinds=F({"x"})), Rule("b", "allow", kinds=F({"y"}))))
    d = pol.evaluate(policy, facts(), now=T0, policy_version=4, governance_digest=b"g" * 32)
    assert (d.action, d.detail, d.policy_version, d.governance_digest) == (
        "deny",
        "no rule of 2 matched",
        4,
        b"g" * 32,
    )


def test_btc_facts_skip_every_change_output_and_name_scripts_without_an_address() -> None:
    """Change to the key itself placed *first*, then a payee and an OP_RETURN output (no
    address): the payee and the script are destinations, the change is not."""
    from custody.kinds import decode
    from custody.kinds.addresses import bitcoin_p2tr_address, p2tr_script, taproot_output_key
    from tests.custody.kinds.btc_build import b64, build_psbt

    # the x coordinates of G and 2G (SEC 2): points, no secret in the test
    internal = bytes.fromhex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    ours = p2tr_script(taproot_output_key(internal))
    payee_key = bytes.fromhex("c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5")
    payee = p2tr_script(taproot_output_key(payee_key))
    op_return = bytes.fromhex("6a0401020304")
    outputs = [(ours, 10_000), (payee, 60_000), (ours, 5_000), (op_return, 0)]
    psbt = build_psbt(internal, [(b"\x11" * 32, 0, 100_000, 0)], outputs)
    intent = decode("btc-psbt", b64(psbt), scheme="bip340", public_key=internal, network="signet")
    f = pol.facts_of(intent, key_id="k", initiator="i")
    assert f.transfers == (
        pol.Transfer(bitcoin_p2tr_address(payee_key, "signet"), 60_000),
        pol.Transfer("script:6a0401020304", 0),
    )
    assert (f.asset, f.chain, f.operation, f.amount) == (
        "BTC",
        "bitcoin:signet",
        "transfer",
        60_000,
    )


def test_a_decision_outside_any_governance_names_version_0() -> None:
    """evaluate() alone (the dry run of a policy file) binds no governance: version 0 and an
    empty digest, which no approval statement can name (verify_approvals rejects it)."""
    policy = check(rules=(Rule("a", "allow"),))
    for d in (
        pol.evaluate(policy, facts(), now=T0),
        pol.evaluate(pol.EMPTY_POLICY, facts(), now=T0),
    ):
        assert (d.policy_version, d.governance_digest) == (0, b"")
