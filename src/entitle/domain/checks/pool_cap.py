"""The cap rule shared by instances and seats, with bursts.

A pool may go above ``max`` up to ``max + extra`` while the tenant's monthly burst budget
for that pool lasts (allowed, with a warning). Past ``max + extra``, or once the budget is
used up, a request that raises the pool above ``max`` is denied.
"""

from datetime import datetime, timedelta

from entitle.api.common import format_duration
from entitle.domain.bursts import BurstClock
from entitle.domain.checks.context import CheckContext, Finding
from entitle.domain.entitlement import PoolEntitlement


def pool_verdict(tenant: str, pool: str, cap: PoolEntitlement, before: int, after: int, clock: BurstClock,
                 now: datetime) -> tuple[str | None, str | None]:
    """(denial, warning) of raising ``pool`` from ``before`` to ``after``: the one cap-and-burst
    rule, for admissions (:func:`check_pool`) and session check-outs (domain.sessions)."""
    if after <= before or cap.max is None or after <= cap.max:
        return None, None
    head = f"tenant {tenant}: {pool} {before} + {after - before} would exceed {cap.max}"
    if cap.burst_extra <= 0 or cap.burst_window <= timedelta(0):
        return head, None
    if after > cap.max + cap.burst_extra:
        return f"{head} (burst allows up to {cap.max + cap.burst_extra})", None
    used = clock.used_at(now)
    budget = cap.burst_window.total_seconds()
    if used >= budget:
        return f"{head} (burst budget used up)", None
    left = timedelta(seconds=int(budget - used))
    return None, (f"tenant {tenant}: {pool} {after} above max {cap.max}, bursting up to "
                  f"{cap.max + cap.burst_extra}; burst budget left this month: {format_duration(left)} "
                  f"of {format_duration(cap.burst_window)}")


def check_pool(ctx: CheckContext, reason: str, pool: str, cap: PoolEntitlement,
               before: int, after: int) -> Finding | None:
    denial, warning = pool_verdict(ctx.tenant, pool, cap, before, after, ctx.bursts.get(pool, BurstClock()), ctx.now)
    if warning is not None:
        ctx.warnings.append(warning)
    return None if denial is None else Finding(reason, denial)
