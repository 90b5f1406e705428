"""The benchmark suites run (quick form) and print the documented JSON schema.

Figures are not asserted here (performance is measured by the benchmarks themselves and
recorded in docs/PERFORMANCE.md); this only keeps the commands in docs working.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {"suite", "scheme", "t", "n", "op", "median_ms", "runs"}
EXPECTED = {
    "frost": {
        "schemes": {"ed25519", "bip340"},
        "ops": {"dkg", "sign"},
        "sizes": {(2, 3), (3, 5), (7, 10), (15, 20)},
    },
    "ecdsa": {
        "schemes": {"ecdsa-secp256k1"},
        "ops": {"keygen", "presign", "sign"},
        "sizes": {(2, 3), (3, 5), (5, 9)},
    },
    "hsm": {"schemes": {"aes-256-gcm"}, "ops": {"seal", "unseal"}, "sizes": {(1, 1)}},
    "node": {
        "schemes": {"ed25519", "bip340"},
        "ops": {"unseal+sign", "node.frost_sign"},
        "sizes": {(2, 3)},
    },
    "policy": {"schemes": {"ed25519"}, "ops": {"evaluate", "evaluate+verify3"}, "sizes": {(3, 6)}},
    "refresh": {
        "schemes": {"ed25519", "secp256k1", "ecdsa-secp256k1"},
        "ops": {"refresh", "reshare"},
        "sizes": {(2, 3), (3, 5), (7, 10)},
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("suite", sorted(EXPECTED))
def test_bench_suite_prints_its_schema(suite: str) -> None:
    out = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "simulations.bench", suite, "--json", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    rows = json.loads(out)
    exp = EXPECTED[suite]
    assert all(SCHEMA <= set(r) and r["suite"] == suite for r in rows)
    assert {r["scheme"] for r in rows} == exp["schemes"]
    assert exp["ops"] <= {r["op"] for r in rows}
    assert {(r["t"], r["n"]) for r in rows} == exp["sizes"]
    for r in rows:
        assert r["median_ms"] > 0 and r["runs"] >= 1
        assert {(s, r["op"]) for s in exp["schemes"]} <= {(x["scheme"], x["op"]) for x in rows}
