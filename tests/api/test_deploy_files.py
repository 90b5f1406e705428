"""docker-compose.yml and Dockerfile describe the topology `custody up` runs (no Docker here)."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

from custody import cluster

ROOT = Path(__file__).resolve().parents[2]


def test_compose_matches_cli_topology() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svcs = doc["services"]
    coord = " ".join(svcs["coordinator"]["command"])
    assert "python -m api serve" in coord and f"--port {cluster.DEFAULT_PORT}" in coord
    assert "python -m api trust --data-dir /data --governance /governance/v1.gov" in coord
    assert "--dev" not in coord  # the compose layout is the production shape
    assert svcs["coordinator"]["environment"]["CUSTODY_COORDINATOR_PIN_FILE"].startswith(
        "/run/secrets/"
    )
    assert f"{cluster.DEFAULT_PORT}:{cluster.DEFAULT_PORT}" in svcs["coordinator"]["ports"][0]
    # the CLI starts the same commands
    src = "".join(inspect.getsource(cluster.Cluster).split())  # layout-independent
    assert '"-m","api","serve"' in src and '"-m","signer_nodes","run"' in src
    assert '"-m","signer_nodes","init"' in src
    volumes = set()
    for i in (1, 2, 3):
        node = svcs[cluster.node_id(i)]
        cmd = " ".join(node["command"])
        port = cluster.node_port(cluster.DEFAULT_PORT, i)
        assert f"python -m signer_nodes run --data-dir /data --host 0.0.0.0 --port {port}" in cmd
        assert f"signer_nodes init --data-dir /data --node-id node-{i} --party-id {i}" in cmd
        vol, gov = node["volumes"]
        volumes.add(vol.split(":")[0])
        assert gov == "./governance:/governance:ro"  # the officers' genesis, read-only
        # the PIN is a secret outside the data volume, and the node installs the genesis
        assert f"--pin-file /run/secrets/node_{i}_pin" in cmd and "/data/hsm.pin" not in cmd
        assert "signer_nodes trust --data-dir /data --governance /governance/v1.gov" in cmd
        assert node["secrets"] == [f"node_{i}_pin"]
        assert node["environment"]["SOFTHSM2_CONF"].startswith("/data/")  # own token
    assert len(volumes) == 3  # one volume (database + HSM token) per node
    assert "postgres" in svcs and svcs["postgres"]["profiles"] == ["postgres"]


def test_dockerfile_runs_coordinator() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "softhsm2" in text
    assert '"python", "-m", "api", "serve"' in text and str(cluster.DEFAULT_PORT) in text
