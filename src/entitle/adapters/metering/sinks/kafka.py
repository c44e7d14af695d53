"""Kafka sink (optional extra ``entitle[kafka]``): one message per record, keyed by tenant so a
tenant's records stay in order within a partition."""

from __future__ import annotations

import json
from typing import Any

from entitle.adapters.metering.sinks.base import SinkError


class KafkaSink:
    def __init__(self, bootstrap_servers: str, topic: str, name: str = "kafka") -> None:
        try:
            from kafka import KafkaProducer  # type: ignore[import-not-found]
        except ImportError:
            raise SinkError("the kafka sink needs the optional extra: pip install 'entitle[kafka]'") from None
        self.name = name
        self.topic = topic
        self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all",
                                       max_in_flight_requests_per_connection=1, retries=0)

    def send(self, records: list[dict[str, Any]]) -> None:
        try:
            futures = [self._producer.send(self.topic, key=str(r.get("subject", "")).encode(),
                                           value=json.dumps(r, separators=(",", ":")).encode(),
                                           headers=[("content-type", b"application/cloudevents+json")])
                       for r in records]
            for future in futures:
                future.get(timeout=30)
        except Exception as exc:
            raise SinkError(f"kafka {self.topic}: {exc}") from None

    def close(self) -> None:
        self._producer.close()
