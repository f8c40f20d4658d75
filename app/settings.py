"""All configuration, read from `LETHE_*` environment variables (one class, no other source)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
CONCEPTWORLD_DIR = REPO_ROOT / "workers" / "conceptworld" / "shipped" / "model"
# The engine's autocast choice (workers/engine/gpu.py); here so torch-free code can name it.
Precision = Literal["auto", "float32", "bfloat16"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LETHE_", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("data")
    # Empty means "embedded": a SQLite file and a SQLite-backed Celery broker under data_dir.
    database_url: str = ""
    broker_url: str = ""
    allowed_model_root: Path = Path("models")
    conceptworld_dir: Path = CONCEPTWORLD_DIR
    engine_module: str = "workers.engine.service_api"  # tests point this at a stand-in engine
    # A worker process loads the built-in model and its evaluation baseline when it starts,
    # so the first takedown does not pay for them.
    worker_warm_up: bool = True
    # The engine's autocast dtype: "auto" = bf16 on CUDA and on CPUs with native bf16
    # (AVX512-BF16), else float32 (workers/engine/gpu.py). Weights and versions stay float32.
    precision: Precision = "auto"
    # Builds a version's diffusers folder for export (worker side; torch).
    export_module: str = "workers.engine.export"

    artifact_backend: Literal["local", "s3"] = "local"
    s3_bucket: str = "lethe-artifacts"
    s3_endpoint_url: str | None = None
    s3_prefix: str = "versions"

    max_body_bytes: int = 64 * 1024  # a takedown is a few hundred bytes; 64 KiB is generous
    max_merge: int = Field(default=8, ge=1)  # takedowns folded into one erasure step
    max_attempts: int = Field(default=3, ge=1)  # deliveries before a job is declared crashed
    lease_seconds: float = 30.0  # a job whose heartbeat is older than this is presumed dead
    heartbeat_seconds: float = 5.0
    reconcile_seconds: float = 5.0
    lost_message_seconds: float = 30.0  # a queued job unclaimed this long is re-enqueued
    # A preview/export left `running` this long lost its worker: re-sent (or failed after
    # LETHE_MAX_ATTEMPTS deliveries) by the reconciler.
    preview_stale_seconds: float = 600.0
    progress_min_interval: float = 0.5  # throttle for stored progress events
    # Idempotency-Key: a request `in_flight` this long lost its process and its key may be
    # taken anew; a key is kept this long (24 h, as Stripe), then pruned and free again.
    idempotency_in_flight_seconds: float = Field(default=300.0, gt=0)
    idempotency_ttl_seconds: float = Field(default=86400.0, gt=0)
    seed: int = 0

    gate_max_forget_acc: float = 0.05  # per erased concept, fraction of samples still recognised
    gate_min_related_retention: float = 0.80  # vs the parent version, related concepts
    gate_min_general_retention: float = 0.90  # vs the parent version, unrelated concepts
    # A model without a judge reports {"evaluated": false}; refuse such versions unless told.
    gate_require_evaluation: bool = True

    # Compliance (docs/compliance.md). An admin key given here is ensured at start (>= 32 chars).
    admin_key: str = ""
    # HMAC key for export manifests and for webhooks sent to a takedown's callback_url.
    signing_secret: str = ""
    # How to contest a decision (DSA Art. 17(3)(f)), by legal basis or "default" (JSON, e.g.
    # {"default": "Write to appeals@example.com"}); app/services/decisions.py has ours.
    redress_info: dict[str, str] = {}
    # Days to answer per legal basis, overriding the defaults (JSON, e.g. {"dmca": 5}).
    due_days: dict[str, int] = {}
    purge_grace_seconds: float = 30 * 86400.0  # quarantined versions are purged after this
    auto_purge: bool = True
    # The zone a DMCA counter-notice's business days are counted in (services/business_days.py):
    # the designated agent's. An IANA name.
    business_timezone: str = "America/New_York"
    # An artifact no version names (its attempt lost its lease or died before registering it)
    # is deleted this long after its job ended (services/orphans.py).
    orphan_grace_seconds: float = 3600.0
    # Hosts or CIDRs webhooks may reach although they are loopback/private (e.g. "10.0.0.0/8").
    webhook_allowlist: list[str] = []
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_seconds: float = 2.0  # base of the exponential backoff (full jitter)
    webhook_timeout_seconds: float = 5.0
    webhook_poll_seconds: float = 1.0

    log_json: bool = True
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_embedded_defaults_in_production(self) -> Settings:
        if self.env == "production" and (not self.database_url or not self.broker_url):
            raise ValueError("LETHE_DATABASE_URL and LETHE_BROKER_URL are required in production")
        if self.env == "production" and (len(self.admin_key) < 32 or len(self.signing_secret) < 32):
            raise ValueError("LETHE_ADMIN_KEY and LETHE_SIGNING_SECRET (each at least 32 "
                             "characters) are required in production")
        if self.admin_key and len(self.admin_key) < 32:
            raise ValueError("LETHE_ADMIN_KEY must be at least 32 characters")
        try:
            ZoneInfo(self.business_timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # "America": a folder
            raise ValueError(f"LETHE_BUSINESS_TIMEZONE {self.business_timezone!r} is not an IANA "
                             "time zone (e.g. America/New_York)") from exc
        return self

    @property
    def hmac_key(self) -> bytes:
        """The signing secret; development without one gets a fixed, clearly-labelled dev key."""
        return (self.signing_secret or "lethe-development-signing-secret-not-for-production"
                ).encode()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'lethe.db').resolve()}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def previews_dir(self) -> Path:
        return self.data_dir / "previews"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"


@lru_cache
def get_settings() -> Settings:
    return Settings()
