"""Coordinator schema revisions, oldest first (``v0001_baseline`` is today's models)."""
