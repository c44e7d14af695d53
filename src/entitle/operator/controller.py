"""The controller: keeps the in-memory state current from watch events (the records and the
status it derives live in ``operator.records`` and ``operator.status``).

Everything here runs on the operator's event loop; state mutations never await in the middle,
so the webhook (same loop) always sees a consistent picture. API writes go to a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from entitle.adapters.ledger import Ledger, LedgerWriter
from entitle.api import License, Workload
from entitle.domain import records
from entitle.domain.state import ClusterState
from entitle.domain.bursts import BurstClock
from entitle.operator.config import OperatorConfig
from entitle.operator.records import RecordKeeping
from entitle.operator.status import StatusReporting

log = logging.getLogger("entitle.controller")

# Held on every Workload so that a deletion that happens while the operator is down still
# reaches it, with the object's last state and its deletionTimestamp: the `deleted` record is
# exact (and any change not yet recorded is recorded first). Removed once the record is durable.
USAGE_FINALIZER = "entitle.dev/usage-record"


class Controller(RecordKeeping, StatusReporting):
    """Watch events in, the in-memory state kept current; usage records (``RecordKeeping``) and
    status, conditions and Events (``StatusReporting``) derived from it."""

    def __init__(self, cfg: OperatorConfig, state: ClusterState, ledger: Ledger, api: Any | None) -> None:
        self.cfg = cfg
        self.state = state
        self.ledger = ledger
        self.api = api
        self.ready = asyncio.Event()
        self.dirty: set[str] = set()
        # Kubernetes Events to post (denials, condition changes); flushed by the status loop so
        # the webhook never waits on an API write.
        self.events: list[dict[str, Any]] = []
        self._license_status: dict[str, dict] = {}
        self._license_conditions: dict[str, list] = {}
        self._workload_status: dict[tuple[str, str], dict] = {}
        # What each workload's last computed status was based on (see verdict_basis).
        self._workload_basis: dict[tuple[str, str], tuple | None] = {}
        self._license_meta: dict[str, dict] = {}
        self.pumps: list[Any] = []
        self._appended: OrderedDict[tuple[str, str], None] = OrderedDict()
        # Appends leave the event loop (it serves the webhook too): one writer thread, group commit.
        self.writer = LedgerWriter(ledger, on_added=lambda _: [pump.notify() for pump in self.pumps])
        self.pump_factory: Any = lambda: []
        self.leader = False
        self.admission: Any = None
        # AsyncApi (aiohttp) for status patches and events (set by the operator's wiring).
        self.async_api: Any = None

    def set_leader(self, leader: bool) -> None:
        self.leader = leader
        if leader:
            # Recompute everything: a new leader owes status for every tenant.
            self._license_status.clear()
            self._workload_status.clear()
            self._workload_basis.clear()
            self.dirty.update(self.state.tenants())
            self.pumps = [pump.start() for pump in self.pump_factory()]
        else:
            for pump in self.pumps:
                pump.stop(timeout=1)
            self.pumps = []

    def now(self) -> datetime:
        return self.cfg.now()

    # -- start-up ------------------------------------------------------------------------
    def prime(self) -> None:
        """List everything once so the webhook decides from a complete picture from the start."""
        for ns in self.api.list_namespaces():
            self.on_namespace(ns)
        for lic in self.api.list_licenses():
            self.on_license(lic)
        workloads = self.api.list_workloads()
        for wl in workloads:
            self.apply_finalizer_actions(self.on_workload(wl))
        self._reconcile_vanished({(w.get("metadata") or {}).get("uid") for w in workloads})
        self.ready.set()
        log.info("state primed", extra={"licenses": len(self.state.licenses),
                                        "workloads": len(self.state.workloads)})

    # -- watch events ----------------------------------------------------------------------
    def on_namespace(self, body: dict[str, Any], deleted: bool = False) -> None:
        meta = body.get("metadata") or {}
        name = meta.get("name")
        before = self.state.tenant_of(name)
        if deleted:
            self.state.delete_namespace(name)
        else:
            self.state.set_namespace(name, meta.get("labels") or {})
        after = self.state.tenant_of(name)
        self.dirty.update(t for t in (before, after) if t)

    def on_license(self, body: dict[str, Any], deleted: bool = False) -> None:
        name = (body.get("metadata") or {}).get("name")
        now = self.now()
        if deleted:
            read = self.state.delete_license(name)
            if read is not None:
                uid = (body.get("metadata") or {}).get("uid")
                self._append(records.license_record(
                    name, uid, read.tenant, "deleted", "deleted", now,
                    self.state.entitlement(read.tenant, now), self.cfg.source))
                self.dirty.add(read.tenant)
            self._license_status.pop(name, None)
            return
        try:
            lic = License.model_validate(body)
        except ValidationError as exc:
            # A bad object never crash-loops the operator: log it, skip it.
            log.error("license %s is not valid: %s", name, exc.errors()[0].get("msg"))
            return
        read = self.state.set_license(lic)
        self._license_meta[name] = {"uid": lic.metadata.uid, "body": body}
        self._license_conditions[name] = [c.model_dump(by_alias=True, mode="json") for c in
                                          (lic.status.conditions if lic.status else [])]
        if lic.status is not None:
            self._seed_bursts(read.tenant, lic)
        self._license_records(name, now)
        self.dirty.add(read.tenant)

    def on_workload(self, body: dict[str, Any], deleted: bool = False) -> list[tuple]:
        """Apply a watch event; returns the finalizer writes to make (outside the event loop)."""
        meta = body.get("metadata") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        now = self.now()
        try:
            workload = Workload.model_validate(body)
        except ValidationError as exc:
            log.error("workload %s/%s is not valid: %s", ns, name, exc.errors()[0].get("msg"))
            return []
        tenant = self.state.tenant_of(ns)
        finalizers = list(meta.get("finalizers") or [])
        actions: list[tuple] = []
        if not deleted and workload.metadata.deletion_timestamp is not None:
            # Terminating: record the last state (if new) and the deletion, then let it go.
            # Setting deletionTimestamp bumped metadata.generation by one; the spec we see is
            # the one of the generation before.
            self._record_stored(workload, body, tenant, now, generation=max(1, (workload.metadata.generation or 1) - 1))
            deleted = True
            actions.append(("remove", ns, name, finalizers))
        elif not deleted and USAGE_FINALIZER not in finalizers:
            actions.append(("add", ns, name, finalizers, meta.get("resourceVersion")))
        if deleted:
            self.state.forget_workload(ns, name)
            self._workload_status.pop((ns, name), None)
            self._workload_basis.pop((ns, name), None)
            if tenant:
                when = workload.metadata.deletion_timestamp or now
                self._append(records.workload_record(
                    workload, "deleted", tenant, when, self.state.table,
                    self.state.entitlement(tenant, now).licenses, self.cfg.source))
        else:
            self.state.observe_workload(workload)
            self._record_stored(workload, body, tenant, now)
        if tenant:
            self.state.observe_bursts(tenant, now)
            self.dirty.add(tenant)
        elif not deleted:
            self._queue_workload_status(ns, name, now)
        return actions

    def apply_finalizer_actions(self, actions: list[tuple]) -> None:
        """Blocking API writes; run in a thread."""
        if any(action[0] == "remove" for action in actions):
            # The finalizer goes only once the deletion's record is durable in the ledger.
            self.writer.barrier().result()
        for action in actions:
            try:
                if action[0] == "add":
                    self.api.add_workload_finalizer(action[1], action[2], USAGE_FINALIZER, action[3], action[4])
                else:
                    self.api.remove_workload_finalizer(action[1], action[2], USAGE_FINALIZER, action[3])
            except Exception as exc:
                log.warning("finalizer %s on %s/%s failed: %s", action[0], action[1], action[2], exc)

    def _seed_bursts(self, tenant: str, lic: License) -> None:
        status = lic.status
        for pool in ("instances", "seats"):
            ps = getattr(status, pool)
            if ps is not None and status.burst_month:
                self.state.seed_burst(tenant, pool, BurstClock(
                    status.burst_month, ps.burst_used_seconds, ps.over_since))

    # -- status ------------------------------------------------------------------------------