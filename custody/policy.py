"""The policy engine: ordered rules, first match wins, deny by default. Pure.

A policy is part of the governance document (:class:`custody.governance.Governance`'s
``policy`` field), so it is versioned and signed by the officer quorum like the roster; the
policy version is the governance version. This module does no I/O, reads no clock and draws
no randomness: the time (``now``, Unix seconds, UTC) and the release history are arguments.

What a request is, for a policy, is its :class:`Facts`, extracted from a decoded intent
(:mod:`custody.kinds`) by :func:`facts_of`:

==================== ============ ============== ================================ ===========
kind / operation     asset        chain          destinations (each with amount)  amount unit
==================== ============ ============== ================================ ===========
evm-tx, value        ``ETH``      ``evm:<id>``   ``to``                           wei
evm-tx, ERC-20       token (0x)   ``evm:<id>``   recipient / spender              token unit
btc-psbt             ``BTC``      ``bitcoin:<n>`` each output not back to the key satoshi
iso20022 (pacs.008)  currency     none           creditor account (IBAN)          minor unit
message, raw, ...    none         none           none                             none
==================== ============ ============== ================================ ===========

A :class:`Rule` matches when every condition it sets holds (an unset condition matches
anything); its action is ``allow``, ``deny`` or ``approve`` (require approvals from approver
groups, M of N per group, combined with AND/OR, nested one level). Conditions:

- ``kinds``, ``operations`` (``transfer``, ``approve``, ``call``, ``payment``, ``sign``);
- ``keys`` / ``wallets`` (a wallet is a named set of key ids): the request's key is in one;
- ``assets``, ``chains``; ``initiators`` (principal ids);
- ``allowlists``: *every* destination is an entry of one of the named allowlists whose time
  lock has passed (``now >= active_from``); a request without destinations never matches;
- ``min_amount`` / ``max_amount``: the request's amount (base units, integers) within them;
- ``velocity``: for each limit, the amount released in the rolling window
  ``(now - window, ...]`` (entries dated after ``now`` count too: fail closed) plus this
  request's amount stays within ``limit``; ``scope="key"`` sums this key's releases of the
  asset, ``scope="destination"`` sums every key's releases of the asset to each destination;
- ``time_of_day``: ``now``'s UTC second of day in ``[start, end)`` (wrapping midnight when
  ``start > end``).

A condition on amounts, assets, chains or destinations never matches a request that has
none. :func:`evaluate` returns a :class:`Decision` with a stable machine-readable
``reason`` (:class:`Reason`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from custody.passkeys import PasskeyCredential, PasskeyError, check_credential, credential_from_cbor

if TYPE_CHECKING:
    from custody.governance import Governance

__all__ = [
    "Action",
    "Allowlist",
    "AllowlistEntry",
    "Approver",
    "ApproverGroup",
    "Decision",
    "Facts",
    "GroupQuorum",
    "Policy",
    "PolicyError",
    "Reason",
    "Release",
    "Requirement",
    "Rule",
    "TimeWindow",
    "Transfer",
    "Velocity",
    "Wallet",
    "DEFAULT_DENY",
    "EMPTY_POLICY",
    "check_policy",
    "decide",
    "decode_policy",
    "evaluate",
    "facts_of",
    "normalize_address",
]

Action = Literal["allow", "deny", "approve"]
ACTIONS: Final = ("allow", "deny", "approve")
OPERATIONS: Final = ("transfer", "approve", "call", "payment", "sign")
DEFAULT_DENY: Final = "default-deny"
_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
MAX_RULES: Final = 1000
DAY: Final = 86_400


class PolicyError(ValueError):
    """A policy (or a request's facts) that cannot be used; the message names the field."""


class Reason(enum.StrEnum):
    """Stable, machine-readable reasons of a :class:`Decision`."""

    ALLOWED = "policy-allowed"  # an allow rule matched
    DENIED = "policy-denied"  # a deny rule matched
    APPROVALS_REQUIRED = "policy-approvals-required"  # an approve rule matched
    NO_RULE = "policy-no-rule-matched"  # deny by default
    RAW_SIGNING = "policy-raw-signing-enabled"  # the governance's raw_signing_keys
    NOT_UNDERSTOOD = "policy-intent-not-understood"  # facts could not be extracted


# -- the policy's objects -------------------------------------------------------------------


@dataclass(frozen=True)
class Approver:
    """An approver: a named principal and the Ed25519 public key of their key file, or
    (issue 15) a registered passkey (``public_key`` then empty: the credential's COSE key is
    in ``passkey``; :mod:`custody.passkeys`)."""

    approver_id: str
    public_key: bytes
    passkey: PasskeyCredential | None = None

    def cbor_key(self) -> bytes | dict[str, Any]:
        """The approver's key as the policy encodes it: the Ed25519 key's bytes (as before
        passkeys), or the passkey credential's map."""
        return self.public_key if self.passkey is None else self.passkey.to_cbor()


@dataclass(frozen=True)
class ApproverGroup:
    """A named set of approvers (the N of an "M of N")."""

    group_id: str
    approvers: tuple[Approver, ...]

    def member(self, approver_id: str) -> Approver | None:
        return next((a for a in self.approvers if a.approver_id == approver_id), None)


@dataclass(frozen=True)
class AllowlistEntry:
    """A destination that becomes usable at ``active_from`` (Unix seconds): its time lock."""

    address: str
    active_from: int
    label: str = ""


@dataclass(frozen=True)
class Allowlist:
    name: str
    entries: tuple[AllowlistEntry, ...]


@dataclass(frozen=True)
class Wallet:
    """A named set of key ids, so rules can speak of a treasury rather than of keys."""

    name: str
    key_ids: frozenset[str]


@dataclass(frozen=True)
class GroupQuorum:
    """``m`` approvals from group ``group_id``."""

    group_id: str
    m: int


@dataclass(frozen=True)
class Requirement:
    """``all`` (AND) or ``any`` (OR) of its terms; a term is a group quorum or, one level
    down, a requirement of group quorums."""

    op: Literal["all", "any"]
    terms: tuple[GroupQuorum | Requirement, ...]

    def groups(self) -> frozenset[str]:
        out: set[str] = set()
        for t in self.terms:
            out |= {t.group_id} if isinstance(t, GroupQuorum) else t.groups()
        return frozenset(out)


@dataclass(frozen=True)
class Velocity:
    scope: Literal["key", "destination"]
    window: int  # seconds
    limit: int  # base units of the request's asset


@dataclass(frozen=True)
class TimeWindow:
    start: int  # UTC second of day, inclusive
    end: int  # UTC second of day, exclusive

    def contains(self, now: int) -> bool:
        s = now % DAY
        if self.start <= self.end:
            return self.start <= s < self.end
        return s >= self.start or s < self.end


@dataclass(frozen=True)
class Rule:
    rule_id: str
    action: Action
    kinds: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    wallets: frozenset[str] = frozenset()
    assets: frozenset[str] = frozenset()
    chains: frozenset[str] = frozenset()
    allowlists: frozenset[str] = frozenset()
    min_amount: int | None = None
    max_amount: int | None = None
    velocity: tuple[Velocity, ...] = ()
    time_of_day: TimeWindow | None = None
    initiators: frozenset[str] = frozenset()
    approvals: Requirement | None = None  # exactly for action "approve"


@dataclass(frozen=True)
class Policy:
    """The ordered rules and the named objects they refer to."""

    rules: tuple[Rule, ...] = ()
    allowlists: tuple[Allowlist, ...] = ()
    wallets: tuple[Wallet, ...] = ()
    approver_groups: tuple[ApproverGroup, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.rules or self.allowlists or self.wallets or self.approver_groups)

    def group(self, group_id: str) -> ApproverGroup | None:
        return next((g for g in self.approver_groups if g.group_id == group_id), None)

    def approver(self, approver_id: str) -> Approver | None:
        for g in self.approver_groups:
            a = g.member(approver_id)
            if a is not None:
                return a
        return None

    def to_cbor(self) -> dict[str, Any]:
        """Plain CBOR-ready data (canonical order is the encoder's job)."""
        return {
            "rules": [_rule_out(r) for r in self.rules],
            "allowlists": [
                [a.name, [[e.address, e.active_from, e.label] for e in a.entries]]
                for a in self.allowlists
            ],
            "wallets": [[w.name, sorted(w.key_ids)] for w in self.wallets],
            "approver_groups": [
                [g.group_id, [[a.approver_id, a.cbor_key()] for a in g.approvers]]
                for g in self.approver_groups
            ],
        }


EMPTY_POLICY: Final = Policy()


# -- facts ----------------------------------------------------------------------------------


class Transfer(NamedTuple):
    destination: str  # normalized (normalize_address)
    amount: int


class Release(NamedTuple):
    """One entry of a release log: what a node released, for velocity windows."""

    time: int
    key_id: str
    asset: str
    destination: str
    amount: int


@dataclass(frozen=True)
class Facts:
    """What a policy reads of a request."""

    kind: str
    key_id: str
    initiator: str
    operation: str = "sign"
    asset: str | None = None
    chain: str | None = None
    transfers: tuple[Transfer, ...] = ()

    @property
    def amount(self) -> int | None:
        if self.asset is None:
            return None
        return sum(t.amount for t in self.transfers)


def normalize_address(address: str) -> str:
    """The form destinations and token addresses are compared in: EVM hex and bech32
    lowercased (both are case-insensitive), base58 and IBANs as given, spaces removed."""
    a = address.strip().replace(" ", "")
    low = a.lower()
    if low.startswith(("0x", "bc1", "tb1", "bcrt1")):
        return low
    return a


# ISO 4217 minor units where they are not 2 (the currencies in use).
_MINOR_UNITS: Final = {
    **dict.fromkeys(
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0
    ),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
}


def minor_units(currency: str, amount: Decimal) -> int:
    """``amount`` of ``currency`` in its ISO 4217 minor unit; refuses a fraction of one."""
    scaled = amount.scaleb(_MINOR_UNITS.get(currency, 2))
    if scaled != scaled.to_integral_value():
        raise PolicyError(f"amount {amount} {currency} is not a whole number of minor units")
    return int(scaled)


def facts_of(intent: Any, *, key_id: str, initiator: str) -> Facts:
    """The :class:`Facts` of a decoded intent (:func:`custody.kinds.decode`'s result), or of
    a kind without one (``raw``, ``payment``, ...) when ``intent`` is the kind's name.

    Raises :class:`PolicyError` for an intent whose effect the policy cannot state (an
    ERC-20 call that also sends ETH): :func:`decide` turns it into a denial.
    """
    from custody.kinds.addresses import p2tr_script
    from custody.kinds.btc import BtcPsbt
    from custody.kinds.evm import EvmTx
    from custody.kinds.iso20022 import Pacs008

    if isinstance(intent, str):
        return Facts(kind=intent, key_id=key_id, initiator=initiator)
    if isinstance(intent, EvmTx):
        chain = f"evm:{intent.chain_id}"
        if intent.erc20 is not None:
            if intent.value:
                raise PolicyError("tx.value: an ERC-20 call that also sends ETH")
            return Facts(
                kind=intent.kind,
                key_id=key_id,
                initiator=initiator,
                operation=intent.erc20.method,
                asset=normalize_address(intent.erc20.token),
                chain=chain,
                transfers=(
                    Transfer(normalize_address(intent.erc20.recipient), intent.erc20.amount),
                ),
            )
        return Facts(
            kind=intent.kind,
            key_id=key_id,
            initiator=initiator,
            operation="call" if intent.data else "transfer",
            asset="ETH",
            chain=chain,
            transfers=(Transfer(normalize_address(intent.to), intent.value),),
        )
    if isinstance(intent, BtcPsbt):
        change = p2tr_script(intent.output_key)
        outs = []
        for o in intent.outputs:
            if o.script == change:
                continue  # back to the key itself
            dest = o.address if o.address is not None else "script:" + o.script.hex()
            outs.append(Transfer(normalize_address(dest), o.amount))
        return Facts(
            kind=intent.kind,
            key_id=key_id,
            initiator=initiator,
            operation="transfer",
            asset="BTC",
            chain=f"bitcoin:{intent.network}",
            transfers=tuple(outs),
        )
    if isinstance(intent, Pacs008):
        return Facts(
            kind=intent.kind,
            key_id=key_id,
            initiator=initiator,
            operation="payment",
            asset=intent.currency,
            transfers=(
                Transfer(
                    normalize_address(intent.creditor_account),
                    minor_units(intent.currency, intent.amount),
                ),
            ),
        )
    kind = getattr(intent, "kind", None)
    if isinstance(kind, str):  # message and any kind that moves nothing
        return Facts(kind=kind, key_id=key_id, initiator=initiator)
    raise PolicyError(f"not an intent: {type(intent).__name__}")


# -- evaluation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`evaluate`.

    ``action`` is ``allow``, ``deny`` or ``approve`` (approvals required: ``requirement``);
    ``rule_id`` the rule that matched or ``"default-deny"``; ``policy_version`` and
    ``governance_digest`` name the governance version evaluated (approvals bind them).
    """

    action: Action
    rule_id: str
    reason: Reason
    requirement: Requirement | None = None
    policy_version: int = 0
    governance_digest: bytes = b""
    detail: str = ""


def _in_window(history: Sequence[Release], since: int) -> Iterable[Release]:
    return (r for r in history if r.time > since)


def _velocity_ok(v: Velocity, facts: Facts, now: int, history: Sequence[Release]) -> bool:
    since = now - v.window
    if v.scope == "key":
        used = sum(
            r.amount
            for r in _in_window(history, since)
            if r.key_id == facts.key_id and r.asset == facts.asset
        )
        return used + (facts.amount or 0) <= v.limit
    per: dict[str, int] = {}
    for t in facts.transfers:
        per[t.destination] = per.get(t.destination, 0) + t.amount
    for r in _in_window(history, since):
        if r.asset == facts.asset and r.destination in per:
            per[r.destination] += r.amount
    return all(total <= v.limit for total in per.values())


class _Compiled:
    """Lookups a policy needs at evaluation, built once per policy (cached by identity)."""

    def __init__(self, policy: Policy) -> None:
        self.wallets = {w.name: w.key_ids for w in policy.wallets}
        self.allow: dict[str, dict[str, int]] = {}
        for a in policy.allowlists:
            entries: dict[str, int] = {}
            for e in a.entries:
                addr = normalize_address(e.address)
                entries[addr] = min(entries.get(addr, e.active_from), e.active_from)
            self.allow[a.name] = entries
        self.assets = {
            r.rule_id: frozenset(
                normalize_address(x) if x.startswith("0x") else x for x in r.assets
            )
            for r in policy.rules
        }


_CACHE: dict[int, tuple[Policy, _Compiled]] = {}


def _compiled(policy: Policy) -> _Compiled:
    hit = _CACHE.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1]
    compiled = _Compiled(policy)
    if len(_CACHE) > 64:
        _CACHE.clear()
    _CACHE[id(policy)] = (policy, compiled)
    return compiled


def _matches(rule: Rule, facts: Facts, now: int, history: Sequence[Release], c: _Compiled) -> bool:
    if rule.kinds and facts.kind not in rule.kinds:
        return False
    if rule.operations and facts.operation not in rule.operations:
        return False
    if (rule.keys or rule.wallets) and not (
        facts.key_id in rule.keys or any(facts.key_id in c.wallets.get(w, ()) for w in rule.wallets)
    ):
        return False
    if rule.assets and (facts.asset is None or facts.asset not in c.assets[rule.rule_id]):
        return False
    if rule.chains and facts.chain not in rule.chains:
        return False
    if rule.initiators and facts.initiator not in rule.initiators:
        return False
    if rule.time_of_day is not None and not rule.time_of_day.contains(now):
        return False
    amount = facts.amount
    if rule.min_amount is not None and (amount is None or amount < rule.min_amount):
        return False
    if rule.max_amount is not None and (amount is None or amount > rule.max_amount):
        return False
    if rule.allowlists:
        if not facts.transfers:
            return False
        for t in facts.transfers:
            if not any(
                c.allow.get(name, {}).get(t.destination, now + 1) <= now for name in rule.allowlists
            ):
                return False
    if rule.velocity:
        if facts.asset is None:
            return False
        for v in rule.velocity:
            if not _velocity_ok(v, facts, now, history):
                return False
    return True


def evaluate(
    policy: Policy,
    facts: Facts,
    *,
    now: int,
    history: Sequence[Release] = (),
    policy_version: int = 0,
    governance_digest: bytes = b"",
) -> Decision:
    """The first rule of ``policy`` that matches ``facts`` at ``now``, or deny by default."""
    c = _compiled(policy)
    for rule in policy.rules:
        if _matches(rule, facts, now, history, c):
            reason = {
                "allow": Reason.ALLOWED,
                "deny": Reason.DENIED,
                "approve": Reason.APPROVALS_REQUIRED,
            }[rule.action]
            return Decision(
                action=rule.action,
                rule_id=rule.rule_id,
                reason=reason,
                requirement=rule.approvals if rule.action == "approve" else None,
                policy_version=policy_version,
                governance_digest=governance_digest,
            )
    return Decision(
        action="deny",
        rule_id=DEFAULT_DENY,
        reason=Reason.NO_RULE,
        policy_version=policy_version,
        governance_digest=governance_digest,
        detail=f"no rule of {len(policy.rules)} matched",
    )


# -- structure and wire form ----------------------------------------------------------------


def _ident(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise PolicyError(f"{what}: an id is 1-64 characters of [A-Za-z0-9._:-]")
    return value


def _int(value: Any, what: str, low: int = 0, high: int = 2**256) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PolicyError(f"{what}: an integer in [{low}, {high}]")
    return value


def _strings(value: Any, what: str, max_len: int = 128) -> frozenset[str]:
    if not isinstance(value, frozenset) or any(
        not isinstance(v, str) or not 1 <= len(v) <= max_len for v in value
    ):
        raise PolicyError(f"{what}: a set of strings of 1-{max_len} characters")
    return value


def _check_requirement(req: Any, policy: Policy, where: str, depth: int) -> None:
    if not isinstance(req, Requirement) or req.op not in ("all", "any"):
        raise PolicyError(f"{where}: a requirement with op all or any")
    if not req.terms:
        raise PolicyError(f"{where}: at least one term")
    for i, term in enumerate(req.terms):
        w = f"{where}.terms[{i}]"
        if isinstance(term, Requirement):
            if depth >= 1:
                raise PolicyError(f"{w}: requirements nest one level only")
            _check_requirement(term, policy, w, depth + 1)
            continue
        if not isinstance(term, GroupQuorum):
            raise PolicyError(f"{w}: a group quorum or a requirement")
        group = policy.group(term.group_id)
        if group is None:
            raise PolicyError(f"{w}: no approver group {term.group_id!r}")
        _int(term.m, f"{w}.m ({term.group_id})", 1, len(group.approvers))


def check_policy(policy: Policy) -> Policy:
    """Structural rules: unique ids, references resolve, quorums possible, sane bounds."""
    if not isinstance(policy, Policy):
        raise PolicyError("policy: a Policy")
    if len(policy.rules) > MAX_RULES:
        raise PolicyError(f"rules: at most {MAX_RULES}")
    approvers: dict[str, bytes] = {}
    keys_seen: dict[bytes, str] = {}
    groups: set[str] = set()
    for g in policy.approver_groups:
        _ident(g.group_id, "approver_groups.group_id")
        if g.group_id in groups:
            raise PolicyError(f"approver_groups: duplicate group {g.group_id}")
        groups.add(g.group_id)
        if not g.approvers:
            raise PolicyError(f"approver group {g.group_id}: at least one approver")
        members: set[str] = set()
        for a in g.approvers:
            _ident(a.approver_id, f"approver group {g.group_id}: approver_id")
            # before the passkey branch: an approver listed twice would count twice toward m
            if a.approver_id in members:
                raise PolicyError(f"approver group {g.group_id}: {a.approver_id} twice")
            members.add(a.approver_id)
            if a.passkey is not None:  # issue 15: the key is the credential's (its id unique)
                if a.public_key != b"":
                    raise PolicyError(f"approver {a.approver_id}: a passkey and a public_key")
                try:
                    check_credential(a.passkey, f"approver {a.approver_id}: passkey")
                except PasskeyError as exc:
                    raise PolicyError(str(exc)) from None
                key = b"passkey:" + a.passkey.credential_id
                if approvers.setdefault(a.approver_id, key) != key:
                    raise PolicyError(f"approver {a.approver_id}: a different key in another group")
                if keys_seen.setdefault(key, a.approver_id) != a.approver_id:
                    raise PolicyError(
                        f"approver {a.approver_id}: passkey credential used by another approver"
                    )
                continue
            if not isinstance(a.public_key, bytes) or len(a.public_key) != 32:
                raise PolicyError(f"approver {a.approver_id}: public_key is 32 bytes")
            if approvers.setdefault(a.approver_id, a.public_key) != a.public_key:
                raise PolicyError(f"approver {a.approver_id}: a different key in another group")
            if keys_seen.setdefault(a.public_key, a.approver_id) != a.approver_id:
                raise PolicyError(f"approver {a.approver_id}: public key used by another approver")
    lists: set[str] = set()
    for al in policy.allowlists:
        _ident(al.name, "allowlists.name")
        if al.name in lists:
            raise PolicyError(f"allowlists: duplicate {al.name}")
        lists.add(al.name)
        for e in al.entries:
            if not isinstance(e.address, str) or not 1 <= len(e.address) <= 128:
                raise PolicyError(f"allowlist {al.name}: addresses of 1-128 characters")
            _int(e.active_from, f"allowlist {al.name}: {e.address}: active_from", 0, 2**63)
            if not isinstance(e.label, str) or len(e.label) > 128:
                raise PolicyError(f"allowlist {al.name}: {e.address}: label of <= 128 characters")
    wallets: set[str] = set()
    for w in policy.wallets:
        _ident(w.name, "wallets.name")
        if w.name in wallets:
            raise PolicyError(f"wallets: duplicate {w.name}")
        wallets.add(w.name)
        _strings(w.key_ids, f"wallet {w.name}: key_ids")
    rule_ids: set[str] = set()
    for r in policy.rules:
        _ident(r.rule_id, "rules.rule_id")
        where = f"rule {r.rule_id}"
        if r.rule_id in rule_ids or r.rule_id == DEFAULT_DENY:
            raise PolicyError(f"{where}: duplicate (or reserved) rule id")
        rule_ids.add(r.rule_id)
        if r.action not in ACTIONS:
            raise PolicyError(f"{where}: action is one of {list(ACTIONS)}")
        for name in ("kinds", "operations", "keys", "wallets", "assets", "chains", "allowlists"):
            _strings(getattr(r, name), f"{where}: {name}")
        _strings(r.initiators, f"{where}: initiators", 64)
        if bad := r.operations - set(OPERATIONS):
            raise PolicyError(f"{where}: unknown operations {sorted(bad)}")
        if bad := r.wallets - wallets:
            raise PolicyError(f"{where}: no wallet {sorted(bad)[0]!r}")
        if bad := r.allowlists - lists:
            raise PolicyError(f"{where}: no allowlist {sorted(bad)[0]!r}")
        for name in ("min_amount", "max_amount"):
            if getattr(r, name) is not None:
                _int(getattr(r, name), f"{where}: {name}")
        if not isinstance(r.velocity, tuple):
            raise PolicyError(f"{where}: velocity is a tuple")
        for v in r.velocity:
            if not isinstance(v, Velocity) or v.scope not in ("key", "destination"):
                raise PolicyError(f"{where}: velocity scope is key or destination")
            _int(v.window, f"{where}: velocity window", 1, 366 * DAY)
            _int(v.limit, f"{where}: velocity limit")
        if r.time_of_day is not None:
            t = r.time_of_day
            if not isinstance(t, TimeWindow) or t.start == t.end:
                raise PolicyError(f"{where}: time_of_day start and end differ")
            _int(t.start, f"{where}: time_of_day.start", 0, DAY - 1)
            _int(t.end, f"{where}: time_of_day.end", 0, DAY - 1)
        if (r.action == "approve") != (r.approvals is not None):
            raise PolicyError(f"{where}: approvals exactly when the action is approve")
        if r.approvals is not None:
            _check_requirement(r.approvals, policy, f"{where}: approvals", 0)
    return policy


def _req_out(req: Requirement) -> list[Any]:
    return [
        req.op,
        [[t.group_id, t.m] if isinstance(t, GroupQuorum) else _req_out(t) for t in req.terms],
    ]


def _rule_out(r: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.rule_id, "action": r.action}
    for name in ("kinds", "operations", "keys", "wallets", "assets", "chains", "allowlists"):
        if getattr(r, name):
            out[name] = sorted(getattr(r, name))
    if r.initiators:
        out["initiators"] = sorted(r.initiators)
    if r.min_amount is not None:
        out["min_amount"] = r.min_amount
    if r.max_amount is not None:
        out["max_amount"] = r.max_amount
    if r.velocity:
        out["velocity"] = [[v.scope, v.window, v.limit] for v in r.velocity]
    if r.time_of_day is not None:
        out["time_of_day"] = [r.time_of_day.start, r.time_of_day.end]
    if r.approvals is not None:
        out["approvals"] = _req_out(r.approvals)
    return out


_RULE_FIELDS: Final = {
    "id",
    "action",
    "kinds",
    "operations",
    "keys",
    "wallets",
    "assets",
    "chains",
    "allowlists",
    "initiators",
    "min_amount",
    "max_amount",
    "velocity",
    "time_of_day",
    "approvals",
}


def _list(value: Any, what: str, width: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise PolicyError(f"{what}: a list")
    if width is not None and any(not isinstance(v, list) or len(v) != width for v in value):
        raise PolicyError(f"{what}: items are lists of {width}")
    return value


def _set(value: Any, what: str) -> frozenset[str]:
    items = _list(value, what)
    if any(not isinstance(v, str) for v in items) or len(set(items)) != len(items):
        raise PolicyError(f"{what}: distinct strings")
    if items != sorted(items) or not items:
        raise PolicyError(f"{what}: a non-empty sorted list (one encoding per policy)")
    return frozenset(items)


def _req_in(raw: Any, what: str) -> Requirement:
    parts = _list(raw, what, None)
    if len(parts) != 2 or parts[0] not in ("all", "any"):
        raise PolicyError(f"{what}: [op, terms] with op all or any")
    terms: list[GroupQuorum | Requirement] = []
    for i, t in enumerate(_list(parts[1], f"{what}.terms")):
        if (
            isinstance(t, list)
            and len(t) == 2
            and isinstance(t[0], str)
            and t[0]
            not in (
                "all",
                "any",
            )
        ):
            terms.append(GroupQuorum(t[0], _int(t[1], f"{what}.terms[{i}].m", 1, 255)))
        else:
            terms.append(_req_in(t, f"{what}.terms[{i}]"))
    return Requirement(parts[0], tuple(terms))


def _rule_in(raw: Any, i: int) -> Rule:
    what = f"rules[{i}]"
    if not isinstance(raw, Mapping) or not {"id", "action"} <= set(raw) <= _RULE_FIELDS:
        raise PolicyError(f"{what}: a map with id, action and known conditions only")
    sets = {
        name: _set(raw[name], f"{what}.{name}")
        for name in (
            "kinds",
            "operations",
            "keys",
            "wallets",
            "assets",
            "chains",
            "allowlists",
            "initiators",
        )
        if name in raw
    }
    velocity = tuple(
        Velocity(v[0], v[1], v[2]) for v in _list(raw.get("velocity", []), f"{what}.velocity", 3)
    )
    if "velocity" in raw and not velocity:
        raise PolicyError(f"{what}.velocity: absent rather than empty")
    tod = raw.get("time_of_day")
    if tod is not None:
        tod = _list(tod, f"{what}.time_of_day")
        if len(tod) != 2:
            raise PolicyError(f"{what}.time_of_day: [start, end]")
    return Rule(
        rule_id=raw["id"],
        action=raw["action"],
        min_amount=raw.get("min_amount"),
        max_amount=raw.get("max_amount"),
        velocity=velocity,
        time_of_day=None if tod is None else TimeWindow(tod[0], tod[1]),
        approvals=None
        if "approvals" not in raw
        else _req_in(raw["approvals"], f"{what}.approvals"),
        **sets,
    )


def _approver_in(approver_id: Any, key: Any) -> Approver:
    """An approver entry: ``[id, Ed25519 key bytes]`` or ``[id, passkey map]`` (issue 15)."""
    if isinstance(key, Mapping):
        try:
            return Approver(approver_id, b"", credential_from_cbor(key, f"approver {approver_id}"))
        except PasskeyError as exc:
            raise PolicyError(str(exc)) from None
    return Approver(approver_id, key)


def decode_policy(raw: Any) -> Policy:
    """The inverse of :meth:`Policy.to_cbor`, strict; then :func:`check_policy`."""
    fields = {"rules", "allowlists", "wallets", "approver_groups"}
    if not isinstance(raw, Mapping) or set(raw) != fields:
        raise PolicyError(f"policy: expected fields {sorted(fields)}")
    try:
        policy = Policy(
            rules=tuple(_rule_in(r, i) for i, r in enumerate(_list(raw["rules"], "rules"))),
            allowlists=tuple(
                Allowlist(
                    a[0],
                    tuple(
                        AllowlistEntry(e[0], e[1], e[2])
                        for e in _list(a[1], f"allowlist {a[0]}", 3)
                    ),
                )
                for a in _list(raw["allowlists"], "allowlists", 2)
            ),
            wallets=tuple(
                Wallet(w[0], _set(w[1], f"wallet {w[0]}"))
                for w in _list(raw["wallets"], "wallets", 2)
            ),
            approver_groups=tuple(
                ApproverGroup(
                    g[0],
                    tuple(
                        _approver_in(a[0], a[1]) for a in _list(g[1], f"approver group {g[0]}", 2)
                    ),
                )
                for g in _list(raw["approver_groups"], "approver_groups", 2)
            ),
        )
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, PolicyError):
            raise
        raise PolicyError(f"policy: {exc}") from exc
    return check_policy(policy)


def decide(
    governance: Governance,
    intent: Any,
    *,
    key_id: str,
    initiator: str,
    now: int,
    history: Sequence[Release] = (),
) -> Decision:
    """Evaluate a request against a governance version's policy: what a node calls.

    ``intent`` is a decoded intent, or a kind's name for kinds without one (``raw``). A
    ``raw`` request for a key in the governance's ``raw_signing_keys`` is allowed as before
    (the development flow); anything else goes through the rules, deny by default. An intent
    whose effect cannot be stated is denied (:attr:`Reason.NOT_UNDERSTOOD`).
    """
    version, digest = governance.version, governance.digest
    if intent == "raw" and governance.raw_enabled(key_id):
        return Decision("allow", "raw-signing-keys", Reason.RAW_SIGNING, None, version, digest)
    try:
        facts = facts_of(intent, key_id=key_id, initiator=initiator)
    except PolicyError as exc:
        return Decision(
            "deny", DEFAULT_DENY, Reason.NOT_UNDERSTOOD, None, version, digest, str(exc)
        )
    return evaluate(
        governance.policy,
        facts,
        now=now,
        history=history,
        policy_version=version,
        governance_digest=digest,
    )
