"""The first end-to-end slice: instance caps decided at admission through a real apiserver."""

from __future__ import annotations

import pytest
from kubernetes.client.rest import ApiException

from tests.conftest import wait_for
from tests.e2e.helpers import api_client, apply, get, license, namespace, unique, workload

pytestmark = pytest.mark.e2e
GROUP, VERSION = "entitle.dev", "v1alpha1"


def test_instance_cap_end_to_end(cluster, operator):
    tenant, ns, lic = unique("acme"), unique("team"), unique("acme-base")
    apply(cluster, namespace(ns, tenant), license(lic, tenant, instances={"max": 5}))
    api = api_client(cluster)

    # Wait until the operator has seen the license (its status says so).
    wait_for(lambda: (get(cluster, "license", lic) or {}).get("status", {}).get("summary"),
             message="license status")

    # 4 units through the API: one vm (4 units).
    api.create_namespaced_custom_object(GROUP, VERSION, ns, "workloads", workload("db", ns, instanceKind="vm", replicas=1))
    # 1 more unit through kubectl apply: at the cap exactly.
    apply(cluster, workload("web", ns, instanceKind="container", replicas=1))

    # The next unit would go over the cap: denied with the numbers.
    with pytest.raises(ApiException) as denied:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, "workloads", workload("extra", ns, replicas=1))
    assert denied.value.status == 403 or denied.value.status == 400
    assert f"InstanceCapExceeded: tenant {tenant}: instances 5 + 1 would exceed 5" in denied.value.body

    # kubectl apply over the cap: denied, message shown to the user.
    proc = apply(cluster, workload("extra", ns, replicas=2), check=False)
    assert proc.returncode != 0
    assert f"tenant {tenant}: instances 5 + 2 would exceed 5" in proc.stderr

    # kubectl scale over the cap: denied through the scale subresource.
    proc = cluster.kubectl("scale", "workload", "web", "-n", ns, "--replicas=3", check=False)
    assert proc.returncode != 0
    assert f"tenant {tenant}: instances 5 + 2 would exceed 5" in proc.stderr
    assert get(cluster, "workload", "web", ns)["spec"]["replicas"] == 1

    # Scaling down is always allowed.
    cluster.kubectl("scale", "workload", "web", "-n", ns, "--replicas=0")

    # Delete then create succeeds: the capacity freed by the delete is usable again.
    cluster.kubectl("delete", "workload", "db", "-n", ns, "--wait=true")
    api.create_namespaced_custom_object(GROUP, VERSION, ns, "workloads", workload("db2", ns, instanceKind="container", replicas=5))

    # License status shows usage against the cap.
    def usage():
        status = (get(cluster, "license", lic) or {}).get("status", {})
        return status if status.get("instances", {}).get("used") == 5 else None

    status = wait_for(usage, message="license status usage 5/5")
    assert status["instances"]["max"] == 5
    assert status["summary"].startswith("instances 5/5")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Valid"]["status"] == "True"
    assert conditions["Active"]["status"] == "True"
    assert conditions["OverCap"]["status"] == "False"
    assert all("observedGeneration" in c for c in status["conditions"])

    # Workload status: entitled, with its units.
    wait_for(lambda: ((get(cluster, "workload", "db2", ns) or {}).get("status") or {}).get("units") == 5,
             message="workload status units")

    # The ledger holds the records of every stored change, and none for denied requests.
    def ledger_complete():
        records = [r for r in operator.records() if r["subject"] == tenant and r["type"] == "dev.entitle.workload.v1"]
        ops = sorted((r["data"]["name"], r["data"]["operation"]) for r in records)
        return ops if ("db", "deleted") in ops and ("db2", "created") in ops else None

    ops = wait_for(ledger_complete, message="workload records in the ledger")
    assert ("db", "created") in ops and ("web", "created") in ops and ("web", "updated") in ops
    assert not any(name == "extra" for name, _ in ops)
    records = [r for r in operator.records() if r["subject"] == tenant]
    assert len({(r["source"], r["id"]) for r in records}) == len(records)
    db_created = next(r for r in records if r["type"] == "dev.entitle.workload.v1"
                      and r["data"]["name"] == "db" and r["data"]["operation"] == "created")
    assert db_created["specversion"] == "1.0"
    assert db_created["data"]["units"] == 4 and db_created["data"]["instanceKind"] == "vm"
    assert db_created["data"]["licenses"] == [lic]
    assert any(r["type"] == "dev.entitle.license.v1" and r["data"]["operation"] == "activated" for r in records)


def test_workload_in_unlabeled_namespace_is_denied(cluster, operator):
    ns = unique("loose")
    apply(cluster, namespace(ns, None))
    proc = apply(cluster, workload("w", ns), check=False)
    assert proc.returncode != 0
    assert f"NoTenant: namespace {ns} has no entitle.dev/tenant label" in proc.stderr


def test_tenant_without_license_is_denied(cluster, operator):
    tenant, ns = unique("nolic"), unique("team")
    apply(cluster, namespace(ns, tenant))
    # Retry while the operator's namespace watch catches up (until then it is NoTenant);
    # a denied apply changes nothing, so retrying is harmless.
    def denied_for_license():
        proc = apply(cluster, workload("w", ns), check=False)
        assert proc.returncode != 0, "a workload without any license was admitted"
        return "NoActiveLicense" in proc.stderr and proc.stderr

    stderr = wait_for(denied_for_license, message="NoActiveLicense denial")
    assert f"NoActiveLicense: tenant {tenant}: no license is active now" in stderr


def test_metrics_endpoint_reports_decisions_and_usage(cluster, operator):
    tenant, ns, lic = unique("m"), unique("ns"), unique("lic")
    apply(cluster, namespace(ns, tenant), license(lic, tenant, instances={"max": 1}))
    wait_for(lambda: (get(cluster, "license", lic) or {}).get("status", {}).get("summary"), message="license status")
    apply(cluster, workload("a", ns))
    assert apply(cluster, workload("b", ns), check=False).returncode != 0

    def scrape():
        text = operator.metrics()
        wanted = [f'entitle_admission_decisions_total{{allowed="false",reason="InstanceCapExceeded",tenant="{tenant}"}} 1.0',
                  f'entitle_tenant_usage{{pool="instances",tenant="{tenant}"}} 1.0',
                  f'entitle_tenant_entitlement{{pool="instances",tenant="{tenant}"}} 1.0',
                  "entitle_admission_duration_seconds_bucket"]
        return all(w in text for w in wanted) and text

    wait_for(scrape, message="metrics")
