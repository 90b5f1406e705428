"""The latency study (issue 14 part 3): sign latency against the distance between the
coordinator and the signer nodes.

``python -m simulations.latency`` runs the coordinator and each node as separate hosts in
network namespaces (:mod:`simulations.netns`), shapes **every coordinator-node link** to a
round-trip time (0, 10, 50, 100, 200 ms) and a loss rate (0, 1, 5 % each way), and times
sequential sign requests as a client next to the coordinator sees them (``POST
/v1/sign-requests`` until it answers signed), per scheme (Ed25519 and BIP-340 by FROST,
ECDSA by DKLs23), per pool mode, for 2-of-3 and 3-of-5. Every signature is verified by a
library that is not ours (:func:`custody.demo.verify_independently`); a failure is counted,
never timed.

Pool modes (the coordinator restarted with each; api/settings.py):

* ``warm``: the defaults. FROST commitments fetched ahead (RFC 9591 s5.1 round one done
  in advance), the DKLs23 presignature pool full (16 per key) before each cell: online
  signing is one round.
* ``off``: no pools (``CUSTODY_PRESIG_TARGET=0``, ``CUSTODY_FROST_LOW_WATER=0``,
  ``CUSTODY_FROST_BATCH=1``): FROST fetches a commitment per node per signature (two
  rounds), ECDSA presigns per signature (the DKLs23 presign rounds, then the online round).

The link is shaped by ``tc netem`` when the kernel has it, else by the userspace link model
(:class:`simulations.netns.LinkProxy`); every result records which (``link``), and the plots
say so in their titles. The client's own link to the coordinator is not shaped.

Output: a JSON file of every cell (``--out``, default ``docs/latency-results.json``),
``python -m simulations.latency plot`` draws ``docs/latency-*.png`` from it and prints the
Markdown table of docs/PERFORMANCE.md. ``--short`` (and ``CUSTODY_SLOW_SHORT=1``) is the
reduced grid CI runs (tests/netns/test_latency_short.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from custody.client import CustodyClient, CustodyError
from custody.demo import verify_independently
from simulations.netns import NetnsCluster, netem_support

SCHEMES = ("ed25519", "bip340", "ecdsa-secp256k1")
RTTS_MS = (0, 10, 50, 100, 200)
LOSSES_PCT = (0, 1, 5)
POOLS = ("warm", "off")
TOPOLOGIES = ((2, 3), (3, 5))  # (t, n)
#: The coordinator's settings per pool mode (the warm values are api/settings.py defaults).
POOL_ENV = {
    "warm": {
        "CUSTODY_PRESIG_TARGET": "16",
        "CUSTODY_FROST_LOW_WATER": "32",
        "CUSTODY_FROST_BATCH": "64",
    },
    "off": {
        "CUSTODY_PRESIG_TARGET": "0",
        "CUSTODY_FROST_LOW_WATER": "0",
        "CUSTODY_FROST_BATCH": "1",
    },
}
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Grid:
    topologies: tuple[tuple[int, int], ...] = TOPOLOGIES
    schemes: tuple[str, ...] = SCHEMES
    pools: tuple[str, ...] = POOLS
    rtts_ms: tuple[int, ...] = RTTS_MS
    losses_pct: tuple[float, ...] = LOSSES_PCT
    samples: int = 12
    #: loss cells only at these round trips (the full product is long); () = every one
    loss_rtts_ms: tuple[int, ...] = ()

    def cells(self, t: int, n: int) -> list[tuple[str, float, int, str]]:
        """(pools, loss, rtt, scheme) in run order: one coordinator restart per pool
        mode; within it the links change per (loss, rtt)."""
        out = []
        for pools in self.pools:
            for loss in self.losses_pct:
                for rtt in self.rtts_ms:
                    if loss and self.loss_rtts_ms and rtt not in self.loss_rtts_ms:
                        continue
                    for scheme in self.schemes:
                        out.append((pools, loss, rtt, scheme))
        return out


SHORT = Grid(
    topologies=((2, 3),),
    schemes=("ed25519", "ecdsa-secp256k1"),
    pools=("warm",),
    rtts_ms=(0, 50),
    losses_pct=(0,),
    samples=3,
)


@dataclass
class Result:
    topology: str  # "2-of-3"
    scheme: str
    pools: str
    rtt_ms: int
    loss_pct: float
    link: str  # "netem" or "proxy" (the userspace link model)
    samples_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    verifier: str = ""

    @property
    def p50(self) -> float:
        return percentile(self.samples_s, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.samples_s, 0.99)

    def doc(self) -> dict[str, Any]:
        d = asdict(self)
        d["p50_ms"] = round(self.p50 * 1000, 1) if self.samples_s else None
        d["p99_ms"] = round(self.p99 * 1000, 1) if self.samples_s else None
        return d

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Result:
        keep = {k: v for k, v in d.items() if k not in ("p50_ms", "p99_ms")}
        return cls(**keep)


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (with few samples p99 is the largest: said in the docs)."""
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


