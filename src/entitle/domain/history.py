"""The daily peak per pool a tenant sees in its TenantEntitlement (DESIGN "Dashboard": the
35-day trend without ledger access). Pure.

One entry per UTC day, oldest first, at most :data:`HISTORY_DAYS`: the highest usage of each
pool seen at a status pass that day (the operator recomputes a tenant's view whenever its usage
changes, so a rise is seen; a spike shorter than one pass may not be -- the ledger's meters are
the billing-grade record). Bounded: 35 entries of at most four small integers, ~3 KB.

What was stored is read defensively: an entry that is not a well-formed day with non-negative
integers is dropped (a hand-edited status must not stop the view from being written), and days
after today (a clock that went back) are dropped too.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

HISTORY_DAYS = 35
POOLS = ("instances", "seats", "sessions")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _valid(entry: object) -> dict | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("day"), str) or not _DAY.match(entry["day"]):
        return None
    out: dict = {"day": entry["day"]}
    for pool in POOLS:
        value = entry.get(pool)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return None
        out[pool] = value
    return out


def daily_peaks(previous: object, used: dict[str, int], now: datetime) -> list[dict]:
    """``previous`` (as stored) with today's entry raised to ``used`` where it is higher."""
    today = now.date()
    first = (today - timedelta(days=HISTORY_DAYS - 1)).isoformat()
    days: dict[str, dict] = {}
    for entry in previous if isinstance(previous, list) else ():
        valid = _valid(entry)
        if valid is not None and first <= valid["day"] <= today.isoformat():
            days[valid["day"]] = {**days.get(valid["day"], {}), **valid}
    current = days.setdefault(today.isoformat(), {"day": today.isoformat()})
    for pool, value in used.items():
        current[pool] = max(current.get(pool, 0), max(0, int(value)))
    return [days[d] for d in sorted(days)][-HISTORY_DAYS:]
