"""The human policy file: a JSON document officers write, and its printing. Pure.

A policy lives in the governance document as canonical CBOR (:meth:`Policy.to_cbor`), which
nobody writes by hand. This module reads and writes the form people author and review::

    {
      "format": "tpwc-policy-v1",
      "rules": [
        {"id": "small-eth", "action": "allow", "kinds": ["evm-tx"], "assets": ["ETH"],
         "chains": ["evm:1"], "allowlists": ["payees"], "max_amount": "1000000000000000000",
         "velocity": [{"scope": "key", "window": "24h", "limit": "5000000000000000000"}]},
        {"id": "big-eth", "action": "approve", "assets": ["ETH"], "allowlists": ["payees"],
         "approvals": {"all": [{"group": "treasury", "m": 2}]}},
        {"id": "office-hours", "action": "allow", "kinds": ["message"],
         "time_of_day": {"start": "08:00", "end": "18:00"}}
      ],
      "allowlists": [
        {"name": "payees", "entries": [
          {"address": "0xa1a1...", "label": "Alice", "active_from": "2027-01-15T08:00:00Z"}]}
      ],
      "wallets": [{"name": "treasury", "keys": ["key_0123...", "key_4567..."]}],
      "approver_groups": [
        {"id": "treasury", "approvers": [
          {"id": "ann", "public_key": "<64 hex digits>"},
          {"key_file": "approvers/bob.key"}]}
      ]
    }

Rules of the format (every refusal is a :class:`PolicyFileError` naming the path of the
offending value, e.g. ``rules[2].velocity[0].window``):

- ``format`` is ``"tpwc-policy-v1"``; ``rules`` is required, the other sections default to
  empty; no field beyond the ones documented here is accepted anywhere, and a JSON object
  with a duplicated key is refused.
- **Amounts** (``min_amount``, ``max_amount``, velocity ``limit``) are integers of the
  asset's *base unit* — wei for ETH, the token's smallest unit for an ERC-20, satoshi for
  BTC, the ISO 4217 minor unit for a currency (cents) — written as a JSON *string* of
  digits (``"1500000000000000000"``: no sign, fraction, exponent or leading zero), so no
  JSON tool rounds a wei amount through a double. A JSON number is refused. (Base units
  rather than decimals: a rule may name several assets, or none, and a token's decimals
  are not part of the policy; ``custody policy show`` prints the decimal form beside it
  for ETH, BTC and ISO currencies.)
- **Time locks**: an allowlist entry's ``active_from`` is an ISO 8601 instant with an
  explicit offset, seconds optional, no fraction: ``2027-01-15T08:00:00Z``,
  ``2027-01-15T10:00+02:00``. The entry counts from that instant on.
- **Durations** (velocity ``window``; the CLI's ``--timelock``): whole numbers with units
  ``w d h m s``, largest first, each at most once: ``90s``, ``1h30m``, ``7d``, ``1w2d``.
- **Time of day**: ``{"start": "HH:MM[:SS]", "end": "HH:MM[:SS]"}`` in UTC, end exclusive;
  a window with ``start`` after ``end`` wraps midnight.
- Sets (``kinds``, ``operations``, ``keys``, ``wallets``, ``assets``, ``chains``,
  ``allowlists``, ``initiators``, a wallet's ``keys``) are non-empty lists of distinct
  strings; ``kinds`` are request kinds this system knows, ``operations`` the engine's,
  ``chains`` ``evm:<chain id>`` or ``bitcoin:<network>``, ``assets`` ``ETH``, ``BTC``, an
  ERC-20 token address (``0x`` + 40 hex) or an ISO 4217 code.
- ``approvals`` (exactly for ``"action": "approve"``) is ``{"all": [terms]}`` or
  ``{"any": [terms]}``; a term is ``{"group": ID, "m": M}`` or, one level down, another
  ``{"all"|"any": [...]}``.
- An approver is ``{"id", "public_key"}`` (Ed25519, 64 hex digits) or ``{"key_file": PATH}``
  (an approver key file, as ``custody approver enroll`` writes and ``custody approver
  show`` prints; an ``"id"`` beside it must equal the file's). This module reads no file:
  :func:`key_file_references` lists the paths, the caller reads them and passes what they
  hold to :func:`parse_policy`.

:func:`print_policy` is the inverse: ``parse_policy(print_policy(p)) == p`` for every
policy the format can express (the tests check it with hypothesis), and printing is
canonical (sets sorted, durations and instants in one form), so ``print_policy(parse_policy(
d))`` is the normal form of ``d``. :func:`describe_policy` says the same in plain words.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import nacl.bindings

from custody import passkeys as pk
from custody import policy as pol
from custody.domain import KINDS as REQUEST_KINDS
from custody.domain import NETWORKS
from custody.kinds import KINDS as CHAIN_KINDS

__all__ = [
    "FORMAT",
    "PolicyFileError",
    "describe_policy",
    "describe_requirement",
    "describe_rule",
    "dumps",
    "edit_allowlist",
    "format_amount",
    "format_duration",
    "format_instant",
    "key_file_references",
    "loads",
    "parse_duration",
    "parse_instant",
    "parse_policy",
    "print_policy",
]

FORMAT: Final = "tpwc-policy-v1"
KNOWN_KINDS: Final = frozenset(REQUEST_KINDS) | frozenset(CHAIN_KINDS)
_TOP: Final = ("format", "rules", "allowlists", "wallets", "approver_groups")
_SETS: Final = (
    "kinds",
    "operations",
    "keys",
    "wallets",
    "assets",
    "chains",
    "allowlists",
    "initiators",
)
_RULE_FIELDS: Final = frozenset(
    {"id", "action", *_SETS, "min_amount", "max_amount", "velocity", "time_of_day", "approvals"}
)
_AMOUNT: Final = re.compile(r"^(?:0|[1-9][0-9]*)$")
_DURATION: Final = re.compile(
    r"^(?:(0|[1-9][0-9]*)w)?(?:(0|[1-9][0-9]*)d)?(?:(0|[1-9][0-9]*)h)?"
    r"(?:(0|[1-9][0-9]*)m)?(?:(0|[1-9][0-9]*)s)?$"
)
_UNITS: Final = (("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))
_INSTANT: Final = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2})?(?:Z|[+-][0-9]{2}:[0-9]{2})$"
)
_CLOCK: Final = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?$")
_CHAIN: Final = re.compile(r"^(?:evm:[1-9][0-9]{0,18}|bitcoin:(?:" + "|".join(NETWORKS) + "))$")
_ASSET: Final = re.compile(r"^(?:ETH|BTC|0x[0-9a-fA-F]{40}|[A-Z]{3})$")
_HEX32: Final = re.compile(r"^[0-9a-f]{64}$")
MAX_AMOUNT: Final = 2**256
MAX_INSTANT: Final = 253_402_300_799  # 9999-12-31T23:59:59Z, the last ISO 8601 year
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
DECIMALS: Final = {"ETH": 18, "BTC": 8}  # base units: wei, satoshi
_BASE_UNIT: Final = {"ETH": "wei", "BTC": "sat"}


class PolicyFileError(ValueError):
    """A policy file refused: ``path`` names the value (``rules[2].velocity[0].window``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# -- scalars ------------------------------------------------------------------------------


def parse_duration(text: Any, path: str = "duration") -> int:
    """Seconds of a duration such as ``24h``, ``1h30m`` or ``7d`` (units w d h m s)."""
    m = _DURATION.fullmatch(text) if isinstance(text, str) and text else None
    if m is None or not any(m.groups()):
        raise PolicyFileError(
            path, f"{text!r} is not a duration (whole numbers with units w d h m s, e.g. 24h)"
        )
    return sum(int(g or 0) * size for g, (_, size) in zip(m.groups(), _UNITS, strict=True))


def format_duration(seconds: int) -> str:
    """The one form :func:`parse_duration` reads back: ``86400`` -> ``1d``, ``0`` -> ``0s``."""
    if seconds < 0:
        raise ValueError("a duration is not negative")
    out = []
    for unit, size in _UNITS:
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out) or "0s"


