"""Embedded payment core (later issue): intents, risk, ledger, settlement, reconciliation.

May import: ``custody`` (its SDK, ``custody.client``, and the domain models) only; it
reaches custody over HTTP, so it proves the public API is enough.
"""
