"""Orchestration, one job per module; the coordinator never holds a share.

=============== ===========================================================================
``service``     :class:`Coordinator`: wires the parts, background sweeps, sign with a retry
``registry``    node registry and health: enrolment, peers, picking, blame, marking down
``relay``       session relay: drives :class:`mpc.relay.Relay` over HTTP (DKG, presign)
``keys``        the DKG ceremony and agreement; the book of active keys
``ceremonies``  key ceremonies on an active key: refresh, commit when all done, transcript
``hd``          HD derivation of an active key's public side: child keys, addresses, xpub
``pools``       FROST commitment and ECDSA presignature pools and their refills
``signers``     per-scheme signers (FROST, DKLs23 ECDSA): one attempt each
``outcomes``    the outcome writer: result + audit entry in one transaction, fail closed
``approvals``   the approval desk: policy before any node call, approvals and their moves
``checkpoints`` audit checkpoints co-signed by the nodes
``types``       values they pass each other (KeyInfo, SignResult, SessionFailed, ...)
=============== ===========================================================================

May import: ``api`` (db, nodes, crypto, audit, idempotency, problems, settings),
``custody`` (domain, signing, policy, approvals, kinds), ``mpc`` (through
:mod:`api.crypto`, and :mod:`mpc.relay`).
"""

from api.coordinator.service import Coordinator
from api.coordinator.types import KeyInfo, SessionFailed, SignResult

__all__ = ["Coordinator", "KeyInfo", "SessionFailed", "SignResult"]
