"""The generator worker: try-on generation backends (``generation``) and the job pipeline's
processes (``pipeline``: outbox relay, workers, result ingestor, progress recorder, sweeper,
and the job messages they exchange).

May import: ``ledger``, ``infra`` and ``projections`` (``generation`` itself needs only
``infra.settings``). Never ``command_api``."""
