"""Benchmark suite ``hsm``: seal/unseal latency through SoftHSM2 (CKM_AES_GCM in the token).

Provisions a throw-away SoftHSM2 dev token in a temporary directory, then times
``Hsm.seal`` and ``Hsm.unseal`` of a 100-byte payload (2000 runs each after 100 warm-up
round trips; 50 in the quick form). Run it as ``python -m simulations.bench hsm [--json]``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from hsm import Hsm, provision_dev_token, seal_aad
from simulations.timing import time_calls

PAYLOAD_BYTES = 100


def run(quick: bool) -> list[dict[str, Any]]:
    runs = 50 if quick else 2000
    with tempfile.TemporaryDirectory(prefix="bench-hsm-") as tmp:
        config = provision_dev_token(Path(tmp), "bench", "bench-user-pin", "bench-so-pin")
        with Hsm.open(config) as hsm:
            aad = seal_aad("bench-key", "bench-node", 1)
            payload = os.urandom(PAYLOAD_BYTES)
            blob = hsm.seal(payload, aad)
            if hsm.unseal(blob, aad) != payload:
                raise RuntimeError("seal/unseal round trip failed")
            seal = time_calls(lambda: hsm.seal(payload, aad), runs, warm=100)
            unseal = time_calls(lambda: hsm.unseal(blob, aad), runs, warm=100)
    return [
        {
            "suite": "hsm",
            "scheme": "aes-256-gcm",
            "t": 1,
            "n": 1,
            "op": op,
            "median_ms": timing.median_ms,
            "p95_ms": timing.p95_ms,
            "runs": timing.runs,
            "payload_bytes": PAYLOAD_BYTES,
        }
        for op, timing in (("seal", seal), ("unseal", unseal))
    ]
