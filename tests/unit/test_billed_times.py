"""Billed times the operator can prove (DESIGN "Usage records", "Integrity against the tenant"):
creations and deletions at the apiserver's timestamps, every other change when first observed
and never before the object's previous record; nothing a client writes dates a record. And a
Terminating object that a foreign finalizer keeps alive keeps counting until it is gone."""

from __future__ import annotations

from datetime import timedelta

import pytest

from entitle.adapters.metering.export import export, sorted_unique
from entitle.api.common import format_time
from entitle.domain.meters import to_event
from entitle.operator.finalizers import ReleaseFinalizer
from tests.unit.test_usage_meter_moves import T0, Harness, ns_body, totals, wl_body

pytestmark = pytest.mark.hostile


def _workload_records(h: Harness) -> list[tuple[str, int, str]]:
    return [(r["data"]["operation"], r["data"]["replicas"], r["time"]) for r in h.records()
            if r["type"] == "dev.entitle.workload.v1"]


def test_a_scale_down_is_dated_when_observed_whatever_its_managed_fields_claim(tmp_path):
    clock = [T0]
    h = Harness(tmp_path / "l.db", clock)
    c = h.controller
    c.on_namespace(ns_body("ns", "a", T0))
    c.on_workload(wl_body("bill", "ns", 100, 1, T0, T0))
    # `kubectl patch --field-manager=entitle` (or any managedFields a client writes): the entry
    # claims the change happened at T0; the operator sees it a month later.
    clock[0] = T0 + timedelta(days=29)
    body = wl_body("bill", "ns", 1, 2, T0, T0)
    body["metadata"]["managedFields"] = [{"manager": "entitle", "operation": "Update", "time": format_time(T0)}]
    c.on_workload(body)
    assert _workload_records(h) == [("created", 100, format_time(T0)), ("updated", 1, format_time(clock[0]))]
    assert totals(h.records(), T0, T0 + timedelta(days=30))["a"]["instance_hours"] == 100 * 29 * 24 + 24
    h.close()


def test_a_record_is_never_dated_before_the_objects_previous_record(tmp_path):
    clock = [T0 + timedelta(hours=2)]
    h = Harness(tmp_path / "l.db", clock)
    c = h.controller
    c.on_namespace(ns_body("ns", "a", T0))
    # Created "in the future" as far as this (injected) clock goes: the update seen next is dated
    # at the creation, not before it.
    c.on_workload(wl_body("w", "ns", 2, 1, T0 + timedelta(hours=3), T0))
    c.on_workload(wl_body("w", "ns", 1, 2, T0 + timedelta(hours=3), T0))
    times = [t for _, _, t in _workload_records(h)]
    assert times == [format_time(T0 + timedelta(hours=3))] * 2
    h.close()


def test_losing_the_tenant_label_moves_out_after_the_creation_never_before(tmp_path):
    clock = [T0]
    h = Harness(tmp_path / "l.db", clock)
    c = h.controller
    c.on_namespace(ns_body("ns", "a", T0))
    clock[0] = T0 + timedelta(hours=5)
    c.on_workload(wl_body("w", "ns", 4, 1, clock[0], clock[0]))
    clock[0] = T0 + timedelta(hours=7)
    # The label gone, its managedFields entry gone with it: the namespace's only entry is from T0.
    c.on_namespace(ns_body("ns", None, T0))
    ops = _workload_records(h)
    assert ops == [("created", 4, format_time(T0 + timedelta(hours=5))), ("movedOut", 4, format_time(clock[0]))]
    assert totals(h.records(), T0, T0 + timedelta(days=1))["a"]["instance_hours"] == 4 * 2
    h.close()


