"""The InstanceSource objects, the kinds they name (as discovery resolved them) and the state of
each kind's informer -- what says whether a kind is counted and gated now."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from entitle.adapters.kube.async_api import ApiError
from entitle.adapters.kube.discovery import ServedKind
from entitle.adapters.kube.informer import Informer
from entitle.api import InstanceSource
from entitle.api.objects import first_error, metadata
from entitle.domain.ownership import GroupKind
from entitle.domain.sources import Source, read_source

GVK = tuple[str, str, str]      # (group, version, kind)


class SourceCatalog:
    def __init__(self) -> None:
        self.sources: dict[str, Source] = {}
        self.bodies: dict[str, dict] = {}
        self.errors: dict[str, tuple[str, str]] = {}        # name -> (reason, message)
        self.served: dict[GVK, ServedKind] = {}
        self.informers: dict[GVK, Informer] = {}            # kept by KindInformers
        # Something a source's status, the webhook's rules or a count depend on changed.
        self.dirty = True

    def on_source(self, body: dict[str, Any], deleted: bool) -> None:
        name = metadata(body).get("name")
        if deleted:
            self.sources.pop(name, None)
            self.bodies.pop(name, None)
            self.errors.pop(name, None)
        else:
            self.bodies[name] = body
            try:
                self.sources[name] = read_source(InstanceSource.model_validate(body))
                self.errors.pop(name, None)
            except ValidationError as exc:
                self.sources.pop(name, None)
                self.errors[name] = ("InvalidSpec", first_error(exc))
        self.dirty = True

    def of_kind(self, group: str, kind: str) -> list[Source]:
        return sorted((s for s in self.sources.values() if (s.group, s.kind) == (group, kind)), key=lambda s: s.name)

    def wanted(self) -> set[GVK]:
        return {(s.group, s.version, s.kind) for s in self.sources.values()}

    def source_kinds(self) -> set[GroupKind]:
        return {s.kind_key for s in self.sources.values()}

    def watched_kinds(self) -> set[GroupKind]:
        return {(g, k) for (g, _, k) in self.informers}

    def kind_error(self, gvk: GVK, reason: str, message: str) -> None:
        for source in self.sources.values():
            if (source.group, source.version, source.kind) == gvk:
                self.errors[source.name] = (reason, message)
        self.dirty = True

    def informer_error(self, gvk: GVK, exc: Exception | None) -> None:
        if exc is None:
            for source in self.sources.values():
                if (source.group, source.version, source.kind) == gvk:
                    self.errors.pop(source.name, None)
        elif isinstance(exc, ApiError) and exc.status == 403:
            self.kind_error(gvk, "Forbidden", f"the operator may not list/watch {gvk[2]}: grant it read access "
                                              "(the chart does for the kinds in values.instanceSources)")
        else:
            self.kind_error(gvk, "WatchFailed", str(exc)[:300])
        self.dirty = True

    def kind_of_resource(self, group: str, resource: str) -> str | None:
        for served in self.served.values():
            if served.group == group and served.resource == resource:
                return served.kind
        return None

    def kind_listed(self, group: str, kind: str) -> bool:
        """An informer of this kind has listed it (so absence from it means absence)."""
        return any(i.synced.is_set() for (g, _, k), i in self.informers.items() if (g, k) == (group, kind))

    def ready(self, group: str, kind: str) -> bool:
        """Counted and gated: a source of this kind is valid and its informer has listed."""
        for source in self.of_kind(group, kind):
            informer = self.informers.get((source.group, source.version, source.kind))
            if informer is not None and informer.synced.is_set() and source.name not in self.errors:
                return True
        return False
