"""The job pipeline's ledger side: the processes that follow the ledger and write to it.

- ``relay``: the outbox relay; follows the ledger's notification log (a projection runner)
  and publishes each ``JobRequested`` to ``vto.jobs.requested`` once its reservation
  committed.
- ``ingestor``: applies each result of ``vto.jobs.results`` to the ledger: ``JobCompleted``,
  or ``JobFailed`` + ``Refunded``.
- ``sweeper``: fails and refunds the reservations that got no result within the job timeout.
- ``progress``: records the workers' progress messages in ``job_progress`` (no points move).
- ``webhooks``: the signed job webhooks (Standard Webhooks): a follower of the ledger, a
  watcher of ``job_progress`` and the sender that signs, posts and retries them
  (docs/webhooks.md; ``vto webhooks``, and inside ``vto serve``).
- ``messages``: the Kafka message contracts (requested, results, progress, dead letter) that
  the generator worker shares; ``consume``: the at-least-once consume loop the ingestor, the
  progress recorder and the worker share.

The generator worker (``generator_worker``) is the other side: it consumes job requests,
generates, and publishes results; the processes are wired together in
``generator_worker.runtime``.

May import: ``ledger``, ``infra`` and ``projections``. Never ``generator_worker`` or
``command_api``."""
