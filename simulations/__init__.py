"""Benchmarks and studies: ``python -m simulations.bench frost|ecdsa|hsm|e2e [--json]``.

One timer (``simulations.timing``); each suite returns rows of one schema and its figures
are recorded in docs/PERFORMANCE.md. May import anything.
"""
