"""The ``Workload`` kind: instances of the licensed software, with their users and features."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from entitle.api import limits
from entitle.api.common import API_VERSION, ApiModel, Condition, ObjectMeta


def _names(max_items: int) -> dict:
    """A list of names, each once (list-type set: the apiserver rejects duplicates)."""
    return {"maxItems": max_items, "x-kubernetes-list-type": "set", "items": {"type": "string", "maxLength": limits.MAX_NAME_LENGTH}}


class WorkloadSpec(ApiModel):
    """What the workload runs and who it serves."""

    instance_kind: str = Field(
        default="container", alias="instanceKind",
        description="What one instance is (container, vm, processCluster, ...); mapped to units by the operator's table.",
        json_schema_extra={"maxLength": limits.MAX_NAME_LENGTH})
    replicas: int = Field(default=1, ge=0, description="Number of instances. The scale subresource points here.",
                          json_schema_extra={"maximum": limits.MAX_REPLICAS})
    users: list[str] = Field(
        default_factory=list, description="Named users served; each counts once per tenant as a seat.",
        json_schema_extra=_names(limits.MAX_USERS))
    guests: list[str] = Field(default_factory=list, description="Guest users: recorded, never counted as seats.",
                              json_schema_extra=_names(limits.MAX_USERS))
    features: list[str] = Field(default_factory=list, description="Features this workload enables.",
                                json_schema_extra=_names(limits.MAX_FEATURES))


class WorkloadStatus(ApiModel):
    """Observed entitlement of the workload."""

    observed_generation: int | None = Field(default=None, alias="observedGeneration", description="Last generation processed.")
    replicas: int | None = Field(default=None, description="Replicas counted (for the scale subresource).")
    conditions: list[Condition] = Field(
        default_factory=list, description="Entitled condition.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    units: int | None = Field(default=None, description="Normalized instance units held: replicas x weight(instanceKind).")
    tenant: str | None = Field(default=None, description="Tenant of the namespace when last reconciled.")
    licenses: list[str] = Field(default_factory=list, description="Licenses this workload draws on.")


class Workload(ApiModel):
    """An instance group of licensed software, admitted against its tenant's entitlement."""

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["Workload"] = "Workload"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: WorkloadSpec = Field(default_factory=WorkloadSpec)
    status: WorkloadStatus | None = None
