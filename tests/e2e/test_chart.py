"""The Helm chart: lints, renders everything it promises, installs into the real apiserver, and
grants the operator no more than it needs (the rest of the e2e suite runs the operator with
exactly these permissions; see ``install_chart_identity`` in conftest)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.conftest import OPERATOR_NAMESPACE, RELEASE, ROOT, helm_binary, render_chart, wait_for

pytestmark = pytest.mark.e2e
CHART = str(ROOT / "charts" / "entitle")


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def test_chart_lints_strictly():
    out = subprocess.run([helm_binary(), "lint", "--strict", CHART], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_default_render_has_everything_the_operator_needs():
    kinds = by_kind(render_chart())
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service",
                 "StatefulSet", "PodDisruptionBudget", "ConfigMap",
                 "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        assert kind in kinds, f"{kind} missing from the rendered chart"
    sts = kinds["StatefulSet"][0]
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert sts["spec"]["replicas"] == 2
    # One ledger per replica, kept when the release goes or shrinks; no affinity tying the
    # replicas to one node's volume.
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["ledger"]
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert "podAffinity" not in pod["affinity"] and "PersistentVolumeClaim" not in kinds
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] >= 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"] and container["readinessProbe"] and container["resources"]["requests"]

    validating = kinds["ValidatingWebhookConfiguration"][0]["webhooks"][0]
    assert validating["rules"][0]["resources"] == ["workloads", "workloads/scale"]
    assert validating["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert validating["failurePolicy"] == "Fail" and validating["timeoutSeconds"] <= 10
    # Every namespace but kube-system; never selected by the tenant label (NoTenant must fire).
    assert validating["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}
    assert "objectSelector" not in validating
    mutating = kinds["MutatingWebhookConfiguration"][0]["webhooks"][0]
    assert mutating["rules"][0]["operations"] == ["CREATE"]

    config = yaml.safe_load(next(c for c in kinds["ConfigMap"] if c["metadata"]["name"] == RELEASE)
                            ["data"]["config.yaml"])
    assert config["normalization"] == {"container": 1, "vm": 4, "processCluster": 8}
    assert config["webhook"]["generated"]["hosts"][0] == f"{RELEASE}-webhook.{OPERATOR_NAMESPACE}.svc"
    dashboard = next(c for c in kinds["ConfigMap"] if c["metadata"]["name"].endswith("-dashboard"))
    assert "entitle_admission_decisions_total" in dashboard["data"]["entitle.json"]


def test_values_carry_through_and_options_render():
    docs = render_chart("--set", "webhook.certManager.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
                        "--set", "webhook.failurePolicy=Ignore", "--set", "normalization.gpuNode=16",
                        "--set", "sinks[0].type=http", "--set", "sinks[0].url=https://billing.example/events")
    kinds = by_kind(docs)
    assert {c["metadata"]["name"] for c in kinds["Certificate"]} == {f"{RELEASE}-ca", f"{RELEASE}-webhook"}
    assert "ServiceMonitor" in kinds
    hook = kinds["ValidatingWebhookConfiguration"][0]
    assert hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{OPERATOR_NAMESPACE}/{RELEASE}-webhook"
    assert hook["webhooks"][0]["failurePolicy"] == "Ignore"
    config = yaml.safe_load(next(c for c in kinds["ConfigMap"] if c["metadata"]["name"] == RELEASE)
                            ["data"]["config.yaml"])
    assert config["normalization"]["gpuNode"] == 16
    assert config["sinks"] == [{"type": "http", "url": "https://billing.example/events"}]
    assert config["webhook"]["certFile"] == "/etc/entitle/tls/tls.crt" and "generated" not in config["webhook"]
    # cert-manager owns the Secret: the operator gets no Secret access at all.
    role = next(r for r in kinds["Role"])
    assert not [r for r in role["rules"] if "secrets" in r["resources"]]


@pytest.mark.parametrize("bad", [["webhook.failurePolicy=Sometimes"], ["webhook.timeoutSeconds=60"],
                                 ["normalization.vm=0"], ["sinks[0].type=http"], ["replicaCount=0"]])
def test_values_schema_rejects_bad_values(bad):
    out = subprocess.run([helm_binary(), "template", RELEASE, CHART, *[a for b in bad for a in ("--set", b)]],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "schema" in out.stderr, out.stderr


def test_chart_installs_into_the_apiserver(cluster, tmp_path):
    """Every rendered object is accepted by the real apiserver (helm install, then uninstall).
    Another release name and namespace, so the test operators' objects are untouched."""
    release, namespace = "chart-check", "chart-check"
    kubeconfig = ["--kubeconfig", cluster.kubeconfig]
    out = subprocess.run([helm_binary(), "install", release, CHART, "--namespace", namespace, "--create-namespace",
                          *kubeconfig], capture_output=True, text=True, timeout=180)
    try:
        assert out.returncode == 0, out.stderr
        rendered = render_chart(release=release, namespace=namespace)
        for doc in rendered:
            meta = doc["metadata"]
            args = ["get", doc["kind"].lower(), meta["name"], "-o", "name"]
            if meta.get("namespace"):
                args += ["-n", meta["namespace"]]
            assert cluster.kubectl(*args).stdout.strip(), f"{doc['kind']} {meta['name']} not in the cluster"
        assert len(rendered) >= 13
    finally:
        subprocess.run([helm_binary(), "uninstall", release, "--namespace", namespace, *kubeconfig],
                       capture_output=True, text=True, timeout=180)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    # (The ledger claims surviving uninstall, with pods that write them, is tests/realnode's.)
    wait_for(lambda: cluster.kubectl("get", "validatingwebhookconfiguration", f"{release}-entitle",
                                     check=False).returncode != 0, message="the webhook configuration to go")


