#!/usr/bin/env python3
"""Write our own recorded vectors (DKG, DKLs23 presigning) to tests/vectors/own/.

Usage: .venv/bin/python scripts/make_own_vectors.py [--check]

Each file is a pure function of a fixed test seed (see tests/mpc/own_vectors.py);
tests/mpc/test_own_vectors.py recomputes and compares them byte for byte. ``--check``
writes nothing and exits 1 if a file is missing or differs. Test fixtures only: the
service never reads them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.mpc.own_vectors import VECTORS, build  # noqa: E402

OUT = ROOT / "tests" / "vectors" / "own"


def render(name: str) -> str:
    return json.dumps(build(name), indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for name in VECTORS:
        path = OUT / f"{name}.json"
        text = render(name)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)} ({len(text)} bytes)")
    if stale:
        print("stale or missing:", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
