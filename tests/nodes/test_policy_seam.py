"""The node's authorization seam (signer_nodes.policy.authorize) as a pure function: the
cases the HTTP attack test does not reach (satisfied approvals beside junk, a forged copy
beside an approver's real approval, raw without an initiator, a velocity history)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import nacl.signing
import pytest
import rlp

from custody import approvals as appr
from custody import governance as gov
from custody import policy as pol
from custody.signing import message_to_sign
from signer_nodes.policy import AuthorizationContext, NotAuthorized, authorize

SCHEME = "ecdsa-secp256k1"
DEST = "0x" + "a1" * 20
NOW = 1_800_000_000
KEYS = {f"t-{i}": nacl.signing.SigningKey.generate() for i in (1, 2, 3)}
GROUP = pol.ApproverGroup("t", tuple(pol.Approver(a, bytes(k.verify_key)) for a, k in KEYS.items()))
POLICY = pol.Policy(
    rules=(
        pol.Rule(
            "small",
            "allow",
            kinds=frozenset({"evm-tx"}),
            max_amount=100,
            velocity=(pol.Velocity("key", 3600, 150),),
        ),
        pol.Rule(
            "big",
            "approve",
            kinds=frozenset({"evm-tx"}),
            approvals=pol.Requirement("all", (pol.GroupQuorum("t", 2),)),
        ),
    ),
    approver_groups=(GROUP,),
)
GOV = gov.check_body(
    gov.Governance(
        cluster_id="c",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(gov.Officer("o", bytes(nacl.signing.SigningKey.generate().verify_key)),),
        quorum=1,
        roster=(),
        raw_signing_keys=frozenset({"raw-k"}),
        policy=POLICY,
    )
)


def _req(value: int, **extra: Any) -> dict[str, Any]:
    fields = [1, 0, 1, 2, 21_000, bytes.fromhex(DEST[2:]), value, b"", []]
    return {
        "id": "sr-1",
        "key_id": "k",
        "kind": "evm-tx",
        "payload": {"tx": "0x02" + rlp.encode(fields).hex()},
        "initiator": "alice",
        **extra,
    }


def _approval(req: dict[str, Any], who: str, key: nacl.signing.SigningKey | None = None) -> str:
    _, areq = appr.request_intent(SCHEME, req)
    st = appr.ApprovalStatement(
        areq.intent_digest,
        areq.request_id,
        GOV.version,
        GOV.digest,
        NOW + 60,
        who,
        "approve",
        "alice",
    )
    return base64.b64encode(appr.sign_approval(key or KEYS[who], st).encode()).decode()


def _authorize(
    req: dict[str, Any], history: list[pol.Release] | None = None, key: str = "k"
) -> Any:
    scheme = SCHEME
    msg = message_to_sign(scheme, req)
    return authorize(
        AuthorizationContext(
            "node-1",
            key,
            scheme,
            req,
            msg,
            msg,
            True,
            GOV.raw_enabled(key),
            GOV,
            NOW,
            None if history is None else (lambda asset, exclude: history),
        )
    )


def test_satisfied_approvals_allow_beside_junk_and_name_the_real_ones() -> None:
    req = _req(1000)
    forged = _approval(req, "t-1", nacl.signing.SigningKey.generate())
    real = _approval(req, "t-1")
    junk = base64.b64encode(b"\xa0").decode()
    auth = _authorize({**req, "approvals": [forged, real, junk, _approval(req, "t-2")]})
    assert auth.decision.rule_id == "big"
    (a1, d1), (a2, _) = auth.approvals
    assert (a1, a2) == ("t-1", "t-2")
    statement = appr.decode_approval(base64.b64decode(real)).statement
    assert d1 == hashlib.sha256(statement.signed_bytes()).digest()


def test_raw_goes_without_initiator_only_under_raw_signing_keys() -> None:
    raw = {"id": "r", "key_id": "raw-k", "kind": "raw", "message": "11" * 32}
    auth = _authorize(raw, key="raw-k")
    assert auth.decision.reason == pol.Reason.RAW_SIGNING and auth.initiator is None
    with pytest.raises(NotAuthorized) as e:
        _authorize({**raw, "key_id": "k"})
    assert e.value.reason == "raw-not-enabled"
    with pytest.raises(NotAuthorized) as e:
        _authorize({**raw, "initiator": ""}, key="raw-k")
    assert e.value.reason == "initiator-malformed"


def test_velocity_history_is_the_nodes() -> None:
    assert _authorize(_req(100), history=[]).decision.rule_id == "small"
    spent = [pol.Release(NOW - 10, "k", "ETH", DEST, 60)]
    assert _authorize(_req(90), history=spent).decision.rule_id == "small"
    # 60 + 100 > 150: the small rule does not match; the big one needs approvals
    with pytest.raises(NotAuthorized) as e:
        _authorize(_req(100), history=spent)
    assert e.value.reason == "approvals-pending" and "rule big" in e.value.detail
    # outside the window it does not count
    old = [pol.Release(NOW - 3600, "k", "ETH", DEST, 60)]
    assert _authorize(_req(100), history=old).decision.rule_id == "small"
