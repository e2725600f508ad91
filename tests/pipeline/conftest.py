"""Fixtures of the pipeline tests: a real Kafka broker for the session (started through
``infra.kafka.local``, what ``scripts/kafka`` runs, or ``VTO_TEST_KAFKA_BOOTSTRAP``), isolated
topics per test, storage, small input images, and helpers that wait on conditions."""

from __future__ import annotations

import io
import os
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
from infra.kafka.client import KafkaQueue
from infra.storage import LocalStorage
from ledger.application import LedgerApplication

KAFKA_API_VERSION = os.environ.get("VTO_TEST_KAFKA_API_VERSION", "0.9")


@pytest.fixture
def kafka_queue(kafka_bootstrap: str) -> KafkaQueue:
    return KafkaQueue(kafka_bootstrap, KAFKA_API_VERSION)


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


def drain(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every message of a topic, up to its end offsets now (no consumer group)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, api_version=(0, 9), enable_auto_commit=False, group_id=None
    )
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
