"""The saturation curve (issue 14 item 7): offered load against achieved throughput and
p50/p99 latency, per scheme, with one and with two coordinators behind HAProxy.

``python -m simulations.saturation [--schemes ed25519,ecdsa-secp256k1] [--step-seconds 15]
[--short] [--out docs]``

One topology (:class:`simulations.multi.Multi`: PostgreSQL with fsync on, three nodes over
mutual TLS, two coordinators, HAProxy). For the one-coordinator curve coordinator 2 is
stopped (its process ended, so its background pool refills take no CPU) and HAProxy's
health checks hold it DOWN; for the two-coordinator curve it is started again.

**Open loop.** Each step offers ``rate`` sign requests per second for ``step_seconds``: the
i-th request is *scheduled* at ``t0 + i / rate`` and sent then, whatever happened to the
ones before (a closed loop would slow its offered load down exactly when the service slows
down and hide the knee; "coordinated omission"). A request's latency is measured from its
scheduled time to its terminal answer (``POST /v1/sign-requests``, polled if 202), so
queueing in the client counts too. At most :data:`INFLIGHT_CAP` requests are outstanding;
a request due while the cap is reached is not sent and counts as an error (``shed``).
Achieved throughput is the signed requests over the time from ``t0`` to the last answer
(the backlog a saturated step leaves is drained inside its own step).

**Falls over** (the curve stops at the first step that does): more than 1 % of the step's
requests failed or were shed, or the achieved rate is below 85 % of the offered rate, or
p99 is above 10 times the lowest p99 of the steps before it (:func:`fell_over`). A
3-second warm-up at the lowest rate (new connections, first requests on every path) runs
before the first step of each curve and is not counted.

Before each step every coordinator's pools are refilled (``GET /ready`` of each
coordinator: FROST commitments, ECDSA presignatures), so the steps start alike; an ECDSA
step longer than its pool then measures presigning as it goes, i.e. the sustained rate.

**CPU.** Every process's user+system CPU (``/proc``, :mod:`simulations.procstat`) is read
before and after each step: share of one core per process, and CPU milliseconds per
signature per process, so the ceiling can be placed (coordinator or nodes) whatever the
machine's other load. The load generator's own CPU is reported too: it shares the cores.

Writes ``OUT/saturation.json`` (every step), ``OUT/saturation-<scheme>.png`` (matplotlib,
the ``.[sim]`` extra) and prints the Markdown table of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from custody.client import CustodyClient
from simulations import procstat
from simulations.bench_e2e import _body, _pct, _sign
from simulations.multi import Multi

RATES: dict[str, tuple[float, ...]] = {
    "ed25519": (10, 20, 35, 50, 75, 100, 150, 200, 300, 400, 600),
    "bip340": (10, 20, 35, 50, 75, 100, 150, 200, 300, 400, 600),
    "ecdsa-secp256k1": (2, 4, 6, 8, 12, 16, 24, 32, 48, 64),
}
SHORT_RATES: dict[str, tuple[float, ...]] = {
    "ed25519": (10, 50, 200, 600),
    "bip340": (10, 50, 200, 600),
    "ecdsa-secp256k1": (4, 16, 64),
}
INFLIGHT_CAP = 2000
ERROR_LIMIT = 0.01
ACHIEVED_FLOOR = 0.85
P99_BLOWUP = 10.0

#: the cluster's settings for the study: the rate limits out of the way (the curve is about
#: capacity, not about the per-credential limit of 300/s), bench_e2e's pool settings
STUDY_ENV = {
    "CUSTODY_RATE_LIMIT_CREDENTIAL": "",
    "CUSTODY_RATE_LIMIT_ADDRESS": "",
    "CUSTODY_POOL_INTERVAL": "0.2",
    "CUSTODY_FROST_BATCH": "128",
    "CUSTODY_FROST_LOW_WATER": "96",
    "CUSTODY_PRESIG_TARGET": "32",
    "CUSTODY_PRESIG_PARALLEL": "4",
}


def fell_over(step: dict[str, Any], baseline_p99: float | None) -> str | None:
    """Why this step is past the knee (None: it is not)."""
    offered = step["offered"]
    if step["errors"] > ERROR_LIMIT * offered:
        return f"{step['errors']} of {offered} requests failed or were shed"
    if step["achieved_per_s"] < ACHIEVED_FLOOR * step["rate"]:
        return f"achieved {step['achieved_per_s']}/s < {ACHIEVED_FLOOR:.0%} of {step['rate']}/s"
    p99 = step["p99_ms"]
    if baseline_p99 and p99 is not None and p99 > P99_BLOWUP * baseline_p99:
        return f"p99 {p99} ms > {P99_BLOWUP:g} x the lowest before, {baseline_p99} ms"
    return None


async def open_loop(
    http: aiohttp.ClientSession,
    key_id: str,
    scheme: str,
    rate: float,
    seconds: float,
    keep_latencies: bool = False,
) -> dict[str, Any]:
    """One step: ``rate`` requests/s scheduled for ``seconds``; latencies from schedule."""
    loop = asyncio.get_running_loop()
    n = max(1, int(rate * seconds))
    lat: list[float] = []
    errors: dict[str, int] = {}
    ends: list[float] = []
    inflight = 0
    base = int(time.time() * 1000) % 2**31

    async def one(i: int, due: float) -> None:
        nonlocal inflight
        try:
            r = await _sign(http, _body(key_id, "raw", base + i, scheme))
            status = str(r.get("status"))
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as exc:
            status = type(exc).__name__
        finally:
            inflight -= 1
        end = loop.time()
        ends.append(end)
        if status == "signed":
            lat.append((end - due) * 1000)
        else:
            errors[status] = errors.get(status, 0) + 1

    t0 = loop.time() + 0.05
    tasks = []
    shed = 0
    for i in range(n):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if inflight >= INFLIGHT_CAP:
            shed += 1
            continue
        inflight += 1
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    if shed:
        errors["shed"] = shed
    wall = (max(ends) if ends else loop.time()) - t0
    extra = {"latencies_ms": lat} if keep_latencies else {}
    return {
        **extra,
        "rate": rate,
        "offered": n,
        "signed": len(lat),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "achieved_per_s": round(len(lat) / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p99_ms": round(_pct(lat, 0.99), 1) if lat else None,
        "wall_s": round(wall, 2),
    }


def _ready(url: str) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = httpx.get(url + "/ready", timeout=5).json()
        return doc
    except (httpx.HTTPError, ValueError):
        return {}


def wait_pools(m: Multi, active: Sequence[int], scheme: str, timeout: float) -> dict[str, int]:
    """Wait until every active coordinator holds full pools for ``scheme``'s key."""
    want_presig = int(STUDY_ENV["CUSTODY_PRESIG_TARGET"])
    deadline = time.monotonic() + timeout
    while True:
        pools = {f"coordinator-{k}": _ready(m.coordinator_url(k)).get("pools", {}) for k in active}
        if scheme == "ecdsa-secp256k1":
            ok = all(p.get("presignatures", 0) >= want_presig for p in pools.values())
        else:
            ok = all(p.get("frost_commitments", 0) >= 3 * 96 for p in pools.values())
        if ok or time.monotonic() > deadline:
            key = "presignatures" if scheme == "ecdsa-secp256k1" else "frost_commitments"
            return {n: int(p.get(key, 0)) for n, p in pools.items()}
        time.sleep(0.25)


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = procstat.cpu_seconds(pid, with_children=(name == "postgres"))
        except OSError:
            continue
    out["load-generator"] = procstat.self_cpu_seconds()
    return out


