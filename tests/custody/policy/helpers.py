"""Builders shared by the policy and approval tests: real intents, governance, approvers."""

from __future__ import annotations

import nacl.signing
import rlp

from custody import governance as gov
from custody import policy as pol
from custody.kinds import decode
from custody.kinds.evm import EvmTx

ALICE = "0x" + "a1" * 20  # an EOA destination
BOB = "0x" + "b0" * 20
TOKEN = "0x" + "70" * 20
T0 = 1_800_000_000  # a fixed "now", Unix seconds (2027-01-15 08:00:00 UTC)


def evm_tx(to: str = ALICE, value: int = 10**18, chain_id: int = 1, data: bytes = b"") -> EvmTx:
    fields = [chain_id, 0, 10**9, 2 * 10**9, 21_000, bytes.fromhex(to[2:]), value, data, []]
    intent = decode("evm-tx", {"tx": "0x02" + rlp.encode(fields).hex()}, scheme="ecdsa-secp256k1")
    assert isinstance(intent, EvmTx)
    return intent


def erc20_transfer(recipient: str, amount: int, token: str = TOKEN) -> EvmTx:
    data = bytes.fromhex("a9059cbb") + bytes(12) + bytes.fromhex(recipient[2:])
    return evm_tx(token, 0, data=data + amount.to_bytes(32, "big"))


def facts(
    *,
    amount: int = 10**18,
    to: str = ALICE,
    key: str = "key-1",
    initiator: str = "req-1",
    kind: str = "evm-tx",
) -> pol.Facts:
    return pol.Facts(
        kind=kind,
        key_id=key,
        initiator=initiator,
        operation="transfer",
        asset="ETH",
        chain="evm:1",
        transfers=(pol.Transfer(pol.normalize_address(to), amount),),
    )


def approvers(prefix: str, n: int) -> tuple[pol.ApproverGroup, dict[str, nacl.signing.SigningKey]]:
    keys = {f"{prefix}-{i}": nacl.signing.SigningKey.generate() for i in range(1, n + 1)}
    group = pol.ApproverGroup(
        prefix, tuple(pol.Approver(a, bytes(k.verify_key)) for a, k in keys.items())
    )
    return group, keys


def governance(policy: pol.Policy, *, version: int = 1, raw: frozenset[str] = frozenset()):
    officer = nacl.signing.SigningKey.generate()
    body = gov.Governance(
        cluster_id="test-cluster",
        version=1,
        previous=gov.GENESIS_PREVIOUS,
        officers=(gov.Officer("officer-1", bytes(officer.verify_key)),),
        quorum=1,
        roster=(),
        raw_signing_keys=raw,
        policy=policy,
    )
    gov.check_body(body)
    while body.version < version:
        body = body.successor()
    return body
