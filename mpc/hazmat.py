"""RFC and paper internals, and entry points with caller-chosen randomness.

.. danger::

   This is a "Hazardous Materials" module. You should **only** use it if you're 100%
   absolutely sure that you know what you're doing because this module is full of land
   mines, dragons, and dinosaurs with laser guns.

   A signing node or the coordinator never calls anything here. The safe surface is
   :mod:`mpc.frost` (``commit``, ``sign``, ``aggregate``, ...), :class:`mpc.dkg.DkgSession`
   and :mod:`mpc.dkls23` (sessions, ``sign_with_presignature``, ``combine_signature``).
   What is here breaks the protocols' guarantees when misused:

   * :func:`nonce_generate` with ``random_bytes`` and :func:`set_rng` fix randomness that
     must be fresh: a FROST nonce or DKLs23 instance key drawn twice from the same bytes
     and used on two messages reveals the signing share (RFC 9591 section 10.2; DKLs23
     section 3). They exist to reproduce test vectors.
   * :func:`round1_payload`, :func:`prove_knowledge` and the RFC 9591 section 4 helpers
     build or check single protocol steps without the session's ordering, echo and
     single-use checks around them.

Exports, each with the section it implements cited in its own docstring:

* FROST (RFC 9591 section 4): :func:`nonce_generate` (4.1),
  :func:`encode_group_commitment_list` (4.3), :func:`compute_binding_factors` (4.4),
  :func:`compute_group_commitment` (4.5), :func:`compute_challenge` (4.6).
* FROST KeyGen (Komlo-Goldberg 2020, Figure 1): :func:`pok_challenge`,
  :func:`prove_knowledge`, :func:`verify_knowledge`, :func:`verify_knowledge_generic`,
  :func:`round1_payload`, :func:`echo_digest`, :func:`evaluate_in_exponent`.
* Sessions: :func:`set_rng` (replace a session's randomness before ``start()``).
"""

from __future__ import annotations

from typing import Any

from mpc.dkg import _echo_digest as echo_digest
from mpc.dkg import _evaluate_in_exponent as evaluate_in_exponent
from mpc.dkg import _pok_challenge as pok_challenge
from mpc.dkg import _prove_knowledge as prove_knowledge
from mpc.dkg import _round1_payload as round1_payload
from mpc.dkg import _verify_knowledge as verify_knowledge
from mpc.dkg import _verify_knowledge_generic as verify_knowledge_generic
from mpc.errors import UsageError
from mpc.frost.core import _compute_binding_factors as compute_binding_factors
from mpc.frost.core import _compute_challenge as compute_challenge
from mpc.frost.core import _compute_group_commitment as compute_group_commitment
from mpc.frost.core import _encode_group_commitment_list as encode_group_commitment_list
from mpc.frost.core import _nonce_generate as nonce_generate
from mpc.session import Rng, RoundSession, SessionState

__all__ = [
    "nonce_generate",
    "encode_group_commitment_list",
    "compute_binding_factors",
    "compute_group_commitment",
    "compute_challenge",
    "pok_challenge",
    "prove_knowledge",
    "verify_knowledge",
    "verify_knowledge_generic",
    "round1_payload",
    "echo_digest",
    "evaluate_in_exponent",
    "set_rng",
]


def set_rng(session: RoundSession[Any], rng: Rng) -> None:
    """Make ``session`` draw every secret (polynomials, nonces, OT choices) from ``rng``.

    ``rng(n)`` must return ``n`` bytes. Only before ``start()``; a deterministic ``rng``
    (e.g. :func:`mpc.testing.seeded_rng`) makes the run reproducible byte for byte, which
    is what recorded vectors need and what a live key must never have.
    """
    if session.state is not SessionState.IDLE:
        raise UsageError(f"{session.protocol}: set_rng() after start()", party=session.me)
    if not callable(rng):
        raise UsageError("rng must be a callable returning n bytes")
    session._rng = rng
