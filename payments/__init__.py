"""Embedded payment core (later issue): intents, risk, ledger, settlement, reconciliation."""
