"""Fixtures of the pipeline tests: a queue on each Kafka broker under test (``kafka_broker``
in ``tests/conftest.py``: the local 0.9 one and Tansu, the modern protocol; the API version is
detected, never pinned), isolated topics per test, storage, small input images, and helpers
that wait on conditions or read a topic."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from generator_worker.generation import (
    GeneratedOutput,
    GenerationRequest,
    GenerationResult,
    Generator,
)
from generator_worker.generation.offline import OFFLINE_INFO
from generator_worker.runtime import Pipeline
from infra.kafka.client import KafkaQueue
from infra.settings import Settings
from infra.storage import LocalStorage
from ledger.application import LedgerApplication
from tests.conftest import KafkaBroker


@pytest.fixture
def kafka_queue(kafka_broker: KafkaBroker) -> KafkaQueue:
    """A queue on the broker under test (its clients detect the API version)."""
    return KafkaQueue(kafka_broker.bootstrap)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files", b"test-secret")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def model_png() -> bytes:
    skimage_data = pytest.importorskip("skimage.data")
    return png(Image.fromarray(np.asarray(skimage_data.astronaut(), np.uint8)).resize((256, 256)))


@pytest.fixture(scope="session")
def garment_png() -> bytes:
    """A flat-lay T-shirt drawn with PIL."""
    image = Image.new("RGB", (200, 220), (245, 245, 245))
    outline = [(65, 10), (85, 10), (100, 22), (115, 10), (135, 10), (185, 40), (170, 75), (150, 62)]
    outline += [(150, 210), (50, 210), (50, 62), (30, 75), (15, 40)]
    ImageDraw.Draw(image).polygon(outline, fill=(220, 30, 30))
    return png(image)


@pytest.fixture
def inputs(storage: LocalStorage, model_png: bytes, garment_png: bytes) -> dict[str, Any]:
    """Inputs in storage, as the API would reference them in a job request."""
    storage.put("assets/model.png", model_png, "image/png")
    storage.put("products/tshirt.png", garment_png, "image/png")
    return {
        "model": "assets/model.png",
        "background": None,
        "garments": [{"key": "products/tshirt.png", "category": "top", "side": "front"}],
    }


def job_request(inputs: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {
        "project_id": str(uuid.uuid4()),
        "inputs": inputs,
        "options": {"width": 192, "height": 256, "seed": 7, **options},
    }


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def job_status(ledger: LedgerApplication, user_id: uuid.UUID, job_id: uuid.UUID) -> str | None:
    job = ledger.account(user_id).job(job_id)
    return None if job is None else str(job["status"])


def drain(queue: KafkaQueue, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every message of a topic, up to its end offsets now (no consumer group), read with the
    queue's client settings (the API version it detected)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**queue.client_config(), enable_auto_commit=False, group_id=None)
    try:
        partitions = wait_until(lambda: consumer.partitions_for_topic(topic), timeout, f"topic {topic}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topic}")
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def partition_count(queue: KafkaQueue, topic: str) -> int:
    """How many partitions the broker gives ``topic`` (created on first use)."""
    from kafka import KafkaProducer

    queue.ensure_topics([topic])
    producer = KafkaProducer(**queue.client_config(), enable_idempotence=False)
    try:
        return len(wait_until(lambda: producer.partitions_for(topic), 20, f"partitions of {topic}"))
    finally:
        producer.close(timeout=5)


def build_pipeline(
    url: str,
    ledger: LedgerApplication,
    queue: Any,
    options: Any,
    storage: LocalStorage,
    generator: Generator,
    **parts: Any,
) -> Pipeline:
    """Relay, worker(s), ingestor and progress recorder on ``queue`` (``parts``: what
    ``Pipeline.build`` takes, e.g. ``workers=2``, ``relay=False``); no sweeper."""
    return Pipeline.build(
        Settings(_env_file=None),  # type: ignore[call-arg]
        url,
        ledger,
        queue=queue,
        options=options,
        storage=storage,
        generator=generator,
        sweeper=False,
        **parts,
    )


class TinyGenerator(Generator):
    """A fast stand-in for tests about the pipeline, not the pictures: one small PNG."""

    info = OFFLINE_INFO

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.calls += 1
        data = png(Image.new("RGB", (request.options.width, request.options.height), (1, 2, 3)))
        output = GeneratedOutput(data, "image/png", request.options.width, request.options.height)
        return GenerationResult((output,), "tiny", {"total": 0.0})