def run_curve(
    m: Multi,
    token: str,
    key_id: str,
    scheme: str,
    coordinators: int,
    rates: Sequence[float],
    seconds: float,
) -> list[dict[str, Any]]:
    """Steps of rising offered load until one falls over (:func:`fell_over`)."""
    rows: list[dict[str, Any]] = []
    baseline: float | None = None
    active = list(range(1, coordinators + 1))
    warm = True
    for rate in rates:
        pool = wait_pools(m, active, scheme, 120)
        pids = m.pids()
        cpu0, t0 = _cpu(pids), time.monotonic()

        async def go(rate: float = rate, seconds: float = seconds) -> dict[str, Any]:
            conn = aiohttp.TCPConnector(limit=256, keepalive_timeout=60)
            async with aiohttp.ClientSession(
                m.api_url,
                connector=conn,
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=120),
            ) as http:
                return await open_loop(http, key_id, scheme, rate, seconds)

        if warm:  # new connections, first requests on each path: not measured
            asyncio.run(go(rate=min(rates[0], 10.0), seconds=3.0))
            warm = False
            pool = wait_pools(m, active, scheme, 120)
            cpu0, t0 = _cpu(pids), time.monotonic()
        step = asyncio.run(go())
        cpu1, wall = _cpu(pids), time.monotonic() - t0
        signed = max(1, step["signed"])
        step.update(
            {
                "scheme": scheme,
                "coordinators": coordinators,
                "pool_at_start": pool,
                "cpu_core_share": {
                    n: round((cpu1[n] - cpu0[n]) / wall, 2) for n in cpu1 if n in cpu0
                },
                "cpu_ms_per_signature": {
                    n: round(1000 * (cpu1[n] - cpu0[n]) / signed, 2) for n in cpu1 if n in cpu0
                },
                "loadavg_1min": round(os.getloadavg()[0], 2),
            }
        )
        step["fell_over"] = fell_over(step, baseline)
        if step["p99_ms"] is not None:
            baseline = step["p99_ms"] if baseline is None else min(baseline, step["p99_ms"])
        rows.append(step)
        print(_row(step), flush=True)
        if step["fell_over"]:
            break
    return rows


