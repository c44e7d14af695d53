"""Burst budgets: cumulative over-max time per calendar month (UTC), per tenant and pool."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone


def month_key(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m")


def month_start(now: datetime) -> datetime:
    now = now.astimezone(timezone.utc)
    return datetime(now.year, now.month, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class BurstClock:
    """Over-max time used this month; ``over_since`` is set while the pool is above max."""

    month: str | None = None
    used_seconds: float = 0.0
    over_since: datetime | None = None

    def used_at(self, now: datetime) -> float:
        used = self.used_seconds if self.month == month_key(now) else 0.0
        if self.over_since is not None:
            start = max(self.over_since, month_start(now))
            used += max(0.0, (now - start).total_seconds())
        return used

    def observe(self, now: datetime, over: bool) -> BurstClock:
        """Fold the time up to ``now`` into the month's total and note whether the pool is over."""
        return BurstClock(month_key(now), self.used_at(now), now if over else None)


def plausible(clock: BurstClock, now: datetime) -> bool:
    """Can a burst clock read back from License status be true at ``now``? The operator writes it,
    but a status is not proof: a month in the future would reset the budget (its "used" is not
    this month's), a negative or impossible use would grant more, an over-cap start in the future
    would stop it accruing. An implausible clock is ignored; the budget is then counted afresh."""
    if clock.month is None or clock.month > month_key(now):
        return False
    if clock.month == month_key(now):
        ceiling = (now - month_start(now)).total_seconds()
    else:
        ceiling = 31 * 24 * 3600.0
    if not 0.0 <= clock.used_seconds <= ceiling + 1.0:
        return False
    return clock.over_since is None or clock.over_since <= now
