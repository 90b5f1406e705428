"""Benchmark suite ``policy``: what a node does before releasing a partial signature.

A 100-rule policy (99 rules that do not match a request, each with several conditions,
then one that requires 2 of the treasury group AND 1 of the risk group), evaluated on the
facts of a decoded ``evm-tx`` with a 1000-entry release log for its velocity windows, plus
the verification of three approvals (Ed25519, pynacl). Run it as
``python -m simulations.bench policy [--json]``; the target is a median of at most 1 ms.
"""

from __future__ import annotations

from typing import Any

import nacl.signing
import rlp

from custody import approvals as ap
from custody import governance as gov
from custody import policy as pol
from custody.kinds import decode
from simulations.timing import time_calls

NOW = 1_800_000_000
INITIATOR = "requester-1"
RULES = 100
F = frozenset


def _setup() -> tuple[
    gov.Governance, Any, ap.ApprovalRequest, list[ap.Approval], list[pol.Release]
]:
    keys = {
        f"{g}-{i}": nacl.signing.SigningKey.generate()
        for g in ("treasury", "risk")
        for i in (1, 2, 3)
    }
    groups = tuple(
        pol.ApproverGroup(
            g,
            tuple(pol.Approver(a, bytes(k.verify_key)) for a, k in keys.items() if a.startswith(g)),
        )
        for g in ("treasury", "risk")
    )
    dest = "0x" + "a1" * 20
    entries = tuple(pol.AllowlistEntry("0x" + f"{i:040x}", NOW - 86_400) for i in range(200))
    filler = tuple(
        pol.Rule(
            f"rule-{i}",
            "allow",
            kinds=F({"evm-tx"}),
            wallets=F({"treasury"}),
            assets=F({"ETH"}),
            chains=F({"evm:1"}),
            allowlists=F({"payees"}),
            max_amount=10**18,
            velocity=(pol.Velocity("key", 86_400, 10**19),),
        )
        for i in range(RULES - 1)
    )
    need = pol.Requirement("all", (pol.GroupQuorum("treasury", 2), pol.GroupQuorum("risk", 1)))
    policy = pol.Policy(
        rules=(*filler, pol.Rule("big", "approve", wallets=F({"treasury"}), approvals=need)),
        allowlists=(pol.Allowlist("payees", (*entries, pol.AllowlistEntry(dest, NOW - 86_400))),),
        wallets=(pol.Wallet("treasury", F({"key-1"})),),
        approver_groups=groups,
    )
    officer = nacl.signing.SigningKey.generate()
    g = gov.check_body(
        gov.Governance(
            cluster_id="bench",
            version=1,
            previous=gov.GENESIS_PREVIOUS,
            officers=(gov.Officer("officer-1", bytes(officer.verify_key)),),
            quorum=1,
            roster=(),
            policy=policy,
        )
    )
    fields = [1, 0, 10**9, 2 * 10**9, 21_000, bytes.fromhex(dest[2:]), 5 * 10**18, b"", []]
    intent = decode("evm-tx", {"tx": "0x02" + rlp.encode(fields).hex()}, scheme="ecdsa-secp256k1")
    request = ap.ApprovalRequest("sr_bench", ap.intent_digest(intent.kind, intent.summary()))
    approvals = [
        ap.sign_approval(
            keys[a],
            ap.ApprovalStatement(
                request.intent_digest,
                request.request_id,
                g.version,
                g.digest,
                NOW + 600,
                a,
                "approve",
                INITIATOR,
            ),
        )
        for a in ("treasury-1", "treasury-2", "risk-1")
    ]
    history = [pol.Release(NOW - i * 60, "key-1", "ETH", dest, 10**15) for i in range(1000)]
    return g, intent, request, approvals, history


def run(quick: bool) -> list[dict[str, Any]]:
    runs = 50 if quick else 2000
    g, intent, request, approvals, history = _setup()
    wire = [a.encode() for a in approvals]

    def evaluate() -> pol.Decision:
        return pol.decide(g, intent, key_id="key-1", initiator=INITIATOR, now=NOW, history=history)

    def both() -> ap.ApprovalOutcome:
        out = ap.verify_approvals(evaluate(), wire, g, request, NOW, INITIATOR)
        if not out.satisfied:
            raise RuntimeError(f"benchmark approvals not satisfied: {out}")
        return out

    both()
    rows = []
    for op, fn in (("evaluate", evaluate), ("evaluate+verify3", both)):
        t = time_calls(fn, runs, warm=20)
        rows.append(
            {
                "suite": "policy",
                "scheme": "ed25519",
                "t": 3,
                "n": 6,
                "op": op,
                "median_ms": t.median_ms,
                "p95_ms": t.p95_ms,
                "runs": t.runs,
                "rules": RULES,
                "history": len(history),
            }
        )
    return rows
