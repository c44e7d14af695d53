"""Hourly meters (what push sends) agree with export, and the push plan: base events, nothing
twice, one adjustment per corrected hour, no negative usage for Stripe, peaks only rise."""

from __future__ import annotations

import random

import pytest

from entitle.domain.hourly import HourlyMetering
from entitle.domain.meters import Metering, to_event
from entitle.domain.push_plan import Sent, idempotency_key, plan

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


def test_first_push_sends_base_keys_and_skips_zero_and_unknown_tenants():
    result = plan({**hourly(2.0), "x": {T0: {"instance_hours": 1.0}}, "z": {T0: {"instance_hours": 0.0}}}, {},
                  {"t": "cus", "z": "cz"}, peaks=False, negative_deltas=True)
    assert [(e.key, e.quantity, e.action) for e in result.events] == [
        (idempotency_key("t", "instance_hours", T0), 2.0, "event")]
    assert result.skipped == {"x": 1}


def test_nothing_twice_and_one_adjustment_per_corrected_hour():
    base = idempotency_key("t", "instance_hours", T0)
    acked = {("t", "instance_hours", T0): [Sent(base, 0, "event", 2.0)]}
    assert plan(hourly(2.0), acked, {"t": "c"}, False, True).events == []
    up = plan(hourly(2.5), acked, {"t": "c"}, False, True)
    assert [(e.quantity, e.revision, e.key != base) for e in up.events] == [(0.5, 1, True)] and up.adjustments == 1
    down = plan(hourly(1.5), acked, {"t": "c"}, False, True)
    assert [(e.quantity, e.action) for e in down.events] == [(-0.5, "event")]


def test_stripe_gets_a_cancel_and_the_corrected_quantity_instead_of_negative_usage():
    base = idempotency_key("t", "instance_hours", T0)
    acked = {("t", "instance_hours", T0): [Sent(base, 0, "event", 2.0), Sent(base[:-1] + "x", 1, "event", 0.5)]}
    events = plan(hourly(1.5), acked, {"t": "c"}, False, negative_deltas=False).events
    assert [(e.action, e.quantity, e.cancels) for e in events] == [
        ("cancel", -2.0, base), ("cancel", -0.5, base[:-1] + "x"), ("event", 1.5, None)]
    assert len({e.key for e in events}) == 3


def test_peaks_rise_but_are_never_lowered():
    key = idempotency_key("t", "peak_instances", T0)
    acked = {("t", "peak_instances", T0): [Sent(key, 0, "max", 4)], ("t", "instance_hours", T0): [
        Sent(idempotency_key("t", "instance_hours", T0), 0, "event", 2.0)]}
    rose = plan(hourly(2.0, peak=6), acked, {"t": "c"}, peaks=True, negative_deltas=True)
    assert [(e.meter, e.action, e.quantity) for e in rose.events] == [("peak_instances", "max", 6)]
    fell = plan(hourly(2.0, peak=3), acked, {"t": "c"}, peaks=True, negative_deltas=True)
    assert fell.events == [] and fell.unlowerable == [("t", "peak_instances", T0, 4, 3.0)]
    assert plan(hourly(2.0, peak=6), acked, {"t": "c"}, peaks=False, negative_deltas=True).events == []
