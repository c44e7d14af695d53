"""The sink interface (the factory, which knows every implementation, is ``sinks.factory``)."""

from __future__ import annotations

from typing import Any, Protocol


class SinkError(Exception):
    """A sink could not accept a batch; the pump retries it with backoff."""


class Sink(Protocol):
    name: str

    def send(self, records: list[dict[str, Any]]) -> None:
        """Deliver the batch in order, or raise :class:`SinkError` (nothing counts as delivered)."""

    def close(self) -> None: ...


def default_name(spec: dict[str, Any]) -> str:
    """A sink's name is the key of its cursor in the ledger (how far it has received).

    Default: its type and destination (``jsonl:/var/lib/entitle/usage.jsonl``,
    ``http:https://billing.example/events``, ``kafka:broker:9092/usage``), so two sinks of one
    type never share a cursor, and a sink pointed at a new destination starts from the ledger's
    beginning. Set ``name`` to keep a cursor across a change of destination."""
    kind = spec.get("type")
    destination = {"jsonl": spec.get("path"), "http": spec.get("url"),
                   "kafka": f"{spec.get('bootstrapServers')}/{spec.get('topic')}"}.get(kind)
    return f"{kind}:{destination}"
