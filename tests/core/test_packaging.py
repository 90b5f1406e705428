"""A non-editable install (the Dockerfile's) carries every package: pyproject lists them all."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: ROOT / path for name, path in config.get("package-dir", {}).items()}
    found = set()
    for top in ("mpc", "hsm", "custody", "api", "payments", "simulations", "signer_nodes"):
        base = folders.get(top, ROOT / top)
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((top, *rel)))
    assert set(config["packages"]) == found
