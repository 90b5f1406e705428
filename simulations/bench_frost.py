"""FROST benchmark: ``python -m simulations.bench frost [--json] [--quick]``.

Rows ``{"suite": "frost", "scheme", "t", "n", "op", "median_ms", "runs"}``:

* ``op="sign"``: one complete in-process signing by ``t`` signers -- every signer's
  ``commit``, the signing package, every signer's ``sign``, ``aggregate`` (which verifies
  the final signature against the group key). The signers share one SigningPackage
  object, so per-package values (binding factors, group commitment) are computed once;
  on separate nodes each node computes them once more (see ``op="sign_node"``).
* ``op="sign_node"``: the work of one signer node for one request in the deployed flow:
  decode the CBOR signing package (strict point decoding), compute binding factors and
  group commitment, sign, encode the share. Nonces are preprocessed (not timed).
* ``op="dkg"``: a t-of-n Pedersen DKG (``mpc.dkg``) with all parties in this process via
  ``mpc.testing.run_local``; emitted only when ``mpc.dkg`` is importable.

Keys for ``sign`` come from the DKG when available, otherwise from a test-style split.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

from mpc import frost
from mpc.groups import Group
from mpc.shamir import KeyPackage, PublicKeyPackage
from simulations.timing import median_ms

SIZES = ((2, 3), (3, 5), (7, 10), (15, 20))
SCHEMES = ("ed25519", "bip340")
MESSAGE = b"\x00\x00 benchmark payment digest \x00"


def _split(group: Group, t: int, n: int) -> dict[int, KeyPackage]:
    """Key shares without forming the key: t random shares fix the polynomial (bench only)."""
    q = group.order
    base = list(range(1, t + 1))

    def basis(x: int, i: int) -> int:
        num = den = 1
        for j in base:
            if j != i:
                num, den = num * (x - j) % q, den * (i - j) % q
        return num * group.inv(den) % q

    shares = {i: group.random_scalar() for i in base}
    for j in range(t + 1, n + 1):
        shares[j] = sum(basis(j, i) * shares[i] for i in base) % q
    verifying = {i: group.base_mul(s) for i, s in shares.items()}
    pk = group.sum([verifying[i] * basis(0, i) for i in base])
    public = PublicKeyPackage(group, t, pk, verifying)
    return {i: KeyPackage(i, s, public) for i, s in shares.items()}


def _dkg_runner(group: Group, t: int, n: int) -> Callable[[], dict[int, KeyPackage]] | None:
    try:
        from mpc.dkg import DkgSession
        from mpc.testing import run_local
    except ImportError:
        return None

    def run() -> dict[int, KeyPackage]:
        sid = secrets.token_bytes(32)
        ids = list(range(1, n + 1))
        sessions = {i: DkgSession(group, sid, i, ids, t) for i in ids}
        out: dict[int, KeyPackage] = run_local(sessions)
        return out

    return run


def run(quick: bool = False) -> list[dict[str, Any]]:
    short = quick or os.environ.get("CUSTODY_SLOW_SHORT") == "1"
    rows: list[dict[str, Any]] = []
    for scheme in SCHEMES:
        suite = frost.ciphersuite(scheme)
        for t, n in SIZES:
            runs_sign = 5 if short else max(30, 600 // t)
            runs_dkg = 2 if short else max(5, 60 // n)
            dkg = _dkg_runner(suite.group, t, n)
            if dkg is not None:
                keys = dkg()
                rows.append(_row(scheme, t, n, "dkg", median_ms(dkg, runs_dkg), runs_dkg))
            else:
                keys = _split(suite.group, t, n)
            public = keys[1].public
            signers = list(range(1, t + 1))

            def sign_once(
                suite: frost.Ciphersuite = suite,
                keys: dict[int, KeyPackage] = keys,
                public: PublicKeyPackage = public,
                signers: list[int] = signers,
            ) -> bytes:
                pairs = {i: frost.commit(suite, keys[i]) for i in signers}
                pkg = frost.signing_package([pairs[i][1] for i in signers], MESSAGE)
                shares = [frost.sign(pkg, pairs[i][0], keys[i]) for i in signers]
                return frost.aggregate(pkg, shares, public)

            rows.append(_row(scheme, t, n, "sign", median_ms(sign_once, runs_sign), runs_sign))

            # One node's online work in the deployed flow (nonces preprocessed, not timed).
            me = keys[1]
            batch = frost.preprocess(suite, me, runs_sign + 1)
            others = {i: frost.commit(suite, keys[i])[1] for i in signers[1:]}
            wires = [
                frost.signing_package([c, *others.values()], MESSAGE).to_bytes() for _, c in batch
            ]
            it = iter(zip(batch, wires, strict=True))

            def node_once(
                suite: frost.Ciphersuite = suite, me: KeyPackage = me, it: Any = it
            ) -> bytes:
                (nonces, _), wire = next(it)
                pkg = frost.SigningPackage.from_bytes(wire, suite=suite)
                return frost.sign(pkg, nonces, me).to_bytes()

            rows.append(_row(scheme, t, n, "sign_node", median_ms(node_once, runs_sign), runs_sign))
    return rows


def _row(scheme: str, t: int, n: int, op: str, median_ms: float, runs: int) -> dict[str, Any]:
    return {
        "suite": "frost",
        "scheme": scheme,
        "t": t,
        "n": n,
        "op": op,
        "median_ms": round(median_ms, 4),
        "runs": runs,
    }
