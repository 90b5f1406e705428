"""Embedded payment core: intents, risk, ledger, settlement, reconciliation (talks to custody over HTTP only)."""
