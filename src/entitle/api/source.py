"""The ``InstanceSource`` kind: which objects of which kind count as instances (DESIGN
"Instance sources"), and ``UsageAnchor``, the small object entitle keeps beside each counted
object so that its deletion time is known even when the operator was down."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from entitle.api import limits
from entitle.api.common import API_VERSION, ApiModel, Condition, ObjectMeta

# Per-object overrides and the seat/feature annotations of a counted object.
INSTANCE_KIND_ANNOTATION = "entitle.dev/instance-kind"
USERS_ANNOTATION = "entitle.dev/users"
GUESTS_ANNOTATION = "entitle.dev/guests"
FEATURES_ANNOTATION = "entitle.dev/features"


class GroupVersionKind(ApiModel):
    """The kind of the counted objects."""

    group: str = Field(default="", description="API group; empty for the core group (Pods).",
                       json_schema_extra={"maxLength": limits.MAX_NAME_LENGTH})
    version: str = Field(description="API version, e.g. v1.", json_schema_extra={"maxLength": 63})
    kind: str = Field(description="Kind, e.g. Deployment.", json_schema_extra={"maxLength": 63})

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


class LabelSelectorRequirement(ApiModel):
    """A label selector requirement (as in metav1.LabelSelector)."""

    key: str = Field(description="Label key.", json_schema_extra={"maxLength": 317})
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] = Field(default_factory=list, description="Values for In and NotIn.",
                              json_schema_extra={"maxItems": 64, "items": {"type": "string", "maxLength": 63}})


class LabelSelector(ApiModel):
    """Which objects of the kind count (absent: all of them)."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels",
                                         description="Labels an object must carry, each with this value.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, alias="matchExpressions", description="Requirements an object's labels must meet.",
        json_schema_extra={"maxItems": 32})


class InstanceSourceSpec(ApiModel):
    """Which objects count as instances, and how many each one is."""

    resource: GroupVersionKind = Field(description="The kind of the counted objects (any kind, custom ones too).")
    selector: LabelSelector | None = Field(default=None, description="Optional label selector on those objects.")
    instance_kind: str = Field(
        default="container", alias="instanceKind",
        description="Instance kind of each counted object (the normalization table's units); an object may "
                    "raise it (never lower it) with the annotation entitle.dev/instance-kind.",
        json_schema_extra={"maxLength": limits.MAX_NAME_LENGTH})
    replicas_path: str | None = Field(
        default=None, alias="replicasPath",
        description="Field path of the instance count, e.g. spec.replicas or spec.parallelism. Absent (or the field "
                    "absent on an object): 1. A path that resolves to a non-integer is InvalidInstanceCount.",
        json_schema_extra={"maxLength": 253, "pattern": r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$"})
    only_uncontrolled: bool = Field(
        default=False, alias="onlyUncontrolled",
        description="Kept for compatibility; counting is the same either way: an object counts unless a believed "
                    "controller chain (an existing object of a kind that controls this kind, in the same namespace) "
                    "reaches a counted object. A reference the author wrote to anything else does not exempt it.")


class InstanceSourceStatus(ApiModel):
    """What the operator made of the source."""

    observed_generation: int | None = Field(default=None, alias="observedGeneration", description="Last generation processed.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready: the kind is served, readable and watched.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    resource: str | None = Field(default=None, description="The kind's resource (plural), as discovered.")
    counted: int | None = Field(default=None, description="Objects counted, in tenant namespaces, now.")


class InstanceSource(ApiModel):
    """Objects of a kind that count as instances of the licensed software (Deployments, Jobs, Pods, VMs...)."""

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["InstanceSource"] = "InstanceSource"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: InstanceSourceSpec
    status: InstanceSourceStatus | None = None


class AnchorOwner(ApiModel):
    """The counted object an anchor stands for."""

    api_version: str = Field(alias="apiVersion", description="API version of the counted object.")
    kind: str = Field(description="Kind of the counted object.")
    name: str = Field(description="Name of the counted object.")
    uid: str = Field(description="UID of the counted object.")


class UsageAnchorSpec(ApiModel):
    """Names the counted object this anchor is the dependent of."""

    owner: AnchorOwner = Field(description="The counted object (also the anchor's owner reference).")


class UsageAnchor(ApiModel):
    """Written by entitle beside each counted object it does not own (a Deployment, a Pod...):
    owned by that object and held by a finalizer, so the garbage collector marks it deleted
    when the object goes -- the deletion time a usage record needs, even while entitle is down.
    Needs no write access to the counted kinds."""

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["UsageAnchor"] = "UsageAnchor"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: UsageAnchorSpec
