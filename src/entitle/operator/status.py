"""Status subresources, conditions and Kubernetes Events, written by the leader replica.

Status is computed from the in-memory state by the domain (``domain.status``) and written
through ``AsyncApi``; a
Workload's verdict is recomputed only when its basis (its generation, or the tenant-wide
inputs of ``verdict_basis``) changed, so a tick costs O(changed), not O(workloads).

Blast radius: each tenant's status is computed inside its own error boundary, and a tick as a
whole never ends the loop. A tenant whose status cannot be computed is logged and counted
(``entitle_status_errors_total``); every other tenant's status, Events and expiring holds go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any, Callable, NamedTuple

import orjson

from entitle.adapters.kube.client import FIELD_MANAGER
from entitle.api import GROUP, VERSION
from entitle.domain.notices import LICENSE_CONDITIONS, NOTICES, notices
from entitle.domain.state import ClusterState
from entitle.domain.status import condition, entitled, license_status, merge_patch, merged, verdict_basis
from entitle.operator import metrics
from entitle.operator.events import EventQueue
from entitle.operator.license_specs import LicenseSpecs
from entitle.operator.marks import StatusMarks
from entitle.operator.notices import Notices
from entitle.operator.revisions import LicenseRevisions
from entitle.operator.tenant_view import TenantViews

log = logging.getLogger("entitle.controller")


class StatusWrite(NamedTuple):
    """A status write to make: ``license`` (name, status), ``workload`` (namespace, name,
    status), ``tent`` (namespace, view) or ``tent-delete`` (namespace,)."""

    kind: str
    args: tuple


# Pending writes are coalesced per object; Licenses go first, then the tenants' own views.
_RANK = {"license": 0, "tent": 1, "tent-delete": 1}


def _pending_key(write: StatusWrite) -> tuple:
    if write.kind == "workload":
        return ("workload", write.args[0], write.args[1])
    # A namespace's view write and its deletion replace each other (the last one wins).
    return ("tent" if write.kind.startswith("tent") else write.kind, write.args[0])


class StatusWriter:
    def __init__(self, cfg: Any, state: ClusterState, marks: StatusMarks, events: EventQueue, specs: LicenseSpecs,
                 revisions: LicenseRevisions, tenant_views: TenantViews, notices: Notices,
                 license_pass: Callable[[str, datetime], None], api: Any) -> None:
        self.cfg, self.state, self.marks, self.events, self.specs = cfg, state, marks, events, specs
        self.revisions, self.tenant_views, self.notices, self.license_pass, self.api = \
            revisions, tenant_views, notices, license_pass, api
        self._license_status: dict[str, dict] = {}
        self._license_conditions: dict[str, list] = {}
        self._workload_status: dict[tuple[str, str], str] = {}     # JSON text, see below
        # What each workload's last computed status was based on (see verdict_basis).
        self._workload_basis: dict[tuple[str, str], tuple | None] = {}
        # The status each object holds in the apiserver (from the watch, plus our own last
        # write): a status write removes what the new status no longer has (merge_patch).
        self._stored_status: dict[tuple, str | None] = {}
        self._pending: dict[tuple, StatusWrite] = {}
        self._refresh_after: str | None = None

    # -- what the watches tell -------------------------------------------------------------------
    def recompute_all(self) -> None:
        """Forget what was computed (a new term, a failed write): every status is computed anew."""
        self._license_status.clear()
        self._workload_status.clear()
        self._workload_basis.clear()

    def new_term(self) -> None:
        self._pending = {}

    def license_seen(self, name: str, status: Any) -> None:
        self._remember_stored_status(("License", name), status)

    def license_conditions_seen(self, name: str, conditions: list[dict]) -> None:
        self._license_conditions[name] = conditions

    def license_gone(self, name: str) -> None:
        self._stored_status.pop(("License", name), None)
        self._license_status.pop(name, None)

    def workload_seen(self, ns: str, name: str, status: Any) -> None:
        self._remember_stored_status(("Workload", ns, name), status)

    def workload_gone(self, ns: str, name: str) -> None:
        self._workload_status.pop((ns, name), None)
        self._workload_basis.pop((ns, name), None)
        self._stored_status.pop(("Workload", ns, name), None)

    # What is kept per object, as JSON text: at fleet scale a status dict per Workload,
    # twice over (what is stored, what was last computed), was ~2.5 KB each; the text is a
    # tenth of that, and are read back only when a status is computed or written.
    def _remember_stored_status(self, key: tuple, status: Any) -> None:
        # decode(): orjson hands back a buffer of its own allocation size (KiBs); a str is exact.
        self._stored_status[key] = orjson.dumps(status).decode() if isinstance(status, dict) and status else None

    def _stored_status_of(self, key: tuple) -> dict | None:
        raw = self._stored_status.get(key)
        return orjson.loads(raw) if raw else None

    def _last_conditions(self, ns: str, name: str) -> list[dict]:
        """The Entitled condition as last computed here, else as stored in the apiserver."""
        raw = self._workload_status.get((ns, name)) or self._stored_status.get(("Workload", ns, name))
        return (orjson.loads(raw).get("conditions") or []) if raw else []

    def _queue_workload_status(self, ns: str, name: str, now: datetime) -> dict | None:
        entry = self.state.workloads.get((ns, name))
        invalid = self.marks.unreadable.get(("Workload", ns, name))
        if invalid is not None:
            return self._invalid_status(("Workload", ns, name), name, ns, invalid, now)
        if entry is None or entry.workload is None:
            return None
        tenant = entry.tenant
        ent = self.state.entitlement(tenant, now) if tenant else None
        usage = self.state.usage[tenant] if tenant else None
        bursts = {p: c for (t, p), c in self.state.bursts.items() if t == tenant}
        fp = self.state.footprint_of(entry.workload)
        ok, reason, message = entitled(tenant, fp, ent, usage, bursts, now)
        gen = entry.workload.metadata.generation
        previous = self._last_conditions(ns, name)
        status = {
            "observedGeneration": gen, "replicas": fp.replicas, "units": fp.units, "tenant": tenant,
            "licenses": list(ent.licenses) if ent and ok else [],
            "conditions": [condition("Entitled", ok, reason, message, gen, previous, now)],
        }
        encoded = orjson.dumps(status).decode()
        if self._workload_status.get((ns, name)) == encoded:
            return None
        self._note_condition_changes("Workload", name, ns, previous, status["conditions"], now,
                                     uid=entry.workload.metadata.uid)
        self._workload_status[(ns, name)] = encoded
        if self._stored_status_of(("Workload", ns, name)) == status:
            # Already stored exactly so (a restart over a fleet whose status is current):
            # nothing to write -- 50,000 no-op patches would hold the write budget for minutes.
            return None
        return status

    def _invalid_status(self, key: tuple, name: str, ns: str | None, message: str, now: datetime) -> dict | None:
        """The status of a Workload the engine cannot read: Entitled=False, InvalidSpec, why."""
        previous = (self._stored_status_of(key) or {}).get("conditions") or []
        status = {"conditions": [condition("Entitled", False, "InvalidSpec", message[:1000], None, previous, now)]}
        encoded = orjson.dumps(status).decode()
        if self._workload_status.get((ns, name)) == encoded:
            return None
        self._note_condition_changes("Workload", name, ns, previous, status["conditions"], now,
                                     uid=self._uid_of("Workload", ns, name))
        self._workload_status[(ns, name)] = encoded
        return status

    def _uid_of(self, kind: str, ns: str | None, name: str) -> str | None:
        if kind == "License":
            return self.specs.uid_of(name)
        workload = self.state.workload(ns, name)
        return workload.metadata.uid if workload is not None else None

    def _note_condition_changes(self, kind: str, name: str, ns: str | None, before: list[dict],
                                after: list[dict], now: datetime, uid: str | None = None) -> None:
        old = {c.get("type"): c.get("status") for c in before if isinstance(c, dict)}
        for cond in after:
            if kind == "License" and cond["type"] in LICENSE_CONDITIONS and (cond["type"], cond["reason"]) in NOTICES:
                continue   # a lifecycle notice: its own Event (operator.notices), not a second one
            bad = (cond["type"] in ("Valid", "Active", "Entitled")) != (cond["status"] == "True")
            # A change of status, or a first status that is bad news (e.g. a Workload that is
            # not Entitled from the start). A first "all is well" is no Event: Events mark what a
            # person acts on, and a new leader (or a fresh install) seeing 50,000 entitled
            # Workloads for the first time must not post 50,000 of them.
            first = cond["type"] not in old
            if (first and bad) or (not first and old[cond["type"]] != cond["status"]):
                self.events.event(kind, name, ns, "Warning" if bad else "Normal",
                           f"{cond['type']}{cond['status']}", cond.get("message") or cond["reason"], now, uid=uid)

    # Workload verdicts computed per tick at most: a new leader's first pass over 50,000
    # Workloads is spread over many ticks. And per slice: a tick computes them a slice at a time
    # and gives the event loop (which serves the webhook too) back between slices, so no
    # admission waits behind a whole tick.
    status_budget = 2000
    status_slice = 100
    # ...and a slice ends after this long even when it computed few verdicts (every tenant's
    # Licenses and metrics are looked at too: 500 tenants at once held the loop ~50 ms).
    status_slice_seconds = 0.005
    refresh_used = 0

    def refresh(self, tenants: set[str], now: datetime, budget: int | None = None,
                seconds: float | None = None) -> list[StatusWrite]:
        """Compute the status patches for ``tenants``; returns (kind, args) writes to make.
        At most ``budget`` (default ``status_budget``) Workload verdicts are computed: a tenant
        whose Workloads did not all fit stays dirty, and so does every tenant not reached. The
        next call starts after the tenant that used the budget up (round robin: a tenant with a
        long backlog never holds the others back). A tenant whose status cannot be computed is
        skipped (logged), the others go on. With ``seconds``, no tenant is begun after that
        long (at least one is). ``refresh_used``: the verdicts computed."""
        writes: list[StatusWrite] = []
        left = [self.status_budget if budget is None else budget]
        given = left[0]
        deadline = None if seconds is None else time.perf_counter() + seconds
        begun, previous = 0, None
        ordered = sorted(tenants)
        after = self._refresh_after
        if after is not None:
            ordered = [t for t in ordered if t > after] + [t for t in ordered if t <= after]
        self._refresh_after = None
        for tenant in ordered:
            if left[0] <= 0 or (begun and deadline is not None and time.perf_counter() > deadline):
                self.marks.tenants.add(tenant)     # not reached: next time
                if self._refresh_after is None and begun:
                    self._refresh_after = previous
                continue
            begun, previous = begun + 1, tenant
            try:
                writes += self._refresh_tenant(tenant, self.state.tenant_workloads(tenant), now, left)
            except Exception:  # noqa: BLE001 -- one tenant's fault stays that tenant's
                metrics.STATUS_ERRORS.inc()
                log.exception("status of tenant %s could not be computed; other tenants go on", tenant)
            if left[0] <= 0:
                self._refresh_after = tenant
        writes += self._refresh_untenanted(now, left)
        self.refresh_used = given - left[0]
        return writes

    async def refresh_sliced(self, tenants: set[str], now: datetime) -> list[StatusWrite]:
        """:meth:`refresh` within this tick's budget, a ``status_slice`` (or
        ``status_slice_seconds``) at a time, yielding to the event loop between slices."""
        fresh: list[StatusWrite] = []
        left = self.status_budget
        deferred: set[str] = set()
        # Each slice begins at least one tenant, and tenants marked while the loop is given
        # back wait for the next tick: the loop ends.
        while left > 0 and (tenants or self.marks.namespaces):
            fresh += self.refresh(tenants, now, budget=min(left, self.status_slice), seconds=self.status_slice_seconds)
            left -= self.refresh_used
            tenants = self.marks.take_tenants()           # what this slice did not reach
            await asyncio.sleep(0)
            deferred |= self.marks.take_tenants()         # marked meanwhile: next tick
        self.marks.tenants = tenants | deferred
        return fresh

    def _refresh_tenant(self, tenant: str, keys: Any, now: datetime, budget: list[int]) -> list[StatusWrite]:
        writes: list[StatusWrite] = []
        self.state.observe_bursts(tenant, now)
        ent = self.state.entitlement(tenant, now)
        usage = self.state.usage[tenant]
        bursts = {p: c for (t, p), c in self.state.bursts.items() if t == tenant}
        metrics.observe_tenant(tenant, usage, ent, bursts, now)
        metrics.observe_licenses(tenant, self.state.licenses_of(tenant), now)
        for lic in self.state.licenses_of(tenant):
            # (An unreadable License is in the picture as an invalid one: Valid=False, its reason.)
            status = license_status(lic, ent, usage, bursts, now, self._license_conditions.get(lic.name, []))
            revision = self.revisions.current.get(lic.name)
            if revision is not None:
                status["revisionHash"], status["revision"] = revision
            pools = [p for p in ("instances", "seats", "sessions") if p in status]
            comparable = {k: v for k, v in status.items() if k not in pools}
            # Burst time is persisted (so a restart keeps the budget) at minute resolution,
            # not on every tick.
            comparable["pools"] = {p: {**status[p], "burstUsedSeconds": int(status[p]["burstUsedSeconds"] // 60)}
                                   for p in pools}
            if self._license_status.get(lic.name) != comparable:
                uid = self.specs.uid_of(lic.name)
                before = self._license_conditions.get(lic.name, [])
                self._note_condition_changes("License", lic.name, None, before, status["conditions"], now, uid=uid)
                self.notices.report(notices(before, status["conditions"], tenant, "License", lic.name, now), uid=uid)
                self._license_status[lic.name] = comparable
                self._license_conditions[lic.name] = status["conditions"]
                writes.append(StatusWrite("license", (lic.name, status)))
            self.license_pass(lic.name, now)     # time-driven records: activation, expiry
        writes += [StatusWrite(*w) for w in self.tenant_views.writes(tenant, ent, usage, bursts, now)]
        basis = verdict_basis(tenant, ent, usage, bursts, now)
        for ns, name in keys:
            workload = self.state.workloads[(ns, name)].workload
            if workload is not None and workload.kind != "Workload":
                continue   # a sourced kind's claim: no Workload status (its InstanceSource reports)
            marker = (basis, workload.metadata.uid, workload.metadata.generation) if workload else None
            if marker is not None and self._workload_basis.get((ns, name)) == marker:
                continue  # nothing this workload's verdict reads has changed
            if budget[0] <= 0:
                self.marks.tenants.add(tenant)  # the rest next tick
                break
            budget[0] -= 1
            status = self._queue_workload_status(ns, name, now)
            self._workload_basis[(ns, name)] = marker
            if status is not None:
                writes.append(StatusWrite("workload", (ns, name, status)))
        return writes

    def _refresh_untenanted(self, now: datetime, budget: list[int]) -> list[StatusWrite]:
        """Workloads in namespaces without a tenant (label removed) and objects entitle cannot
        read: each gets a False condition saying why."""
        writes: list[StatusWrite] = []
        namespaces, self.marks.namespaces = self.marks.namespaces, set()
        unreadable = self.marks.unreadable
        for ns in sorted(namespaces):
            if self.state.tenant_of(ns) is None:
                writes += [StatusWrite(*w) for w in self.tenant_views.untenanted_writes(ns)]
            keys = [k for k in self.state.namespace_workloads(ns)]
            keys += [(n, name) for kind, n, name in unreadable if kind == "Workload" and n == ns]
            for key in sorted(set(keys)):
                entry = self.state.workloads.get(key)
                if entry is not None and entry.tenant is not None and ("Workload", *key) not in unreadable:
                    continue   # counted in a tenant: the tenant's pass owns its status
                if entry is not None and entry.workload is not None and entry.workload.kind != "Workload":
                    continue   # a sourced kind's claim: no Workload status
                if budget[0] <= 0:
                    self.marks.namespaces.add(ns)
                    break
                budget[0] -= 1
                try:
                    status = self._queue_workload_status(*key, now)
                except Exception:  # noqa: BLE001
                    metrics.STATUS_ERRORS.inc()
                    log.exception("status of workload %s/%s could not be computed", *key)
                    continue
                if status is not None:
                    writes.append(StatusWrite("workload", (*key, status)))
        return writes

    def paced(self, fresh: list[StatusWrite]) -> list[StatusWrite]:
        """Status writes at most ``statusWritesPerSecond``: they compete with admissions for the
        apiserver and etcd, and a burst of creates must not be answered with a burst of status
        patches. Later statuses of one object replace queued ones (coalesced); Licenses first."""
        pending = self._pending
        for write in fresh:
            key = _pending_key(write)
            pending.pop(key, None)
            # A Workload's status is not held while it waits (50,000 waiting dicts after a first
            # start): it is the last one computed, read back from _workload_status when written.
            pending[key] = StatusWrite("workload", (write.args[0], write.args[1], None)) \
                if write.kind == "workload" else write
        budget = max(1, int(self.cfg.status_writes_per_second * self.cfg.status_interval_seconds))
        # Licenses first, then the tenants' own views, then Workloads.
        ordered = sorted(pending, key=lambda k: _RANK.get(k[0], 2))[:budget]
        out = [pending.pop(key) for key in ordered]
        metrics.STATUS_BACKLOG.set(len(pending))
        return out

    async def write(self, kind: str, args: tuple) -> None:
        """A merge patch of the status subresource (field manager ``entitle``) that also removes
        what the new status no longer has (see ``merge_patch``); gone is fine."""
        if kind in ("tent", "tent-delete"):
            await self.tenant_views.write(kind, args)
            return
        if kind == "license":
            name, status = args
            key: tuple = ("License", name)
            path = f"apis/{GROUP}/{VERSION}/licenses/{name}/status"
        else:
            ns, name, status = args
            if status is None:
                computed = self._workload_status.get((ns, name))
                if not computed:
                    return        # forgotten meanwhile (deleted, or a new term recomputes it)
                status = orjson.loads(computed)
            key = ("Workload", ns, name)
            path = f"apis/{GROUP}/{VERSION}/namespaces/{ns}/workloads/{name}/status"
        stored = self._stored_status_of(key)
        patch = merge_patch(stored, status)
        await self.api.request("PATCH", path, {"status": patch}, content_type="application/merge-patch+json",
                               params={"fieldManager": FIELD_MANAGER}, ok=(200, 404))
        metrics.STATUS_WRITES.labels(kind=key[0]).inc()
        # Until the watch echoes it, our write is the best knowledge of what is stored.
        self._remember_stored_status(key, merged(stored, patch))
