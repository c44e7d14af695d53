"""Per-class guarantee (c): every change of the tenant a Workload counts under is metered
(``movedOut`` / ``movedIn`` records, DESIGN "Usage records"), and export totals equal an
independent recount -- live, and across a restart that missed the move.

The controller is driven with watch bodies carrying the timestamps the apiserver would put
on them (creationTimestamp, deletionTimestamp) and managedFields a client may write, and its
records go through the same export the billing team runs. A move is dated when the operator
observed the label change -- never from managedFields (DESIGN "Usage records").
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entitle.adapters.metering.export import export
from entitle.api.common import format_time
from entitle.domain.meters import to_event
from tests.kube_double import KubeDouble
from tests.unit.builders import make_controller

pytestmark = pytest.mark.hostile  # the project's hostile-input suite: pytest -m hostile

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


class Harness:
    """A controller (no API server: watch bodies are fed by hand) and its ledger."""

    def __init__(self, path, clock: list, api: KubeDouble | None = None) -> None:
        self.clock = clock
        self.controller = make_controller(path, api=api, clock=lambda: self.clock[0])

    def records(self) -> list[dict]:
        self.controller.writer.barrier().result(timeout=30)
        return [r for _, r in self.controller.ledger.read()]

    def close(self) -> None:
        self.controller.writer.close()
        self.controller.ledger.close()


def ns_body(name: str, tenant: str | None, at: datetime) -> dict:
    labels = {"entitle.dev/tenant": tenant} if tenant else {"team": "x"}
    owned = {"f:entitle.dev/tenant": {}} if tenant else {"f:team": {}}
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels, "managedFields": [
        {"manager": "kubectl", "operation": "Update", "time": format_time(at),
         "fieldsV1": {"f:metadata": {"f:labels": owned}}}]}}


def wl_body(name: str, ns: str, replicas: int, generation: int, created: datetime, changed: datetime,
            deleting: datetime | None = None) -> dict:
    meta = {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}-{created.timestamp():.0f}",
            "generation": generation, "creationTimestamp": format_time(created),
            "finalizers": ["entitle.dev/usage-record"],
            "managedFields": [{"manager": "kubectl", "operation": "Update", "time": format_time(changed)}]}
    if deleting:
        meta["deletionTimestamp"] = format_time(deleting)
    return {"apiVersion": "entitle.dev/v1alpha1", "kind": "Workload", "metadata": meta, "spec": {"replicas": replicas}}


def totals(records: list[dict], start: datetime, end: datetime) -> dict:
    events = [e for e in (to_event(r) for r in records) if e is not None]
    return export(events, int(start.timestamp()), int(end.timestamp()), None)


def test_a_relabel_moves_the_workload_and_bills_each_tenant_for_its_part(tmp_path):
    clock = [T0]
    h = Harness(tmp_path / "l.db", clock)
    c = h.controller
    c.on_namespace(ns_body("ns", "a", T0))
    c.on_workload(wl_body("w", "ns", 2, 1, T0, T0))
    moved = T0 + timedelta(hours=1)
    clock[0] = moved                                  # observed now; its managedFields claim an hour earlier
    c.on_namespace(ns_body("ns", "b", T0))
    gone = T0 + timedelta(hours=3)
    clock[0] = gone
    c.on_workload(wl_body("w", "ns", 2, 2, T0, T0, deleting=gone))
    records = h.records()
    ops = [(r["data"]["operation"], r["subject"]) for r in records if r["type"] == "dev.entitle.workload.v1"]
    assert ops == [("created", "a"), ("movedOut", "a"), ("movedIn", "b"), ("deleted", "b")]
    assert {r["time"] for r in records if r["data"]["operation"].startswith("moved")} == {format_time(moved)}
    out = totals(records, T0, T0 + timedelta(days=1))
    assert out["a"]["instance_hours"] == 2.0 and out["b"]["instance_hours"] == 4.0
    h.close()


def test_removing_the_label_stops_billing_and_a_later_delete_writes_nothing(tmp_path):
    clock = [T0]
    h = Harness(tmp_path / "l.db", clock)
    c = h.controller
    c.on_namespace(ns_body("ns", "a", T0))
    c.on_workload(wl_body("w", "ns", 1, 1, T0, T0))
    clock[0] = T0 + timedelta(hours=2)
    c.on_namespace(ns_body("ns", None, T0 + timedelta(hours=2)))
    clock[0] = T0 + timedelta(hours=5)
    c.on_workload(wl_body("w", "ns", 1, 2, T0, T0, deleting=clock[0]))
    records = h.records()
    assert [r["data"]["operation"] for r in records] == ["created", "movedOut"]
    assert totals(records, T0, T0 + timedelta(days=30))["a"]["instance_hours"] == 2.0
    assert c.ledger.live("workload") == {}, "the parked row goes with the object"
    h.close()


def test_a_move_while_the_operator_was_down_is_metered_at_the_next_start(tmp_path):
    clock = [T0]
    first = Harness(tmp_path / "l.db", clock)
    first.controller.on_namespace(ns_body("ns", "a", T0))
    first.controller.on_namespace(ns_body("parked", "a", T0))
    first.controller.on_workload(wl_body("w", "ns", 3, 1, T0, T0))
    first.controller.on_workload(wl_body("p", "parked", 1, 1, T0, T0))
    clock[0] = T0 + timedelta(hours=1)
    first.controller.on_namespace(ns_body("parked", None, T0 + timedelta(hours=1)))
    first.records()
    first.close()
    # Down; meanwhile ns goes a -> b and "parked" gets tenant c. A new process starts from the ledger.
    clock[0] = T0 + timedelta(hours=6)

    def cluster() -> KubeDouble:
        return KubeDouble(ns_body("ns", "b", T0 + timedelta(hours=2)), ns_body("parked", "c", T0 + timedelta(hours=4)),
                          wl_body("w", "ns", 3, 1, T0, T0), wl_body("p", "parked", 1, 1, T0, T0))

    second = Harness(tmp_path / "l.db", clock, api=cluster())
    asyncio.run(second.controller.prime_async())
    records = second.records()
    out = totals(records, T0, T0 + timedelta(hours=10))
    # The relabels happened while nobody watched: nothing the operator can prove dates them but
    # its own start (the namespaces' managedFields are a client's words). w counts under a until
    # then, p until it was seen unlabeled.
    assert out["a"]["instance_hours"] == 3 * 6 + 1 * 1
    assert out["b"]["instance_hours"] == 3 * 4
    assert out["c"]["instance_hours"] == 1 * 4
    # A third start notices nothing new: no duplicate moves.
    count = len(records)
    second.close()
    third = Harness(tmp_path / "l.db", clock, api=cluster())
    asyncio.run(third.controller.prime_async())
    assert len(third.records()) == count
    third.close()


NAMESPACES = ["n1", "n2", "n3"]
TENANTS = ["a", "b", None]
ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(["w1", "w2", "w3"]), st.sampled_from(NAMESPACES), st.integers(0, 4)),
    st.tuples(st.just("delete"), st.sampled_from(["w1", "w2", "w3"]), st.sampled_from(NAMESPACES), st.just(0)),
    st.tuples(st.just("label"), st.just(""), st.sampled_from(NAMESPACES), st.sampled_from([0, 1, 2])),
)


@settings(max_examples=int(__import__('os').environ.get('ENTITLE_EXAMPLES', '60')), deadline=None)
@given(st.lists(st.tuples(ops, st.integers(1, 5000)), min_size=1, max_size=25), st.booleans())
def test_export_equals_an_independent_recount_through_any_moves(tmp_path_factory, steps, restart_midway):
    path = tmp_path_factory.mktemp("moves") / "l.db"
    clock = [T0]
    h = Harness(path, clock)
    labels = {ns: "a" for ns in NAMESPACES}
    for ns in NAMESPACES:
        h.controller.on_namespace(ns_body(ns, "a", T0))
    live: dict[tuple[str, str], dict] = {}          # (ns, name) -> body of the stored object
    truth: dict[str, int] = {}                       # tenant -> unit-seconds
    now = T0
    created = {}

    def advance(seconds: int) -> None:
        nonlocal now
        for (ns, _), body in live.items():
            tenant = labels[ns]
            if tenant:
                truth[tenant] = truth.get(tenant, 0) + body["spec"]["replicas"] * seconds
        now += timedelta(seconds=seconds)
        clock[0] = now

    for index, ((op, name, ns, value), gap) in enumerate(steps):
        advance(gap)
        if restart_midway and index == len(steps) // 2:
            h.records()
            h.close()
            h = Harness(path, clock, api=KubeDouble(*[ns_body(n, labels[n], now) for n in NAMESPACES],
                                                   *live.values()))
            asyncio.run(h.controller.prime_async())
        c = h.controller
        key = (ns, name)
        if op == "put":
            if key in live:
                body = live[key]
                gen = body["metadata"]["generation"] + 1
                live[key] = wl_body(name, ns, value, gen, created[key], now)
            else:
                created[key] = now
                live[key] = wl_body(name, ns, value, 1, now, now)
            c.on_workload(live[key])
        elif op == "delete" and key in live:
            body = live.pop(key)
            gen = body["metadata"]["generation"] + 1
            c.on_workload(wl_body(name, ns, body["spec"]["replicas"], gen, created[key], now, deleting=now))
        elif op == "label":
            labels[ns] = TENANTS[value]
            c.on_namespace(ns_body(ns, labels[ns], now))
    end = now + timedelta(hours=1)
    advance(3600)
    out = totals(h.records(), T0, end)
    h.close()
    for tenant in ("a", "b"):
        expected = round(truth.get(tenant, 0) / 3600, 6)
        assert out.get(tenant, {}).get("instance_hours", 0.0) == expected, (tenant, out, truth)
