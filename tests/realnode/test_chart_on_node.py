"""The Helm chart as real pods: the image built from the Dockerfile, probes, the in-cluster
ServiceAccount token, the webhook through its Service, the ledger volumes -- and high
availability while a client creates and scales Workloads continuously (pod deletion, a rolling
upgrade to a changed image, a node drain held by the PodDisruptionBudget)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, wait_for
from tests.realnode.conftest import NAMESPACE, AdmissionTraffic, Node

FIGURES = Path(__file__).resolve().parents[2] / ".entitle" / "realnode-figures.json"
TENANT, TENANT_NS = "acme", "acme-prod"


def _record_figure(name: str, value: dict) -> None:
    """Figures for docs/operations.md (written by a run, read by a person)."""
    FIGURES.parent.mkdir(exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    data[name] = value
    FIGURES.write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="module")
def tenant(node: Node):
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TENANT_NS, "labels": {"entitle.dev/tenant": TENANT}}},
        {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": "acme-big"},
         "spec": {"tenant": TENANT, "instances": {"max": 100000}}}]))
    return TENANT_NS


def test_both_replicas_run_as_real_pods_with_the_charts_identity(node: Node, tenant):
    _record_figure("startup", node.timings)
    assert node.ready_replicas() == ["entitle-0", "entitle-1"]
    pods = json.loads(node.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    for pod in pods:
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "entitle" and spec.get("automountServiceAccountToken", True)
        assert any(v.get("projected") for v in spec["volumes"]), "the ServiceAccount token is mounted"
        assert spec["containers"][0]["image"] == node.image_ref
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    # The operator's API calls work with that token: one replica holds the controller Lease.
    holder = wait_for(lambda: node.kubectl("get", "lease", "entitle-controller", "-n", NAMESPACE, "-o",
                                           "jsonpath={.spec.holderIdentity}", check=False).stdout.strip(),
                      message="a Lease holder")
    assert holder.rsplit("-", 1)[0] in {p["metadata"]["name"] for p in pods}, holder


def test_the_webhook_through_its_service_denies_with_the_message_and_records_land_in_the_volumes(node: Node, tenant):
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "small-ns", "labels": {"entitle.dev/tenant": "small"}}},
        {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": "small"},
         "spec": {"tenant": "small", "instances": {"max": 2}}},
        {"apiVersion": "entitle.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "fits", "namespace": "small-ns"},
         "spec": {"replicas": 2}}]))
    denied = node.kubectl("apply", "-f", "-", check=False, input=yaml.safe_dump(
        {"apiVersion": "entitle.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "over", "namespace": "small-ns"},
         "spec": {"replicas": 1}}))
    assert denied.returncode != 0
    assert "InstanceCapExceeded: tenant small: instances 2 + 1 would exceed 2" in denied.stderr
    uid = json.loads(node.kubectl("get", "workload", "fits", "-n", "small-ns", "-o", "json").stdout)["metadata"]["uid"]
    # Both replicas' ledgers, on their own volumes, hold the creation.
    wait_for(lambda: {r["_ledger"] for r in node.ledger_records()
                      if r.get("data", {}).get("uid") == uid and r["data"]["operation"] == "created"} and
             len({r["_ledger"] for r in node.ledger_records() if r.get("data", {}).get("uid") == uid}) == 2,
             timeout=60, message="the record in both replicas' ledgers")
    # The readiness probe answers from the webhook port over TLS.
    probe = json.loads(node.kubectl("get", "pod", "entitle-0", "-n", NAMESPACE, "-o", "json").stdout)
    readiness = probe["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz" and readiness["scheme"] == "HTTPS"


def _assert_exactly_once(node: Node, traffic: AdmissionTraffic) -> dict:
    """Every admitted change is in the replicas' ledgers, once (one id), and nothing else is."""
    wanted = {(e["uid"], e["generation"]) for e in traffic.log if e["ok"]}
    wait_for(lambda: wanted <= {(r["data"]["uid"], r["data"]["generation"]) for r in node.ledger_records()
                                if r["type"] == "dev.entitle.workload.v1"},
             timeout=90, message="every admitted change in the ledgers")
    ids = defaultdict(set)
    for record in node.ledger_records():
        data = record.get("data") or {}
        if record["type"] == "dev.entitle.workload.v1" and data.get("operation") in ("created", "updated"):
            ids[(data["uid"], data["generation"])].add(record["id"])
    duplicated = {k: v for k, v in ids.items() if k in wanted and len(v) != 1}
    assert not duplicated, f"changes recorded under several ids: {duplicated}"
    uids = {uid for uid, _ in wanted}
    unexpected = {k for k in ids if k[0] in uids and k not in wanted}
    # A generation the client did not see acknowledged can only be one whose write raced the
    # measurement's end; none is expected here.
    assert not unexpected, f"records of changes nobody made: {unexpected}"
    return {"changes": len(wanted)}


def test_deleting_an_operator_pod_fails_no_admission(node: Node, tenant):
    with AdmissionTraffic(node, tenant, "del") as traffic:
        traffic.wait_for_some()
        node.kubectl("delete", "pod", "entitle-0", "-n", NAMESPACE, "--wait=false")
        wait_for(lambda: "entitle-0" not in node.ready_replicas(), timeout=60, message="entitle-0 to go")
        wait_for(lambda: node.ready_replicas() == ["entitle-0", "entitle-1"], timeout=120,
                 message="entitle-0 back and Ready")
        time.sleep(0)  # (the traffic keeps running until here)
        traffic.wait_for_some(sum(e["ok"] for e in traffic.log) + 20)
    summary = traffic.summary() | _assert_exactly_once(node, traffic)
    _record_figure("pod_deletion", summary)
    assert traffic.failures == [], traffic.failures[:5]


