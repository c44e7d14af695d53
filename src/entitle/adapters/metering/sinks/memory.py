"""An in-memory sink for tests: can be told to fail."""

from __future__ import annotations

from typing import Any

from entitle.adapters.metering.sinks.base import SinkError


class MemorySink:
    def __init__(self, name: str = "memory", fail_next: int = 0) -> None:
        self.name = name
        self.records: list[dict[str, Any]] = []
        self.fail_next = fail_next
        self.attempts = 0

    def send(self, records: list[dict[str, Any]]) -> None:
        self.attempts += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise SinkError("memory sink told to fail")
        self.records.extend(records)

    def close(self) -> None:
        pass
