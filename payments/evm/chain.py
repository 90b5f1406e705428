"""The chain the Ethereum rail talks to: one :class:`Chain` protocol, two implementations.

* :class:`EthTesterChain`: eth-tester with the py-evm backend, in process (tests, the demo).
  Funding an address from the tester's genesis accounts (:meth:`EthTesterChain.fund`) and
  mining blocks on demand are test/demo plumbing: those accounts' keys belong to eth-tester,
  never to custody, and nothing of the payment core signs with them.
* :class:`JsonRpcChain`: any Ethereum execution client over standard JSON-RPC
  (``eth_chainId``, ``eth_getTransactionCount``, ``eth_getBalance``, ``eth_getBlockByNumber``,
  ``eth_maxPriorityFeePerGas``, ``eth_estimateGas``, ``eth_sendRawTransaction``,
  ``eth_getTransactionReceipt``, ``eth_call``, ``eth_blockNumber``; the execution-apis
  specification), over httpx. Quantities are parsed strictly (``0x`` then no leading zero,
  the spec's QUANTITY), so a node that answers something else is reported, not guessed at.

Errors: :class:`TxRejected` when the node refused a transaction (bad signature, nonce too
low, fee under the base fee, insufficient funds, a revert in ``eth_estimateGas``): it is
not in the pool now (signed bytes refused for fees or funds may be accepted later, which is
why :mod:`payments.evm.nonces` keeps their nonce with the payment).
:class:`ChainUnavailable` when the outcome is unknown (no answer, timeout, 5xx): a
``send_raw_transaction`` may or may not have reached the pool, so its nonce must NOT be
reused (broadcast the same bytes again, which is idempotent). :class:`ChainError` (their
base) for an answer that is not what the spec says.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, runtime_checkable

import httpx
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

__all__ = [
    "BlockTag",
    "Chain",
    "ChainError",
    "ChainUnavailable",
    "DEFAULT_PRIORITY_FEE",
    "EthTesterChain",
    "JsonRpcChain",
    "Log",
    "Receipt",
    "TxRejected",
    "tx_hash_of",
]

BlockTag = Literal["latest", "pending"]
DEFAULT_PRIORITY_FEE: Final = 10**9  # 1 gwei: eth-tester has no fee market to ask
_QUANTITY = re.compile(r"0x(0|[1-9a-f][0-9a-f]*)")
_DATA = re.compile(r"0x([0-9a-f]{2})*")


class ChainError(Exception):
    """The chain answered something the interface does not allow (or the base of the two
    below); the message names the method and field."""


class TxRejected(ChainError):
    """The node refused the transaction: it is not in the pool and never will be."""


class ChainUnavailable(ChainError):
    """No usable answer (connection, timeout, 5xx): the outcome of a send is unknown."""


@dataclass(frozen=True)
class Log:
    address: str  # EIP-55
    topics: tuple[bytes, ...]
    data: bytes


@dataclass(frozen=True)
class Receipt:
    """A mined transaction's receipt (the fields the rail and reconciliation use)."""

    tx_hash: bytes
    status: int  # 1 success, 0 reverted (EIP-658); a reverted tx still used its nonce and gas
    block_number: int
    gas_used: int
    effective_gas_price: int  # wei per gas actually paid (base fee + tip, EIP-1559)
    sender: str  # EIP-55
    to: str | None
    contract_address: str | None
    logs: tuple[Log, ...]

    @property
    def fee(self) -> int:
        """Wei the sender paid for gas: ``gas_used * effective_gas_price``."""
        return self.gas_used * self.effective_gas_price


def tx_hash_of(raw: bytes) -> bytes:
    """The hash of a signed typed transaction: ``keccak256`` of its EIP-2718 bytes."""
    return keccak(raw)


@runtime_checkable
class Chain(Protocol):
    """What the Ethereum rail needs of a chain; a JSON-RPC endpoint fits it."""

    def chain_id(self) -> int: ...

    def block_number(self) -> int: ...

    def get_transaction_count(self, address: str, block: BlockTag = "pending") -> int: ...

    def get_balance(self, address: str, block: BlockTag = "latest") -> int: ...

    def latest_base_fee(self) -> int:
        """``baseFeePerGas`` of the latest block (EIP-1559)."""
        ...

    def max_priority_fee(self) -> int:
        """A tip the chain suggests (``eth_maxPriorityFeePerGas``)."""
        ...

    def estimate_gas(self, sender: str, to: str, value: int, data: bytes) -> int: ...

    def send_raw_transaction(self, raw: bytes) -> bytes:
        """Submit a signed transaction; its hash. :class:`TxRejected` if refused."""
        ...

    def get_transaction_receipt(self, tx_hash: bytes) -> Receipt | None:
        """The receipt once mined, ``None`` while unknown or pending."""
        ...

    def call(self, to: str, data: bytes) -> bytes:
        """``eth_call`` at the latest block (no state change)."""
        ...


