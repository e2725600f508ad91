"""The generator worker: try-on generation backends (``generator_worker.generation``)."""
