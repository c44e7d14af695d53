"""JSON lines file sink: one CloudEvent per line, fsynced per batch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from entitle.adapters.metering.sinks.base import SinkError


class JsonlSink:
    def __init__(self, path: str, name: str = "jsonl") -> None:
        self.name = name
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def send(self, records: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        pass
