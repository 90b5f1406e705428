"""Namespaced clusters (simulations/netns.py): each node and the coordinator a host of its
own. Where namespaces cannot be made the tests skip naming why, or fail instead under
``CUSTODY_REQUIRE_NETNS=1`` (.ci/run: CI runs as root and must run them); the netem tests
skip naming why netem is missing, or fail under ``CUSTODY_REQUIRE_NETEM=1``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from simulations.netns import NetnsCluster, netem_support, netns_support
from tests.e2e.conftest import CLUSTER_ENV, DEFAULT_POOL, Live, clone_cluster


def need(reason: str | None, variable: str) -> None:
    """Skip with ``reason`` (never silently), or fail when ``variable`` is 1."""
    if reason is None:
        return
    if os.environ.get(variable) == "1":
        pytest.fail(f"{variable}=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def netns_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A 2-of-3-capable cluster of this module's own, each process in its own namespace,
    the coordinator reaching each node directly. Without netem each node also has its
    userspace link model (proxied) in front, which a test routes a node through
    (:meth:`NetnsCluster.route`) to shape its link (labelled as such)."""
    need(netns_support(), "CUSTODY_REQUIRE_NETNS")
    d = tmp_path_factory.mktemp("netns-cluster")
    clone_cluster(d)
    cluster = NetnsCluster(
        d,
        nodes=3,
        port=7100,
        # the default presignature pool, as tests/e2e's modules that cut nodes while ECDSA
        # keys sign: pooled presignatures of the live pair route around the cut node, where
        # presigning on demand on a loaded machine can outlast the round timeout
        env={**CLUSTER_ENV, **DEFAULT_POOL},
        allow_raw=True,
        proxied=netem_support() is not None,
    )
    try:
        doc = cluster.start(timeout=120)
        lv = Live(cluster, doc)
        for i in sorted(cluster.via_proxy):  # direct links, as deployed, until a test shapes one
            cluster.route(lv.admin.http, i, via_proxy=False)
    except BaseException:
        cluster.stop()
        raise
    try:
        yield lv
    finally:
        lv.close()
        cluster.stop()
        assert not cluster.net.exists(), "namespaces left behind"
