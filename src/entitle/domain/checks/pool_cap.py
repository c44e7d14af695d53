"""The cap rule shared by instances and seats, with bursts.

A pool may go above ``max`` up to ``max + extra`` while the tenant's monthly burst budget
for that pool lasts (allowed, with a warning). Past ``max + extra``, or once the budget is
used up, a request that raises the pool above ``max`` is denied.
"""

from datetime import timedelta

from entitle.api.common import format_duration
from entitle.domain.bursts import BurstClock
from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.entitlement import PoolEntitlement


def check_pool(ctx: CheckContext, reason: str, pool: str, cap: PoolEntitlement,
               before: int, after: int) -> Finding | None:
    if after <= before or cap.max is None or after <= cap.max:
        return None
    head = f"tenant {ctx.tenant}: {pool} {before} + {after - before} would exceed {cap.max}"
    if cap.burst_extra <= 0 or cap.burst_window <= timedelta(0):
        return Finding(reason, head)
    if after > cap.max + cap.burst_extra:
        return Finding(reason, f"{head} (burst allows up to {cap.max + cap.burst_extra})")
    used = ctx.bursts.get(pool, BurstClock()).used_at(ctx.now)
    budget = cap.burst_window.total_seconds()
    if used >= budget:
        return Finding(reason, f"{head} (burst budget used up)")
    left = timedelta(seconds=int(budget - used))
    ctx.warnings.append(
        f"tenant {ctx.tenant}: {pool} {after} above max {cap.max}, bursting up to "
        f"{cap.max + cap.burst_extra}; burst budget left this month: {format_duration(left)} "
        f"of {format_duration(cap.burst_window)}")
    return None
