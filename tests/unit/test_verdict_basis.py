"""The tenant-wide basis of a workload's Entitled verdict changes exactly when a verdict can."""

from __future__ import annotations

from datetime import timedelta

from entitle.domain.status import entitled, verdict_basis
from entitle.domain.usage import footprint
from tests.unit.builders import NOW, lic, state_with, wl


def basis(state, now=NOW):
    return verdict_basis("acme", state.entitlement("acme", now), state.usage["acme"],
                         {p: c for (t, p), c in state.bursts.items() if t == "acme"}, now)


def test_usage_moving_under_the_cap_keeps_the_basis():
    state = state_with(lic("base", instances={"max": 5}))
    before = basis(state)
    state.observe_workload(wl("a", replicas=2))
    assert basis(state) == before


def test_crossing_the_cap_changes_the_basis_and_the_verdict():
    state = state_with(lic("base", instances={"max": 2}))
    state.observe_workload(wl("a", replicas=2))
    under = basis(state)
    state.observe_workload(wl("b", replicas=1))   # stored over the cap (e.g. admitted while down)
    over = basis(state)
    assert over != under
    ent, usage = state.entitlement("acme", NOW), state.usage["acme"]
    ok, reason, _ = entitled("acme", footprint(wl("a", replicas=2).spec, state.table), ent, usage, {}, NOW)
    assert not ok and reason == "InstanceCapExceeded"


def test_a_trial_ending_changes_the_basis():
    state = state_with(lic("base", features=[{"name": "sso", "trialEnds": (NOW + timedelta(hours=1)).isoformat()}]))
    assert basis(state, NOW) != basis(state, NOW + timedelta(hours=2))