def test_a_terminating_workload_held_by_another_finalizer_keeps_counting_until_it_is_gone(tmp_path):
    clock = [T0]
    h = Harness(tmp_path / "l.db", clock)
    c = h.controller
    c.on_namespace(ns_body("ns", "a", T0))
    c.on_workload(wl_body("w", "ns", 1, 1, T0, T0))
    deleting = T0 + timedelta(hours=1)
    clock[0] = deleting
    body = wl_body("w", "ns", 1, 2, T0, T0, deleting=deleting)
    body["metadata"]["finalizers"].append("example.com/keep")
    assert c.on_workload(body) == []                    # entitle's finalizer stays
    assert c.state.usage["a"].units == 1                # still counted: it still exists
    # Scaled while Terminating (an admission checks it like any raise); counted and billed.
    clock[0] = T0 + timedelta(hours=2)
    scaled = wl_body("w", "ns", 5, 3, T0, T0, deleting=deleting)
    scaled["metadata"]["finalizers"].append("example.com/keep")
    c.on_workload(scaled)
    assert c.state.usage["a"].units == 5
    # The other finalizer goes: the deletion is recorded when observed, since it changed after
    # its deletionTimestamp (dating it then would bill the raise for nothing).
    clock[0] = T0 + timedelta(hours=4)
    released = wl_body("w", "ns", 5, 3, T0, T0, deleting=deleting)
    actions = c.on_workload(released)
    assert actions == [ReleaseFinalizer("ns", "w", ["entitle.dev/usage-record"])]
    assert c.state.usage["a"].units == 0
    assert _workload_records(h) == [("created", 1, format_time(T0)), ("updated", 5, format_time(T0 + timedelta(hours=2))),
                                    ("deleted", 5, format_time(clock[0]))]
    assert totals(h.records(), T0, T0 + timedelta(days=1))["a"]["instance_hours"] == 1 * 2 + 5 * 2
    h.close()


def test_an_unchanged_terminating_workload_is_billed_until_its_deletion_timestamp(tmp_path):
    clock = [T0]
    h = Harness(tmp_path / "l.db", clock)
    c = h.controller
    c.on_namespace(ns_body("ns", "a", T0))
    c.on_workload(wl_body("w", "ns", 3, 1, T0, T0))
    deleting = T0 + timedelta(hours=1)
    held = wl_body("w", "ns", 3, 2, T0, T0, deleting=deleting)
    held["metadata"]["finalizers"].append("example.com/keep")
    clock[0] = deleting + timedelta(minutes=5)
    c.on_workload(held)
    clock[0] = deleting + timedelta(hours=3)
    c.on_workload(wl_body("w", "ns", 3, 2, T0, T0, deleting=deleting))
    assert _workload_records(h)[-1] == ("deleted", 3, format_time(deleting))
    h.close()


def test_the_same_record_seen_by_two_replicas_at_different_moments_counts_once_at_the_first(tmp_path):
    """Replicas date an update when each first saw it; the merged export keeps the earliest copy
    (a later copy applied after a newer change would roll the object back)."""
    def record(rid, op, gen, replicas, at):
        return {"specversion": "1.0", "id": rid, "source": "s", "type": "dev.entitle.workload.v1", "subject": "a",
                "time": format_time(at), "data": {"tenant": "a", "uid": "u", "operation": op, "generation": gen,
                                                 "units": replicas, "replicas": replicas, "users": [], "features": []}}
    replica_a = [record("c", "created", 1, 1, T0), record("g2", "updated", 2, 10, T0 + timedelta(hours=1)),
                 record("g3", "updated", 3, 2, T0 + timedelta(hours=1, seconds=1))]
    replica_b = [record("c", "created", 1, 1, T0), record("g2", "updated", 2, 10, T0 + timedelta(hours=1, seconds=5)),
                 record("g3", "updated", 3, 2, T0 + timedelta(hours=1, seconds=6))]
    events = [to_event(r) for r in replica_a + replica_b]
    kept = list(sorted_unique(events, run_size=2))
    assert [(e.id, e.time) for e in kept] == [("c", int(T0.timestamp())),
                                                ("g2", int(T0.timestamp()) + 3600), ("g3", int(T0.timestamp()) + 3601)]
    out = export(events, int(T0.timestamp()), int((T0 + timedelta(hours=2)).timestamp()), None)
    assert out["a"]["instance_hours"] == round((1 * 3600 + 10 * 1 + 2 * 3599) / 3600, 6)
