"""Why a policy decided what it did: rule by rule, condition by condition. Pure.

:func:`explain` makes the decision :func:`custody.policy.decide` makes (it calls it) and
says, for every rule before the one that matched, which of its conditions the request
failed and why, in plain words. Each condition is tested with the engine's own matcher
(a rule holding that one condition), so an explanation cannot drift from the engine: the
rule it reports as matched is checked to be the rule :func:`~custody.policy.decide` chose.

:func:`explanation_json` is the JSON form the CLI (``custody policy dry-run``) and the
coordinator (``POST /v1/policy/dry-run``) both print; :func:`explanation_lines` turns that
form into plain words, so both show the same text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from custody import policy as pol
from custody.approvals import request_intent
from custody.governance import Governance
from custody.policy_file import (
    describe_requirement,
    format_amount,
    format_duration,
    format_instant,
    print_policy,
)

__all__ = [
    "DRY_RUN_ID",
    "Explanation",
    "Miss",
    "RuleCheck",
    "check_rules",
    "dry_run",
    "explain",
    "explanation_json",
    "explanation_lines",
]


@dataclass(frozen=True)
class Miss:
    """A condition of a rule the request failed: ``condition`` is its field (``kinds``,
    ``velocity[0]``, ...), ``detail`` says why in plain words."""

    condition: str
    detail: str


@dataclass(frozen=True)
class RuleCheck:
    index: int  # 1-based position in the policy
    rule: pol.Rule
    matched: bool
    misses: tuple[Miss, ...]


@dataclass(frozen=True)
class Explanation:
    decision: pol.Decision
    facts: pol.Facts | None
    checks: tuple[RuleCheck, ...]  # the rules tried, in order, up to the one that matched
    now: int
    policy: pol.Policy


def _clock(second: int) -> str:
    s = second % pol.DAY
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _asset(facts: pol.Facts) -> frozenset[str]:
    return frozenset() if facts.asset is None else frozenset({facts.asset})


def _used(v: pol.Velocity, facts: pol.Facts, now: int, history: Sequence[pol.Release]) -> str:
    """What the window already holds (for the words only: the match is the engine's)."""
    since = now - v.window
    recent = [r for r in history if r.time > since and r.asset == facts.asset]
    if v.scope == "key":
        used = sum(r.amount for r in recent if r.key_id == facts.key_id)
        return (
            f"key {facts.key_id} released {format_amount(used, _asset(facts))} in the last "
            f"{format_duration(v.window)}; with this request's "
            f"{format_amount(facts.amount or 0, _asset(facts))} that exceeds "
            f"the limit {format_amount(v.limit, _asset(facts))}"
        )
    worst = ""
    for t in facts.transfers:
        used = sum(r.amount for r in recent if r.destination == t.destination)
        if used + t.amount > v.limit:
            worst = (
                f"destination {t.destination} received {format_amount(used, _asset(facts))} in "
                f"the last {format_duration(v.window)}; with this request's "
                f"{format_amount(t.amount, _asset(facts))} that "
                f"exceeds the limit {format_amount(v.limit, _asset(facts))}"
            )
            break
    return worst or f"over the limit {v.limit} per destination"


def _allowlist_miss(rule: pol.Rule, facts: pol.Facts, now: int, policy: pol.Policy) -> str:
    if not facts.transfers:
        return "the request has no destinations, so no allowlist can hold them"
    c = pol._compiled(policy)
    for t in facts.transfers:
        locked = {
            name: c.allow[name][t.destination]
            for name in sorted(rule.allowlists)
            if t.destination in c.allow.get(name, {})
        }
        if any(at <= now for at in locked.values()):
            continue
        if locked:
            name, at = min(locked.items(), key=lambda kv: kv[1])
            until = format_instant(at) if at <= 253_402_300_799 else f"Unix time {at}"
            return (
                f"destination {t.destination} is on allowlist {name} but time-locked until {until}"
            )
        return f"destination {t.destination} is on none of {', '.join(sorted(rule.allowlists))}"
    return "a destination is not allowlisted"


def _conditions(rule: pol.Rule) -> list[tuple[str, pol.Rule]]:
    """Each condition ``rule`` sets, as a rule holding only it (same id: the engine's compiled
    lookups are per rule id)."""
    bare = pol.Rule(rule.rule_id, "allow")
    out: list[tuple[str, pol.Rule]] = []
    for name in ("kinds", "operations"):
        if getattr(rule, name):
            out.append((name, replace(bare, **{name: getattr(rule, name)})))
    if rule.keys or rule.wallets:
        name = " or ".join(n for n in ("keys", "wallets") if getattr(rule, n))
        out.append((name, replace(bare, keys=rule.keys, wallets=rule.wallets)))
    for name in ("assets", "chains", "initiators"):
        if getattr(rule, name):
            out.append((name, replace(bare, **{name: getattr(rule, name)})))
    if rule.time_of_day is not None:
        out.append(("time_of_day", replace(bare, time_of_day=rule.time_of_day)))
    for name in ("min_amount", "max_amount"):
        if getattr(rule, name) is not None:
            out.append((name, replace(bare, **{name: getattr(rule, name)})))
    if rule.allowlists:
        out.append(("allowlists", replace(bare, allowlists=rule.allowlists)))
    for i, v in enumerate(rule.velocity):
        out.append((f"velocity[{i}]", replace(bare, velocity=(v,))))
    return out


def _why(
    name: str,
    rule: pol.Rule,
    facts: pol.Facts,
    now: int,
    history: Sequence[pol.Release],
    policy: pol.Policy,
) -> str:
    def among(values: frozenset[str]) -> str:
        return ", ".join(sorted(values))

    if name == "kinds":
        return f"the request is {facts.kind}, the rule is for {among(rule.kinds)}"
    if name == "operations":
        return f"the operation is {facts.operation}, the rule is for {among(rule.operations)}"
    if name.startswith("keys") or name == "wallets":
        where = [f"keys {among(rule.keys)}"] if rule.keys else []
        where += [f"wallets {among(rule.wallets)}"] if rule.wallets else []
        return f"key {facts.key_id} is not in {' or '.join(where)}"
    if name == "assets":
        return f"the asset is {facts.asset or 'none'}, the rule is for {among(rule.assets)}"
    if name == "chains":
        return f"the chain is {facts.chain or 'none'}, the rule is for {among(rule.chains)}"
    if name == "initiators":
        return f"initiated by {facts.initiator}, the rule is for {among(rule.initiators)}"
    if name == "time_of_day":
        t = rule.time_of_day
        assert t is not None
        return f"{_clock(now)} UTC is outside {_clock(t.start)}-{_clock(t.end)} UTC"
    if name in ("min_amount", "max_amount"):
        if facts.amount is None:
            return "the request moves no amount"
        bound = rule.min_amount if name == "min_amount" else rule.max_amount
        assert bound is not None
        word = "below the minimum" if name == "min_amount" else "above the maximum"
        return (
            f"amount {format_amount(facts.amount, _asset(facts))} is {word} "
            f"{format_amount(bound, _asset(facts))}"
        )
    if name == "allowlists":
        return _allowlist_miss(rule, facts, now, policy)
    if name.startswith("velocity["):
        if facts.asset is None:
            return "the request moves no asset, and a velocity limit needs one"
        return _used(rule.velocity[int(name[9:-1])], facts, now, history)
    return "does not hold"  # pragma: no cover - every condition is named above


def check_rules(
    policy: pol.Policy,
    facts: pol.Facts,
    *,
    now: int,
    history: Sequence[pol.Release] = (),
) -> tuple[RuleCheck, ...]:
    """Every rule of ``policy`` in order up to the first that matches (all of them when
    none does), each with the conditions the request failed."""
    c = pol._compiled(policy)
    out: list[RuleCheck] = []
    for i, rule in enumerate(policy.rules, 1):
        matched = pol._matches(rule, facts, now, history, c)
        misses: list[Miss] = []
        if not matched:
            for name, probe in _conditions(rule):
                if not pol._matches(probe, facts, now, history, c):
                    misses.append(Miss(name, _why(name, rule, facts, now, history, policy)))
            if not misses:  # pragma: no cover - the conditions above are all there are
                misses.append(Miss("rule", "the conditions together do not hold"))
        out.append(RuleCheck(i, rule, matched, tuple(misses)))
        if matched:
            break
    return tuple(out)


def explain(
    governance: Governance,
    intent: Any,
    *,
    key_id: str,
    initiator: str,
    now: int,
    history: Sequence[pol.Release] = (),
) -> Explanation:
    """:func:`custody.policy.decide` on the same arguments, and why."""
    decision = pol.decide(
        governance, intent, key_id=key_id, initiator=initiator, now=now, history=history
    )
    policy = governance.policy
    if decision.reason in (pol.Reason.RAW_SIGNING, pol.Reason.NOT_UNDERSTOOD):
        facts = None
        if decision.reason == pol.Reason.RAW_SIGNING:
            facts = pol.facts_of(intent, key_id=key_id, initiator=initiator)
        return Explanation(decision, facts, (), now, policy)
    facts = pol.facts_of(intent, key_id=key_id, initiator=initiator)
    checks = check_rules(policy, facts, now=now, history=history)
    chosen = next((ch.rule.rule_id for ch in checks if ch.matched), pol.DEFAULT_DENY)
    if chosen != decision.rule_id:  # pragma: no cover - both read the engine's matcher
        raise AssertionError(f"explanation found {chosen}, the engine {decision.rule_id}")
    return Explanation(decision, facts, checks, now, policy)


DRY_RUN_ID: Final = "sr_dry-run"  # the request id a dry run evaluates under (ids bind nothing)


def dry_run(
    governance: Governance,
    scheme: str,
    request: Mapping[str, Any],
    *,
    initiator: str,
    now: int,
    history: Sequence[pol.Release] = (),
    public_key: bytes | None = None,
) -> Explanation:
    """Evaluate a sign ``request`` (the body ``POST /v1/sign-requests`` takes: ``key_id``,
    ``kind``, ``message`` and/or ``payload``, ``derivation_path``) to a key of ``scheme``
    against ``governance`` without signing: the intent every node would decode
    (:func:`custody.approvals.request_intent`; ``public_key`` is the key's, or the child's
    for a request with a ``derivation_path``, as for signing), then :func:`explain`. Raises
    :class:`custody.signing.SignRequestError` naming the field of a malformed request."""
    canonical = {"id": DRY_RUN_ID, **request}
    intent, _ = request_intent(scheme, canonical, public_key=public_key)
    return explain(
        governance,
        intent,
        key_id=str(canonical["key_id"]),
        initiator=initiator,
        now=now,
        history=history,
    )


# -- JSON and words -------------------------------------------------------------------------


def _facts_json(facts: pol.Facts | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    amount = facts.amount
    return {
        "kind": facts.kind,
        "key_id": facts.key_id,
        "initiator": facts.initiator,
        "operation": facts.operation,
        "asset": facts.asset,
        "chain": facts.chain,
        "amount": None if amount is None else str(amount),
        "amount_text": None if amount is None else format_amount(amount, _asset(facts)),
        "transfers": [
            {"destination": t.destination, "amount": str(t.amount)} for t in facts.transfers
        ],
    }


def _instant(now: int) -> str:
    try:
        return format_instant(now)
    except ValueError:
        return str(now)


def explanation_json(expl: Explanation) -> dict[str, Any]:
    """The JSON form (amounts as strings of digits, times ISO 8601, digest hex)."""
    d = expl.decision
    req = d.requirement
    rule_of = {r.rule_id: r for r in expl.policy.rules}
    requirement = None
    if req is not None:
        # the file form of a requirement, from the rule that carries it
        requirement = next(
            rule["approvals"]
            for rule in print_policy(pol.Policy(rules=(rule_of[d.rule_id],)))["rules"]
        )
    return {
        "action": d.action,
        "rule": d.rule_id,
        "reason": str(d.reason),
        "detail": d.detail,
        "policy_version": d.policy_version,
        "governance_digest": d.governance_digest.hex(),
        "requirement": requirement,
        "requirement_text": None if req is None else describe_requirement(req, expl.policy),
        "at": _instant(expl.now),
        "facts": _facts_json(expl.facts),
        "rules": [
            {
                "index": ch.index,
                "rule": ch.rule.rule_id,
                "action": ch.rule.action,
                "matched": ch.matched,
                "failed": [{"condition": m.condition, "detail": m.detail} for m in ch.misses],
            }
            for ch in expl.checks
        ],
    }


def explanation_lines(doc: dict[str, Any]) -> list[str]:
    """Plain words for :func:`explanation_json`'s form (or the API's answer, the same)."""
    verdict = {"allow": "ALLOW", "deny": "DENY", "approve": "APPROVALS REQUIRED"}[doc["action"]]
    lines = [
        f"decision: {verdict} by rule {doc['rule']} ({doc['reason']})",
        f"policy version {doc['policy_version']} (governance {doc['governance_digest'][:16]}...)"
        f", evaluated at {doc['at']}",
    ]
    if doc.get("detail"):
        lines.append(f"detail: {doc['detail']}")
    f = doc.get("facts")
    if f is not None:
        what = f"{f['kind']} {f['operation']} by key {f['key_id']}, initiated by {f['initiator']}"
        if f.get("amount_text"):
            what += f": {f['amount_text']}"
        if f.get("chain"):
            what += f" on {f['chain']}"
        lines.append(f"request: {what}")
        lines += [f"  to {t['destination']}: {t['amount']}" for t in f["transfers"]]
    if doc["reason"] == str(pol.Reason.RAW_SIGNING):
        lines.append("raw signing is enabled for this key (raw_signing_keys): no rule consulted")
    for r in doc["rules"]:
        if r["matched"]:
            lines.append(f"  {r['index']}. {r['rule']} ({r['action']}): MATCHED")
            continue
        lines.append(f"  {r['index']}. {r['rule']} ({r['action']}): no match")
        lines += [f"       {m['condition']}: {m['detail']}" for m in r["failed"]]
    if doc["rule"] == pol.DEFAULT_DENY and doc["reason"] == str(pol.Reason.NO_RULE):
        lines.append("  no rule matched: denied by default")
    if doc.get("requirement_text"):
        lines.append(f"approvals required: {doc['requirement_text']}")
    return lines
