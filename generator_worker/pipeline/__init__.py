"""The job pipeline around the generators: request and result messages, the worker, the
result ingestor, and the processes' entry points (``runtime``)."""
