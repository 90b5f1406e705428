"""The coordinator: relays protocol envelopes between signer nodes, keeps the
preprocessing pools, aggregates and verifies signatures, and serves the public API.

``app`` (wiring), ``routes/`` (one router per resource), ``deps`` (typed dependencies),
``repository`` (the routes' persistence), ``pagination``, ``serializers``, ``openapi``,
``coordinator/`` (orchestration, one job per module), ``nodes`` (the node HTTP client),
``crypto`` (the seam to :mod:`mpc`), ``db``, ``audit``, ``idempotency``, ``auth``,
``integrity`` (what a database writer cannot pass), ``problems``, ``logs``, ``settings``,
``keystore`` (the coordinator key in its PKCS#11 token), ``version``.

May import: ``custody`` (domain, models, signing, nodeauth, serving), ``mpc`` and ``hsm``
(the coordinator's own token); never ``signer_nodes``. It never sees a share or a whole
key. No import inside a function.
"""