# -- eth-tester, in process ------------------------------------------------------------------


def _hex_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return bytes.fromhex(str(value).removeprefix("0x"))


class EthTesterChain:
    """eth-tester (py-evm backend) in this process; auto-mines each transaction into its own
    block unless :meth:`hold` was called. One lock around the tester (it is not
    thread-safe)."""

    def __init__(self, tester: Any | None = None) -> None:
        if tester is None:
            from eth_tester import EthereumTester, PyEVMBackend

            tester = EthereumTester(PyEVMBackend())
        self.tester = tester
        self._lock = threading.RLock()

    # -- the Chain protocol
    def chain_id(self) -> int:
        return int(self.tester.backend.chain.chain_id)

    def block_number(self) -> int:
        with self._lock:
            return int(self.tester.get_block_by_number("latest")["number"])

    def get_transaction_count(self, address: str, block: BlockTag = "pending") -> int:
        """``latest``: the account's nonce; ``pending`` also counts its transactions waiting in
        the pool while auto-mining is held (eth-tester's own ``pending`` ignores its pool,
        so the pool, a private list of eth-tester's, is read here)."""
        address = to_checksum_address(address)
        with self._lock:
            n = int(self.tester.get_nonce(address, "latest"))
            if block == "pending":
                pooled = {
                    int(tx["nonce"])
                    for tx in getattr(self.tester, "_pending_transactions", ())
                    if to_checksum_address(tx["from"]) == address
                }
                while n in pooled:
                    n += 1
            return n

    def get_balance(self, address: str, block: BlockTag = "latest") -> int:
        with self._lock:
            return int(self.tester.get_balance(to_checksum_address(address), block))

    def latest_base_fee(self) -> int:
        with self._lock:
            return int(self.tester.get_block_by_number("latest")["base_fee_per_gas"])

    def max_priority_fee(self) -> int:
        return DEFAULT_PRIORITY_FEE

    def estimate_gas(self, sender: str, to: str, value: int, data: bytes) -> int:
        tx = {
            "from": to_checksum_address(sender),
            "to": to_checksum_address(to),
            "value": value,
            "data": "0x" + data.hex(),
        }
        with self._lock:
            try:
                return int(self.tester.estimate_gas(tx))
            except Exception as e:  # eth-tester: TransactionFailed, ValidationError, ...
                raise TxRejected(f"eth_estimateGas: {type(e).__name__}: {e}") from None

    def send_raw_transaction(self, raw: bytes) -> bytes:
        with self._lock:
            try:
                got = self.tester.send_raw_transaction("0x" + raw.hex())
            except Exception as e:  # py-evm ValidationError and friends: definitive
                raise TxRejected(f"eth_sendRawTransaction: {type(e).__name__}: {e}") from None
        return _hex_bytes(got)

    def get_transaction_receipt(self, tx_hash: bytes) -> Receipt | None:
        from eth_tester.exceptions import TransactionNotFound

        with self._lock:
            try:
                r = self.tester.get_transaction_receipt("0x" + tx_hash.hex())
            except TransactionNotFound:
                return None
        if r.get("block_number") is None:
            return None
        return Receipt(
            tx_hash=_hex_bytes(r["transaction_hash"]),
            status=int(r["status"]),
            block_number=int(r["block_number"]),
            gas_used=int(r["gas_used"]),
            effective_gas_price=int(r["effective_gas_price"]),
            sender=to_checksum_address(r["from"]),
            to=to_checksum_address(r["to"]) if r.get("to") else None,
            contract_address=(
                to_checksum_address(r["contract_address"]) if r.get("contract_address") else None
            ),
            logs=tuple(
                Log(
                    to_checksum_address(g["address"]),
                    tuple(_hex_bytes(t) for t in g["topics"]),
                    _hex_bytes(g["data"]),
                )
                for g in r.get("logs", ())
            ),
        )

    def call(self, to: str, data: bytes) -> bytes:
        with self._lock:
            try:
                # eth-tester wants a funded "from" (it charges the call's gas); any will do
                tx = {
                    "from": self.genesis_account(0),
                    "to": to_checksum_address(to),
                    "data": "0x" + data.hex(),
                }
                out = self.tester.call(tx, "latest")
            except Exception as e:  # a revert or a bad call
                raise TxRejected(f"eth_call: {type(e).__name__}: {e}") from None
        return _hex_bytes(out)

    # -- test / demo plumbing (not part of Chain) ----------------------------------------------
    def genesis_account(self, i: int = 0) -> str:
        """One of eth-tester's pre-funded accounts (its own dev keys, never custody's)."""
        return str(self.tester.get_accounts()[i])

    def fund(self, address: str, wei: int, *, source: int = 0) -> bytes:
        """Send ``wei`` from genesis account ``source`` to ``address``; the tx hash."""
        with self._lock:
            h = self.tester.send_transaction(
                {
                    "from": self.genesis_account(source),
                    "to": to_checksum_address(address),
                    "value": wei,
                    "gas": 21_000,
                }
            )
        return _hex_bytes(h)

    def send_from_genesis(self, to: str | None, data: bytes, gas: int, *, source: int = 0) -> bytes:
        """A call or (``to=None``) a contract creation from a genesis account; the tx hash."""
        tx: dict[str, Any] = {"from": self.genesis_account(source), "data": "0x" + data.hex()}
        tx["gas"] = gas
        if to is not None:
            tx["to"] = to_checksum_address(to)
        with self._lock:
            return _hex_bytes(self.tester.send_transaction(tx))

    def mine(self, blocks: int = 1) -> None:
        with self._lock:
            self.tester.mine_blocks(blocks)

    def hold(self) -> None:
        """Stop auto-mining: transactions wait in the pool until :meth:`mine`."""
        with self._lock:
            self.tester.disable_auto_mine_transactions()

    def auto_mine(self) -> None:
        with self._lock:
            self.tester.enable_auto_mine_transactions()