def _group(cpu: dict[str, float]) -> tuple[float, float, float]:
    """CPU per signature: coordinators, nodes, everything else (haproxy, postgres)."""
    coord = sum(v for n, v in cpu.items() if n.startswith("coordinator"))
    nodes = sum(v for n, v in cpu.items() if n.startswith("node-"))
    rest = sum(v for n, v in cpu.items() if n in ("haproxy", "postgres"))
    return round(coord, 1), round(nodes, 1), round(rest, 1)


def _row(s: dict[str, Any]) -> str:
    coord, nodes, rest = _group(s["cpu_ms_per_signature"])
    share = s["cpu_core_share"]
    busiest = max((n for n in share if n != "load-generator"), key=lambda n: share[n], default="-")
    ours = sum(share.values())
    return (
        f"| {s['scheme']} | {s['coordinators']} | {s['rate']:g} | {s['achieved_per_s']} | "
        f"{s['p50_ms']} | {s['p99_ms']} | {s['errors']} | {coord} / {nodes} / {rest} | "
        f"{busiest} {share.get(busiest, 0):.2f} | {ours:.2f} "
        f"({share.get('load-generator', 0):.2f}) | {s['loadavg_1min']} | "
        f"{'**' + s['fell_over'] + '**' if s['fell_over'] else ''} |"
    )


