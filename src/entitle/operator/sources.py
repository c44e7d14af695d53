"""Instance sources in the operator: watching the sourced kinds, counting what really runs, the
usage anchors that time deletions, and the sources' status.

A mixin of :class:`entitle.operator.controller.Controller`. Each ``InstanceSource`` names a kind;
every replica resolves it (API discovery) and keeps an informer on it (``adapters.kube.informer``).
Each object the sources select becomes a Workload-shaped claim in the same state, so admission,
holds, status and records treat it exactly like a Workload (``domain.sources``).

Blast radius: a source that names a kind the apiserver does not serve, or one the operator may
not read, is ``Ready=False`` with the reason; its kind is then neither counted nor gated, and
nothing else is affected. An object whose count cannot be read (``InvalidInstanceCount``) is
reported and keeps its last valid count.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from entitle.adapters.kube.async_api import ApiError
from entitle.adapters.kube.discovery import KindNotServed, ServedKind, resolve
from entitle.adapters.kube.informer import Informer
from entitle.api import GROUP, VERSION, InstanceSource, Workload
from entitle.api.common import format_time, parse_time
from entitle.domain import records
from entitle.domain.ownership import ControllerRef, GroupKind, Watched, awaited_owner, controller_ref, covered
from entitle.domain.sources import InvalidInstanceCount, Source, claim, matches, object_key, read_source
from entitle.domain.usage import footprint
from entitle.operator.config import CONTROLLER_USERS
from entitle.operator.records import MISSING

log = logging.getLogger("entitle.sources")

ANCHOR_FINALIZER = "entitle.dev/usage-record"


@dataclass
class Tracked:
    """A watched object of a sourced kind (counted or not: the owner rule needs both)."""

    uid: str
    namespace: str
    key: str                     # the state's key (object_key)
    owner: str | None            # the uid its controller reference names (believed or not)
    source: str | None           # the source that counts it (None: not counted)
    body: dict
    group: str = ""
    kind: str = ""
    name: str = ""
    controller: ControllerRef | None = None

    def watched(self) -> Watched:
        return Watched(self.namespace, self.group, self.kind, self.name, self.source is not None, self.controller)


class SourceOwners:
    """The owner rule over what the sourced kinds' informers have seen (``domain.ownership``),
    for the watches and the webhook alike. Reads the tracked objects and sources it is given."""

    def __init__(self, tracked: dict[str, Tracked], tracked_keys: dict[tuple[str, str], str],
                 sources: dict[str, Source], informers: dict) -> None:
        self._tracked, self._keys, self._sources, self._informers = tracked, tracked_keys, sources, informers

    def _lookup(self, uid: str) -> Watched | None:
        tracked = self._tracked.get(uid)
        return tracked.watched() if tracked is not None else None

    def _source_kinds(self) -> set[GroupKind]:
        return {s.kind_key for s in self._sources.values()}

    def covered(self, child: GroupKind, namespace: str, ref: ControllerRef | None) -> bool:
        return covered(child, namespace, ref, self._lookup, self._source_kinds())

    def awaited(self, child: GroupKind, ref: ControllerRef | None) -> bool:
        watched = {(g, k) for (g, _, k) in self._informers}
        return awaited_owner(child, ref, self._lookup, self._source_kinds(), watched)

    def known(self, namespace: str, key: str) -> bool | None:
        uid = self._keys.get((namespace, key))
        return None if uid is None else self._tracked[uid].source is not None


def anchor_name(kind: str, name: str, uid: str) -> str:
    stem = f"{kind.lower()}-{name}".strip("-.")[:200].rstrip("-.") or "object"
    return f"{stem}-{hashlib.sha256(uid.encode()).hexdigest()[:8]}"


class SourceKeeping:
    # How long start-up waits for a sourced kind's first listing before the replica is ready
    # anyway (that source then reports why; its kind is neither counted nor gated).
    source_sync_seconds = 30.0

    def _init_sources(self) -> None:
        self.sources: dict[str, Source] = {}
        self.source_bodies: dict[str, dict] = {}
        self.source_errors: dict[str, tuple[str, str]] = {}        # name -> (reason, message)
        self.served: dict[tuple[str, str, str], ServedKind] = {}
        self.informers: dict[tuple[str, str, str], Informer] = {}
        self.tracked: dict[str, Tracked] = {}                      # uid -> Tracked
        self._tracked_keys: dict[tuple[str, str], str] = {}        # (namespace, key) -> uid
        self.children: dict[str, set[str]] = {}                    # owner uid -> child uids
        self.anchors: dict[str, dict] = {}                         # owner uid -> anchor body
        self._recorded_claim: dict[str, tuple] = {}                # uid -> footprint last recorded
        self.departed: dict[str, tuple[Workload, str]] = {}        # uid -> (last claim, tenant), until its anchor goes
        self.invalid_counts: dict[str, str] = {}                   # uid -> message
        self.dirty_sources = True
        self.owners = SourceOwners(self.tracked, self._tracked_keys, self.sources, self.informers)

    # -- the InstanceSource objects ----------------------------------------------------------
    def on_source(self, body: dict[str, Any], deleted: bool = False) -> None:
        self._guarded("InstanceSource", body, self._on_source, deleted)

    def _on_source(self, body: dict[str, Any], deleted: bool) -> None:
        name = (body.get("metadata") or {}).get("name")
        if deleted:
            self.sources.pop(name, None)
            self.source_bodies.pop(name, None)
            self.source_errors.pop(name, None)
        else:
            self.source_bodies[name] = body
            try:
                self.sources[name] = read_source(InstanceSource.model_validate(body))
                self.source_errors.pop(name, None)
            except ValidationError as exc:
                first = exc.errors()[0]
                self.sources.pop(name, None)
                self.source_errors[name] = ("InvalidSpec", f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
        self.dirty_sources = True

    def _sources_of_kind(self, group: str, kind: str) -> list[Source]:
        return sorted((s for s in self.sources.values() if (s.group, s.kind) == (group, kind)), key=lambda s: s.name)

    async def sync_informers(self, wait: bool = False) -> None:
        """Resolve every sourced kind and keep exactly one informer per kind running."""
        wanted = {(s.group, s.version, s.kind) for s in self.sources.values()}
        for gvk in sorted(wanted):
            if gvk in self.informers:
                continue
            try:
                served = self.served.get(gvk) or await resolve(self.async_api, *gvk)
            except KindNotServed as exc:
                self._source_kind_error(gvk, "KindNotServed", str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 -- the apiserver away: the next sync retries
                self._source_kind_error(gvk, "DiscoveryFailed", str(exc)[:300])
                continue
            if not served.namespaced:
                self._source_kind_error(gvk, "ClusterScoped", f"{gvk[2]} is cluster-scoped: instances belong to "
                                                               "tenant namespaces")
                continue
            self.served[gvk] = served
            self.informers[gvk] = Informer(
                self.async_api, served.collection(),
                on_event=lambda kind, obj, gvk=gvk: self.on_sourced(gvk, kind, obj),
                on_error=lambda exc, gvk=gvk: self._informer_error(gvk, exc)).start()
        for gvk in [g for g in self.informers if g not in wanted]:
            informer = self.informers.pop(gvk)
            await informer.stop()
            for uid in list(informer.known):
                self._untrack(uid, reason="source removed")
        if wait and self.informers:
            await asyncio.wait([asyncio.ensure_future(i.synced.wait()) for i in self.informers.values()],
                               timeout=self.source_sync_seconds)
        self.dirty_sources = True

    def _source_kind_error(self, gvk: tuple[str, str, str], reason: str, message: str) -> None:
        for source in self.sources.values():
            if (source.group, source.version, source.kind) == gvk:
                self.source_errors[source.name] = (reason, message)
        self.dirty_sources = True

    def _informer_error(self, gvk: tuple[str, str, str], exc: Exception | None) -> None:
        if exc is None:
            for source in self.sources.values():
                if (source.group, source.version, source.kind) == gvk:
                    self.source_errors.pop(source.name, None)
        elif isinstance(exc, ApiError) and exc.status == 403:
            self._source_kind_error(gvk, "Forbidden", f"the operator may not list/watch {gvk[2]}: grant it read access "
                                                      "(the chart does for the kinds in values.instanceSources)")
        else:
            self._source_kind_error(gvk, "WatchFailed", str(exc)[:300])
        self.dirty_sources = True

    def kind_of_resource(self, group: str, resource: str) -> str | None:
        for served in self.served.values():
            if served.group == group and served.resource == resource:
                return served.kind
        return None

    def kind_listed(self, group: str, kind: str) -> bool:
        """An informer of this kind has listed it (so absence from it means absence)."""
        return any(i.synced.is_set() for (g, _, k), i in self.informers.items() if (g, k) == (group, kind))

    def source_ready(self, group: str, kind: str) -> bool:
        """Counted and gated: a source of this kind is valid and its informer has listed."""
        for source in self._sources_of_kind(group, kind):
            informer = self.informers.get((source.group, source.version, source.kind))
            if informer is not None and informer.synced.is_set() and source.name not in self.source_errors:
                return True
        return False

    # -- objects of sourced kinds ------------------------------------------------------------
    def on_sourced(self, gvk: tuple[str, str, str], event: str, body: dict[str, Any]) -> None:
        self._guarded(gvk[2], body, self._on_sourced, gvk, event)

    def _counting_source(self, group: str, kind: str, namespace: str, body: dict) -> Source | None:
        if self.owners.covered((group, kind), namespace, controller_ref(body)):
            return None         # the owner rule: a believed controller chain already counts it
        return next((s for s in self._sources_of_kind(group, kind) if matches(s, body)), None)

    def _on_sourced(self, body: dict[str, Any], gvk: tuple[str, str, str], event: str) -> None:
        meta = body.get("metadata") or {}
        uid, ns, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
        if not uid or not ns or not name:
            return
        group, _, kind = gvk
        self.dirty_sources = True        # a source's count may have changed
        if event == "DELETED":
            self._untrack(uid, reason="deleted", body=body)
            return
        source = self._counting_source(group, kind, ns, body)
        ref = controller_ref(body)
        owner = ref.uid if ref is not None else None
        previous = self.tracked.get(uid)
        if previous is not None and previous.owner is not None and previous.owner != owner:
            self.children.get(previous.owner, set()).discard(uid)
        self.tracked[uid] = Tracked(uid, ns, object_key(kind, group, name), owner, source.name if source else None,
                                    body, group, kind, name, ref)
        self._tracked_keys[(ns, object_key(kind, group, name))] = uid
        if owner is not None:
            self.children.setdefault(owner, set()).add(uid)
        if source is None:
            if previous is not None and previous.source is not None:
                self._stop_counting(previous, reason="no longer selected")
        else:
            self._count(source, body, previous)
        if (previous is None) or (previous.source is None) != (source is None):
            # Whether this one counts decides whether its children do.
            self._reconsider_children(uid)

    def _reconsider_children(self, uid: str, children: set[str] | None = None) -> None:
        """Re-decide the objects ``uid`` controls. Ownership cycles and self-references (an
        object naming itself its controller, hand-written) end at the first repeat."""
        visiting = getattr(self, "_visiting", None)
        if visiting is None:
            visiting = self._visiting = set()
        if uid in visiting or len(visiting) > 64:
            return
        visiting.add(uid)
        try:
            for child in list(self.children.get(uid, ()) if children is None else children):
                tracked = self.tracked.get(child)
                if tracked is not None and child != uid:
                    api_version = tracked.body.get("apiVersion") or ""
                    group = api_version.split("/")[0] if "/" in api_version else ""
                    self._on_sourced(tracked.body, (group, "", tracked.body.get("kind") or ""), "MODIFIED")
        finally:
            visiting.discard(uid)

    def _count(self, source: Source, body: dict, previous: Tracked | None) -> None:
        meta = body.get("metadata") or {}
        uid, ns = meta["uid"], meta["namespace"]
        now = self.now()
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
        counted = self._counted.get(uid, MISSING)
        if counted is MISSING and tenant:
            # First time counted by this ledger: created under the source, or it ran before the
            # source (or before its namespace's tenant label) and moves in now.
            starts = [parse_time(t) for t in (
                (self.source_bodies.get(source.name, {}).get("metadata") or {}).get("creationTimestamp"),)
                if isinstance(t, str)]
            # Since when the namespace is the tenant's: the label change this process saw, else
            # (labelled before it looked) no earlier than the namespace itself.
            starts.append(self._label_times.get(ns) or self._namespace_created.get(ns, now))
            start = max(starts)
            created = workload.metadata.creation_timestamp
            if created is not None and created >= start:
                self._record_claim(workload, body, tenant, "created", created)
            else:
                for record in records.moved_records(workload, None, tenant, start, self.state.table,
                                                    self.state.entitlement(tenant, now).licenses, self.cfg.source, self.revisions_of(self.state.entitlement(tenant, now).licenses)):
                    self._append(record)
                self._recorded_claim[uid] = _claim_key(workload, self.state.table)
            self._counted[uid] = tenant
        else:
            self._sync_tenant(workload, tenant)
            if tenant and self._recorded_claim.get(uid) != _claim_key(workload, self.state.table):
                self._record_claim(workload, body, tenant, "updated", now)
        if tenant:
            self.state.observe_bursts(tenant, now)
            self.dirty.add(tenant)

    def _record_claim(self, workload: Workload, body: dict, tenant: str, operation: str, when: datetime) -> None:
        now = self.now()
        when = self._not_before_last(workload.metadata.uid, when)
        self._append(records.workload_record(workload, operation, tenant, when, self.state.table,
                                             self.state.entitlement(tenant, now).licenses, self.cfg.source, self.revisions_of(self.state.entitlement(tenant, now).licenses)))
        self._recorded_claim[workload.metadata.uid] = _claim_key(workload, self.state.table)

    def _stop_counting(self, tracked: Tracked, reason: str) -> None:
        """Still there, no longer counted (selector, owner or source changed): it moves out."""
        entry = self.state.workloads.get((tracked.namespace, tracked.key))
        workload = entry.workload if entry is not None else None
        self.state.forget_workload(tracked.namespace, tracked.key)
        tenant = self._counted.pop(tracked.uid, None)
        if workload is not None and tenant:
            when = self._not_before_last(tracked.uid, self.now())
            for record in records.moved_records(workload, tenant, None, when, self.state.table, (),
                                                self.cfg.source):
                self._append(record)
            self.dirty.add(tenant)
        self._recorded_claim.pop(tracked.uid, None)
        log.info("%s %s/%s stops counting: %s", tracked.key, tracked.namespace, tracked.key, reason)

    def _untrack(self, uid: str, reason: str, body: dict | None = None) -> None:
        tracked = self.tracked.pop(uid, None)
        if tracked is None:
            return
        self._tracked_keys.pop((tracked.namespace, tracked.key), None)
        if tracked.owner is not None:
            self.children.get(tracked.owner, set()).discard(uid)
        entry = self.state.workloads.get((tracked.namespace, tracked.key))
        workload = entry.workload if entry is not None else None
        self.state.forget_workload(tracked.namespace, tracked.key)
        tenant = self._counted.get(uid)
        if tracked.source is not None and workload is not None and tenant:
            if reason == "deleted":
                self._departed(uid, workload, tenant)
            else:
                self._stop_counting(tracked, reason)
            self.dirty.add(tenant)
        self._reconsider_children(uid, self.children.pop(uid, set()))

    # -- deletions and usage anchors -----------------------------------------------------------
    def _departed(self, uid: str, workload: Workload, tenant: str) -> None:
        """A counted object is gone. With an anchor, its deletion is recorded at the anchor's
        deletion time (the garbage collector's, the same for every replica and restart);
        without one, at the time it is observed."""
        if uid in self.anchors:
            self.departed[uid] = (workload, tenant)
            if (self.anchors[uid].get("metadata") or {}).get("deletionTimestamp"):
                self._record_departure(uid, parse_time(self.anchors[uid]["metadata"]["deletionTimestamp"]))
            return
        when = self._not_before_last(uid, self.now())
        self._append(records.workload_record(workload, "deleted", tenant, when, self.state.table,
                                             self.state.entitlement(tenant, self.now()).licenses, self.cfg.source, self.revisions_of(self.state.entitlement(tenant, self.now()).licenses)))
        self._counted.pop(uid, None)
        self._recorded_claim.pop(uid, None)

    def _record_departure(self, uid: str, when: datetime) -> None:
        workload, tenant = self.departed.pop(uid)
        when = self._not_before_last(uid, when)
        self._append(records.workload_record(workload, "deleted", tenant, when, self.state.table,
                                             self.state.entitlement(tenant, self.now()).licenses, self.cfg.source, self.revisions_of(self.state.entitlement(tenant, self.now()).licenses)))
        self._counted.pop(uid, None)
        self._recorded_claim.pop(uid, None)

    def on_anchor(self, body: dict[str, Any], deleted: bool = False) -> list[tuple]:
        return self._guarded("UsageAnchor", body, self._on_anchor, deleted) or []

    def _on_anchor(self, body: dict[str, Any], deleted: bool) -> list[tuple]:
        meta = body.get("metadata") or {}
        owner = ((body.get("spec") or {}).get("owner") or {}).get("uid")
        if not owner:
            return []
        if deleted:
            self.anchors.pop(owner, None)
            return []
        self.anchors[owner] = body
        if not meta.get("deletionTimestamp"):
            return []
        # Its owner is gone: the garbage collector deleted the anchor at its deletion time.
        if owner in self.departed:
            self._record_departure(owner, parse_time(meta["deletionTimestamp"]))
        if not self.leader:
            return []
        return [("anchor-remove", meta.get("namespace"), meta.get("name"), list(meta.get("finalizers") or []))]

    def anchors_to_create(self) -> list[dict]:
        """Anchor bodies for counted objects that have none yet (written by the leader)."""
        out = []
        for uid, tracked in self.tracked.items():
            if tracked.source is None or uid in self.anchors or not self.state.tenant_of(tracked.namespace):
                continue
            meta = tracked.body.get("metadata") or {}
            api_version, kind = tracked.body.get("apiVersion") or "", tracked.body.get("kind") or ""
            out.append({
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "UsageAnchor",
                "metadata": {"name": anchor_name(kind, meta["name"], uid), "namespace": tracked.namespace,
                             "finalizers": [ANCHOR_FINALIZER], "labels": {"app.kubernetes.io/managed-by": "entitle"},
                             "ownerReferences": [{"apiVersion": api_version, "kind": kind, "name": meta["name"],
                                                  "uid": uid}]},
                "spec": {"owner": {"apiVersion": api_version, "kind": kind, "name": meta["name"], "uid": uid}}})
        return out

    # -- status of the sources and the webhook's rules -----------------------------------------
    def source_statuses(self, now: datetime) -> list[tuple[str, dict]]:
        from entitle.domain.status import condition

        counted: dict[str, int] = {}
        for tracked in self.tracked.values():
            if tracked.source is not None and self.state.tenant_of(tracked.namespace):
                counted[tracked.source] = counted.get(tracked.source, 0) + 1
        out = []
        for name, body in sorted(self.source_bodies.items()):
            source = self.sources.get(name)
            error = self.source_errors.get(name)
            gvk = (source.group, source.version, source.kind) if source else None
            informer = self.informers.get(gvk) if gvk else None
            if error is None and (informer is None or not informer.synced.is_set()):
                error = ("Starting", "the kind is being listed")
            ok = error is None
            previous = ((body.get("status") or {}).get("conditions")) or []
            served = self.served.get(gvk) if gvk else None
            status = {"observedGeneration": (body.get("metadata") or {}).get("generation"),
                      "conditions": [condition("Ready", ok, "Watching" if ok else error[0],
                                               f"counting {source.kind} objects in tenant namespaces" if ok else error[1],
                                               (body.get("metadata") or {}).get("generation"), previous, now)],
                      "resource": served.resource if served else None, "counted": counted.get(name, 0)}
            out.append((name, status))
        return out

    async def leader_sources(self, now: datetime) -> None:
        """The leader's share: sources' status, the webhook's rules, anchors made and swept."""
        from entitle.domain.status import merge_patch, merged

        if self.dirty_sources or not hasattr(self, "_source_status_written"):
            self._source_status_written = getattr(self, "_source_status_written", {})
            for name, status in self.source_statuses(now):
                comparable = {**status, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                                       for c in status["conditions"]]}
                if self._source_status_written.get(name) == comparable:
                    continue
                stored = (self.source_bodies.get(name) or {}).get("status") or {}
                patch = merge_patch(stored, status)
                try:
                    await self.async_api.request("PATCH", f"apis/{GROUP}/{VERSION}/instancesources/{name}/status",
                                                 {"status": patch}, content_type="application/merge-patch+json",
                                                 ok=(200, 404))
                    self._source_status_written[name] = comparable
                    if name in self.source_bodies:
                        self.source_bodies[name]["status"] = merged(stored, patch)
                except Exception as exc:  # noqa: BLE001 -- retried on the next tick
                    log.warning("source %s status write failed: %s", name, exc)
            self.dirty_sources = False
            await self._sync_webhook_rules()
        await self._make_anchors()

    async def _sync_webhook_rules(self) -> None:
        name = self.cfg.webhook.configuration_name
        rules, conditions = self.webhook_rules(), match_conditions(self.skippable_children(),
                                                                   self.cfg.webhook.controller_users)
        if getattr(self, "_rules_applied", None) == (rules, conditions):
            return
        try:
            status, config = await self.async_api.request(
                "GET", f"apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}", ok=(200, 404))
            if status == 404:
                return
            hooks = config.get("webhooks") or []
            index = next((i for i, h in enumerate(hooks) if h.get("name") == SOURCES_WEBHOOK), None)
            if index is None:
                return
            ops = [{"op": "replace" if "rules" in hooks[index] else "add", "path": f"/webhooks/{index}/rules",
                    "value": rules},
                   {"op": "replace" if "matchConditions" in hooks[index] else "add",
                    "path": f"/webhooks/{index}/matchConditions", "value": conditions}]
            await self.async_api.request(
                "PATCH", f"apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}", ops,
                content_type="application/json-patch+json")
            self._rules_applied = (rules, conditions)
            log.info("sourced kinds' webhook rules: %s", [r["resources"][0] for r in rules])
        except Exception as exc:  # noqa: BLE001 -- retried when sources change or on the next pass
            log.warning("updating the sources' webhook rules failed: %s", exc)

    async def _make_anchors(self, per_tick: int = 100) -> None:
        for body in self.anchors_to_create()[:per_tick]:
            meta = body["metadata"]
            try:
                await self.async_api.request(
                    "POST", f"apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/usageanchors", body,
                    ok=(200, 201, 409))
                # Known once the watch shows it; meanwhile do not ask again this pass.
                self.anchors.setdefault(body["spec"]["owner"]["uid"], {"metadata": meta, "spec": body["spec"]})
            except Exception as exc:  # noqa: BLE001 -- the deletion is then timed when observed
                log.warning("usage anchor %s/%s: %s", meta["namespace"], meta["name"], exc)
        # Anchors whose owner is gone without the garbage collector deleting them (orphaned):
        # delete them, and their termination records the departure.
        for owner, anchor in list(self.anchors.items()):
            meta = anchor.get("metadata") or {}
            if meta.get("deletionTimestamp") or owner in self.tracked or not meta.get("uid"):
                continue
            spec_owner = (anchor.get("spec") or {}).get("owner") or {}
            api_version = spec_owner.get("apiVersion") or ""
            group = api_version.split("/")[0] if "/" in api_version else ""
            if not self.kind_listed(group, spec_owner.get("kind") or "") or meta.get("ownerReferences"):
                continue
            try:
                await self.async_api.request(
                    "DELETE", f"apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/usageanchors/{meta['name']}",
                    ok=(200, 202, 404))
            except Exception as exc:  # noqa: BLE001
                log.warning("removing orphaned anchor %s: %s", meta.get("name"), exc)

    def webhook_rules(self) -> list[dict]:
        """The sourced kinds' admission rules: exactly the kinds of the Ready sources."""
        rules = []
        for gvk, served in sorted(self.served.items()):
            if not self.source_ready(served.group, served.kind):
                continue
            resources = [served.resource] + ([f"{served.resource}/scale"] if served.scale else [])
            rules.append({"apiGroups": [served.group], "apiVersions": [served.version], "resources": resources,
                          "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"})
        return rules

    def skippable_children(self) -> dict[GroupKind, list[GroupKind]]:
        """Per sourced kind, the controller kinds whose objects are all counted or covered (a
        source without a selector counts every one of them that no believed chain covers): the
        children the cluster's own controllers make for them need not reach the webhook."""
        from entitle.domain.ownership import KNOWN_CONTROLLERS

        complete = {s.kind_key for s in self.sources.values() if s.selector is None}
        out: dict[GroupKind, list[GroupKind]] = {}
        for source in self.sources.values():
            owners = sorted(KNOWN_CONTROLLERS.get(source.kind_key, frozenset()) & complete)
            if owners:
                out[source.kind_key] = owners
        return out


