"""Kafka: the client factory (``client``: API version detected, idempotent producers and record
headers where the broker allows) and the local brokers of tests and development: Kafka 0.9
(``local``) and Tansu, the modern protocol (``tansu``). docs/kafka.md."""

from infra.kafka.client import KafkaQueue, parse_api_version

__all__ = ["KafkaQueue", "parse_api_version"]
