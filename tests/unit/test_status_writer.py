"""The status writer (``operator.status``): a tick decides at most ``status_budget`` Workloads
(the rest follow on later ticks)."""

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

