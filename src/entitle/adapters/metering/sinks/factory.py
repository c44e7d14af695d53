"""Sinks from their configuration: the one module that knows every implementation (so no sink
imports its siblings, and the interface in ``sinks.base`` imports none of them)."""

from __future__ import annotations

from typing import Any

from entitle.adapters.metering.sinks.base import Sink, default_name


def build_sinks(specs: list[dict[str, Any]]) -> list[Sink]:
    """Every configured sink; refuses two with one name (they would share a cursor)."""
    names: dict[str, int] = {}
    for index, spec in enumerate(specs):
        name = spec.get("name") or default_name(spec)
        if name in names:
            raise ValueError(f"sinks[{names[name]}] and sinks[{index}] are both named {name!r}: each sink needs its "
                             "own name (the key of its position in the ledger)")
        names[name] = index
    sinks = [build_sink(spec) for spec in specs]
    by_type: dict[str, int] = {}
    for spec in specs:
        by_type[spec.get("type")] = by_type.get(spec.get("type"), 0) + 1
    for sink, spec in zip(sinks, specs):
        # Before names had a default, an unnamed sink's cursor was keyed by its bare type:
        # the only sink of its type adopts that cursor instead of re-sending everything.
        if not spec.get("name") and by_type[spec.get("type")] == 1:
            sink.legacy_name = spec.get("type")
    return sinks


def build_sink(spec: dict[str, Any]) -> Sink:
    """A sink from its configuration: ``{type: jsonl|http|kafka, name?, ...}``."""
    kind = spec.get("type")
    name = spec.get("name") or default_name(spec)
    if kind == "jsonl":
        from entitle.adapters.metering.sinks.jsonl import JsonlSink
        return JsonlSink(spec["path"], name=name)
    if kind == "http":
        from entitle.adapters.metering.sinks.http import HttpSink
        return HttpSink(spec["url"], headers=spec.get("headers") or {}, timeout=float(spec.get("timeoutSeconds", 10)),
                        name=name)
    if kind == "kafka":
        from entitle.adapters.metering.sinks.kafka import KafkaSink
        return KafkaSink(spec["bootstrapServers"], spec["topic"], name=name)
    raise ValueError(f"unknown sink type {kind!r} (expected jsonl, http or kafka)")
