"""The test token: a minimal ERC-20 written in Vyper, committed compiled.

``contracts/TestToken.vy`` is the source; ``contracts/TestToken.json`` its compiled form
(ABI, creation bytecode, runtime bytecode), made by :func:`compile_artifact` with the
compiler and settings recorded in it (Vyper 0.4.3, ``--evm-version cancun``, default gas
optimisation). The product and the demo read the JSON and need no compiler; the test
``tests/payments/evm/test_token_artifact.py`` compiles the source again with that very
Vyper (in a separate virtual environment: Vyper pins ``cbor2<6``, which the rest of the
project does not run on) and requires the same bytes.

:func:`deploy_test_token` creates it on an :class:`~payments.evm.chain.EthTesterChain` from a
genesis account (test/demo plumbing), the whole supply to that account;
:func:`give_tokens` hands some to an address the same way. :func:`token_balance` reads
``balanceOf`` through any :class:`~payments.evm.chain.Chain`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any, Final

import rlp
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from payments.evm.chain import Chain, EthTesterChain, TxRejected
from payments.evm.tx import erc20_balance_of_calldata, erc20_transfer_calldata, parse_address

__all__ = [
    "ARTIFACT",
    "SOURCE",
    "VYPER_VERSION",
    "EVM_VERSION",
    "compile_artifact",
    "contract_address",
    "artifact",
    "deploy_test_token",
    "give_tokens",
    "token_balance",
]

CONTRACTS: Final = Path(__file__).parent / "contracts"
SOURCE: Final = CONTRACTS / "TestToken.vy"
ARTIFACT: Final = CONTRACTS / "TestToken.json"
VYPER_VERSION: Final = "0.4.3"
EVM_VERSION: Final = "cancun"  # every mainnet client and py-evm's Prague VM run it
DEPLOY_GAS: Final = 1_500_000


def compile_artifact(vyper: str | Path, source: Path = SOURCE) -> dict[str, Any]:
    """Compile ``source`` with the ``vyper`` executable; the artifact document."""
    vyper = os.path.abspath(vyper)  # we run it in the source's folder
    out = subprocess.run(  # noqa: S603 - a fixed argv, our own compiler path
        [vyper, "--evm-version", EVM_VERSION, "-f", "abi,bytecode,bytecode_runtime", source.name],
        cwd=source.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    version = subprocess.run(  # noqa: S603
        [vyper, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        "contract": "TestToken",
        "source": source.name,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "compiler": f"vyper {version}",
        "settings": {"evm_version": EVM_VERSION, "optimize": "gas"},
        "abi": json.loads(out[0]),
        "bytecode": out[1],
        "bytecode_runtime": out[2],
    }  # fmt: skip


@cache
def artifact() -> dict[str, Any]:
    """The committed artifact (parsed once)."""
    doc: dict[str, Any] = json.loads(ARTIFACT.read_text())
    return doc


def contract_address(deployer: str, nonce: int) -> str:
    """The address a contract created by ``deployer`` at ``nonce`` gets (yellow paper
    section 7: the last 20 bytes of ``keccak256(rlp([sender, nonce]))``). The demo chain's
    first deployment from genesis account 0 is thus always at the same address, which a
    policy can name before the chain exists."""
    raw = bytes.fromhex(parse_address(deployer, "deployer")[2:])
    return str(to_checksum_address(keccak(rlp.encode([raw, nonce]))[12:]))


def deploy_test_token(
    chain: EthTesterChain,
    *,
    name: str = "TPWC Test Token",
    symbol: str = "TPT",
    decimals: int = 6,
    supply: int = 10**9 * 10**6,
    source: int = 0,
) -> str:
    """Create the token from genesis account ``source`` (which gets the whole supply); its
    address (EIP-55)."""
    args = abi_encode(["string", "string", "uint8", "uint256"], [name, symbol, decimals, supply])
    code = bytes.fromhex(artifact()["bytecode"][2:]) + args
    deployer = chain.genesis_account(source)
    expected = contract_address(deployer, chain.get_transaction_count(deployer, "pending"))
    h = chain.send_from_genesis(None, code, DEPLOY_GAS, source=source)
    receipt = chain.get_transaction_receipt(h)
    if receipt is None or receipt.status != 1 or receipt.contract_address != expected:
        raise TxRejected(f"token deployment failed (expected at {expected}): {receipt}")
    return expected


def give_tokens(
    chain: EthTesterChain, token: str, to: str, amount: int, *, source: int = 0
) -> bytes:
    """``transfer(to, amount)`` from genesis account ``source`` (the deployer); tx hash."""
    h = chain.send_from_genesis(token, erc20_transfer_calldata(to, amount), 100_000, source=source)
    receipt = chain.get_transaction_receipt(h)
    if receipt is None or receipt.status != 1:
        raise TxRejected(f"token transfer from the genesis account failed: {receipt}")
    return h


def token_balance(chain: Chain, token: str, holder: str) -> int:
    """``balanceOf(holder)`` of the ERC-20 at ``token``, by ``eth_call``."""
    (value,) = abi_decode(["uint256"], chain.call(token, erc20_balance_of_calldata(holder)))
    return int(value)