def parse_instant(text: Any, path: str = "instant") -> int:
    """Unix seconds of an ISO 8601 instant with an explicit offset (``...Z`` or ``±HH:MM``)."""
    if not isinstance(text, str) or not _INSTANT.fullmatch(text):
        raise PolicyFileError(
            path, f"{text!r} is not an ISO 8601 instant with an offset (2027-01-15T08:00:00Z)"
        )
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise PolicyFileError(path, f"{text!r}: {exc}") from None
    seconds = int((when - _EPOCH).total_seconds())
    if not 0 <= seconds <= MAX_INSTANT:
        raise PolicyFileError(path, f"{text!r} is before 1970-01-01T00:00:00Z or after 9999")
    return seconds


def format_instant(seconds: int) -> str:
    """``seconds`` (Unix, UTC) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    if not 0 <= seconds <= MAX_INSTANT:
        raise ValueError(f"{seconds} has no ISO 8601 form (years 1970-9999)")
    return (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clock_in(text: Any, path: str) -> int:
    m = _CLOCK.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise PolicyFileError(path, f"{text!r} is not a UTC time of day HH:MM or HH:MM:SS")
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3) or 0)


def _clock_out(second: int) -> str:
    h, rest = divmod(second, 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}" + (f":{s:02d}" if s else "")


def _amount_in(value: Any, path: str) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise PolicyFileError(
            path,
            'an amount is a JSON string of base-unit digits, e.g. "1500000000000000000" '
            "(quoted, so no JSON tool rounds it)",
        )
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        raise PolicyFileError(
            path, f"{value!r} is not a whole number of base units (digits, no sign or fraction)"
        )
    n = int(value)
    if n > MAX_AMOUNT:
        raise PolicyFileError(path, "at most 2**256 base units")
    return n


# -- structure ----------------------------------------------------------------------------


def _obj(
    value: Any, path: str, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyFileError(path or "(document)", f"an object, not {_type(value)}")
    for name in value:
        if name not in required and name not in optional:
            known = ", ".join([*required, *optional])
            raise PolicyFileError(
                f"{path}.{name}" if path else str(name), f"unknown field (known: {known})"
            )
    for name in required:
        if name not in value:
            raise PolicyFileError(f"{path}.{name}" if path else name, "missing")
    return value


def _type(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _array(value: Any, path: str, *, non_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise PolicyFileError(path, f"a list, not {_type(value)}")
    if non_empty and not value:
        raise PolicyFileError(path, "at least one item (leave the field out instead)")
    return value


def _text(value: Any, path: str, low: int = 1, high: int = 128) -> str:
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise PolicyFileError(path, f"a string of {low}-{high} characters")
    return value


def _ident(value: Any, path: str) -> str:
    if not isinstance(value, str) or not pol._ID.fullmatch(value):
        raise PolicyFileError(path, f"{value!r} is not an id (1-64 characters of [A-Za-z0-9._:-])")
    return value


def _string_set(
    value: Any, path: str, check: Callable[[str, str], None] | None = None, high: int = 128
) -> frozenset[str]:
    items = _array(value, path, non_empty=True)
    seen: set[str] = set()
    for i, item in enumerate(items):
        _text(item, f"{path}[{i}]", high=high)
        if item in seen:
            raise PolicyFileError(f"{path}[{i}]", f"{item!r} listed twice")
        if check is not None:
            check(item, f"{path}[{i}]")
        seen.add(item)
    return frozenset(seen)


def _kind(value: str, path: str) -> None:
    if value not in KNOWN_KINDS:
        raise PolicyFileError(
            path, f"unknown kind {value!r} (known: {', '.join(sorted(KNOWN_KINDS))})"
        )


def _operation(value: str, path: str) -> None:
    if value not in pol.OPERATIONS:
        raise PolicyFileError(
            path, f"unknown operation {value!r} (known: {', '.join(pol.OPERATIONS)})"
        )


def _chain(value: str, path: str) -> None:
    if not _CHAIN.fullmatch(value):
        raise PolicyFileError(
            path, f"{value!r} is not a chain (evm:<chain id> or bitcoin:<network>)"
        )


def _asset(value: str, path: str) -> None:
    if not _ASSET.fullmatch(value):
        raise PolicyFileError(
            path, f"{value!r} is not an asset (ETH, BTC, an ERC-20 address 0x..., an ISO 4217 code)"
        )


def _requirement_in(
    value: Any, path: str, groups: Mapping[str, int], depth: int
) -> pol.Requirement:
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("all", "any"):
        raise PolicyFileError(path, 'an object with exactly one of "all" or "any"')
    op = next(iter(value))
    where = f"{path}.{op}"
    terms: list[pol.GroupQuorum | pol.Requirement] = []
    for i, term in enumerate(_array(value[op], where, non_empty=True)):
        tp = f"{where}[{i}]"
        if isinstance(term, dict) and ("all" in term or "any" in term):
            if depth >= 1:
                raise PolicyFileError(tp, "requirements nest one level only")
            terms.append(_requirement_in(term, tp, groups, depth + 1))
            continue
        raw = _obj(term, tp, ("group", "m"))
        gid = _ident(raw["group"], f"{tp}.group")
        if gid not in groups:
            raise PolicyFileError(f"{tp}.group", f"no approver group {gid!r}")
        m = raw["m"]
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= groups[gid]:
            raise PolicyFileError(
                f"{tp}.m", f"a whole number from 1 to the {groups[gid]} approvers of {gid}"
            )
        terms.append(pol.GroupQuorum(gid, m))
    return pol.Requirement(op, tuple(terms))


def key_file_references(doc: Any) -> list[str]:
    """The ``key_file`` paths a policy document names, in order (tolerant: a malformed
    document yields what can be found; :func:`parse_policy` reports the faults)."""
    out: list[str] = []
    groups = doc.get("approver_groups") if isinstance(doc, dict) else None
    for g in groups if isinstance(groups, list) else ():
        approvers = g.get("approvers") if isinstance(g, dict) else None
        for a in approvers if isinstance(approvers, list) else ():
            if isinstance(a, dict) and isinstance(a.get("key_file"), str):
                out.append(a["key_file"])
    return out


def _passkey_in(value: Any, path: str) -> pol.Approver:
    """``{"id", "passkey": {"credential_id": base64url, "public_key": COSE_Key hex,
    "rp_id", "origins": [...]}}``: the entry the treasury console shows after a passkey
    registration (issue 15, docs/CONSOLE.md)."""
    raw = _obj(value, path, ("id", "passkey"))
    approver_id = _ident(raw["id"], f"{path}.id")
    p = _obj(raw["passkey"], f"{path}.passkey", ("credential_id", "public_key", "rp_id", "origins"))
    where = f"{path}.passkey"
    cid, cose = p["credential_id"], p["public_key"]
    if not isinstance(cid, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", cid):
        raise PolicyFileError(f"{where}.credential_id", "base64url without padding")
    if not isinstance(cose, str) or not re.fullmatch(r"(?:[0-9a-f]{2})+", cose):
        raise PolicyFileError(f"{where}.public_key", "the COSE_Key in lower-case hex")
    if not isinstance(p["origins"], list):
        raise PolicyFileError(f"{where}.origins", "a list of origins")
    cred = pk.PasskeyCredential(
        base64.urlsafe_b64decode(cid + "=" * (-len(cid) % 4)),
        bytes.fromhex(cose),
        p["rp_id"],
        tuple(p["origins"]),
    )
    try:
        pk.check_credential(cred, where)
    except pk.PasskeyError as exc:
        field, _, why = str(exc).partition(": ")
        raise PolicyFileError(field, why) from None
    return pol.Approver(approver_id, b"", cred)


def _approver_in(value: Any, path: str, key_files: Mapping[str, pol.Approver]) -> pol.Approver:
    if isinstance(value, dict) and "passkey" in value:
        return _passkey_in(value, path)
    if isinstance(value, dict) and "key_file" in value:
        raw = _obj(value, path, ("key_file",), ("id",))
        ref = _text(raw["key_file"], f"{path}.key_file", high=1024)
        approver = key_files.get(ref)
        if approver is None:
            raise PolicyFileError(f"{path}.key_file", f"key file {ref!r} was not read")
        if "id" in raw and _ident(raw["id"], f"{path}.id") != approver.approver_id:
            raise PolicyFileError(
                f"{path}.id", f"{raw['id']!r}, but {ref} is approver {approver.approver_id!r}"
            )
        _ident(approver.approver_id, f"{path}.key_file")
        public_key = approver.public_key
    else:
        raw = _obj(value, path, ("id", "public_key"))
        approver_id = _ident(raw["id"], f"{path}.id")
        hexkey = raw["public_key"]
        if not isinstance(hexkey, str) or not _HEX32.fullmatch(hexkey):
            raise PolicyFileError(
                f"{path}.public_key", "an Ed25519 public key: 64 lower-case hex digits"
            )
        approver = pol.Approver(approver_id, bytes.fromhex(hexkey))
        public_key = approver.public_key
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(public_key):
        raise PolicyFileError(
            f"{path}.public_key" if "key_file" not in raw else f"{path}.key_file",
            "not a valid Ed25519 public key (off the curve or small order)",
        )
    return approver


def parse_policy(doc: Any, *, key_files: Mapping[str, pol.Approver] | None = None) -> pol.Policy:
    """The :class:`~custody.policy.Policy` of a policy document (parsed JSON), strictly.

    ``key_files`` maps each ``key_file`` path the document names (:func:`key_file_references`)
    to the approver that file holds (:func:`custody.governance.read_approver_public`).
    Raises :class:`PolicyFileError` naming the path at fault."""
    key_files = key_files or {}
    raw = _obj(doc, "", ("format", "rules"), _TOP[2:])
    if raw["format"] != FORMAT:
        raise PolicyFileError("format", f"{raw['format']!r} is not {FORMAT!r}")

    # approver groups first: rules refer to them
    groups: list[pol.ApproverGroup] = []
    group_sizes: dict[str, int] = {}
    approver_keys: dict[str, tuple[bytes, str]] = {}
    key_owner: dict[bytes, str] = {}
    for i, g in enumerate(_array(raw.get("approver_groups", []), "approver_groups")):
        gp = f"approver_groups[{i}]"
        graw = _obj(g, gp, ("id", "approvers"))
        gid = _ident(graw["id"], f"{gp}.id")
        if gid in group_sizes:
            raise PolicyFileError(f"{gp}.id", f"group {gid!r} defined twice")
        members: list[pol.Approver] = []
        for j, a in enumerate(_array(graw["approvers"], f"{gp}.approvers", non_empty=True)):
            ap = f"{gp}.approvers[{j}]"
            approver = _approver_in(a, ap, key_files)
            if any(m.approver_id == approver.approver_id for m in members):
                raise PolicyFileError(ap, f"{approver.approver_id} is in {gid} twice")
            # a passkey's identity is its credential id (it has no Ed25519 key)
            ident = (
                approver.public_key
                if approver.passkey is None
                else b"passkey:" + approver.passkey.credential_id
            )
            known = approver_keys.get(approver.approver_id)
            if known is not None and known[0] != ident:
                raise PolicyFileError(
                    ap, f"{approver.approver_id} has another public key in {known[1]}"
                )
            owner = key_owner.get(ident)
            if owner is not None and owner != approver.approver_id:
                raise PolicyFileError(ap, f"public key already used by approver {owner}")
            approver_keys[approver.approver_id] = (ident, gp)
            key_owner[ident] = approver.approver_id
            members.append(approver)
        group_sizes[gid] = len(members)
        groups.append(pol.ApproverGroup(gid, tuple(members)))

    allowlists: list[pol.Allowlist] = []
    for i, a in enumerate(_array(raw.get("allowlists", []), "allowlists")):
        lp = f"allowlists[{i}]"
        araw = _obj(a, lp, ("name", "entries"))
        name = _ident(araw["name"], f"{lp}.name")
        if any(x.name == name for x in allowlists):
            raise PolicyFileError(f"{lp}.name", f"allowlist {name!r} defined twice")
        entries: list[pol.AllowlistEntry] = []
        seen: dict[str, int] = {}
        for j, e in enumerate(_array(araw["entries"], f"{lp}.entries")):
            ep = f"{lp}.entries[{j}]"
            eraw = _obj(e, ep, ("address", "active_from"), ("label",))
            address = _text(eraw["address"], f"{ep}.address")
            norm = pol.normalize_address(address)
            if norm in seen:
                raise PolicyFileError(f"{ep}.address", f"also entry {seen[norm]} of {name}")
            seen[norm] = j
            label = _text(eraw.get("label", ""), f"{ep}.label", low=0)
            entries.append(
                pol.AllowlistEntry(
                    address, parse_instant(eraw["active_from"], f"{ep}.active_from"), label
                )
            )
        allowlists.append(pol.Allowlist(name, tuple(entries)))

    wallets: list[pol.Wallet] = []
    for i, w in enumerate(_array(raw.get("wallets", []), "wallets")):
        wp = f"wallets[{i}]"
        wraw = _obj(w, wp, ("name", "keys"))
        name = _ident(wraw["name"], f"{wp}.name")
        if any(x.name == name for x in wallets):
            raise PolicyFileError(f"{wp}.name", f"wallet {name!r} defined twice")
        wallets.append(pol.Wallet(name, _string_set(wraw["keys"], f"{wp}.keys")))

    list_names = {a.name for a in allowlists}
    wallet_names = {w.name for w in wallets}
    rules: list[pol.Rule] = []
    rules_raw = _array(raw["rules"], "rules")
    if len(rules_raw) > pol.MAX_RULES:
        raise PolicyFileError("rules", f"at most {pol.MAX_RULES} rules")
    for i, r in enumerate(rules_raw):
        rules.append(_rule_in(r, f"rules[{i}]", rules, group_sizes, list_names, wallet_names))

    policy = pol.Policy(tuple(rules), tuple(allowlists), tuple(wallets), tuple(groups))
    try:
        return pol.check_policy(policy)
    except pol.PolicyError as exc:  # every rule above is checked first; a backstop
        raise PolicyFileError("policy", str(exc)) from None


def _names(value: str, path: str, known: set[str], what: str) -> None:
    if value not in known:
        raise PolicyFileError(path, f"no {what} {value!r}")


def _rule_in(
    value: Any,
    rp: str,
    earlier: Sequence[pol.Rule],
    groups: Mapping[str, int],
    lists: set[str],
    wallets: set[str],
) -> pol.Rule:
    raw = _obj(value, rp, ("id", "action"), sorted(_RULE_FIELDS - {"id", "action"}))
    rule_id = _ident(raw["id"], f"{rp}.id")
    if rule_id == pol.DEFAULT_DENY:
        raise PolicyFileError(f"{rp}.id", f"{pol.DEFAULT_DENY!r} is reserved")
    for k, other in enumerate(earlier):
        if other.rule_id == rule_id:
            raise PolicyFileError(f"{rp}.id", f"{rule_id!r} is also rules[{k}]")
    action = raw["action"]
    if action not in pol.ACTIONS:
        raise PolicyFileError(f"{rp}.action", f"{action!r} is not one of {', '.join(pol.ACTIONS)}")
    checks: dict[str, Callable[[str, str], None]] = {
        "kinds": _kind,
        "operations": _operation,
        "chains": _chain,
        "assets": _asset,
        "allowlists": lambda v, p: _names(v, p, lists, "allowlist"),
        "wallets": lambda v, p: _names(v, p, wallets, "wallet"),
    }
    sets: dict[str, Any] = {
        name: _string_set(
            raw[name], f"{rp}.{name}", checks.get(name), high=64 if name == "initiators" else 128
        )
        for name in _SETS
        if name in raw
    }
    amounts: dict[str, Any] = {
        name: _amount_in(raw[name], f"{rp}.{name}")
        for name in ("min_amount", "max_amount")
        if name in raw
    }
    if amounts.get("min_amount", 0) > amounts.get("max_amount", MAX_AMOUNT):
        raise PolicyFileError(f"{rp}.min_amount", "above max_amount: the rule could never match")
    velocity: list[pol.Velocity] = []
    for j, v in enumerate(
        _array(raw.get("velocity", []), f"{rp}.velocity", non_empty="velocity" in raw)
    ):
        vp = f"{rp}.velocity[{j}]"
        vraw = _obj(v, vp, ("scope", "window", "limit"))
        if vraw["scope"] not in ("key", "destination"):
            raise PolicyFileError(f"{vp}.scope", f"{vraw['scope']!r} is not key or destination")
        window = parse_duration(vraw["window"], f"{vp}.window")
        if not 1 <= window <= 366 * pol.DAY:
            raise PolicyFileError(f"{vp}.window", "from 1s to 366d")
        velocity.append(
            pol.Velocity(vraw["scope"], window, _amount_in(vraw["limit"], f"{vp}.limit"))
        )
    tod = None
    if "time_of_day" in raw:
        tp = f"{rp}.time_of_day"
        traw = _obj(raw["time_of_day"], tp, ("start", "end"))
        tod = pol.TimeWindow(
            _clock_in(traw["start"], f"{tp}.start"), _clock_in(traw["end"], f"{tp}.end")
        )
        if tod.start == tod.end:
            raise PolicyFileError(f"{tp}.end", "equal to start: an empty window")
    approvals = None
    if "approvals" in raw:
        if action != "approve":
            raise PolicyFileError(f"{rp}.approvals", f"only for action approve, not {action}")
        approvals = _requirement_in(raw["approvals"], f"{rp}.approvals", groups, 0)
    elif action == "approve":
        raise PolicyFileError(f"{rp}.approvals", "missing: an approve rule names who approves")
    return pol.Rule(
        rule_id=rule_id,
        action=action,
        velocity=tuple(velocity),
        time_of_day=tod,
        approvals=approvals,
        **amounts,
        **sets,
    )


# -- printing -----------------------------------------------------------------------------


def _requirement_out(req: pol.Requirement) -> dict[str, Any]:
    return {
        req.op: [
            {"group": t.group_id, "m": t.m}
            if isinstance(t, pol.GroupQuorum)
            else _requirement_out(t)
            for t in req.terms
        ]
    }


def _rule_out(r: pol.Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.rule_id, "action": r.action}
    for name in _SETS:
        if getattr(r, name):
            out[name] = sorted(getattr(r, name))
    if r.min_amount is not None:
        out["min_amount"] = str(r.min_amount)
    if r.max_amount is not None:
        out["max_amount"] = str(r.max_amount)
    if r.velocity:
        out["velocity"] = [
            {"scope": v.scope, "window": format_duration(v.window), "limit": str(v.limit)}
            for v in r.velocity
        ]
    if r.time_of_day is not None:
        out["time_of_day"] = {
            "start": _clock_out(r.time_of_day.start),
            "end": _clock_out(r.time_of_day.end),
        }
    if r.approvals is not None:
        out["approvals"] = _requirement_out(r.approvals)
    return out


def _instant_out(seconds: int, path: str) -> str:
    try:
        return format_instant(seconds)
    except ValueError as exc:
        raise PolicyFileError(f"{path}.active_from", str(exc)) from None


def print_policy(policy: pol.Policy) -> dict[str, Any]:
    """The policy document of ``policy`` (JSON-ready; :func:`dumps` for the text)."""
    return {
        "format": FORMAT,
        "rules": [_rule_out(r) for r in policy.rules],
        "allowlists": [
            {
                "name": a.name,
                "entries": [
                    {
                        "address": e.address,
                        "label": e.label,
                        "active_from": _instant_out(e.active_from, f"allowlists[{i}].entries[{j}]"),
                    }
                    for j, e in enumerate(a.entries)
                ],
            }
            for i, a in enumerate(policy.allowlists)
        ],
        "wallets": [{"name": w.name, "keys": sorted(w.key_ids)} for w in policy.wallets],
        "approver_groups": [
            {
                "id": g.group_id,
                "approvers": [_approver_out(a) for a in g.approvers],
            }
            for g in policy.approver_groups
        ],
    }


def _approver_out(a: pol.Approver) -> dict[str, Any]:
    if a.passkey is None:
        return {"id": a.approver_id, "public_key": a.public_key.hex()}
    c = a.passkey
    return {
        "id": a.approver_id,
        "passkey": {
            "credential_id": base64.urlsafe_b64encode(c.credential_id).rstrip(b"=").decode(),
            "public_key": c.public_key.hex(),
            "rp_id": c.rp_id,
            "origins": list(c.origins),
        },
    }


def dumps(policy: pol.Policy) -> str:
    """The policy file's text: :func:`print_policy` as indented JSON, ending in a newline."""
    return json.dumps(print_policy(policy), indent=2, ensure_ascii=False) + "\n"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise PolicyFileError("json", f"field {k!r} appears twice in one object")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise PolicyFileError("json", f"{name} is not JSON")


