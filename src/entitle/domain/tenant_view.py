"""The status of a tenant's ``TenantEntitlement`` (DESIGN "Tenant view"). Pure.

Everything a tenant team may know about itself, and nothing about anyone else: its effective
entitlement, usage (sourced kinds included), burst budget left, its licenses with their
revision, validity and grace, the next renewal date, and conditions. The same function for every
namespace of the tenant; the controller writes it only when it changed.
"""

from __future__ import annotations

from datetime import datetime

from entitle.api import limits
from entitle.api.common import format_duration, format_time
from entitle.api.limits import clamp_int64
from entitle.domain.bursts import BurstClock
from entitle.domain.entitlement import Entitlement, PoolEntitlement
from entitle.domain.history import daily_peaks
from entitle.domain.licenses import Phase, ReadLicense
from entitle.domain.status import condition, pool_figures, pool_over, pools_over_cap, summary
from entitle.domain.usage import TenantUsage


def _pool(used: int, cap: PoolEntitlement, clock: BurstClock | None, now: datetime) -> dict:
    spent = round((clock or BurstClock()).used_at(now), 3)
    window = cap.burst_window.total_seconds()
    out = {"used": clamp_int64(used), "max": None if cap.max is None else clamp_int64(cap.max),
           "burstExtra": clamp_int64(cap.burst_extra), "burstUsedSeconds": spent,
           "burstLeftSeconds": round(max(0.0, window - spent), 3) if window else None}
    if window:
        out["burstWindow"] = format_duration(cap.burst_window)
    return out


def _time(moment: datetime | None) -> str | None:
    return None if moment is None or moment >= limits.TIME_MAX else format_time(moment)


def _no_nulls(item: dict) -> dict:
    # List items are replaced whole by a merge patch: absent, not null, is how they say "none".
    return {k: v for k, v in item.items() if v is not None}


def tenant_view(tenant: str, ent: Entitlement, usage: TenantUsage, bursts: dict[str, BurstClock],
                licenses: list[ReadLicense], revisions: dict[str, int], now: datetime,
                previous: list[dict], history: object = None, fleet: dict | None = None) -> dict:
    """The ``status`` of the tenant's TenantEntitlement at ``now``; ``history``: the daily peaks
    as stored (domain.history), carried on with today's usage; ``fleet``: in a fleet member, the
    tenant's fleet totals and this member's lease (operator.fleet), with a ``FleetLease``
    condition whose lapse is a notice."""
    phases = {lic.name: lic.phase(now) for lic in licenses}
    in_force = [lic for lic in licenses if phases[lic.name] in (Phase.ACTIVE, Phase.GRACE)]
    in_grace = [lic.name for lic in in_force if phases[lic.name] is Phase.GRACE]
    renewal = min((lic.spec.not_after for lic in in_force
                   if lic.spec.not_after is not None and lic.spec.not_after < limits.TIME_MAX), default=None)
    pools = pool_figures(ent, usage)
    clocks = {p: bursts.get(p) or BurstClock() for p, _, _ in pools}
    spent = {p: cap.burst_window.total_seconds() > 0 and clocks[p].used_at(now) >= cap.burst_window.total_seconds()
             for p, _, cap in pools}
    # Over the cap = increases are denied, as License status says; above max with budget left
    # is bursting.
    over = pools_over_cap(ent, usage, bursts, now)
    bursting = [p for p, used, cap in pools if pool_over(used, cap) and p not in over]
    at_max = [p for p, used, cap in pools if cap.max is not None and cap.max > 0 and used >= cap.max]
    high = [p for p, used, cap in pools if cap.max is not None and cap.max > 0 and used * 5 >= cap.max * 4
            and p not in at_max]
    used_up = [p for p, _, _ in pools if spent[p]]
    conditions = [
        condition("Active", ent.active, "Active" if ent.active else "NoActiveLicense",
                  f"licenses in force: {', '.join(ent.licenses)}" if ent.active
                  else f"tenant {tenant} has no active license", None, previous, now),
        condition("InGrace", bool(in_grace), "InGrace" if in_grace else "NotInGrace",
                  f"past notAfter, in grace: {', '.join(in_grace)}" if in_grace else "", None, previous, now),
        condition("OverCap", bool(over), "OverCap" if over else "WithinCap",
                  f"over the cap on {', '.join(over)}: increases are denied" if over else "within every cap",
                  None, previous, now),
        condition("InBurst", bool(bursting), "InBurst" if bursting else "NotInBurst",
                  f"bursting above max on {', '.join(bursting)}" if bursting else "", None, previous, now),
        condition("UsageHigh", bool(at_max or high), "AtMax" if at_max else "Above80Percent" if high else "Below80Percent",
                  f"at or above max on {', '.join(at_max)}" if at_max else
                  f"at 80% of max or more on {', '.join(high)}" if high else "", None, previous, now),
        condition("BurstBudgetUsedUp", bool(used_up), "BudgetUsedUp" if used_up else "BudgetLeft",
                  f"this month's burst budget is used up on {', '.join(used_up)}" if used_up else "",
                  None, previous, now),
    ]
    if fleet is not None:
        lease = fleet.get("lease")         # "valid" | "lapsed" | "joining"
        conditions.append(condition(
            "FleetLease", lease == "valid",
            {"valid": "LeaseValid", "lapsed": "LeaseLapsed"}.get(lease, "Joining"),
            {"valid": f"this cluster ({fleet.get('cluster')}) holds a lease on the fleet cap",
             "lapsed": f"this cluster ({fleet.get('cluster')}) has not reached the fleet's hub within its lease: "
                       f"it admits within its floor only",
             }.get(lease, "joining the fleet's lease book"), None, previous, now))
        fleet = {k: v for k, v in fleet.items() if k != "lease" and v is not None}
    return {
        "tenant": tenant, "active": ent.active, "inGrace": bool(in_grace),
        "enforcement": ent.enforcement if ent.active else None,
        "instances": _pool(usage.units, ent.instances, bursts.get("instances"), now),
        "seats": _pool(usage.seats, ent.seats, bursts.get("seats"), now),
        "instancesSummary": summary(usage.units, ent.instances),
        "seatsSummary": summary(usage.seats, ent.seats),
        **({"sessions": _pool(usage.sessions, ent.sessions, bursts.get("sessions"), now),
            "sessionsSummary": summary(usage.sessions, ent.sessions)} if len(pools) > 2 else {}),
        "features": [_no_nulls({"name": f.name, "requires": sorted(f.requires), "trialEnds": _time(f.trial_ends),
                      "trialOver": f.trial_ends is not None and now >= f.trial_ends,
                      "limit": f.limit, "softLimit": f.soft_limit, "used": usage.feature_count(f.name)})
                     for f in sorted(ent.features.values(), key=lambda f: f.name)],
        "licenses": [_no_nulls({"name": lic.name, "phase": phases[lic.name].value, "revision": revisions.get(lic.name),
                      "edition": lic.spec.edition, "notAfter": _time(lic.spec.not_after),
                      "graceEnds": _time(lic.grace_ends) if lic.spec.not_after is not None else None})
                     for lic in licenses],
        "renewal": _time(renewal),
        "history": daily_peaks(history, {p: clamp_int64(used) for p, used, _ in pools}, now),
        **({"fleet": fleet} if fleet is not None else {}),
        "conditions": conditions,
    }
