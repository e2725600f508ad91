"""Entry points of the pipeline's processes (``vto relay``, ``vto worker``, ``vto ingestor``,
``vto sweeper``) and ``Pipeline``, which runs all four as threads of one process
(``vto serve``, on the in-process queue by default).

Every ``run_*`` function builds what its process needs from the settings, runs until SIGTERM
or SIGINT (or ``stop`` is set), then stops cleanly: messages in flight stay uncommitted and
are delivered again to the next member of the group."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prometheus_client import start_http_server

from generator_worker import gpu_batch
from generator_worker.attempts import JobAttempts
from generator_worker.generation import Generator, generator_from_settings
from generator_worker.gpu_batch import BatchingGenerator, batches
from generator_worker.worker import Worker
from infra.database import database_url
from infra.erasure import Erasure
from infra.ledger_store import postgres_ledger
from infra.queue import MessageQueue, PipelineOptions, queue_from_settings
from infra.settings import Settings
from infra.storage import Storage, storage_from_settings
from ledger.application import LedgerApplication
from pipeline.ingestor import Ingestor
from pipeline.progress import ProgressRecorder
from pipeline.relay import OutboxRelay
from pipeline.sweeper import Sweeper

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """Relay, workers, ingestor and sweeper of one process, sharing one queue."""

    options: PipelineOptions
    relay: OutboxRelay | None = None
    workers: list[Worker] = field(default_factory=list)
    ingestor: Ingestor | None = None
    progress: ProgressRecorder | None = None
    sweeper: Sweeper | None = None
    queue: MessageQueue | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        url: str,
        ledger: LedgerApplication,
        *,
        queue: MessageQueue | None = None,
        options: PipelineOptions | None = None,
        storage: Storage | None = None,
        generator: Generator | None = None,
        workers: int = 1,
        relay: bool = True,
        ingestor: bool = True,
        sweeper: bool = True,
    ) -> Pipeline:
        """What ``vto serve`` runs beside the API: ``Pipeline.build(settings, url,
        services.ledger).start()`` ... ``.stop()``. The queue defaults to
        ``queue_from_settings`` (in-process when no Kafka is configured)."""
        options = options or PipelineOptions.from_settings(settings)
        queue = queue or queue_from_settings(settings)
        storage = storage or storage_from_settings(settings)
        pipeline = cls(options, queue=queue)
        if relay:
            pipeline.relay = OutboxRelay(url, queue.publisher(), options)
        if workers:
            # one model load per process: every worker of the process shares the generator
            generator = generator or generator_from_settings(settings)
            batch = settings.gpu_batch if batches(generator) else 1
            if batch > 1:
                generator = BatchingGenerator(generator, batch)
            pipeline.workers = [
                Worker(
                    queue,
                    generator,
                    storage,
                    ledger.reservation_status,
                    JobAttempts(url),
                    options,
                    name=f"worker-{i}",
                    batch=batch,
                    clock=ledger.clock,
                )
                for i in range(workers)
            ]
        if ingestor:
            pipeline.ingestor = Ingestor(queue, ledger, options)
            pipeline.progress = ProgressRecorder(queue, url, options)
        if sweeper:
            pipeline.sweeper = Sweeper(
                url,
                ledger,
                timedelta(seconds=settings.job_timeout_s),
                interval=options.sweeper_interval_s,
                erasure=Erasure(url, storage, settings),
            )
        return pipeline

    def _parts(self) -> list[Any]:
        parts = (self.relay, *self.workers, self.ingestor, self.progress, self.sweeper)
        return [p for p in parts if p is not None]

    def start(self) -> Pipeline:
        for part in self._parts():
            part.start()
        return self

    def stop(self) -> None:
        for part in reversed(self._parts()):
            with contextlib.suppress(Exception):
                part.stop()
        if self.queue is not None:
            self.queue.close()

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _until_signalled(stop: threading.Event | None) -> threading.Event:
    """An event set by SIGTERM/SIGINT (when called from the main thread) or by the caller."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    return stop


def _run(settings: Settings, stop: threading.Event | None, **parts: Any) -> None:
    url = database_url(settings)
    ledger = postgres_ledger(settings, url)
    pipeline = Pipeline.build(settings, url, ledger, **parts)
    stop = _until_signalled(stop)
    pipeline.start()
    log.info("pipeline process started: %s", ", ".join(type(p).__name__ for p in pipeline._parts()))
    try:
        stop.wait()
    finally:
        pipeline.stop()
        ledger.close()


def run_relay(settings: Settings, stop: threading.Event | None = None) -> None:
    """``vto relay``: publish job requests from the ledger to Kafka."""
    _run(settings, stop, workers=0, ingestor=False, sweeper=False)


def run_worker(settings: Settings, stop: threading.Event | None = None, concurrency: int = 1) -> None:
    """``vto worker``: generate jobs (``concurrency`` members of the group in this process,
    sharing one loaded model). With ``VTO_WORKER_METRICS_PORT``, serves the GPU metrics
    (``gpu_batch.REGISTRY``) on that port."""
    server = None
    if settings.worker_metrics_port is not None:
        server, _ = start_http_server(settings.worker_metrics_port, registry=gpu_batch.REGISTRY)
    try:
        _run(settings, stop, workers=concurrency, relay=False, ingestor=False, sweeper=False)
    finally:
        if server is not None:
            server.shutdown()


def run_ingestor(settings: Settings, stop: threading.Event | None = None) -> None:
    """``vto ingestor``: apply results to the ledger."""
    _run(settings, stop, workers=0, relay=False, sweeper=False)


def run_sweeper(settings: Settings, stop: threading.Event | None = None) -> None:
    """``vto sweeper``: expire reservations older than ``VTO_JOB_TIMEOUT_S``; erase the stored
    objects that are due (``infra.erasure``)."""
    _run(settings, stop, workers=0, relay=False, ingestor=False)
