"""Instance sources where pods actually run: the chart's default sources count Deployments (not
their ReplicaSets' pods), a rollout at the cap is never denied, `kubectl scale` and an HPA above
the cap are refused with the reason -- and the HPA's own events say why."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import wait_for
from tests.realnode.conftest import Node

TENANT, NS = "initech", "initech-prod"


@pytest.fixture(scope="module")
def tenant(node: Node):
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"entitle.dev/tenant": TENANT}}},
        {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": "initech"},
         "spec": {"tenant": TENANT, "instances": {"max": 4}}}]))
    wait_for(lambda: all(_ready(node, s) for s in ("deployments", "statefulsets", "jobs", "replicasets", "pods")),
             timeout=90, message="the chart's default sources Ready")
    return NS


def _ready(node: Node, source: str) -> bool:
    got = node.kubectl("get", "instancesource", source, "-o", "json", check=False)
    conditions = (json.loads(got.stdout).get("status") or {}).get("conditions", []) if got.returncode == 0 else []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _deployment(node: Node, name: str, replicas: int, image: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "app", "image": image, "imagePullPolicy": "Never",
                                         "command": ["python", "-c", "import time; time.sleep(3600)"]}]}}}}


def _used(node: Node) -> int | None:
    got = json.loads(node.kubectl("get", "license", "initech", "-o", "json").stdout)
    return (got.get("status") or {}).get("instances", {}).get("used")


def _running_pods(node: Node, app: str) -> list[dict]:
    pods = json.loads(node.kubectl("get", "pods", "-n", NS, "-l", f"app={app}", "-o", "json").stdout)["items"]
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def test_a_deployment_counts_its_replicas_not_its_pods_and_rolls_out_at_the_cap(node: Node, tenant):
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump(_deployment(node, "web", 4, node.image_ref)))
    wait_for(lambda: len(_running_pods(node, "web")) == 4, timeout=120, message="4 pods running")
    # The ReplicaSet's pods (and the ReplicaSet) are the Deployment's instances: counted once.
    wait_for(lambda: _used(node) == 4, message="usage 4")
    # At the cap, a new image rolls out (a surge pod included) without a denial.
    repository, tag = node.image_ref.rsplit(":", 1)
    node.cluster.ctr("images", "tag", "--force", node.image_ref, f"{repository}:{tag}-v2")
    node.kubectl("set", "image", "deployment/web", f"app={repository}:{tag}-v2", "-n", NS)
    out = node.kubectl("rollout", "status", "deployment/web", "-n", NS, "--timeout=180s", check=False, timeout=200)
    assert out.returncode == 0, out.stdout + out.stderr
    images = {p["spec"]["containers"][0]["image"] for p in _running_pods(node, "web")}
    assert images == {f"{repository}:{tag}-v2"} and _used(node) == 4
    events = node.kubectl("get", "events", "-n", NS, "-o", "json").stdout
    assert "FailedCreate" not in events, "no ReplicaSet was refused a pod"


def test_scaling_above_the_cap_is_refused_synchronously_with_the_numbers(node: Node, tenant):
    wait_for(lambda: _used(node) == 4, message="usage 4")
    out = node.kubectl("scale", "deployment", "web", "-n", NS, "--replicas=6", check=False)
    assert out.returncode != 0
    assert f"InstanceCapExceeded: tenant {TENANT}: instances 4 + 2 would exceed 4" in out.stderr
    assert node.kubectl("scale", "deployment", "web", "-n", NS, "--replicas=3").returncode == 0
    wait_for(lambda: _used(node) == 3, message="usage 3 after scaling down")


def test_an_hpa_above_the_cap_is_refused_and_its_events_say_why(node: Node, tenant):
    wait_for(lambda: _used(node) == 3, message="usage 3")
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 6, "maxReplicas": 8,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                                        "averageUtilization": 80}}}]}}))
    event = wait_for(lambda: next((e for e in json.loads(node.kubectl("get", "events", "-n", NS, "-o", "json").stdout)["items"]
                                   if e["involvedObject"]["kind"] == "HorizontalPodAutoscaler"
                                   and e["reason"] == "FailedRescale"), None), timeout=90, message="the HPA's FailedRescale")
    assert f"InstanceCapExceeded: tenant {TENANT}: instances 3 + 3 would exceed 4" in event["message"]
    assert _used(node) == 3
    node.kubectl("delete", "hpa", "web", "-n", NS)


def test_a_bare_pod_counts_and_a_system_namespace_is_never_touched(node: Node, tenant):
    wait_for(lambda: _used(node) == 3, message="usage 3")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug", "namespace": NS}, "spec": {
        "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": node.image_ref, "imagePullPolicy": "Never",
                                                            "command": ["python", "-c", "import time; time.sleep(3600)"]}]}}
    node.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
    wait_for(lambda: _used(node) == 4, message="the bare pod counted")
    second = {**pod, "metadata": {"name": "debug2", "namespace": NS}}
    denied = node.kubectl("apply", "-f", "-", input=yaml.safe_dump(second), check=False)
    assert denied.returncode != 0 and "InstanceCapExceeded" in denied.stderr
    # kube-system and unlabeled namespaces: untouched, whatever the size.
    big = _deployment(node, "platform", 0, node.image_ref)
    big["metadata"]["namespace"] = "default"
    big["spec"]["replicas"] = 50
    assert node.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(big)).returncode == 0
    big["metadata"]["namespace"] = "kube-system"
    assert node.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(big)).returncode == 0
