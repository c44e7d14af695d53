"""Meters per UTC hour: what ``entitle usage push`` hands a billing system.

The same arithmetic as :class:`entitle.domain.meters.Metering` (whole seconds, time-ordered
records, everything before the window builds the state carried into it), with every
integrated second booked to the hour it falls in. Additive meters per hour sum to the
export's total over the same whole hours (each hour rounded to 6 decimals on its own).

Peaks per hour (for systems that aggregate by max) are the largest state that held for a
positive time inside the hour.

**In whole seconds** (Stripe, which takes whole numbers only): the same meters named with
``_seconds`` for ``_hours`` (``instance_seconds``, ``seat_seconds``...), as integers. Integration
is in whole seconds already; only amendments (spread evenly over their period) fall between
seconds, so each amendment's seconds are rounded per hour carrying the remainder from its own
start: any run of hours sums to the exact total to within the second, and the same hour gets the
same integer whatever window a push asks for.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from entitle.domain.meters import Event, TenantMeter, amendment_share

HOUR = 3600
ADDITIVE = ("instance_hours", "overage_instance_hours", "seat_hours")
PEAKS = ("peak_instances", "peak_seats", "peak_sessions")
# Floating seats (DESIGN "Concurrent seats"): booked only for a tenant whose records hold a
# session, from its first one on, so tenants that never sold sessions push exactly as before.
SESSION_METERS = ("session_hours", "peak_sessions")
FEATURE_METER = "feature_workload_hours:"


class _HourMeter(TenantMeter):
    def __init__(self) -> None:
        super().__init__()
        self.hours: dict[int, Counter] = defaultdict(Counter)
        self.peaks: dict[int, dict[str, int]] = defaultdict(lambda: {"peak_instances": 0, "peak_seats": 0})

    def integrate(self, until: int, start: int, end: int) -> None:
        begin = self.cursor if self.cursor is not None else until
        lo, hi = max(begin, start), min(until, end)
        hour = lo - lo % HOUR
        while hour < hi:
            a, b = max(lo, hour), min(hi, hour + HOUR)
            dt = b - a
            bucket = self.hours[hour]
            bucket["instance_hours"] += self.units * dt
            if self.instance_max is not None and self.units > self.instance_max:
                bucket["overage_instance_hours"] += (self.units - self.instance_max) * dt
            bucket["seat_hours"] += len(self.users) * dt
            for feature, count in self.features.items():
                bucket[FEATURE_METER + feature] += count * dt
            peaks = self.peaks[hour]
            peaks["peak_instances"] = max(peaks["peak_instances"], self.units)
            peaks["peak_seats"] = max(peaks["peak_seats"], len(self.users))
            if self.has_sessions:
                bucket["session_hours"] += len(self.session_seats) * dt
                peaks["peak_sessions"] = max(peaks.get("peak_sessions", 0), len(self.session_seats))
            hour += HOUR
        self.cursor = max(begin, until)


def seconds_meter(meter: str) -> str:
    """``instance_hours`` -> ``instance_seconds``; ``feature_workload_hours:sso`` ->
    ``feature_workload_seconds:sso``."""
    name, _, feature = meter.partition(":")
    base = name[:-len("_hours")] + "_seconds" if name.endswith("_hours") else name
    return f"{base}:{feature}" if feature else base


def amendment_seconds(event: Event, hour: int) -> int:
    """An amendment's whole seconds in ``[hour, hour + 1h)``: the rounded cumulative share from
    its start through this hour, minus the same through the hour before (the carry)."""
    start = event.time - event.time % HOUR

    def through(until: int) -> int:
        if until <= start:
            return 0
        return round(amendment_share(event, start, until) * HOUR)

    return through(hour + HOUR) - through(hour)


class HourlyMetering:
    """Feed time-ordered events (as for :class:`Metering`); :meth:`finish` gives
    ``{tenant: {hour_start: {meter: quantity}}}`` for every hour of ``[start, end)`` that
    had any usage or amendment. ``start`` and ``end`` are whole UTC hours."""

    def __init__(self, start: int, end: int, tenant: str | None = None) -> None:
        if start % HOUR or end % HOUR:
            raise ValueError("hourly metering needs whole-hour bounds")
        self.start, self.end, self.only = start, end, tenant
        self.tenants: dict[str, _HourMeter] = {}
        self.amended: dict[str, dict[int, Counter]] = defaultdict(lambda: defaultdict(Counter))
        # The same in whole seconds, per amendment rounded with its own carry (see amendment_seconds).
        self.amended_seconds: dict[str, dict[int, Counter]] = defaultdict(lambda: defaultdict(Counter))

    def feed(self, event: Event) -> None:
        if event.time >= self.end or (self.only is not None and event.tenant != self.only):
            return
        if event.kind == "feature":
            return      # evaluations are not billed by the hour (export reports them)
        if event.kind == "amendment":
            first = max(self.start, event.time - event.time % HOUR)
            last = min(self.end, event.until if event.until > event.time else event.time + 1)
            for hour in range(first, last, HOUR):
                share = amendment_share(event, hour, hour + HOUR)
                if share:
                    self.amended[event.tenant][hour][event.meter] += share
                seconds = amendment_seconds(event, hour)
                if seconds:
                    self.amended_seconds[event.tenant][hour][event.meter] += seconds
            return
        meter = self.tenants.get(event.tenant)
        if meter is None:
            meter = self.tenants[event.tenant] = _HourMeter()
        meter.integrate(event.time, self.start, self.end)
        meter.apply(event)

    def finish(self) -> dict[str, dict[int, dict[str, float]]]:
        out: dict[str, dict[int, dict[str, float]]] = {}
        for tenant in sorted(set(self.tenants) | set(self.amended)):
            meter = self.tenants.get(tenant)
            if meter is not None:
                meter.integrate(self.end, self.start, self.end)
            hours: dict[int, dict[str, float]] = {}
            for hour in sorted(set(meter.hours if meter else ()) | set(self.amended.get(tenant, ()))):
                seconds = meter.hours.get(hour, Counter()) if meter else Counter()
                amended = self.amended.get(tenant, {}).get(hour, Counter())
                quantities: dict[str, Any] = {}
                for name in sorted(set(ADDITIVE) | set(seconds) | set(amended)):
                    quantities[name] = round(seconds.get(name, 0) / HOUR + amended.get(name, 0.0), 6)
                if meter is not None and hour in meter.peaks:
                    quantities.update(meter.peaks[hour])
                else:
                    quantities.update({"peak_instances": 0, "peak_seats": 0})
                hours[hour] = quantities
            out[tenant] = hours
        return out

    def finish_seconds(self) -> dict[str, dict[int, dict[str, int]]]:
        """The additive meters per hour in whole seconds (``*_seconds``), for destinations that
        take whole numbers only; call instead of :meth:`finish`."""
        out: dict[str, dict[int, dict[str, int]]] = {}
        for tenant in sorted(set(self.tenants) | set(self.amended_seconds)):
            meter = self.tenants.get(tenant)
            if meter is not None:
                meter.integrate(self.end, self.start, self.end)
            amended = self.amended_seconds.get(tenant, {})
            hours: dict[int, dict[str, int]] = {}
            for hour in sorted(set(meter.hours if meter else ()) | set(amended)):
                seconds = meter.hours.get(hour, Counter()) if meter else Counter()
                extra = amended.get(hour, Counter())
                hours[hour] = {seconds_meter(name): int(seconds.get(name, 0)) + int(extra.get(name, 0))
                               for name in sorted(set(ADDITIVE) | set(seconds) | set(extra))}
            out[tenant] = hours
        return out
