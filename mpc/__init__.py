"""Threshold-signing protocols, sans-IO: groups, FROST, DKG, DKLs23 ECDSA, wire format.

Job: the protocol core. It does no I/O (no files, sockets, clocks, threads or ``os``) and
imports nothing of ours outside ``mpc`` (tests/core/test_layering.py checks both).

Surface, by who may call it:

* a service (node, coordinator): :mod:`mpc.frost`, :mod:`mpc.dkg` (``DkgSession``),
  :mod:`mpc.dkls23` (sessions, ``sign_with_presignature``, ``combine_signature``),
  :mod:`mpc.session`, :mod:`mpc.wire`, :mod:`mpc.keyio`, :mod:`mpc.groups`,
  :mod:`mpc.shamir`, :mod:`mpc.errors`, :mod:`mpc.bip340`;
* key ceremonies on an existing key: :mod:`mpc.refresh` (``RefreshSession``,
  ``ecdsa_share_with_ot``), :mod:`mpc.reshare` (``ReshareSession``, ``ReshareResult``),
  :mod:`mpc.dkls23.resetup` (``OtResetupChain``: either ceremony, then fresh base OTs for a
  DKLs23 key), :mod:`mpc.hd` (BIP-32 non-hardened derivation of shared keys, xpubs, the
  Ed25519 additive tweak);
* key ceremonies only, with their own warning: :mod:`mpc.dealer`;
* never a service: :mod:`mpc.hazmat` (RFC internals, fixed randomness) and
  :mod:`mpc.testing` (in-process runners, in-memory ledger, seeded randomness).
"""
