"""Fixtures: a coordinator app on a temporary SQLite file, one credential per role."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from nacl.signing import SigningKey

from api.app import create_app
from api.auth import create_credential
from api.db import Key
from api.settings import Settings
from custody.domain import ROLES
from mpc.groups import SECP256K1


def nothing_up_my_sleeve_point(label: bytes) -> bytes:
    """A secp256k1 point nobody knows the discrete log of (try-and-increment from a hash)."""
    ctr = 0
    while True:
        x = hashlib.sha256(label + ctr.to_bytes(4, "big")).digest()
        try:
            return SECP256K1.lift_x(x).encode()
        except Exception:
            ctr += 1


class Api:
    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client = client
        self.tokens = tokens

    def h(self, role: str | None, idem: str | None = None) -> dict[str, str]:
        out = {}
        if role:
            out["Authorization"] = f"Bearer {self.tokens[role]}"
        if idem:
            out["Idempotency-Key"] = idem
        return out

    @property
    def app(self):  # noqa: ANN201
        return self.client.app

    def add_key(self, scheme: str = "ecdsa-secp256k1", status: str = "active") -> str:
        """Insert a key row as a finished DKG would leave it (public data only)."""
        pk = nothing_up_my_sleeve_point(scheme.encode())
        if scheme != "ecdsa-secp256k1":
            pk = pk[1:]
        kid = "key_" + hashlib.sha256(pk + status.encode()).hexdigest()[:32]
        with self.app.state.db.session() as s:
            s.add(
                Key(
                    id=kid,
                    scheme=scheme,
                    threshold=2,
                    nodes=["node-1", "node-2", "node-3"],
                    status=status,
                    public_key=pk.hex(),
                    verifying_shares={},
                )
            )
        return kid

    def add_signing_key(self) -> tuple[str, object]:
        """An active ed25519 key row whose public key belongs to a test-only single key
        (pynacl), standing in for a DKG result so tests can store real signatures."""
        sk = SigningKey.generate()
        kid = "key_" + bytes(sk.verify_key).hex()[:32]
        with self.app.state.db.session() as s:
            s.add(
                Key(
                    id=kid,
                    scheme="ed25519",
                    threshold=2,
                    nodes=["node-1", "node-2", "node-3"],
                    status="active",
                    public_key=bytes(sk.verify_key).hex(),
                    verifying_shares={},
                )
            )
        return kid, sk


def make_api(tmp_path: Path, **kw) -> Iterator[Api]:  # noqa: ANN003
    settings = Settings(data_dir=tmp_path / "coord", **{"sync_wait": 2.0, **kw})
    app = create_app(settings, background=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        tokens = {r: create_credential(app.state.db, r)[1] for r in ROLES}
        yield Api(client, tokens)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path)


@pytest.fixture
def dev_api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path, dev_allow_all=True)
