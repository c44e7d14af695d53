"""A Workload as the state keeps it: what admission, records, status and CEL rules read of a
stored object, and nothing more.

The state holds one of these for every counted object in the cluster. A validated pydantic
``Workload`` costs ~5 KB and ~35 allocations (the model, its metadata, spec and status models,
their ``__dict__`` and fields-set, the condition models); at 50,000 Workloads that was most of
the operator's memory. A ``StoredWorkload`` is three slotted objects, and everything that
repeats across a fleet is shared: the spec is interned by value (a thousand replicas-1
workloads of a tenant's 40 users hold one spec), names are ``sys.intern``-ed, empty label and
annotation maps are one object.

It reads like a ``Workload`` where the engine reads one (``.kind``, ``.api_version``,
``.metadata.{name,namespace,uid,generation,resource_version,deletion_timestamp,labels,
annotations}``, ``.spec.{instance_kind,replicas,users,guests,features}``) and is immutable;
:meth:`StoredWorkload.to_model` gives the full model back where a request is built from the
stored object (a scale). The stored *status* is not kept here: the controller keeps what it
needs of it (see ``operator.status``).
"""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Mapping, Union

from entitle.api import Workload, WorkloadSpec

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _names(values: Any) -> tuple[str, ...]:
    return tuple(sys.intern(str(v)) for v in values)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class StoredSpec:
    """The spec fields the engine counts (see ``domain.usage.footprint``)."""

    instance_kind: str
    replicas: int
    users: tuple[str, ...]
    guests: tuple[str, ...]
    features: tuple[str, ...]


# Interned specs: weak, so a spec no stored object holds any more is dropped.
_SPECS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def stored_spec(spec: WorkloadSpec | StoredSpec) -> StoredSpec:
    """The shared ``StoredSpec`` equal to ``spec``."""
    key = (spec.instance_kind, spec.replicas, tuple(spec.users), tuple(spec.guests), tuple(spec.features))
    found = _SPECS.get(key)
    if found is None:
        found = StoredSpec(sys.intern(spec.instance_kind), spec.replicas,
                           _names(spec.users), _names(spec.guests), _names(spec.features))
        _SPECS[key] = found
    return found


@dataclass(frozen=True, slots=True)
class StoredMeta:
    """The metadata the engine reads (and CEL rules may read, on a scale of the object)."""

    name: str
    namespace: str | None
    uid: str | None
    generation: int | None
    resource_version: str | None
    creation_timestamp: datetime | None
    deletion_timestamp: datetime | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


def _mapping(values: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(values)) if values else _EMPTY


@dataclass(frozen=True, slots=True)
class StoredWorkload:
    """One counted object (a Workload, or the claim of a sourced kind) as stored."""

    kind: str
    api_version: str
    metadata: StoredMeta
    spec: StoredSpec

    @classmethod
    def of(cls, workload: Workload) -> StoredWorkload:
        meta = workload.metadata
        return cls(sys.intern(workload.kind), sys.intern(workload.api_version), StoredMeta(
            meta.name, sys.intern(meta.namespace) if meta.namespace else meta.namespace, meta.uid,
            meta.generation, meta.resource_version, meta.creation_timestamp, meta.deletion_timestamp,
            _mapping(meta.labels), _mapping(meta.annotations)), stored_spec(workload.spec))

    def to_model(self) -> Workload:
        """The full (mutable, independent) model: what a request built from this object needs."""
        meta, spec = self.metadata, self.spec
        model = Workload.model_validate({
            "metadata": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid,
                         "generation": meta.generation, "resourceVersion": meta.resource_version,
                         "creationTimestamp": meta.creation_timestamp, "deletionTimestamp": meta.deletion_timestamp,
                         "labels": dict(meta.labels), "annotations": dict(meta.annotations)},
            "spec": {"instanceKind": spec.instance_kind, "replicas": spec.replicas, "users": list(spec.users),
                     "guests": list(spec.guests), "features": list(spec.features)}})
        # A sourced kind's claim keeps its own kind (as ``domain.sources.claim`` made it).
        model.kind = self.kind                # type: ignore[assignment]
        model.api_version = self.api_version
        return model


def stored(workload: Workload | StoredWorkload) -> StoredWorkload:
    return workload if isinstance(workload, StoredWorkload) else StoredWorkload.of(workload)


# What the engine accepts wherever it reads a workload it did not build a request from.
AnyWorkload = Union[Workload, StoredWorkload]

__all__ = ["AnyWorkload", "StoredMeta", "StoredSpec", "StoredWorkload", "stored", "stored_spec"]