class Study:
    """One started :class:`NetnsCluster` of ``n`` nodes and a key per scheme, threshold t."""

    def __init__(
        self,
        cluster: NetnsCluster,
        doc: dict[str, Any],
        t: int,
        progress: Callable[[str], None] = print,
    ) -> None:
        self.cluster, self.t, self.n = cluster, t, cluster.nodes
        self.progress = progress
        creds = doc["credentials"]
        self.admin = CustodyClient(doc["api_url"], creds["admin"], timeout=120)
        self.requester = CustodyClient(doc["api_url"], creds["requester"], timeout=120)
        self.keys: dict[str, Any] = {}
        self.seq = 0
        self.link = "netem" if netem_support() is None else "proxy"

    def close(self) -> None:
        self.admin.close()
        self.requester.close()

    def key(self, scheme: str) -> Any:
        if scheme not in self.keys:
            k = self.admin.create_key(scheme, self.t, timeout=300)  # type: ignore[arg-type]
            if k.status != "active":
                raise RuntimeError(f"{scheme} key did not become active: {k}")
            self.keys[scheme] = k
        return self.keys[scheme]

    def set_links(self, rtt_ms: float, loss_pct: float) -> None:
        for i in range(1, self.n + 1):
            self.cluster.set_link(i, rtt_ms, loss_pct, seed=1000 * i + int(rtt_ms + loss_pct))

    def restart_coordinator(self, pools: str) -> None:
        """The coordinator again with ``pools``' settings (its pools live in its memory, so
        a restart starts them empty; the warm mode then refills them)."""
        c = self.cluster
        self.set_links(0, 0)
        c.stop_proc("coordinator")
        c.env.update(POOL_ENV[pools])
        c.start_coordinator()
        c._wait_health(c.api_url, time.monotonic() + 120, "coordinator")
        self.wait_ready(lambda r: r.get("nodes_healthy") == self.n, "every node healthy")

    def ready(self) -> dict[str, Any]:
        return dict(httpx.get(self.cluster.api_url + "/ready", timeout=30).json())

    def wait_ready(self, cond: Callable[[dict[str, Any]], bool], what: str, t: float = 300) -> None:
        deadline = time.monotonic() + t
        while not cond(r := self.ready()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not {what} after {t} s: {r}")
            time.sleep(0.3)

    def warm(self, scheme: str) -> None:
        """Wait until the pools hold what a warm cell assumes."""
        frost_keys = sum(1 for s in self.keys if s != "ecdsa-secp256k1")
        ecdsa = 1 if "ecdsa-secp256k1" in self.keys else 0
        want_frost = 32 * self.n * frost_keys
        want_presig = 16 * ecdsa
        self.wait_ready(
            lambda r: (
                r["pools"]["frost_commitments"] >= want_frost
                and r["pools"]["presignatures"] >= want_presig
            ),
            f"warm pools (>= {want_frost} commitments, >= {want_presig} presignatures)",
        )

    def sign_once(self, scheme: str, res: Result) -> float | None:
        key = self.key(scheme)
        self.seq += 1
        text = f"latency study {res.topology} {scheme} {self.seq} {time.time_ns()}".encode()
        m = hashlib.sha256(text).digest() if scheme == "ecdsa-secp256k1" else text
        t0 = time.perf_counter()
        try:
            sr = self.requester.sign(key.id, m, timeout=300)
        except CustodyError as e:
            res.failures.append(f"{type(e).__name__}: {e}"[:300])
            return None
        dt = time.perf_counter() - t0
        if sr.status != "signed" or sr.signature is None:
            res.failures.append(f"{sr.status}: {sr.error}"[:300])
            return None
        ok, by = verify_independently(scheme, key.public_key, m, sr.signature, sr.recovery_id)
        res.verifier = by
        if not ok:
            raise AssertionError(f"{scheme}: the signature is refused by {by}: {sr}")
        return dt

    def measure(self, scheme: str, pools: str, rtt: int, loss: float, samples: int) -> Result:
        res = Result(f"{self.t}-of-{self.n}", scheme, pools, rtt, loss, self.link)
        if pools == "warm":
            self.warm(scheme)
        self.sign_once(scheme, res)  # warm-up (connections, caches): not counted
        res.failures.clear()
        for _ in range(samples):
            if pools == "warm" and scheme == "ecdsa-secp256k1":
                # the pool holds 16 and refills when idle or below 4: keep it above water
                self.wait_ready(lambda r: r["pools"]["presignatures"] >= 5, "presignatures >= 5")
            dt = self.sign_once(scheme, res)
            if dt is not None:
                res.samples_s.append(dt)
        return res


def run_topology(
    t: int,
    n: int,
    grid: Grid,
    data_root: Path,
    sink: Callable[[Result], None],
    progress: Callable[[str], None] = print,
) -> None:
    """Start an ``n``-node namespaced cluster in ``data_root/cluster-<t>-of-<n>``
    (provisioned there unless it already is: a test passes a copy of its session's
    provisioned cluster), make the keys, run ``grid``'s cells, stop it all."""
    d = data_root / f"cluster-{t}-of-{n}"
    cluster = NetnsCluster(
        d,
        nodes=n,
        port=7100,
        allow_raw=True,
        proxied=netem_support() is not None,
        env=dict(POOL_ENV["warm"]),
        progress=lambda m: progress(f"[{t}-of-{n}] {m}"),
    )
    try:
        doc = cluster.start(timeout=300)
        study = Study(cluster, doc, t, progress)
        try:
            for s in grid.schemes:
                study.key(s)
            current = "warm"  # started with POOL_ENV["warm"]: no restart for it
            for pools, loss, rtt, scheme in grid.cells(t, n):
                if pools != current:
                    progress(f"[{t}-of-{n}] coordinator with pools {pools}")
                    study.restart_coordinator(pools)
                    current = pools
                study.set_links(rtt, loss)
                res = study.measure(scheme, pools, rtt, loss, grid.samples)
                progress(
                    f"[{t}-of-{n}] {scheme:16} pools={pools:4} rtt={rtt:3} ms loss={loss:g} %: "
                    f"p50 {res.p50 * 1000:7.1f} ms p99 {res.p99 * 1000:7.1f} ms "
                    f"({len(res.samples_s)} ok, {len(res.failures)} failed, {res.link})"
                )
                sink(res)
        finally:
            study.close()
    finally:
        cluster.stop()


def run(grid: Grid, out: Path | None, progress: Callable[[str], None] = print) -> list[Result]:
    """Every topology of ``grid``; results appended to ``out`` (JSON) as each cell ends."""
    results: list[Result] = []
    meta = {
        "command": "python -m simulations.latency",
        "link": "netem" if netem_support() is None else "proxy",
        "netem": netem_support() or "available",
        "grid": asdict(grid),
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def sink(r: Result) -> None:
        results.append(r)
        if out is not None:
            doc = {**meta, "results": [x.doc() for x in results]}
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            os.replace(tmp, out)

    with tempfile.TemporaryDirectory(prefix="custody-latency-") as root:
        for t, n in grid.topologies:
            run_topology(t, n, grid, Path(root), sink, progress)
    return results


# -- plots and the table ------------------------------------------------------------------------
def load(path: Path) -> tuple[dict[str, Any], list[Result]]:
    doc = json.loads(path.read_text())
    return doc, [Result.from_doc(r) for r in doc["results"]]


LOSS_PLOT_RTTS = (10, 50, 200)  # the loss plot's lines: multi-AZ and multi-region round trips
LABEL = {
    "ed25519": "Ed25519 (FROST)",
    "bip340": "BIP-340 (FROST)",
    "ecdsa-secp256k1": "ECDSA (DKLs23)",
}


def plot(results: list[Result], docs: Path, link: str) -> list[Path]:
    """``docs/latency-<t>of<n>.png`` (p50 and p99 against RTT, loss 0, both pool modes, a
    panel per scheme) and ``docs/latency-loss.png`` (against loss, per RTT measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    how = "tc netem" if link == "netem" else "userspace link model (no netem in this kernel)"
    written = []
    for topo in sorted({r.topology for r in results}):
        rs = [r for r in results if r.topology == topo and r.loss_pct == 0 and r.samples_s]
        schemes = [s for s in SCHEMES if any(r.scheme == s for r in rs)]
        if not schemes:
            continue
        fig, axes = plt.subplots(1, len(schemes), figsize=(4.2 * len(schemes), 3.8), squeeze=False)
        for ax, s in zip(axes[0], schemes, strict=True):
            for pools, color in (("warm", "tab:blue"), ("off", "tab:red")):
                pts = sorted(
                    (r.rtt_ms, r.p50, r.p99) for r in rs if r.scheme == s and r.pools == pools
                )
                if not pts:
                    continue
                x = [p[0] for p in pts]
                ax.plot(
                    x, [p[1] * 1000 for p in pts], "o-", color=color, label=f"p50, pools {pools}"
                )
                ax.plot(
                    x,
                    [p[2] * 1000 for p in pts],
                    "s--",
                    color=color,
                    alpha=0.6,
                    label=f"p99, pools {pools}",
                )
            ax.set_title(LABEL[s])
            ax.set_xlabel("RTT coordinator-node (ms)")
            ax.set_ylabel("sign latency (ms)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{topo}, loss 0 %, link shaped by {how}", fontsize=9)
        fig.tight_layout()
        p = docs / f"latency-{topo.replace('-', '')}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    lossy = [r for r in results if r.samples_s]
    if any(r.loss_pct for r in lossy):
        combos = sorted(
            {(r.topology, r.scheme) for r in lossy if r.loss_pct},
            key=lambda c: (c[0], SCHEMES.index(c[1])),
        )
        fig, axes = plt.subplots(1, len(combos), figsize=(4.2 * len(combos), 3.8), squeeze=False)
        for ax, (topo, s) in zip(axes[0], combos, strict=True):
            for pools, color in (("warm", "tab:blue"), ("off", "tab:red")):
                measured = {r.rtt_ms for r in lossy if r.loss_pct and r.scheme == s}
                for rtt in sorted(measured & set(LOSS_PLOT_RTTS)):
                    by_loss = sorted(
                        (r.loss_pct, r.p50, r.p99)
                        for r in lossy
                        if r.topology == topo
                        and r.scheme == s
                        and r.pools == pools
                        and r.rtt_ms == rtt
                    )
                    if len(by_loss) < 2:
                        continue
                    losses = [p[0] for p in by_loss]
                    ax.plot(
                        losses,
                        [p[2] * 1000 for p in by_loss],
                        "s--",
                        color=color,
                        alpha=min(1.0, 0.4 + rtt / 400),
                        label=f"p99 {pools} rtt {rtt}",
                    )
            ax.set_title(f"{topo} {LABEL[s]}", fontsize=9)
            ax.set_xlabel("loss each way (%)")
            ax.set_ylabel("p99 sign latency (ms)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, ncol=2)
        fig.suptitle(f"p99 against loss, link shaped by {how}", fontsize=9)
        fig.tight_layout()
        p = docs / "latency-loss.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written


def slope(results: Iterable[Result]) -> float | None:
    """Least-squares slope of p50 (s) against RTT (s) at loss 0: the sequential round trips
    on a link per signature, as the study measured them."""
    pts = [(r.rtt_ms / 1000, r.p50) for r in results if r.loss_pct == 0 and r.samples_s]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return None if den == 0 else sum((p[0] - mx) * (p[1] - my) for p in pts) / den


def table(results: list[Result]) -> str:
    """The Markdown table of docs/PERFORMANCE.md: p50 / p99 in ms per cell."""
    rtts = sorted({r.rtt_ms for r in results})
    lines = [
        "| shape | scheme | pools | loss | "
        + " | ".join(f"RTT {x} ms" for x in rtts)
        + " | RTTs per sign |",
        "|---|---|---|---|" + "---|" * len(rtts) + "---|",
    ]
    keys = sorted(
        {(r.topology, r.scheme, r.pools, r.loss_pct) for r in results},
        key=lambda k: (k[0], SCHEMES.index(k[1]), POOLS.index(k[2]), k[3]),
    )
    for topo, s, pools, loss in keys:
        row = {
            r.rtt_ms: r
            for r in results
            if (r.topology, r.scheme, r.pools, r.loss_pct) == (topo, s, pools, loss)
        }
        cells = []
        for x in rtts:
            r = row.get(x)
            if r is None or not r.samples_s:
                cells.append("—" if r is None else f"failed ({len(r.failures)})")
            else:
                fail = f" ({len(r.failures)} failed)" if r.failures else ""
                cells.append(f"{r.p50 * 1000:.0f} / {r.p99 * 1000:.0f}{fail}")
        k = slope(row.values()) if loss == 0 else None
        lines.append(
            f"| {topo} | {LABEL[s]} | {pools} | {loss:g} % | "
            + " | ".join(cells)
            + f" | {'' if k is None else f'{k:.1f}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m simulations.latency", description=__doc__.split("\n\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser(
        "plot", help="draw docs/latency-*.png and print the table from a results file"
    )
    p.add_argument(
        "results", type=Path, nargs="*", help="results files (default docs/latency-results*.json)"
    )
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    ap.add_argument("--short", action="store_true", help="the reduced grid CI runs")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument(
        "--topology", action="append", default=None, help="t-of-n, e.g. 2-of-3 (repeatable)"
    )
    ap.add_argument("--rtt", type=int, action="append", default=None)
    ap.add_argument("--loss", type=float, action="append", default=None)
    ap.add_argument(
        "--loss-rtt", type=int, action="append", default=None, help="loss cells only at these RTTs"
    )
    ap.add_argument("--scheme", action="append", default=None)
    ap.add_argument("--pools", action="append", default=None, choices=POOLS)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "latency-results.json")
    a = ap.parse_args(argv)
    if a.cmd == "plot":
        files = a.results or sorted((ROOT / "docs").glob("latency-results*.json"))
        results, links = [], set()
        for f in files:
            meta, rs = load(f)
            results += rs
            links.add(meta["link"])
        for path in plot(results, a.docs, "netem" if links == {"netem"} else "proxy"):
            print(f"wrote {path}")
        print(table(results))
        return 0
    short = a.short or os.environ.get("CUSTODY_SLOW_SHORT") == "1"
    g = SHORT if short else Grid()
    changes: dict[str, Any] = {}
    if a.samples:
        changes["samples"] = a.samples
    if a.topology:
        changes["topologies"] = tuple(tuple(int(v) for v in x.split("-of-")) for x in a.topology)
    for name, val in (("rtts_ms", a.rtt), ("losses_pct", a.loss), ("loss_rtts_ms", a.loss_rtt),
                      ("schemes", a.scheme), ("pools", a.pools)):  # fmt: skip
        if val:
            changes[name] = tuple(val)
    g = Grid(**{**asdict(g), **changes})
    run(g, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
