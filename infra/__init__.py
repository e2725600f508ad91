"""Runtime plumbing shared by every process: settings (``settings``), the database location
and embedded PostgreSQL (``database``), SQLAlchemy plumbing (``db``), the ledger on its
storage (``ledger_store``), migrations (``migrate``), object storage (``storage``), the queue
interface and its Kafka and in-process implementations (``queue``, ``kafka``), and deployment
assets (``compose/``).

May import: ``ledger`` (and third-party packages). Never ``projections``, ``generator_worker``
or ``command_api`` — with one exception, ``infra.cli``: the ``vto`` command line is the
composition root, which wires each process together from every package."""
