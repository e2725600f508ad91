"""The one settings object of every VTO process (environment variables, prefix ``VTO_``).

With no variable set, everything runs on the embedded defaults (docs/configuration.md): an
embedded PostgreSQL in the data dir, an in-process queue, local files and the offline
generator. Outside that embedded mode the settings refuse insecure defaults. The table of
docs/configuration.md is ``markdown_table()`` (a test keeps it current).
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ledger.policy import DEFAULT_CREDIT_COSTS, DEFAULT_TICKET_KINDS, PricingPolicy

_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+", re.ASCII)
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
    # Connection budget (docs/operations.md): every process's pools are bounded, and a
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
    db_plan_cache_mode: Literal["auto", "force_generic_plan", "force_custom_plan"] = Field(
        default="force_generic_plan",
        description="PostgreSQL's plan_cache_mode on an API process's catalog connections. A statement "
        "run five times on a connection is prepared (psycopg); with auto, PostgreSQL plans the job "
        "order's read afresh on every call once the users' streams grow (it guesses that many events "
        "are read; none are): 3-4 times its CPU (benchmarks/plan_cache_bench.py). auto: the server's "
        "own choice.",
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
    signup_credits: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="Credits granted once per account, and once per email address ever, when the "
        "account's address is first verified (a verification link, a password reset, a provider "
        "sign-in with a verified email): a promotional lot. 0: none.",
    )
    signup_credits_expire_days: int = Field(
        default=30,
        ge=0,
        le=3660,
        description="Days until sign-up credits expire, from their grant. 0: they never expire.",
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
    ledger_contention_window_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="After a command of a user collides with another process's append, how long "
        "that user's commands are decided under the event store's lock (in turn, never colliding) "
        "instead of optimistically; extended by as much whenever one of them finds events of the "
        "user that another process wrote meanwhile; at least twice as long as the process last took "
        "to load the user's account (at most 60 s), for accounts that take seconds to load.",
    )
    job_timeout_s: float = Field(
        default=900.0, gt=0, description="Reservations older than this are failed and refunded."
    )
    job_max_deadline_s: int = Field(
        default=86_400,
        gt=0,
        description="The longest deadline a job order may set (Cancel-After header or deadline_s); "
        "a job not finished by its deadline is canceled and refunded (docs/job-deadlines.md).",
    )

    # --- queue and pipeline ----------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="Kafka brokers, host:port[,host:port]; unset: the in-process queue."
    )
    kafka_api_version: str | None = Field(
        default=None,
        description='Pins the clients\' Kafka API version, e.g. "3.7". Unset (recommended): detected '
        "(kafka-python negotiates each request with a broker from 0.10; an older one, such as 0.9, is "
        "recognised by a probe). From 0.11: idempotent producers and record headers (docs/kafka.md).",
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
        description="A member whose heartbeats stop this long leaves its group (a crashed process): how "
        "fast a killed worker's partitions move. From Kafka 0.10.1 a rebalance waits for a member busy "
        "with a job up to its max poll interval; before (0.9), only this long.",
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
    projection_batch_size: int = Field(
        default=500, ge=1, le=100_000, description="Most events a projection runner applies per transaction."
    )
    projection_catch_up_batch_size: int = Field(
        default=5000,
        ge=1,
        le=100_000,
        description="Most events a projection runner applies in one transaction while it is behind "
        "(its last batch was full); at least projection_batch_size.",
    )
    projection_batch_interval_s: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Under a steady stream of appends, the least time between the starts of two live "
        "projection batches while no reader waits on them: appends arriving faster share a batch (one "
        "transaction, fewer round trips), and the read models lag the ledger by up to this much; an "
        "append after a quiet spell is not held back. 0: a batch as soon as one is due.",
    )
    projection_wanted_batch_interval_s: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="The same while a reader waits for a position the projections have not reached "
        "(read-your-writes: the API tells the runners, NOTIFY projections_wanted): such a wait lasts at "
        "most this much longer under load. When it is not shorter than projection_batch_interval_s, readers "
        "bring nothing forward.",
    )
    projection_rebuild_from: int = Field(
        default=100_000,
        ge=0,
        description="A started projector this many events behind or more, and a third of the log or "
        "more, catches up by a rebuild (several times faster than batch by batch); 0: never.",
    )
    read_your_writes_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long a read waits for the read models to include the caller's newest ledger event.",
    )

    # --- files -----------------------------------------------------------------------------
    s3_bucket: str | None = Field(default=None, description="Unset: local files in data_dir/files.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, R2...); unset: AWS S3."
    )
    s3_region: str | None = Field(default=None, description="The bucket's region.")
    signed_url_ttl_s: int = Field(
        default=3600,
        ge=10,
        le=7 * 24 * 3600,
        description="How long a signed file link works (S3: at most 7 days).",
    )
    deleted_account_retention_days: int = Field(
        default=30,
        ge=0,
        le=3650,
        description="Days a deleted account's uploads (assets, its projects' products) and job outputs stay "
        "in storage before the sweeper erases them (0: at its next pass). Objects of deleted assets, "
        "products, projects and collections go once no job ordered before can need them (job_timeout_s).",
    )
    max_upload_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest accepted upload (multipart routes)."
    )
    upload_workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Uploads an API process decodes and re-encodes at once (a bounded pool, outside any "
        "database connection or lock); the others wait for a turn. Memory: see upload_max_pixels.",
    )
    upload_max_pixels: int = Field(
        default=40_000_000,
        ge=64 * 64,
        le=80_000_000,
        description="Largest image accepted (width x height; refused from its header, before decoding). "
        "Decoding and re-encoding one holds at most about 8 bytes a pixel (two copies of 4-byte pixels) "
        "plus twice max_upload_bytes: 340 MB at 40,000,000 pixels; an API process's uploads hold at most "
        "upload_workers times that (docs/security-uploads-and-headers.md).",
    )
    upload_max_concurrent_per_account: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Uploads one account may have in progress in an API process; more: 429 with Retry-After.",
    )
    upload_queue_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="How long an upload waits for a decoding worker before 503 with Retry-After.",
    )
    max_json_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Largest request body of every other route (413 above): room for the longest "
        "text field (marketing copy, 20,000 characters) even with every character \\u-escaped.",
    )

    # --- auth ------------------------------------------------------------------------------
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="Signs tokens and file links; unset: generated in data_dir (embedded mode only; "
        "at least 32 random characters are required with VTO_DATABASE_URL).",
    )
    public_base_url: str = Field(
        default="",
        description="Base of the links the API returns (file and output URLs, problem types), e.g. "
        "https://vto.example.com; unset: the base URL each request came to.",
    )
    google_client_id: str | None = Field(default=None, description="Google sign-in; unset: not offered.")
    google_client_secret: SecretStr | None = Field(default=None, description="Google sign-in's secret.")
    kakao_client_id: str | None = Field(default=None, description="Kakao sign-in; unset: not offered.")
    kakao_client_secret: SecretStr | None = Field(default=None, description="Kakao sign-in's secret.")

    # --- sharing (command_api/projects; invitations by address) -----------------------------
    share_invitation_ttl_s: int = Field(
        default=14 * 24 * 3600, ge=60, description="How long an invitation to a project may be accepted."
    )
    share_invitations_per_window: int = Field(
        default=30,
        ge=1,
        description="Invitations one account may send in share_invitation_window_s; then 429 "
        "with Retry-After.",
    )
    share_invitation_window_s: int = Field(
        default=3600, ge=1, description="The window of share_invitations_per_window (sliding)."
    )

    # --- HTTP surface (command_api/app.py, command_api/ops; docs/security-uploads-and-headers.md)
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose browser pages may call the API, comma-separated "
        'or a JSON list, e.g. "https://app.example.com,http://localhost:3000"; "*" for any. Empty (the '
        "default): CORS is off and browsers refuse cross-origin calls.",
    )
    ops_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the operators: /metrics answers only with it, and /readyz says what "
        "is not ready only to it (everyone else gets a plain 200 or 503). Unset: /metrics is off.",
    )

    # --- client addresses (command_api/app.py; docs/security-accounts-and-sessions.md) -----
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Addresses or networks (comma-separated, e.g. 10.0.0.0/8,192.0.2.1) of the "
        "reverse proxies in front of the API: only their X-Forwarded-For (and X-Forwarded-Proto) "
        "is believed, read from the right. Empty (the default): no header is believed, the TCP "
        "peer is the client.",
    )

    # --- password throttling (command_api/auth/throttle.py; shared through PostgreSQL) -------
    login_window_s: int = Field(
        default=15 * 60, ge=1, description="Window in which failed logins are counted (fixed, per key)."
    )
    login_max_failures_per_account: int = Field(
        default=5, ge=1, description="Failed logins per email in a window; further attempts get 429."
    )
    login_max_failures_per_address: int = Field(
        default=30, ge=1, description="Failed logins per client address in a window; then 429."
    )

    reauthentication_max_age_s: int = Field(
        default=300,
        ge=30,
        le=3600,
        description="An account without a password may be deleted this long after signing in "
        "with its provider (the proof the owner is there; accounts with one give the password).",
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
    mail_window_s: int = Field(
        default=3600,
        ge=1,
        description="Window of the mail limits per recipient and per client address, and in which "
        "one address is sent one verification or email-change link whichever accounts ask.",
    )
    mail_max_per_recipient: int = Field(
        default=3, ge=1, description="Mails to one address in mail_window_s (every kind, every account)."
    )
    mail_max_per_client_address: int = Field(
        default=10, ge=1, description="Mails that one client address causes in mail_window_s."
    )
    register_window_s: int = Field(
        default=3600, ge=1, description="Window of the registration limit per client address."
    )
    register_max_per_address: int = Field(
        default=20,
        ge=1,
        description="Registrations (attempts) per client address in register_window_s; then 429.",
    )

    # --- API keys for servers (command_api/api_keys; docs/api-keys.md) ---------------------
    api_key_max_per_account: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Live API keys one account may hold; creating one more answers 409 too_many_api_keys.",
    )
    api_key_last_used_interval_s: int = Field(
        default=60,
        ge=0,
        le=86400,
        description="An API key's last_used_at is written at most once in this many seconds (0: on "
        "every request).",
    )
    api_key_jobs_per_minute: int = Field(
        default=60,
        ge=1,
        le=100_000,
        description="Job orders (POST /vto/jobs) one API key may make per minute, as a burst of this "
        "many then one every 60/n s; then 429 job_rate_limited. Access tokens are not limited by it.",
    )
    api_account_jobs_per_minute: int = Field(
        default=120,
        ge=1,
        le=100_000,
        description="Job orders per minute of all of one account's API keys together (the same rule).",
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
    balance_alert_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often the balance alerts (beside the webhook dispatcher) look for balances "
        "taken below their thresholds, and mail them.",
    )
    statement_max_days: int = Field(
        default=366,
        ge=1,
        le=3660,
        description="The longest period (from, to) a statement (GET /points/statement) or a usage report "
        "(GET /admin/usage, vto ledger report) covers; a longer one is answered 422 period_too_long.",
    )
    webhook_retention_days: int = Field(
        default=30, ge=1, description="Finished webhook deliveries (and their attempts) are kept this long."
    )
    # --- job progress, queue position and live events (docs/job-api.md) ---------------------
    queue_eta_window_s: float = Field(
        default=600.0,
        gt=0,
        description="A queued job's eta_s comes from the jobs started in this many seconds before now "
        "(null when none started in it).",
    )
    queue_position_exact_max: int = Field(
        default=1000,
        ge=1,
        description="A queued job's queue_position is counted exactly up to this many jobs ahead; past "
        "it, it is a lower bound (queue_position_exact false), so a poll costs the same however long "
        "the queue is.",
    )
    sse_keepalive_s: float = Field(
        default=15.0,
        gt=0,
        description="A live event stream (GET /vto/jobs/{id}/events) sends a keep-alive comment after "
        "this many seconds without an event; it also renews the stream's row for the per-account limit.",
    )
    sse_poll_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="The live event streams' poll of the job read models, a fallback beside LISTEN.",
    )
    sse_max_streams_per_account: int = Field(
        default=20,
        ge=1,
        description="Live event streams one account may hold open at once, over every API replica "
        "(429 too_many_streams beyond).",
    )

    webhooks_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="vto webhooks serves its Prometheus metrics on this port; unset: not served.",
    )

    # --- generation ------------------------------------------------------------------------
    generator: str = Field(
        default="offline",
        description="Generation backend: offline, qwen-image-edit, catvton or wan "
        "(generator_worker/README.md).",
    )
    generator_failure_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of generations that fail with a retryable error (tests and chaos runs).",
    )
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
    gpu_lora_scheduler: str = Field(
        default="auto",
        pattern=r"^(auto|lightning|base)$",
        description="qwen-image-edit with a LoRA: lightning installs Qwen-Image-Lightning's shift-3 "
        "scheduler (and its steps and guidance 1 where unset); base keeps the model's; auto: lightning when "
        "the LoRA file's name contains 'lightning'.",
    )
    gpu_batch: int = Field(
        default=1, ge=1, le=64, description="Outputs a GPU backend runs through one denoising batch."
    )
    gpu_offload: str = Field(
        default="none",
        pattern=r"^(none|model|sequential)$",
        description="none: the GPU models stay on the device; model: each moves to the device only while it "
        "runs (diffusers' model CPU offload, needs host memory for the weights); sequential: layer by "
        "layer (least device memory, slowest). The GPU image backend and Wan.",
    )
    gpu_vae_tiling: bool = Field(
        default=False,
        description="Decode (and encode) through the VAE in tiles: less peak memory, a little slower.",
    )
    video_model_dir: Path | None = Field(
        default=None,
        description="Local Wan 2.x image-to-video directory (Diffusers layout) for the wan backend.",
    )
    video_image_generator: str = Field(
        default="qwen-image-edit",
        description="The image backend whose try-on images the wan backend animates.",
    )
    video_image_offload: str = Field(
        default="model",
        pattern=r"^(none|model|sequential)$",
        description="How the wan backend's GPU image backend holds its models: model (default) keeps them in "
        "host memory and moves each to the device only while it runs, so they do not sit beside Wan; none "
        "keeps them on the device (memory for both).",
    )
    video_max_area: int | None = Field(
        default=None,
        ge=64 * 64,
        le=2048 * 2048,
        description="Pixels a Wan clip is generated at (the job's aspect, then resized to its size); unset: "
        "the model's (480x832 for Wan2.1 480P and Wan2.2-I2V-A14B, 720x1280 for Wan2.1 720P, 704x1280 for "
        "Wan2.2-TI2V-5B).",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="vto worker serves its Prometheus metrics (GPU memory, images/s, batches) on this port; "
        "unset: not served.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        """A comma-separated list or a JSON list; each an origin without path (``*``: any)."""
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, list):
            return value
        origins = [str(origin).strip().rstrip("/") for origin in value if str(origin).strip()]
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"VTO_CORS_ORIGINS: {origin!r} is not an origin (http(s)://host[:port], no path)"
                )
        return origins

    @field_validator("ops_token")
    @classmethod
    def _strong_ops_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("VTO_OPS_TOKEN must be at least 16 characters (a random value)")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        """Each entry an address or network (``ValueError`` otherwise), kept as a network."""
        if isinstance(value, str):
            value = value.replace(";", ",").split(",")
        if not isinstance(value, list | tuple):
            return value
        try:
            return tuple(
                str(ipaddress.ip_network(str(item).strip(), strict=False))
                for item in value
                if str(item).strip()
            )
        except ValueError as exc:
            raise ValueError(f"VTO_TRUSTED_PROXIES: {exc}") from None

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


def _shown(value: object) -> str:
    if value is None or value == "":
        return "unset"
    if isinstance(value, dict):
        return "`" + json.dumps(value) + "`"
    return f"`{value}`"


def markdown_table() -> str:
    """Every setting as a row of a Markdown table: variable, default, description."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `VTO_{name.upper()}` | {_shown(default)} | {description} |")
    return "\n".join(rows) + "\n"


TABLE_START = "<!-- settings table: generated by `uv run python -m infra.settings`; do not edit -->\n"
TABLE_END = "<!-- end of the settings table -->\n"


def with_table(document: str) -> str:
    """``document`` with the text between its table markers replaced by ``markdown_table()``."""
    head, rest = document.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}{markdown_table()}{TABLE_END}{tail}"


if __name__ == "__main__":  # rewrite the table of docs/configuration.md
    doc = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    doc.write_text(with_table(doc.read_text()))
