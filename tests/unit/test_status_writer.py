"""The status writer (``operator.status``): a tick decides at most ``status_budget`` Workloads
(the rest follow on later ticks), and only Workloads get a Workload status."""

from __future__ import annotations

from tests.unit.builders import NOW, lic, make_controller, state_with, wl


def test_a_large_tenant_is_spread_over_ticks_and_completes(tmp_path):
    state = state_with(lic("base", instances={"max": 100}))
    for i in range(25):
        state.observe_workload(wl(f"w{i}", replicas=1))
    controller = make_controller(tmp_path / "l.db", state=state)
    status, marks = controller.status, controller.marks
    status.status_budget = 10
    written: set[str] = set()
    ticks = 0
    dirty = {"acme"}
    while dirty and ticks < 10:
        marks.tenants = set()
        writes = status.refresh(dirty, NOW)
        batch = {args[1] for kind, args in writes if kind == "workload"}
        assert len(batch) <= 10 and not (batch & written)
        written |= batch
        dirty, ticks = marks.tenants, ticks + 1
    assert written == {f"w{i}" for i in range(25)} and ticks == 3
    assert status.refresh({"acme"}, NOW) == [], "nothing changed: nothing to write"
    controller.writer.close()



def test_a_sourced_claim_gets_no_workload_status_and_no_workload_event(tmp_path):
    """A Deployment counted by a source is in the state as a claim keyed ``Deployment.apps/web``:
    it has no Workload to patch (the write was refused by RBAC on every tick, and every failed
    write made the next tick recompute everything), and an Event about it must not name a
    Workload that does not exist."""
    from entitle.domain.sources import Source, claim

    state = state_with(lic("base", instances={"max": 1}))
    source = Source(name="deploys", group="apps", version="v1", kind="Deployment", instance_kind="container",
                    selector=None, replicas_path=("spec", "replicas"), only_uncontrolled=False)
    state.observe_workload(claim(source, {"metadata": {"name": "web", "namespace": "team-a", "uid": "d1"},
                                          "spec": {"replicas": 3}}))      # over the cap: not entitled
    state.observe_workload(wl("w", replicas=2))
    controller = make_controller(tmp_path / "l.db", state=state, leader=True)
    writes = controller.status.refresh({"acme"}, NOW)
    assert [args[1] for kind, args in writes if kind == "workload"] == ["w"]
    assert all(e["name"] != "Deployment.apps/web" for e in controller.events.queued)
    controller.marks.namespaces.add("team-a")
    state.set_namespace("team-a", {})                     # no tenant: the untenanted pass
    assert [args[1] for kind, args in controller.status.refresh(set(), NOW) if kind == "workload"] == ["w"]
    controller.writer.close()
