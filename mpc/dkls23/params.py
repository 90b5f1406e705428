"""Parameters and hash helpers shared by the DKLs23 modules.

Parameters (DKLs23, ePrint 2023/765, Protocol 5.2, the F_RVOLE protocol, and section 5.1;
DKLs19, ePrint 2019/523, Protocol 1, its parameter list ``xi = kappa + 2s``):

* ``KAPPA = 256``: bit length of the field Z_q of secp256k1 and the number of base OTs per
  ordered pair (computational security 128 bits, the security of secp256k1 itself).
* ``S = 128``: statistical security parameter. DKLs23 section 5.1 makes the OT extension one
  message by Fiat-Shamir, so the statistical parameter becomes a computational one (it must
  resist offline grinding); 128 bits matches the curve.
* ``LAMBDA_C = 128``: computational security parameter of the random-oracle derived values
  (here: how much work an adversary may spend grinding its fresh contribution to choose a
  favourable gadget, see :func:`gadget`).
* ``XI = KAPPA + 3*S + 2*LAMBDA_C = 896``: OT-extension batch (Bob's random choice bits) per
  multiplication, sized by the bound ``m >= log q + 3s + 2 lambda_c`` that Asharov (ePrint
  2026/976) reportedly gives for a transcript-derived gadget. That paper could not be read
  here; the earlier bound ``xi = kappa + 2s = 512`` (DKLs19 Protocol 1, DKLs23 Protocol 5.2
  and the public implementations read) is below it. The decision, its reasoning and its
  measured cost are in ``docs/decisions/dkls23-gadget.md``.
* ``ETA = XI + S = 1024``: extended columns, i.e. ``XI`` plus one chunk of ``S`` random bits
  that masks the consistency check (the ``l'`` of KOS15, ePrint 2015/546, Fig. 10, with the
  check computed over GF(2^S)).
* ``ELL = 2``: Alice's input vector length in F_RVOLE (instance key share and key share).

Hash: SHA-256 / SHAKE-256 (hashlib) with a protocol label and length-prefixed fields, so
every hash is bound to its purpose and to the session, pair and index it is used in.
"""

from __future__ import annotations

import hashlib
from typing import Final

from mpc.groups import SECP256K1

KAPPA: Final = 256
S: Final = 128
LAMBDA_C: Final = 128
XI: Final = KAPPA + 3 * S + 2 * LAMBDA_C
ETA: Final = XI + S
ELL: Final = 2
WIDTH: Final = 2 * ELL  # scalars correlated per OT: (a_1, a_2, a_hat_1, a_hat_2)
COL_BYTES: Final = ETA // 8
Q: Final = SECP256K1.order
GROUP: Final = SECP256K1


def h(label: bytes, *parts: bytes | int) -> bytes:
    """SHA-256 over a label and length-prefixed parts (ints as 8-byte big-endian)."""
    d = hashlib.sha256()
    d.update(len(label).to_bytes(2, "big") + label)
    for p in parts:
        b = p.to_bytes(8, "big") if isinstance(p, int) else p
        d.update(len(b).to_bytes(4, "big") + b)
    return d.digest()


def h_scalars(label: bytes, count: int, *parts: bytes | int) -> list[int]:
    """``count`` scalars in Z_q from SHAKE-256 (48 bytes each, bias below 2^-128)."""
    seed = h(label, *parts)
    out = hashlib.shake_256(seed).digest(48 * count)
    return [int.from_bytes(out[48 * i : 48 * i + 48], "big") % Q for i in range(count)]


GADGET_LABEL: Final = b"DKLs23 gadget vector g from mul_ctx v1"


def gadget(mul_ctx: bytes) -> tuple[int, ...]:
    """The gadget vector ``g`` of one multiplication, uniform in Z_q^XI, derived from ``mul_ctx``.

    DKLs19 (ePrint 2019/523) Protocol 1 takes ``g`` as a public uniformly random vector of
    length ``xi``; Bob's random F_RVOLE input is ``<g, x>`` for his random choice bits ``x``
    (DKLs23 "forced reuse", Functionality 3.5), close to uniform even after a
    selective-failure leak of ``s`` bits of ``x`` because ``x -> <g, x>`` is a universal hash
    *for a g chosen independently of the leak*. With one fixed vector for every run (our
    earlier ``GADGET``, a common reference string), the leakage function a malicious Alice
    picks may depend on ``g``; Asharov (ePrint 2026/976, reportedly) shows the bound
    ``m >= log q + 2s`` does not then give the stated security and proposes a gadget derived
    from the transcript with ``m >= log q + 3s + 2 lambda_c``. Silence Laboratories'
    ``sl-dkls23`` also derives ``g`` per session (from the session id).

    Here ``g = SHAKE-256(H(label, mul_ctx))``: ``mul_ctx`` (:func:`mpc.dkls23.mul.mul_context`)
    binds the session context, the direction and *both* parties' fresh contributions
    ``rho`` (so neither party alone fixes ``g``, and no two runs share one even if the
    session id repeats). Alice sends ``rho_A`` after seeing Bob's round 1, so she may grind
    it; ``XI`` carries the ``2 lambda_c`` term of the stronger bound for that. The cost is
    one SHAKE-256 stream of ``48 * XI`` bytes per multiplication and side.
    """
    return tuple(h_scalars(GADGET_LABEL, XI, mul_ctx))
