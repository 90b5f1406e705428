"""Coordinator settings: a data directory plus tunables, overridable by ``CUSTODY_*`` env."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get("CUSTODY_" + name, default)


@dataclass
class Settings:
    """Everything the coordinator needs to start.

    ``data_dir`` (0700) holds ``coordinator.db`` (0600, unless ``database_url`` points
    elsewhere, e.g. ``postgresql+psycopg://...``) and the coordinator's PKCS#11 token with
    the Ed25519 key that signs every node request (:mod:`api.keystore`; it authorises
    nothing on its own, nodes still check policy).
    """

    data_dir: Path
    database_url: str = ""
    round_timeout: float = 10.0  # seconds one node call / protocol round may take
    sync_wait: float = 15.0  # POST waits this long for completion before answering 202
    frost_batch: int = 64  # commitments fetched per node call
    frost_low_water: int = 32  # refill below this many unused commitments per node
    presig_target: int = 16  # unused ECDSA presignatures kept per key
    presig_parallel: int = 4  # presign sessions run at once while refilling
    presig_low_water: int = -1  # refill at once below this (else when idle); -1: target/4
    pool_interval: float = 0.5  # seconds between pool/health sweeps
    approval_ttl: float = 24 * 3600.0  # pending_approval requests expire after this
    cluster_id: str = "tpwc-dev"  # named in every checkpoint; the governance's id when installed
    # HTTP semantics and limits (api.idempotency, api.limits; docs/DESIGN.md "API conventions")
    retry_after: float = 1.0  # seconds a 202's Retry-After asks a poller to wait
    idempotency_ttl: float = 24 * 3600.0  # an Idempotency-Key's record is deleted after this
    max_sign_request_bytes: int = 256 * 1024  # POST /v1/sign-requests body limit
    max_governance_bytes: int = 1024 * 1024  # /v1/governance, /v1/policy/... body limit
    max_body_bytes: int = 64 * 1024  # body limit of every other route
    rate_limit_credential: str = "300/second"  # per credential ("" = off), `limits` notation
    rate_limit_address: str = "600/second"  # per client address, every /v1 request
    rate_limit_auth_failures: str = "20/minute"  # failed authentications per client address

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.presig_low_water < 0:
            self.presig_low_water = self.presig_target // 4
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'coordinator.db'}"

    @property
    def legacy_key_path(self) -> Path:
        """Where the key file was before it moved into the token (refused if present)."""
        return self.data_dir / "coordinator_key"

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None) -> Settings:
        return cls(
            data_dir=Path(data_dir or _env("DATA_DIR", ".custody/coordinator")),
            database_url=_env("DATABASE_URL", ""),
            round_timeout=float(_env("ROUND_TIMEOUT", "10")),
            sync_wait=float(_env("SYNC_WAIT", "15")),
            frost_batch=int(_env("FROST_BATCH", "64")),
            frost_low_water=int(_env("FROST_LOW_WATER", "32")),
            presig_target=int(_env("PRESIG_TARGET", "16")),
            presig_parallel=int(_env("PRESIG_PARALLEL", "4")),
            presig_low_water=int(_env("PRESIG_LOW_WATER", "-1")),
            pool_interval=float(_env("POOL_INTERVAL", "0.5")),
            cluster_id=_env("CLUSTER_ID", "tpwc-dev"),
            retry_after=float(_env("RETRY_AFTER", "1")),
            idempotency_ttl=float(_env("IDEMPOTENCY_TTL", str(24 * 3600))),
            max_sign_request_bytes=int(_env("MAX_SIGN_REQUEST_BYTES", str(256 * 1024))),
            max_governance_bytes=int(_env("MAX_GOVERNANCE_BYTES", str(1024 * 1024))),
            max_body_bytes=int(_env("MAX_BODY_BYTES", str(64 * 1024))),
            rate_limit_credential=_env("RATE_LIMIT_CREDENTIAL", "300/second"),
            rate_limit_address=_env("RATE_LIMIT_ADDRESS", "600/second"),
            rate_limit_auth_failures=_env("RATE_LIMIT_AUTH_FAILURES", "20/minute"),
        )