def test_a_rolling_upgrade_to_a_changed_image_fails_no_admission_and_loses_no_record(node: Node, tenant):
    # A changed image: the same content under a new tag, as a release would be.
    repository, tag = node.image_ref.rsplit(":", 1)
    node.cluster.ctr("images", "tag", "--force", node.image_ref, f"{repository}:{tag}-next")
    with AdmissionTraffic(node, tenant, "up") as traffic:
        traffic.wait_for_some()
        node.install(f"{tag}-next", command="upgrade")
        images = {p["spec"]["containers"][0]["image"] for p in json.loads(node.kubectl(
            "get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]}
        assert images == {f"{repository}:{tag}-next"}
        traffic.wait_for_some(sum(e["ok"] for e in traffic.log) + 20)
    summary = traffic.summary() | _assert_exactly_once(node, traffic)
    _record_figure("rolling_upgrade", summary)
    assert traffic.failures == [], traffic.failures[:5]


def test_a_drain_is_held_by_the_disruption_budget_and_admission_goes_on(node: Node, tenant):
    with AdmissionTraffic(node, tenant, "drain") as traffic:
        traffic.wait_for_some()
        drain = node.kubectl("drain", "entitle-node", "--ignore-daemonsets", "--delete-emptydir-data",
                             "--pod-selector=app.kubernetes.io/name=entitle", "--timeout=40s", check=False, timeout=120)
        # One replica evicted (its replacement cannot schedule: the only node is cordoned); the
        # second eviction is refused by the PodDisruptionBudget, so one replica keeps serving.
        assert drain.returncode != 0 and "disruption budget" in (drain.stdout + drain.stderr)
        assert len(node.ready_replicas()) == 1
        traffic.wait_for_some(sum(e["ok"] for e in traffic.log) + 20)
        node.kubectl("uncordon", "entitle-node")
        wait_for(lambda: node.ready_replicas() == ["entitle-0", "entitle-1"], timeout=120, message="both Ready again")
    summary = traffic.summary() | _assert_exactly_once(node, traffic)
    _record_figure("drain", summary)
    assert traffic.failures == [], traffic.failures[:5]


def test_export_merges_both_replicas_ledgers(node: Node, tenant, tmp_path):
    import subprocess
    import sys

    paths = []
    for i, directory in enumerate(d for d in node.pv_dirs if (d / "ledger.db").exists()):
        copy = tmp_path / f"ledger-{i}.db"
        subprocess.run(["sqlite3", str(directory / "ledger.db"), f".backup {copy}"], check=False)
        if not copy.exists():   # no sqlite3 CLI: copy through Python's backup API
            import sqlite3

            src, dst = sqlite3.connect(str(directory / "ledger.db")), sqlite3.connect(str(copy))
            src.backup(dst)
            src.close()
            dst.close()
        paths += ["--ledger", str(copy)]
    assert len(paths) == 4
    out = subprocess.run([sys.executable, "-m", "entitle.cli", "usage", "export", *paths, "--from",
                          "2020-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z", "--tenant", TENANT],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tenants"][TENANT]["peak_instances"] > 0


FORGER = """
import json, ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "forged-1", "operation": "CREATE", "namespace": "small-ns", "name": "grab", "dryRun": False,
    "kind": {"group": "entitle.dev", "version": "v1alpha1", "kind": "Workload"},
    "resource": {"group": "entitle.dev", "version": "v1alpha1", "resource": "workloads"},
    "object": {"apiVersion": "entitle.dev/v1alpha1", "kind": "Workload",
               "metadata": {"name": "grab", "namespace": "small-ns", "uid": "f1"}, "spec": {"replicas": 50}}}}
request = urllib.request.Request(sys.argv[1], data=json.dumps(review).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
try:
    print("status", urllib.request.urlopen(request, context=ctx, timeout=10).status)
except urllib.error.HTTPError as exc:
    print("status", exc.code)
"""


def test_a_pod_that_forges_a_review_through_the_webhook_service_is_refused(node: Node, tenant):
    """Only the apiserver reviews: a tenant's pod posting an AdmissionReview to the webhook
    Service (what the apiserver calls) is refused unread, and takes no capacity."""
    ip = node.kubectl("get", "service", "entitle-webhook", "-n", NAMESPACE, "-o",
                      "jsonpath={.spec.clusterIP}").stdout.strip()
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "forger", "namespace": tenant},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "forger", "image": node.image_ref, "imagePullPolicy": "Never",
            "command": ["python", "-c", FORGER, f"https://{ip}:443/workloads"]}]}}))
    wait_for(lambda: node.kubectl("get", "pod", "forger", "-n", tenant, "-o", "jsonpath={.status.phase}",
                                  check=False).stdout.strip() in ("Succeeded", "Failed"), timeout=120,
             message="the forger to finish")
    logs = node.kubectl("logs", "forger", "-n", tenant).stdout
    assert "status 403" in logs, logs
    holds = node.kubectl("get", "configmaps", "-n", NAMESPACE, "-o", "json").stdout
    assert '"f1"' not in holds and "grab" not in holds
    node.kubectl("delete", "pod", "forger", "-n", tenant, "--wait=false")
