"""policy_explain agrees with the engine on every policy and request (hypothesis), and
names each condition a request failed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from custody import policy as pol
from custody import policy_explain as pe
from custody import policy_file as pf
from tests.custody.policy.helpers import ALICE, BOB, T0, facts, governance
from tests.custody.policy.test_policy_file import KEYS, addresses, assets, chains, ids, policies

FIELDS = {
    "kinds",
    "operations",
    "keys",
    "wallets",
    "keys or wallets",
    "assets",
    "chains",
    "initiators",
    "time_of_day",
    "min_amount",
    "max_amount",
    "allowlists",
}


@st.composite
def requests(draw: st.DrawFn, policy: pol.Policy) -> pol.Facts:
    known = [e.address for a in policy.allowlists for e in a.entries]
    dest = st.sampled_from(known) if known and draw(st.booleans()) else addresses
    keys = sorted({k for w in policy.wallets for k in w.key_ids} | {"key-x"})
    moves = draw(st.booleans())
    return pol.Facts(
        kind=draw(st.sampled_from(sorted(pf.KNOWN_KINDS))),
        key_id=draw(st.sampled_from(keys)),
        initiator=draw(ids),
        operation=draw(st.sampled_from(pol.OPERATIONS)),
        asset=draw(assets) if moves else None,
        chain=draw(st.one_of(st.none(), chains)),
        transfers=tuple(
            pol.Transfer(pol.normalize_address(draw(dest)), draw(st.integers(0, 2**70)))
            for _ in range(draw(st.integers(0, 2)) if moves else 0)
        ),
    )


@given(st.data())
def test_the_explanation_is_the_engines_decision(data: st.DataObject) -> None:
    policy = data.draw(policies())
    f = data.draw(requests(policy))
    now = data.draw(st.integers(0, pf.MAX_INSTANT))
    history = [
        pol.Release(
            now - data.draw(st.integers(0, 2 * 86_400)),
            f.key_id,
            f.asset or "ETH",
            t.destination,
            10**18,
        )
        for t in f.transfers
    ]
    decision = pol.evaluate(policy, f, now=now, history=history)
    checks = pe.check_rules(policy, f, now=now, history=history)
    matched = [c for c in checks if c.matched]
    if decision.rule_id == pol.DEFAULT_DENY:
        assert not matched and len(checks) == len(policy.rules)
    else:
        assert checks[-1].matched and checks[-1].rule.rule_id == decision.rule_id
        assert len(matched) == 1
    for c in checks:
        assert c.index == policy.rules.index(c.rule) + 1
        if c.matched:
            assert c.misses == ()
            continue
        assert c.misses, c.rule
        for m in c.misses:
            assert m.condition in FIELDS or m.condition.startswith("velocity["), m
            assert m.detail


def test_words_for_each_condition() -> None:
    group = pol.ApproverGroup("ops", (pol.Approver("ann", KEYS[0]),))
    policy = pol.Policy(
        rules=(
            pol.Rule("r", "allow", kinds=frozenset({"message"}), initiators=frozenset({"bob"})),
            pol.Rule("v", "allow", velocity=(pol.Velocity("destination", 3600, 10**18),)),
            pol.Rule(
                "a", "approve", approvals=pol.Requirement("any", (pol.GroupQuorum("ops", 1),))
            ),
        ),
        approver_groups=(group,),
    )
    f = facts(to=BOB)
    history = [pol.Release(T0 - 60, "key-9", "ETH", pol.normalize_address(BOB), 5)]
    checks = pe.check_rules(policy, f, now=T0, history=history)
    assert [(m.condition, m.detail) for m in checks[0].misses] == [
        ("kinds", "the request is evm-tx, the rule is for message"),
        ("initiators", "initiated by req-1, the rule is for bob"),
    ]
    want = (
        f"destination {pol.normalize_address(BOB)} received 0.000000000000000005 ETH (5 wei) "
        "in the last 1h; with this request's 1 ETH (1000000000000000000 wei) that exceeds the "
        "limit 1 ETH (1000000000000000000 wei)"
    )
    assert checks[1].misses[0].detail == want
    expl = pe.explain(governance(policy), "raw", key_id="key-1", initiator="req-1", now=T0)
    doc = pe.explanation_json(expl)
    assert (doc["action"], doc["rule"]) == ("approve", "a")
    assert doc["requirement"] == {"any": [{"group": "ops", "m": 1}]}
    assert doc["facts"]["kind"] == "raw" and doc["facts"]["amount"] is None
    lines = pe.explanation_lines(doc)
    assert "  2. v (allow): no match" in lines
    assert "       velocity[0]: the request moves no asset, and a velocity limit needs one" in lines
    assert lines[-1] == "approvals required: 1 of ops (ann)"
    # raw signing enabled by the governance consults no rule
    expl = pe.explain(
        governance(policy, raw=frozenset({"key-1"})), "raw", key_id="key-1", initiator="x", now=T0
    )
    doc = pe.explanation_json(expl)
    assert (doc["action"], doc["reason"], doc["rules"]) == (
        "allow",
        "policy-raw-signing-enabled",
        [],
    )
    assert any("no rule consulted" in line for line in pe.explanation_lines(doc))
    assert ALICE  # the helpers' other destination is not used here
