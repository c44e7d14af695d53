"""The operator's wiring: each component built with what it needs, and watch events routed to
them. docs/architecture.md has the picture; who owns which state:

=====================  ==================================================================
``state``              the engine's picture (``domain.state.ClusterState``): every replica
``meter``              what this ledger counted and recorded (``operator.usage_meter``)
``namespaces``         tenant labels in, moves metered (``operator.namespaces``)
``licenses``           License events in, records out (``operator.licenses``)
``workloads``          Workload events in, finalizer actions out (``operator.workloads``)
``workload_watch``     the Workload informer (``operator.workload_watch``)
``finalizers``         finalizer writes, retried (``operator.finalizers``)
``catalog``            InstanceSources and their kinds (``operator.sources.catalog``)
``sourced``            objects of sourced kinds, the owner tree (``operator.sources.objects``)
``anchors``            usage anchors, departed objects (``operator.sources.anchors``)
``revisions``          License revision numbers (``operator.revisions``)
``status``             computed and stored status, pacing (``operator.status``)
``tenant_views``       TenantEntitlements (``operator.tenant_view``)
``scheduler``          the periodic tick (``operator.scheduler``)
``events``             Kubernetes Events to post (``operator.events``)
=====================  ==================================================================

Everything runs on the operator's event loop; state mutations never await in the middle, so the
webhook (same loop) always sees a consistent picture. API writes go to a thread.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from datetime import datetime
from typing import Any, Callable

from entitle.adapters.metering.backends import LedgerBackend
from entitle.adapters.metering.ledger import LedgerWriter
from entitle.api.objects import metadata
from entitle.domain.state import ClusterState
from entitle.operator import metrics
from entitle.operator.boundary import ErrorBoundary
from entitle.operator.config import OperatorConfig
from entitle.operator.events import EventQueue
from entitle.operator.finalizers import FinalizerAction, FinalizerQueue
from entitle.operator.leadership import Term
from entitle.operator.license_records import LicenseRecords
from entitle.operator.license_specs import LicenseSpecs
from entitle.operator.licenses import LicenseWatch
from entitle.operator.marks import StatusMarks
from entitle.operator.namespaces import NamespaceWatch
from entitle.operator.notices import Notices
from entitle.operator.pumps import SinkPumps
from entitle.operator.revisions import LicenseRevisions
from entitle.operator.scheduler import Scheduler
from entitle.operator.sources.anchors import UsageAnchors
from entitle.operator.sources.catalog import SourceCatalog
from entitle.operator.sources.duties import SourceDuties
from entitle.operator.sources.informers import KindInformers
from entitle.operator.sources.objects import SourcedObjects
from entitle.operator.status import StatusWriter
from entitle.operator.tenancy import TenancyHistory
from entitle.operator.tenant_view import TenantViews
from entitle.operator.usage_meter import UsageMeter
from entitle.operator.workload_watch import WorkloadWatch
from entitle.operator.workloads import WorkloadEvents

log = logging.getLogger("entitle.controller")


def _ledger_failed(error: Exception | None, waiting: int) -> None:
    if error is not None:
        metrics.LEDGER_APPEND_FAILURES.inc()
    metrics.LEDGER_WAITING.set(waiting)


class Controller:
    """Builds the components and routes watch events to them; owns only readiness."""

    def __init__(self, cfg: OperatorConfig, state: ClusterState, ledger: LedgerBackend, api: Any | None = None,
                 async_api: Any | None = None, clock: Callable[[], datetime] | None = None,
                 records_enabled: bool = True, pseudonym_key: bytes | None = None) -> None:
        self.cfg, self.state, self.ledger, self.api, self.async_api = cfg, state, ledger, api, async_api
        self.clock = clock or cfg.now
        self.ready = asyncio.Event()
        self.term, self.marks, self.events, self.pumps = Term(), StatusMarks(), EventQueue(), SinkPumps()
        # Appends leave the event loop (it serves the webhook too): one writer thread, group commit.
        self.writer = LedgerWriter(ledger, on_added=self._ledger_added, on_failed=_ledger_failed)
        self.boundary = ErrorBoundary(self.marks, self.events, self.clock)
        self._build_licensing(cfg, state, async_api, records_enabled, pseudonym_key)
        self._build_watches(cfg, state, api, async_api)
        self._build_sources(cfg, state, async_api)
        self.scheduler = Scheduler(cfg.status_interval_seconds, self.clock, self.ready, state, self.marks, self.term,
                                   self.status, self.revisions, self.tenant_views, self.informers,
                                   self.source_duties, self.events, async_api)

    def _build_licensing(self, cfg: OperatorConfig, state: ClusterState, async_api: Any, records_enabled: bool,
                         pseudonym_key: bytes | None) -> None:
        self.specs, self.tenancy = LicenseSpecs(), TenancyHistory()
        self.revisions = LicenseRevisions(cfg.namespace, state, self.specs, self.marks, self.term, async_api)
        self.meter = UsageMeter(state, self.writer, cfg.source, self.clock, self.revisions.numbers_of, self.tenancy)
        # A webhook worker (operator.workers) decides only: no records, no status, never the leader.
        self.meter.enabled, self.meter.pseudonym_key = records_enabled, pseudonym_key
        self.license_records = LicenseRecords(state, self.specs, self.revisions, self.meter)
        self.notices = Notices(self.events, self.meter.append, cfg.source)
        self.tenant_views = TenantViews(state, self.marks, self.notices, self.revisions.numbers, async_api)
        self.status = StatusWriter(cfg, state, self.marks, self.events, self.specs, self.revisions, self.tenant_views,
                                   self.notices, self.license_records, async_api)

    def _build_watches(self, cfg: OperatorConfig, state: ClusterState, api: Any, async_api: Any) -> None:
        self.licenses = LicenseWatch(state, self.specs, self.marks, self.meter, self.license_records, self.revisions,
                                     self.status, self.boundary, self.clock)
        self.namespaces = NamespaceWatch(state, self.marks, self.meter, self.tenancy, self.boundary, self.clock,
                                         on_cluster_id=self.licenses.reread_bound,
                                         on_gone=self.tenant_views.namespace_gone)
        self.workloads = WorkloadEvents(state, self.marks, self.meter, self.status, self.boundary, self.clock)
        self.finalizers = FinalizerQueue(api, self.writer)
        self.workload_watch = WorkloadWatch(async_api, self.workloads, self.finalizers, self.writer, self.ready)

    def _build_sources(self, cfg: OperatorConfig, state: ClusterState, async_api: Any) -> None:
        self.catalog = SourceCatalog()
        self.anchors = UsageAnchors(self.meter, self.term, self.clock)
        self.sourced = SourcedObjects(self.catalog, state, self.meter, self.anchors, self.marks, self.boundary,
                                      self.clock)
        self.informers = KindInformers(async_api, self.catalog, self.sourced)
        self.source_duties = SourceDuties(cfg.webhook, self.catalog, self.sourced, self.anchors, async_api)

    def _ledger_added(self, added: int) -> None:
        metrics.LEDGER_RECORDS.inc(added)
        self.pumps.notify()

    # -- leadership --------------------------------------------------------------------------
    @property
    def leader(self) -> bool:
        return self.term.leader

    @leader.setter
    def leader(self, leader: bool) -> None:
        self.term.leader = leader

    def set_leader(self, leader: bool) -> None:
        self.term.leader = leader
        if self.meter.enabled:        # (a webhook worker never leads; its metrics are not served)
            metrics.LEADER.set(1 if leader else 0)
        self.status.new_term()
        if leader:
            # Recompute everything: a new leader owes status for every tenant.
            self.status.recompute_all()
            self.marks.tenants.update(self.state.tenants())
            self.marks.namespaces.update(ns for ns, t in self.state.namespaces.items() if t is None)
            metrics.STATUS_TENANTS_PENDING.set(len(self.marks.tenants))
            self.pumps.start()
        else:
            self.pumps.stop()
            self.revisions.lost_leadership()
            self.tenant_views.lost_leadership()

    # -- watch events ------------------------------------------------------------------------
    def on_namespace(self, body: dict[str, Any], deleted: bool = False) -> None:
        self.namespaces.on_namespace(body, deleted)

    def on_license(self, body: dict[str, Any], deleted: bool = False) -> None:
        self.licenses.on_license(body, deleted)

    def on_workload(self, body: dict[str, Any], deleted: bool = False) -> list[FinalizerAction]:
        return self.workloads.on_workload(body, deleted)

    def on_source(self, body: dict[str, Any], deleted: bool = False) -> None:
        self.boundary.guard("InstanceSource", body, self.catalog.on_source, deleted)

    def on_anchor(self, body: dict[str, Any], deleted: bool = False) -> list[FinalizerAction]:
        return self.boundary.guard("UsageAnchor", body, self.anchors.on_anchor, deleted) or []

    # -- start-up ------------------------------------------------------------------------------
    def prime(self) -> set[str | None]:
        """List everything once so the webhook decides from a complete picture from the start
        (the blocking part; :meth:`prime_async` adds the sourced kinds and marks ready).
        Returns the uids of the Workloads listed (without the async client only).

        Idempotent (Kopf retries a failed start-up handler) and per-object guarded: one bad
        object is reported and skipped, it never keeps the operator from becoming ready."""
        metrics.LEDGER_RECORDS.set(self.ledger.count())
        self.meter.seed(self.ledger)
        for ns in self.api.list_namespaces():
            self.on_namespace(ns)
        for lic in self.api.list_licenses():
            self.on_license(lic)
        for source in self.api.list_instance_sources():
            self.on_source(source)
        for anchor in self.api.list_usage_anchors():
            self.on_anchor(anchor)
        listed: set[str | None] = set()
        if self.async_api is None:
            # Without the async client (unit tests, tools): one list, no watch.
            for wl in self.api.list_workloads():
                listed.add(metadata(wl).get("uid"))
                actions = self.on_workload(wl)
                if actions:
                    self.finalizers.apply(actions)
        return listed

    async def prime_async(self) -> None:
        if self.ready.is_set():
            return
        # Where start-up time goes, logged with "state primed" (docs/performance.md keeps it).
        phases: dict[str, float] = {}
        mark = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            phases[name] = round(now - mark, 3)
            mark = now

        # No cyclic collection while priming: what priming allocates lives on (the state) or
        # dies by reference count (the listed bodies), and full collections walking the growing
        # state again and again were half of priming's time (measured: 2.0 s -> 1.0 s at 20,000
        # Workloads). Collected once at the end, and what survives is frozen: it lives as long as
        # its object, and a full collection walking 50,000 workloads' objects while an admission
        # waits is a latency spike.
        gc.disable()
        try:
            await self._prime_all(lap)
        finally:
            gc.enable()
        gc.collect()
        gc.freeze()
        lap("collectSeconds")
        self.ready.set()
        log.info("state primed", extra={"licenses": len(self.state.licenses), "workloads": len(self.state.workloads),
                                        "sources": len(self.catalog.sources), **phases})

    async def _prime_all(self, lap: Callable[[str], None]) -> None:
        listed = await asyncio.to_thread(self.prime)
        lap("ledgerAndOtherKindsSeconds")
        if self.async_api is not None:
            # Workloads are listed in pages by the informer that then watches them (see
            # operator.workload_watch): its first list is the priming list.
            if self.workload_watch.informer is None:
                await self.workload_watch.start()
            listed = self.workload_watch.listed_uids()
        lap("workloadsSeconds")
        # The sourced kinds' first listings (bounded: a kind that cannot be listed is reported on
        # its source and is neither counted nor gated, it never keeps the replica unready).
        await self.informers.sync(wait=True)
        lap("sourcedKindsSeconds")
        try:
            self.meter.reconcile_vanished(self.ledger, listed, self.sourced.accounts_for)
        except Exception:  # noqa: BLE001 -- a damaged ledger row must not keep admission down
            log.exception("reconciling objects that vanished while the operator was down failed")
        lap("reconcileSeconds")

    async def stop(self) -> None:
        """Stop watching Workloads and writing their finalizers (shutdown)."""
        await self.workload_watch.stop()
