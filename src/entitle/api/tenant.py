"""``TenantEntitlement``: a tenant's own view of its entitlement (DESIGN "Tenant view").

One object named ``entitlement`` in every tenant namespace, written only by the operator's
leader (status only: there is nothing for anyone to ask for in a spec). Tenants read it with the
namespace ``view`` role; no tenant can read another tenant's, and no tenant can write it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from entitle.api.common import API_VERSION, ApiModel, Condition, Duration, ObjectMeta, Timestamp

TENANT_ENTITLEMENT_NAME = "entitlement"


class TenantPool(ApiModel):
    """One pool (instance units or named seats): the tenant's usage against its effective entitlement."""

    used: int = Field(default=0, description="Current usage of the tenant (sourced kinds included).")
    max: int | None = Field(default=None, description="Effective max over the active licenses; null = unlimited.")
    burst_extra: int = Field(default=0, alias="burstExtra", description="Burst headroom above max.")
    burst_window: Duration | None = Field(default=None, alias="burstWindow",
                                          description="Monthly burst budget (time allowed above max).")
    burst_used_seconds: float = Field(default=0, alias="burstUsedSeconds",
                                      description="Time spent above max this month, in seconds.")
    burst_left_seconds: float | None = Field(default=None, alias="burstLeftSeconds",
                                             description="Burst budget left this month, in seconds (null: no budget).")


class TenantLicense(ApiModel):
    """A license of the tenant, as it stands now."""

    name: str = Field(description="License name.")
    phase: str = Field(description="Pending, Active, InGrace, Expired or Invalid.")
    revision: int | None = Field(default=None, description="The revision of its current spec (status.revision).")
    edition: str | None = Field(default=None, description="Edition, as the license says.")
    not_after: Timestamp | None = Field(default=None, alias="notAfter", description="End of validity.")
    grace_ends: Timestamp | None = Field(default=None, alias="graceEnds", description="End of the grace period.")


class TenantFeature(ApiModel):
    """A feature the tenant is entitled to."""

    name: str = Field(description="Feature name.")
    requires: list[str] = Field(default_factory=list, description="Features a workload must also enable.")
    trial_ends: Timestamp | None = Field(default=None, alias="trialEnds", description="End of the trial, if one.")
    trial_over: bool = Field(default=False, alias="trialOver", description="The trial has ended.")
    limit: int | None = Field(default=None, description="Max workloads enabling it; null = unlimited.")
    soft_limit: int | None = Field(default=None, alias="softLimit",
                                   description="Above this many workloads, admissions are allowed with a warning.")
    used: int = Field(default=0, description="Workloads enabling it now.")


class TenantDay(ApiModel):
    """The highest usage of each pool seen on one UTC day."""

    day: str = Field(description="The UTC day, YYYY-MM-DD.", json_schema_extra={"pattern": r"^\d{4}-\d{2}-\d{2}$"})
    instances: int | None = Field(default=None, description="Peak instance units that day.")
    seats: int | None = Field(default=None, description="Peak named seats that day.")
    sessions: int | None = Field(default=None, description="Peak concurrent sessions that day (where sold or used).")


class TenantFleet(ApiModel):
    """Fleet mode (docs/fleet.md): this tenant's fleet-wide cap and usage, and this member's lease."""

    cluster: str = Field(description="This member's name in the fleet.")
    instances_max: int | None = Field(default=None, alias="instancesMax",
                                      description="Fleet-wide instance cap (the hub's fleet Licenses); null = none.")
    seats_max: int | None = Field(default=None, alias="seatsMax", description="Fleet-wide seat cap; null = none.")
    instances_used: int = Field(default=0, alias="instancesUsed",
                                description="Instance units in use across the members, as they last reported.")
    seats_used: int = Field(default=0, alias="seatsUsed", description="Seats in use across the members (per cluster).")
    instances_lease: int = Field(default=0, alias="instancesLease",
                                 description="Instance units this member may admit of the fleet cap now.")
    seats_lease: int = Field(default=0, alias="seatsLease", description="Seats this member may admit now.")
    clusters: int = Field(default=0, description="Members holding a lease for this tenant.")
    lease_valid: bool = Field(default=False, alias="leaseValid",
                              description="False: the hub has not been reached within the lease period; this "
                                          "member admits within its floor only.")


class TenantEntitlementStatus(ApiModel):
    """The tenant's effective entitlement, usage and renewal (written by the operator)."""

    tenant: str = Field(default="", description="The tenant this namespace belongs to.")
    active: bool = Field(default=False, description="At least one license grants now.")
    in_grace: bool = Field(default=False, alias="inGrace",
                           description="A license in force is past notAfter, within its grace period.")
    enforcement: str | None = Field(default=None, description="Strictest enforcement of the licenses in force.")
    instances: TenantPool | None = Field(default=None, description="Instance units used vs entitled.")
    seats: TenantPool | None = Field(default=None, description="Named seats (distinct users) used vs entitled.")
    sessions: TenantPool | None = Field(default=None, description="Concurrent sessions (floating seats in use) vs "
                                                                  "entitled.")
    instances_summary: str | None = Field(default=None, alias="instancesSummary",
                                          description="Instances used/max, e.g. 6/8 (- = unlimited).")
    seats_summary: str | None = Field(default=None, alias="seatsSummary", description="Seats used/max.")
    sessions_summary: str | None = Field(default=None, alias="sessionsSummary",
                                         description="Concurrent sessions used/max.")
    features: list[TenantFeature] = Field(default_factory=list, description="Features entitled.")
    licenses: list[TenantLicense] = Field(default_factory=list, description="The tenant's licenses.")
    renewal: Timestamp | None = Field(
        default=None, description="The next renewal date: the earliest notAfter among the licenses in force.")
    fleet: TenantFleet | None = Field(default=None, description="Fleet totals, in a member cluster (fleet mode).")
    history: list[TenantDay] = Field(
        default_factory=list, description="Daily peak usage per pool, UTC days, oldest first, at most 35 (seen at "
                                          "each status pass; the usage ledger is the billing-grade record).",
        json_schema_extra={"maxItems": 35})
    conditions: list[Condition] = Field(
        default_factory=list, description="Active, InGrace, OverCap, InBurst, UsageHigh and BurstBudgetUsedUp conditions "
                                         "(the last four carry the lifecycle notices).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})


class TenantEntitlement(ApiModel):
    """A tenant's own view of its entitlement, usage and renewal (read-only; written by entitle)."""

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["TenantEntitlement"] = "TenantEntitlement"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    status: TenantEntitlementStatus | None = None
