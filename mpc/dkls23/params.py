"""Parameters and hash helpers shared by the DKLs23 modules.

Parameters (DKLs23, ePrint 2023/765, Protocol 5.2, the F_RVOLE protocol, and section 5.1;
DKLs19, ePrint 2019/523, Protocol 1, its parameter list ``xi = kappa + 2s``):

* ``KAPPA = 256``: bit length of the field Z_q of secp256k1 and the number of base OTs per
  ordered pair (computational security 128 bits, the security of secp256k1 itself).
* ``S = 128``: statistical security parameter. DKLs23 section 5.1 makes the OT extension one
  message by Fiat-Shamir, so the statistical parameter becomes a computational one (it must
  resist offline grinding); 128 bits matches the curve.
* ``XI = KAPPA + 2*S = 512``: OT-extension batch (Bob's random choice bits) per multiplication.
* ``ETA = XI + S = 640``: extended columns, i.e. ``XI`` plus one chunk of ``S`` random bits
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
XI: Final = KAPPA + 2 * S
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


def _gadget() -> tuple[int, ...]:
    """The public gadget vector ``g``, uniform in Z_q^XI (DKLs19, ePrint 2019/523, Protocol 1).

    DKLs19 Protocol 1 takes ``g`` as a public uniformly random vector of length ``xi``; Bob's
    random F_RVOLE input is ``<g, x>`` for his random choice bits ``x`` (DKLs23 "forced
    reuse", Functionality 3.5), which is close to uniform even after a selective-failure
    leak of ``s`` bits of ``x`` because ``x -> <g, x>`` is a universal hash for uniform ``g``.
    (An earlier version used powers of two followed by ``2s`` random entries, the shape of an
    encoding of a *chosen* input; Bob's input here is random, and the implementations we
    checked sample all of ``g``.) Here ``g`` is derived from a fixed label: a common reference
    string everyone can recompute.
    """
    return tuple(h_scalars(b"DKLs23 gadget vector g (DKLs19 Protocol 1)", XI))


GADGET: Final = _gadget()
