"""Runtime plumbing shared by every process, one module per idea:

- ``settings``: every setting and its default (pydantic-settings, prefix ``VTO_``);
- ``database``: where the database is (the configured URL, or the embedded PostgreSQL in the
  data directory); ``orm``: the catalog's SQLAlchemy plumbing (declarative base, engines,
  sessions); ``migrate``: applying the Alembic migrations;
- ``ledger_store``: the ledger application on its storage; ``group_commit``: the ledger's
  batched appends;
- ``queue``: the message-queue interface and the in-process queue; ``kafka``: the Kafka
  client behind that interface, and a local broker for tests;
- ``storage``: object storage (local files or S3); ``mail``: outgoing mail;
  ``threads``: the background-loop lifecycle and back-off;
- ``cli``: the ``vto`` command line; ``compose/``: deployment assets.

May import: ``ledger`` (and third-party packages). Never ``projections``, ``pipeline``,
``generator_worker`` or ``command_api`` — with one exception, ``infra.cli``: the ``vto``
command line is the composition root, which wires each process together from every package."""
