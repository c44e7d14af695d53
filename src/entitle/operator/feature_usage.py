"""Feature usage counters (DESIGN "Entitlements for applications"): every OFREP evaluation of
a feature flag counts for (tenant, feature, UTC hour); closed hours become
``dev.entitle.feature.v1`` records, and the open hour is flushed on shutdown.

Counts live in memory until their hour closes: a replica killed (not stopped) loses the open
hour's counts -- evaluations are product analytics, not billed usage, and a write per
evaluation would put the ledger on the OFREP hot path.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone

from entitle.domain.records import feature_record

HOUR = 3600


class FeatureUsage:
    def __init__(self, append: Callable[[dict], None], source: str, replica: str | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.append, self.source = append, source
        self.replica = replica or os.environ.get("POD_NAME") or socket.gethostname()
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        # A new process is a new session: its record of an hour never collides with the one
        # its predecessor flushed at shutdown.
        self.session = f"{os.getpid()}-{self.clock().timestamp():.6f}"
        self._counts: Counter = Counter()
        self._lock = threading.Lock()

    def count(self, tenant: str, features: list[str]) -> None:
        hour = int(self.clock().timestamp()) // HOUR * HOUR
        with self._lock:
            for feature in features:
                self._counts[(tenant, feature, hour)] += 1

    def flush(self, everything: bool = False) -> int:
        """Write the closed hours (every hour when ``everything``); returns records written."""
        current = int(self.clock().timestamp()) // HOUR * HOUR
        with self._lock:
            due = {k: n for k, n in self._counts.items() if everything or k[2] < current}
            for key in due:
                del self._counts[key]
        for (tenant, feature, hour), n in sorted(due.items()):
            self.append(feature_record(tenant, feature, datetime.fromtimestamp(hour, timezone.utc), n, self.replica,
                                       self.session, self.source))
        return len(due)
