"""Hourly meters (what push sends) agree with export, and the push plan: base events, nothing
twice, one adjustment per corrected hour, no negative usage for Stripe, peaks only rise."""

from __future__ import annotations

import random

import pytest

from entitle.domain.hourly import HourlyMetering
from entitle.domain.meters import Metering, to_event
from entitle.domain.push_plan import Scope, Sent, idempotency_key, plan

T0 = 1_793_577_600  # a whole hour


def record(i: int, uid: str, gen: int, op: str, t: int, units: int, users: list, features: list, tenant: str) -> dict:
    from datetime import datetime, timezone

    return {"source": "s", "id": f"{i}", "type": "dev.entitle.workload.v1", "subject": tenant,
            "time": datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": {"tenant": tenant, "uid": uid, "generation": gen, "operation": op, "units": units,
                     "users": users, "features": features}}


def random_events(seed: int) -> list:
    rnd = random.Random(seed)
    live: dict[str, int] = {}
    out = []
    t = T0 - 7200
    for i in range(300):
        t += rnd.randint(0, 200)
        tenant = rnd.choice(["a", "b"])
        if live and rnd.random() < 0.3:
            uid = rnd.choice(sorted(live))
            out.append(record(i, uid, live.pop(uid), "deleted", t, 0, [], [], uid.split("-")[0]))
            continue
        uid = f"{tenant}-{rnd.randint(0, 15)}"
        gen = live.get(uid, 0) + 1
        live[uid] = gen
        out.append(record(i, uid, gen, "created" if gen == 1 else "updated", t, rnd.randint(0, 5),
                          rnd.sample(["u1", "u2", "u3", "u4"], rnd.randint(0, 3)),
                          rnd.sample(["sso", "audit"], rnd.randint(0, 2)), uid.split("-")[0]))
    return [to_event(r) for r in out]


@pytest.mark.parametrize("seed", range(5))
def test_hours_sum_to_the_export_total_over_the_same_window(seed):
    events = sorted(random_events(seed), key=lambda e: e.sort_key())
    start, end = T0, T0 + 6 * 3600
    total, hourly = Metering(start, end), HourlyMetering(start, end)
    for event in events:
        total.feed(event)
        hourly.feed(event)
    totals, hours = total.finish(), hourly.finish()
    for tenant, meters in totals.items():
        for meter in ("instance_hours", "seat_hours", "overage_instance_hours"):
            assert sum(h.get(meter, 0) for h in hours.get(tenant, {}).values()) == pytest.approx(meters[meter], abs=1e-4)
        for feature, quantity in meters["feature_workload_hours"].items():
            got = sum(h.get(f"feature_workload_hours:{feature}", 0) for h in hours.get(tenant, {}).values())
            assert got == pytest.approx(quantity, abs=1e-4)
        assert max((h["peak_instances"] for h in hours.get(tenant, {}).values()), default=0) == meters["peak_instances"]


def hourly(value: float, peak: int = 0) -> dict:
    return {"t": {T0: {"instance_hours": value, "peak_instances": peak}}}


SCOPE = Scope("inst-1", "stripe:https://api.stripe.com")


def key(tenant, meter, hour, revision=0, customer="c", scope=SCOPE):
    return idempotency_key(scope, customer, tenant, meter, hour, revision)


def test_first_push_sends_base_keys_and_skips_zero_and_unknown_tenants():
    result = plan({**hourly(2.0), "x": {T0: {"instance_hours": 1.0}}, "z": {T0: {"instance_hours": 0.0}}}, {},
                  {"t": "cus", "z": "cz"}, False, SCOPE)
    assert [(e.key, e.quantity, e.action) for e in result.events] == [
        (key("t", "instance_hours", T0, customer="cus"), 2.0, "event")]
    assert result.skipped == {"x": 1}