TABLE_HEAD = (
    "| scheme | coordinators | offered /s | achieved /s | p50 ms | p99 ms | errors | "
    "CPU ms/sig: coordinators / nodes / haproxy+pg | busiest process (cores) | "
    "all ours (load generator), cores | load | fell over |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    # here, not at the top: matplotlib is the optional .[sim] extra, and Agg must be chosen
    # before pyplot is imported
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for scheme in sorted({r["scheme"] for r in rows}):
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
        for c, color, marker in ((1, "C0", "o"), (2, "C1", "s")):
            rs = [r for r in rows if r["scheme"] == scheme and r["coordinators"] == c]
            if not rs:
                continue
            x = [r["rate"] for r in rs]
            label = f"{c} coordinator" + ("s" if c > 1 else "")
            a.plot(x, [r["achieved_per_s"] for r in rs], marker=marker, color=color, label=label)
            b.plot(x, [r["p50_ms"] or float("nan") for r in rs], marker=marker, color=color,
                   label=f"p50, {label}")  # fmt: skip
            b.plot(x, [r["p99_ms"] or float("nan") for r in rs], marker=marker, color=color,
                   linestyle="--", alpha=0.6, label=f"p99, {label}")  # fmt: skip
            for r in rs:
                if r["fell_over"]:
                    a.annotate(f"falls over ({c})", (r["rate"], r["achieved_per_s"]),
                               fontsize=8, color=color)  # fmt: skip
        top = max(r["rate"] for r in rows if r["scheme"] == scheme)
        a.plot([0, top], [0, top], ":", color="grey", label="achieved = offered")
        a.set_xlabel("offered load (sign requests/s, open loop)")
        a.set_ylabel("achieved (signatures/s)")
        a.set_title(f"{scheme}: throughput")
        a.legend(fontsize=8)
        b.set_yscale("log")
        b.set_xlabel("offered load (sign requests/s)")
        b.set_ylabel("latency from scheduled send (ms, log)")
        b.set_title(f"{scheme}: p50 / p99")
        b.legend(fontsize=8)
        loads = [r["loadavg_1min"] for r in rows if r["scheme"] == scheme]
        fig.suptitle(
            f"2-of-3 over mTLS, HAProxy, PostgreSQL; {os.cpu_count()} CPU cores shared with "
            f"other work (1-min load average {min(loads):g}-{max(loads):g})",
            fontsize=9,
        )
        fig.tight_layout()
        f = out / f"saturation-{scheme}.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f)
    return files


def run(schemes: Sequence[str], seconds: float, short: bool, out: Path) -> list[dict[str, Any]]:
    rates = SHORT_RATES if short else RATES
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="custody-saturation-") as d:
        with Multi(Path(d), coordinators=2, env=dict(STUDY_ENV),
                   progress=lambda s: print("#", s, flush=True)) as m:  # fmt: skip
            doc = m.start(timeout=300)
            creds = doc["credentials"]
            keys = {}
            with CustodyClient(m.api_url, creds["admin"]) as admin:
                for scheme in schemes:
                    k = admin.create_key(scheme, 2)  # type: ignore[arg-type]
                    if k.status != "active":
                        raise RuntimeError(f"{scheme} key: {k.error}")
                    keys[scheme] = k.id
            assert m.lb is not None
            print(TABLE_HEAD, flush=True)
            for coordinators in (1, 2):
                if coordinators == 1:
                    m.stop_coordinator(2, signal.SIGTERM)
                    m.lb.wait_states({"coordinator-2": "DOWN"}, timeout=30)
                else:
                    m.start_coordinator(2)
                    m.lb.wait_states({"coordinator-1": "UP", "coordinator-2": "UP"}, 30)
                for scheme in schemes:
                    rows += run_curve(
                        m, creds["requester"], keys[scheme], scheme, coordinators,
                        rates[scheme], seconds,
                    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python -m simulations.saturation "
        + f"--schemes {','.join(schemes)} --step-seconds {seconds:g}"
        + (" --short" if short else ""),
        "cpus": os.cpu_count(),
        "settings": STUDY_ENV,
    }
    (out / "saturation.json").write_text(json.dumps({"meta": meta, "steps": rows}, indent=1))
    for f in plot(rows, out):
        print("# wrote", f, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulations.saturation")
    p.add_argument("--schemes", default="ed25519,ecdsa-secp256k1")
    p.add_argument("--step-seconds", type=float, default=15.0)
    p.add_argument("--short", action="store_true", help="a few steps (CI smoke)")
    p.add_argument("--out", type=Path, default=Path("docs"))
    p.add_argument("--replot", type=Path, help="only redraw the PNGs from a saturation.json")
    a = p.parse_args(argv)
    if a.replot:
        steps = json.loads(a.replot.read_text())["steps"]
        a.out.mkdir(parents=True, exist_ok=True)
        for f in plot(steps, a.out):
            print("# wrote", f)
        print(TABLE_HEAD)
        for r in steps:
            print(_row(r))
        return 0
    schemes = [s.strip() for s in a.schemes.split(",") if s.strip()]
    unknown = [s for s in schemes if s not in RATES]
    if unknown:
        p.error(f"unknown scheme(s) {unknown}: one of {sorted(RATES)}")
    short = a.short or os.environ.get("CUSTODY_SLOW_SHORT") == "1"
    rows = run(schemes, a.step_seconds, short, a.out)
    print("\n" + TABLE_HEAD)
    for r in rows:
        print(_row(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
