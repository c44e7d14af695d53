"""The flat fast path (``cel_flat``) only ever confirms what the nested evaluation decides:
whenever it says "all rules hold", they do; and for ordinary rules it is the path taken."""

from __future__ import annotations

import random

import pytest

from entitle.domain.cel_flat import flatten
from entitle.domain.checks import rule_violation
from tests.unit.builders import NOW, lic, state_with, wl
from entitle.domain.state import WorkloadRequest

RULES = [
    "workload.spec.replicas <= 4",
    "size(workload.spec.users) <= 2",
    "!('forbidden' in workload.spec.features)",
    "workload.metadata.name.size() < 12",
    "tenant.usage.instances <= 30",
    "license.tenant == tenant.name",
    "workload.spec.users.all(u, u.startsWith('u'))",
    "tenant.entitlement.instances == null || tenant.usage.instances <= tenant.entitlement.instances",
    "has(workload.spec.users) || true",                       # not rewritten: no fast path
    "workload.spec.instanceKind in ['container', 'vm']",
]


@pytest.mark.parametrize("picked", [RULES[:8], RULES[:3] + RULES[9:], RULES])
def test_the_fast_path_agrees_with_the_nested_evaluation(picked, monkeypatch):
    rules = [{"name": f"r{i}", "expression": e} for i, e in enumerate(picked)]
    state = state_with(lic("base", instances={"max": 40}, rules=rules))
    rnd = random.Random(7)
    fast_taken = 0
    real_fast = rule_violation._all_hold_fast
    for i in range(300):
        users = rnd.sample(["u1", "u2", "x3", "u4"], rnd.randint(0, 3))
        features = rnd.sample(["sso", "forbidden"], rnd.randint(0, 1))
        name = "w" * rnd.randint(1, 15)
        request = WorkloadRequest("CREATE", "team-a", name, wl(name, replicas=rnd.randint(0, 6), users=users,
                                                                  features=features))
        ctx = state.context(request, NOW)
        fast = real_fast(ctx, ctx.entitlement.rules)
        monkeypatch.setattr(rule_violation, "_all_hold_fast", lambda *_: False)
        nested = rule_violation.check(state.context(request, NOW))
        monkeypatch.setattr(rule_violation, "_all_hold_fast", real_fast)
        if fast:
            fast_taken += 1
            assert nested is None, f"fast path said all hold, nested: {nested}"
    if "has(" not in " ".join(picked):
        assert fast_taken > 20, "ordinary rules take the fast path"
    else:
        assert fast_taken == 0


def test_rewrites_that_would_change_meaning_are_refused():
    assert flatten("has(workload.spec.x)", {}) is None
    assert flatten("[1].all(workload, workload > 0)", {}) is None
    assert flatten("__e0 > 1", {}) is None
    names = {}
    assert flatten("workload.spec.users.exists(u, u == 'a') && x.workload.y", names) == \
        "__e0.exists(u, u == 'a') && x.workload.y"
    assert names == {("workload", ("spec", "users")): "__e0"}


def test_the_compiled_binder_binds_what_lookup_binds():
    """The generated binder reads the same values as the generic lookup, leaves the same paths
    unbound, copies the tenant's feature counts only for rules that can see them, and refuses
    a binding that is not a flat one."""
    from entitle.domain.cel_flat import Binder, bind

    bindings = (("__e0", "workload", ("spec", "replicas")), ("__e1", "workload", ("spec", "missing")),
                ("__e2", "tenant", ("usage", "instances")), ("__e3", "license", ("tenant",)),
                ("__e4", "workload", ("spec", "replicas", "deeper")))
    roots = {"workload": {"spec": {"replicas": 3}}, "tenant": {"usage": {"instances": 7}},
             "license": {"tenant": "acme"}}
    binder = Binder(bindings, roots["license"])
    assert binder(roots["workload"], roots["tenant"], {}) == bind(bindings, roots, {}) == \
        {"__e0": 3, "__e2": 7, "__e3": "acme"}
    assert binder.reads_tenant and not binder.reads_tenant_features
    assert binder(roots["workload"], None, {}) == {"__e0": 3, "__e3": "acme"}
    for path in [("usage", "features"), ("usage",), ()]:
        assert Binder((("__e0", "tenant", path),), {}).reads_tenant_features, path
    with pytest.raises(ValueError):
        Binder((("__e0", "workload", ("spec", "x'] or __import__('os') #")),), {})
    with pytest.raises(ValueError):
        Binder((("evil", "workload", ("spec",)),), {})