def test_nothing_twice_and_one_signed_adjustment_per_corrected_hour():
    base = key("t", "instance_hours", T0)
    acked = {("t", "instance_hours", T0): [Sent(base, 0, "event", 2.0)]}
    assert plan(hourly(2.0), acked, {"t": "c"}, False, SCOPE).events == []
    up = plan(hourly(2.5), acked, {"t": "c"}, False, SCOPE)
    assert [(e.quantity, e.revision, e.key != base) for e in up.events] == [(0.5, 1, True)] and up.adjustments == 1
    # Lower: a negative delta under a new key, for every destination (Stripe included: it cancels
    # only within 24 h of receipt, and takes negative quantities).
    down = plan(hourly(1.5), acked, {"t": "c"}, False, SCOPE)
    assert [(e.quantity, e.action, e.revision) for e in down.events] == [(-0.5, "event", 1)]
    # Receipts of an earlier push's cancel still add up (minus the cancelled event).
    old = {("t", "instance_hours", T0): [Sent(base, 0, "event", 2.0), Sent(base + "-cancel", 1, "cancel", -2.0, base),
                                         Sent(key("t", "instance_hours", T0, 1), 1, "event", 1.5)]}
    assert plan(hourly(1.5), old, {"t": "c"}, False, SCOPE).events == []


def test_keys_are_unique_per_installation_destination_and_customer():
    one = key("prod", "instance_seconds", T0)
    assert len(one) <= 100
    assert one != key("prod", "instance_seconds", T0, scope=Scope("inst-2", SCOPE.destination))     # another cluster
    assert one != key("prod", "instance_seconds", T0, customer="other")                             # another customer
    assert one != key("prod", "instance_seconds", T0, scope=Scope("inst-1", "stripe:https://eu.example"))
    assert one == key("prod", "instance_seconds", T0) and one != key("prod", "instance_seconds", T0, 1)


def test_peaks_rise_but_are_never_lowered():
    peak = key("t", "peak_instances", T0)
    acked = {("t", "peak_instances", T0): [Sent(peak, 0, "max", 4)], ("t", "instance_hours", T0): [
        Sent(key("t", "instance_hours", T0), 0, "event", 2.0)]}
    rose = plan(hourly(2.0, peak=6), acked, {"t": "c"}, True, SCOPE)
    assert [(e.meter, e.action, e.quantity) for e in rose.events] == [("peak_instances", "max", 6)]
    fell = plan(hourly(2.0, peak=3), acked, {"t": "c"}, True, SCOPE)
    assert fell.events == [] and fell.unlowerable == [("t", "peak_instances", T0, 4, 3.0)]
    assert plan(hourly(2.0, peak=6), acked, {"t": "c"}, False, SCOPE).events == []


@pytest.mark.parametrize("seed", range(5))
def test_whole_seconds_per_hour_sum_to_the_export_to_the_second(seed):
    """Stripe's integers: any run of hours sums to the export's seconds, amendments included
    (each rounded with its own carry), and an hour's integer does not depend on the window."""
    from entitle.domain.meters import Event

    events = sorted(random_events(seed), key=lambda e: e.sort_key())
    amendments = [Event(T0 + 1234, 2, 0, 0, "s", f"am{i}", "a", "amendment", "instance_hours",
                        meter="instance_hours", quantity=q, until=T0 + 1234 + span)
                  for i, (q, span) in enumerate([(0.3333, 7 * 3600 + 17), (-0.125, 3600), (2.0, 0)])]
    start, end = T0, T0 + 8 * 3600
    wide = HourlyMetering(start, end)
    for event in sorted(events + amendments, key=lambda e: e.sort_key()):
        wide.feed(event)
    seconds = wide.finish_seconds()
    for first in range(8):
        for last in range(first + 1, 9):
            lo, hi = start + first * 3600, start + last * 3600
            total = Metering(lo, hi)
            for event in sorted(events + amendments, key=lambda e: e.sort_key()):
                total.feed(event)
            for tenant, meters in total.finish().items():
                got = sum(h.get("instance_seconds", 0) for t, h in seconds.get(tenant, {}).items() if lo <= t < hi)
                assert isinstance(got, int)
                assert abs(got - meters["instance_hours"] * 3600) <= 1, (tenant, lo, hi)
    narrow = HourlyMetering(start + 3 * 3600, start + 5 * 3600)
    for event in sorted(events + amendments, key=lambda e: e.sort_key()):
        narrow.feed(event)
    for tenant, hours in narrow.finish_seconds().items():
        for hour, meters in hours.items():
            assert meters == seconds[tenant][hour], (tenant, hour)
