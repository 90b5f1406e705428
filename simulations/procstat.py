"""What a process uses, read from Linux's ``/proc`` (no dependency): CPU seconds, resident
memory, open file descriptors, children. For the saturation curve (CPU per process) and
the soak (RSS and fds over time) of :mod:`simulations.multi`'s processes.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` so far (``utime``, ``stime``); with its live
    children's (the PostgreSQL backends of a postmaster) when ``with_children``."""
    f = _stat_fields(pid)
    total = (int(f[11]) + int(f[12])) / _TICK
    if with_children:
        for c in children(pid):
            try:
                total += cpu_seconds(c)
            except OSError:
                pass  # it ended between the listing and the read
    return total


def rss_bytes(pid: int, with_children: bool = False) -> int:
    """Resident set size (``statm``'s second field, pages)."""
    total = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    if with_children:
        for c in children(pid):
            try:
                total += rss_bytes(c)
            except OSError:
                pass
    return total


def anon_bytes(pid: int, with_children: bool = False) -> int:
    """Private anonymous memory (``RssAnon`` of ``/proc/PID/status``): the heap, what a leak
    grows. Unlike RSS it leaves out shared memory (PostgreSQL's shared buffers, which RSS
    charges to every backend as it touches them) and mapped files."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            total = int(line.split()[1]) * 1024
            break
    if with_children:
        for c in children(pid):
            try:
                total += anon_bytes(c)
            except OSError:
                pass
    return total


def open_fds(pid: int, with_children: bool = False) -> int:
    """How many file descriptors are open (entries of ``/proc/PID/fd``)."""
    total = len(os.listdir(f"/proc/{pid}/fd"))
    if with_children:
        for c in children(pid):
            try:
                total += open_fds(c)
            except OSError:
                pass
    return total


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (``/proc/PID/task/*/children``)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def self_cpu_seconds() -> float:
    """This process's CPU (the load generator's own share of the machine)."""
    t = os.times()
    return t.user + t.system
