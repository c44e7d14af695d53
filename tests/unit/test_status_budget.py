"""A status tick decides at most ``status_budget`` Workloads; the rest follow on later ticks."""

from __future__ import annotations

from entitle.adapters.metering.ledger import Ledger
from entitle.operator.config import OperatorConfig
from entitle.operator.controller import Controller
from tests.unit.builders import NOW, lic, state_with, wl


def test_a_large_tenant_is_spread_over_ticks_and_completes(tmp_path):
    state = state_with(lic("base", instances={"max": 100}))
    for i in range(25):
        state.observe_workload(wl(f"w{i}", replicas=1))
    controller = Controller(OperatorConfig(), state, Ledger(tmp_path / "l.db"), None)
    controller.status_budget = 10
    written: set[str] = set()
    ticks = 0
    dirty = {"acme"}
    while dirty and ticks < 10:
        controller.dirty = set()
        writes = controller.refresh(dirty, NOW)
        batch = {args[1] for kind, args in writes if kind == "workload"}
        assert len(batch) <= 10 and not (batch & written)
        written |= batch
        dirty, ticks = controller.dirty, ticks + 1
    assert written == {f"w{i}" for i in range(25)} and ticks == 3
    assert controller.refresh({"acme"}, NOW) == [], "nothing changed: nothing to write"
    controller.writer.close()
