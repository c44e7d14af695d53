"""Issue 10 end to end: no License, rule, tenant or fault takes admission or billing down for
anyone else -- against the real apiserver, with the operator as a real process."""

from __future__ import annotations

import copy
import json
import urllib.request

import pytest
import yaml

from tests.conftest import ROOT, Operator, wait_for
from tests.e2e.helpers import apply, get, license, namespace, unique, workload

pytestmark = [pytest.mark.e2e, pytest.mark.hostile]


def _condition(cluster, kind, name, ctype, ns=None) -> dict:
    status = (get(cluster, kind, name, ns) or {}).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == ctype), {})


def _loose_license_crd() -> dict:
    """The License CRD as an older, looser version could have stored objects: spec unchecked."""
    crd = yaml.safe_load((ROOT / "crds" / "entitle.dev_licenses.yaml").read_text())
    loose = copy.deepcopy(crd)
    schema = loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return loose


def _ready(operator: Operator) -> bool:
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{operator.port}/readyz", context=ctx, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_licenses_that_overflowed_or_cannot_be_read_never_block_start_up_or_other_tenants(cluster, tmp_path):
    bad_tenant, good_tenant = unique("bad"), unique("good")
    bad_ns, good_ns = unique("ns"), unique("ns")
    overflow, unreadable, expensive, good = unique("overflow"), unique("unreadable"), unique("expensive"), unique("good")
    apply(cluster, namespace(bad_ns, bad_tenant), namespace(good_ns, good_tenant))
    # Schema-valid, but beyond a Python datetime: the critical defect of issue 10.
    apply(cluster, license(overflow, bad_tenant, notAfter="9999-12-31T23:59:59Z", gracePeriod="999999999w",
                           instances={"max": 10**12}))
    apply(cluster, license(expensive, bad_tenant, rules=[{"name": "unique-users", "expression":
          "workload.spec.users.all(u, workload.spec.users.filter(x, x == u).size() == 1)"}]))
    # Stored under a looser CRD: a spec the models cannot read at all.
    strict = (ROOT / "crds" / "entitle.dev_licenses.yaml").read_text()
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(_loose_license_crd()))
    wait_for(lambda: apply(cluster, license(unreadable, bad_tenant, instances={"max": "lots"},
                                            notBefore="0000-01-01T00:00:00Z"), check=False).returncode == 0,
             message="the loose CRD to take effect")
    cluster.kubectl("apply", "-f", "-", input=strict)
    apply(cluster, license(good, good_tenant, instances={"max": 3}))

    operator = Operator(cluster, tmp_path).start()
    try:
        wait_for(lambda: _ready(operator), timeout=60, message="readiness despite the bad licenses")
        apply(cluster, workload("w", good_ns, replicas=3))
        denied = apply(cluster, workload("x", good_ns, replicas=1), check=False)
        assert "InstanceCapExceeded" in denied.stderr
        valid = wait_for(lambda: _condition(cluster, "license", unreadable, "Valid").get("reason") == "InvalidSpec"
                         and _condition(cluster, "license", unreadable, "Valid"), message="InvalidSpec")
        assert valid["status"] == "False" and "instances.max" in valid["message"]
        too_costly = wait_for(lambda: _condition(cluster, "license", expensive, "Valid").get("reason")
                              == "RuleTooExpensive" and _condition(cluster, "license", expensive, "Valid"),
                              message="RuleTooExpensive")
        assert "estimated worst-case cost" in too_costly["message"]
        active = wait_for(lambda: _condition(cluster, "license", overflow, "Active").get("status") == "True",
                          message="the far-future license active")
        assert active
        assert apply(cluster, workload("b", bad_ns, replicas=5)).returncode == 0   # the overflow license grants
        # `kubectl describe` shows the License's Events (they carry its uid).
        described = cluster.kubectl("describe", "license", unreadable).stdout
        assert "InvalidSpec" in described and "Events:" in described and "<none>" not in described.split("Events:")[1]
        # The Expires column shows the date, not "<invalid>".
        row = cluster.kubectl("get", "license", overflow, "--no-headers").stdout
        assert "9999-12-31T23:59:59Z" in row and "<invalid>" not in row
        # Metrics: bound to the configured host, the ledger gauge set.
        text = operator.metrics()
        gauge = [line for line in text.splitlines() if line.startswith("entitle_ledger_records ")]
        assert gauge and float(gauge[0].split()[1]) > 0
    finally:
        operator.stop()
        cluster.kubectl("delete", "license", overflow, unreadable, expensive, good, "--ignore-not-found")
        cluster.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "entitle",
                        "--ignore-not-found", check=False)


def test_the_crd_rejects_what_the_engine_could_not_use(cluster):
    tenant = unique("t")
    cases = {
        "notAfter must be later than notBefore": dict(notBefore="2027-01-01T00:00:00Z", notAfter="2026-01-01T00:00:00Z"),
        "should be less than or equal to 1000000000000": dict(instances={"max": 2**62}),
        "gracePeriod": dict(gracePeriod="99999999999w"),
        "Duplicate value": dict(features=[{"name": "sso"}, {"name": "sso"}]),
    }
    for expected, spec in cases.items():
        proc = apply(cluster, license(unique("l"), tenant, **spec), check=False)
        assert proc.returncode != 0 and expected in proc.stderr, (expected, proc.stderr)
    proc = apply(cluster, workload("w", "default", users=["a", "a"]), check=False)
    assert proc.returncode != 0 and "Duplicate value" in proc.stderr


