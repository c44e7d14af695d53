"""The ``License`` kind: what a tenant is entitled to, and for how long."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from entitle.api import limits
from entitle.api.common import API_VERSION, ApiModel, Condition, Duration, ObjectMeta, Timestamp

# Bounds live in the CRD schema (json_schema_extra), not in pydantic constraints: the API
# server rejects out-of-bound input at `kubectl apply`, while the engine still reads objects
# stored before a bound existed and saturates what it cannot represent (entitle.api.limits).
_COUNT = {"maximum": limits.MAX_COUNT}
_NAME = {"maxLength": limits.MAX_NAME_LENGTH}


def _names(max_items: int) -> dict:
    """A list of names, each once: the apiserver rejects duplicates (list-type set)."""
    return {"maxItems": max_items, "x-kubernetes-list-type": "set", "items": {"type": "string", "maxLength": limits.MAX_NAME_LENGTH}}

Enforcement = Literal["Enforce", "Warn", "Audit"]


class Burst(ApiModel):
    """Temporary headroom above a pool's max, limited by a monthly time budget."""

    extra: int = Field(ge=0, description="Units (or seats) a pool may go above max while bursting.",
                       json_schema_extra=_COUNT)
    window: Duration = Field(
        description="Cumulative over-max time allowed per calendar month (UTC), e.g. 72h or 3d.")


class Pool(ApiModel):
    """A capped pool: named-user seats, or normalized instance units."""

    max: int = Field(ge=0, description="Cap of the pool. Pools set by several active licenses add up.",
                     json_schema_extra=_COUNT)
    burst: Burst | None = Field(default=None, description="Optional burst allowance above max.")


class SessionPool(ApiModel):
    """Concurrent sessions (floating seats) that applications check out, renew and return."""

    max: int = Field(ge=0, description="At most this many concurrent sessions (seats in use) per tenant. Pools set by "
                                       "several active licenses add up.",
                     json_schema_extra={"maximum": limits.MAX_SESSIONS})
    ttl_seconds: int = Field(
        default=120, alias="ttlSeconds",
        description="A session not renewed (heartbeat) within this many seconds lapses and frees its seat.",
        json_schema_extra={"minimum": limits.MIN_SESSION_TTL, "maximum": limits.MAX_SESSION_TTL})
    per_user: bool = Field(
        default=True, alias="perUser",
        description="A user's further sessions share the seat of the first one (false: every session is a seat).")
    burst: Burst | None = Field(default=None, description="Optional burst allowance above max, as for seats.")


class WorkloadCount(ApiModel):
    """A limit expressed as a number of workloads."""

    workloads: int = Field(ge=0, description="Number of workloads of the tenant that may enable the feature.",
                           json_schema_extra=_COUNT)


class FeatureGrant(ApiModel):
    """A feature the license grants, with its dependencies, trial end and limits."""

    name: str = Field(min_length=1, description="Feature name, as workloads list it in spec.features.",
                      json_schema_extra=_NAME)
    requires: list[str] = Field(
        default_factory=list,
        description="Features that must be enabled on the same workload for this one to be enabled.",
        json_schema_extra=_names(limits.MAX_FEATURES))
    trial_ends: Timestamp | None = Field(
        default=None, alias="trialEnds",
        description="End of a trial grant (RFC 3339); afterwards enabling the feature is denied.")
    limit: WorkloadCount | None = Field(
        default=None, description="Hard limit: workloads of the tenant that may enable it (absent = unlimited).")
    soft_limit: WorkloadCount | None = Field(
        default=None, alias="softLimit",
        description="Soft limit: above it admissions are allowed with a warning.")


class Rule(ApiModel):
    """A CEL predicate over workload, tenant, license and now; true means allowed."""

    name: str = Field(min_length=1, description="Rule name, quoted in denial messages.", json_schema_extra=_NAME)
    expression: str = Field(
        min_length=1, description="CEL expression that must evaluate to true. Its worst-case cost over the "
        "largest objects the schema admits must stay within the operator's rule cost limit.",
        json_schema_extra={"maxLength": limits.MAX_EXPRESSION_LENGTH})
    message: str | None = Field(default=None, description="Message shown when the rule evaluates to false.",
                                json_schema_extra={"maxLength": limits.MAX_MESSAGE_LENGTH})


class Signature(ApiModel):
    """A vendor's Ed25519 signature over the RFC 8785 canonical JSON of the License's name and spec
    (without this field). Produced by `entitle license sign`."""

    key_id: str = Field(alias="keyID", min_length=1, description="Id of the signing key, as trusted in the operator's configuration.",
                        json_schema_extra={"maxLength": 253})
    value: str = Field(min_length=1, description="The signature, base64 (standard alphabet, padded).",
                       json_schema_extra={"maxLength": 128})


