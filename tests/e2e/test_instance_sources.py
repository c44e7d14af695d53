"""Instance sources against the real apiserver: Deployments, StatefulSets, Jobs, bare Pods and a
custom kind counted and gated like Workloads (same checks, messages, holds), in tenant
namespaces only; sources that cannot work are reported, never crash or block the operator.

The envtest-style control plane runs no Deployment controller: the objects are stored, not run
(tests/realnode runs them as pods)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from tests.conftest import OPERATOR_NAMESPACE, RELEASE, wait_for
from tests.e2e.helpers import apply, get, license, namespace, unique

pytestmark = pytest.mark.e2e

VM_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "virtualmachines.kubevirt.test"},
    "spec": {"group": "kubevirt.test", "scope": "Namespaced",
             "names": {"kind": "VirtualMachine", "plural": "virtualmachines", "singular": "virtualmachine"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


def source(name, group, kind, path=None, **spec):
    body = {"apiVersion": "entitle.dev/v1alpha1", "kind": "InstanceSource", "metadata": {"name": name},
            "spec": {"resource": {"group": group, "version": "v1", "kind": kind}, **spec}}
    if path:
        body["spec"]["replicasPath"] = path
    return body


def deployment(name, ns, replicas, image="nginx:1", annotations=None, owner=None):
    meta = {"name": name, "namespace": ns, "annotations": annotations or {}, "labels": {"app": name}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": image}]}}}}


def pod(name, ns, owner=None):
    meta = {"name": name, "namespace": ns}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def _ready(cluster, name) -> dict:
    status = (get(cluster, "instancesource", name) or {}).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})


def _usage(cluster, lic) -> int | None:
    return ((get(cluster, "license", lic) or {}).get("status") or {}).get("instances", {}).get("used")


@pytest.fixture(scope="module")
def sources(cluster):
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(VM_CRD))
    cluster.kubectl("wait", "--for=condition=established", "crd/virtualmachines.kubevirt.test", "--timeout=60s")
    docs = [source("test-deployments", "apps", "Deployment", "spec.replicas"),
            source("test-statefulsets", "apps", "StatefulSet", "spec.replicas"),
            source("test-jobs", "batch", "Job", "spec.parallelism"),
            source("test-replicasets", "apps", "ReplicaSet", "spec.replicas", onlyUncontrolled=True),
            source("test-pods", "", "Pod", onlyUncontrolled=True),
            source("test-vms", "kubevirt.test", "VirtualMachine", instanceKind="vm")]
    apply(cluster, *docs)
    yield [d["metadata"]["name"] for d in docs]
    cluster.kubectl("delete", "instancesource", *[d["metadata"]["name"] for d in docs], "--ignore-not-found")


def grant_vm_read(cluster) -> None:
    """What a cluster admin adds for a custom kind (the chart does it from values.instanceSources)."""
    apply(cluster, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "entitle-read-vms"},
                    "rules": [{"apiGroups": ["kubevirt.test"], "resources": ["virtualmachines"],
                               "verbs": ["get", "list", "watch"]}]},
          {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": {"name": "entitle-read-vms"},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "entitle-read-vms"},
           "subjects": [{"kind": "ServiceAccount", "name": RELEASE, "namespace": OPERATOR_NAMESPACE}]})


def test_native_and_custom_kinds_are_counted_and_gated_like_workloads(cluster, sources, operator):
    # Without read access to the custom kind its source says so; everything else works.
    vm_ready = wait_for(lambda: _ready(cluster, "test-vms").get("reason") == "Forbidden" and _ready(cluster, "test-vms"),
                        message="the VM source Forbidden")
    assert "grant it read access" in vm_ready["message"]
    grant_vm_read(cluster)
    wait_for(lambda: all(_ready(cluster, s).get("status") == "True" for s in sources), timeout=90,
             message="every source Ready")
    tenant, ns, lic = unique("t"), unique("ns"), unique("lic")
    apply(cluster, namespace(ns, tenant), license(lic, tenant, instances={"max": 12}, seats={"max": 2}))
    apply(cluster, deployment("web", ns, 3, annotations={"entitle.dev/users": "ann,bob"}))
    apply(cluster, {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": ns},
                    "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                             "template": {"metadata": {"labels": {"app": "db"}},
                                          "spec": {"containers": [{"name": "c", "image": "db"}]}}}})
    apply(cluster, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "batch", "namespace": ns},
                    "spec": {"parallelism": 2, "template": {"spec": {"restartPolicy": "Never",
                                                                     "containers": [{"name": "c", "image": "b"}]}}}})
    apply(cluster, pod("bare", ns))
    apply(cluster, {"apiVersion": "kubevirt.test/v1", "kind": "VirtualMachine", "metadata": {"name": "vm1", "namespace": ns},
                    "spec": {"running": True}})
    # 3 + 2 + 2 + 1 + 4 (a vm is 4 units) = 12: at the cap.
    wait_for(lambda: _usage(cluster, lic) == 12, message="usage 12 from five kinds")
    # The counted Deployment's ReplicaSet, and a pod of it, are not counted again (and a bare one
    # would be over). (No Deployment controller runs here: they are written as it would.)
    web_uid = get(cluster, "deployment", "web", ns)["metadata"]["uid"]
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
        "name": "web-1", "namespace": ns, "labels": {"app": "web"}, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": web_uid, "controller": True}]},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}
    assert apply(cluster, rs).returncode == 0
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
             "uid": get(cluster, "replicaset", "web-1", ns)["metadata"]["uid"], "controller": True}
    assert apply(cluster, pod("web-1-abc", ns, owner=owner)).returncode == 0
    denied = apply(cluster, pod("bare2", ns), check=False)
    assert denied.returncode != 0 and f"InstanceCapExceeded: tenant {tenant}: instances 12 + 1 would exceed 12" in denied.stderr
    over = cluster.kubectl("scale", "deployment", "web", "-n", ns, "--replicas=5", check=False)
    assert over.returncode != 0 and f"tenant {tenant}: instances 12 + 2 would exceed 12" in over.stderr
    # A rollout at the cap (new image) is not a raise; scaling down always passes.
    assert apply(cluster, deployment("web", ns, 3, image="nginx:2", annotations={"entitle.dev/users": "ann,bob"})).returncode == 0
    assert cluster.kubectl("scale", "deployment", "web", "-n", ns, "--replicas=1").returncode == 0
    seats = apply(cluster, deployment("more-users", ns, 0, annotations={"entitle.dev/users": "cy"}), check=False)
    assert seats.returncode != 0 and "SeatCapExceeded" in seats.stderr
    counted = wait_for(lambda: ((get(cluster, "instancesource", "test-deployments") or {}).get("status") or {}).get("counted"),
                       message="the source's counted objects")
    assert counted >= 1
    # Usage records carry the counted object's kind.
    kinds = wait_for(lambda: {(r["data"].get("apiVersion"), r["data"].get("kind")) for r in operator.records()
                              if r["type"] == "dev.entitle.workload.v1" and r["subject"] == tenant} >=
                     {("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("batch/v1", "Job"), ("v1", "Pod"),
                      ("kubevirt.test/v1", "VirtualMachine")}, message="records of every kind")
    assert kinds


def test_unlabeled_and_system_namespaces_are_never_touched(cluster, sources, operator):
    wait_for(lambda: _ready(cluster, "test-deployments").get("status") == "True", message="sources Ready")
    ns = unique("platform")
    apply(cluster, namespace(ns, None))
    # No tenant: a platform namespace. A huge Deployment there is admitted untouched.
    assert apply(cluster, deployment("ingress", ns, 500)).returncode == 0
    assert apply(cluster, deployment("dns", "kube-system", 500)).returncode == 0
    cluster.kubectl("delete", "deployment", "dns", "-n", "kube-system")


def test_a_deleted_deployment_stops_counting_at_its_deletion_time_via_its_anchor(cluster, sources, operator):
    wait_for(lambda: _ready(cluster, "test-deployments").get("status") == "True", message="sources Ready")
    tenant, ns = unique("t"), unique("ns")
    apply(cluster, namespace(ns, tenant), license(unique("lic"), tenant, instances={"max": 10}))
    apply(cluster, deployment("gone", ns, 2))
    uid = json.loads(cluster.kubectl("get", "deployment", "gone", "-n", ns, "-o", "json").stdout)["metadata"]["uid"]
    anchor = wait_for(lambda: next((a for a in json.loads(cluster.kubectl("get", "usageanchors", "-n", ns, "-o", "json")
                                                          .stdout)["items"] if a["spec"]["owner"]["uid"] == uid), None),
                      message="the usage anchor beside the Deployment")
    assert anchor["metadata"]["ownerReferences"][0]["uid"] == uid and anchor["metadata"]["finalizers"]
    operator.stop()       # deleted while no replica runs
    cluster.kubectl("delete", "deployment", "gone", "-n", ns)
    deleted_at = wait_for(lambda: (get(cluster, "usageanchor", anchor["metadata"]["name"], ns) or {})
                          .get("metadata", {}).get("deletionTimestamp"), message="the garbage collector marking the anchor")
    operator.start()
    record = wait_for(lambda: next((r for r in operator.records() if r["data"].get("uid") == uid
                                    and r["data"]["operation"] == "deleted"), None), timeout=60, message="the deletion")
    assert record["time"] == deleted_at and record["data"]["kind"] == "Deployment"
    wait_for(lambda: get(cluster, "usageanchor", anchor["metadata"]["name"], ns) is None, message="the anchor released")


def test_sources_that_cannot_work_are_reported_and_block_nothing(cluster, sources, operator):
    apply(cluster, source("no-such-kind", "nothere.example", "Gadget"),
          source("bad-path", "apps", "Deployment", "spec.strategy.type"))
    missing = wait_for(lambda: _ready(cluster, "no-such-kind").get("reason") == "KindNotServed" and
                       _ready(cluster, "no-such-kind"), message="KindNotServed")
    assert missing["status"] == "False"
    tenant, ns = unique("t"), unique("ns")
    apply(cluster, namespace(ns, tenant), license(unique("lic"), tenant, instances={"max": 10}))
    # Two sources of one kind: the first by name counts (bad-path sorts before test-deployments).
    bad = apply(cluster, deployment("odd", ns, 1), check=False)
    assert bad.returncode != 0 and "InvalidInstanceCount" in bad.stderr and "spec.strategy.type" in bad.stderr
    cluster.kubectl("delete", "instancesource", "bad-path", "no-such-kind")
    wait_for(lambda: apply(cluster, deployment("odd", ns, 1), check=False).returncode == 0, message="admitted again")


def test_100_concurrent_deployment_creates_against_a_cap_of_30_admit_exactly_30(cluster, sources, replicas):
    from kubernetes import client, config

    wait_for(lambda: _ready(cluster, "test-deployments").get("status") == "True", message="sources Ready")
    tenant, ns, lic = unique("t"), unique("ns"), unique("lic")
    apply(cluster, namespace(ns, tenant), license(lic, tenant, instances={"max": 30}))
    apps = client.AppsV1Api(config.new_client_from_config(cluster.kubeconfig))

    def create(i):
        try:
            apps.create_namespaced_deployment(ns, deployment(f"d{i}", ns, 1))
            return True
        except Exception:  # noqa: BLE001 -- denied
            return False

    with ThreadPoolExecutor(max_workers=20) as pool:
        admitted = sum(pool.map(create, range(100)))
    assert admitted == 30
    wait_for(lambda: _usage(cluster, lic) == 30, message="usage exactly 30")
