"""The cluster as ``entitle plan`` sees it: what the operator counts, rebuilt from a live read
with the caller's own credentials (DESIGN "Licenses from a vendor": ``entitle plan`` reads the
full picture itself, where the webhook's what-if must fit the apiserver's 4 KiB of warnings).

Namespaces (tenancy), Licenses, Workloads, and the objects every InstanceSource selects --
counted by the same owner rule (``domain.ownership``) and claims (``domain.sources``) as the
operator's watches. The instance table is the operator's, from its ConfigMap when readable.
A kind the caller may not list is reported, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from entitle.api import GROUP, VERSION, InstanceSource, License, Workload
from entitle.domain.licenses import invalid_license
from entitle.domain.normalization import InstanceTable
from entitle.domain.ownership import Watched, controller_ref, covered
from entitle.domain.sources import InvalidInstanceCount, Source, claim, matches, read_source
from entitle.domain.state import ClusterState
from entitle.api.objects import metadata


@dataclass
class Picture:
    state: ClusterState
    notes: list[str] = field(default_factory=list)


def _items(call: Any) -> list[dict]:
    items, token = [], None
    while True:
        page = call(_continue=token) if token else call()
        page = page if isinstance(page, dict) else page.to_dict()
        items += page.get("items") or []
        token = metadata(page).get("continue")
        if not token:
            return items


def _table(api_client: Any, namespace: str, release: str, notes: list[str]) -> InstanceTable:
    from kubernetes import client

    try:
        cm = client.CoreV1Api(api_client).read_namespaced_config_map(release, namespace)
        weights = (yaml.safe_load((cm.data or {}).get("config.yaml") or "") or {}).get("normalization")
        if isinstance(weights, dict) and weights:
            return InstanceTable(weights)
    except Exception as exc:  # noqa: BLE001 -- no access, no operator: the defaults, said so
        notes.append(f"instance weights: the defaults (cannot read ConfigMap {namespace}/{release}: "
                     f"{getattr(exc, 'status', '')} {getattr(exc, 'reason', exc)})".strip())
    return InstanceTable()


def read_picture(api_client: Any, namespace: str = "entitle-system", release: str = "entitle") -> Picture:
    from kubernetes import client, dynamic

    notes: list[str] = []
    state = ClusterState(_table(api_client, namespace, release, notes))
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    for ns in _items(lambda **kw: core.list_namespace(**kw).to_dict()):
        meta = metadata(ns)
        state.set_namespace(meta["name"], meta.get("labels") or {})
        if meta.get("name") == "kube-system":
            state.cluster_id = meta.get("uid")
    for body in _items(lambda **kw: custom.list_cluster_custom_object(GROUP, VERSION, "licenses", **kw)):
        try:
            state.set_license(License.model_validate(body))
        except ValidationError as exc:
            spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
            state.set_read_license(invalid_license(body["metadata"]["name"], str(spec.get("tenant") or ""),
                                                   body["metadata"].get("generation"), exc.errors()[0]["msg"]))
    for body in _items(lambda **kw: custom.list_cluster_custom_object(GROUP, VERSION, "workloads", **kw)):
        try:
            state.observe_workload(Workload.model_validate(body))
        except ValidationError:
            notes.append(f"workload {body['metadata'].get('namespace')}/{body['metadata'].get('name')}: unreadable, "
                         "not counted")
    sources = []
    for body in _items(lambda **kw: custom.list_cluster_custom_object(GROUP, VERSION, "instancesources", **kw)):
        try:
            sources.append(read_source(InstanceSource.model_validate(body)))
        except ValidationError:
            notes.append(f"instance source {body['metadata'].get('name')}: invalid, skipped")
    if sources:
        _count_sourced(state, dynamic.DynamicClient(api_client), sorted(sources, key=lambda s: s.name), notes)
    return Picture(state, notes)


def _count_sourced(state: ClusterState, dyn: Any, sources: list[Source], notes: list[str]) -> None:
    objects: dict[str, tuple[dict, tuple[str, str]]] = {}       # uid -> (body, group/kind)
    for group, version, kind in sorted({(s.group, s.version, s.kind) for s in sources}):
        try:
            resource = dyn.resources.get(api_version=f"{group}/{version}" if group else version, kind=kind)
            listed = resource.get().to_dict().get("items") or []
        except Exception as exc:  # noqa: BLE001 -- reported: the picture lacks this kind
            notes.append(f"{kind} objects not counted: cannot list them ({getattr(exc, 'status', '')} "
                         f"{getattr(exc, 'reason', exc)})")
            continue
        for body in listed:
            uid = metadata(body).get("uid")
            if uid:
                objects[uid] = (body, (group, kind))
    kinds = {s.kind_key for s in sources}
    decided: dict[str, Source | None] = {}

    def counting(uid: str, depth: int = 0) -> Source | None:
        """The source counting the object, or None -- its owner's verdict first (the rule
        needs to know whether the owner counts)."""
        if uid in decided:
            return decided[uid]
        decided[uid] = None            # a cycle ends uncounted
        body, (group, kind) = objects[uid]
        ref = controller_ref(body)
        if ref is not None and ref.uid in objects and depth < 16:
            counting(ref.uid, depth + 1)
        ns = body["metadata"].get("namespace") or ""
        if covered((group, kind), ns, ref, lookup, kinds):
            return None
        decided[uid] = next((s for s in sources if s.kind_key == (group, kind) and matches(s, body)), None)
        return decided[uid]

    def lookup(uid: str) -> Watched | None:
        if uid not in objects:
            return None
        body, (group, kind) = objects[uid]
        meta = body["metadata"]
        return Watched(meta.get("namespace") or "", group, kind, meta.get("name") or "", decided.get(uid) is not None,
                       controller_ref(body))

    for uid in sorted(objects):
        source = counting(uid)
        body = objects[uid][0]
        if source is None or state.tenant_of(body["metadata"].get("namespace") or "") is None:
            continue
        body.setdefault("apiVersion", f"{source.group}/{source.version}" if source.group else source.version)
        try:
            state.observe_workload(claim(source, body, state.table, counting=True))
        except (InvalidInstanceCount, ValidationError) as exc:
            notes.append(f"{body.get('kind')} {body['metadata'].get('namespace')}/{body['metadata'].get('name')}: "
                         f"count unreadable ({exc}), not counted")


__all__ = ["Picture", "read_picture"]
