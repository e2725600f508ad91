"""The generator worker: the try-on generation library (``generation``: backends, no queue or
web code) and the worker process that runs it (``worker``: consumes ``vto.jobs.requested``,
generates, stores the outputs and publishes results; ``attempts``: its per-job attempt count
and stored outcomes; ``gpu_batch``: batching and GPU metrics). ``runtime`` wires every process
of the job pipeline (the relay, ingestor, sweeper and progress recorder of ``pipeline``, and
the workers); ``embedded`` runs them beside the API in ``vto serve``.

May import: ``ledger``, ``infra``, ``projections`` and ``pipeline`` (``generation`` itself
needs only ``infra.settings``). Never ``command_api``."""
