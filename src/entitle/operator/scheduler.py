"""The periodic work, one tick at a time: expire reservations, follow the clock, keep sourced
kinds watched, and -- as leader -- number License revisions, write status, the tenants' views,
the sources' duties and Events. A failing tick is logged and the next one runs: the loop never
ends. Blast radius: each duty runs inside its own guard; one failing never stops the others."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

from entitle.domain.state import ClusterState
from entitle.operator import metrics
from entitle.operator.events import EventQueue
from entitle.operator.leadership import Term
from entitle.operator.marks import StatusMarks
from entitle.operator.revisions import LicenseRevisions
from entitle.operator.sources.duties import SourceDuties
from entitle.operator.sources.informers import KindInformers
from entitle.operator.status import StatusWrite, StatusWriter
from entitle.operator.tenant_view import TenantViews

log = logging.getLogger("entitle.controller")

# Every this many ticks, time-driven transitions (expiry, grace, trials, bursts) are looked at
# for every tenant, and sourced kinds not served yet are retried.
FULL_PASS_TICKS = 10
# Status writes in flight at once.
WRITES_IN_FLIGHT = 16


class Scheduler:
    def __init__(self, interval_seconds: float, clock: Callable[[], datetime], ready: asyncio.Event,
                 state: ClusterState, marks: StatusMarks, term: Term, status: StatusWriter,
                 revisions: LicenseRevisions, tenant_views: TenantViews, informers: KindInformers,
                 sources: SourceDuties, events: EventQueue, api: Any) -> None:
        self.interval_seconds, self.clock, self.ready = interval_seconds, clock, ready
        self.state, self.marks, self.term, self.status = state, marks, term, status
        self.revisions, self.tenant_views, self.informers, self.sources = revisions, tenant_views, informers, sources
        self.events, self.api = events, api

    async def run(self) -> None:
        await self.ready.wait()
        ticks = 0
        while True:
            ticks += 1
            started = time.perf_counter()
            try:
                await self.tick(ticks)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                metrics.STATUS_ERRORS.inc()
                log.exception("status tick failed; retrying on the next one")
            metrics.STATUS_TICK.observe(time.perf_counter() - started)
            await asyncio.sleep(self.interval_seconds)

    async def tick(self, ticks: int) -> None:
        now = self.clock()
        # Reservations expire in real time (see SharedAdmission), not on an injected clock.
        released = self.state.expire_reservations(datetime.now(timezone.utc))
        if released:
            log.info("released %d expired reservations", released)
        if ticks % FULL_PASS_TICKS == 0:
            self.marks.tenants.update(self.state.tenants())
            # A source whose kind was not served yet (its CRD just applied) is retried.
            await self.informers.sync()
        if not self.term.leader:
            self._standby(now)
            await self.events.flush(self.api, only_own=True)
            return
        await self._guarded(self.revisions.keep(), "license revisions could not be kept")  # before status.revision
        await self._guarded(self.tenant_views.list(), "tenant entitlements could not be listed")
        tenants = self.marks.take_tenants()
        fresh = await self.status.refresh_sliced(tenants, now)
        metrics.STATUS_TENANTS_PENDING.set(len(self.marks.tenants))
        await self._guarded(self.sources.run(now), "instance sources' status, rules or anchors failed")
        if await self._write(self.status.paced(fresh)):   # recompute everything next tick, which retries
            self.status.recompute_all()
            self.marks.tenants.update(tenants)
        await self.events.flush(self.api, only_own=False)

    def _standby(self, now: datetime) -> None:
        """Keep the picture (bursts folded) but leave status and Events to the leader."""
        for tenant in self.marks.tenants:
            try:
                self.state.observe_bursts(tenant, now)
            except Exception:  # noqa: BLE001
                log.exception("burst clock of tenant %s could not be advanced", tenant)
        self.marks.tenants = set()
        self.marks.namespaces = set()

    @staticmethod
    async def _guarded(duty: Any, failure: str) -> None:
        # One duty's failure never stops the tenants' status.
        try:
            await duty
        except Exception:  # noqa: BLE001
            log.exception("%s this tick; retrying on the next one", failure)

    async def _write(self, writes: list[StatusWrite]) -> int:
        """Write (a few in flight at once); returns how many failed."""
        failed = 0
        for start in range(0, len(writes), WRITES_IN_FLIGHT):
            results = await asyncio.gather(*[self.status.write(kind, args) for kind, args in
                                             writes[start:start + WRITES_IN_FLIGHT]], return_exceptions=True)
            for exc in (r for r in results if isinstance(r, Exception)):
                failed += 1
                if failed == 1:
                    log.warning("status write failed: %s", exc)
        return failed
