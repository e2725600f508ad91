"""Kafka: the client factory (``client``) and a local 0.9 broker for tests (``local``)."""

from infra.kafka.client import KafkaQueue, parse_api_version

__all__ = ["KafkaQueue", "parse_api_version"]