def load_json(text: str | bytes) -> Any:
    """Parse JSON text strictly (duplicate keys, NaN and Infinity refused)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, PolicyFileError):
            raise
        raise PolicyFileError("json", f"not JSON ({exc})") from None


def loads(text: str | bytes, *, key_files: Mapping[str, pol.Approver] | None = None) -> pol.Policy:
    """:func:`parse_policy` of JSON text."""
    return parse_policy(load_json(text), key_files=key_files)


# -- edits --------------------------------------------------------------------------------


def edit_allowlist(
    policy: pol.Policy,
    name: str,
    *,
    add: Sequence[pol.AllowlistEntry] = (),
    remove: Sequence[str] = (),
) -> pol.Policy:
    """``policy`` with entries added to and addresses removed from allowlist ``name``
    (addresses compared normalized). Refuses an unknown list, adding an address already on
    it, removing one that is not (:class:`PolicyFileError`, paths named after the CLI's
    options)."""
    found = next((a for a in policy.allowlists if a.name == name), None)
    if found is None:
        known = ", ".join(a.name for a in policy.allowlists) or "none"
        raise PolicyFileError("--allowlist", f"no allowlist {name!r} (the policy has: {known})")
    entries = list(found.entries)
    for address in remove:
        norm = pol.normalize_address(address)
        kept = [e for e in entries if pol.normalize_address(e.address) != norm]
        if len(kept) == len(entries):
            raise PolicyFileError("--disallow", f"{address} is not on allowlist {name}")
        entries = kept
    for entry in add:
        norm = pol.normalize_address(entry.address)
        if any(pol.normalize_address(e.address) == norm for e in entries):
            raise PolicyFileError(
                "--allow", f"{entry.address} is on allowlist {name} already (--disallow it first)"
            )
        entries.append(entry)
    lists = tuple(
        pol.Allowlist(name, tuple(entries)) if a.name == name else a for a in policy.allowlists
    )
    edited = pol.Policy(policy.rules, lists, policy.wallets, policy.approver_groups)
    try:
        return pol.check_policy(edited)
    except pol.PolicyError as exc:
        raise PolicyFileError("--allow", str(exc)) from None


# -- plain words --------------------------------------------------------------------------

_ISO_DECIMALS: Final = pol._MINOR_UNITS


def asset_decimals(asset: str) -> int | None:
    """Decimals of an asset's base unit when the policy can know them: ETH, BTC and ISO 4217
    currencies (an ERC-20 token's decimals are the token's, not the policy's)."""
    if asset in DECIMALS:
        return DECIMALS[asset]
    if re.fullmatch(r"[A-Z]{3}", asset):
        return _ISO_DECIMALS.get(asset, 2)
    return None


def format_amount(amount: int, assets: frozenset[str] | Sequence[str] = ()) -> str:
    """``amount`` base units in words: ``1.5 ETH (1500000000000000000 wei)`` when the one
    asset named has known decimals, else ``1500000 base units``."""
    names = sorted(assets)
    if len(names) == 1 and (d := asset_decimals(names[0])) is not None:
        human = Decimal(amount).scaleb(-d)
        text = format(human.normalize(), "f") if human else "0"
        unit = _BASE_UNIT.get(names[0], "minor units")
        return f"{text} {names[0]} ({amount} {unit})"
    suffix = f" of {names[0]}" if len(names) == 1 else ""
    return f"{amount} base units{suffix}"


def describe_requirement(req: pol.Requirement, policy: pol.Policy | None = None) -> str:
    """``2 of treasury (ann, bob, cy) AND 1 of ops (dee)``."""
    joiner = " AND " if req.op == "all" else " OR "
    parts = []
    for t in req.terms:
        if isinstance(t, pol.GroupQuorum):
            group = policy.group(t.group_id) if policy is not None else None
            who = f" ({', '.join(a.approver_id for a in group.approvers)})" if group else ""
            parts.append(f"{t.m} of {t.group_id}{who}")
        else:
            parts.append(f"({describe_requirement(t, policy)})")
    return joiner.join(parts)


def _listing(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))


