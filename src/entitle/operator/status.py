"""Status subresources, conditions and Kubernetes Events, written by the leader replica.

A mixin of :class:`entitle.operator.controller.Controller`. Status is computed from the
in-memory state by the domain (``domain.status``) and written through ``AsyncApi``; a
Workload's verdict is recomputed only when its basis (its generation, or the tenant-wide
inputs of ``verdict_basis``) changed, so a tick costs O(changed), not O(workloads).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

from entitle.adapters.kube import FIELD_MANAGER, event_body
from entitle.api import GROUP, VERSION
from entitle.api.common import format_time
from entitle.domain.status import condition, entitled, license_status, verdict_basis
from entitle.domain.usage import footprint
from entitle.operator import metrics

log = logging.getLogger("entitle.controller")


class StatusReporting:
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

    # Workload verdicts computed per tick at most: the event loop also serves the webhook, so a
    # new leader's first pass over 10,000 Workloads (~0.3 s) is spread over several ticks.
    status_budget = 2000

    def refresh(self, tenants: set[str], now: datetime) -> list[tuple[str, Any]]:
        """Compute the status patches for ``tenants``; returns (kind, args) writes to make.
        A tenant whose Workloads did not all fit in this tick's budget stays dirty."""
        writes: list[tuple[str, Any]] = []
        budget = self.status_budget
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
                if budget <= 0:
                    self.dirty.add(tenant)  # the rest next tick
                    break
                budget -= 1
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
                namespace, event = event_body(**body)
                await self.async_api.request("POST", f"api/v1/namespaces/{namespace}/events", event)
            except Exception as exc:
                log.warning("event post failed: %s", exc)
