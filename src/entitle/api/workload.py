"""The ``Workload`` kind: instances of the licensed software, with their users and features."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from entitle.api.common import API_VERSION, ApiModel, Condition, ObjectMeta


class WorkloadSpec(ApiModel):
    """What the workload runs and who it serves."""

    instance_kind: str = Field(
        default="container", alias="instanceKind",
        description="What one instance is (container, vm, processCluster, ...); mapped to units by the operator's table.")
    replicas: int = Field(default=1, ge=0, description="Number of instances. The scale subresource points here.")
    users: list[str] = Field(
        default_factory=list, description="Named users served; each counts once per tenant as a seat.")
    guests: list[str] = Field(default_factory=list, description="Guest users: recorded, never counted as seats.")
    features: list[str] = Field(default_factory=list, description="Features this workload enables.")


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