def describe_rule(rule: pol.Rule, policy: pol.Policy | None = None) -> str:
    """One rule in plain words: its action, then every condition it sets."""
    action = {
        "allow": "ALLOW",
        "deny": "DENY",
        "approve": "REQUIRE APPROVALS",
    }[rule.action]
    conds: list[str] = []
    if rule.kinds:
        conds.append(f"kind {_listing(rule.kinds)}")
    if rule.operations:
        conds.append(f"operation {_listing(rule.operations)}")
    if rule.keys:
        conds.append(f"key {_listing(rule.keys)}")
    if rule.wallets:
        conds.append(f"a key of wallet {_listing(rule.wallets)}")
    if rule.assets:
        conds.append(f"asset {_listing(rule.assets)}")
    if rule.chains:
        conds.append(f"chain {_listing(rule.chains)}")
    if rule.initiators:
        conds.append(f"initiated by {_listing(rule.initiators)}")
    if rule.allowlists:
        conds.append(
            f"every destination on allowlist {_listing(rule.allowlists)} (time lock passed)"
        )
    if rule.min_amount is not None:
        conds.append(f"amount at least {format_amount(rule.min_amount, rule.assets)}")
    if rule.max_amount is not None:
        conds.append(f"amount at most {format_amount(rule.max_amount, rule.assets)}")
    for v in rule.velocity:
        per = "this key" if v.scope == "key" else "each destination"
        conds.append(
            f"at most {format_amount(v.limit, rule.assets)} per {format_duration(v.window)} "
            f"for {per}, this request included"
        )
    if rule.time_of_day is not None:
        conds.append(
            f"between {_clock_out(rule.time_of_day.start)} and "
            f"{_clock_out(rule.time_of_day.end)} UTC"
        )
    text = f"{rule.rule_id}: {action}"
    text += " when " + "; ".join(conds) if conds else " every request"
    if rule.approvals is not None:
        text += f" — approvals: {describe_requirement(rule.approvals, policy)}"
    return text


