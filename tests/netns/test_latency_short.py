"""The latency study's short form (simulations/latency.py ``SHORT``; the full grid is
``python -m simulations.latency``, its results in docs/PERFORMANCE.md): a namespaced 2-of-3,
every link shaped, every signature verified by pynacl or coincurve inside the study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations import latency
from simulations.netns import netem_support, netns_support
from tests.e2e.conftest import clone_cluster
from tests.netns.conftest import need


@pytest.mark.slow
def test_the_short_study_signs_every_cell_and_the_link_delay_is_on_the_path(
    tmp_path: Path,
) -> None:
    need(netns_support(), "CUSTODY_REQUIRE_NETNS")
    grid = latency.SHORT
    ((t, n),) = grid.topologies
    clone_cluster(tmp_path / f"cluster-{t}-of-{n}")  # the session's provisioned 2-of-3
    results: list[latency.Result] = []
    lines: list[str] = []
    latency.run_topology(t, n, grid, tmp_path, results.append, lines.append)
    assert len(results) == len(grid.cells(t, n)), lines
    link = "netem" if netem_support() is None else "proxy"
    for r in results:
        assert r.failures == [], r
        assert len(r.samples_s) == grid.samples, r
        assert r.link == link
        assert r.verifier.startswith(("pynacl", "coincurve")), r.verifier
        # not a performance bound: every signature needs a round trip on a shaped link at
        # least, so a sample faster than the RTT means the shaping is not on the path
        assert min(r.samples_s) >= r.rtt_ms / 1000, r
    # the report's table has a row per (shape, scheme, pools, loss), a column per RTT
    rows = latency.table(results).splitlines()
    assert len(rows) == 2 + len({(r.scheme, r.pools, r.loss_pct) for r in results})
    assert all("—" not in row and "failed" not in row for row in rows[2:]), rows
    # and the results file round-trips
    doc = {"link": link, "results": [r.doc() for r in results]}
    path = tmp_path / "latency-results.json"
    path.write_text(json.dumps(doc))
    _, back = latency.load(path)
    assert [b.samples_s for b in back] == [r.samples_s for r in results]


def test_percentiles_are_nearest_rank() -> None:
    xs = [0.5, 0.1, 0.4, 0.2, 0.3]
    assert latency.percentile(xs, 0.5) == 0.3
    assert latency.percentile(xs, 0.99) == 0.5
    assert latency.percentile(list(range(1, 101)), 0.99) == 99
    assert latency.percentile([], 0.5) != latency.percentile([], 0.5)  # nan


def test_slope_counts_round_trips() -> None:
    """p50 = 40 ms + 3 x RTT: three sequential round trips per signature."""
    rs = [
        latency.Result("2-of-3", "ed25519", "off", rtt, 0, "proxy", [0.040 + 3 * rtt / 1000])
        for rtt in (0, 10, 50, 100, 200)
    ]
    k = latency.slope(rs)
    assert k is not None and abs(k - 3) < 1e-9
    assert latency.slope(rs[:1]) is None


def test_plots_are_written(tmp_path: Path) -> None:
    pytest.importorskip(
        "matplotlib", reason="the plots need the sim extra: pip install -e '.[sim]'"
    )
    rs = [
        latency.Result("2-of-3", s, pools, rtt, loss, "proxy", [0.05 + rtt / 1000 * (1 + loss)])
        for s in latency.SCHEMES
        for pools in latency.POOLS
        for rtt in (0, 50)
        for loss in (0, 1)
    ]
    paths = latency.plot(rs, tmp_path, "proxy")
    assert sorted(p.name for p in paths) == ["latency-2of3.png", "latency-loss.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
