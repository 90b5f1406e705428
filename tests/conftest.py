"""Settings shared by every test package.

Hypothesis: no per-example deadline (CI runs on a loaded 2-core machine, where a slow
example is not a failure; performance is measured by the benchmarks), and every failure
prints the blob that reproduces it.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("custody", deadline=None, print_blob=True)
settings.load_profile("custody")
