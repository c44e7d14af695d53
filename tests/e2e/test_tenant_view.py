"""The tenant view against the real apiserver (DESIGN "Tenant view"): the leader writes a
TenantEntitlement into every tenant namespace; a ServiceAccount holding only the namespace
`view` role reads its tenant's and is refused another tenant's; nobody but the operator may
write one (not even a cluster admin, while the webhook answers); it follows License changes and
goes when the namespace's tenant label goes."""

from __future__ import annotations

import json

import pytest

from tests.conftest import wait_for
from tests.e2e.helpers import apply, get, license, namespace, unique, workload

pytestmark = pytest.mark.e2e


def _view(cluster, ns: str) -> dict:
    return ((get(cluster, "tenantentitlement", "entitlement", ns) or {}).get("status")) or {}


def test_tenants_read_their_own_view_only_and_cannot_write_it(cluster, operator):
    a, b = unique("ta"), unique("tb")
    a1, a2, b1 = unique("ns"), unique("ns"), unique("ns")
    lic_a, lic_b = unique("la"), unique("lb")
    apply(cluster, namespace(a1, a), namespace(a2, a), namespace(b1, b),
          license(lic_a, a, instances={"max": 8}, notAfter="2099-01-01T00:00:00Z", features=[{"name": "sso"}]),
          license(lic_b, b, instances={"max": 2}))
    wait_for(lambda: apply(cluster, workload("w", a1, replicas=3, features=["sso"]), check=False).returncode == 0,
             message="the workload admitted")
    for ns in (a1, a2):
        wait_for(lambda: _view(cluster, ns).get("instancesSummary") == "3/8", timeout=60,
                 message=f"tenant view in {ns}")
    view = _view(cluster, a1)
    assert view["tenant"] == a and view["active"] and view["renewal"] == "2099-01-01T00:00:00Z"
    assert [f["name"] for f in view["features"]] == ["sso"] and view["features"][0]["used"] == 1
    assert [entry["name"] for entry in view["licenses"]] == [lic_a]
    wait_for(lambda: _view(cluster, a1)["licenses"][0].get("revision") == 1, message="the license's revision")
    row = cluster.kubectl("get", "tent", "-n", a1, "--no-headers").stdout.split()
    assert row[:5] == ["entitlement", a, "true", "3/8", "0/-"] and row[5] == "2099-01-01T00:00:00Z", row

    # A tenant's ServiceAccount with the namespace `view` role only.
    cluster.kubectl("create", "serviceaccount", "reader", "-n", a1)
    cluster.kubectl("create", "rolebinding", "reader-view", "--clusterrole=view",
                    f"--serviceaccount={a1}:reader", "-n", a1)
    reader = f"--as=system:serviceaccount:{a1}:reader"
    own = wait_for(lambda: (p := cluster.kubectl(reader, "get", "tent", "entitlement", "-n", a1, "-o", "json",
                                                 check=False)).returncode == 0 and p,
                   timeout=60, message="the aggregated view role to include TenantEntitlements")
    assert json.loads(own.stdout)["status"]["tenant"] == a
    other = cluster.kubectl(reader, "get", "tent", "entitlement", "-n", b1, check=False)
    assert other.returncode != 0 and "forbidden" in other.stderr.lower()
    denied = cluster.kubectl(reader, "delete", "tent", "entitlement", "-n", a1, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

    # Even a cluster admin cannot raise what the view says while the webhook answers.
    forged = cluster.kubectl("patch", "tent", "entitlement", "-n", a1, "--subresource=status", "--type=merge",
                             "-p", json.dumps({"status": {"instancesSummary": "3/999"}}), check=False)
    assert forged.returncode != 0 and "written by entitle only" in forged.stderr, forged.stderr

    # It follows the License, and goes with the tenant label.
    apply(cluster, license(lic_a, a, instances={"max": 10}, notAfter="2099-01-01T00:00:00Z",
                           features=[{"name": "sso"}]))
    wait_for(lambda: _view(cluster, a2).get("instancesSummary") == "3/10", timeout=60, message="the new max")
    cluster.kubectl("label", "namespace", a2, "entitle.dev/tenant-")
    wait_for(lambda: get(cluster, "tenantentitlement", "entitlement", a2) is None, timeout=60,
             message="the view gone with the label")
    assert _view(cluster, a1).get("instancesSummary") == "3/10"


def _events(cluster, ns: str, reason: str) -> list[dict]:
    out = cluster.kubectl("get", "events", "-n", ns, "--field-selector", f"reason={reason}", "-o", "json")
    return json.loads(out.stdout)["items"]


def test_lifecycle_notices_once_each_across_a_restart(cluster, operator, tmp_path):
    from datetime import datetime, timedelta, timezone

    from tests.conftest import Operator

    tenant, ns, lic = unique("tn"), unique("ns"), unique("ln")
    soon = (datetime.now(timezone.utc) + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    apply(cluster, namespace(ns, tenant), license(lic, tenant, instances={"max": 5}, notAfter=soon))
    wait_for(lambda: apply(cluster, workload("w", ns, replicas=4), check=False).returncode == 0,
             message="the workload admitted")
    # The License: condition ExpiringSoon and one Event (cluster-scoped objects' Events are in default).
    expiring = wait_for(lambda: next((c for c in ((get(cluster, "license", lic) or {}).get("status") or {})
                                      .get("conditions", []) if c["type"] == "ExpiringSoon"
                                      and c["status"] == "True"), None), message="ExpiringSoon on the License")
    assert expiring["reason"] == "ExpiresIn30Days" and soon in expiring["message"]
    wait_for(lambda: [e for e in _events(cluster, "default", "ExpiresIn30Days")
                      if e["involvedObject"]["name"] == lic], message="the ExpiresIn30Days Event")
    # The tenant's pool at 80 %: the view's UsageHigh condition and an Event in the namespace.
    wait_for(lambda: any(c["type"] == "UsageHigh" and c["reason"] == "Above80Percent"
                         for c in _view(cluster, ns).get("conditions", [])), message="UsageHigh on the view")
    high = wait_for(lambda: _events(cluster, ns, "UsageAbove80Percent"), message="the UsageAbove80Percent Event")
    assert high[0]["involvedObject"]["kind"] == "TenantEntitlement" and tenant in high[0]["message"]

    # A restart remembers from the stored conditions: the next crossing is noticed, nothing twice.
    operator.stop()
    (tmp_path / "again").mkdir()
    again = Operator(cluster, tmp_path / "again").start()
    try:
        cluster.kubectl("scale", "workload", "w", "-n", ns, "--replicas=5")
        wait_for(lambda: _events(cluster, ns, "UsageAt100Percent"), timeout=60, message="the UsageAt100Percent Event")
        assert len(_events(cluster, ns, "UsageAbove80Percent")) == 1
        assert len([e for e in _events(cluster, "default", "ExpiresIn30Days") if e["involvedObject"]["name"] == lic]) == 1
        metrics = again.metrics()
        assert 'entitle_notices_total{notice="UsageAt100Percent"} 1.0' in metrics
    finally:
        again.stop()
