"""Moves records from the ledger to a sink: at least once, in ledger order, with backoff.

The sink's position is a cursor stored in the ledger itself, advanced only after the sink has
accepted a batch, so a crash re-sends at most the batch in flight (downstream deduplicates on
``(source, id)``) and never skips one. A sink that is down delays only itself: admission and
the ledger go on.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from entitle.adapters.metering.ledger import Ledger
from entitle.adapters.metering.sinks.base import Sink, SinkError

log = logging.getLogger("entitle.sinks")


class SinkPump:
    def __init__(self, ledger: Ledger, sink: Sink, batch: int = 500, min_backoff: float = 0.5,
                 max_backoff: float = 60.0, idle: float = 0.5,
                 on_error: Callable[[str], None] | None = None,
                 on_lag: Callable[[str, int], None] | None = None) -> None:
        self.ledger, self.sink, self.batch = ledger, sink, batch
        self.min_backoff, self.max_backoff, self.idle = min_backoff, max_backoff, idle
        self.on_error, self.on_lag = on_error, on_lag
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def lag(self) -> int:
        return self.ledger.last_seq() - self.ledger.cursor(self.sink.name)

    def pump_once(self) -> int:
        """Send one batch; returns how many records were delivered (0 when caught up)."""
        cursor = self.ledger.cursor(self.sink.name)
        rows = self.ledger.read(cursor, self.batch)
        if not rows:
            return 0
        self.sink.send([record for _, record in rows])
        self.ledger.set_cursor(self.sink.name, rows[-1][0])
        return len(rows)

    def run(self) -> None:
        backoff = self.min_backoff
        while not self._stop.is_set():
            try:
                sent = self.pump_once()
                backoff = self.min_backoff
            except SinkError as exc:
                if self.on_error:
                    self.on_error(self.sink.name)
                delay = backoff * (0.5 + random.random())
                log.warning("sink %s failed, retrying in %.1fs: %s", self.sink.name, delay, exc)
                self._stop.wait(delay)
                backoff = min(self.max_backoff, backoff * 2)
                continue
            if self.on_lag:
                self.on_lag(self.sink.name, self.lag())
            if not sent:
                self._wake.wait(self.idle)
                self._wake.clear()

    def notify(self) -> None:
        self._wake.set()

    def adopt_legacy_cursor(self) -> None:
        legacy = getattr(self.sink, "legacy_name", None)
        if legacy and legacy != self.sink.name and self.ledger.cursor(self.sink.name) == 0:
            seq = self.ledger.cursor(legacy)
            if seq:
                self.ledger.set_cursor(self.sink.name, seq)

    def start(self) -> SinkPump:
        self.adopt_legacy_cursor()
        self._thread = threading.Thread(target=self.run, name=f"sink-{self.sink.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.sink.close()
