"""The License what-if (domain.license_impact, domain.license_review): what the License webhook
refuses, and the impact per tenant it warns of -- decided by the same function as Workload
status, so the what-if and the status after applying agree. Pure, no server."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entitle.domain.license_impact import MAX_LINE, NAMED, STEP, impact, run_to_end
from entitle.domain.license_review import LicenseRefused, review_license
from entitle.domain.licenses import read_license
from entitle.domain.signatures import sign
from entitle.domain.status import entitled
from entitle.domain.usage import footprint
from tests.unit.builders import NOW, apply, lic, state_with, wl


def _body(name: str, **spec) -> dict:
    return {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": name},
            "spec": {"tenant": "acme", **spec}}


def _verdicts(state, tenant="acme") -> dict[str, bool]:
    ent = state.entitlement(tenant, NOW)
    out = {}
    for (ns, name), entry in state.workloads.items():
        fp = footprint(entry.workload.spec, state.table)
        out[f"{ns}/{name}"] = entitled(tenant, fp, ent, state.usage[tenant], {}, NOW)[0]
    return out


def test_lowering_a_cap_names_exactly_the_objects_whose_status_turns_false():
    state = state_with(lic("base", instances={"max": 20}, features=[{"name": "sso"}]))
    for i in range(4):
        assert apply(state, wl(f"w{i}", replicas=3)).allowed
    assert apply(state, wl("sso", replicas=1, features=["sso"])).allowed
    # 13 units used; a new spec with max 10 and no sso feature.
    after = read_license(lic("base", instances={"max": 10}))
    [tenant] = run_to_end(impact(state, "base", after, NOW))
    before = _verdicts(state)
    state.set_read_license(after)
    real = _verdicts(state)
    turned = sorted(k for k in before if before[k] and not real[k])
    assert sorted(name for name, _ in tenant.losing) == turned and turned
    assert dict(tenant.losing)["team-a/sso"] == "FeatureNotEntitled"
    head = tenant.lines()[0]
    assert "instances 13 of 20 -> 10 (OVER)" in head and "seats 0 of unlimited -> unlimited" in head


def test_deleting_the_only_license_and_raising_it_back():
    state = state_with(lic("base", instances={"max": 2}))
    apply(state, wl("a", replicas=1))
    [tenant] = run_to_end(impact(state, "base", None, NOW))
    assert tenant.losing == [("team-a/a", "NoActiveLicense")]
    assert "no active license after this change" in tenant.lines()[0]
    state.set_read_license(read_license(lic("base", instances={"max": 0})))
    [again] = run_to_end(impact(state, "base", read_license(lic("base", instances={"max": 5})), NOW))
    assert again.regaining == ["team-a/a"] and again.losing == []


def test_first_ten_named_then_a_count_and_lines_stay_printable_and_short():
    state = state_with(lic("base", instances={"max": 100}))
    for i in range(15):
        apply(state, wl(f"workload-with-a-rather-long-name-{i:02d}-\u00e9", replicas=2))
    [tenant] = run_to_end(impact(state, "base", read_license(lic("base", instances={"max": 1})), NOW))
    assert len(tenant.losing) == 15
    line = tenant.lines()[1]
    assert line.startswith("tenant acme: 15 object(s) would become Entitled=False")
    assert len(line) <= MAX_LINE and all(" " <= c <= "~" for c in line)
    full = ", ".join(f"{o} ({r})" for o, r in tenant.losing[:NAMED])
    assert "and 5 more" in line or len(full) > MAX_LINE


def test_the_scan_gives_the_loop_back_every_step():
    state = state_with(lic("base", instances={"max": 10_000}))
    for i in range(STEP * 3 + 5):
        apply(state, wl(f"w{i}", replicas=1))
    steps = impact(state, "base", read_license(lic("base", instances={"max": 1})), NOW)
    yields = 0
    while True:
        try:
            next(steps)
            yields += 1
        except StopIteration as done:
            [tenant] = done.value
            break
    assert yields == 3 and len(tenant.losing) == STEP * 3 + 5


def test_moving_a_license_to_another_tenant_is_refused_by_the_crd_but_both_tenants_are_reported():
    state = state_with(lic("base", instances={"max": 5}), namespaces={"team-a": "acme", "team-b": "beta"})
    apply(state, wl("a", replicas=1))
    tenants = run_to_end(impact(state, "base", read_license(lic("base", "beta", instances={"max": 5})), NOW))
    assert [t.tenant for t in tenants] == ["acme", "beta"]
    assert tenants[0].losing == [("team-a/a", "NoActiveLicense")]


@pytest.mark.parametrize("spec, code", [
    ({"rules": [{"name": "r", "expression": "workload.spec.replicas <"}]}, "RuleCompileError"),
    ({"notBefore": "2026-12-01T00:00:00Z", "notAfter": "2026-11-01T00:00:00Z"}, "InvalidSpec"),
])
def test_what_cannot_work_is_refused_with_the_reason(spec, code):
    with pytest.raises(LicenseRefused) as refused:
        review_license(_body("x", **spec), None, {}, None)
    assert refused.value.code == code and str(refused.value).startswith(code)


def test_signatures_are_refused_when_introduced_only():
    key = Ed25519PrivateKey.generate()
    keys = {"vendor": key.public_key()}
    good = _body("gold", instances={"max": 5})
    good["spec"]["signature"] = sign("gold", good["spec"], key, "vendor")
    assert review_license(good, None, keys, None).read.invalid_code is None
    tampered = _body("gold", instances={"max": 50})
    tampered["spec"]["signature"] = good["spec"]["signature"]
    with pytest.raises(LicenseRefused, match="SignatureInvalid"):
        review_license(tampered, good, keys, None)
    renamed = dict(good, metadata={"name": "gold-copy"})
    with pytest.raises(LicenseRefused, match="SignatureInvalid"):
        review_license(renamed, None, keys, None)
    with pytest.raises(LicenseRefused, match="SignatureMissing"):
        review_license(_body("plain"), None, keys, None)
    # Stored before the key was rotated out: a label change is not refused, it stays invalid.
    labelled = dict(tampered, metadata={"name": "gold", "labels": {"team": "x"}})
    reviewed = review_license(labelled, tampered, keys, None)
    assert reviewed.read.invalid_code == "SignatureInvalid" and "Valid=False" in reviewed.warnings[0]


def test_a_license_bound_to_another_cluster_is_accepted_with_a_warning():
    reviewed = review_license(_body("bound", clusterID="elsewhere"), None, {}, "this-cluster")
    assert reviewed.read.invalid_code == "ClusterMismatch"
    assert "ClusterMismatch" in reviewed.warnings[0]


def test_the_webhooks_what_if_always_fits_the_apiservers_4_kib_and_says_where_the_rest_is():
    """The apiserver keeps at most 4096 characters of warnings per response (and cuts the rest
    silently): the webhook's summary stays within it -- every tenant's pools first -- and its
    last line points to `entitle plan`, which prints everything."""
    import asyncio

    from entitle.adapters.webhook.server import Review
    from entitle.domain.license_impact import WARNINGS_BUDGET, full
    from entitle.operator.license_webhooks import license_routes

    tenants = {f"ns-{i}": f"tenant-with-a-long-name-{i:03d}" for i in range(40)}
    state = state_with(*(lic(f"l{i}", tenant, instances={"max": 100}) for i, tenant in enumerate(tenants.values())),
                       lic("shared", "tenant-with-a-long-name-000", instances={"max": 100}), namespaces=tenants)
    for ns in tenants:
        for j in range(30):
            apply(state, wl(f"workload-{j:02d}-with-a-long-name", ns=ns, replicas=2))
    ready = asyncio.Event()
    ready.set()
    review = Review("UPDATE", None, None, "shared", {"apiVersion": "entitle.dev/v1alpha1", "kind": "License",
                                                    "metadata": {"name": "shared"},
                                                    "spec": {"tenant": "tenant-with-a-long-name-000",
                                                             "instances": {"max": 1}}},
                    None, True)
    asyncio.run(license_routes(state, ready, lambda: NOW)["/licenses"](review))
    assert sum(len(w) for w in review.warnings) <= WARNINGS_BUDGET < 4096
    assert review.warnings[0].startswith("what-if (dry run): tenant tenant-with-a-long-name-000: instances 60 of 200")
    # A License touching 40 tenants at once (every one loses its objects):
    many = [run_to_end(impact(state, f"l{i}", read_license(lic(f"l{i}", t, instances={"max": 1})), NOW))[0]
            for i, t in enumerate(tenants.values())]
    from entitle.domain.license_impact import summary, within_budget

    cut = within_budget(summary(many), prefix="what-if (dry run): ")
    assert sum(len(w) for w in cut) <= WARNINGS_BUDGET
    assert "more line(s) not shown: `entitle plan -f <license file>` prints the full picture" in cut[-1]
    assert all(line.count("Entitled=False") == 0 for line in cut[:10])     # the pools come first
    everything = full(many)
    assert sum(1 for line in everything if line.startswith("  ns-")) == 39 * 30   # (tenant 000 keeps "shared")
