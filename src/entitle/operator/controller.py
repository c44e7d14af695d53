"""The controllers: keep the in-memory state current, write status, append usage records.

Everything here runs on the operator's event loop; state mutations never await in the middle,
so the webhook (same loop) always sees a consistent picture. API writes go to a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from entitle.adapters.kube import FIELD_MANAGER, event_body
from entitle.adapters.ledger import Ledger, LedgerWriter
from entitle.api import GROUP, VERSION, License, Workload
from entitle.api.common import format_time
from entitle.domain import records
from entitle.domain.licenses import Phase
from entitle.domain.state import ClusterState
from entitle.domain.bursts import BurstClock
from entitle.domain.status import condition, entitled, license_status, verdict_basis
from entitle.domain.usage import footprint
from entitle.operator import metrics
from entitle.operator.config import OperatorConfig

log = logging.getLogger("entitle.controller")

# Held on every Workload so that a deletion that happens while the operator is down still
# reaches it, with the object's last state and its deletionTimestamp: the `deleted` record is
# exact (and any change not yet recorded is recorded first). Removed once the record is durable.
USAGE_FINALIZER = "entitle.dev/usage-record"


def _changed_at(body: dict[str, Any], fallback: datetime) -> datetime:
    """When the object's spec last changed, from its own timestamps (managedFields), else ``fallback``.

    The operator's own writes (status, finalizer; manager ``entitle``) are not changes of the object.
    """
    times = [m.get("time") for m in (body.get("metadata") or {}).get("managedFields") or []
             if m.get("time") and m.get("manager") != FIELD_MANAGER and m.get("subresource") != "status"]
    if not times:
        return fallback
    return datetime.fromisoformat(max(times).replace("Z", "+00:00"))


class Controller:
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
        # AsyncApi (aiohttp) for status writes; without it, the blocking client in a thread.
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

    def _reconcile_vanished(self, present_uids: set[str | None]) -> None:
        """Objects the ledger holds as live but the cluster no longer has were deleted while the
        operator was down: record each deletion once (deterministic id), at the time it is noticed."""
        now = self.now()
        for uid, last in self.ledger.live("workload").items():
            if uid not in present_uids:
                self._append(records.vanished_workload_record(last, now))
        for name, last in self.ledger.live("license").items():
            if name not in self.state.licenses:
                tenant = last["data"]["tenant"]
                self._append(records.license_record(name, last["data"].get("uid") or name, tenant, "deleted",
                                                    "deleted", now, self.state.entitlement(tenant, now),
                                                    self.cfg.source))

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

    def _record_stored(self, workload: Workload, body: dict[str, Any], tenant: str | None, now: datetime,
                       generation: int | None = None) -> None:
        if not tenant:
            return
        generation = generation or workload.metadata.generation or 1
        if generation != workload.metadata.generation:
            workload = workload.model_copy(deep=True)
            workload.metadata.generation = generation
        operation = "created" if generation == 1 else "updated"
        when = (workload.metadata.creation_timestamp or now) if operation == "created" else _changed_at(body, now)
        self._append(records.workload_record(
            workload, operation, tenant, when, self.state.table,
            self.state.entitlement(tenant, now).licenses, self.cfg.source))

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

    # -- records -----------------------------------------------------------------------------
    def _append(self, record: dict) -> None:
        # Status ticks and echo events re-derive the same records; skip the ledger transaction
        # (an fsync) for ids this process already appended. The ledger still deduplicates.
        key = (record["source"], record["id"])
        if key in self._appended:
            return
        self.writer.submit(record)
        self._appended[key] = None
        if len(self._appended) > 100_000:
            self._appended.popitem(last=False)

    def _license_records(self, name: str, now: datetime) -> None:
        read = self.state.licenses.get(name)
        meta = self._license_meta.get(name)
        if read is None or meta is None:
            return
        uid, body = meta["uid"], meta["body"]
        phase = read.phase(now)
        created = datetime.fromisoformat(body["metadata"]["creationTimestamp"].replace("Z", "+00:00")) \
            if body.get("metadata", {}).get("creationTimestamp") else now
        if phase in (Phase.ACTIVE, Phase.GRACE, Phase.EXPIRED):
            start = max(created, read.spec.not_before) if read.spec.not_before else created
            self._append(records.license_record(name, uid, read.tenant, "activated", "activated", start,
                                                self.state.entitlement(read.tenant, start),
                                                self.cfg.source))
        if (read.generation or 1) > 1:
            self._append(records.license_record(name, uid, read.tenant, "updated", read.generation,
                                                _changed_at(body, now), self.state.entitlement(read.tenant, now),
                                                self.cfg.source))
        if phase is Phase.EXPIRED:
            end = read.grace_ends
            self._append(records.license_record(name, uid, read.tenant, "expired", format_time(end), end,
                                                self.state.entitlement(read.tenant, end), self.cfg.source))

    def _seed_bursts(self, tenant: str, lic: License) -> None:
        status = lic.status
        for pool in ("instances", "seats"):
            ps = getattr(status, pool)
            if ps is not None and status.burst_month:
                self.state.seed_burst(tenant, pool, BurstClock(
                    status.burst_month, ps.burst_used_seconds, ps.over_since))

    # -- status ------------------------------------------------------------------------------
    def _queue_workload_status(self, ns: str, name: str, now: datetime) -> dict | None:
        entry = self.state.workloads.get((ns, name))
        if entry is None or entry.workload is None:
            return None
        tenant = entry.tenant
        ent = self.state.entitlement(tenant, now) if tenant else None
        usage = self.state.usage[tenant] if tenant else None
        bursts = {p: c for (t, p), c in self.state.bursts.items() if t == tenant}
        fp = footprint(entry.workload.spec, self.state.table)
        ok, reason, message = entitled(tenant, fp, ent, usage, bursts, now)
        gen = entry.workload.metadata.generation
        previous = self._workload_status.get((ns, name), {}).get("conditions") or \
            [c.model_dump(by_alias=True, mode="json") for c in
             (entry.workload.status.conditions if entry.workload.status else [])]
        status = {
            "observedGeneration": gen, "replicas": fp.replicas, "units": fp.units, "tenant": tenant,
            "licenses": list(ent.licenses) if ent and ok else [],
            "conditions": [condition("Entitled", ok, reason, message, gen, previous, now)],
        }
        if self._workload_status.get((ns, name)) == status:
            return None
        self._note_condition_changes("Workload", name, ns, previous, status["conditions"], now)
        self._workload_status[(ns, name)] = status
        return status

    def _note_condition_changes(self, kind: str, name: str, ns: str | None, before: list[dict],
                                after: list[dict], now: datetime) -> None:
        old = {c.get("type"): c.get("status") for c in before}
        for cond in after:
            bad = (cond["type"] in ("Valid", "Active", "Entitled")) != (cond["status"] == "True")
            # A change of status, or a first status that is bad news (e.g. a Workload that is
            # not Entitled from the start); a first "all is well" is news only for Entitled/Active.
            first = cond["type"] not in old
            if (first and (bad or cond["type"] in ("Entitled", "Active"))) or \
                    (not first and old[cond["type"]] != cond["status"]):
                self.event(kind, name, ns, "Warning" if bad else "Normal",
                           f"{cond['type']}{cond['status']}", cond.get("message") or cond["reason"], now)

    def event(self, kind: str, name: str, ns: str | None, event_type: str, reason: str, message: str,
              now: datetime, uid: str | None = None, own: bool = False) -> None:
        """Queue an Event. ``own``: about a request this replica decided (posted by any replica);
        otherwise about shared state (posted by the leader only, so never twice)."""
        log.info("event %s on %s %s/%s: %s", reason, kind, ns or "", name, message)
        if len(self.events) < 10_000:  # never grow without bound if the API is unreachable
            self.events.append({"kind": kind, "name": name, "namespace": ns, "uid": uid, "event_type": event_type,
                                "reason": reason, "message": message, "time": format_time(now), "own": own})

    def refresh(self, tenants: set[str], now: datetime) -> list[tuple[str, Any]]:
        """Compute the status patches for ``tenants``; returns (kind, args) writes to make."""
        writes: list[tuple[str, Any]] = []
        by_tenant: dict[str | None, list[tuple[str, str]]] = {}
        for key, entry in self.state.workloads.items():
            if entry.tenant in tenants:
                by_tenant.setdefault(entry.tenant, []).append(key)
        for tenant in sorted(tenants):
            self.state.observe_bursts(tenant, now)
            ent = self.state.entitlement(tenant, now)
            usage = self.state.usage[tenant]
            bursts = {p: c for (t, p), c in self.state.bursts.items() if t == tenant}
            metrics.observe_tenant(tenant, usage, ent, bursts, now)
            for lic in self.state.licenses_of(tenant):
                status = license_status(lic, ent, usage, bursts, now, self._license_conditions.get(lic.name, []))
                comparable = {k: v for k, v in status.items() if k not in ("instances", "seats")}
                # Burst time is persisted (so a restart keeps the budget) at minute resolution,
                # not on every tick.
                comparable["pools"] = {p: {**status[p], "burstUsedSeconds": int(status[p]["burstUsedSeconds"] // 60)}
                                       for p in ("instances", "seats")}
                if self._license_status.get(lic.name) != comparable:
                    self._note_condition_changes("License", lic.name, None,
                                                 self._license_conditions.get(lic.name, []), status["conditions"], now)
                    self._license_status[lic.name] = comparable
                    self._license_conditions[lic.name] = status["conditions"]
                    writes.append(("license", (lic.name, status)))
                self._license_records(lic.name, now)
            basis = verdict_basis(tenant, ent, usage, bursts, now)
            for ns, name in by_tenant.get(tenant, ()):
                workload = self.state.workloads[(ns, name)].workload
                marker = (basis, workload.metadata.uid, workload.metadata.generation) if workload else None
                if marker is not None and self._workload_basis.get((ns, name)) == marker:
                    continue  # nothing this workload's verdict reads has changed
                status = self._queue_workload_status(ns, name, now)
                self._workload_basis[(ns, name)] = marker
                if status is not None:
                    writes.append(("workload", (ns, name, status)))
        return writes

    async def status_loop(self) -> None:
        """Expire reservations, follow the clock, and write status for tenants that changed."""
        await self.ready.wait()
        ticks = 0
        while True:
            now = self.now()
            # Reservations expire in real time (see SharedAdmission), not on an injected clock.
            released = self.state.expire_reservations(datetime.now(timezone.utc))
            if released:
                log.info("released %d expired reservations", released)
            ticks += 1
            if ticks % 10 == 0:   # time-driven transitions: expiry, grace, trials, bursts
                self.dirty.update(self.state.tenants())
            if not self.leader:
                # Standby: keep the picture (bursts folded) but leave status and events to the leader.
                for tenant in self.dirty:
                    self.state.observe_bursts(tenant, now)
                self.dirty = set()
                await self._flush_events(only_own=True)
                await asyncio.sleep(self.cfg.status_interval_seconds)
                continue
            tenants, self.dirty = self.dirty, set()
            writes = self.refresh(tenants, now) if tenants else []
            failed = 0
            for start in range(0, len(writes), 16):  # a few in flight at once
                results = await asyncio.gather(*[self._write_status(kind, args) for kind, args in
                                                 writes[start:start + 16]], return_exceptions=True)
                for exc in (r for r in results if isinstance(r, Exception)):
                    failed += 1
                    if failed == 1:
                        log.warning("status write failed: %s", exc)
            if failed:  # recompute everything on the next tick, which retries
                self._license_status.clear()
                self._workload_status.clear()
                self._workload_basis.clear()
            await self._flush_events(only_own=False)
            await asyncio.sleep(self.cfg.status_interval_seconds)

    async def _write_status(self, kind: str, args: tuple) -> None:
        """A merge patch of the status subresource (field manager ``entitle``); gone is fine."""
        if self.async_api is None:
            patch = self.api.patch_license_status if kind == "license" else self.api.patch_workload_status
            await asyncio.to_thread(patch, *args)
            return
        if kind == "license":
            name, status = args
            path = f"apis/{GROUP}/{VERSION}/licenses/{name}/status"
        else:
            ns, name, status = args
            path = f"apis/{GROUP}/{VERSION}/namespaces/{ns}/workloads/{name}/status"
        await self.async_api.request("PATCH", path, {"status": status}, content_type="application/merge-patch+json",
                                     params={"fieldManager": FIELD_MANAGER}, ok=(200, 404))

    async def _flush_events(self, only_own: bool) -> None:
        events, self.events = self.events, []
        for ev in events:
            if only_own and not ev["own"]:
                continue
            body = {k: v for k, v in ev.items() if k != "own"}
            try:
                if self.async_api is not None:
                    namespace, event = event_body(**body)
                    await self.async_api.request("POST", f"api/v1/namespaces/{namespace}/events", event)
                else:
                    await asyncio.to_thread(self.api.post_event, **body)
            except Exception as exc:
                log.warning("event post failed: %s", exc)
