"""DKLs23 ECDSA benchmark: ``python -m simulations.bench ecdsa [--json] [--quick]``.

Rows ``{"suite": "ecdsa", "scheme": "ecdsa-secp256k1", "t", "n", "op", "median_ms", "runs"}``:

* ``op="keygen"``: Pedersen DKG (``mpc.dkg``) plus the base OTs of every ordered pair
  (``OtSetupSession``), all ``n`` parties in this process.
* ``op="presign"``: DKLs23 rounds 1-2 and the local part of round 3 for ``t`` signers, all
  in this process (total compute of all signers).
* ``op="presign batch/7"``: one :class:`~mpc.dkls23.batch.BatchPresignSession` of 7
  presignatures (issue 13) for the same signers, divided by 7 (per presignature; the
  instances share rounds, not computation, so in one process this only shows the
  multiplexing costs nothing; the saving is per session over HTTP, ``bench_e2e drained``).
* ``op="sign"``: the online round of every signer (ledger mark + ``w_i``), the combination,
  low-s normalisation and verification (libsecp256k1, including the recovery id).
"""

from __future__ import annotations

import secrets
from typing import Any

from mpc.dkls23 import (
    Presignature,
    PresignSession,
    combine_signature,
    sign_with_presignature,
)
from mpc.dkls23.batch import BatchPresignSession
from mpc.testing import MemoryLedger, run_keygen_local, run_local
from simulations.timing import median_ms

SIZES = ((2, 3), (3, 5), (5, 9))
BATCH = 7
DIGEST = bytes.fromhex("5c" * 32)


def _row(t: int, n: int, op: str, ms: float, runs: int) -> dict[str, Any]:
    return {
        "suite": "ecdsa",
        "scheme": "ecdsa-secp256k1",
        "t": t,
        "n": n,
        "op": op,
        "median_ms": round(ms, 3),
        "runs": runs,
    }


def run(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for t, n in SIZES:
        kg_runs = 1 if quick or n > 5 else 3
        rows.append(
            _row(
                t,
                n,
                "keygen",
                median_ms(lambda t=t, n=n: run_keygen_local(t, n), kg_runs, warm=False),
                kg_runs,
            )
        )
        keys = run_keygen_local(t, n)
        signers = tuple(range(1, t + 1))

        def presign(
            keys: dict[int, Any] = keys, signers: tuple[int, ...] = signers
        ) -> dict[int, Presignature]:
            sid = secrets.token_bytes(32)
            out: dict[int, Presignature] = run_local(
                {i: PresignSession(keys[i], sid, signers) for i in signers}
            )
            return out

        ps_runs = 3 if quick else 15
        rows.append(_row(t, n, "presign", median_ms(presign, ps_runs), ps_runs))

        def presign_batch(
            keys: dict[int, Any] = keys, signers: tuple[int, ...] = signers
        ) -> dict[int, Any]:
            sid = secrets.token_bytes(32)
            out: dict[int, Any] = run_local(
                {i: BatchPresignSession(keys[i], sid, signers, BATCH) for i in signers}
            )
            return out

        b_runs = 1 if quick or t > 3 else 3
        per = median_ms(presign_batch, b_runs) / BATCH
        rows.append(_row(t, n, f"presign batch/{BATCH}", per, b_runs))
        sg_runs = 5 if quick else 50
        pool = [presign() for _ in range(sg_runs + 1)]
        ledgers = {i: MemoryLedger() for i in signers}
        pk = keys[1].group_public_key

        def sign(
            pool: list[dict[int, Presignature]] = pool,
            keys: dict[int, Any] = keys,
            ledgers: dict[int, MemoryLedger] = ledgers,
            signers: tuple[int, ...] = signers,
            pk: Any = pk,
        ) -> None:
            pres = pool.pop()
            parts = [
                sign_with_presignature(pres[i], keys[i], DIGEST, ledger=ledgers[i]) for i in signers
            ]
            combine_signature(pres[signers[0]].public, parts, DIGEST, pk)

        rows.append(_row(t, n, "sign", median_ms(sign, sg_runs), sg_runs))
    return rows
