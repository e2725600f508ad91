"""The tables that no ORM model describes: the event store, whose layout ``eventsourcing``
fixes, and the tables the projections, the pipeline and the login throttle write with SQL.
The migrations alone define them; ``alembic check`` (``env.py``) leaves them out of its
comparison. A migration that adds such a table adds its name here."""

from __future__ import annotations

SQL_TABLES = frozenset(
    {
        # the event store (0001)
        "ledger_events",
        "ledger_snapshots",
        # read models and their tracking (0002, 0010)
        "projection_tracking",
        "point_balance",
        "point_usage",
        "point_reservation",
        "vto_job",
        "gallery",
        "project_stats",
        # the job pipeline (0005, 0011)
        "job_progress",
        "job_attempts",
        # the login throttle (0009)
        "login_throttle",
        # single-use OAuth states (0016)
        "oauth_states",
        # erasing stored objects (0014)
        "storage_erasures",
        "erased_accounts",
        # signed job webhooks (0019)
        "webhook_secrets",
        "webhook_jobs",
        "webhook_messages",
        "webhook_attempts",
        "webhook_endpoints_gone",
        # API keys for servers and their rate limits (0022)
        "api_keys",
        "api_rate_limits",
        # lots and sign-up credits (0020)
        "point_lot",
        "signup_credit_grants",
        # balance alerts (0021)
        "balance_alert_thresholds",
        "balance_alerts",
        # the open live event streams (0023)
        "job_event_streams",
    }
)
