"""Coordinator settings: one pydantic-settings model, every field overridable by its
``CUSTODY_<FIELD>`` environment variable (``docs/OPERATIONS.md`` lists them all).

``Settings(data_dir=...)`` (tests, ``python -m api``) and :meth:`Settings.from_env` read
the same variables; keyword arguments win over the environment. A value that does not
parse (``CUSTODY_SYNC_WAIT=soon``) stops the coordinator at start with the variable named.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from custody import tls


class Settings(BaseSettings):
    """Everything the coordinator needs to start.

    ``data_dir`` (0700) holds ``coordinator.db`` (0600, unless ``database_url`` points
    elsewhere, e.g. ``postgresql+psycopg://...``) and the coordinator's PKCS#11 token with
    the Ed25519 key that signs every node request (:mod:`api.keystore`; it authorises
    nothing on its own, nodes still check policy) and the AES key that seals webhook
    secrets (:mod:`api.webhooks`).
    """

    model_config = SettingsConfigDict(
        env_prefix="CUSTODY_", validate_assignment=False, extra="forbid"
    )

    data_dir: Path = Field(
        default=Path(".custody/coordinator"), description="the coordinator's data directory"
    )
    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty: sqlite in data_dir/coordinator.db"
    )
    round_timeout: float = Field(
        default=10.0, gt=0, description="seconds one node call / protocol round may take"
    )
    sync_wait: float = Field(
        default=15.0, ge=0, description="a POST waits this long for completion before 202"
    )
    frost_batch: int = Field(default=64, ge=1, description="commitments fetched per node call")
    frost_low_water: int = Field(
        default=32, ge=0, description="refill below this many unused commitments per node"
    )
    presig_target: int = Field(
        default=16, ge=0, description="unused ECDSA presignatures kept per key"
    )
    presig_parallel: int = Field(
        default=4, ge=1, description="presign sessions run at once while refilling"
    )
    presig_batch: int = Field(
        default=8, ge=1, le=32, description="presignatures per presign session (DKLs23 batch)"
    )
    presig_low_water: int = Field(
        default=-1, description="refill at once below this (else when idle); -1: target/4"
    )
    pool_interval: float = Field(
        default=0.5, gt=0, description="seconds between pool/health sweeps"
    )
    sign_lease: float = Field(
        default=15.0,
        gt=0,
        description="seconds a coordinator holds a claimed sign request without renewing "
        "it; then any coordinator resumes it (issue 14)",
    )
    queue_poll: float = Field(
        default=1.0, gt=0, description="seconds between the job-queue worker's claims"
    )
    queue_batch: int = Field(
        default=16, ge=1, description="sign requests the worker claims at most per poll"
    )
    instance_name: str = Field(
        default="",
        description="prefix of this coordinator's instance id in leases (empty: the host "
        "name); the id adds the pid and a random part, new at every start",
    )
    shared_pools: str = Field(
        default="auto",
        pattern="^(auto|memory|database)$",
        description="where the preprocessing pools live: memory (one coordinator), "
        "database (shared by every coordinator on it), auto: database on PostgreSQL",
    )
    approval_ttl: float = Field(
        default=24 * 3600.0, gt=0, description="pending_approval requests expire after this"
    )
    console_rp_id: str = Field(
        default="localhost", description="the treasury console's WebAuthn RP id (a domain)"
    )
    console_origins: str = Field(
        default="",
        description="origins the console accepts passkey ceremonies from (comma-separated); "
        "empty: this request's origin when its host is the RP id (development)",
    )
    cluster_id: str = Field(
        default="tpwc-dev", description="named in every checkpoint; the governance's when installed"
    )
    db_busy_timeout: float = Field(
        default=5.0, gt=0, description="seconds a SQLite writer waits for the write lock"
    )
    db_migrate: bool = Field(
        default=True,
        description="migrate the database schema to the newest revision at start; false: "
        "refuse to start unless it is there already (an operator runs `python -m api db "
        "upgrade` first, e.g. with a role the service itself lacks: DDL rights)",
    )
    log_level: str = Field(default="INFO", description="log level (--log-level wins)")
    coordinator_pin_file: Path | None = Field(
        default=None, description="file holding the coordinator token's user PIN (production)"
    )
    coordinator_pin: SecretStr | None = Field(
        default=None, description="the PIN itself (else the dev-only file data_dir/hsm.pin)"
    )
    # HTTP semantics and limits (api.idempotency, api.limits; docs/DESIGN.md "API conventions")
    retry_after: float = Field(
        default=1.0, gt=0, description="seconds a 202's Retry-After asks a poller to wait"
    )
    idempotency_ttl: float = Field(
        default=24 * 3600.0, gt=0, description="an Idempotency-Key's record is deleted after this"
    )
    max_sign_request_bytes: int = Field(
        default=256 * 1024, ge=1, description="POST /v1/sign-requests body limit (bytes)"
    )
    max_governance_bytes: int = Field(
        default=1024 * 1024, ge=1, description="/v1/governance, /v1/policy/... body limit"
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1, description="body limit of every other route (bytes)"
    )
    rate_limit_credential: str = Field(
        default="300/second", description='per credential ("": off), `limits` notation'
    )
    rate_limit_address: str = Field(
        default="600/second", description="per client address, every /v1 request"
    )
    rate_limit_auth_failures: str = Field(
        default="20/minute", description="failed authentications per client address"
    )
    # credentials (api.auth)
    credential_cache_ttl: float = Field(
        default=1.0,
        ge=0,
        description="seconds a valid credential is remembered; a revocation takes effect "
        "at most this late (0: every request reads the database)",
    )
    # webhooks (api.webhooks)
    webhooks_enabled: bool = Field(default=True, description="run the webhook delivery worker")
    webhook_poll_interval: float = Field(
        default=0.5, gt=0, description="seconds between delivery worker sweeps"
    )
    webhook_timeout: float = Field(default=10.0, gt=0, description="seconds per delivery POST")
    webhook_max_attempts: int = Field(
        default=8, ge=1, description="attempts per delivery before it is marked failed"
    )
    webhook_backoff_base: float = Field(
        default=5.0, gt=0, description="first retry delay; doubled per attempt"
    )
    webhook_backoff_max: float = Field(
        default=3600.0, gt=0, description="longest delay between two attempts"
    )
    webhook_allow_loopback: bool = Field(
        default=False,
        description="development only: allow webhook URLs on loopback addresses",
    )
    # mutual TLS to the signer nodes (custody.tls; docs/SECURITY.md "Transport: mutual TLS")
    dev: bool = Field(
        default=False,
        description="development only: allow plain HTTP to the nodes (serve --dev)",
    )
    node_tls_ca_file: Path | None = Field(
        default=None, description="CA of the nodes' certificates; default data_dir/tls/ca.pem"
    )
    node_tls_cert_file: Path | None = Field(
        default=None,
        description="the coordinator's client certificate; default data_dir/tls/client.crt",
    )
    node_tls_key_file: Path | None = Field(
        default=None, description="its private key (0600); default data_dir/tls/client.key"
    )

    def __init__(self, data_dir: str | Path | None = None, **kw: Any) -> None:
        if data_dir is not None:
            kw["data_dir"] = data_dir
        super().__init__(**kw)

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        self.data_dir = Path(self.data_dir)
        if self.presig_low_water < 0:
            self.presig_low_water = self.presig_target // 4
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'coordinator.db'}"
        tls_dir = self.data_dir / "tls"
        if self.node_tls_ca_file is None and (tls_dir / "ca.pem").is_file():
            self.node_tls_ca_file = tls_dir / "ca.pem"
        if self.node_tls_cert_file is None and (tls_dir / "client.crt").is_file():
            self.node_tls_cert_file = tls_dir / "client.crt"
        if self.node_tls_key_file is None and (tls_dir / "client.key").is_file():
            self.node_tls_key_file = tls_dir / "client.key"
        return self

    @property
    def node_tls(self) -> bool:
        """Whether the coordinator calls the nodes over mutual TLS (CA, certificate, key)."""
        return None not in (self.node_tls_ca_file, self.node_tls_cert_file, self.node_tls_key_file)

    def node_tls_context(self) -> ssl.SSLContext | None:
        """The TLS 1.3 client context for node calls (:func:`custody.tls.client_context`),
        or ``None`` without TLS material. ValueError names the file that does not load."""
        if not self.node_tls:
            return None
        assert self.node_tls_ca_file and self.node_tls_cert_file and self.node_tls_key_file
        mode = self.node_tls_key_file.stat().st_mode & 0o777
        if mode & 0o077:
            raise ValueError(f"{self.node_tls_key_file} is mode {mode:o}: it must be 0600")
        try:
            return tls.client_context(
                self.node_tls_ca_file, self.node_tls_cert_file, self.node_tls_key_file
            )
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"node TLS material does not load: {exc}") from None

    def transport_refusal(self) -> str | None:
        """Why ``serve`` must not start (plain HTTP to the nodes outside ``dev``), or None."""
        if self.node_tls or self.dev:
            return None
        return (
            f"no TLS material for the node calls ({self.data_dir / 'tls'}/ca.pem, client.crt, "
            "client.key, or CUSTODY_NODE_TLS_*_FILE): the coordinator calls nodes only over "
            "mutual TLS; plain HTTP only with --dev (development)"
        )

    @property
    def legacy_key_path(self) -> Path:
        """Where the key file was before it moved into the token (refused if present)."""
        return self.data_dir / "coordinator_key"

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None) -> Settings:
        """The settings from ``CUSTODY_*`` (``data_dir`` overrides ``CUSTODY_DATA_DIR``)."""
        return cls(data_dir)