def describe_policy(policy: pol.Policy) -> list[str]:
    """The policy in plain words, one line per item."""
    lines = [f"rules ({len(policy.rules)}; the first that matches decides, else DENY):"]
    lines += [f"  {i}. {describe_rule(r, policy)}" for i, r in enumerate(policy.rules, 1)]
    if not policy.rules:
        lines.append("  (none: every request is denied)")
    for a in policy.allowlists:
        lines.append(f"allowlist {a.name} ({len(a.entries)} entries):")
        for e in a.entries:
            label = f" {e.label!r}" if e.label else ""
            when = (
                format_instant(e.active_from)
                if e.active_from <= MAX_INSTANT
                else f"Unix time {e.active_from} (never, in practice)"
            )
            lines.append(f"  {e.address}{label} from {when}")
    for w in policy.wallets:
        lines.append(f"wallet {w.name}: {_listing(w.key_ids)}")
    for g in policy.approver_groups:
        lines.append(f"approver group {g.group_id}:")
        lines += [
            f"  {a.approver_id} {a.public_key.hex()}"
            if a.passkey is None
            else f"  {a.approver_id} passkey {a.passkey.credential_id.hex()[:16]}... "
            f"(rp {a.passkey.rp_id}, {', '.join(a.passkey.origins)})"
            for a in g.approvers
        ]
    return lines
