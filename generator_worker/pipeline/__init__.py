"""The job pipeline around the generators: the outbox relay (``relay``), the job messages
(``messages``), the worker, the result ingestor, the progress recorder, the sweeper, the
consume loop they share (``consume``), and the processes' entry points (``runtime``,
``embedded`` for ``vto serve``)."""
