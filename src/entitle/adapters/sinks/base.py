"""The sink interface and its factory."""

from __future__ import annotations

from typing import Any, Protocol


class SinkError(Exception):
    """A sink could not accept a batch; the pump retries it with backoff."""


class Sink(Protocol):
    name: str

    def send(self, records: list[dict[str, Any]]) -> None:
        """Deliver the batch in order, or raise :class:`SinkError` (nothing counts as delivered)."""

    def close(self) -> None: ...


def build_sink(spec: dict[str, Any]) -> Sink:
    """A sink from its configuration: ``{type: jsonl|http|kafka, ...}``."""
    kind = spec.get("type")
    name = spec.get("name") or kind
    if kind == "jsonl":
        from entitle.adapters.sinks.jsonl import JsonlSink
        return JsonlSink(spec["path"], name=name)
    if kind == "http":
        from entitle.adapters.sinks.http import HttpSink
        return HttpSink(spec["url"], headers=spec.get("headers") or {}, timeout=float(spec.get("timeoutSeconds", 10)),
                        name=name)
    if kind == "kafka":
        from entitle.adapters.sinks.kafka import KafkaSink
        return KafkaSink(spec["bootstrapServers"], spec["topic"], name=name)
    raise ValueError(f"unknown sink type {kind!r} (expected jsonl, http or kafka)")
