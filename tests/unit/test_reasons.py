"""Every reason code and warning, table-driven, through the same entry point as the webhook."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.unit.builders import NOW, apply, delete, lic, state_with, wl

BASE = {"instances": {"max": 10}, "seats": {"max": 3},
        "features": [{"name": "sso"}, {"name": "audit", "requires": ["sso"], "limit": {"workloads": 1}},
                     {"name": "ai", "trialEnds": "2026-11-01T00:00:00Z"},
                     {"name": "reports", "softLimit": {"workloads": 1}}]}

CASES = [
    # (id, license spec overrides, earlier workloads, request workload, namespace, reason, message fragment)
    ("no-tenant", {}, [], wl("w", "loose"), "loose", "NoTenant", "namespace loose has no entitle.dev/tenant label"),
    ("no-license", None, [], wl("w"), "team-a", "NoActiveLicense", "tenant acme: no license is active now"),
    ("not-yet-valid", {"notBefore": "2027-01-01T00:00:00Z"}, [], wl("w"), "team-a", "NoActiveLicense", "no license"),
    ("expired", {"notAfter": "2026-11-01T00:00:00Z"}, [], wl("w"), "team-a", "NoActiveLicense", "no license"),
    ("unknown-kind", {}, [], wl("w", instanceKind="gpu"), "team-a", "UnknownInstanceKind", "unknown instanceKind 'gpu'"),
    ("feature-not-entitled", {}, [], wl("w", features=["quantum"]), "team-a", "FeatureNotEntitled",
     "feature quantum is not entitled"),
    ("trial-expired", {}, [], wl("w", features=["ai"]), "team-a", "FeatureTrialExpired", "trial of feature ai ended"),
    ("dependency-missing", {}, [], wl("w", features=["audit"]), "team-a", "FeatureDependencyMissing",
     "feature audit requires sso"),
    ("feature-limit", {}, [wl("a", features=["audit", "sso"])], wl("w", features=["audit", "sso"]), "team-a",
     "FeatureLimitExceeded", "feature audit workloads 1 + 1 would exceed 1"),
    ("instance-cap", {}, [wl("a", instanceKind="vm", replicas=2)], wl("w", replicas=3), "team-a",
     "InstanceCapExceeded", "tenant acme: instances 8 + 3 would exceed 10"),
    ("seat-cap", {}, [wl("a", users=["ann", "bob"])], wl("w", users=["bob", "cy", "dee"]), "team-a",
     "SeatCapExceeded", "tenant acme: seats 2 + 2 would exceed 3"),
    ("rule", {"rules": [{"name": "small", "expression": "workload.spec.replicas <= 2", "message": "keep it small"}]},
     [], wl("w", replicas=3), "team-a", "RuleViolation", "rule small of license base denied: keep it small"),
    ("rule-sees-tenant-usage", {"rules": [{"name": "cap", "expression": "tenant.usage.instances <= 4"}]},
     [wl("a", replicas=3)], wl("w", replicas=2), "team-a", "RuleViolation", "rule cap"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_denial_reason(case):
    _, overrides, earlier, request, ns, reason, fragment = case
    licenses = [] if overrides is None else [lic("base", **{**BASE, **overrides})]
    state = state_with(*licenses, namespaces={"team-a": "acme", "loose": None})
    for item in earlier:
        assert apply(state, item).allowed
    decision = apply(state, request)
    assert not decision.allowed
    assert decision.reason == reason
    assert fragment in decision.message


def test_checks_run_in_design_order():
    # Unknown kind (check 3) wins over a feature problem (check 4) and a cap (check 5).
    state = state_with(lic("base", **BASE))
    decision = apply(state, wl("w", instanceKind="gpu", replicas=100, features=["quantum"]))
    assert decision.reason == "UnknownInstanceKind"
    # FeatureNotEntitled (4a) over InstanceCapExceeded (5).
    assert apply(state, wl("w", replicas=100, features=["quantum"])).reason == "FeatureNotEntitled"
    # Instances (5a) before seats (5b) before rules (6).
    assert apply(state, wl("w", replicas=100, users=list("abcdef"))).reason == "InstanceCapExceeded"


def test_soft_limit_warns():
    state = state_with(lic("base", **BASE))
    assert apply(state, wl("a", features=["reports"])).warnings == []
    decision = apply(state, wl("b", features=["reports"]))
    assert decision.allowed
    assert any("above its soft limit of 1" in w for w in decision.warnings)


def test_grace_period_warns_on_every_admission():
    state = state_with(lic("base", **BASE, notAfter="2026-11-27T00:00:00Z", gracePeriod="2d"))
    decision = apply(state, wl("a"))
    assert decision.allowed
    assert decision.warnings == ["license base expired at 2026-11-27T00:00:00Z; its grace period ends at 2026-11-29T00:00:00Z"]
    after_grace = apply(state, wl("b"), now=NOW + timedelta(days=3))
    assert after_grace.reason == "NoActiveLicense"


def test_decrease_always_allowed_even_over_cap():
    state = state_with(lic("base", **BASE))
    assert apply(state, wl("a", replicas=8, users=["x", "y", "z"], features=["sso"])).allowed
    state.set_license(lic("base", **{**BASE, "instances": {"max": 2}, "seats": {"max": 1}}))
    assert apply(state, wl("a", replicas=9)).reason == "InstanceCapExceeded"
    assert apply(state, wl("a", replicas=5, users=["x", "y", "z"], features=["sso"])).allowed
    assert apply(state, wl("a", replicas=5, users=["x"], features=[])).allowed
    # Even when the license is gone entirely.
    state.delete_license("base")
    assert apply(state, wl("a", replicas=1, users=["x"])).allowed
    assert delete(state, "team-a", "a").allowed


def test_user_counts_once_per_tenant_and_guests_never():
    state = state_with(lic("base", **BASE))
    assert apply(state, wl("a", users=["ann", "bob"], guests=["g1", "g2", "g3", "g4"])).allowed
    assert apply(state, wl("b", users=["ann", "bob", "cy"])).allowed
    assert state.usage["acme"].seats == 3
    assert apply(state, wl("c", users=["ann"], guests=["zed"])).allowed


def test_warn_enforcement_allows_with_warning_and_audit_records_silently():
    for mode in ("Warn", "Audit"):
        state = state_with(lic("base", **BASE, enforcement=mode))
        decision = apply(state, wl("w", replicas=11))
        assert decision.allowed
        assert decision.reason == "InstanceCapExceeded"
        assert [v.reason for v in decision.violations] == ["InstanceCapExceeded"]
        warned = any("InstanceCapExceeded" in w for w in decision.warnings)
        assert warned is (mode == "Warn")
    # Checks 1-3 deny whatever the enforcement.
    state = state_with(lic("base", **BASE, enforcement="Audit"))
    assert apply(state, wl("w", instanceKind="gpu")).reason == "UnknownInstanceKind"


def test_strictest_enforcement_wins_when_stacked():
    state = state_with(lic("a", **BASE, enforcement="Audit"), lic("b", instances={"max": 1}, enforcement="Enforce"))
    assert not apply(state, wl("w", replicas=12)).allowed


def test_stacking_adds_caps_and_trial_license_does_not_lift_them():
    state = state_with(lic("base", instances={"max": 4}), lic("addon", instances={"max": 2}),
                       lic("trial", features=[{"name": "sso", "trialEnds": "2026-12-31T00:00:00Z"}]))
    assert apply(state, wl("a", replicas=6, features=["sso"])).allowed
    assert apply(state, wl("b", replicas=1)).message == "tenant acme: instances 6 + 1 would exceed 6"


def test_feature_attributes_most_permissive_when_stacked():
    state = state_with(lic("a", features=[{"name": "sso", "trialEnds": "2026-11-01T00:00:00Z", "limit": {"workloads": 1}}]),
                       lic("b", features=[{"name": "sso", "limit": {"workloads": 2}}]))
    assert apply(state, wl("w1", features=["sso"])).allowed   # trial in a, permanent in b
    assert apply(state, wl("w2", features=["sso"])).allowed   # highest limit: 2
    assert apply(state, wl("w3", features=["sso"])).reason == "FeatureLimitExceeded"


def test_invalid_rule_makes_license_grant_nothing():
    state = state_with(lic("base", instances={"max": 5}, rules=[{"name": "bad", "expression": "1 +"}]))
    assert state.licenses["base"].invalid_reason.startswith("rule 'bad'")
    assert apply(state, wl("w")).reason == "NoActiveLicense"


def test_burst_allows_with_warning_then_budget_runs_out():
    spec = {"instances": {"max": 4, "burst": {"extra": 2, "window": "1h"}}}
    state = state_with(lic("base", **spec))
    assert apply(state, wl("a", replicas=4)).allowed
    burst = apply(state, wl("b", replicas=1))
    assert burst.allowed and any("bursting" in w for w in burst.warnings)
    over_limit = apply(state, wl("c", replicas=2))
    assert over_limit.message == "tenant acme: instances 5 + 2 would exceed 4 (burst allows up to 6)"
    later = NOW + timedelta(hours=2)
    used_up = apply(state, wl("c", replicas=1), now=later)
    assert used_up.message == "tenant acme: instances 5 + 1 would exceed 4 (burst budget used up)"
    # Going back under max is allowed, and the budget resets next month.
    assert delete(state, "team-a", "b", now=later).allowed
    next_month = NOW.replace(month=12, day=1)
    assert apply(state, wl("c", replicas=1), now=next_month).allowed


def test_dry_run_decides_but_changes_nothing():
    state = state_with(lic("base", instances={"max": 2}))
    assert apply(state, wl("a", replicas=2), dry_run=True).allowed
    assert state.usage["acme"].units == 0
    assert apply(state, wl("a", replicas=2)).allowed


def test_metadata_only_updates_are_allowed_even_unseen_and_terminating_raises_are_checked():
    from entitle.domain.admission import UPDATE
    from entitle.domain.state import WorkloadRequest

    state = state_with(lic("base", instances={"max": 1}))
    old = wl("gone", replicas=5)
    new = wl("gone", replicas=5)
    new.metadata.labels = {"x": "y"}
    # The state never saw this object (e.g. it already forgot a terminating one): still allowed.
    assert state.admit(WorkloadRequest(UPDATE, "team-a", "gone", new, old), NOW).allowed
    # Terminating (a foreign finalizer holds it) is no pass: a raise is a raise, checked and denied.
    raised = wl("gone", replicas=6)
    raised.metadata.deletion_timestamp = NOW
    denied = state.decide(WorkloadRequest(UPDATE, "team-a", "gone", raised, old), NOW)
    assert not denied.allowed and denied.message == "tenant acme: instances 5 + 1 would exceed 1"
    assert not state.decide(WorkloadRequest(UPDATE, "team-a", "gone", wl("gone", replicas=6), old), NOW).allowed
    # ... while its metadata (dropping a finalizer, a label) and a scale-down still pass.
    lowered = wl("gone", replicas=2)
    lowered.metadata.deletion_timestamp = NOW
    assert state.decide(WorkloadRequest(UPDATE, "team-a", "gone", lowered, old), NOW).allowed
