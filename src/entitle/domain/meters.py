"""Usage meters over a period ``[start, end)``: the arithmetic of ``entitle usage export``.

Feed records in time order (see :func:`sort_key`); everything before ``start`` only builds the
state carried into the period. Quantities are integrated in whole seconds (so the same input
always gives the same numbers, to the second) and reported in hours.

Meters per tenant: ``instance_hours`` (units x hours), ``peak_instances``,
``overage_instance_hours`` (units above the instance max x hours), ``peak_seats`` (distinct
users), ``seat_hours``, ``feature_workload_hours`` (per feature: workloads with it x hours).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from entitle.api.common import parse_time as parse_rfc3339
from entitle.domain.records import AMENDMENT_TYPE, FEATURE_TYPE, LICENSE_TYPE, SESSION_TYPE, WORKLOAD_TYPE, is_amendable

# Order within one second and generation: a move out comes before a move in, a deletion last.
_WORKLOAD_OPS = {"created": 0, "updated": 1, "movedOut": 2, "movedIn": 3, "deleted": 4}
_LICENSE_OPS = {"activated": 0, "updated": 1, "expired": 2, "deleted": 3}


def parse_time(text: str) -> int:
    """RFC 3339 -> whole epoch seconds (floored)."""
    return math.floor(parse_rfc3339(text).timestamp())


@dataclass(frozen=True)
class Event:
    """The part of a usage record the meters need, in a sortable, compact form."""

    time: int
    type_rank: int            # licenses before workloads at the same second
    generation: int
    op_rank: int
    source: str
    id: str
    tenant: str
    kind: str                 # "workload" | "license"
    key: str                  # workload uid (or namespace/name)
    units: int = 0
    users: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    instance_max: int | None = None
    removes: bool = False
    # Amendments (kind "amendment"): ``time`` is the corrected period's start, ``until`` its end.
    meter: str | None = None
    quantity: float = 0.0
    until: int = 0

    def sort_key(self) -> tuple:
        return (self.time, self.type_rank, self.generation, self.op_rank, self.source, self.id)

    def to_row(self) -> list:
        return [self.time, self.type_rank, self.generation, self.op_rank, self.source, self.id, self.tenant,
                self.kind, self.key, self.units, list(self.users), list(self.features), self.instance_max,
                self.removes, self.meter, self.quantity, self.until]

    @classmethod
    def from_row(cls, row: list) -> Event:
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
                   tuple(row[10]), tuple(row[11]), row[12], row[13], row[14], row[15], row[16])


class BadRecord(ValueError):
    """A usage record lacks a field the meters need, or has one of the wrong type."""


def to_event(record: dict[str, Any]) -> Event | None:
    """Reduce a CloudEvent to an :class:`Event`; records of other types give ``None``."""
    rtype = record.get("type")
    if rtype == AMENDMENT_TYPE:
        return _amendment(record)
    if rtype == FEATURE_TYPE:
        return _feature_evaluations(record)
    if rtype == SESSION_TYPE:
        return _session(record)
    if rtype not in (WORKLOAD_TYPE, LICENSE_TYPE):
        return None
    try:
        data = record.get("data") or {}
        if not isinstance(data, dict):
            raise BadRecord(f"data is a {type(data).__name__}, not an object")
        tenant = data.get("tenant") or record.get("subject")
        if not tenant or not isinstance(tenant, str):
            raise BadRecord("no tenant (data.tenant or subject, a string)")
        if not isinstance(record.get("time"), str):
            raise BadRecord("time is not an RFC 3339 string")
        time = parse_time(record["time"])
        source, id_ = str(record.get("source", "")), str(record["id"])
        operation = data.get("operation")
        if rtype == WORKLOAD_TYPE:
            if operation not in _WORKLOAD_OPS:
                raise BadRecord(f"unknown workload operation {operation!r}")
            key = str(data.get("uid") or f"{data.get('namespace')}/{data.get('name')}")
            return Event(time, 1, int(data.get("generation") or 0), _WORKLOAD_OPS[operation], source, id_,
                         tenant, "workload", key, int(data.get("units") or 0),
                         _names(data.get("users"), "users"), _names(data.get("features"), "features"),
                         removes=operation in ("deleted", "movedOut"))
        if operation not in _LICENSE_OPS:
            raise BadRecord(f"unknown license operation {operation!r}")
        instances = ((data.get("entitlement") or {}).get("instances") or {})
        maximum = instances.get("max")
        return Event(time, 0, 0, _LICENSE_OPS[operation], source, id_, tenant, "license",
                     str(data.get("name", "")), instance_max=None if maximum is None else int(maximum))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        if isinstance(exc, BadRecord):
            raise
        raise BadRecord(f"{type(exc).__name__}: {exc}") from None


def _amendment(record: dict[str, Any]) -> Event:
    data = record.get("data")
    if not isinstance(data, dict):
        raise BadRecord("amendment without a data object")
    tenant, meter = data.get("tenant") or record.get("subject"), data.get("meter")
    if not isinstance(tenant, str) or not tenant:
        raise BadRecord("amendment without a tenant")
    if not isinstance(meter, str) or not is_amendable(meter):
        raise BadRecord(f"amendment of {meter!r}: only additive meters can be amended")
    quantity = data.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, (int, float)) or not math.isfinite(quantity):
        raise BadRecord("amendment quantity is not a finite number")
    try:
        start, end = parse_time(data["from"]), parse_time(data["to"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BadRecord("amendment period from/to is not RFC 3339") from None
    if end < start:
        raise BadRecord("amendment period ends before it starts")
    return Event(start, 2, 0, 0, str(record.get("source", "")), str(record.get("id")), tenant, "amendment", meter,
                 meter=meter, quantity=float(quantity), until=end)


def _feature_evaluations(record: dict[str, Any]) -> Event:
    data = record.get("data")
    if not isinstance(data, dict):
        raise BadRecord("feature record without a data object")
    tenant, feature, count = data.get("tenant") or record.get("subject"), data.get("feature"), data.get("evaluations")
    if not isinstance(tenant, str) or not tenant or not isinstance(feature, str) or not feature:
        raise BadRecord("feature record without a tenant or feature")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise BadRecord("feature record evaluations is not a count")
    try:
        hour = parse_time(data["hour"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BadRecord("feature record hour is not RFC 3339") from None
    return Event(hour, 3, 0, 0, str(record.get("source", "")), str(record.get("id")), tenant, "feature", feature,
                 units=count, meter=feature)


_SESSION_OPS = {"checkout": 0, "checkin": 4, "lapse": 4}


def _session(record: dict[str, Any]) -> Event:
    """A session record: the seat it holds from check-out to its end (check-in or lapse)."""
    data = record.get("data")
    if not isinstance(data, dict):
        raise BadRecord("session record without a data object")
    tenant, session, seat, operation = (data.get("tenant") or record.get("subject"), data.get("session"),
                                        data.get("seat"), data.get("operation"))
    if not isinstance(tenant, str) or not tenant or not isinstance(session, str) or not session:
        raise BadRecord("session record without a tenant or session")
    if not isinstance(seat, str) or not seat:
        raise BadRecord("session record without a seat")
    if operation not in _SESSION_OPS:
        raise BadRecord(f"unknown session operation {operation!r}")
    if not isinstance(record.get("time"), str):
        raise BadRecord("time is not an RFC 3339 string")
    try:
        time = parse_time(record["time"])
    except (TypeError, ValueError):
        raise BadRecord("time is not an RFC 3339 string") from None
    return Event(time, 1, 0, _SESSION_OPS[operation], str(record.get("source", "")), str(record.get("id")), tenant,
                 "session", session, users=(seat,), removes=operation != "checkout")


def amendment_share(event: Event, start: int, end: int) -> float:
    """The part of an amendment's quantity that falls in ``[start, end)`` (spread evenly over
    its period; a period of zero length counts where it lies)."""
    if event.until == event.time:
        return event.quantity if start <= event.time < end else 0.0
    overlap = min(event.until, end) - max(event.time, start)
    return event.quantity * overlap / (event.until - event.time) if overlap > 0 else 0.0


def _names(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRecord(f"data.{field} is not a list of strings")
    return tuple(sorted(set(value)))


@dataclass
class TenantMeter:
    workloads: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    units: int = 0
    users: Counter = field(default_factory=Counter)
    features: Counter = field(default_factory=Counter)
    instance_max: int | None = None
    cursor: int | None = None      # seconds integrated up to here
    unit_seconds: int = 0
    overage_unit_seconds: int = 0
    seat_seconds: int = 0
    feature_seconds: Counter = field(default_factory=Counter)
    features_in_period: set = field(default_factory=set)
    peak_instances: int = 0
    peak_seats: int = 0
    peaked: bool = False
    amended: Counter = field(default_factory=Counter)
    evaluations: Counter = field(default_factory=Counter)
    sessions: dict[str, str] = field(default_factory=dict)     # session -> seat
    session_seats: Counter = field(default_factory=Counter)
    session_seconds: int = 0
    peak_sessions: int = 0
    has_sessions: bool = False

    def integrate(self, until: int, start: int, end: int) -> None:
        begin = self.cursor if self.cursor is not None else until
        lo, hi = max(begin, start), min(until, end)
        if hi > lo:
            dt = hi - lo
            self.unit_seconds += self.units * dt
            if self.instance_max is not None and self.units > self.instance_max:
                self.overage_unit_seconds += (self.units - self.instance_max) * dt
            self.seat_seconds += len(self.users) * dt
            self.session_seconds += len(self.session_seats) * dt
            for feature, count in self.features.items():
                self.feature_seconds[feature] += count * dt
        if begin < start <= until and start < end:
            self.observe_peak()   # the state at ``start`` counts for the peaks
        self.cursor = max(begin, until)

    def observe_peak(self) -> None:
        self.peak_instances = max(self.peak_instances, self.units)
        self.peak_seats = max(self.peak_seats, len(self.users))
        self.peak_sessions = max(self.peak_sessions, len(self.session_seats))
        self.features_in_period.update(f for f, n in self.features.items() if n > 0)
        self.peaked = True

    def apply(self, event: Event) -> None:
        if event.kind == "license":
            self.instance_max = event.instance_max
            return
        if event.kind == "session":
            self.has_sessions = True
            seat = self.sessions.pop(event.key, None)
            if seat is not None:
                _release(self.session_seats, (seat,))
            if not event.removes:
                self.sessions[event.key] = event.users[0]
                self.session_seats[event.users[0]] += 1
            return
        old = self.workloads.pop(event.key, None)
        if old is not None:
            self.units -= old[0]
            _release(self.users, old[1])
            _release(self.features, old[2])
        if not event.removes:
            self.workloads[event.key] = (event.units, event.users, event.features)
            self.units += event.units
            self.users.update(event.users)
            self.features.update(event.features)


def _release(counter: Counter, names: tuple[str, ...]) -> None:
    for name in names:
        if counter[name] <= 1:
            del counter[name]
        else:
            counter[name] -= 1


class Metering:
    """Integrates meters for every tenant over ``[start, end)`` from time-ordered events."""

    def __init__(self, start: int, end: int, tenant: str | None = None) -> None:
        self.start, self.end, self.only = start, end, tenant
        self.tenants: dict[str, TenantMeter] = {}
        self._group_time: int | None = None
        self._touched: set[str] = set()

    def feed(self, event: Event) -> None:
        if event.time >= self.end or (self.only is not None and event.tenant != self.only):
            return
        if event.kind == "feature":
            # Counted in the hour they happened; no state (DESIGN: dev.entitle.feature.v1).
            if event.time >= self.start:
                self.tenants.setdefault(event.tenant, TenantMeter()).evaluations[event.meter] += event.units
            return
        if event.kind == "amendment":
            # Corrections change no state: they add to the meters, outside the integration.
            share = amendment_share(event, self.start, self.end)
            if share:
                self.tenants.setdefault(event.tenant, TenantMeter()).amended[event.meter] += share
            return
        if event.time != self._group_time:
            self._close_group()
            self._group_time = event.time
        meter = self.tenants.setdefault(event.tenant, TenantMeter())
        meter.integrate(event.time, self.start, self.end)
        meter.apply(event)
        self._touched.add(event.tenant)

    def _close_group(self) -> None:
        # Peaks are read after every record of one second is applied, so a delete and a create
        # in the same second never make a peak that did not exist.
        if self._group_time is not None and self.start <= self._group_time < self.end:
            for tenant in self._touched:
                self.tenants[tenant].observe_peak()
        self._touched = set()

    def finish(self) -> dict[str, dict[str, Any]]:
        self._close_group()
        if self.only is not None:
            self.tenants.setdefault(self.only, TenantMeter())
        out = {}
        for tenant in sorted(self.tenants):
            meter = self.tenants[tenant]
            meter.integrate(self.end, self.start, self.end)
            if not meter.peaked and self.start < self.end:
                meter.observe_peak()
            amended = meter.amended
            amended_features = {m.split(":", 1)[1]: q for m, q in amended.items() if ":" in m}
            features = set(meter.feature_seconds) | meter.features_in_period | set(amended_features)
            out[tenant] = {
                "instance_hours": _hours(meter.unit_seconds, amended.get("instance_hours")),
                "peak_instances": meter.peak_instances,
                "overage_instance_hours": _hours(meter.overage_unit_seconds, amended.get("overage_instance_hours")),
                "peak_seats": meter.peak_seats,
                "seat_hours": _hours(meter.seat_seconds, amended.get("seat_hours")),
                "feature_workload_hours": {f: _hours(meter.feature_seconds.get(f, 0), amended_features.get(f))
                                           for f in sorted(features)},
            }
            if meter.has_sessions:
                # Only where there are any, as feature evaluations.
                out[tenant]["peak_sessions"] = meter.peak_sessions
                out[tenant]["session_hours"] = _hours(meter.session_seconds)
            if meter.evaluations:
                # Only where there are any: an export without feature records is unchanged.
                out[tenant]["feature_evaluations"] = dict(sorted(meter.evaluations.items()))
        return out


def _hours(seconds: int, amended: float | None = None) -> float:
    if amended:
        return round(seconds / 3600 + amended, 6)
    return round(seconds / 3600, 6)
