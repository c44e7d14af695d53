"""Workload watch events into the state, the ledger and status: a Workload is counted while it
exists (and while a foreign finalizer holds it), recorded as it changes, and let go once its
deletion is recorded."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable

from pydantic import ValidationError

from entitle.api import Workload
from entitle.api.objects import first_error, metadata
from entitle.domain.state import ClusterState
from entitle.operator.boundary import ErrorBoundary
from entitle.operator.finalizers import USAGE_FINALIZER, AddFinalizer, FinalizerAction, ReleaseFinalizer
from entitle.operator.marks import StatusMarks
from entitle.operator.status import StatusWriter
from entitle.operator.usage_meter import UsageMeter

log = logging.getLogger("entitle.controller")


class WorkloadEvents:
    def __init__(self, state: ClusterState, marks: StatusMarks, meter: UsageMeter, status: StatusWriter,
                 boundary: ErrorBoundary, clock: Callable[[], datetime]) -> None:
        self.state, self.marks, self.meter, self.status = state, marks, meter, status
        self.boundary, self.clock = boundary, clock

    def on_workload(self, body: dict[str, Any], deleted: bool = False) -> list[FinalizerAction]:
        """Apply a watch event; returns the finalizer writes to make (outside the event loop).
        A webhook worker only decides: the operator process records and releases finalizers."""
        actions = self.boundary.guard("Workload", body, self._on_workload, deleted) or []
        return actions if self.meter.enabled else []

    def vanished(self, uid: str, remembered: tuple[str, str]) -> None:
        """Deleted while the watch was down (seen on a relist): forget it as a deletion, metered
        from the last state the state holds (the deletion itself was not observed)."""
        namespace, name = remembered
        meta = {"namespace": namespace, "name": name, "uid": uid}
        self.boundary.guard("Workload", {"metadata": meta}, lambda _: self._forget(
            namespace, name, self.state.workload(namespace, name), meta, self.clock(), [], deleted=True))

    def _on_workload(self, body: dict[str, Any], deleted: bool) -> list[FinalizerAction]:
        meta = metadata(body)
        ns, name = meta.get("namespace"), meta.get("name")
        now = self.clock()
        finalizers = list(meta.get("finalizers") or [])
        terminating = bool(meta.get("deletionTimestamp"))
        self.status.workload_seen(ns, name, body.get("status"))
        try:
            workload = Workload.model_validate(body)
        except ValidationError as exc:
            reason = f"spec not readable: {first_error(exc)}"
            log.error("workload %s/%s is not valid: %s", ns, name, reason)
            # Its deletion must still go through, metered from the last state entitle read.
            known = self.state.workload(ns, name)
            if deleted or terminating:
                return self._forget(ns, name, known, meta, now, finalizers, deleted)
            self.marks.unreadable[("Workload", ns, name)] = reason
            self.marks.namespaces.add(ns)
            return []
        self.marks.unreadable.pop(("Workload", ns, name), None)
        tenant = self.state.tenant_of(ns)
        if not deleted and workload.metadata.deletion_timestamp is not None:
            return self._terminating(workload, meta, tenant, finalizers, now)
        if deleted:
            return self._forget(ns, name, workload, meta, now, finalizers, deleted=True)
        actions: list[FinalizerAction] = []
        if USAGE_FINALIZER not in finalizers:
            actions.append(AddFinalizer(ns, name, finalizers, meta.get("resourceVersion")))
        self.state.observe_workload(workload)
        self.meter.move(workload, tenant)
        self.meter.record_stored(workload, tenant, now)
        if tenant:
            self.state.observe_bursts(tenant, now)
            self.marks.tenant(tenant)
        else:
            self.marks.namespaces.add(ns)
        return actions

    def _terminating(self, workload: Workload, meta: dict, tenant: str | None, finalizers: list[str],
                     now: datetime) -> list[FinalizerAction]:
        # Record the last state (if new). Setting deletionTimestamp bumped metadata.generation
        # by one; the spec we see is the one of the generation before.
        self.meter.move(workload, tenant)
        self.meter.record_stored(workload, tenant, now, generation=max(1, (workload.metadata.generation or 1) - 1))
        if any(f != USAGE_FINALIZER for f in finalizers):
            # Another finalizer holds it: it still exists and can still be changed (scaled,
            # given users), so it keeps counting -- and holding its capacity -- until the others
            # let it go; its deletion is recorded then (DESIGN "Integrity against the tenant").
            self.state.observe_workload(workload)
            if tenant:
                self.state.observe_bursts(tenant, now)
                self.marks.tenant(tenant)
            return []
        return self._forget(meta.get("namespace"), meta.get("name"), workload, meta, now, finalizers, deleted=False)

    def _forget(self, ns: str, name: str, workload: Workload | None, meta: dict, now: datetime,
                finalizers: list[str], deleted: bool) -> list[FinalizerAction]:
        """The object is gone (or going): stop counting it, record the deletion under the tenant
        that counted it, and let the finalizer go once that record is durable."""
        self.state.forget_workload(ns, name)
        self.status.workload_gone(ns, name)
        self.marks.unreadable.pop(("Workload", ns, name), None)
        uid = meta.get("uid") or (workload.metadata.uid if workload else None)
        tenant = self.meter.record_gone(workload, uid, self.state.tenant_of(ns), now)
        if tenant:
            self.state.observe_bursts(tenant, now)
            self.marks.tenant(tenant)
        return [] if deleted else [ReleaseFinalizer(ns, name, finalizers)]
