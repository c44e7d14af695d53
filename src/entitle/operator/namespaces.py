"""Namespace watch events: the tenant label decides which tenant a namespace's objects count
under; a change of it moves every counted object (metered as movedOut/movedIn). The
``kube-system`` namespace's uid is the cluster's id (what ``spec.clusterID`` binds a License to)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from entitle.api.objects import metadata
from entitle.domain.state import ClusterState
from entitle.operator.boundary import ErrorBoundary
from entitle.operator.marks import StatusMarks
from entitle.operator.tenancy import TenancyHistory
from entitle.operator.usage_meter import UsageMeter


class NamespaceWatch:
    def __init__(self, state: ClusterState, marks: StatusMarks, meter: UsageMeter, tenancy: TenancyHistory,
                 boundary: ErrorBoundary, clock: Callable[[], datetime], on_cluster_id: Callable[[], None],
                 on_gone: Callable[[str], None]) -> None:
        self.state, self.marks, self.meter, self.tenancy = state, marks, meter, tenancy
        self.boundary, self.clock = boundary, clock
        # The cluster's id changed (re-read bound Licenses); a namespace was deleted.
        self.on_cluster_id, self.on_gone = on_cluster_id, on_gone

    def on_namespace(self, body: dict[str, Any], deleted: bool = False) -> None:
        self.boundary.guard("Namespace", body, self._on_namespace, deleted)

    def _on_namespace(self, body: dict[str, Any], deleted: bool) -> None:
        meta = metadata(body)
        name = meta.get("name")
        if name == "kube-system" and not deleted and meta.get("uid") and self.state.cluster_id != meta["uid"]:
            self.state.cluster_id = str(meta["uid"])
            self.on_cluster_id()
        before = self.state.tenant_of(name)
        if deleted:
            self.state.delete_namespace(name)
            self.on_gone(name)
        else:
            labels = meta.get("labels") or {}
            self.state.set_namespace(name, {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {})
        after = self.state.tenant_of(name)
        self.marks.tenant(before, after)
        self.tenancy.observe(name, meta, before != after, deleted, self.clock())
        if before != after:
            # Every counted object in the namespace changes tenant: meter the move.
            for key in list(self.state.namespace_workloads(name)):
                entry = self.state.workloads.get(key)
                if entry is not None and entry.workload is not None and entry.stored is not None:
                    self.meter.move(entry.workload, after, default=before)
            if after is None:
                self.marks.namespaces.add(name)