# -- JSON-RPC over HTTP ----------------------------------------------------------------------


def _quantity(value: Any, what: str) -> int:
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
        raise ChainError(f"{what}: not a JSON-RPC QUANTITY: {value!r}")
    return int(value, 16)


def _data(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _DATA.fullmatch(value.lower()):
        raise ChainError(f"{what}: not JSON-RPC DATA: {value!r}")
    return bytes.fromhex(value[2:])


def _address(value: Any, what: str) -> str:
    raw = _data(value, what)
    if len(raw) != 20:
        raise ChainError(f"{what}: not a 20-byte address: {value!r}")
    return to_checksum_address(raw)


def _q(n: int) -> str:
    return hex(n)


# JSON-RPC error codes that mean "the node will not take this transaction" for a send
# (EIP-1474: -32000 invalid input, -32003 transaction rejected, -32602 invalid params,
# 3 execution reverted); -32700..-32600 (parse error, invalid request, method not found)
# are a fault of the request (ChainError); anything else (-32603 internal, -32005 limit
# exceeded) leaves the outcome unknown.
_REJECT_CODES: Final = frozenset({-32000, -32003, -32602, 3})


class JsonRpcChain:
    """A :class:`Chain` over an Ethereum JSON-RPC endpoint (httpx, one request per call)."""

    def __init__(
        self, url: str, *, timeout: float = 10.0, http: httpx.Client | None = None
    ) -> None:
        self.url = url
        self.http = http or httpx.Client(timeout=timeout)
        self._ids = itertools.count(1)
        self._chain_id: int | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> JsonRpcChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rpc(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC 2.0 call; its ``result``. Errors as the module docstring says."""
        rid = next(self._ids)
        body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        try:
            r = self.http.post(self.url, json=body)
        except httpx.HTTPError as e:
            raise ChainUnavailable(f"{method}: {type(e).__name__}: {e}") from None
        if r.status_code >= 500 or r.status_code == 429:
            raise ChainUnavailable(f"{method}: HTTP {r.status_code}")
        try:
            doc = r.json()
        except ValueError:
            raise ChainError(f"{method}: HTTP {r.status_code}, body is not JSON") from None
        if not isinstance(doc, Mapping) or doc.get("jsonrpc") != "2.0" or doc.get("id") != rid:
            raise ChainError(f"{method}: not a JSON-RPC 2.0 answer to request {rid}")
        err = doc.get("error")
        if err is not None:
            code = err.get("code") if isinstance(err, Mapping) else None
            msg = err.get("message") if isinstance(err, Mapping) else err
            text = f"{method}: JSON-RPC error {code}: {msg}"
            if code in _REJECT_CODES:
                raise TxRejected(text)
            if isinstance(code, int) and -32700 <= code <= -32600:
                raise ChainError(text)  # parse error, bad request, no such method: ours
            raise ChainUnavailable(text)
        if "result" not in doc:
            raise ChainError(f"{method}: answer has neither result nor error")
        return doc["result"]

    def chain_id(self) -> int:
        if self._chain_id is None:  # a chain does not change its id (EIP-155)
            self._chain_id = _quantity(self.rpc("eth_chainId", []), "eth_chainId")
        return self._chain_id

    def block_number(self) -> int:
        return _quantity(self.rpc("eth_blockNumber", []), "eth_blockNumber")

    def get_transaction_count(self, address: str, block: BlockTag = "pending") -> int:
        got = self.rpc("eth_getTransactionCount", [to_checksum_address(address), block])
        return _quantity(got, "eth_getTransactionCount")

    def get_balance(self, address: str, block: BlockTag = "latest") -> int:
        got = self.rpc("eth_getBalance", [to_checksum_address(address), block])
        return _quantity(got, "eth_getBalance")

    def latest_base_fee(self) -> int:
        block = self.rpc("eth_getBlockByNumber", ["latest", False])
        if not isinstance(block, Mapping) or "baseFeePerGas" not in block:
            raise ChainError("eth_getBlockByNumber: no baseFeePerGas (a pre-London chain?)")
        return _quantity(block["baseFeePerGas"], "eth_getBlockByNumber.baseFeePerGas")

    def max_priority_fee(self) -> int:
        return _quantity(self.rpc("eth_maxPriorityFeePerGas", []), "eth_maxPriorityFeePerGas")

    def estimate_gas(self, sender: str, to: str, value: int, data: bytes) -> int:
        tx = {
            "from": to_checksum_address(sender),
            "to": to_checksum_address(to),
            "value": _q(value),
            "data": "0x" + data.hex(),
        }
        return _quantity(self.rpc("eth_estimateGas", [tx]), "eth_estimateGas")

    def send_raw_transaction(self, raw: bytes) -> bytes:
        try:
            got = self.rpc("eth_sendRawTransaction", ["0x" + raw.hex()])
        except TxRejected as e:
            # Geth / Nethermind / Erigon: the very same bytes are already in the pool. The
            # send succeeded (earlier); idempotent, so give its hash.
            if "already known" in str(e).lower():
                return tx_hash_of(raw)
            raise
        h = _data(got, "eth_sendRawTransaction")
        if h != tx_hash_of(raw):
            raise ChainError("eth_sendRawTransaction: the node's hash is not keccak256(tx)")
        return h

    def get_transaction_receipt(self, tx_hash: bytes) -> Receipt | None:
        r = self.rpc("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
        if r is None:
            return None
        w = "eth_getTransactionReceipt"
        if not isinstance(r, Mapping):
            raise ChainError(f"{w}: not an object")
        if r.get("blockNumber") is None:
            return None
        try:
            logs = tuple(
                Log(
                    _address(g["address"], f"{w}.logs.address"),
                    tuple(_data(t, f"{w}.logs.topics") for t in g["topics"]),
                    _data(g["data"], f"{w}.logs.data"),
                )
                for g in r.get("logs") or ()
            )
            return Receipt(
                tx_hash=_data(r["transactionHash"], f"{w}.transactionHash"),
                status=_quantity(r["status"], f"{w}.status"),
                block_number=_quantity(r["blockNumber"], f"{w}.blockNumber"),
                gas_used=_quantity(r["gasUsed"], f"{w}.gasUsed"),
                effective_gas_price=_quantity(r["effectiveGasPrice"], f"{w}.effectiveGasPrice"),
                sender=_address(r["from"], f"{w}.from"),
                to=_address(r["to"], f"{w}.to") if r.get("to") else None,
                contract_address=(
                    _address(r["contractAddress"], f"{w}.contractAddress")
                    if r.get("contractAddress")
                    else None
                ),
                logs=logs,
            )
        except (KeyError, TypeError) as e:
            raise ChainError(f"{w}: missing or malformed field {e}") from None

    def call(self, to: str, data: bytes) -> bytes:
        tx = {"to": to_checksum_address(to), "data": "0x" + data.hex()}
        return _data(self.rpc("eth_call", [tx, "latest"]), "eth_call")
