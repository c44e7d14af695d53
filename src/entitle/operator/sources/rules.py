"""The sourced kinds' admission rules: which kinds the sources webhook is called for, and the
CEL match conditions that spare it the children the cluster's own controllers make."""

from __future__ import annotations

from typing import Any

from entitle.domain.ownership import KNOWN_CONTROLLERS, GroupKind
from entitle.domain.sources import Source
from entitle.operator.config import CONTROLLER_USERS
from entitle.operator.sources.catalog import SourceCatalog

SOURCES_WEBHOOK = "sources.entitle.dev"


def webhook_rules(catalog: SourceCatalog) -> list[dict]:
    """The sourced kinds' admission rules: exactly the kinds of the Ready sources."""
    rules = []
    for gvk, served in sorted(catalog.served.items()):
        if not catalog.ready(served.group, served.kind):
            continue
        resources = [served.resource] + ([f"{served.resource}/scale"] if served.scale else [])
        rules.append({"apiGroups": [served.group], "apiVersions": [served.version], "resources": resources,
                      "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"})
    return rules


def skippable_children(sources: list[Source]) -> dict[GroupKind, list[GroupKind]]:
    """Per sourced kind, the controller kinds whose objects are all counted or covered (a source
    without a selector counts every one of them that no believed chain covers): the children
    the cluster's own controllers make for them need not reach the webhook."""
    complete = {s.kind_key for s in sources if s.selector is None}
    out: dict[GroupKind, list[GroupKind]] = {}
    for source in sources:
        owners = sorted(KNOWN_CONTROLLERS.get(source.kind_key, frozenset()) & complete)
        if owners:
            out[source.kind_key] = owners
    return out


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
