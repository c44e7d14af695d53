"""Status of Licenses and Workloads, computed from the state (pure; the controller writes it)."""

from __future__ import annotations

from datetime import datetime, timedelta

from entitle.api import limits
from entitle.api.common import format_duration, format_time
from entitle.api.limits import clamp_int64
from entitle.domain import reasons
from entitle.domain.bursts import BurstClock, month_key
from entitle.domain.entitlement import Entitlement, PoolEntitlement
from entitle.domain.licenses import Phase, ReadLicense
from entitle.domain.usage import Footprint, TenantUsage


def condition(ctype: str, ok: bool, reason: str, message: str, generation: int | None,
              previous: list[dict], now: datetime) -> dict:
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == ctype), None)
    since = before.get("lastTransitionTime") if before and before.get("status") == status else None
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": since or format_time(now)}


def _pool(used: int, cap: PoolEntitlement, clock: BurstClock | None, now: datetime) -> dict:
    # The controller folds the clock up to ``now`` before writing, so (used, overSince) is the
    # clock's exact state and can be restored as is after a restart.
    # Status fields are int64: a cap summed over licenses near the schema's bound, or a
    # usage from an absurd table weight, is written saturated rather than rejected (422).
    out = {"used": clamp_int64(used), "max": None if cap.max is None else clamp_int64(cap.max),
           "burstExtra": clamp_int64(cap.burst_extra),
           "burstUsedSeconds": round((clock or BurstClock()).used_at(now), 3)}
    if cap.burst_window:
        out["burstWindow"] = format_duration(cap.burst_window)
    if clock is not None and clock.over_since is not None:
        out["overSince"] = format_time(clock.over_since)
    return out


def summary(used: int, cap: PoolEntitlement) -> str:
    return f"{used}/{'-' if cap.max is None else cap.max}"


def pool_over(used: int, cap: PoolEntitlement) -> bool:
    return cap.max is not None and used > cap.max


# The stages of a License's ExpiringSoon condition, nearest first (lifecycle notices).
EXPIRY_STAGES = ((timedelta(days=1), "ExpiresIn1Day"), (timedelta(days=7), "ExpiresIn7Days"),
                 (timedelta(days=30), "ExpiresIn30Days"))


def expiring_condition(lic: ReadLicense, now: datetime, previous: list[dict]) -> dict:
    """``ExpiringSoon``: True, with the nearest stage crossed, while the license is active and
    its ``notAfter`` is 30 days away or less (``domain.notices`` turns a new stage into a notice)."""
    not_after = lic.spec.not_after
    stage = None
    if lic.phase(now) is Phase.ACTIVE and not_after is not None and not_after < limits.TIME_MAX:
        stage = next((name for span, name in EXPIRY_STAGES if not_after - now <= span), None)
    message = f"license {lic.name} expires at {format_time(not_after)}" if stage else ""
    return condition("ExpiringSoon", stage is not None, stage or "NotExpiringSoon", message,
                     lic.generation, previous, now)


def pool_figures(ent: Entitlement, usage: TenantUsage) -> tuple:
    """(pool, used, cap) of every pool a tenant has: sessions only where sold or in use, so
    tenants without them read as before."""
    figures = (("instances", usage.units, ent.instances), ("seats", usage.seats, ent.seats))
    if ent.sessions.max is not None or usage.sessions:
        figures += (("sessions", usage.sessions, ent.sessions),)
    return figures


def pools_over_cap(ent: Entitlement, usage: TenantUsage, bursts: dict[str, BurstClock], now: datetime) -> list[str]:
    """Pools over the cap, where increases are denied: beyond max + extra, or above max with
    no burst budget left this month (License and TenantEntitlement ``OverCap``)."""
    return [p for p, used, cap in pool_figures(ent, usage)
            if cap.hard_limit is not None and (used > cap.hard_limit or (
                pool_over(used, cap) and (bursts.get(p) or BurstClock()).used_at(now) >= cap.burst_window.total_seconds()))]


