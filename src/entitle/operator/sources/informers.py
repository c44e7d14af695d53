"""One informer per sourced kind: every kind the sources name is resolved (API discovery) and
watched, a kind no source names any more is let go (its objects stop counting)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from entitle.adapters.kube.discovery import KindNotServed, resolve
from entitle.adapters.kube.informer import Informer
from entitle.operator.sources.catalog import GVK, SourceCatalog


class SourcedEvents(Protocol):
    """Who handles what the informers see (``SourcedObjects``)."""

    def on_sourced(self, gvk: GVK, event: str, body: dict[str, Any]) -> None: ...

    def untrack(self, uid: str, reason: str, body: dict | None = None) -> None: ...


class KindInformers:
    # How long start-up waits for a sourced kind's first listing before the replica is ready
    # anyway (that source then reports why; its kind is neither counted nor gated).
    sync_seconds = 30.0

    def __init__(self, api: Any, catalog: SourceCatalog, objects: SourcedEvents) -> None:
        self.api, self.catalog, self.objects = api, catalog, objects

    async def sync(self, wait: bool = False) -> None:
        """Resolve every sourced kind and keep exactly one informer per kind running."""
        catalog = self.catalog
        wanted = catalog.wanted()
        for gvk in sorted(wanted):
            if gvk not in catalog.informers:
                await self._start(gvk)
        for gvk in [g for g in catalog.informers if g not in wanted]:
            informer = catalog.informers.pop(gvk)
            await informer.stop()
            for uid in list(informer.known):
                self.objects.untrack(uid, reason="source removed")
        if wait and catalog.informers:
            await asyncio.wait([asyncio.ensure_future(i.synced.wait()) for i in catalog.informers.values()],
                               timeout=self.sync_seconds)
        catalog.dirty = True

    async def _start(self, gvk: GVK) -> None:
        catalog = self.catalog
        try:
            served = catalog.served.get(gvk) or await resolve(self.api, *gvk)
        except KindNotServed as exc:
            catalog.kind_error(gvk, "KindNotServed", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 -- the apiserver away: the next sync retries
            catalog.kind_error(gvk, "DiscoveryFailed", str(exc)[:300])
            return
        if not served.namespaced:
            catalog.kind_error(gvk, "ClusterScoped", f"{gvk[2]} is cluster-scoped: instances belong to tenant namespaces")
            return
        catalog.served[gvk] = served
        catalog.informers[gvk] = Informer(
            self.api, served.collection(),
            on_event=lambda kind, obj, gvk=gvk: self.objects.on_sourced(gvk, kind, obj),
            on_error=lambda exc, gvk=gvk: catalog.informer_error(gvk, exc)).start()
