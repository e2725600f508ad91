"""Signed job webhooks, per the Standard Webhooks specification (docs/webhooks.md).

A job may name a ``webhook`` URL (and a ``webhook_events_filter``) in its request, which the
ledger records in its ``JobRequested`` event. The dispatcher turns the job's events into
messages and delivers them, signed, at least once:

- ``events``: the event types, the filter, each message's stable id and its body;
- ``follower``: a projection runner on the ledger's notification log (like the outbox relay)
  that records the jobs asking for webhooks and a ``job.completed`` message for each finished
  job; and the progress watcher, which turns ``job_progress`` (the workers' progress messages)
  into ``job.started`` and ``job.progress`` messages, at most one every 500 ms per job;
- ``sender``: claims due messages (fairly, at most a few per account at once), signs and posts
  them, records each attempt and schedules the next one (the Standard Webhooks schedule);
- ``targets``: where a webhook may go: http(s) only, never a loopback, private, link-local,
  unique-local, multicast or unspecified address, checked when the job is created and again
  when each connection is made (to the address that was checked);
- ``signing``: the per-account secrets (``whsec_...``) and the ``v1`` signatures;
- ``store``: the SQL of the webhook tables (migration 0013); ``metrics``: Prometheus metrics;
- ``dispatcher``: the three loops of one process (``vto webhooks``, and inside ``vto serve``).

May import: ``ledger``, ``infra``, ``projections`` and ``pipeline``. The job's body (``data``)
is rendered by a function the composition root passes in (the API's own job view)."""
