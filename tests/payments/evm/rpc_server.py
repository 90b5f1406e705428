"""A real Ethereum JSON-RPC 2.0 server over HTTP, in a thread, serving an eth-tester chain.

It speaks the execution-apis encoding (QUANTITY ``0x`` hex without leading zeros, DATA
``0x`` hex, camelCase receipt and block fields, ``null`` for an unknown receipt, error
objects with EIP-1474 codes), written here directly against eth-tester, not through
:mod:`payments.evm.chain`, so :class:`~payments.evm.chain.JsonRpcChain` is tested against
a second, independent translation of the same chain.

Paths other than ``/`` misbehave on purpose: ``/down`` answers 503, ``/garbage`` a body
that is not JSON, ``/padded`` QUANTITYs with a leading zero.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from eth_tester import EthereumTester
from eth_tester.exceptions import TransactionNotFound


def _q(n: int) -> str:
    return hex(int(n))


def _d(v: Any) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    return str(v).lower() if str(v).startswith("0x") else "0x" + str(v)


class _Rpc:
    def __init__(self, tester: EthereumTester, lock: Any) -> None:
        self.t = tester
        self.lock = lock
        self.methods: dict[str, Callable[..., Any]] = {
            "eth_chainId": lambda: _q(self.t.backend.chain.chain_id),
            "eth_blockNumber": lambda: _q(self.t.get_block_by_number("latest")["number"]),
            "eth_getTransactionCount": self.count,
            "eth_getBalance": lambda a, tag: _q(self.t.get_balance(a, tag)),
            "eth_getBlockByNumber": self.block,
            "eth_maxPriorityFeePerGas": lambda: _q(10**9),
            "eth_estimateGas": lambda tx: _q(self.t.estimate_gas(self.tx_in(tx))),
            "eth_sendRawTransaction": lambda raw: _d(self.t.send_raw_transaction(raw)),
            "eth_getTransactionReceipt": self.receipt,
            "eth_call": lambda tx, tag: _d(self.t.call(self.tx_in(tx), tag)),
        }

    def count(self, address: str, tag: str) -> str:
        n = self.t.get_nonce(address, "latest")
        if tag == "pending":  # a node counts its pool too (eth-tester's "pending" does not)
            mine = [
                tx["nonce"]
                for tx in self.t._pending_transactions
                if tx["from"].lower() == address.lower()
            ]
            n += len(mine)
        return _q(n)

    def tx_in(self, tx: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"from": tx.get("from") or self.t.get_accounts()[0]}
        for k in ("to", "data"):
            if k in tx:
                out[k] = tx[k]
        if "value" in tx:
            out["value"] = int(tx["value"], 16)
        return out

    def block(self, tag: str, full: bool) -> dict[str, Any]:
        b = self.t.get_block_by_number(tag)
        return {
            "number": _q(b["number"]),
            "hash": _d(b["hash"]),
            "baseFeePerGas": _q(b["base_fee_per_gas"]),
            "gasLimit": _q(b["gas_limit"]),
            "timestamp": _q(b["timestamp"]),
            "transactions": [_d(h) for h in b["transactions"]],
        }

    def receipt(self, h: str) -> dict[str, Any] | None:
        try:
            r = self.t.get_transaction_receipt(h)
        except TransactionNotFound:
            return None
        if r.get("block_number") is None:
            return None
        return {
            "transactionHash": _d(r["transaction_hash"]),
            "blockHash": _d(r["block_hash"]),
            "blockNumber": _q(r["block_number"]),
            "transactionIndex": _q(r["transaction_index"]),
            "from": _d(r["from"]),
            "to": _d(r["to"]) if r.get("to") else None,
            "contractAddress": _d(r["contract_address"]) if r.get("contract_address") else None,
            "status": _q(r["status"]),
            "gasUsed": _q(r["gas_used"]),
            "cumulativeGasUsed": _q(r["cumulative_gas_used"]),
            "effectiveGasPrice": _q(r["effective_gas_price"]),
            "type": "0x2",
            "logs": [
                {"address": _d(g["address"]), "topics": [_d(t) for t in g["topics"]],
                 "data": _d(g["data"])}
                for g in r["logs"]
            ],
        }  # fmt: skip

    def handle(self, req: Any) -> dict[str, Any]:
        rid = req.get("id") if isinstance(req, dict) else None
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or "method" not in req:
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32600, "message": "bad"}}
        fn = self.methods.get(req["method"])
        if fn is None:
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": -32601, "message": f"method {req['method']} not found"},
            }
        try:
            with self.lock:
                result = fn(*req.get("params", []))
        except Exception as e:  # the node refuses: EIP-1474 "invalid input"
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": str(e)}}
        return {"jsonrpc": "2.0", "id": rid, "result": result}


def _pad(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _pad(v) for k, v in doc.items()}
    if isinstance(doc, str) and doc.startswith("0x") and len(doc) < 20:
        return "0x0" + doc[2:]
    return doc


@contextmanager
def serve(tester: EthereumTester, lock: Any) -> Iterator[str]:
    """Serve ``tester`` on a free loopback port; yields the base URL."""
    rpc = _Rpc(tester, lock)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path == "/down":
                self._send(503, b'{"error": "maintenance"}')
                return
            if self.path == "/garbage":
                self._send(200, b"<html>not json</html>")
                return
            try:
                answer = rpc.handle(json.loads(body))
            except ValueError:
                answer = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "x"}}
            if self.path == "/padded":
                answer = _pad(answer)
            self._send(200, json.dumps(answer).encode())

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
