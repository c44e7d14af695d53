"""The engine through the real apiserver: warnings in kubectl, CEL denials, trials expiring on an
injected clock, downgrades flagging running workloads, and burst budgets surviving a restart."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import wait_for
from tests.e2e.helpers import apply, get, license, namespace, unique, workload

pytestmark = pytest.mark.e2e


def _status(cluster, kind, name, ns=None) -> dict:
    return (get(cluster, kind, name, ns) or {}).get("status") or {}


def _condition(cluster, kind, name, ctype, ns=None) -> dict | None:
    return next((c for c in _status(cluster, kind, name, ns).get("conditions", []) if c["type"] == ctype), None)


def _setup(cluster, **spec) -> tuple[str, str, str]:
    tenant, ns, lic = unique("t"), unique("ns"), unique("lic")
    apply(cluster, namespace(ns, tenant), license(lic, tenant, **spec))
    wait_for(lambda: _status(cluster, "license", lic).get("summary"), message="license status")
    return tenant, ns, lic


def test_kubectl_prints_soft_limit_warnings_and_dry_run_consumes_nothing(cluster, operator):
    tenant, ns, lic = _setup(cluster, instances={"max": 2},
                             features=[{"name": "reports", "softLimit": {"workloads": 1}}])
    apply(cluster, workload("a", ns, features=["reports"]))
    proc = apply(cluster, workload("b", ns, features=["reports"]))
    assert f"Warning: tenant {tenant}: feature reports is enabled on 2 workloads, above its soft limit of 1" in proc.stderr
    # At the cap now (2 units). A server-side dry run is decided...
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                           input=__import__("yaml").safe_dump(workload("c", ns, replicas=1)))
    assert proc.returncode != 0 and "instances 2 + 1 would exceed 2" in proc.stderr
    # ...and a dry run that fits reserves nothing: the real request after it still fits.
    cluster.kubectl("scale", "workload", "b", "-n", ns, "--replicas=0")
    for _ in range(3):
        cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=__import__("yaml").safe_dump(workload("c", ns)))
    apply(cluster, workload("c", ns, replicas=1))


def test_cel_rule_denial(cluster, operator):
    tenant, ns, lic = _setup(cluster, instances={"max": 50}, rules=[
        {"name": "small", "expression": "workload.spec.replicas <= 3", "message": "at most 3 replicas per workload"}])
    apply(cluster, workload("ok", ns, replicas=3))
    proc = apply(cluster, workload("big", ns, replicas=4), check=False)
    assert proc.returncode != 0
    assert (f"RuleViolation: tenant {tenant}: rule small of license {lic} denied: at most 3 replicas per workload"
            in proc.stderr)
    proc = cluster.kubectl("scale", "workload", "ok", "-n", ns, "--replicas=5", check=False)
    assert proc.returncode != 0 and "rule small" in proc.stderr


def test_invalid_rule_is_refused_by_the_license_webhook(cluster, operator):
    # (A License with such a rule stored while no replica answered is Valid=False instead:
    # tests/e2e/test_blast_radius.py, tests/unit/test_rule_safety.py.)
    tenant, ns, lic = unique("t"), unique("ns"), unique("lic")
    apply(cluster, namespace(ns, tenant))
    refused = apply(cluster, license(lic, tenant, rules=[{"name": "broken", "expression": "1 +"}]), check=False)
    assert refused.returncode != 0 and "RuleCompileError: rule 'broken'" in refused.stderr, refused.stderr
    assert get(cluster, "license", lic) is None
    proc = apply(cluster, workload("w", ns), check=False)
    assert "NoActiveLicense" in proc.stderr


def test_trial_expiring_on_the_injected_clock(cluster, operator):
    operator.set_clock("2026-11-10T00:00:00Z")
    tenant, ns, lic = _setup(cluster, instances={"max": 10},
                             features=[{"name": "ai", "trialEnds": "2026-11-15T00:00:00Z"}])
    apply(cluster, workload("early", ns, features=["ai"]))
    wait_for(lambda: (_condition(cluster, "workload", "early", "Entitled", ns) or {}).get("status") == "True",
             message="early workload entitled")
    operator.set_clock("2026-11-16T00:00:00Z")
    proc = apply(cluster, workload("late", ns, features=["ai"]), check=False)
    assert proc.returncode != 0
    assert f"FeatureTrialExpired: tenant {tenant}: trial of feature ai ended at 2026-11-15T00:00:00Z" in proc.stderr
    # The running workload is flagged, not deleted or scaled.
    cond = wait_for(lambda: (c := _condition(cluster, "workload", "early", "Entitled", ns)) and c["status"] == "False" and c,
                    message="early workload flagged")
    assert cond["reason"] == "FeatureTrialExpired"
    assert get(cluster, "workload", "early", ns)["spec"]["replicas"] == 1
    # Removing the feature is a decrease: always allowed.
    apply(cluster, workload("early", ns, features=[]))


def test_downgrade_flags_running_workloads(cluster, operator):
    tenant, ns, lic = _setup(cluster, instances={"max": 10})
    apply(cluster, workload("db", ns, instanceKind="vm", replicas=2))
    apply(cluster, license(lic, tenant, instances={"max": 4}))
    cond = wait_for(lambda: (c := _condition(cluster, "workload", "db", "Entitled", ns)) and c["status"] == "False" and c,
                    message="workload flagged after downgrade")
    assert cond["reason"] == "InstanceCapExceeded"
    over = wait_for(lambda: (c := _condition(cluster, "license", lic, "OverCap")) and c["status"] == "True" and c,
                    message="license OverCap")
    assert "instances" in over["message"]
    assert get(cluster, "workload", "db", ns)["spec"]["replicas"] == 2   # never scaled by entitle
    proc = cluster.kubectl("scale", "workload", "db", "-n", ns, "--replicas=3", check=False)
    assert proc.returncode != 0 and f"tenant {tenant}: instances 8 + 4 would exceed 4" in proc.stderr
    cluster.kubectl("scale", "workload", "db", "-n", ns, "--replicas=1")
    wait_for(lambda: (_condition(cluster, "workload", "db", "Entitled", ns) or {}).get("status") == "True",
             message="entitled again after scaling down")
    # Events record the transitions.
    seen: list[str] = []

    def reasons():
        seen[:] = cluster.kubectl("get", "events", "-n", ns, "-o", "jsonpath={.items[*].reason}").stdout.split()
        return {"EntitledFalse", "InstanceCapExceeded", "EntitledTrue"} <= set(seen)

    wait_for(reasons, message=lambda: f"Entitled transitions and the denial as Kubernetes Events (seen: {seen})")


def test_burst_budget_survives_an_operator_restart(cluster, operator):
    operator.set_clock("2026-11-10T00:00:00Z")
    tenant, ns, lic = _setup(cluster, instances={"max": 2, "burst": {"extra": 2, "window": "1h"}})
    apply(cluster, workload("base", ns, replicas=2))
    proc = apply(cluster, workload("spike", ns, replicas=1))
    assert f"tenant {tenant}: instances 3 above max 2, bursting up to 4" in proc.stderr
    wait_for(lambda: (_condition(cluster, "license", lic, "InBurst") or {}).get("status") == "True", message="InBurst")
    operator.set_clock("2026-11-10T00:40:00Z")
    wait_for(lambda: _status(cluster, "license", lic).get("instances", {}).get("burstUsedSeconds", 0) >= 2400,
             message="40 minutes of burst persisted in status")
    # A crash, not a graceful stop: nothing gets flushed on the way out.
    operator.stop(signal.SIGKILL)
    operator.set_clock("2026-11-10T00:50:00Z")
    operator.start()
    proc = apply(cluster, workload("spike2", ns, replicas=1))
    assert "burst budget left this month: 10m of 1h" in proc.stderr, proc.stderr
    operator.set_clock("2026-11-10T01:10:00Z")
    proc = apply(cluster, workload("spike3", ns, replicas=1), check=False)
    assert proc.returncode != 0
    assert f"tenant {tenant}: instances 4 + 1 would exceed 2 (burst allows up to 4)" in proc.stderr
    cluster.kubectl("delete", "workload", "spike2", "-n", ns)
    proc = apply(cluster, workload("spike3", ns, replicas=1), check=False)
    assert proc.returncode != 0
    assert f"tenant {tenant}: instances 3 + 1 would exceed 2 (burst budget used up)" in proc.stderr


def test_a_create_takes_one_webhook_round_trip_the_finalizer_comes_from_the_policy(cluster, operator):
    """The local control plane serves MutatingAdmissionPolicy: the chart's policy puts the
    usage-record finalizer on a new Workload inside the create itself (the object the create
    returns carries it, before any controller patch), and the operator registers no finalizer
    webhook -- the validating webhook is the create's only round trip."""
    import json

    served = cluster.kubectl("api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name").stdout
    if "mutatingadmissionpolicies" not in served:
        pytest.skip("this cluster does not serve MutatingAdmissionPolicy (the local control plane does)")
    mutating = json.loads(cluster.kubectl("get", "mutatingwebhookconfiguration", "entitle", "-o", "json").stdout)
    assert [h["name"] for h in mutating["webhooks"]] == ["revision.licenses.entitle.dev"]
    tenant, ns, lic = _setup(cluster, instances={"max": 5})
    created = cluster.kubectl("create", "-o", "json", "-f", "-", input=__import__("yaml").safe_dump(workload("one", ns)))
    assert json.loads(created.stdout)["metadata"]["finalizers"] == ["entitle.dev/usage-record"]
    # A create that lists a finalizer of its own keeps it, first.
    body = workload("two", ns)
    body["metadata"]["finalizers"] = ["example.com/keep"]
    created = cluster.kubectl("create", "-o", "json", "-f", "-", input=__import__("yaml").safe_dump(body))
    assert json.loads(created.stdout)["metadata"]["finalizers"] == ["example.com/keep", "entitle.dev/usage-record"]
    cluster.kubectl("patch", "workload", "two", "-n", ns, "--type=json",
                    "-p", '[{"op":"remove","path":"/metadata/finalizers/0"}]')
