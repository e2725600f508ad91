"""Projections: runners that follow the ledger's notification log and keep the read models
(``point_balance``, ``point_usage``, ``vto_job``, ``gallery``, ``project_stats``) exactly
up to date, the read-your-writes wait, rebuilds, lag, and the ledger audit.

May import: ``ledger`` and ``infra``. Never ``pipeline``, ``generator_worker`` or ``command_api``."""
