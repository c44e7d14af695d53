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
