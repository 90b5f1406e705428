"""Custody domain: keys, sign requests, policy, approvals, audit log, CLI and SDK client."""
