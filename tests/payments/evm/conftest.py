"""Both :class:`~payments.evm.chain.Chain` implementations on a fresh eth-tester chain each:
``tester`` (in process) and ``jsonrpc`` (:class:`~payments.evm.chain.JsonRpcChain` over HTTP
to :mod:`tests.payments.evm.rpc_server`). ``Env.plumbing`` is the in-process handle on the
same tester, for funding from genesis accounts and mining (never custody keys)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from eth_tester import EthereumTester, PyEVMBackend

from payments.evm.chain import Chain, EthTesterChain, JsonRpcChain
from tests.payments.evm.rpc_server import serve

CHAINS = ["tester", "jsonrpc"]


@dataclass
class Env:
    name: str
    chain: Chain
    plumbing: EthTesterChain
    url: str | None = None


@contextmanager
def chain_env(name: str) -> Iterator[Env]:
    plumbing = EthTesterChain(EthereumTester(PyEVMBackend()))
    if name == "tester":
        yield Env(name, plumbing, plumbing)
        return
    with ExitStack() as stack:
        url = stack.enter_context(serve(plumbing.tester, plumbing._lock))
        rpc = stack.enter_context(JsonRpcChain(url + "/"))
        yield Env(name, rpc, plumbing, url)