def license_status(lic: ReadLicense, ent: Entitlement, usage: TenantUsage,
                   bursts: dict[str, BurstClock], now: datetime, previous: list[dict]) -> dict:
    gen = lic.generation
    phase = lic.phase(now)
    valid = phase is not Phase.INVALID
    over = [p for p, used, cap in pool_figures(ent, usage) if pool_over(used, cap)]
    over_hard = pools_over_cap(ent, usage, bursts, now)
    conditions = [
        condition("Valid", valid, "Valid" if valid else (lic.invalid_code or "RuleCompileError"),
                  lic.invalid_reason or "all rules compile", gen, previous, now),
        condition("Active", lic.grants(now), phase.value,
                  {Phase.PENDING: f"not before {format_time(lic.spec.not_before) if lic.spec.not_before else ''}",
                   Phase.ACTIVE: "the license grants its entitlement",
                   Phase.GRACE: lic.grace_warning() if phase is Phase.GRACE else "",
                   Phase.EXPIRED: "the license has expired and grants nothing",
                   Phase.INVALID: "an invalid license grants nothing"}[phase], gen, previous, now),
        condition("InGrace", phase is Phase.GRACE, "InGrace" if phase is Phase.GRACE else "NotInGrace",
                  lic.grace_warning() if phase is Phase.GRACE else "", gen, previous, now),
        condition("OverCap", bool(over_hard), "OverCap" if over_hard else "WithinCap",
                  f"tenant {ent.tenant} is over its cap on {', '.join(over_hard)}: increases are denied"
                  if over_hard else f"tenant {ent.tenant} is within its caps", gen, previous, now),
        condition("InBurst", bool(over) and not over_hard, "InBurst" if over and not over_hard else "NotInBurst",
                  f"tenant {ent.tenant} is bursting above max on {', '.join(over)}" if over and not over_hard else "",
                  gen, previous, now),
        expiring_condition(lic, now, previous),
    ]
    return {
        "observedGeneration": gen,
        "conditions": conditions,
        "instances": _pool(usage.units, ent.instances, bursts.get("instances"), now),
        "seats": _pool(usage.seats, ent.seats, bursts.get("seats"), now),
        **({"sessions": _pool(usage.sessions, ent.sessions, bursts.get("sessions"), now)}
           if ent.sessions.max is not None or usage.sessions else {}),
        "features": {f: clamp_int64(n) for f, n in usage.features().items()},
        "burstMonth": month_key(now),
        "summary": f"instances {summary(usage.units, ent.instances)} seats {summary(usage.seats, ent.seats)}"
                   + (f" sessions {summary(usage.sessions, ent.sessions)}" if ent.sessions.max is not None else ""),
    }


def verdict_basis(tenant: str | None, ent: Entitlement | None, usage: TenantUsage | None,
                  bursts: dict[str, BurstClock], now: datetime) -> tuple:
    """Everything tenant-wide that :func:`entitled` reads, reduced to what can change its answer
    or message. Equal bases and an equal footprint give an equal verdict, so a controller can
    skip re-deciding the tenant's other workloads when one of them changes (O(changed), not
    O(tenant) per status tick)."""
    if tenant is None or ent is None or not ent.active:
        return (tenant, None)
    trials = tuple(sorted((name, grant.trial_ends is not None and now >= grant.trial_ends)
                          for name, grant in ent.features.items()))
    pools = []
    for pool, used, cap in (("instances", usage.units, ent.instances), ("seats", usage.seats, ent.seats)):
        over = cap.max is not None and used > cap.max
        budget_left = (bursts.get(pool) or BurstClock()).used_at(now) < cap.burst_window.total_seconds()
        # The used figure is in the message only while over the max.
        pools.append((cap.max, over, over and (used > (cap.hard_limit or 0) or not budget_left), used if over else None))
    return (tenant, ent.licenses, trials, tuple(pools))


def entitled(tenant: str | None, fp: Footprint, ent: Entitlement | None, usage: TenantUsage | None,
             bursts: dict[str, BurstClock], now: datetime) -> tuple[bool, str, str]:
    """Is a running workload entitled now? (False flags it; entitle never deletes or scales it.)"""
    if tenant is None:
        return False, reasons.NO_TENANT, "the namespace has no tenant label"
    if ent is None or not ent.active:
        return False, reasons.NO_ACTIVE_LICENSE, f"tenant {tenant} has no active license"
    if not fp.known_kind:
        return False, reasons.UNKNOWN_INSTANCE_KIND, f"unknown instanceKind {fp.instance_kind!r}"
    for feature in sorted(fp.features):
        grant = ent.features.get(feature)
        if grant is None:
            return False, reasons.FEATURE_NOT_ENTITLED, f"feature {feature} is not entitled"
        if grant.trial_ends is not None and now >= grant.trial_ends:
            return False, reasons.FEATURE_TRIAL_EXPIRED, f"trial of feature {feature} has ended"
    for pool, holds, used, cap, reason in (
            ("instances", fp.units > 0, usage.units, ent.instances, reasons.INSTANCE_CAP_EXCEEDED),
            ("seats", bool(fp.users), usage.seats, ent.seats, reasons.SEAT_CAP_EXCEEDED)):
        if holds and cap.max is not None and used > cap.max:
            budget_left = (bursts.get(pool) or BurstClock()).used_at(now) < cap.burst_window.total_seconds()
            if used > (cap.hard_limit or 0) or not budget_left:
                return False, reason, f"tenant {tenant} {pool} {used} over max {cap.max}"
    return True, "Entitled", f"drawing on {', '.join(ent.licenses)}"


def merge_patch(stored: dict | None, wanted: dict) -> dict:
    """The RFC 7386 merge patch that turns ``stored`` into exactly ``wanted``.

    A merge patch only adds and replaces: a key the new status leaves out (``overSince`` once
    a pool is back under its max, a feature no workload enables any more) would stay in the
    object forever, and be read back as live state after a restart. So every key of ``stored``
    that ``wanted`` lacks is sent as ``null`` (delete), recursively through objects; lists are
    replaced whole, as merge patches do."""
    patch: dict = {}
    for key, value in wanted.items():
        before = (stored or {}).get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    for key in (stored or {}):
        if key not in wanted:
            patch[key] = None
    return patch


def merged(base: dict | None, patch: dict) -> dict:
    """``base`` with a merge patch applied (what the apiserver will store)."""
    out = dict(base or {})
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = merged(out.get(key) if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = value
    return out
