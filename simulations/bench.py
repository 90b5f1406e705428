"""Benchmark entry point: ``python -m simulations.bench SUITE [--json] [--quick]``.

Each suite lives in ``simulations/bench_<suite>.py`` and exposes
``run(quick: bool) -> list[dict]``; rows share the schema
``{"suite", "scheme", "t", "n", "op", "median_ms", "runs", ...}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from rich.console import Console
from rich.table import Table

SUITES = ("frost", "ecdsa", "hsm", "node", "policy", "e2e", "refresh", "ceremonies", "payments")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.bench")
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--quick", action="store_true", help="few runs (CI smoke form)")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"simulations.bench_{args.suite}")
    rows = module.run(quick=args.quick)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table(title=f"{args.suite} benchmark")
    cols = list(rows[0]) if rows else []
    for c in cols:
        table.add_column(c, overflow="fold")  # never cut a value
    for r in rows:
        table.add_row(*[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols])
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
