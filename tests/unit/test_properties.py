"""Properties of the engine, checked with hypothesis."""

from __future__ import annotations


from hypothesis import given, settings
from hypothesis import strategies as st

from entitle.domain.entitlement import effective_entitlement
from entitle.domain.licenses import read_license
from tests.unit.builders import NOW, apply, lic, state_with, wl

names = st.sampled_from(["w1", "w2", "w3", "w4"])
users = st.lists(st.sampled_from(["ann", "bob", "cy", "dee", "eve"]), max_size=4, unique=True)
features = st.lists(st.sampled_from(["sso", "audit"]), max_size=2, unique=True)
kinds = st.sampled_from(["container", "vm", "processCluster"])
specs = st.fixed_dictionaries({"replicas": st.integers(0, 6), "instanceKind": kinds, "users": users, "features": features})
LICENSE = {"instances": {"max": 12, "burst": {"extra": 3, "window": "1h"}}, "seats": {"max": 3},
           "features": [{"name": "sso"}, {"name": "audit", "limit": {"workloads": 2}}]}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(names, specs), max_size=12), names, specs)
def test_a_decrease_is_always_allowed(history, name, spec):
    state = state_with(lic("base", **LICENSE))
    for n, s in history:
        apply(state, wl(n, **s))
    current = state.workload("team-a", name)
    if current is None:
        return
    old = current.spec
    # Shrink every pool: fewer replicas, a subset of users and features.
    smaller = {"replicas": min(spec["replicas"], old.replicas), "instanceKind": old.instance_kind,
               "users": [u for u in old.users if u in spec["users"]],
               "features": [f for f in old.features if f in spec["features"]]}
    state.set_license(lic("base", instances={"max": 0}, seats={"max": 0}))  # now far over cap
    assert apply(state, wl(name, **smaller)).allowed


@settings(max_examples=100, deadline=None)
@given(st.permutations([
    lic("a", instances={"max": 3, "burst": {"extra": 1, "window": "2h"}}, features=[{"name": "sso", "limit": {"workloads": 1}}]),
    lic("b", instances={"max": 5}, seats={"max": 2}, enforcement="Warn",
        features=[{"name": "sso", "trialEnds": "2027-01-01T00:00:00Z"}, {"name": "x", "requires": ["sso"]}]),
    lic("c", features=[{"name": "x"}], enforcement="Audit", notAfter="2026-11-27T00:00:00Z", gracePeriod="1d"),
]))
def test_license_order_does_not_change_the_effective_entitlement(order):
    reference = effective_entitlement("acme", [read_license(x) for x in sorted(order, key=lambda l: l.metadata.name)], NOW)
    assert effective_entitlement("acme", [read_license(x) for x in order], NOW) == reference


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(names, specs, st.booleans()), min_size=1, max_size=20))
def test_usage_never_exceeds_max_plus_burst_under_enforce(ops):
    state = state_with(lic("base", **LICENSE))
    for name, spec, delete in ops:
        if delete:
            from tests.unit.builders import delete as remove
            remove(state, "team-a", name)
        else:
            apply(state, wl(name, **spec))
        usage = state.usage["acme"]
        assert usage.units <= 12 + 3
        assert usage.seats <= 3
        assert usage.feature_count("audit") <= 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(names, specs), min_size=1, max_size=15), st.randoms())
def test_incremental_usage_equals_a_recount(ops, rnd):
    state = state_with(lic("base", **LICENSE))
    for name, spec in ops:
        apply(state, wl(name, **spec))
    stored = [state.workload("team-a", n) for n in ("w1", "w2", "w3", "w4")]
    stored = [w for w in stored if w is not None]
    units = sum(state.table.units(w.spec.instance_kind, w.spec.replicas) for w in stored)
    seats = len({u for w in stored for u in w.spec.users})
    assert (state.usage["acme"].units, state.usage["acme"].seats) == (units, seats)
