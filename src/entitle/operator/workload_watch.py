"""Workloads: listed once in pages to prime the state, then watched from that list's
resourceVersion -- one informer (``adapters.kube.informer``), not Kopf.

A mixin of :class:`entitle.operator.controller.Controller`. Kopf's watch would list every
Workload a second time after our priming list and hand each to a per-object worker task: at
50,000 Workloads a second full pass, 50,000 short-lived tasks and their garbage right when the
replica turns ready. The informer's first list *is* the priming list, its watch starts exactly
where that list ended (nothing missed, nothing seen twice), and it remembers of each object only
its namespace and name (what an object that vanished between two lists needs).

Finalizer writes (adding the usage finalizer, releasing it once the deletion's record is
durable) are API calls: they leave the event loop through one queue, per object in order. A
write that fails is tried again with backoff: no later watch event may come for the object (a
Terminating Workload whose release failed would stay Terminating until a restart otherwise).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from entitle.adapters.kube.informer import Informer
from entitle.api import GROUP, VERSION

log = logging.getLogger("entitle.controller")

WORKLOADS = f"apis/{GROUP}/{VERSION}/workloads"
# Finalizer writes in flight at once (objects; each object's writes stay in order).
FINALIZER_CONCURRENCY = 8
# While priming: records queued for the ledger before a page waits for the writer, and how long.
PRIMING_BACKLOG = 2000
LEDGER_WAIT_SECONDS = 5.0
# A failed finalizer write is tried again after this long, doubling per consecutive failure.
FINALIZER_RETRY_SECONDS = (0.5, 30.0)


def _remembered(body: dict) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class WorkloadWatching:
    workload_informer: Informer | None = None

    async def watch_workloads(self) -> None:
        """Start the Workload informer and wait for its first complete list (the priming list)."""
        self._finalizer_queue: list[tuple] = []
        self._finalizer_wake = asyncio.Event()
        self._finalizer_failures = 0        # consecutive rounds with a failed write
        self._finalizer_task = asyncio.get_running_loop().create_task(self._write_finalizers())
        self.workload_informer = Informer(
            self.async_api, WORKLOADS, on_event=self._workload_event, remember=_remembered,
            on_vanished=self._workload_vanished, after_page=self._keep_up_with_the_ledger,
            on_error=self._workload_watch_error).start()
        await self.workload_informer.synced.wait()

    async def _keep_up_with_the_ledger(self) -> None:
        """Between pages: a first start over a fleet records every Workload (``created``), and
        records queued faster than the writer thread commits them are memory the process keeps
        (50,000 queued records ~75 MiB, and the allocator keeps the high-water mark). Wait for
        the writer while its backlog is large -- bounded, so a ledger that cannot be written
        (disk full) never keeps the replica from admitting."""
        if self.records_enabled and self.writer.backlog > PRIMING_BACKLOG:
            try:
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.writer.barrier())),
                                       timeout=LEDGER_WAIT_SECONDS)
            except asyncio.TimeoutError:
                log.warning("the ledger is not keeping up with priming; going on without waiting")

    async def stop_watching_workloads(self) -> None:
        if self.workload_informer is not None:
            await self.workload_informer.stop()
        task = getattr(self, "_finalizer_task", None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def listed_workload_uids(self) -> set[str]:
        return set(self.workload_informer.known) if self.workload_informer is not None else set()

    def _workload_watch_error(self, exc: Exception | None) -> None:
        # (The informer logs and retries; while the first list fails the replica stays unready.)
        if exc is not None and not self.ready.is_set():
            log.warning("listing Workloads failed, the replica stays unready and retries: %s", exc)

    def _workload_event(self, kind: str, body: dict) -> None:
        actions = self.on_workload(body, deleted=kind == "DELETED")
        if actions:
            self.queue_finalizer_actions(actions)

    def queue_finalizer_actions(self, actions: list[tuple]) -> None:
        """Write these finalizer changes (outside the event loop, per object in order, failed
        ones again later)."""
        if getattr(self, "_finalizer_wake", None) is None:
            raise RuntimeError("finalizer writes queued before the Workload watch started")
        self._finalizer_queue.extend(actions)
        self._finalizer_wake.set()

    def _workload_vanished(self, uid: str, remembered: tuple[str, str]) -> None:
        """Deleted while the watch was down (seen on a relist): forget it as a deletion, metered
        from the last state the state holds (the deletion itself was not observed)."""
        namespace, name = remembered
        meta = {"namespace": namespace, "name": name, "uid": uid}
        self._guarded("Workload", {"metadata": meta}, lambda _: self._forget(
            namespace, name, self.state.workload(namespace, name), meta, self.now(), [], deleted=True))

    async def _write_finalizers(self) -> None:
        while True:
            await self._finalizer_wake.wait()
            self._finalizer_wake.clear()
            actions, self._finalizer_queue = self._finalizer_queue, []
            by_object: dict[tuple, list[tuple]] = defaultdict(list)
            for action in actions:
                by_object[(action[1], action[2])].append(action)
            batches = list(by_object.values())
            failed: list[tuple] = []
            for start in range(0, len(batches), FINALIZER_CONCURRENCY):
                results = await asyncio.gather(*[asyncio.to_thread(self.apply_finalizer_actions, batch)
                                                 for batch in batches[start:start + FINALIZER_CONCURRENCY]],
                                               return_exceptions=True)
                for result in results:
                    if isinstance(result, Exception):
                        log.warning("finalizer writes failed: %s", result)
                    elif result:
                        failed.extend(result)
            self._retry_finalizers_later(failed)

    def _retry_finalizers_later(self, failed: list[tuple]) -> None:
        if not failed:
            self._finalizer_failures = 0
            return
        first, longest = FINALIZER_RETRY_SECONDS
        delay = min(longest, first * 2 ** min(self._finalizer_failures, 16))
        self._finalizer_failures += 1
        asyncio.get_running_loop().call_later(delay, self.queue_finalizer_actions, failed)
