"""The controller: keeps the in-memory state current from watch events (the records and the
status it derives live in ``operator.records`` and ``operator.status``).

Everything here runs on the operator's event loop; state mutations never await in the middle,
so the webhook (same loop) always sees a consistent picture. API writes go to a thread.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from entitle.adapters.metering.ledger import Ledger, LedgerWriter
from entitle.api import License, Workload
from entitle.api.common import TENANT_LABEL, parse_time
from entitle.domain import records
from entitle.domain.bursts import BurstClock, plausible
from entitle.domain.licenses import invalid_license
from entitle.domain.revisions import spec_hash
from entitle.domain.state import ClusterState
from entitle.operator import metrics
from entitle.operator.config import OperatorConfig
from entitle.operator.notices import NoticeReporting
from entitle.operator.records import MISSING, RecordKeeping
from entitle.operator.revisions import RevisionKeeping
from entitle.operator.tenant_view import TenantViewKeeping
from entitle.operator.sources import SourceKeeping
from entitle.operator.status import StatusReporting
from entitle.operator.workload_watch import WorkloadWatching

log = logging.getLogger("entitle.controller")

# Held on every Workload so that a deletion that happens while the operator is down still
# reaches it, with the object's last state and its deletionTimestamp: the `deleted` record is
# exact (and any change not yet recorded is recorded first). Removed once the record is durable.
USAGE_FINALIZER = "entitle.dev/usage-record"


class Controller(RecordKeeping, StatusReporting, SourceKeeping, RevisionKeeping, TenantViewKeeping,
                 NoticeReporting, WorkloadWatching):
    """Watch events in, the in-memory state kept current; usage records (``RecordKeeping``) and
    status, conditions and Events (``StatusReporting``) derived from it.

    Blast radius: every watch event is handled inside its own error boundary. An object the
    engine cannot read, or a fault while handling it, is logged, counted
    (``entitle_object_errors_total``) and reported on that object (status condition and Event);
    it never stops start-up, a loop, or another object's processing.
    """

    def __init__(self, cfg: OperatorConfig, state: ClusterState, ledger: Ledger, api: Any | None) -> None:
        self.cfg = cfg
        self.state = state
        self.ledger = ledger
        self.api = api
        self.ready = asyncio.Event()
        self.dirty: set[str] = set()
        # Namespaces whose workloads have no tenant now: their status is written outside the
        # per-tenant pass (they must not keep showing Entitled=True).
        self.dirty_namespaces: set[str] = set()
        # Kubernetes Events to post (denials, condition changes); flushed by the status loop so
        # the webhook never waits on an API write.
        self.events: list[dict[str, Any]] = []
        self._license_status: dict[str, dict] = {}
        self._license_conditions: dict[str, list] = {}
        self._workload_status: dict[tuple[str, str], str] = {}     # JSON text, see StatusReporting
        # What each workload's last computed status was based on (see verdict_basis).
        self._workload_basis: dict[tuple[str, str], tuple | None] = {}
        # The status each object holds in the apiserver (from the watch, plus our own last
        # write): a status write removes what the new status no longer has (merge_patch).
        self._stored_status: dict[tuple, str | None] = {}
        self._license_meta: dict[str, dict] = {}
        # Objects the engine could not read: (kind, namespace, name) -> message, for status.
        self.invalid: dict[tuple[str, str | None, str], str] = {}
        # uid -> the tenant the ledger counts the workload under (None: moved out to no tenant).
        # Seeded from the ledger's live table at start, so a move while the operator was down
        # is noticed and metered too.
        self._counted: dict[str, str | None] = {}
        # uid -> the highest generation this ledger has a record of (seeded from its live table).
        self._recorded_generation: dict[str, int] = {}
        # namespace -> when this process observed its tenant label change, and the namespace's
        # resourceVersion then (what pins the move's record ids across replicas); namespace ->
        # its creationTimestamp (no label is older than its namespace).
        self._label_times: dict[str, datetime] = {}
        self._label_versions: dict[str, str] = {}
        self._namespace_created: dict[str, datetime] = {}
        # uid -> the time of this ledger's newest record of the object (seeded from the live
        # table): no later record is dated before it (see operator.records).
        self._last_record_time: dict[str, datetime] = {}
        self.pumps: list[Any] = []
        self._listed_uids: set[str | None] = set()   # the Workloads of the priming list
        self._appended: OrderedDict[tuple[str, str], None] = OrderedDict()
        # Appends leave the event loop (it serves the webhook too): one writer thread, group commit.
        self.writer = LedgerWriter(ledger, on_added=self._on_ledger_added, on_failed=self._on_ledger_failed)
        self.pump_factory: Any = lambda: []
        self.leader = False
        # This operator's username (SelfSubjectReview at start): the only writer of TenantEntitlements.
        self.own_username: str | None = None
        self.admission: Any = None
        # AsyncApi (aiohttp) for status patches and events (set by the operator's wiring).
        self.async_api: Any = None
        self._init_sources()
        self._init_revisions()
        self._init_tenant_view()

    def _on_ledger_added(self, added: int) -> None:
        metrics.LEDGER_RECORDS.inc(added)
        for pump in self.pumps:
            pump.notify()

    # How long a finalizer release waits for its deletion record to become durable.
    durable_wait_seconds = 10.0

    @staticmethod
    def _on_ledger_failed(error: Exception | None, waiting: int) -> None:
        if error is not None:
            metrics.LEDGER_APPEND_FAILURES.inc()
        metrics.LEDGER_WAITING.set(waiting)

    def set_leader(self, leader: bool) -> None:
        self.leader = leader
        if self.records_enabled:        # (a webhook worker never leads; its metrics are not served)
            metrics.LEADER.set(1 if leader else 0)
        self._pending_status = {}     # a new term recomputes every status
        if leader:
            # Recompute everything: a new leader owes status for every tenant.
            self._license_status.clear()
            self._workload_status.clear()
            self._workload_basis.clear()
            self.dirty.update(self.state.tenants())
            self.dirty_namespaces.update(ns for ns, t in self.state.namespaces.items() if t is None)
            metrics.STATUS_TENANTS_PENDING.set(len(self.dirty))
            try:
                self.pumps = [pump.start() for pump in self.pump_factory()]
            except Exception:  # noqa: BLE001 -- records stay in the ledger; a later leader retries
                log.exception("starting the sinks failed; records wait in the ledger")
                self.pumps = []
        else:
            for pump in self.pumps:
                pump.stop(timeout=1)
            self.pumps = []
            self._revisions_lost_leadership()
            self._tent_lost_leadership()

    def now(self) -> datetime:
        return self.cfg.now()

    # -- start-up ------------------------------------------------------------------------
    def prime(self) -> None:
        """List everything once so the webhook decides from a complete picture from the start
        (the blocking part; :meth:`prime_async` adds the sourced kinds and marks ready).

        Idempotent (Kopf retries a failed start-up handler) and per-object guarded: one bad
        object is reported and skipped, it never keeps the operator from becoming ready."""
        metrics.LEDGER_RECORDS.set(self.ledger.count())
        for uid, body in self.ledger.iter_live("workload"):
            record = json.loads(body)
            data = record.get("data") or {}
            try:
                self._last_record_time[uid] = parse_time(record.get("time"))
            except (TypeError, ValueError):
                pass
            self._counted[uid] = None if data.get("operation") == "movedOut" else data.get("tenant")
            self._recorded_generation[uid] = int(data.get("generation") or 0)
            if (data.get("kind") or "Workload") != "Workload":
                self._recorded_claim[uid] = _claim_of_record(data, self.state.table)
        for ns in self.api.list_namespaces():
            self.on_namespace(ns)
        for lic in self.api.list_licenses():
            self.on_license(lic)
        for source in self.api.list_instance_sources():
            self.on_source(source)
        for anchor in self.api.list_usage_anchors():
            self.on_anchor(anchor)
        if self.async_api is None:
            # Without the async client (unit tests, tools): one list, no watch.
            for wl in self.api.list_workloads():
                self._listed_uids.add((wl.get("metadata") or {}).get("uid"))
                actions = self.on_workload(wl)
                if actions:
                    self.apply_finalizer_actions(actions)

    async def prime_async(self) -> None:
        if self.ready.is_set():
            return
        self._listed_uids = set()
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
                                        "sources": len(self.sources), **phases})

    async def _prime_all(self, lap: Any) -> None:
        await asyncio.to_thread(self.prime)
        lap("ledgerAndOtherKindsSeconds")
        if self.async_api is not None:
            # Workloads are listed in pages by the informer that then watches them (see
            # operator.workload_watch): its first list is the priming list.
            if self.workload_informer is None:
                await self.watch_workloads()
            self._listed_uids = self.listed_workload_uids()
        lap("workloadsSeconds")
        # The sourced kinds' first listings (bounded: a kind that cannot be listed is reported on
        # its source and is neither counted nor gated, it never keeps the replica unready).
        await self.sync_informers(wait=True)
        lap("sourcedKindsSeconds")
        try:
            self._reconcile_vanished(self._listed_uids)
        except Exception:  # noqa: BLE001 -- a damaged ledger row must not keep admission down
            log.exception("reconciling objects that vanished while the operator was down failed")
        self._listed_uids = set()
        lap("reconcileSeconds")

    # -- watch events ----------------------------------------------------------------------
    def _guarded(self, kind: str, body: Any, handler: Any, *args: Any) -> Any:
        """Run one watch event's handling inside an error boundary."""
        try:
            return handler(body, *args)
        except Exception as exc:  # noqa: BLE001 -- the boundary: report, never propagate
            meta = (body.get("metadata") if isinstance(body, dict) else None) or {}
            ns, name = meta.get("namespace"), str(meta.get("name") or "?")
            metrics.OBJECT_ERRORS.labels(kind=kind).inc()
            log.exception("handling %s %s%s failed; the object is skipped, everything else goes on",
                          kind, f"{ns}/" if ns else "", name)
            if kind == "Workload" and ns:
                self.invalid[(kind, ns, name)] = f"entitle could not process this object: {type(exc).__name__}: {exc}"
                self.dirty_namespaces.add(ns)
            self.event(kind, name, ns, "Warning", "ProcessingFailed",
                       f"entitle could not process this object: {type(exc).__name__}: {str(exc)[:300]}",
                       self.now(), uid=meta.get("uid"))
            return None

    def on_namespace(self, body: dict[str, Any], deleted: bool = False) -> None:
        self._guarded("Namespace", body, self._on_namespace, deleted)

    def on_license(self, body: dict[str, Any], deleted: bool = False) -> None:
        self._guarded("License", body, self._on_license, deleted)

    def on_workload(self, body: dict[str, Any], deleted: bool = False) -> list[tuple]:
        """Apply a watch event; returns the finalizer writes to make (outside the event loop).
        A webhook worker only decides: the operator process records and releases finalizers."""
        actions = self._guarded("Workload", body, self._on_workload, deleted) or []
        return actions if self.records_enabled else []

    def _on_namespace(self, body: dict[str, Any], deleted: bool) -> None:
        meta = body.get("metadata") or {}
        name = meta.get("name")
        if name == "kube-system" and not deleted and meta.get("uid") and self.state.cluster_id != meta["uid"]:
            # The cluster's id (what spec.clusterID binds a license to): re-read the bound ones.
            self.state.cluster_id = str(meta["uid"])
            self._reread_bound_licenses()
        before = self.state.tenant_of(name)
        if deleted:
            self.state.delete_namespace(name)
            self._tent_namespace_gone(name)   # its TenantEntitlement went with it
        else:
            labels = meta.get("labels") or {}
            self.state.set_namespace(name, {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {})
        after = self.state.tenant_of(name)
        self.dirty.update(t for t in (before, after) if t)
        now = self.now()
        first_sight = name not in self._namespace_created
        if deleted:
            for known in (self._label_times, self._label_versions, self._namespace_created):
                known.pop(name, None)
        else:
            created = meta.get("creationTimestamp")
            self._namespace_created[name] = parse_time(created) if isinstance(created, str) else now
            if before != after and not first_sight:
                # A label change seen happening: moves are dated now (when it was observed), never
                # from the namespace's managedFields (a client writes those; once the label is gone
                # they no longer hold its entry, and a move came out older than what it moved).
                self._label_times[name] = now
                self._label_versions[name] = str(meta.get("resourceVersion") or "")
        if before != after:
            # Every counted object in the namespace changes tenant: meter the move.
            for key in list(self.state.namespace_workloads(name)):
                entry = self.state.workloads.get(key)
                if entry is not None and entry.workload is not None and entry.stored is not None:
                    self._sync_tenant(entry.workload, after, default=before)
            if after is None:
                self.dirty_namespaces.add(name)

    def _reread_bound_licenses(self) -> None:
        """Licenses bound to a cluster are decided again once this cluster's id is known/changed."""
        for name, known in list(self._license_meta.items()):
            spec = (known.get("body") or {}).get("spec") or {}
            if isinstance(spec, dict) and spec.get("clusterID"):
                self._on_license(known["body"], deleted=False)

    def _on_license(self, body: dict[str, Any], deleted: bool) -> None:
        meta = body.get("metadata") or {}
        name = meta.get("name")
        now = self.now()
        if deleted:
            read = self.state.delete_license(name)
            self.invalid.pop(("License", None, name), None)
            self._stored_status.pop(("License", name), None)
            if read is not None:
                self._append(records.license_record(
                    name, meta.get("uid"), read.tenant, "deleted", "deleted", now,
                    self.state.entitlement(read.tenant, now), self.cfg.source))
                self.dirty.add(read.tenant)
            self._license_status.pop(name, None)
            self.license_revision.pop(name, None)
            return
        self._remember_stored_status(("License", name), body.get("status"))
        try:
            lic = License.model_validate(body)
        except ValidationError as exc:
            # Unreadable (e.g. stored before the CRD had its bounds): it grants nothing, and
            # its status and an Event say why. Only its own tenant is affected.
            first = exc.errors()[0]
            reason = f"spec not readable: {'.'.join(map(str, first['loc']))}: {first['msg']}"
            spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
            tenant = spec.get("tenant") if isinstance(spec.get("tenant"), str) else ""
            log.error("license %s is not valid: %s", name, reason)
            read = self.state.set_read_license(invalid_license(name, tenant, meta.get("generation"), reason))
            self._license_meta[name] = {"uid": meta.get("uid"), "body": body, "digest": spec_hash(body.get("spec"))}
            self.dirty.add(read.tenant)
            return
        read = self.state.set_license(lic)
        self.invalid.pop(("License", None, name), None)
        # The spec's hash once per event: revisions and records compare it every tick.
        self._license_meta[name] = {"uid": lic.metadata.uid, "body": body, "digest": spec_hash(body.get("spec"))}
        self._note_revision_status(name, body)
        self._license_conditions[name] = [c.model_dump(by_alias=True, mode="json") for c in
                                          (lic.status.conditions if lic.status else [])]
        if lic.status is not None:
            self._seed_bursts(read.tenant, lic)
        self._license_records(name, now)
        self.dirty.add(read.tenant)

    def _on_workload(self, body: dict[str, Any], deleted: bool) -> list[tuple]:
        meta = body.get("metadata") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        now = self.now()
        finalizers = list(meta.get("finalizers") or [])
        terminating = bool(meta.get("deletionTimestamp"))
        self._remember_stored_status(("Workload", ns, name), body.get("status"))
        try:
            workload = Workload.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            reason = f"spec not readable: {'.'.join(map(str, first['loc']))}: {first['msg']}"
            log.error("workload %s/%s is not valid: %s", ns, name, reason)
            # Its deletion must still go through, metered from the last state entitle read.
            known = self.state.workload(ns, name)
            if deleted or terminating:
                return self._forget(ns, name, known, meta, now, finalizers, deleted)
            self.invalid[("Workload", ns, name)] = reason
            self.dirty_namespaces.add(ns)
            return []
        self.invalid.pop(("Workload", ns, name), None)
        tenant = self.state.tenant_of(ns)
        actions: list[tuple] = []
        if not deleted and workload.metadata.deletion_timestamp is not None:
            # Terminating: record the last state (if new). Setting deletionTimestamp bumped
            # metadata.generation by one; the spec we see is the one of the generation before.
            self._sync_tenant(workload, tenant)
            self._record_stored(workload, body, tenant, now, generation=max(1, (workload.metadata.generation or 1) - 1))
            if any(f != USAGE_FINALIZER for f in finalizers):
                # Another finalizer holds it: it still exists and can still be changed (scaled,
                # given users), so it keeps counting -- and holding its capacity -- until the others
                # let it go; its deletion is recorded then (DESIGN "Integrity against the tenant").
                self.state.observe_workload(workload)
                if tenant:
                    self.state.observe_bursts(tenant, now)
                    self.dirty.add(tenant)
                return []
            return self._forget(ns, name, workload, meta, now, finalizers, deleted=False)
        if deleted:
            return self._forget(ns, name, workload, meta, now, finalizers, deleted=True)
        if USAGE_FINALIZER not in finalizers:
            actions.append(("add", ns, name, finalizers, meta.get("resourceVersion")))
        self.state.observe_workload(workload)
        self._sync_tenant(workload, tenant)
        self._record_stored(workload, body, tenant, now)
        if tenant:
            self.state.observe_bursts(tenant, now)
            self.dirty.add(tenant)
        else:
            self.dirty_namespaces.add(ns)
        return actions

    def _forget(self, ns: str, name: str, workload: Workload | None, meta: dict, now: datetime,
                finalizers: list[str], deleted: bool) -> list[tuple]:
        """The object is gone (or going): stop counting it, record the deletion under the tenant
        that counted it, and let the finalizer go once that record is durable."""
        self.state.forget_workload(ns, name)
        self._workload_status.pop((ns, name), None)
        self._workload_basis.pop((ns, name), None)
        self._stored_status.pop(("Workload", ns, name), None)
        self.invalid.pop(("Workload", ns, name), None)
        uid = meta.get("uid") or (workload.metadata.uid if workload else None)
        counted = self._counted.pop(uid, MISSING) if uid else MISSING
        tenant = self.state.tenant_of(ns) if counted is MISSING else counted
        if workload is not None and tenant:
            when = self._deleted_at(uid, workload.metadata.deletion_timestamp, now)
            self._append(records.workload_record(
                workload, "deleted", tenant, when, self.state.table,
                self.state.entitlement(tenant, now).licenses, self.cfg.source, self.revisions_of(self.state.entitlement(tenant, now).licenses)))
            self.state.observe_bursts(tenant, now)
            self.dirty.add(tenant)
        elif uid and counted is None:
            # Counted nowhere (moved out to no tenant): its parked ledger row goes, no record.
            self.writer.forget_live("workload", uid)
        if uid:
            self._recorded_generation.pop(uid, None)
        return [] if deleted else [("remove", ns, name, finalizers)]

    def _sync_tenant(self, workload: Workload, tenant: str | None, default: Any = MISSING) -> None:
        """Meter a change of the tenant a workload counts under (its namespace's label changed,
        now or while the operator was down): movedOut of the old, movedIn to the new -- dated
        when this process saw the label change (or, noticed at start, now), never before the
        object's previous record."""
        uid = workload.metadata.uid
        if not uid:
            return
        counted = self._counted.get(uid, default)
        if counted is MISSING:
            # Never metered by this ledger: its created/updated records will count it.
            if tenant:
                self._counted[uid] = tenant
            return
        if counted == tenant:
            return
        now = self.now()
        ns = workload.metadata.namespace or ""
        when = self._not_before_last(uid, self._label_times.get(ns, now))
        licenses = self.state.entitlement(tenant, now).licenses if tenant else ()
        for record in records.moved_records(workload, counted, tenant, when, self.state.table, licenses,
                                            self.cfg.source, self.revisions_of(licenses),
                                            change=self._label_versions.get(ns)):
            self._append(record)
        self._counted[uid] = tenant

    def apply_finalizer_actions(self, actions: list[tuple]) -> list[tuple]:
        """Blocking API writes; run in a thread. Returns the actions that failed and are worth
        another try (the apiserver or a webhook answered an error, the ledger could not make a
        deletion's record durable); a changed or vanished object is not one (the client lets
        404/409/422 pass: its next watch event, if any, asks again)."""
        failed: list[tuple] = []
        releases = [a for a in actions if a[0] in ("remove", "anchor-remove")]
        if releases:
            # The finalizer goes only once the deletion's record is durable in the ledger. While
            # appends fail (a full disk) the releases wait -- retried with backoff -- rather than
            # holding the finalizer queue (and every later add) for as long as the disk is full.
            try:
                self.writer.barrier().result(timeout=self.durable_wait_seconds)
            except Exception as exc:  # noqa: BLE001 -- the finalizer stays until the record is written
                log.warning("the ledger could not make deletion records durable; finalizers stay: %s", exc)
                failed = releases
                actions = [a for a in actions if a not in releases]
        for action in actions:
            try:
                if action[0] == "anchor-remove":
                    self.api.remove_anchor_finalizer(action[1], action[2], action[3])
                elif action[0] == "add":
                    self.api.add_workload_finalizer(action[1], action[2], USAGE_FINALIZER, action[3], action[4])
                else:
                    self.api.remove_workload_finalizer(action[1], action[2], USAGE_FINALIZER, action[3])
            except Exception as exc:  # noqa: BLE001 -- retried by the caller, with backoff
                log.warning("finalizer %s on %s/%s failed (retried): %s", action[0], action[1], action[2], exc)
                failed.append(action)
        return failed

    def _seed_bursts(self, tenant: str, lic: License) -> None:
        status, now = lic.status, self.now()
        for pool in ("instances", "seats"):
            ps = getattr(status, pool)
            if ps is not None and status.burst_month:
                clock = BurstClock(status.burst_month, ps.burst_used_seconds, ps.over_since)
                if not plausible(clock, now):
                    # A status is not proof (DESIGN "Integrity against the tenant"): a future month
                    # would reset the budget. Ignored; this replica counts the budget itself.
                    log.warning("license %s: ignoring an implausible %s burst budget in its status (month %s, "
                                "used %ss, over since %s)", lic.metadata.name, pool, clock.month,
                                clock.used_seconds, clock.over_since)
                    continue
                self.state.seed_burst(tenant, pool, clock)

    # -- status ------------------------------------------------------------------------------

def _claim_of_record(data: dict, table: Any) -> tuple:
    from entitle.domain.records import workload_from_record
    from entitle.operator.sources import _claim_key

    return _claim_key(workload_from_record({"data": data}), table)
