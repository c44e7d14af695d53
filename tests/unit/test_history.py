"""The daily peaks a TenantEntitlement keeps (domain.history)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from entitle.domain.history import HISTORY_DAYS, daily_peaks

DAY0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


def test_today_keeps_the_highest_usage_seen_and_a_new_day_starts_from_the_current_one():
    h = daily_peaks(None, {"instances": 3, "seats": 1}, DAY0)
    h = daily_peaks(h, {"instances": 7, "seats": 0}, DAY0 + timedelta(hours=1))
    h = daily_peaks(h, {"instances": 2, "seats": 0}, DAY0 + timedelta(hours=2))
    assert h == [{"day": "2026-12-01", "instances": 7, "seats": 1}]
    h = daily_peaks(h, {"instances": 2, "seats": 0}, DAY0 + timedelta(days=1))
    assert h[-1] == {"day": "2026-12-02", "instances": 2, "seats": 0} and len(h) == 2


def test_at_most_35_days_oldest_dropped_and_gaps_are_not_invented():
    h = None
    for d in range(0, 60, 2):
        h = daily_peaks(h, {"instances": d}, DAY0 + timedelta(days=d))
    days = [e["day"] for e in h]
    assert len(h) <= HISTORY_DAYS and days == sorted(days)
    assert days[0] >= (DAY0 + timedelta(days=58 - HISTORY_DAYS + 1)).date().isoformat()
    assert days[-1] == (DAY0 + timedelta(days=58)).date().isoformat()
    assert len(days) == 18        # every other day: a day with no pass is absent, not zero


def test_a_hand_edited_history_is_read_defensively():
    stored = ["junk", {"day": "yesterday", "instances": 1}, {"day": "2026-11-30", "instances": -4},
              {"day": "2026-11-30", "seats": True}, {"day": "2026-11-29", "instances": 10 ** 6},
              {"day": "2099-01-01", "instances": 9},        # a future day: the clock went back
              {"day": "2026-11-28", "instances": 5, "seats": 2}]
    h = daily_peaks(stored, {"instances": 1}, DAY0)
    assert h == [{"day": "2026-11-28", "instances": 5, "seats": 2}, {"day": "2026-11-29", "instances": 10 ** 6},
                 {"day": "2026-12-01", "instances": 1}]
    assert daily_peaks({"not": "a list"}, {"instances": 0}, DAY0) == [{"day": "2026-12-01", "instances": 0}]
