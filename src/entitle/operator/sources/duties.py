"""The leader's share of the sources, every tick: each source's status (Ready, what it counts),
the sources webhook's rules and match conditions, usage anchors made and orphans swept."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from entitle.api import GROUP, VERSION
from entitle.api.objects import metadata
from entitle.domain.status import condition, merge_patch, merged
from entitle.operator.sources.anchors import UsageAnchors
from entitle.operator.sources.catalog import SourceCatalog
from entitle.operator.sources.objects import SourcedObjects
from entitle.operator.sources.rules import SOURCES_WEBHOOK, match_conditions, skippable_children, webhook_rules

log = logging.getLogger("entitle.sources")


class SourceDuties:
    def __init__(self, webhook: Any, catalog: SourceCatalog, objects: SourcedObjects, anchors: UsageAnchors,
                 api: Any) -> None:
        self.webhook, self.catalog, self.objects, self.anchors, self.api = webhook, catalog, objects, anchors, api
        self._written: dict[str, dict] | None = None       # source -> status as last written
        self._rules_applied: tuple | None = None

    async def run(self, now: datetime) -> None:
        if self.catalog.dirty or self._written is None:
            await self._write_statuses(now)
            self.catalog.dirty = False
            await self._sync_webhook_rules()
        await self.anchors.make(self.api, self.objects.counted_objects())
        await self.anchors.sweep(self.api, lambda uid: uid in self.objects.tracked, self.catalog.kind_listed)

    def statuses(self, now: datetime) -> list[tuple[str, dict]]:
        catalog, counted = self.catalog, self.objects.counted_per_source()
        out = []
        for name, body in sorted(catalog.bodies.items()):
            source = catalog.sources.get(name)
            error = catalog.errors.get(name)
            gvk = (source.group, source.version, source.kind) if source else None
            informer = catalog.informers.get(gvk) if gvk else None
            if error is None and (informer is None or not informer.synced.is_set()):
                error = ("Starting", "the kind is being listed")
            ok = error is None
            previous = ((body.get("status") or {}).get("conditions")) or []
            served = catalog.served.get(gvk) if gvk else None
            generation = metadata(body).get("generation")
            status = {"observedGeneration": generation,
                      "conditions": [condition("Ready", ok, "Watching" if ok else error[0],
                                               f"counting {source.kind} objects in tenant namespaces" if ok else error[1],
                                               generation, previous, now)],
                      "resource": served.resource if served else None, "counted": counted.get(name, 0)}
            out.append((name, status))
        return out

    async def _write_statuses(self, now: datetime) -> None:
        written = self._written = self._written if self._written is not None else {}
        for name, status in self.statuses(now):
            comparable = {**status, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                                   for c in status["conditions"]]}
            if written.get(name) == comparable:
                continue
            stored = (self.catalog.bodies.get(name) or {}).get("status") or {}
            patch = merge_patch(stored, status)
            try:
                await self.api.request("PATCH", f"apis/{GROUP}/{VERSION}/instancesources/{name}/status",
                                       {"status": patch}, content_type="application/merge-patch+json", ok=(200, 404))
                written[name] = comparable
                if name in self.catalog.bodies:
                    self.catalog.bodies[name]["status"] = merged(stored, patch)
            except Exception as exc:  # noqa: BLE001 -- retried on the next tick
                log.warning("source %s status write failed: %s", name, exc)

    async def _sync_webhook_rules(self) -> None:
        name = self.webhook.configuration_name
        rules = webhook_rules(self.catalog)
        conditions = match_conditions(skippable_children(list(self.catalog.sources.values())),
                                      self.webhook.controller_users)
        if self._rules_applied == (rules, conditions):
            return
        path = f"apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}"
        try:
            status, config = await self.api.request("GET", path, ok=(200, 404))
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
            await self.api.request("PATCH", path, ops, content_type="application/json-patch+json")
            self._rules_applied = (rules, conditions)
            log.info("sourced kinds' webhook rules: %s", [r["resources"][0] for r in rules])
        except Exception as exc:  # noqa: BLE001 -- retried when sources change or on the next pass
            log.warning("updating the sources' webhook rules failed: %s", exc)
