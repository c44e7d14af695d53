"""In-apiserver enforcement (DESIGN "Tenant view and in-apiserver enforcement"): the chart's
ValidatingAdmissionPolicies, parameterized by each namespace's TenantEntitlement, keep denying
what needs no counting -- with the same reason codes -- while no webhook replica answers; the
counted checks then follow the webhook's failure policy (Fail here: denied, unchecked)."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import render_chart, wait_for
from tests.e2e.helpers import apply, get, license, namespace, unique, workload

pytestmark = pytest.mark.e2e


def _view(cluster, ns: str) -> dict:
    return ((get(cluster, "tenantentitlement", "entitlement", ns) or {}).get("status")) or {}


def _create(cluster, ns: str, name: str, **spec):
    return apply(cluster, workload(name, ns, **spec), check=False)


@pytest.fixture
def admission_policies(cluster):
    docs = render_chart("--set", "admissionPolicy.enabled=true", "--show-only", "templates/admissionpolicy.yaml")
    assert sorted(d["kind"] for d in docs) == ["ValidatingAdmissionPolicy"] * 4 + ["ValidatingAdmissionPolicyBinding"] * 4
    manifest = yaml.safe_dump_all(docs)
    cluster.kubectl("apply", "-f", "-", input=manifest)
    yield docs
    # Shared cluster: the other tests run without the policies (they are opt-in).
    cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=manifest, check=False)


def test_policies_deny_uncounted_checks_with_the_webhook_down(cluster, operator, admission_policies):
    acme, lapsed, relaxed = unique("acme"), unique("lapsed"), unique("relaxed")
    ns_acme, ns_lapsed, ns_relaxed, ns_none = unique("ns"), unique("ns"), unique("ns"), unique("ns")
    features = [{"name": "sso"}, {"name": "ai", "trialEnds": "2020-01-01T00:00:00Z"},
                {"name": "audit", "requires": ["sso"]}]
    apply(cluster, namespace(ns_acme, acme), namespace(ns_lapsed, lapsed), namespace(ns_relaxed, relaxed),
          namespace(ns_none, None),
          license(unique("l"), acme, instances={"max": 10}, features=features),
          license(unique("l"), lapsed, instances={"max": 10}, notAfter="2020-01-01T00:00:00Z"),
          license(unique("l"), relaxed, instances={"max": 10}, enforcement="Warn"))
    wait_for(lambda: _view(cluster, ns_acme).get("active") is True
             and [f.get("trialOver", False) for f in _view(cluster, ns_acme).get("features", [])] == [True, False, False],
             timeout=60, message="acme's view (ai's trial over)")
    wait_for(lambda: _view(cluster, ns_lapsed).get("active") is False, timeout=60, message="lapsed's view")
    wait_for(lambda: _view(cluster, ns_relaxed).get("enforcement") == "Warn", timeout=60, message="relaxed's view")

    # Webhook up: Warn mode warns from the policy too, and admits.
    warned = wait_for(lambda: (p := _create(cluster, ns_relaxed, "w", features=["bogus"])).returncode == 0 and p,
                      message=lambda: f"the Warn tenant's workload admitted: {_create(cluster, ns_relaxed, 'w', features=['bogus']).stderr}")
    assert f"FeatureNotEntitled: tenant {relaxed}: feature bogus is not entitled" in warned.stderr, warned.stderr

    operator.stop()
    # The apiserver loads the policies from its own informer: poll until the first one answers.
    denied = wait_for(lambda: (p := _create(cluster, ns_none, "w")).returncode != 0 and "NoTenant" in p.stderr and p,
                      message=lambda: f"NoTenant from the policy: {_create(cluster, ns_none, 'w').stderr}")
    assert "ValidatingAdmissionPolicy" in denied.stderr and f"namespace {ns_none} has no entitle.dev/tenant label" \
        in denied.stderr, denied.stderr

    cases = [
        (ns_lapsed, {}, f"NoActiveLicense: tenant {lapsed}: no license is active now"),
        (ns_acme, {"instanceKind": "gpu"}, f"UnknownInstanceKind: tenant {acme}: unknown instanceKind 'gpu'"),
        (ns_acme, {"features": ["sso", "zeta", "bogus"]}, f"FeatureNotEntitled: tenant {acme}: feature bogus is not entitled"),
        (ns_acme, {"features": ["ai"]}, f"FeatureTrialExpired: tenant {acme}: trial of feature ai ended at 2020-01-01T00:00:00Z"),
        (ns_acme, {"features": ["audit"]},
         f"FeatureDependencyMissing: tenant {acme}: feature audit requires sso enabled on the same workload"),
    ]
    for ns, spec, message in cases:
        proc = _create(cluster, ns, unique("w"), **spec)
        assert proc.returncode != 0 and message in proc.stderr and "ValidatingAdmissionPolicy" in proc.stderr, \
            (message, proc.stderr)

    # What needs counting is the webhook's: with failurePolicy Fail it is refused, unchecked.
    counted = _create(cluster, ns_acme, unique("w"), replicas=2, features=["sso", "audit"])
    assert counted.returncode != 0 and "failed calling webhook" in counted.stderr, counted.stderr
    assert "ValidatingAdmissionPolicy" not in counted.stderr
