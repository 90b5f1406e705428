"""docker-compose.yml and Dockerfile describe the topology `custody up` runs (no Docker here).

The full set of compose invariants, and the deploy scripts run as processes, are in
tests/lb/test_compose.py (issue 14 item 8); these two keep the names docs/COMPLIANCE.md cites.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from custody import cluster

ROOT = Path(__file__).resolve().parents[2]


def test_compose_matches_cli_topology() -> None:
    svcs = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"coordinator-1", "coordinator-2", "lb", "postgres"} <= set(svcs)
    assert {cluster.node_id(i) for i in (1, 2, 3)} <= set(svcs)
    entry = (ROOT / "deploy" / "entrypoint.sh").read_text()
    assert '-m api serve --data-dir "$d"' in entry
    assert not any("--dev" in line.split("#")[0] for line in entry.splitlines())
    assert f"API_PORT=${{CUSTODY_API_PORT:-{cluster.DEFAULT_PORT}}}" in entry


def test_dockerfile_runs_coordinator() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "softhsm2" in text and "haproxy" in text
    assert 'ENTRYPOINT ["/app/deploy/entrypoint.sh"]' in text and str(cluster.DEFAULT_PORT) in text
