"""The committed test token: its artifact is what Vyper 0.4.3 makes of the committed source,
the deployed runtime code is the artifact's, and it behaves as EIP-20 says.

Vyper pins ``cbor2<6`` and the project runs on cbor2 6, so the compiler lives in its own
virtual environment beside the project's (``<venv>/vyper-0.4.3``), made by pip on first use
(from the package registry, as ``scripts/setup.sh`` installs everything else)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

from eth_abi.abi import decode as abi_decode
from eth_utils.abi import function_signature_to_4byte_selector as selector

from payments.evm.chain import EthTesterChain
from payments.evm.token import (
    ARTIFACT,
    SOURCE,
    VYPER_VERSION,
    artifact,
    compile_artifact,
    contract_address,
    deploy_test_token,
    give_tokens,
    token_balance,
)
from payments.evm.tx import erc20_transfer_calldata


def vyper_executable() -> Path:
    home = Path(sys.prefix) / f"vyper-{VYPER_VERSION}"
    exe = home / "bin" / "vyper"
    if not exe.exists():
        venv.create(home, with_pip=True, clear=True)
        subprocess.run(  # noqa: S603 - fixed argv
            [str(home / "bin" / "python"), "-m", "pip", "install", "-q",
             f"vyper=={VYPER_VERSION}"],
            check=True,
        )  # fmt: skip
    return exe


def test_committed_artifact_is_the_compiled_source() -> None:
    doc = artifact()
    assert doc["source_sha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest(), (
        "TestToken.vy changed: recompile (payments.evm.token.compile_artifact)"
    )
    fresh = compile_artifact(vyper_executable())
    assert fresh["compiler"].startswith(f"vyper {VYPER_VERSION}")
    assert fresh == doc, f"{ARTIFACT.name} is not what the source compiles to"


def _call(chain: EthTesterChain, token: str, sig: str, types: list[str]) -> object:
    (value,) = abi_decode(types, chain.call(token, selector(sig)))
    return value


def test_deployed_token_behaves_as_eip20() -> None:
    chain = EthTesterChain()
    erc20 = deploy_test_token(chain, name="Test", symbol="TST", decimals=6, supply=10**12)
    # the first contract of genesis account 0: a fixed address a demo policy can name
    assert erc20 == contract_address(chain.genesis_account(0), 0)
    assert erc20 == "0xF2E246BB76DF876Cef8b38ae84130F4F55De395b"
    code = chain.tester.get_code(erc20)
    assert bytes.fromhex(code[2:]) == bytes.fromhex(artifact()["bytecode_runtime"][2:])
    assert _call(chain, erc20, "name()", ["string"]) == "Test"
    assert _call(chain, erc20, "symbol()", ["string"]) == "TST"
    assert _call(chain, erc20, "decimals()", ["uint8"]) == 6
    assert _call(chain, erc20, "totalSupply()", ["uint256"]) == 10**12
    a, b = chain.genesis_account(0), chain.genesis_account(1)
    give_tokens(chain, erc20, b, 40)
    assert token_balance(chain, erc20, a) == 10**12 - 40
    assert token_balance(chain, erc20, b) == 40
    # over the balance: mined, reverted (status 0), nothing moved
    h = chain.send_from_genesis(erc20, erc20_transfer_calldata(a, 41), 100_000, source=1)
    r = chain.get_transaction_receipt(h)
    assert r is not None and r.status == 0 and r.logs == ()
    assert token_balance(chain, erc20, b) == 40
    # to the zero address: refused too
    h = chain.send_from_genesis(
        erc20, erc20_transfer_calldata("0x" + "00" * 20, 1), 100_000, source=1
    )
    r = chain.get_transaction_receipt(h)
    assert r is not None and r.status == 0
