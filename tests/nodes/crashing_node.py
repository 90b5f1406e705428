"""Test-only launcher: the real node, with a fault hook that dies at one named point.

    python -m tests.nodes.crashing_node --crash-at POINT run --data-dir D --port P
    python -m tests.nodes.crashing_node --crash-at POINT rotate-seal-key --data-dir D

It builds exactly what ``python -m signer_nodes run`` / ``rotate-seal-key`` build (the
real :class:`signer_nodes.node.Node` over its SoftHSM2 token and SQLCipher file, the real
service under custody.serving) and passes :class:`ExitAt` as the node's fault hooks: when the node
reaches ``POINT`` (:mod:`signer_nodes.faults`) the process ends at once with exit code
137, as if SIGKILLed (no cleanup, no flush, no atexit). Production code never exits the
process and never reads a crash point from the environment; only this file does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from signer_nodes import logs
from signer_nodes.faults import POINTS
from signer_nodes.node import Node
from signer_nodes.service import serve

EXIT_CODE = 137  # what a shell reports for SIGKILL


class ExitAt:
    """Fault hooks: exit the process (like SIGKILL) when ``point`` is reached."""

    def __init__(self, point: str) -> None:
        if point not in POINTS:
            raise SystemExit(f"unknown fault point {point!r}; one of {', '.join(POINTS)}")
        self.point = point

    def reached(self, point: str) -> None:
        if point == self.point:
            os._exit(EXIT_CODE)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="crashing_node")
    ap.add_argument("--crash-at", required=True, help="fault point (signer_nodes.faults)")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--dev", action="store_true", help="as signer_nodes run: plain HTTP")
    rot = sub.add_parser("rotate-seal-key")
    rot.add_argument("--data-dir", type=Path, required=True)
    args = ap.parse_args(argv)
    faults = ExitAt(args.crash_at)
    logs.setup()
    node = Node.open(args.data_dir, faults=faults)
    try:
        if args.command == "run":
            serve(node, host=args.host, port=args.port)
        else:
            print(node.rotate_seal_key())
    finally:
        node.close()


if __name__ == "__main__":
    sys.exit(main())
