"""Payments benchmark: payments authorized, signed and confirmed per second per chain rail.

Starts a local 2-of-3 custody cluster (coordinator and three signer nodes on loopback),
creates an ``ecdsa-secp256k1`` and a ``bip340`` (regtest) key, and runs the payment core in
this process as the service composes it (:class:`payments.core.PaymentCore`, the
``ethereum`` and ``bitcoin`` rails over the in-process chains, eth-tester auto-mining and
the regtest set mining a block per transaction, one SQLite payments database, the
:class:`payments.worker.Worker` signing through the custody SDK over HTTP). Per rail it
creates ``n`` payments to the demo allowlist (each authorized in its own transaction), then
runs worker passes (every 0.05 s) until every one is confirmed.

Rows (``{"suite": "payments", "scheme", "t", "n", "rail", "op", "runs", "median_ms",
"per_s", ...}``, the suites' common schema plus the rail): ``authorize`` (create + risk +
hold; ``median_ms`` per call), ``signed`` and ``confirmed`` (``per_s``: payments per second
from the first worker pass to the last payment reaching the state; ``median_ms``: from
``PaymentCreated`` to the state's event), and where the time went per payment: ``custody_ms``
(wall time inside custody SDK calls), ``sign_latency_ms`` (median from ``SignPrepared`` to
``PaymentSigned``: custody's end-to-end threshold signature, overlapped across payments
since the worker submits without waiting), ``chain_ms`` (inside chain calls) and
``idle_ms`` (the worker sleeping between passes, waiting for custody) and ``service_ms``
(the rest: the payment core, its database, the rails' own work).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from custody.client import CustodyClient
from custody.cluster import DEMO_BTC_DESTINATIONS, DEMO_ETH_DESTINATIONS, Cluster, free_port_block
from payments import events as ev
from payments import risk
from payments.btc import FeeRate, Regtest
from payments.btc_rail import BitcoinPayRail
from payments.core import PaymentCore
from payments.db import create_schema, make_engine
from payments.evm import EthTesterChain
from payments.evm_rail import EthereumRail
from payments.evm_rail import checks as evm_checks
from payments.rails import Rail
from payments.sanctions import SanctionsList
from payments.service import AutoMiningRegtest
from payments.settings import PACKAGE_DATA
from payments.worker import Worker

PASS_INTERVAL = 0.05  # between worker passes (the service's default is 0.2 s)


class Timed:
    """Every method call of ``inner`` timed into ``self.seconds`` (attributes pass)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t

        return call


def _drive(
    core: PaymentCore, worker: Worker, pids: list[str], timeout: float
) -> tuple[float, float, float]:
    """Worker passes until every payment is confirmed: (seconds to all signed, to all
    confirmed, of them idle between passes), from the first pass."""
    start = time.perf_counter()
    signed_at = None
    idle = 0.0
    deadline = time.monotonic() + timeout
    while True:
        worker.tick()
        states = [core.get(p)["status"] for p in pids]
        bad = [s for s in states if s in ("failed", "declined", "cancelled")]
        if bad:
            raise RuntimeError(f"payments did not go through: {states}")
        if signed_at is None and all(s in ("signed", "broadcast", "confirmed") for s in states):
            signed_at = time.perf_counter() - start
        if all(s == "confirmed" for s in states):
            total = time.perf_counter() - start
            return signed_at or total, total, idle
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {states}")
        time.sleep(PASS_INTERVAL)
        idle += PASS_INTERVAL


