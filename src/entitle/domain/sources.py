"""Instance sources: what a counted object of any kind claims -- pure functions over plain dicts.

An object of a sourced kind (a Deployment, a Job, a bare Pod, a VirtualMachine...) is turned
into the same claim a ``Workload`` makes (instance kind, replicas, users, guests, features), so
the engine decides, holds, meters and reports it exactly like a Workload: one engine.

- **Matching**: the source's kind and its label selector.
- **The owner rule** (``domain.ownership``): an object whose believed controller chain reaches a
  counted object is not counted again: Pods of a counted Deployment's ReplicaSets. A controller
  reference that is not believed (a ConfigMap "owning" a Pod) changes nothing: it counts.
- **The count**: ``replicasPath`` (absent field: 1; a non-integer: ``InvalidInstanceCount``).
- **Overrides and seats**: annotations ``entitle.dev/instance-kind`` (which may only raise the
  weight: a VM annotated ``container`` still counts as a VM), ``entitle.dev/users``,
  ``entitle.dev/guests``, ``entitle.dev/features`` (comma-separated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entitle.api import InstanceSource, Workload, limits
from entitle.api.source import (
    FEATURES_ANNOTATION, GUESTS_ANNOTATION, INSTANCE_KIND_ANNOTATION, USERS_ANNOTATION, LabelSelector,
)
from entitle.domain.normalization import InstanceTable
from entitle.domain.ownership import controller_ref
from entitle.api.objects import api_group, metadata

WORKLOAD_API_VERSION = "entitle.dev/v1alpha1"
DEFAULT_TABLE = InstanceTable()


class InvalidInstanceCount(ValueError):
    """The source's replicasPath resolves to something that is not a non-negative integer."""


@dataclass(frozen=True)
class Source:
    """An InstanceSource as the engine uses it."""

    name: str
    group: str
    version: str
    kind: str
    selector: LabelSelector | None
    instance_kind: str
    replicas_path: tuple[str, ...] | None
    only_uncontrolled: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def kind_key(self) -> tuple[str, str]:
        return (self.group, self.kind)


def read_source(source: InstanceSource) -> Source:
    spec = source.spec
    path = tuple(spec.replicas_path.split(".")) if spec.replicas_path else None
    return Source(source.metadata.name, spec.resource.group, spec.resource.version, spec.resource.kind,
                  spec.selector, spec.instance_kind, path, spec.only_uncontrolled)


def object_key(kind: str, group: str, name: str) -> str:
    """The state's key of an object in its namespace: a Workload by its name (as ever), any other
    kind qualified, so a Deployment "web" and a Workload "web" never collide."""
    if kind == "Workload" and group == "entitle.dev":
        return name
    return f"{kind}.{group or 'core'}/{name}"


def selector_matches(selector: LabelSelector | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        if requirement.operator == "In" and (not present or value not in requirement.values):
            return False
        if requirement.operator == "NotIn" and present and value in requirement.values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def controller_owner(obj: dict[str, Any]) -> str | None:
    """The uid the object's controller reference names, if it has one (believed or not)."""
    ref = controller_ref(obj)
    return ref.uid if ref is not None else None


def matches(source: Source, obj: dict[str, Any]) -> bool:
    """Does the source select this object (kind aside)? Whether a controller covers it is the
    owner rule's question (``domain.ownership.covered``), not the selector's: ``onlyUncontrolled``
    no longer exempts an object whose controller reference is not believed."""
    meta = metadata(obj)
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    return selector_matches(source.selector, labels)


def _names(annotations: dict[str, str], key: str, limit: int) -> list[str]:
    raw = annotations.get(key) or ""
    names = sorted({n.strip() for n in raw.split(",") if n.strip()})
    return names[:limit + 1]   # one beyond the bound is enough to be refused as oversized


def instance_count(source: Source, obj: dict[str, Any]) -> int:
    if source.replicas_path is None:
        return 1
    node: Any = obj
    for part in source.replicas_path:
        if not isinstance(node, dict) or part not in node:
            return 1            # absent field: the kind's default, one instance
        node = node[part]
    if node is None:
        return 1
    if isinstance(node, bool) or not isinstance(node, int) or node < 0 or node > limits.MAX_REPLICAS:
        raise InvalidInstanceCount(f"{'.'.join(source.replicas_path)} is {node!r}, not an instance count")
    return node


def instance_kind(source: Source, annotated: Any, table: InstanceTable, counting: bool = False) -> str:
    """The instance kind an object counts as: the source's, or the annotation's when that weighs
    at least as much (an annotation may only raise the weight, never lower it).

    An annotation naming a kind the table does not know is kept for admission (denied
    ``UnknownInstanceKind``: the author learns of the typo) and, ``counting`` what already runs
    (an object the webhook never saw), ignored: it counts as the source's kind, never as zero."""
    if not isinstance(annotated, str) or not annotated:
        return source.instance_kind
    if not table.knows(annotated):
        return source.instance_kind if counting else annotated
    if table.knows(source.instance_kind) and table.units(annotated, 1) < table.units(source.instance_kind, 1):
        return source.instance_kind
    return annotated


def claim(source: Source, obj: dict[str, Any], table: InstanceTable = DEFAULT_TABLE, counting: bool = False) -> Workload:
    """The Workload-shaped claim of a counted object: what the engine decides and meters.

    ``kind``/``apiVersion`` stay the object's own (records carry them); ``metadata.name`` is the
    object's name; the state keys it with :func:`object_key`. ``table``: the instance table the
    annotated instance kind is weighed with (see :func:`instance_kind`); ``counting``: the claim
    of what already runs, for the watches (not an admission).
    """
    meta = metadata(obj)
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    spec = {
        "instanceKind": instance_kind(source, annotations.get(INSTANCE_KIND_ANNOTATION), table, counting),
        "replicas": instance_count(source, obj),
        "users": _names(annotations, USERS_ANNOTATION, limits.MAX_USERS),
        "guests": _names(annotations, GUESTS_ANNOTATION, limits.MAX_USERS),
        "features": _names(annotations, FEATURES_ANNOTATION, limits.MAX_FEATURES),
    }
    kept = {k: meta.get(k) for k in ("name", "namespace", "uid", "generation", "resourceVersion",
                                    "creationTimestamp", "deletionTimestamp", "labels", "annotations")
            if meta.get(k) is not None}
    workload = Workload.model_validate({"metadata": kept, "spec": spec})
    # The claim keeps the counted object's own kind: records and CEL rules see what it is.
    workload.kind = source.kind           # type: ignore[assignment]
    workload.api_version = source.api_version
    return workload


def state_key(workload: Workload) -> str:
    group = api_group(workload.api_version)
    return object_key(workload.kind, group, workload.metadata.name)
