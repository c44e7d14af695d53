"""The sinks' pumps: run by the leader only (every replica records its own ledger; one sends)."""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("entitle.controller")


class SinkPumps:
    def __init__(self) -> None:
        # Builds the pumps (set once the sinks are configured; none until then).
        self.factory: Callable[[], list[Any]] = lambda: []
        self.running: list[Any] = []

    def start(self) -> None:
        try:
            self.running = [pump.start() for pump in self.factory()]
        except Exception:  # noqa: BLE001 -- records stay in the ledger; a later leader retries
            log.exception("starting the sinks failed; records wait in the ledger")
            self.running = []

    def stop(self) -> None:
        for pump in self.running:
            pump.stop(timeout=1)
        self.running = []

    def notify(self) -> None:
        """New records are in the ledger."""
        for pump in self.running:
            pump.notify()