def can_i(cluster, *args: str) -> bool:
    out = cluster.kubectl("auth", "can-i", *args, f"--kubeconfig={cluster.operator_kubeconfig}", check=False)
    return out.stdout.strip() == "yes"


def test_operator_identity_cannot_read_secrets_outside_its_namespace(cluster):
    cluster.kubectl("create", "secret", "generic", "tenant-db-password", "-n", "default",
                    "--from-literal=password=hunter2", check=False)
    as_operator = subprocess.run([cluster.kubectl_bin, f"--kubeconfig={cluster.operator_kubeconfig}", "get",
                                  "secret", "tenant-db-password", "-n", "default", "-o", "yaml"],
                                 capture_output=True, text=True)
    assert as_operator.returncode != 0 and "forbidden" in as_operator.stderr.lower()
    assert "hunter2" not in as_operator.stdout
    assert not can_i(cluster, "list", "secrets", "--all-namespaces")
    assert not can_i(cluster, "get", "secrets", "-n", "default")
    # In its own namespace only the webhook certificate Secret, by name.
    assert can_i(cluster, "get", "secret/entitle-webhook-tls", "-n", OPERATOR_NAMESPACE)
    assert not can_i(cluster, "get", "secret/something-else", "-n", OPERATOR_NAMESPACE)
    # And nothing it does not use.
    assert not can_i(cluster, "delete", "workloads.entitle.dev", "-n", "default")
    assert not can_i(cluster, "update", "licenses.entitle.dev")
    assert not can_i(cluster, "create", "namespaces")
    assert not can_i(cluster, "patch", "validatingwebhookconfiguration/some-other-webhook")
    # What it does use.
    assert can_i(cluster, "watch", "workloads.entitle.dev", "--all-namespaces")
    assert can_i(cluster, "patch", "licenses.entitle.dev", "--subresource=status")
    assert can_i(cluster, "update", "leases.coordination.k8s.io", "-n", OPERATOR_NAMESPACE)
    assert not can_i(cluster, "update", "leases.coordination.k8s.io", "-n", "default")


def test_sourced_kinds_are_readable_and_nothing_more(cluster):
    for kind in ("deployments.apps", "statefulsets.apps", "jobs.batch", "replicasets.apps", "pods"):
        assert can_i(cluster, "watch", kind, "--all-namespaces"), kind
        for verb in ("create", "update", "patch", "delete"):
            assert not can_i(cluster, verb, kind, "-n", "default"), (verb, kind)
    assert can_i(cluster, "create", "usageanchors.entitle.dev", "-n", "default")
    assert not can_i(cluster, "watch", "daemonsets.apps", "--all-namespaces")


def test_the_usage_finalizer_policy_replaces_the_webhook_where_the_api_is_served():
    """auto: a MutatingAdmissionPolicy (equal to the one the operator's code describes) and no
    finalizer webhook when the cluster serves the API; the webhook and no policy when it does
    not; each forced by webhook.usageFinalizer."""
    from entitle.adapters.kube.finalizer_policy import usage_finalizer_policy

    served = ("--api-versions", "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy")

    def finalizer_parts(*args):
        kinds = by_kind(render_chart(*args))
        hooks = [h["name"] for d in kinds.get("MutatingWebhookConfiguration", []) for h in d["webhooks"]]
        return kinds.get("MutatingAdmissionPolicy", []), kinds.get("MutatingAdmissionPolicyBinding", []), hooks

    policies, bindings, hooks = finalizer_parts(*served)
    assert "finalizer.workloads.entitle.dev" not in hooks and len(policies) == len(bindings) == 1
    expected = usage_finalizer_policy(RELEASE, "admissionregistration.k8s.io/v1beta1", ["kube-system"])
    for rendered, wanted in zip((policies[0], bindings[0]), expected):
        assert (rendered["apiVersion"], rendered["metadata"]["name"], rendered["spec"]) == \
            (wanted["apiVersion"], wanted["metadata"]["name"], wanted["spec"])
    policies, bindings, hooks = finalizer_parts()
    assert "finalizer.workloads.entitle.dev" in hooks and not policies and not bindings
    policies, _, hooks = finalizer_parts(*served, "--set", "webhook.usageFinalizer=webhook")
    assert "finalizer.workloads.entitle.dev" in hooks and not policies
    policies, _, hooks = finalizer_parts("--set", "webhook.usageFinalizer=policy")
    assert "finalizer.workloads.entitle.dev" not in hooks and policies[0]["apiVersion"].endswith("/v1beta1")