def _median_ms(core: PaymentCore, pids: list[str], first: str, last: str) -> float:
    """The median time from event ``first`` to event ``last`` of the payments."""
    out = []
    with core.engine.connect() as conn:
        for pid in pids:
            at = {e.type: e.at for e in ev.load(conn, f"payment:{pid}")}
            out.append((at[last] - at[first]).total_seconds() * 1000)
    return statistics.median(out)


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 8 if quick else 40
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-payments-") as d:
        env = {"CUSTODY_POOL_INTERVAL": "0.2", "CUSTODY_PRESIG_TARGET": str(n + 4)}
        with Cluster(Path(d) / "c", nodes=3, port=free_port_block(3), env=env) as cluster:
            doc = cluster.start(timeout=120)
            api, creds = doc["api_url"], doc["credentials"]
            with CustodyClient(api, creds["admin"]) as admin:
                eth_key = admin.create_key("ecdsa-secp256k1", 2)
                btc_key = admin.create_key("bip340", 2, network="regtest")
            requester = CustodyClient(api, creds["requester"])
            custody = Timed(requester)
            engine = make_engine(f"sqlite:///{Path(d) / 'payments.db'}")
            create_schema(engine)
            tester = EthTesterChain()
            tester.fund(eth_key.addresses["ethereum"], 100 * 10**18)  # bench plumbing
            regtest = Regtest()
            regtest.fund(btc_key.addresses["bitcoin"], [300_000] * (n + 2))
            eth_chain, btc_chain = Timed(tester), Timed(AutoMiningRegtest(regtest))
            eth = EthereumRail(engine, eth_chain, eth_key)
            btc = BitcoinPayRail(
                engine, requester, btc_key, btc_chain, fee_rate=FeeRate.sat_per_vb(2)
            )
            rails: dict[str, Rail] = {"ethereum": eth, "bitcoin": btc}
            core = PaymentCore(
                engine,
                SanctionsList.load(PACKAGE_DATA / "sanctions"),
                risk.Settings(velocity_max=10**6),
                rails,
                dict(evm_checks(eth)),
            )
            worker = Worker(core, custody)  # type: ignore[arg-type]
            cases = [
                ("ethereum", "ETH", 9, 1_000_000, DEMO_ETH_DESTINATIONS[0], eth_chain),
                ("bitcoin", "BTC", 8, 50_000, DEMO_BTC_DESTINATIONS[2], btc_chain),
            ]
            for rail, asset, decimals, amount, dest, chain in cases:
                aid, _ = core.open_account(
                    {"owner": f"bench-{asset}", "asset": asset, "decimals": decimals}, asset
                )
                core.deposit(aid, amount * n * 10, f"bench-{asset}")
                chain.seconds = custody.seconds = 0.0
                t = time.perf_counter()
                pids, calls = [], []
                for i in range(n):
                    t1 = time.perf_counter()
                    body = {"account_id": aid, "amount": amount, "destination": dest, "rail": rail}
                    pids.append(core.create_payment(body, f"{rail}-{i}")[0])
                    calls.append((time.perf_counter() - t1) * 1000)
                t_auth = time.perf_counter() - t
                auth_chain = chain.seconds
                chain.seconds = custody.seconds = 0.0
                t_signed, t_confirmed, idle = _drive(core, worker, pids, timeout=600)
                per = 1000 / n
                base = {
                    "suite": "payments",
                    "scheme": rails[rail].scheme,
                    "t": 2,
                    "n": 3,
                    "rail": rail,
                    "runs": n,
                }
                rows.append(
                    {
                        **base,
                        "op": "authorize",
                        "median_ms": statistics.median(calls),
                        "per_s": n / t_auth,
                        "chain_ms": auth_chain * per,
                        "service_ms": (t_auth - auth_chain) * per,
                    }
                )
                rows.append(
                    {
                        **base,
                        "op": "signed",
                        "median_ms": _median_ms(core, pids, "PaymentCreated", "PaymentSigned"),
                        "per_s": n / t_signed,
                    }
                )
                rows.append(
                    {
                        **base,
                        "op": "confirmed",
                        "median_ms": _median_ms(core, pids, "PaymentCreated", "PaymentConfirmed"),
                        "per_s": n / t_confirmed,
                        "custody_ms": custody.seconds * per,
                        "sign_latency_ms": _median_ms(core, pids, "SignPrepared", "PaymentSigned"),
                        "chain_ms": chain.seconds * per,
                        "idle_ms": idle * per,
                        "service_ms": (t_confirmed - custody.seconds - chain.seconds - idle) * per,
                    }
                )
            requester.close()
            engine.dispose()
    cols = (
        *("suite", "scheme", "t", "n", "rail", "op", "runs", "median_ms", "per_s"),
        *("custody_ms", "sign_latency_ms", "chain_ms", "idle_ms", "service_ms"),
    )
    return [{c: r.get(c, "") for c in cols} for r in rows]
