"""Vendored vectors are the files their sources published; nothing reads outside the repo."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from tests.conftest import GUARDED_ZONE

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"


def test_every_vendored_vector_matches_sha256sums() -> None:
    listed: dict[str, str] = {}
    for line in (VECTORS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name] = digest
    assert listed, "SHA256SUMS lists nothing"
    for name, digest in listed.items():
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == digest, name
    third_party = {
        str(p.relative_to(VECTORS))
        for p in VECTORS.rglob("*")
        if p.is_file() and p.parent != VECTORS and p.name != "LICENSE" and "own" not in p.parts
    }
    assert third_party == set(listed), "every third-party vector file is listed, and only those"


# A path that climbs out of the repository: ``../<name>`` where <name> is not one of the
# repository's own top-level entries (``../signer-nodes`` from a subfolder is fine), a
# ``parents[3]`` or higher from a file two levels down, or an absolute /work/ path.
CLIMB = re.compile(r"(?<!\.)\.\./([\w.-]+)")
ESCAPES = re.compile(r"parents\[[3-9]\]|/work/")
OWN = {p.name for p in ROOT.iterdir()}


def escapes(line: str) -> bool:
    """True when ``line`` names a path outside the repository."""
    if ESCAPES.search(line):
        return True
    return any(name.rstrip(".") not in OWN for name in CLIMB.findall(line))


SCANNED = {".py", ".sh", ".md", ".toml", ".yml", ".yaml", ".cfg", ".ini", ""}


def test_nothing_in_the_repository_reads_or_links_outside_it() -> None:
    offenders = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in {".git", ".venv", "venv"} or "__pycache__" in rel.parts:
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(ROOT):
            offenders.append(f"{rel}: symlink out of the repository")
            continue
        if (
            not path.is_file()
            or path.suffix not in SCANNED
            or rel == Path(__file__).relative_to(ROOT)
        ):
            continue
        if any(part.endswith(".egg-info") or part.startswith(".") for part in rel.parts[:-1]):
            if rel.parts[0] != ".ci":
                continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if escapes(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


def test_the_scan_tells_a_climb_out_from_a_path_inside() -> None:
    sibling = "../" + "beside-the-checkout/vectors"  # built here so this file stays clean
    assert escapes(f"VECTORS = {sibling!r}") and escapes("/work/elsewhere/x")
    assert not escapes("link .typing/signer_nodes -> ../signer-nodes")
    assert not escapes("POST .../envelopes")


def test_opening_a_file_beside_the_repository_fails_the_test() -> None:
    """tests/conftest.py's audit hook refuses any open of a sibling of the checkout."""
    if GUARDED_ZONE is None:
        pytest.skip("the checkout sits among system paths: the hook is off (see conftest)")
    beside = ROOT.parent / "beside-the-checkout" / "DESIGN.md"
    with pytest.raises(PermissionError, match="outside the repository"):
        beside.read_text()
    with pytest.raises(PermissionError, match="outside the repository"):
        open(os.path.relpath(beside))  # noqa: SIM115 - relative form too
