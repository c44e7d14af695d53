"""Workloads: listed once in pages to prime the state, then watched from that list's
resourceVersion -- one informer (``adapters.kube.informer``), not Kopf.

Kopf's watch would list every Workload a second time after our priming list and hand each to a
per-object worker task: at 50,000 Workloads a second full pass, 50,000 short-lived tasks and
their garbage right when the replica turns ready. The informer's first list *is* the priming
list, its watch starts exactly where that list ended (nothing missed, nothing seen twice), and
it remembers of each object only its namespace and name (what an object that vanished between
two lists needs). Finalizer writes leave through ``operator.finalizers``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from entitle.adapters.kube.informer import Informer
from entitle.adapters.metering.ledger import LedgerWriter
from entitle.api import GROUP, VERSION
from entitle.api.objects import metadata
from entitle.operator.finalizers import FinalizerQueue
from entitle.operator.workloads import WorkloadEvents

log = logging.getLogger("entitle.controller")

WORKLOADS = f"apis/{GROUP}/{VERSION}/workloads"
# While priming: records queued for the ledger before a page waits for the writer, and how long.
PRIMING_BACKLOG = 2000
LEDGER_WAIT_SECONDS = 5.0


def _remembered(body: dict) -> tuple[str, str]:
    meta = metadata(body)
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class WorkloadWatch:
    def __init__(self, api: Any, workloads: WorkloadEvents, finalizers: FinalizerQueue, writer: LedgerWriter,
                 ready: asyncio.Event) -> None:
        self.api, self.workloads, self.finalizers, self.writer, self.ready = api, workloads, finalizers, writer, ready
        self.informer: Informer | None = None

    async def start(self) -> None:
        """Start the Workload informer and wait for its first complete list (the priming list)."""
        self.finalizers.start()
        self.informer = Informer(
            self.api, WORKLOADS, on_event=self._event, remember=_remembered,
            on_vanished=self.workloads.vanished, after_page=self._keep_up_with_the_ledger,
            on_error=self._watch_error).start()
        await self.informer.synced.wait()

    async def stop(self) -> None:
        if self.informer is not None:
            await self.informer.stop()
        await self.finalizers.stop()

    def listed_uids(self) -> set[str]:
        return set(self.informer.known) if self.informer is not None else set()

    async def _keep_up_with_the_ledger(self) -> None:
        """Between pages: a first start over a fleet records every Workload (``created``), and
        records queued faster than the writer thread commits them are memory the process keeps
        (50,000 queued records ~75 MiB, and the allocator keeps the high-water mark). Wait for
        the writer while its backlog is large -- bounded, so a ledger that cannot be written
        (disk full) never keeps the replica from admitting."""
        if self.workloads.meter.enabled and self.writer.backlog > PRIMING_BACKLOG:
            try:
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.writer.barrier())),
                                       timeout=LEDGER_WAIT_SECONDS)
            except asyncio.TimeoutError:
                log.warning("the ledger is not keeping up with priming; going on without waiting")

    def _watch_error(self, exc: Exception | None) -> None:
        # (The informer logs and retries; while the first list fails the replica stays unready.)
        if exc is not None and not self.ready.is_set():
            log.warning("listing Workloads failed, the replica stays unready and retries: %s", exc)

    def _event(self, kind: str, body: dict) -> None:
        actions = self.workloads.on_workload(body, deleted=kind == "DELETED")
        if actions:
            self.finalizers.queue(actions)
