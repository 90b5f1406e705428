"""Threshold-signing protocols, sans-IO: groups, FROST, DKG, DKLs23 ECDSA, wire format."""