SOURCES_WEBHOOK = "sources.entitle.dev"


def match_conditions(skippable: dict[GroupKind, list[GroupKind]], users: Any = CONTROLLER_USERS) -> list[dict]:
    """CEL conditions so the apiserver does not call the webhook for the children the cluster's
    own controllers make for objects that are all counted or covered (every Pod a ReplicaSet
    makes, for one). Never on ownerReferences alone: a tenant writes those (a Pod "owned" by a
    ConfigMap must reach the webhook and count)."""
    names = ", ".join(f"'{u}'" for u in users)
    out = []
    for (group, kind), owners in sorted(skippable.items()):
        owned = " || ".join(f"(r.kind == '{k}' && " + (f"r.apiVersion.startsWith('{g}/'))" if g else "r.apiVersion == 'v1')")
                            for g, k in owners)
        out.append({"name": f"controller-made-{kind.lower()}"[:63], "expression": (
            f"!(request.kind.group == '{group}' && request.kind.kind == '{kind}') || "
            f"!(request.userInfo.username in [{names}]) || "
            "!has(object.metadata.ownerReferences) || "
            f"!object.metadata.ownerReferences.exists(r, has(r.controller) && r.controller && ({owned}))")})
    return out


def _claim_key(workload: Workload, table: Any) -> tuple:
    fp = footprint(workload.spec, table)
    return (fp.instance_kind, fp.units, fp.users, fp.features, tuple(sorted(workload.spec.guests)))


__all__ = ["SourceKeeping", "anchor_name", "format_time"]
