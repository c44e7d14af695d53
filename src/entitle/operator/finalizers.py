"""Finalizer writes: the usage-record finalizer on Workloads (added, released once the deletion's
record is durable) and on usage anchors (released once the departure is recorded).

They are API calls: they leave the event loop through one queue, per object in order. A write
that fails is tried again with backoff: no later watch event may come for the object (a
Terminating Workload whose release failed would stay Terminating until a restart otherwise).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from entitle.adapters.metering.ledger import LedgerWriter
from entitle.adapters.kube.finalizer_policy import USAGE_FINALIZER

log = logging.getLogger("entitle.controller")

# Held on every Workload so that a deletion that happens while the operator is down still
# reaches it, with the object's last state and its deletionTimestamp: the `deleted` record is
# exact (and any change not yet recorded is recorded first). Removed once the record is durable.
# Finalizer writes in flight at once (objects; each object's writes stay in order).
FINALIZER_CONCURRENCY = 8
# A failed finalizer write is tried again after this long, doubling per consecutive failure.
FINALIZER_RETRY_SECONDS = (0.5, 30.0)


@dataclass(frozen=True)
class AddFinalizer:
    """Give a Workload the usage-record finalizer (it was created past the mutating webhook)."""

    namespace: str
    name: str
    finalizers: list[str] = field(default_factory=list)
    resource_version: str | None = None
    releases = False

    def apply(self, api: Any) -> None:
        api.add_workload_finalizer(self.namespace, self.name, USAGE_FINALIZER, self.finalizers, self.resource_version)


@dataclass(frozen=True)
class ReleaseFinalizer:
    """Let a deleted Workload go: its deletion's record is made."""

    namespace: str
    name: str
    finalizers: list[str] = field(default_factory=list)
    releases = True

    def apply(self, api: Any) -> None:
        api.remove_workload_finalizer(self.namespace, self.name, USAGE_FINALIZER, self.finalizers)


@dataclass(frozen=True)
class ReleaseAnchor:
    """Let a deleted usage anchor go: its owner's departure is recorded."""

    namespace: str
    name: str
    finalizers: list[str] = field(default_factory=list)
    releases = True

    def apply(self, api: Any) -> None:
        api.remove_anchor_finalizer(self.namespace, self.name, self.finalizers)


FinalizerAction = AddFinalizer | ReleaseFinalizer | ReleaseAnchor


class FinalizerQueue:
    # How long a release waits for its deletion record to become durable.
    durable_wait_seconds = 10.0

    def __init__(self, api: Any, writer: LedgerWriter) -> None:
        self.api, self.writer = api, writer
        self._queue: list[FinalizerAction] = []
        self._wake: asyncio.Event | None = None
        self.failures = 0            # consecutive rounds with a failed write
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def queue(self, actions: list[FinalizerAction]) -> None:
        """Write these finalizer changes (outside the event loop, per object in order, failed
        ones again later)."""
        if self._wake is None:
            raise RuntimeError("finalizer writes queued before the Workload watch started")
        self._queue.extend(actions)
        self._wake.set()

    def apply(self, actions: list[FinalizerAction]) -> list[FinalizerAction]:
        """Blocking API writes; run in a thread. Returns the actions that failed and are worth
        another try (the apiserver or a webhook answered an error, the ledger could not make a
        deletion's record durable); a changed or vanished object is not one (the client lets
        404/409/422 pass: its next watch event, if any, asks again)."""
        failed: list[FinalizerAction] = []
        releases = [a for a in actions if a.releases]
        if releases:
            # The finalizer goes only once the deletion's record is durable in the ledger. While
            # appends fail (a full disk) the releases wait -- retried with backoff -- rather than
            # holding the finalizer queue (and every later add) for as long as the disk is full.
            try:
                self.writer.barrier().result(timeout=self.durable_wait_seconds)
            except Exception as exc:  # noqa: BLE001 -- the finalizer stays until the record is written
                log.warning("the ledger could not make deletion records durable; finalizers stay: %s", exc)
                failed = releases
                actions = [a for a in actions if not a.releases]
        for action in actions:
            try:
                action.apply(self.api)
            except Exception as exc:  # noqa: BLE001 -- retried by the caller, with backoff
                log.warning("finalizer %s on %s/%s failed (retried): %s", type(action).__name__, action.namespace,
                            action.name, exc)
                failed.append(action)
        return failed

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            actions, self._queue = self._queue, []
            by_object: dict[tuple, list[FinalizerAction]] = defaultdict(list)
            for action in actions:
                by_object[(action.namespace, action.name)].append(action)
            batches = list(by_object.values())
            failed: list[FinalizerAction] = []
            for start in range(0, len(batches), FINALIZER_CONCURRENCY):
                results = await asyncio.gather(*[asyncio.to_thread(self.apply, batch)
                                                 for batch in batches[start:start + FINALIZER_CONCURRENCY]],
                                               return_exceptions=True)
                for result in results:
                    if isinstance(result, Exception):
                        log.warning("finalizer writes failed: %s", result)
                    elif result:
                        failed.extend(result)
            self._retry_later(failed)

    def _retry_later(self, failed: list[FinalizerAction]) -> None:
        if not failed:
            self.failures = 0
            return
        first, longest = FINALIZER_RETRY_SECONDS
        delay = min(longest, first * 2 ** min(self.failures, 16))
        self.failures += 1
        asyncio.get_running_loop().call_later(delay, self.queue, failed)
