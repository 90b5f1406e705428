"""The ``ethereum`` and ``bitcoin`` rails in the payment service, as real processes: one
custody cluster (coordinator and three signer nodes) for the module, the payment service
(``python -m payments``) started and SIGKILLed as a process, and the chains it pays on
served from this test process over their standard RPCs (an eth-tester chain over Ethereum
JSON-RPC, the regtest UTXO set over Bitcoin Core's JSON-RPC methods), so the chains outlive
the service and the test reads them directly.

Every signature is checked by an independent verifier: eth-account recovers the key's
address from each signed Ethereum transaction; every Bitcoin input is verified by
libbitcoinkernel when the regtest set accepts the transaction (and again by the rail).
The funding here (eth-tester genesis -> the key's address, a regtest coinbase -> the key's
BIP-86 address) is test plumbing: those genesis keys are eth-tester's, never custody's.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from eth_account import Account
from eth_tester import EthereumTester, PyEVMBackend
from sqlalchemy import create_engine, select

from custody.cluster import ALLOWLIST, DEMO_BTC_DESTINATIONS, DEMO_ETH_DESTINATIONS, TOKEN_LIMIT
from custody.kinds.addresses import p2tr_script, taproot_output_key
from custody.models import KeyOut
from custody.policy import Rule
from payments.btc import Regtest, Rejected, output_script
from payments.db import accounts as accounts_table
from payments.db import payments as payments_table
from payments.evm import EthTesterChain, deploy_test_token, erc20_transfers, give_tokens
from payments.evm.token import token_balance
from payments.service import DEV_ERC20_ADDRESS
from tests.e2e.conftest import Live, current_governance, install_policy, running_cluster
from tests.payments.evm.rpc_server import serve as serve_ethereum
from tests.payments.test_service_e2e import PaymentService

DEST, DEST2 = DEMO_ETH_DESTINATIONS
BTC_DEST = DEMO_BTC_DESTINATIONS[2]  # bcrt1p..., allowlisted by the demo policy
GWEI = 10**9
FUNDING = 10 * 10**18
TOKENS = 50_000 * 10**6


# -- Bitcoin Core's JSON-RPC (the methods the rail uses) over the regtest set -------------
@contextmanager
def serve_bitcoin(chain: Regtest) -> Iterator[str]:
    def amount(sat: int) -> str:
        return f"@@{Decimal(sat) / Decimal(10**8):.8f}@@"  # a JSON number, as Core sends

    def call(method: str, params: list[Any]) -> Any:
        if method == "getblockcount":
            return chain.height
        if method == "scantxoutset":
            script = bytes.fromhex(params[1][0].removeprefix("raw(").removesuffix(")"))
            return {
                "success": True,
                "unspents": [
                    {"txid": u.txid, "vout": u.vout, "amount": amount(u.amount)}
                    for u in chain.utxos(script)
                ],
            }
        if method == "sendrawtransaction":
            return chain.accept(params[0])
        if method == "getrawtransaction":
            st = chain.status(params[0])
            if st.state == "unknown":
                raise LookupError("No such mempool or blockchain transaction")
            return {"txid": st.txid, "confirmations": st.confirmations, "blockhash": st.block_hash}
        raise NotImplementedError(method)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            try:
                doc = {"result": call(req["method"], req["params"]), "error": None}
            except Rejected as exc:
                doc = {"result": None, "error": {"code": -26, "message": f"{exc.reason}, {exc}"}}
            except LookupError as exc:
                doc = {"result": None, "error": {"code": -5, "message": str(exc)}}
            doc["id"] = req["id"]
            text = json.dumps(doc).replace('"@@', "").replace('@@"', "").encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


@dataclass
class World:
    live: Live
    tester: EthereumTester
    eth: EthTesterChain  # the same chain, read directly
    regtest: Regtest
    eth_key: KeyOut
    btc_key: KeyOut
    service: PaymentService

    @property
    def sender(self) -> str:
        return self.eth_key.addresses["ethereum"]

    def ledger(self) -> dict[str, Any]:
        eng = create_engine(f"sqlite:///{self.service.d / 'payments.db'}")
        with eng.connect() as c:
            rows = {r.id: r for r in c.execute(select(accounts_table))}
        eng.dispose()
        return rows

    def row(self, pid: str) -> Any:
        """The payment's read-model row (the API does not show the signed bytes)."""
        eng = create_engine(f"sqlite:///{self.service.d / 'payments.db'}")
        with eng.connect() as c:
            r = c.execute(select(payments_table).where(payments_table.c.id == pid)).one()
        eng.dispose()
        return r

    def account(self, tag: str, asset: str, decimals: int, funds: int) -> str:
        s = self.service
        r = s.post(
            "/v1/accounts", {"owner": f"c-{tag}", "asset": asset, "decimals": decimals}, f"a-{tag}"
        )
        assert r.status_code in (200, 201), r.text
        aid = str(r.json()["id"])
        d = s.post(
            f"/v1/accounts/{aid}/deposits", {"amount": funds, "reference": f"f-{tag}"}, f"d-{tag}"
        )
        assert d.status_code in (200, 201), d.text
        return aid

    def events(self, pid: str) -> list[dict[str, Any]]:
        return list(self.service.http.get(f"/v1/payments/{pid}/events").json())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with ExitStack() as stack:
        live = stack.enter_context(running_cluster(tmp_path_factory.mktemp("cluster")))
        eth_key = live.admin.create_key("ecdsa-secp256k1", 2)
        btc_key = live.admin.create_key("bip340", 2, network="regtest")
        assert eth_key.status == btc_key.status == "active"
        tester = EthereumTester(PyEVMBackend())
        eth = EthTesterChain(tester)
        token = deploy_test_token(eth)  # genesis account 0's first transaction
        assert token == DEV_ERC20_ADDRESS
        eth.fund(eth_key.addresses["ethereum"], FUNDING)
        give_tokens(eth, token, eth_key.addresses["ethereum"], TOKENS)
        # a governance version whose policy also allows the test token (the demo policy
        # names USDC's mainnet address), as tests/payments/evm/test_e2e.py does
        cur, _ = current_governance(live)
        rule = Rule(
            "test-token",
            "allow",
            kinds=frozenset({"evm-tx"}),
            operations=frozenset({"transfer"}),
            assets=frozenset({token.lower()}),
            allowlists=frozenset({ALLOWLIST}),
            max_amount=TOKEN_LIMIT,
        )
        install_policy(live, dataclasses.replace(cur.policy, rules=(*cur.policy.rules, rule)))
        regtest = Regtest()
        regtest.fund(btc_key.addresses["bitcoin"], [3_000_000, 2_000_000, 1_500_000])
        eth_url = stack.enter_context(serve_ethereum(tester, eth._lock))
        btc_url = stack.enter_context(serve_bitcoin(regtest))
        d = tmp_path_factory.mktemp("payments")
        s = PaymentService(live, d)
        s.env.update(
            {
                "PAYMENTS_EVM_KEY_ID": eth_key.id,
                "PAYMENTS_EVM_RPC_URL": eth_url,
                "PAYMENTS_EVM_CHAIN_ID": str(eth.chain_id()),
                "PAYMENTS_EVM_TOKENS": f"TPT:{token}:6",
                "PAYMENTS_BTC_KEY_ID": btc_key.id,
                "PAYMENTS_BTC_RPC_URL": btc_url,
                "PAYMENTS_VELOCITY_MAX": "1000",
            }
        )
        stack.callback(s.stop)
        s.start()
        yield World(live, tester, eth, regtest, eth_key, btc_key, s)


