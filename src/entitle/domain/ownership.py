"""The owner rule: when an object's controller is believed, so that the object is not counted
again (DESIGN "Instance sources") -- pure functions, no I/O.

``ownerReferences`` are written by whoever creates the object, the tenant included. A tenant who
could make an object look "controlled" would run it uncounted: a bare Pod "owned" by one of its
ConfigMaps, a Deployment "owned" by another Deployment at zero replicas. So a controller
reference is believed only when

- its kind is a known controller of the object's kind (:data:`KNOWN_CONTROLLERS`: the built-in
  controllers, which create only objects of those kinds), or the kind of a source that is not a
  built-in workload kind (a vendor's custom resource controlling Deployments, KubeVirt's
  VirtualMachine controlling its VirtualMachineInstance);
- it names an object entitle watches, in the same namespace, with that kind, name and uid;
- and that object is counted, or its own believed controller chain reaches a counted object.

Anything else counts on its own: the Pods of a DaemonSet or a ReplicationController that no
source counts are counted as Pods (a DaemonSet's instance count is then its scheduled pods).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

GroupKind = tuple[str, str]

# Child kind -> the kinds whose built-in controller creates objects of it.
KNOWN_CONTROLLERS: dict[GroupKind, frozenset[GroupKind]] = {
    ("", "Pod"): frozenset({("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("batch", "Job"),
                            ("apps", "DaemonSet"), ("", "ReplicationController")}),
    ("apps", "ReplicaSet"): frozenset({("apps", "Deployment")}),
    ("batch", "Job"): frozenset({("batch", "CronJob")}),
}
# Kinds whose controllers are the cluster's own: as owners they are believed only for the
# children listed above (a Deployment never controls a Deployment).
BUILTIN_WORKLOAD_KINDS: frozenset[GroupKind] = frozenset(
    {("", "Pod"), ("", "ReplicationController"), ("apps", "ReplicaSet"), ("apps", "Deployment"),
     ("apps", "StatefulSet"), ("apps", "DaemonSet"), ("batch", "Job"), ("batch", "CronJob")})
# How far a chain is followed (ownership cycles and absurd depths end here: not believed).
MAX_CHAIN = 16


@dataclass(frozen=True)
class ControllerRef:
    """An object's ``ownerReferences`` entry with ``controller: true``."""

    group: str
    kind: str
    name: str
    uid: str

    @property
    def group_kind(self) -> GroupKind:
        return (self.group, self.kind)


@dataclass(frozen=True)
class Watched:
    """What the owner rule needs of an object entitle watches."""

    namespace: str
    group: str
    kind: str
    name: str
    counted: bool
    controller: ControllerRef | None


def group_of(api_version: Any) -> str:
    text = api_version if isinstance(api_version, str) else ""
    return text.split("/", 1)[0] if "/" in text else ""


def controller_ref(obj: Any) -> ControllerRef | None:
    """The object's controller reference (the first with ``controller: true``), if any."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    refs = meta.get("ownerReferences") if isinstance(meta, dict) else None
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, dict) and ref.get("controller") is True and isinstance(ref.get("uid"), str):
            kind, name = ref.get("kind"), ref.get("name")
            return ControllerRef(group_of(ref.get("apiVersion")), kind if isinstance(kind, str) else "",
                                 name if isinstance(name, str) else "", ref["uid"])
    return None


def plausible(child: GroupKind, owner: GroupKind, source_kinds: Iterable[GroupKind]) -> bool:
    """Can an object of kind ``owner`` be the controller of one of kind ``child``?"""
    if owner in KNOWN_CONTROLLERS.get(child, frozenset()):
        return True
    return owner not in BUILTIN_WORKLOAD_KINDS and owner in set(source_kinds)


def covered(child: GroupKind, namespace: str, ref: ControllerRef | None, lookup: Callable[[str], Watched | None],
            source_kinds: Iterable[GroupKind]) -> bool:
    """Is the object (of kind ``child`` in ``namespace``, with controller ``ref``) covered by a
    believed controller chain that reaches a counted object? Then it is not counted itself."""
    kinds = frozenset(source_kinds)
    seen: set[str] = set()
    while ref is not None and len(seen) < MAX_CHAIN and ref.uid not in seen:
        seen.add(ref.uid)
        if not plausible(child, ref.group_kind, kinds):
            return False
        owner = lookup(ref.uid)
        if owner is None or owner.namespace != namespace or (owner.group, owner.kind) != ref.group_kind \
                or owner.name != ref.name:
            return False
        if owner.counted:
            return True
        child, ref = (owner.group, owner.kind), owner.controller
    return False


def awaited_owner(child: GroupKind, ref: ControllerRef | None, lookup: Callable[[str], Watched | None],
                  source_kinds: Iterable[GroupKind], watched_kinds: Iterable[GroupKind]) -> bool:
    """The reference is plausible and names a kind entitle watches, but the object is not known
    (yet): a controller's child often reaches the webhook before the controller's own watch
    event reaches entitle. Worth a short wait before counting it on its own."""
    if ref is None or lookup(ref.uid) is not None:
        return False
    return plausible(child, ref.group_kind, source_kinds) and ref.group_kind in set(watched_kinds)
