"""The usage meter alone (``operator.usage_meter``): what it records for a Workload's life and
moves, and when -- built from a state, a ledger writer, a clock and a tenancy history, no
controller and no API server."""

from __future__ import annotations

from datetime import timedelta

import pytest

from entitle.adapters.metering.ledger import Ledger, LedgerWriter
from entitle.operator.tenancy import TenancyHistory
from entitle.operator.usage_meter import UsageMeter
from tests.unit.builders import NOW, lic, state_with, wl


@pytest.fixture
def meter():
    state = state_with(lic("base", instances={"max": 10}), lic("other", tenant="beta", instances={"max": 10}),
                       namespaces={"team-a": "acme"})
    clock = [NOW]
    ledger = Ledger(":memory:")
    writer = LedgerWriter(ledger)
    meter = UsageMeter(state, writer, "test", lambda: clock[0], lambda names: {}, TenancyHistory())
    meter.clock_value = clock
    yield meter
    writer.close()


def _records(meter):
    meter.writer.barrier().result(timeout=10)
    return [(r["data"]["operation"], r["subject"], r["time"]) for _, r in meter.writer.ledger.read()]


def _workload(generation=1, replicas=2, deleting=None):
    workload = wl("w", replicas=replicas)
    workload.metadata.uid, workload.metadata.generation = "u1", generation
    workload.metadata.creation_timestamp = NOW - timedelta(hours=1)
    workload.metadata.deletion_timestamp = deleting
    return workload


def test_a_life_is_created_at_creation_updated_when_observed_and_deleted_at_its_deletion(meter):
    meter.record_stored(_workload(), "acme", NOW)
    meter.record_stored(_workload(), "acme", NOW)                       # a replay: nothing new
    meter.clock_value[0] = NOW + timedelta(minutes=5)
    meter.record_stored(_workload(generation=2, replicas=3), "acme", NOW + timedelta(minutes=5))
    gone = meter.record_gone(_workload(generation=2, replicas=3, deleting=NOW + timedelta(minutes=9)), "u1", "acme",
                             NOW + timedelta(minutes=10))
    assert gone == "acme"
    assert _records(meter) == [("created", "acme", "2026-11-27T11:00:00Z"),
                               ("updated", "acme", "2026-11-27T12:05:00Z"),
                               ("deleted", "acme", "2026-11-27T12:09:00Z")]


def test_a_deletion_timestamp_older_than_the_last_record_bills_until_observed(meter):
    meter.record_stored(_workload(), "acme", NOW)
    meter.record_stored(_workload(generation=2), "acme", NOW + timedelta(minutes=5))
    meter.record_gone(_workload(generation=2, deleting=NOW + timedelta(minutes=1)), "u1", "acme",
                      NOW + timedelta(minutes=7))
    assert _records(meter)[-1] == ("deleted", "acme", "2026-11-27T12:07:00Z")


def test_a_move_is_dated_when_the_label_change_was_observed_and_never_before_the_last_record(meter):
    workload = _workload()
    meter.record_stored(workload, "acme", NOW)
    meter.counted["u1"] = "acme"
    meter.tenancy.observe("team-a", {"creationTimestamp": "2026-01-01T00:00:00Z"}, False, False, NOW)
    meter.tenancy.observe("team-a", {"resourceVersion": "9"}, True, False, NOW - timedelta(hours=2))
    meter.move(workload, "beta")
    assert _records(meter)[1:] == [("movedOut", "acme", "2026-11-27T11:00:00Z"),
                                   ("movedIn", "beta", "2026-11-27T11:00:00Z")]
    meter.move(workload, "beta")                                          # no change: nothing
    assert len(_records(meter)) == 3
    # Moved out to no tenant and gone: its parked row goes, no record.
    meter.move(workload, None)
    assert meter.record_gone(workload, "u1", None, NOW) is None
    meter.writer.barrier().result(timeout=10)
    assert meter.writer.ledger.live("workload") == {} and len(_records(meter)) == 4
