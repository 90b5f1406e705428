"""Fixtures for the hsm tests: real SoftHSM2 tokens in pytest temp dirs, no mocks.

SoftHSM2 reads ``SOFTHSM2_CONF`` once per process (see the ``hsm`` package docstring), so
the session fixture :func:`hsm_process_conf` binds this test process to one dev config in
a directory no test deletes; every :func:`hsm_config` token is then added to that token
directory by :func:`hsm.provision_dev_token` and selected by its unique label. Tests that
need an *unbound* process, or delete a whole token directory, run in a subprocess
(:func:`run_py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hsm import Hsm, HsmConfig, provision_dev_token

USER_PIN = "user-pin-1234"  # noqa: S105 - throwaway dev token PIN
SO_PIN = "so-pin-5678"  # noqa: S105 - throwaway dev token PIN
REPO_ROOT = Path(__file__).resolve().parents[2]


def unique_label(prefix: str = "t") -> str:
    """A token label unique within the shared token directory (<= 32 bytes)."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def tokendir_of(config: HsmConfig) -> Path:
    """The ``directories.tokendir`` of the SoftHSM2 config named by ``config``."""
    assert config.softhsm_conf is not None
    for line in Path(config.softhsm_conf).read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "directories.tokendir":
            return Path(value.strip())
    raise AssertionError("no tokendir in config")


def token_subdir(config: HsmConfig) -> Path:
    """The directory SoftHSM2 keeps ``config``'s token in (found by its label)."""
    raw = config.token_label.encode().ljust(32, b" ")
    hits = [
        d
        for d in tokendir_of(config).iterdir()
        if (d / "token.object").exists() and raw in (d / "token.object").read_bytes()
    ]
    assert len(hits) == 1, hits
    return hits[0]


def run_py(code: str, stdin: str = "", env: dict[str, str] | None = None) -> Any:
    """Run ``code`` in a fresh interpreter (repo on sys.path); return its last JSON line.

    The child starts *unbound*: ``SOFTHSM2_CONF`` (set in this process by the binding) is
    removed unless ``env`` sets it.
    """
    full_env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.run(  # noqa: S603 - sys.executable with test code
        [sys.executable, "-c", code],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def hsm_process_conf(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Bind this process to one dev SoftHSM2 config; return its path."""
    base = tmp_path_factory.mktemp("softhsm-process")
    anchor = provision_dev_token(base, unique_label("anchor"), USER_PIN, SO_PIN)
    with Hsm.open(anchor):  # first C_Initialize of the process: binds the config
        pass
    assert anchor.softhsm_conf is not None
    return anchor.softhsm_conf


@pytest.fixture
def hsm_config(tmp_path: Path, hsm_process_conf: str) -> HsmConfig:
    """A freshly provisioned, empty SoftHSM2 token (no seal key yet)."""
    config = provision_dev_token(tmp_path, unique_label(), USER_PIN, SO_PIN)
    assert config.softhsm_conf == hsm_process_conf
    return config


@pytest.fixture
def hsm(hsm_config: HsmConfig) -> Iterator[Hsm]:
    """An open :class:`Hsm` on a fresh token."""
    with Hsm.open(hsm_config) as opened:
        yield opened


@pytest.fixture(scope="module")
def module_hsm(tmp_path_factory: pytest.TempPathFactory, hsm_process_conf: str) -> Iterator[Hsm]:
    """An open :class:`Hsm` shared by one module (for hypothesis tests)."""
    config = provision_dev_token(
        tmp_path_factory.mktemp("module-token"), unique_label("m"), USER_PIN, SO_PIN
    )
    with Hsm.open(config) as opened:
        yield opened