def test_tenant_moves_are_metered_and_decreases_pass_in_an_unlabeled_namespace(cluster, operator):
    a, b, ns = unique("a"), unique("b"), unique("ns")
    apply(cluster, namespace(ns, a), license(unique("la"), a, instances={"max": 10}),
          license(unique("lb"), b, instances={"max": 10}))
    apply(cluster, workload("w", ns, replicas=4))
    wait_for(lambda: _condition(cluster, "workload", "w", "Entitled", ns).get("status") == "True", message="entitled")
    cluster.kubectl("label", "namespace", ns, f"entitle.dev/tenant={b}", "--overwrite")
    moves = wait_for(lambda: [(r["data"]["operation"], r["subject"]) for r in operator.records()
                              if r["type"] == "dev.entitle.workload.v1" and r["data"]["operation"].startswith("moved")],
                     message="move records")
    assert moves == [("movedOut", a), ("movedIn", b)]
    cluster.kubectl("label", "namespace", ns, "entitle.dev/tenant-")
    wait_for(lambda: _condition(cluster, "workload", "w", "Entitled", ns).get("reason") == "NoTenant",
             message="Entitled=False NoTenant once the label is gone")
    assert cluster.kubectl("scale", "workload", "w", "-n", ns, "--replicas=2").returncode == 0
    raised = cluster.kubectl("scale", "workload", "w", "-n", ns, "--replicas=3", check=False)
    assert raised.returncode != 0 and "NoTenant" in raised.stderr
    cluster.kubectl("delete", "workload", "w", "-n", ns, "--wait=true", "--timeout=60s")
    ops = [(r["data"]["operation"], r["subject"]) for r in operator.records() if r["type"] == "dev.entitle.workload.v1"]
    assert ops[-1] == ("movedOut", b), "deleting a workload counted nowhere writes nothing"
    from entitle.adapters.metering.export import export
    from entitle.domain.meters import to_event

    totals = export([e for e in map(to_event, operator.records()) if e], 0, 2**40, None)
    # (a held it for well under a second here: peaks are read per whole second.)
    assert a in totals and totals[b]["peak_instances"] == 4


def test_a_corrupted_hold_object_is_named_and_healed(cluster, tmp_path):
    from entitle.adapters.kube.holds import object_name

    operator = Operator(cluster, tmp_path, extra_config={"reservationSeconds": 3, "namespace": "entitle-system"}).start()
    try:
        tenant, ns = unique("t"), unique("ns")
        apply(cluster, namespace(ns, tenant), license(unique("l"), tenant, instances={"max": 10}))
        apply(cluster, workload("first", ns))                 # creates the hold object
        name = object_name(tenant)
        cluster.kubectl("patch", "configmap", name, "-n", "entitle-system", "--type=merge",
                        "-p", json.dumps({"data": {"holds": "{garbage"}}))
        denied = wait_for(lambda: (lambda p: p.returncode != 0 and p)(
            apply(cluster, workload(unique("w"), ns), check=False)), message="a denial naming the object")
        assert name in denied.stderr and "unreadable" in denied.stderr
        healed = wait_for(lambda: apply(cluster, workload(unique("w"), ns), check=False).returncode == 0,
                          timeout=30, message="the hold object to be replaced")
        assert healed
    finally:
        operator.stop()
        cluster.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "entitle",
                        "--ignore-not-found", check=False)


def test_a_workload_of_a_megabyte_is_counted_and_the_watch_goes_on(cluster, operator):
    """The largest Workload the CRD admits (5,000 users with long names, ~0.8 MB as one watch
    event) is counted like any other, and Workloads after it are still seen: a watch event
    over aiohttp's 128 KiB line limit once froze the replica's view of every Workload."""
    from tests.e2e.helpers import api_client

    tenant, ns, lic = unique("big"), unique("ns"), unique("lic")
    apply(cluster, namespace(ns, tenant), license(lic, tenant, seats={"max": 10_000}))
    users = [f"user-{i:05d}-" + "x" * 140 for i in range(5_000)]
    api = api_client(cluster)
    api.create_namespaced_custom_object("entitle.dev", "v1alpha1", ns, "workloads",
                                        workload("huge", ns, users=users))
    api.create_namespaced_custom_object("entitle.dev", "v1alpha1", ns, "workloads",
                                        workload("after", ns, users=["someone-else"]))
    wait_for(lambda: _condition(cluster, "workload", "after", "Entitled", ns).get("status") == "True",
             timeout=60, message="the Workload created after the large one is seen and entitled")
    wait_for(lambda: (((get(cluster, "license", lic) or {}).get("status") or {}).get("seats") or {}).get("used") == 5_001,
             timeout=60, message="both counted: 5,001 seats")
    created = [r["data"]["name"] for r in operator.records()
               if r["type"] == "dev.entitle.workload.v1" and r["subject"] == tenant and r["data"]["operation"] == "created"]
    assert sorted(created) == ["after", "huge"]
