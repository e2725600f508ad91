"""The one settings object of every VTO process (environment variables, prefix ``VTO_``).

With no variable set, everything runs on the embedded defaults (DESIGN.md section 5): an
embedded PostgreSQL in the data dir, an in-process queue, local files and the offline
generator. Outside that embedded mode the settings refuse insecure defaults.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.policy import DEFAULT_CREDIT_COSTS, DEFAULT_TICKET_KINDS, PricingPolicy

INSECURE_SECRETS = frozenset({"", "secret", "changeme", "change-me", "dev", "test"})
# Beyond the job timeout, what a worker may spend on one job request: checking the job, storing
# its outputs and waiting for the broker to take its result (part of its max poll interval).
WORKER_JOB_MARGIN_S = 30.0
# The Standard Webhooks retry schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h,
# 20 h, 24 h (the delay before each attempt).
WEBHOOK_RETRY_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VTO_", extra="ignore")

    # --- storage and database -------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL (postgresql://user:pass@host:port/db). Unset: embedded "
        "PostgreSQL (pgserver) in data_dir.",
    )
    data_dir: Path = Field(default=Path(".vto"), description="Embedded database, files, secrets.")
    # Connection budget (README "Connection budget"): every process's pools are bounded, and a
    # request that finds its pool exhausted waits db_pool_timeout_s, then gets 503 + Retry-After.
    db_pool_size: int = Field(
        default=10, ge=1, le=200, description="Catalog (SQLAlchemy) connections an API process keeps open."
    )
    db_max_overflow: int = Field(
        default=5, ge=0, le=200, description="Catalog connections opened beyond db_pool_size under load."
    )
    db_pool_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="How long a request waits for a pooled connection (catalog or ledger) before 503.",
    )
    ledger_pool_size: int = Field(
        default=2, ge=1, le=200, description="Ledger (event store) connections a process keeps open."
    )
    ledger_max_overflow: int = Field(
        default=3, ge=0, le=200, description="Ledger connections opened beyond ledger_pool_size under load."
    )

    # --- ledger ----------------------------------------------------------------------------
    ticket_kinds: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_TICKET_KINDS),
        description='Ticket type -> job kind it pays for, JSON, e.g. {"lookbook": "image"}. '
        "Order is the deduction priority among tickets.",
    )
    credit_costs: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_CREDIT_COSTS),
        description='Credits a job of each kind costs, JSON, e.g. {"image": 1, "video": 5}.',
    )
    idempotency_key_ttl_s: int = Field(
        default=24 * 3600, ge=60, description="How long a client Idempotency-Key is remembered."
    )
    snapshot_interval: int = Field(
        default=500,
        ge=1,
        description="Events between snapshots of an account; an account holding more entries "
        "(open reservations, remembered jobs and keys) is snapshotted every power of two times "
        "this that covers them (a snapshot's cost grows with what it holds).",
    )
    account_cache_size: int = Field(
        default=10_000, ge=1, description="Accounts kept in memory by each process."
    )
    command_max_attempts: int = Field(
        default=20, ge=1, description="Attempts of a ledger command on version conflicts."
    )
    ledger_append_batch_max: int = Field(
        default=64,
        ge=1,
        description="Most commands whose ledger appends are committed in one transaction (group "
        "commit of the appends that queue while one is written; 1: a transaction per command).",
    )
    job_timeout_s: float = Field(
        default=900.0, gt=0, description="Reservations older than this are failed and refunded."
    )

    # --- queue and pipeline ----------------------------------------------------------------
    kafka_bootstrap_servers: str | None = None
    kafka_api_version: str | None = Field(
        default=None, description='Broker API version, e.g. "0.9"; unset: auto-detect.'
    )
    kafka_topic_prefix: str = Field(
        default="vto",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="Topics are <prefix>.jobs.requested, .results, .progress, .dead-letter.",
    )
    worker_group: str = Field(default="vto-worker", min_length=1, description="Workers' consumer group.")
    ingestor_group: str = Field(
        default="vto-ingestor", min_length=1, description="Ingestor's and progress recorder's group."
    )
    worker_max_attempts: int = Field(
        default=3, ge=1, description="Attempts of a job on retryable generation errors."
    )
    worker_retry_backoff_s: float = Field(
        default=1.0, ge=0, description="First back-off between attempts (doubled each time)."
    )
    worker_retry_backoff_max_s: float = Field(default=30.0, ge=0, description="Longest back-off.")
    queue_poll_timeout_s: float = Field(default=0.5, gt=0, description="How long a consumer poll waits.")
    # Kafka consumers (kafka-python). A member must poll again within its max poll interval or
    # its group evicts it and gives its partitions to another member. The worker takes few
    # records per poll and its interval follows the job timeout (``worker_poll_interval_ms``);
    # the ingestor and the progress recorder handle a message in milliseconds.
    kafka_session_timeout_ms: int = Field(
        default=10_000,
        ge=1_000,
        description="A member whose heartbeats stop this long leaves its group (a crashed process). "
        "On a broker older than 0.10.1 also how long a rebalance waits for a member busy with a job.",
    )
    kafka_heartbeat_interval_ms: int = Field(
        default=3_000, ge=100, description="Heartbeats (a background thread), below the session timeout."
    )
    kafka_max_poll_records: int = Field(
        default=100, ge=1, description="Records per poll of the ingestor and the progress recorder."
    )
    kafka_max_poll_interval_ms: int = Field(
        default=60_000,
        ge=1_000,
        description="Longest gap between the ingestor's (or recorder's) polls (a batch of ledger commands).",
    )
    worker_max_poll_records: int = Field(default=1, ge=1, description="Job requests a worker takes per poll.")
    worker_max_poll_interval_ms: int | None = Field(
        default=None,
        ge=1_000,
        description="Longest gap between a worker's polls. Unset: worker_max_poll_records x "
        "(job_timeout_s + WORKER_JOB_MARGIN_S); at least worker_max_poll_records x job_timeout_s.",
    )
    sweeper_interval_s: float = Field(default=5.0, gt=0, description="Seconds between sweeper passes.")
    relay_poll_interval_s: float = Field(
        default=1.0, gt=0, description="Outbox relay's poll fallback beside LISTEN."
    )
    projection_poll_interval_s: float = Field(
        default=1.0, gt=0, description="Projection runners' poll fallback beside LISTEN."
    )
    read_your_writes_timeout_s: float = Field(
        default=5.0, gt=0, description="How long a command waits for the read models to show it."
    )

    # --- files -----------------------------------------------------------------------------
    s3_bucket: str | None = Field(default=None, description="Unset: local files in data_dir/files.")
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    signed_url_ttl_s: int = Field(default=3600, ge=10)
    max_upload_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest accepted upload (multipart routes)."
    )
    max_json_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Largest request body of every other route (413 above): room for the longest "
        "text field (marketing copy, 20,000 characters) even with every character \\u-escaped.",
    )

    # --- auth ------------------------------------------------------------------------------
    jwt_secret: SecretStr | None = None
    public_base_url: str = Field(default="", description="Prefix of links the API returns.")
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    kakao_client_id: str | None = None
    kakao_client_secret: SecretStr | None = None

    # --- failed-login throttling (command_api/auth/throttle.py; shared through PostgreSQL) ---
    login_window_s: int = Field(
        default=15 * 60, ge=1, description="Window in which failed logins are counted (fixed, per key)."
    )
    login_max_failures_per_account: int = Field(
        default=5, ge=1, description="Failed logins per email in a window; further attempts get 429."
    )
    login_max_failures_per_address: int = Field(
        default=30, ge=1, description="Failed logins per client address in a window; then 429."
    )

    # --- mail (verification and password-reset links; infra/mail.py) -----------------------
    smtp_url: SecretStr | None = Field(
        default=None,
        description="smtp://[user:pass@]host[:port] (STARTTLS when offered; ?starttls=required "
        "or ?starttls=off), smtps://... (implicit TLS). Unset: each message is written as an "
        ".eml file under data_dir/mail and its link logged.",
    )
    mail_from: str = Field(default="VTO <no-reply@localhost>", min_length=3, description="From header.")
    smtp_timeout_s: float = Field(default=10.0, gt=0, description="SMTP connect and command timeout.")
    app_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The web app that links in mail open: <app_url>/verify-email?token=..., "
        "<app_url>/reset-password?token=...; the page posts the token to the API.",
    )
    email_verification_ttl_s: int = Field(
        default=24 * 3600, ge=60, description="How long a verification (or email change) link works."
    )
    password_reset_ttl_s: int = Field(default=3600, ge=60, description="How long a reset link works.")
    mail_min_interval_s: int = Field(
        default=60, ge=0, description="At most one mail of a kind per account in this many seconds."
    )

    # --- webhooks (pipeline/webhooks; docs/webhooks.md) -------------------------------------
    webhook_allow_private_networks: bool = Field(
        default=False,
        description="Let webhooks go to loopback, private, link-local, unique-local, multicast and "
        "unspecified addresses (local use and tests). Off: such URLs are refused (422 at job "
        "creation, and again at every delivery).",
    )
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: list(WEBHOOK_RETRY_SCHEDULE_S),
        min_length=1,
        max_length=50,
        description="Delay before each attempt of a webhook, the first after the event (JSON list of "
        "seconds); after the last one fails the delivery has failed. Default: the Standard Webhooks "
        "schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h).",
    )
    webhook_retry_jitter: float = Field(
        default=0.1,
        ge=0.0,
        le=0.5,
        description="Each retry delay is moved by up to this fraction, at random.",
    )
    webhook_timeout_s: float = Field(
        default=15.0, gt=0, le=120, description="Longest a webhook attempt may take, connecting included."
    )
    webhook_response_max_bytes: int = Field(
        default=1024, ge=0, le=65536, description="Bytes of a receiver's response body read (and logged)."
    )
    webhook_max_in_flight: int = Field(
        default=256, ge=1, le=10_000, description="Webhook attempts one process makes at once."
    )
    webhook_max_in_flight_per_account: int = Field(
        default=4,
        ge=1,
        le=1_000,
        description="Webhook attempts one process makes at once for one account (a slow endpoint "
        "holds at most this many).",
    )
    webhook_progress_interval_s: float = Field(
        default=0.5, gt=0, description="At most one job.progress webhook per job in this many seconds."
    )
    webhook_poll_interval_s: float = Field(
        default=1.0, gt=0, description="The webhook dispatcher's poll fallback beside LISTEN."
    )
    webhook_secret_overlap_s: int = Field(
        default=24 * 3600,
        ge=0,
        description="How long a rotated webhook secret keeps signing beside the new one.",
    )
    webhook_link_ttl_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description="Lifetime of the signed output links in a webhook's body (it is sent unchanged on "
        "every retry, so they outlive the retry schedule; 7 days is the most S3 allows).",
    )
    webhook_retention_days: int = Field(
        default=30, ge=1, description="Finished webhook deliveries (and their attempts) are kept this long."
    )
    webhooks_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="vto webhooks serves its Prometheus metrics on this port; unset: not served.",
    )

    # --- generation ------------------------------------------------------------------------
    generator: str = Field(default="offline")
    generator_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    gpu_model_dir: Path | None = Field(
        default=None,
        description="Local directory of the GPU image backend's weights in the published layout "
        "(qwen-image-edit: Qwen/Qwen-Image-Edit-2509; catvton: SD 1.5 inpainting + zhengchong/CatVTON). "
        "Read with local_files_only and HF_HUB_OFFLINE=1: nothing is downloaded.",
    )
    gpu_device: str = Field(
        default="auto", min_length=1, description="auto (CUDA when present), cuda, cuda:N or cpu."
    )
    gpu_dtype: str = Field(
        default="auto",
        pattern=r"^(auto|bf16|bfloat16|fp16|float16|fp32|float32)$",
        description="auto: bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU.",
    )
    gpu_steps: int | None = Field(
        default=None, ge=1, le=200, description="Denoising steps; unset: the backend's published default."
    )
    gpu_guidance: float | None = Field(
        default=None, ge=0.0, le=30.0, description="Guidance scale; unset: the backend's published default."
    )
    gpu_lora_path: Path | None = Field(
        default=None, description="Optional LoRA safetensors file fused at start (e.g. a few-step LoRA)."
    )
    gpu_batch: int = Field(
        default=1, ge=1, le=64, description="Outputs a GPU backend runs through one denoising batch."
    )
    video_model_dir: Path | None = Field(
        default=None,
        description="Local Wan 2.x image-to-video directory (Diffusers layout) for the wan backend.",
    )
    video_image_generator: str = Field(
        default="qwen-image-edit",
        description="The image backend whose try-on images the wan backend animates.",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="vto worker serves its Prometheus metrics (GPU memory, images/s, batches) on this port; "
        "unset: not served.",
    )

    @property
    def embedded(self) -> bool:
        """True when running on the embedded defaults (no external database configured)."""
        return self.database_url is None

    @model_validator(mode="after")
    def _refuse_insecure_defaults(self) -> Settings:
        if not self.embedded:
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            if secret.lower() in INSECURE_SECRETS or len(secret) < 32:
                raise ValueError(
                    "VTO_JWT_SECRET must be set to a random value of at least 32 characters "
                    "when VTO_DATABASE_URL points at a non-embedded database"
                )
        self.pricing()  # validates ticket kinds and costs
        return self

    @model_validator(mode="after")
    def _webhook_delays_are_delays(self) -> Settings:
        if any(not 0 <= delay <= 7 * 24 * 3600 for delay in self.webhook_retry_schedule_s):
            raise ValueError("VTO_WEBHOOK_RETRY_SCHEDULE_S: each delay is between 0 and 604800 seconds")
        return self

    @model_validator(mode="after")
    def _consumers_fit_long_jobs(self) -> Settings:
        if self.kafka_heartbeat_interval_ms >= self.kafka_session_timeout_ms:
            raise ValueError("VTO_KAFKA_HEARTBEAT_INTERVAL_MS must be below VTO_KAFKA_SESSION_TIMEOUT_MS")
        least = self.worker_max_poll_records * self.job_timeout_s * 1000
        if self.worker_max_poll_interval_ms is not None and self.worker_max_poll_interval_ms < least:
            raise ValueError(
                "VTO_WORKER_MAX_POLL_INTERVAL_MS must be at least VTO_WORKER_MAX_POLL_RECORDS x "
                f"VTO_JOB_TIMEOUT_S ({least:.0f} ms): a worker abandons a job only at the job timeout"
            )
        return self

    def worker_poll_interval_ms(self) -> int:
        """The worker's max poll interval: set, or derived from the job timeout (each record
        may take the whole timeout, plus the margin to load, store and publish)."""
        if self.worker_max_poll_interval_ms is not None:
            return self.worker_max_poll_interval_ms
        return round(self.worker_max_poll_records * (self.job_timeout_s + WORKER_JOB_MARGIN_S) * 1000)

    def pricing(self) -> PricingPolicy:
        return PricingPolicy(ticket_kinds=self.ticket_kinds, credit_costs=self.credit_costs)


def jwt_secret(settings: Settings) -> str:
    """The configured secret, or (embedded mode only) one generated once in the data dir."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    path = settings.data_dir / "jwt_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
