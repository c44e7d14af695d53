"""HTTP sink: POST ``application/cloudevents-batch+json``, the way OpenMeter ingests events."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from entitle.adapters.metering.sinks.base import SinkError


class HttpSink:
    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 10.0,
                 name: str = "http") -> None:
        self.name = name
        self.url = url
        self.headers = {"Content-Type": "application/cloudevents-batch+json", **(headers or {})}
        self.timeout = timeout

    def send(self, records: list[dict[str, Any]]) -> None:
        body = json.dumps(records, separators=(",", ":")).encode()
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                if not 200 <= response.status < 300:
                    raise SinkError(f"POST {self.url}: HTTP {response.status}")
        except urllib.error.HTTPError as exc:
            raise SinkError(f"POST {self.url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SinkError(f"POST {self.url}: {getattr(exc, 'reason', exc)}") from None

    def close(self) -> None:
        pass
