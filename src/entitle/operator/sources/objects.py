"""The objects of sourced kinds: which of them count (the sources' selectors, under the owner
rule), what each claims, and what happens when one stops counting or goes. The one owner of
what is tracked and of the ownership tree between tracked objects."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable

from pydantic import ValidationError

from entitle.api.common import parse_time
from entitle.api.objects import api_group, metadata
from entitle.domain.ownership import controller_ref
from entitle.domain.sources import InvalidInstanceCount, Source, claim, matches, object_key
from entitle.domain.state import ClusterState
from entitle.operator.boundary import ErrorBoundary
from entitle.operator.marks import StatusMarks
from entitle.operator.sources.anchors import UsageAnchors
from entitle.operator.sources.catalog import GVK, SourceCatalog
from entitle.operator.sources.owners import SourceOwners, Tracked
from entitle.operator.usage_meter import UsageMeter

log = logging.getLogger("entitle.sources")

# Ownership chains deeper than this are cut (a hand-written cycle, an absurd tree).
MAX_CHAIN = 64


class SourcedObjects:
    def __init__(self, catalog: SourceCatalog, state: ClusterState, meter: UsageMeter, anchors: UsageAnchors,
                 marks: StatusMarks, boundary: ErrorBoundary, clock: Callable[[], datetime]) -> None:
        self.catalog, self.state, self.meter, self.anchors = catalog, state, meter, anchors
        self.marks, self.boundary, self.clock = marks, boundary, clock
        self.tracked: dict[str, Tracked] = {}                      # uid -> Tracked
        self._keys: dict[tuple[str, str], str] = {}                # (namespace, key) -> uid
        self.children: dict[str, set[str]] = {}                    # owner uid -> child uids
        self.invalid_counts: dict[str, str] = {}                   # uid -> message
        self._visiting: set[str] = set()
        self.owners = SourceOwners(self.tracked, self._keys, catalog.source_kinds, catalog.watched_kinds)

    # -- watch events ---------------------------------------------------------------------------
    def on_sourced(self, gvk: GVK, event: str, body: dict[str, Any]) -> None:
        self.boundary.guard(gvk[2], body, self._on_sourced, gvk, event)

    def _counting_source(self, group: str, kind: str, namespace: str, body: dict) -> Source | None:
        if self.owners.covered((group, kind), namespace, controller_ref(body)):
            return None         # the owner rule: a believed controller chain already counts it
        return next((s for s in self.catalog.of_kind(group, kind) if matches(s, body)), None)

    def _on_sourced(self, body: dict[str, Any], gvk: GVK, event: str) -> None:
        meta = metadata(body)
        uid, ns, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
        if not uid or not ns or not name:
            return
        group, _, kind = gvk
        self.catalog.dirty = True        # a source's count may have changed
        if event == "DELETED":
            self.untrack(uid, reason="deleted", body=body)
            return
        source = self._counting_source(group, kind, ns, body)
        ref = controller_ref(body)
        owner = ref.uid if ref is not None else None
        previous = self.tracked.get(uid)
        if previous is not None and previous.owner is not None and previous.owner != owner:
            self.children.get(previous.owner, set()).discard(uid)
        self.tracked[uid] = Tracked(uid, ns, object_key(kind, group, name), owner, source.name if source else None,
                                    body, group, kind, name, ref)
        self._keys[(ns, object_key(kind, group, name))] = uid
        if owner is not None:
            self.children.setdefault(owner, set()).add(uid)
        if source is None:
            if previous is not None and previous.source is not None:
                self._stop_counting(previous, reason="no longer selected")
        else:
            self._count(source, body)
        if (previous is None) or (previous.source is None) != (source is None):
            # Whether this one counts decides whether its children do.
            self._reconsider_children(uid)

    def _reconsider_children(self, uid: str, children: set[str] | None = None) -> None:
        """Re-decide the objects ``uid`` controls. Ownership cycles and self-references (an
        object naming itself its controller, hand-written) end at the first repeat."""
        if uid in self._visiting or len(self._visiting) > MAX_CHAIN:
            return
        self._visiting.add(uid)
        try:
            for child in list(self.children.get(uid, ()) if children is None else children):
                tracked = self.tracked.get(child)
                if tracked is not None and child != uid:
                    gvk = (api_group(tracked.body.get("apiVersion")), "", tracked.body.get("kind") or "")
                    self._on_sourced(tracked.body, gvk, "MODIFIED")
        finally:
            self._visiting.discard(uid)

    def _count(self, source: Source, body: dict) -> None:
        meta = metadata(body)
        uid, ns = meta["uid"], meta["namespace"]
        now = self.clock()
        try:
            workload = claim(source, body, self.state.table, counting=True)
        except InvalidInstanceCount as exc:
            self.invalid_counts[uid] = str(exc)
            return                      # keeps its last valid count (if any)
        except ValidationError as exc:
            self.invalid_counts[uid] = f"cannot read the object's claim: {exc.errors()[0]['msg']}"
            return
        self.invalid_counts.pop(uid, None)
        tenant = self.state.tenant_of(ns)
        self.state.observe_workload(workload)
        created = metadata(self.catalog.bodies.get(source.name)).get("creationTimestamp")
        self.meter.count_claim(workload, tenant, parse_time(created) if isinstance(created, str) else None, now)
        if tenant:
            self.state.observe_bursts(tenant, now)
            self.marks.tenant(tenant)

    def _stop_counting(self, tracked: Tracked, reason: str) -> None:
        """Still there, no longer counted (selector, owner or source changed): it moves out."""
        entry = self.state.workloads.get((tracked.namespace, tracked.key))
        workload = entry.workload if entry is not None else None
        self.state.forget_workload(tracked.namespace, tracked.key)
        tenant = self.meter.stop_claim(tracked.uid, workload, self.clock())
        if workload is not None and tenant:
            self.marks.tenant(tenant)
        log.info("%s %s/%s stops counting: %s", tracked.key, tracked.namespace, tracked.key, reason)

    def untrack(self, uid: str, reason: str, body: dict | None = None) -> None:
        tracked = self.tracked.pop(uid, None)
        if tracked is None:
            return
        self._keys.pop((tracked.namespace, tracked.key), None)
        if tracked.owner is not None:
            self.children.get(tracked.owner, set()).discard(uid)
        entry = self.state.workloads.get((tracked.namespace, tracked.key))
        workload = entry.workload if entry is not None else None
        self.state.forget_workload(tracked.namespace, tracked.key)
        tenant = self.meter.counted.get(uid)
        if tracked.source is not None and workload is not None and tenant:
            if reason == "deleted":
                if not self.anchors.depart(uid, workload, tenant):
                    # No anchor: its deletion is recorded at the time it is observed.
                    now = self.clock()
                    self.meter.claim_gone(uid, workload, tenant, now, now)
            else:
                self._stop_counting(tracked, reason)
            self.marks.tenant(tenant)
        self._reconsider_children(uid, self.children.pop(uid, set()))

    # -- what others ask --------------------------------------------------------------------------
    def accounts_for(self, uid: str, last: dict) -> bool:
        """Is a sourced object the ledger holds as live, and the cluster listing lacks, accounted
        for: still watched, of a kind entitle cannot list now (absence of evidence is not a
        deletion), or handed to its anchor, whose deletion times it?"""
        data = last.get("data") or {}
        if uid in self.tracked or not self.catalog.kind_listed(api_group(data.get("apiVersion")), data.get("kind") or ""):
            return True
        return self.anchors.adopt_vanished(uid, last)

    def counted_per_source(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for tracked in self.tracked.values():
            if tracked.source is not None and self.state.tenant_of(tracked.namespace):
                counted[tracked.source] = counted.get(tracked.source, 0) + 1
        return counted

    def counted_objects(self) -> list[Tracked]:
        """The tracked objects a source counts, in tenant namespaces (each needs an anchor)."""
        return [t for t in self.tracked.values() if t.source is not None and self.state.tenant_of(t.namespace)]
