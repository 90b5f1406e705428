"""Key-ceremony benchmark: ``python -m simulations.bench refresh [--json] [--quick]``.

Rows ``{"suite": "refresh", "scheme", "t", "n", "op", "median_ms", "runs", "per_party_ms"}``,
every party of the ceremony in this process (``mpc.testing.run_local``), so ``median_ms`` is
the sum of all parties' work (no network); ``per_party_ms`` is that divided by the number of
parties taking part (on separate nodes the parties run in parallel):

* ``op="refresh"``: a proactive refresh (:class:`mpc.refresh.RefreshSession`) by all ``n``
  holders of a ``t``-of-``n`` key (schemes ``ed25519`` and ``secp256k1``; the secp256k1
  figure is that of BIP-340 and of the Shamir part of a DKLs23 key);
* ``op="reshare"``: a resharing (:class:`mpc.reshare.ReshareSession`) by ``t`` dealers to a
  new ``t``-of-``n`` committee of which the dealers are members (``n + 0`` parties);
* scheme ``ecdsa-secp256k1`` (DKLs23): the same two ops, each followed by a fresh pairwise
  base-OT setup (:class:`mpc.dkls23.OtSetupSession`) of every pair of the resulting
  committee: full proactive security of a DKLs23 key needs it after a refresh, and a new
  committee needs it after a resharing. The OT setup dominates.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from mpc.groups import ED25519, SECP256K1, Group
from mpc.refresh import RefreshSession
from mpc.reshare import ReshareSession
from mpc.shamir import KeyPackage
from mpc.testing import run_dkg_local, run_local, run_ot_setup_local
from simulations.timing import median_ms

SIZES = ((2, 3), (3, 5), (7, 10))
GROUPS: tuple[Group, ...] = (ED25519, SECP256K1)


def _refresh(keys: dict[int, KeyPackage]) -> dict[int, KeyPackage]:
    sid = secrets.token_bytes(32)
    out: dict[int, KeyPackage] = run_local({i: RefreshSession(k, sid) for i, k in keys.items()})
    return out


def _reshare(keys: dict[int, KeyPackage], t: int, n: int) -> dict[int, Any]:
    sid = secrets.token_bytes(32)
    old = keys[1].public
    dealers = list(range(1, t + 1))
    new = list(range(1, n + 1))
    sessions = {
        p: ReshareSession(sid, p, old, dealers, new, t, key=keys[p] if p in dealers else None)
        for p in new
    }
    out: dict[int, Any] = run_local(sessions)
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    short = quick or os.environ.get("CUSTODY_SLOW_SHORT") == "1"
    rows: list[dict[str, Any]] = []
    for group in GROUPS:
        for t, n in SIZES:
            runs = 2 if short else max(5, 60 // n)
            keys = {k.identifier: k for k in run_dkg_local(group, t, n)}
            ms = median_ms(lambda keys=keys: _refresh(keys), runs)
            rows.append(_row(group.name, t, n, "refresh", ms, runs, n))
            ms = median_ms(lambda keys=keys, t=t, n=n: _reshare(keys, t, n), runs)
            rows.append(_row(group.name, t, n, "reshare", ms, runs, n))
    for t, n in SIZES:
        runs = 1 if short else max(2, 12 // n)
        keys = {k.identifier: k for k in run_dkg_local(SECP256K1, t, n)}

        def refresh_ot(keys: dict[int, KeyPackage] = keys) -> Any:
            return run_ot_setup_local(list(_refresh(keys).values()))

        def reshare_ot(keys: dict[int, KeyPackage] = keys, t: int = t, n: int = n) -> Any:
            res = _reshare(keys, t, n)
            return run_ot_setup_local([r.key for r in res.values() if r.key is not None])

        ms = median_ms(refresh_ot, runs, warm=not short)
        rows.append(_row("ecdsa-secp256k1", t, n, "refresh", ms, runs, n))
        ms = median_ms(reshare_ot, runs, warm=not short)
        rows.append(_row("ecdsa-secp256k1", t, n, "reshare", ms, runs, n))
    return rows


def _row(
    scheme: str, t: int, n: int, op: str, median_ms: float, runs: int, parties: int
) -> dict[str, Any]:
    return {
        "suite": "refresh",
        "scheme": scheme,
        "t": t,
        "n": n,
        "op": op,
        "median_ms": round(median_ms, 3),
        "runs": runs,
        "per_party_ms": round(median_ms / parties, 3),
    }
