"""Regression tests, at the unit level, for the defects of issue 10 (hostile input and faults).

Each test names the defect it covers; the end-to-end ones are in tests/e2e/test_blast_radius.py.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from entitle.adapters.webhook.shared_admission import SharedAdmission
from entitle.adapters.kube.holds import MemoryHoldStore, object_name
from entitle.adapters.metering.ledger import Ledger
from entitle.adapters.metering.sinks import build_sinks
from entitle.api import limits
from entitle.api.common import parse_duration, parse_time
from entitle.domain.licenses import Phase, read_license
from entitle.domain.status import license_status, merge_patch, merged
from entitle.operator import metrics
from entitle.operator.config import OperatorConfig
from tests.kube_double import KubeDouble
from tests.unit.builders import NOW, apply, lic, make_controller, state_with, wl

pytestmark = pytest.mark.hostile  # the project's hostile-input suite: pytest -m hostile


# -- defect 1: a License that overflows a Python date or duration --------------------------------
def test_defect1_grace_and_dates_at_the_end_of_time_saturate_instead_of_overflowing():
    assert parse_duration("99999999999w") == limits.MAX_DURATION
    assert parse_time("0000-01-01T00:00:00Z") == limits.TIME_MIN
    assert parse_time("9999-12-31T23:59:59-05:00") == limits.TIME_MAX
    forever = read_license(lic("f", notAfter="9999-12-31T23:59:59Z", gracePeriod="99999999999w"))
    assert forever.grace_ends == limits.TIME_MAX
    for now in (NOW, datetime(9999, 12, 29, tzinfo=timezone.utc), limits.TIME_MAX):
        assert forever.phase(now) in (Phase.ACTIVE, Phase.GRACE)     # "forever" never ends
    ended = read_license(lic("e", notAfter="2026-01-01T00:00:00Z", gracePeriod="999999999w"))
    assert ended.phase(NOW) is Phase.GRACE and "9999-12-30" in ended.grace_warning()


def test_defect1_a_bad_license_affects_only_its_own_tenant_and_says_why_in_status():
    state = state_with(lic("good", instances={"max": 5}), namespaces={"team-a": "acme", "team-b": "other"})
    controller = make_controller(state=state, clock=lambda: NOW)
    try:
        # Unreadable for the models (e.g. stored before the CRD had bounds): a non-string tenant.
        controller.on_license({"metadata": {"name": "bad", "uid": "u1", "generation": 3},
                               "spec": {"tenant": "other", "instances": {"max": "lots"}}})
        assert state.licenses["bad"].phase(NOW) is Phase.INVALID
        assert controller.status.refresh({"other", "acme"}, NOW), "status is still written for every tenant"
        status = license_status(state.licenses["bad"], state.entitlement("other", NOW), state.usage["other"], {}, NOW, [])
        valid = next(c for c in status["conditions"] if c["type"] == "Valid")
        assert valid["status"] == "False" and valid["reason"] == "InvalidSpec" and "instances.max" in valid["message"]
        assert apply(state, wl("w", replicas=5)).allowed                      # acme unaffected
        assert apply(state, wl("x", ns="team-b")).reason == "NoActiveLicense"  # other: nothing granted
    finally:
        controller.writer.close()


# -- defect 4: stale status keys ------------------------------------------------------------------
def test_defect4_a_status_write_removes_what_the_new_status_no_longer_has():
    stored = {"instances": {"used": 12, "max": 10, "overSince": "2026-11-01T00:00:00Z", "burstUsedSeconds": 60},
              "features": {"sso": 1, "audit": 2}, "summary": "x"}
    wanted = {"instances": {"used": 3, "max": 10, "burstUsedSeconds": 60}, "features": {"audit": 1}, "summary": "y"}
    patch = merge_patch(stored, wanted)
    assert patch["instances"]["overSince"] is None and patch["features"]["sso"] is None
    assert merged(stored, patch) == wanted


def test_defect4_the_controller_sends_the_removal_of_a_stale_over_cap_marker(tmp_path):
    state = state_with(lic("base", instances={"max": 2, "burst": {"extra": 5, "window": "1h"}}))
    body = lic("base", instances={"max": 2, "burst": {"extra": 5, "window": "1h"}}).model_dump(by_alias=True, mode="json")
    body["status"] = {"instances": {"used": 5, "max": 2, "overSince": "2026-11-27T11:00:00Z"}, "features": {"old": 3}}
    body["metadata"]["creationTimestamp"] = "2026-11-01T00:00:00Z"
    api = KubeDouble({**body, "kind": "License"})
    controller = make_controller(tmp_path / "l.db", state=state, clock=lambda: NOW, async_api=api, leader=True)
    controller.on_license(body)
    for kind, args in controller.status.refresh({"acme"}, NOW):
        asyncio.run(controller.status.write(kind, args))
    stored = api.get("License", "base")["status"]
    assert "overSince" not in stored["instances"] and "old" not in stored["features"], stored
    controller.writer.close()


# -- defect 5: a namespace that lost its tenant label --------------------------------------------
def test_defect5_scaling_down_in_an_unlabeled_namespace_is_allowed_but_raising_is_not():
    state = state_with(lic("base", instances={"max": 10}))
    apply(state, wl("w", replicas=4, users=["a"], features=[]))
    state.set_namespace("team-a", {})                  # the label is gone
    assert apply(state, wl("w", replicas=2, users=["a"])).allowed
    assert apply(state, wl("w", replicas=2, users=[])).allowed
    raised = apply(state, wl("w", replicas=3, users=[]))
    assert not raised.allowed and raised.reason == "NoTenant"


def test_defect5_workloads_of_an_unlabeled_namespace_are_not_entitled_in_status(tmp_path):
    state = state_with(lic("base", instances={"max": 10}))
    controller = make_controller(tmp_path / "l.db", state=state, clock=lambda: NOW)
    controller.leader = True
    body = wl("w", replicas=1).model_dump(by_alias=True, mode="json")
    body["metadata"].update(uid="u", generation=1, creationTimestamp="2026-11-01T00:00:00Z")
    controller.on_workload(body)
    first = dict((args[1], args[2]) for kind, args in controller.status.refresh({"acme"}, NOW) if kind == "workload")
    assert first["w"]["conditions"][0]["status"] == "True"
    controller.on_namespace({"metadata": {"name": "team-a", "labels": {}}})
    after = [args for kind, args in controller.status.refresh(set(controller.marks.tenants), NOW) if kind == "workload"]
    condition = after[0][2]["conditions"][0]
    assert condition["status"] == "False" and condition["reason"] == "NoTenant"
    controller.writer.close()


# -- defect 6: a corrupted hold object ------------------------------------------------------------
def test_defect6_a_corrupted_hold_object_is_named_then_healed_after_one_ttl():
    store = MemoryHoldStore()
    wall = [NOW]
    admission = SharedAdmission(state_with(lic("base", instances={"max": 10})), store, timedelta(seconds=15),
                                wall_clock=lambda: wall[0])
    store.corrupt("acme", "{not json")

    def create(name, dry_run=False, replicas=1):
        body = wl(name, replicas=replicas).model_dump(by_alias=True, mode="json")
        return asyncio.run(admission.review(NOW, operation="CREATE", subresource=None, body=body, old=None,
                                            dry_run=dry_run))[1]

    blocked = create("w1")
    assert not blocked.allowed and object_name("acme") in blocked.message and "unreadable" in blocked.message
    assert create("w2", dry_run=True).allowed          # dry runs, decreases: unaffected
    wall[0] = NOW + timedelta(seconds=16)
    assert create("w3").allowed                        # replaced: holds work again
    healed = store.peek("acme")
    assert healed.corrupt is None and (("team-a", "w3") in healed.entries or healed.grants)


# -- defect 7: caps near 2^63 ---------------------------------------------------------------------
def test_defect7_status_integers_saturate_at_int64():
    state = state_with(*[lic(f"l{i}", instances={"max": 2**62, "burst": {"extra": 2**62, "window": "1h"}})
                         for i in range(4)])
    status = license_status(state.licenses["l0"], state.entitlement("acme", NOW), state.usage["acme"], {}, NOW, [])
    assert status["instances"]["max"] == limits.INT64_MAX and status["instances"]["burstExtra"] == limits.INT64_MAX


# -- defect 8: two sinks of one type ----------------------------------------------------------------
def test_defect8_two_unnamed_sinks_of_one_type_get_their_own_cursors(tmp_path):
    sinks = build_sinks([{"type": "jsonl", "path": str(tmp_path / "a.jsonl")},
                         {"type": "jsonl", "path": str(tmp_path / "b.jsonl")}])
    assert len({s.name for s in sinks}) == 2
    with pytest.raises(ValueError, match="both named"):
        build_sinks([{"type": "jsonl", "path": "/x", "name": "n"}, {"type": "http", "url": "http://y", "name": "n"}])
    with pytest.raises(ValueError, match="both named"):
        OperatorConfig.model_validate({"sinks": [{"type": "jsonl", "path": "/x"}, {"type": "jsonl", "path": "/x"}]})


def test_defect8_the_only_sink_of_its_type_keeps_its_old_cursor(tmp_path):
    from entitle.adapters.metering.pump import SinkPump

    ledger = Ledger(tmp_path / "l.db")
    ledger.set_cursor("jsonl", 7)       # written by a version whose cursor key was the bare type
    (sink,) = build_sinks([{"type": "jsonl", "path": str(tmp_path / "a.jsonl")}])
    pump = SinkPump(ledger, sink)
    pump.adopt_legacy_cursor()
    assert ledger.cursor(sink.name) == 7


# -- defect 9: Events name the object's uid -------------------------------------------------------
def test_defect9_condition_events_carry_the_involved_objects_uid(tmp_path):
    state = state_with(lic("base", instances={"max": 0}))
    controller = make_controller(tmp_path / "l.db", state=state, clock=lambda: NOW)
    controller.leader = True
    body = wl("w", replicas=3).model_dump(by_alias=True, mode="json")
    body["metadata"].update(uid="the-uid", generation=1, creationTimestamp="2026-11-01T00:00:00Z")
    controller.on_workload(body)
    controller.status.refresh({"acme"}, NOW)
    from entitle.adapters.kube.client import event_body

    events = [e for e in controller.events.queued if e["kind"] == "Workload"]
    assert events and all(e["uid"] == "the-uid" for e in events)
    _, posted = event_body(**{k: v for k, v in events[0].items() if k != "own"})
    assert posted["involvedObject"]["uid"] == "the-uid"
    controller.writer.close()


# -- defect 10: metrics ---------------------------------------------------------------------------
def test_defect10_metrics_drop_vanished_series_and_never_export_unlimited_as_minus_one():
    from prometheus_client import generate_latest

    state = state_with(lic("base", seats={"max": 3}, features=[{"name": "sso"}]))
    apply(state, wl("w", features=["sso"]))
    metrics.observe_tenant("acme", state.usage["acme"], state.entitlement("acme", NOW), {}, NOW)
    text = generate_latest().decode()
    assert 'entitle_tenant_usage{pool="feature:sso",tenant="acme"} 1.0' in text
    assert 'entitle_tenant_entitlement{pool="instances",tenant="acme"}' not in text
    assert 'entitle_tenant_unlimited{pool="instances",tenant="acme"} 1.0' in text
    apply(state, wl("w", features=[]))
    metrics.observe_tenant("acme", state.usage["acme"], state.entitlement("acme", NOW), {}, NOW)
    assert 'pool="feature:sso",tenant="acme"' not in generate_latest().decode()
    assert max(b for b in metrics.ADMISSION_LATENCY._upper_bounds if b != float("inf")) >= 30


def test_defect10_the_ledger_record_gauge_follows_appends(tmp_path):
    controller = make_controller(tmp_path / "l.db", state=state_with())
    before = metrics.LEDGER_RECORDS._value.get()
    controller.meter.append({"source": "s", "id": "1", "type": "t", "subject": "x", "time": "2026-01-01T00:00:00Z"})
    controller.writer.barrier().result(timeout=10)
    assert metrics.LEDGER_RECORDS._value.get() == before + 1
    controller.writer.close()


# -- defect 12: a full disk is reported as itself ---------------------------------------------------
def test_defect12_a_full_disk_is_reported_as_a_full_disk(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    ledger._db.execute("PRAGMA max_page_count = 8")        # the disk fills up after a few pages
    record = {"source": "s", "type": "t", "subject": "x", "time": "2026-01-01T00:00:00Z", "data": {"x": "y" * 3000}}
    with pytest.raises(Exception) as info:
        for i in range(100):
            ledger.append([{**record, "id": str(i)}])
    assert "full" in str(info.value) and "no transaction" not in str(info.value)
    count = ledger.count()
    ledger._db.execute("PRAGMA max_page_count = 100000")   # space again: nothing lost, nothing doubled
    ledger.append([{**record, "id": str(i)} for i in range(100)])
    assert ledger.count() == 100 and count < 100


def test_defect6_nothing_is_written_over_an_object_corrupted_while_a_grant_is_open():
    """Corrupted after this replica took a grant: closing the grant must not overwrite the
    object (it may carry a peer's holds nobody can read); raising requests are denied naming
    it until one TTL has passed."""
    store = MemoryHoldStore()
    wall = [NOW]
    admission = SharedAdmission(state_with(lic("base", instances={"max": 10})), store, timedelta(seconds=15),
                                wall_clock=lambda: wall[0])

    async def run():
        async def create(name):
            body = wl(name, replicas=1).model_dump(by_alias=True, mode="json")
            return (await admission.review(NOW, operation="CREATE", subresource=None, body=body, old=None,
                                           dry_run=False))[1]

        assert (await create("w1")).allowed and store.peek("acme").grants
        store.corrupt("acme", "{garbage")
        wall[0] = NOW + timedelta(seconds=1)        # the grant is idle: the closer wants to close it
        await admission._commit("acme", [])         # one closing pass (conflict, re-read, corrupt)
        assert store.peek("acme").corrupt, "the corrupted object was overwritten"
        denied = await create("w2")
        assert not denied.allowed and object_name("acme") in denied.message
        admission.close()

    asyncio.run(run())
