"""JSON logs: one object per line with time, level, logger, message and simple extra fields."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            # Only plain values: Kopf attaches live objects (bodies, settings) to its records.
            if key not in _STANDARD and not key.startswith("_") and isinstance(value, (str, int, float, bool)):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("ENTITLE_LOG_LEVEL", "INFO"))
    # One line per admission request (aiohttp's access log, Kopf's "Webhook succeeded") costs
    # more than the decision itself; decisions are counted in metrics, denials logged by entitle.
    for noisy in ("aiohttp.access", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
