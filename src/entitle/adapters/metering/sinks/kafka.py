"""Kafka sink (optional extra ``entitle[kafka]``): one message per record, **keyed by the
record id**, ``acks=all``, at least once.

Why the id and not the tenant: a consumer (or a compacted topic) deduplicates on the key, and
a redelivery after a crash lands on the same partition as the first copy, right behind it.
Order per tenant across partitions is not kept; consumers order by the record's ``time``
(export does), which is what billing needs."""

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
        self.bootstrap_servers = bootstrap_servers
        self._factory = KafkaProducer
        self._producer: Any = None

    def _connected(self) -> Any:
        # Connected on first use, not at construction: a broker that is down when the
        # operator starts is a sink error the pump retries, not a failed start.
        if self._producer is None:
            try:
                self._producer = self._factory(bootstrap_servers=self.bootstrap_servers, acks="all",
                                               max_in_flight_requests_per_connection=1, retries=0,
                                               request_timeout_ms=15_000, max_block_ms=15_000)
            except Exception as exc:
                raise SinkError(f"kafka {self.bootstrap_servers}: {exc}") from None
        return self._producer

    def send(self, records: list[dict[str, Any]]) -> None:
        producer = self._connected()
        try:
            futures = [producer.send(self.topic, key=str(r["id"]).encode(),
                                           value=json.dumps(r, separators=(",", ":")).encode(),
                                           headers=[("content-type", b"application/cloudevents+json")])
                       for r in records]
            for future in futures:
                future.get(timeout=30)
        except Exception as exc:
            raise SinkError(f"kafka {self.topic}: {exc}") from None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