class LicenseSpec(ApiModel):
    """Desired entitlement of one license."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.notBefore) || !has(self.notAfter) || self.notAfter > self.notBefore",
         "message": "notAfter must be later than notBefore", "fieldPath": ".notAfter"}]})

    tenant: str = Field(
        min_length=1,
        description="Tenant this license belongs to (namespace label entitle.dev/tenant). Immutable.",
        json_schema_extra={"maxLength": 63, "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "tenant is immutable"}]},
    )
    edition: str | None = Field(
        default=None, description="Descriptive edition (e.g. enterprise). Immutable.",
        json_schema_extra={**_NAME, "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "edition is immutable"}]})
    region: str | None = Field(
        default=None, description="Descriptive region. Immutable.",
        json_schema_extra={**_NAME, "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "region is immutable"}]})
    support_level: str | None = Field(
        default=None, alias="supportLevel", description="Descriptive support level. Immutable.",
        json_schema_extra={**_NAME, "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "supportLevel is immutable"}]})
    not_before: Timestamp | None = Field(
        default=None, alias="notBefore", description="Start of validity (RFC 3339); before it the license grants nothing.")
    not_after: Timestamp | None = Field(
        default=None, alias="notAfter", description="End of validity (RFC 3339); afterwards only the grace period grants.")
    grace_period: Duration | None = Field(
        default=None, alias="gracePeriod",
        description="How long after notAfter the license still grants, with a warning on every admission (e.g. 72h, 7d).")
    seats: Pool | None = Field(default=None, description="Named-user seat pool. Absent = this license does not cap seats.")
    instances: Pool | None = Field(
        default=None, description="Instance pool in normalized units. Absent = this license does not cap instances.")
    sessions: SessionPool | None = Field(
        default=None, description="Concurrent sessions apps check out on the OFREP port. Absent = this license "
                                  "does not cap sessions.")
    fleet: bool = Field(
        default=False, description="A fleet License, kept in the fleet's hub cluster: member clusters share its caps "
                                   "through capacity leases (docs/fleet.md). In any cluster's own enforcement it "
                                   "grants nothing, so no cluster ever counts it twice.")
    features: list[FeatureGrant] = Field(
        default_factory=list, description="Features granted (each name once).",
        json_schema_extra={"maxItems": limits.MAX_FEATURES, "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["name"]})
    rules: list[Rule] = Field(
        default_factory=list, description="CEL admission rules; every rule must hold (each name once).",
        json_schema_extra={"maxItems": limits.MAX_RULES, "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["name"]})
    enforcement: Enforcement = Field(
        default="Enforce",
        description="Enforce denies, Warn allows with a warning, Audit allows silently and records the violation.")
    cluster_id: str | None = Field(
        default=None, alias="clusterID",
        description="Binds the license to one cluster: the UID of its kube-system namespace. Elsewhere it is "
                    "Valid=False (ClusterMismatch).", json_schema_extra={"maxLength": 128})
    signature: Signature | None = Field(
        default=None, description="The vendor's signature (entitle license sign). Required when the operator trusts "
                                  "signing keys: missing, unknown or wrong makes the license Valid=False.")


class PoolStatus(ApiModel):
    """Usage of one pool against the tenant's effective entitlement."""

    used: int = Field(default=0, description="Current usage of the tenant.")
    max: int | None = Field(default=None, description="Effective max over active licenses; null = unlimited.")
    burst_extra: int = Field(default=0, alias="burstExtra", description="Effective burst headroom above max.")
    burst_window: Duration | None = Field(default=None, alias="burstWindow", description="Effective monthly burst budget.")
    burst_used_seconds: float = Field(
        default=0, alias="burstUsedSeconds", description="Over-max time used this month, in seconds.")
    over_since: Timestamp | None = Field(
        default=None, alias="overSince",
        description="Set while the pool is above max: the moment burstUsedSeconds was counted up to; "
                    "over-max time keeps accruing from here (so a restart resumes the budget exactly).")


class LicenseStatus(ApiModel):
    """Observed state of a license and of its tenant."""

    observed_generation: int | None = Field(default=None, alias="observedGeneration", description="Last generation processed.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Valid, Active, InGrace, OverCap, InBurst and ExpiringSoon conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    instances: PoolStatus | None = Field(default=None, description="Tenant instance units vs effective entitlement.")
    seats: PoolStatus | None = Field(default=None, description="Tenant seats (distinct users) vs effective entitlement.")
    sessions: PoolStatus | None = Field(default=None, description="Tenant concurrent sessions (seats in use) vs "
                                                                  "effective entitlement.")
    features: dict[str, int] = Field(default_factory=dict, description="Tenant workloads enabling each feature.")
    burst_month: str | None = Field(
        default=None, alias="burstMonth", description="Calendar month (UTC, YYYY-MM) the burst budgets count in.")
    summary: str | None = Field(default=None, description="One-line usage summary, e.g. 'instances 18/20 seats 4/10'.")
    revision: int | None = Field(
        default=None, description="The revision number of the current spec: every distinct spec is kept as an "
                                  "immutable ControllerRevision <license>-<n> (entitle license history).",
        json_schema_extra={"minimum": 1})
    revision_hash: str | None = Field(
        default=None, alias="revisionHash", description="Hash of the current spec (signature included) that "
                                                        "revision numbers.", json_schema_extra={"maxLength": 64})


class License(ApiModel):
    """A software license granting a tenant seats, instance units and features."""

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["License"] = "License"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LicenseSpec
    status: LicenseStatus | None = None
