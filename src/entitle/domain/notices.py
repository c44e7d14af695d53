"""Lifecycle notices (DESIGN "Tenant view and in-apiserver enforcement"). Pure.

A notice marks a crossing someone should hear of before a customer notices it: 30, 7 and 1
days before a license's ``notAfter``, its grace started; a tenant's pool at 80 % and at 100 %
of its max, bursting, over its cap, its burst budget used up.

The memory of what was already noticed is the objects' own conditions: a License's
``ExpiringSoon`` and ``InGrace``, a TenantEntitlement's ``UsageHigh``, ``InBurst``, ``OverCap``
and ``BurstBudgetUsedUp``. A notice is a change of one of those conditions *into* a
notice-worthy state, between the conditions as stored and the conditions about to be written.
A restart or a new leader starts from the stored conditions, so it never repeats a notice; a
condition that goes back (a renewal, usage down) re-arms its notice for the next crossing.
When several thresholds are crossed at once (a license created 5 days before its end, or an
operator that was down for weeks), only the nearest is noticed: the condition holds one stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from entitle.domain.records import notice_record

# (condition type, reason it changes to) -> the notice.
NOTICES = {
    ("ExpiringSoon", "ExpiresIn30Days"): "ExpiresIn30Days",
    ("ExpiringSoon", "ExpiresIn7Days"): "ExpiresIn7Days",
    ("ExpiringSoon", "ExpiresIn1Day"): "ExpiresIn1Day",
    ("InGrace", "InGrace"): "GraceStarted",
    ("UsageHigh", "Above80Percent"): "UsageAbove80Percent",
    ("UsageHigh", "AtMax"): "UsageAt100Percent",
    ("InBurst", "InBurst"): "BurstStarted",
    ("OverCap", "OverCap"): "OverCap",
    ("BurstBudgetUsedUp", "BudgetUsedUp"): "BurstBudgetUsedUp",
    # Fleet mode: this member could not reach the hub within its lease period (docs/fleet.md).
    ("FleetLease", "LeaseLapsed"): "FleetLeaseLapsed",
}
# Which conditions carry notices on which object.
LICENSE_CONDITIONS = ("ExpiringSoon", "InGrace")
TENANT_CONDITIONS = ("UsageHigh", "InBurst", "OverCap", "BurstBudgetUsedUp", "FleetLease")


@dataclass(frozen=True)
class Notice:
    """One crossing, as the controller reports it (condition, Event, metric, record)."""

    kind: str
    tenant: str
    subject_kind: str     # License | TenantEntitlement
    subject: str          # the License's name, or the tenant's
    message: str
    time: datetime

    def record(self, source: str, uid: str | None = None) -> dict:
        return notice_record(self.kind, self.tenant, self.subject_kind, self.subject, uid, self.message,
                             self.time, source)


def notices(before: list[dict], after: list[dict], tenant: str, subject_kind: str, subject: str,
            now: datetime) -> list[Notice]:
    """The notices of going from the ``before`` conditions to the ``after`` ones (of a License,
    or of a tenant's TenantEntitlement: each has its own conditions that carry notices)."""
    types = LICENSE_CONDITIONS if subject_kind == "License" else TENANT_CONDITIONS
    old = {c.get("type"): c.get("reason") for c in before if isinstance(c, dict)}
    out = []
    for cond in after:
        if cond.get("type") not in types:
            continue
        kind = NOTICES.get((cond.get("type"), cond.get("reason")))
        if kind is not None and old.get(cond["type"]) != cond["reason"]:
            out.append(Notice(kind, tenant, subject_kind, subject, cond.get("message") or kind, now))
    return out