def _pay(w: World, body: dict[str, Any], key: str) -> str:
    r = w.service.post("/v1/payments", body, key)
    assert r.status_code == 201 and r.json()["status"] == "authorized", r.json()
    return str(r.json()["id"])


def test_ether_payment_is_signed_mined_confirmed_and_moves_what_the_ledger_says(
    world: World,
) -> None:
    w = world
    a = w.account("eth-1", "ETH", 9, 2 * GWEI)  # 2 ETH, ledgered in gwei
    before_sender, before_dest = w.eth.get_balance(w.sender), w.eth.get_balance(DEST)
    nonce_before = w.eth.get_transaction_count(w.sender, "latest")
    body = {"account_id": a, "amount": 250_000_000, "destination": DEST, "rail": "ethereum"}
    pid = _pay(w, body, "eth-1")
    held = w.service.http.get(f"/v1/accounts/{a}").json()["held"]
    p = w.service.wait_status(pid, "confirmed")
    # the same payment again with the same Idempotency-Key: the same payment, nothing more
    again = w.service.post("/v1/payments", body, "eth-1")
    assert again.status_code == 200 and again.json()["id"] == pid
    raw = bytes.fromhex(w.row(pid).signed_raw)
    assert Account.recover_transaction(raw) == w.sender  # eth-account, not our code
    receipt = w.eth.get_transaction_receipt(bytes.fromhex(p["rail_ref"][2:]))
    assert receipt is not None and receipt.status == 1 and receipt.sender == w.sender
    assert w.eth.get_transaction_count(w.sender, "latest") == nonce_before + 1  # one tx
    value = 250_000_000 * GWEI
    assert w.eth.get_balance(DEST) - before_dest == value
    assert before_sender - w.eth.get_balance(w.sender) == value + receipt.fee
    # the ledger: the fee charged is the receipt's, rounded up to whole gwei, rounding kept
    fee_units = -(-receipt.fee // GWEI)
    confirmed = [e for e in w.events(pid) if e["type"] == "PaymentConfirmed"][0]["data"]
    assert confirmed["fee"] == fee_units == p["fee"]
    assert int(confirmed["fee_wei"]) == receipt.fee
    assert int(confirmed["fee_rounding_wei"]) == fee_units * GWEI - receipt.fee
    assert held > 250_000_000 + fee_units  # the reservation covered the worst case
    acct = w.service.http.get(f"/v1/accounts/{a}").json()
    assert (acct["balance"], acct["held"]) == (2 * GWEI - 250_000_000 - fee_units, 0)
    ledger = w.ledger()
    assert ledger["sys:fees:ETH"].balance == fee_units
    assert ledger["sys:settlement_clearing:ETH"].balance == 250_000_000
    assert [e["type"] for e in w.events(pid)] == [
        "PaymentCreated", "PaymentAuthorized", "SignPrepared", "PaymentSigned",
        "PaymentBroadcast", "PaymentConfirmed",
    ]  # fmt: skip
    check = w.service.http.get("/v1/ledger/check").json()
    assert check["replay_differences"] == [] and check["sum_per_asset"]["ETH"] == 0


def test_ether_is_ledgered_in_gwei_and_other_assets_are_refused(world: World) -> None:
    """ETH is ledgered in gwei (payments.db: the amount-unit decision): an ETH account of
    18 decimals (wei, which the BIGINT cannot hold past ~9.2 ETH) is refused, and the
    ethereum rail declines an asset it does not carry."""
    w = world
    wei = w.service.post("/v1/accounts", {"owner": "c-wei", "asset": "ETH", "decimals": 18}, "wei")
    assert wei.status_code == 422 and "9 decimals, not 18" in wei.text, wei.text
    other = w.account("other", "DOGE", 8, 1_000)
    body = {"account_id": other, "amount": 5, "destination": DEST, "rail": "ethereum"}
    got = w.service.post("/v1/payments", body, "other-1").json()
    assert got["status"] == "declined", got
    assert any("pays ETH, TPT, not DOGE" in x for x in got["reasons"]), got["reasons"]


def test_erc20_payment_moves_tokens_on_chain(world: World) -> None:
    w = world
    a = w.account("tpt-1", "TPT", 6, 5_000 * 10**6)
    before = token_balance(w.eth, DEV_ERC20_ADDRESS, DEST2)
    pid = _pay(
        w,
        {"account_id": a, "amount": 1_234 * 10**6, "destination": DEST2, "rail": "ethereum"},
        "tpt-1",
    )
    p = w.service.wait_status(pid, "confirmed")
    assert Account.recover_transaction(bytes.fromhex(w.row(pid).signed_raw)) == w.sender
    receipt = w.eth.get_transaction_receipt(bytes.fromhex(p["rail_ref"][2:]))
    assert receipt is not None and receipt.status == 1
    [t] = erc20_transfers(receipt)
    assert (t.token, t.sender, t.recipient, t.amount) == (
        DEV_ERC20_ADDRESS,
        w.sender,
        DEST2,
        1_234 * 10**6,
    )
    assert token_balance(w.eth, DEV_ERC20_ADDRESS, DEST2) - before == 1_234 * 10**6
    acct = w.service.http.get(f"/v1/accounts/{a}").json()
    assert (acct["balance"], acct["held"]) == (5_000 * 10**6 - 1_234 * 10**6, 0)


def test_bitcoin_payment_is_accepted_by_the_regtest_set_and_change_returns(
    world: World,
) -> None:
    w = world
    a = w.account("btc-1", "BTC", 8, 4_000_000)
    ours = p2tr_script(taproot_output_key(bytes.fromhex(w.btc_key.public_key or "")))
    dest = output_script(BTC_DEST, "regtest")
    before_ours, before_dest = w.regtest.balance(ours), w.regtest.balance(dest)
    pid = _pay(
        w,
        {"account_id": a, "amount": 2_500_000, "destination": BTC_DEST, "rail": "bitcoin"},
        "btc-1",
    )
    p = w.service.wait_status(pid, "broadcast")
    txid = p["rail_ref"]
    assert w.regtest.status(txid).state == "mempool"  # libbitcoinkernel checked each input
    w.regtest.mine(1)
    p = w.service.wait_status(pid, "confirmed")
    st = w.regtest.status(txid)
    assert st.state == "confirmed" and st.confirmations >= 1
    fee = p["fee"]
    assert w.regtest.balance(dest) - before_dest == 2_500_000
    # the change came back to the key: it lost exactly the amount and the fee
    assert before_ours - w.regtest.balance(ours) == 2_500_000 + fee
    change = [u for u in w.regtest.utxos(ours) if u.txid == txid]
    assert len(change) == 1 and change[0].amount > 0
    acct = w.service.http.get(f"/v1/accounts/{a}").json()
    assert (acct["balance"], acct["held"]) == (4_000_000 - 2_500_000 - fee, 0)
    assert w.ledger()["sys:fees:BTC"].balance == fee


def _eth_requests_for(w: World, tx: str) -> list[Any]:
    return [
        r
        for r in w.live.requester.list_sign_requests(key_id=w.eth_key.id)
        if (r.payload or {}).get("tx") == tx
    ]


@pytest.mark.parametrize("pause_at", ["after-sign-submit", "after-broadcast"])
def test_sigkill_between_sign_and_broadcast_pays_once(world: World, pause_at: str) -> None:
    w, s = world, world.service
    assert s.proc is not None
    s.proc.terminate()
    s.proc.wait(10)
    s.start(pause_at=pause_at)
    a = w.account(f"kill-{pause_at}", "ETH", 9, GWEI)
    nonce_before = w.eth.get_transaction_count(w.sender, "latest")
    dest_before = w.eth.get_balance(DEST)
    body = {"account_id": a, "amount": 100_000_000, "destination": DEST, "rail": "ethereum"}
    pid = _pay(w, body, f"kill-{pause_at}")
    marker = s.d / "paused"
    deadline = time.monotonic() + 90
    while not (marker.exists() and pid in marker.read_text()):
        assert time.monotonic() < deadline, "the worker never reached " + pause_at
        time.sleep(0.05)
    s.kill()  # SIGKILL between custody's answer and the broadcast (or its record)
    marker.unlink()
    s.start()
    again = s.post("/v1/payments", body, f"kill-{pause_at}")
    assert again.status_code == 200 and again.json()["id"] == pid
    p = s.wait_status(pid, "confirmed")
    assert w.eth.get_transaction_count(w.sender, "latest") == nonce_before + 1  # paid once
    assert w.eth.get_balance(DEST) - dest_before == 100_000_000 * GWEI
    row = w.row(pid)
    assert Account.recover_transaction(bytes.fromhex(row.signed_raw)) == w.sender
    # custody was asked once: the restart resubmitted the very same bytes, same request
    assert len(_eth_requests_for(w, row.unsigned["payload"]["tx"])) == 1
    assert p["sign_request_id"] == row.sign_request_id
    assert s.http.get("/v1/ledger/check").json()["replay_differences"] == []


def test_sigkill_after_sign_submit_on_bitcoin_pays_once_with_the_same_psbt(world: World) -> None:
    """The bitcoin rail across a SIGKILL after custody was asked: the restarted service
    takes the stored PSBT's coins again, resubmits the same bytes (the same custody
    request) and the regtest set holds one transaction paying the destination once."""
    w, s = world, world.service
    assert s.proc is not None
    s.proc.terminate()
    s.proc.wait(10)
    s.start(pause_at="after-sign-submit")
    a = w.account("kill-btc", "BTC", 8, 2_000_000)
    dest = output_script(BTC_DEST, "regtest")
    before = w.regtest.balance(dest)
    body = {"account_id": a, "amount": 700_000, "destination": BTC_DEST, "rail": "bitcoin"}
    pid = _pay(w, body, "kill-btc")
    marker = s.d / "paused"
    deadline = time.monotonic() + 90
    while not (marker.exists() and pid in marker.read_text()):
        assert time.monotonic() < deadline, "the worker never reached after-sign-submit"
        time.sleep(0.05)
    s.kill()
    marker.unlink()
    s.start()
    again = s.post("/v1/payments", body, "kill-btc")
    assert again.status_code == 200 and again.json()["id"] == pid
    p = s.wait_status(pid, "broadcast")
    w.regtest.mine(1)
    p = s.wait_status(pid, "confirmed")
    assert w.regtest.balance(dest) - before == 700_000  # paid once
    row = w.row(pid)
    mine = [
        r
        for r in w.live.requester.list_sign_requests(key_id=w.btc_key.id)
        if (r.payload or {}).get("psbt") == row.unsigned["payload"]["psbt"]
    ]
    assert len(mine) == 1 and mine[0].id == p["sign_request_id"]
    assert w.regtest.status(p["rail_ref"]).state == "confirmed"


def test_reconciliation_on_chain_receipts_finds_a_break_injected_on_chain(
    world: World,
) -> None:
    """A payment confirmed, then the chain reorganized it away (eth-tester reverted to a
    snapshot taken before it): the receipt is gone, and reconciliation against the chain's
    receipts reports the payment missing; the payments still on chain match."""
    w, s = world, world.service
    a = w.account("reorg", "ETH", 9, GWEI)
    with w.eth._lock:
        snapshot = w.tester.take_snapshot()
    pid = _pay(
        w,
        {"account_id": a, "amount": 10_000_000, "destination": DEST, "rail": "ethereum"},
        "reorg",
    )
    s.wait_status(pid, "confirmed")
    clean = s.post("/v1/reconciliations").json()
    assert [b for b in clean["breaks"] if b["source"] == "ethereum"] == [], clean["breaks"]
    with w.eth._lock:
        w.tester.revert_to_snapshot(snapshot)  # the break, injected on chain
    rec = s.post("/v1/reconciliations").json()
    chain_breaks = [b for b in rec["breaks"] if b["source"] == "ethereum"]
    assert [(b["kind"], b["payment_id"]) for b in chain_breaks] == [("missing", pid)], rec
    assert chain_breaks[0]["expected_amount"] == 10_000_000
    btc = [b for b in rec["breaks"] if b["source"] == "bitcoin"]
    assert btc == [], btc
