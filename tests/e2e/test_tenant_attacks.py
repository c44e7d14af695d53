"""Revenue integrity, tried as a tenant would (DESIGN "Integrity against the tenant"; issue 26).

Every attack runs as a tenant's own identity -- a ServiceAccount bound to the namespace `edit`
role -- against the real apiserver and entitle's webhook, in a pool that is full: 4 of 4
instance units. Each one is a way a tenant could run more than it pays for, pay less than it
ran, or block a neighbour; each must be refused or counted. A careless admin's moves (a
namespace relabelled) are tried too.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from entitle.adapters.kube.holds import object_name
from entitle.adapters.pki import CertificateAuthority
from entitle.api.common import format_time, parse_time
from tests.conftest import OPERATOR_NAMESPACE, Operator, wait_for
from tests.e2e.helpers import apply, get, license, namespace, token_kubeconfig, unique, workload
from tests.e2e.test_instance_sources import VM_CRD, deployment, grant_vm_read, pod, source

pytestmark = [pytest.mark.e2e, pytest.mark.hostile]


class Identity:
    """kubectl as someone: a ServiceAccount's token in a kubeconfig of its own."""

    def __init__(self, cluster, path: Path, token: str) -> None:
        self.cluster, self.kubeconfig, self.token = cluster, token_kubeconfig(cluster, token, path), token

    def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        import subprocess

        proc = subprocess.run([self.cluster.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def apply(self, *objects: dict, check: bool = True):
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects), check=check)


def tenant_identity(cluster, ns: str, workdir: Path) -> Identity:
    """A ServiceAccount with the namespace `edit` role (what a tenant's team gets), plus the
    custom kind an admin would let it create."""
    cluster.kubectl("create", "serviceaccount", "team", "-n", ns)
    cluster.kubectl("create", "rolebinding", "team-edit", "--clusterrole=edit", f"--serviceaccount={ns}:team", "-n", ns)
    apply(cluster, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": "team-vms", "namespace": ns},
                    "rules": [{"apiGroups": ["kubevirt.test"], "resources": ["virtualmachines"], "verbs": ["*"]}]},
          {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
           "metadata": {"name": "team-vms", "namespace": ns},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "team-vms"},
           "subjects": [{"kind": "ServiceAccount", "name": "team", "namespace": ns}]})
    token = cluster.kubectl("create", "token", "team", "-n", ns, "--duration=2h").stdout.strip()
    me = Identity(cluster, workdir / f"{ns}.kubeconfig", token)
    # The aggregated edit role (with entitle's Workloads) is in place once it can create them.
    wait_for(lambda: me.kubectl("auth", "can-i", "create", "workloads.entitle.dev", "-n", ns, check=False)
             .stdout.strip() == "yes", timeout=30, message="the edit role to include Workloads")
    return me


@pytest.fixture(scope="module")
def guarded(cluster, tmp_path_factory):
    """Sources as the chart ships them (plus a custom VM kind), and one operator for the module."""
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(VM_CRD))
    cluster.kubectl("wait", "--for=condition=established", "crd/virtualmachines.kubevirt.test", "--timeout=60s")
    grant_vm_read(cluster)
    docs = [source("attack-deployments", "apps", "Deployment", "spec.replicas"),
            source("attack-replicasets", "apps", "ReplicaSet", "spec.replicas", onlyUncontrolled=True),
            source("attack-pods", "", "Pod", onlyUncontrolled=True),
            source("attack-vms", "kubevirt.test", "VirtualMachine", instanceKind="vm")]
    apply(cluster, *docs)
    op = Operator(cluster, tmp_path_factory.mktemp("attack-operator")).start()
    wait_for(lambda: all(_ready(cluster, d["metadata"]["name"]) for d in docs), timeout=60,
             message="the sources to be Ready")
    yield op
    op.stop()
    cluster.kubectl("delete", "instancesource", *[d["metadata"]["name"] for d in docs], "--ignore-not-found")
    cluster.kubectl("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "entitle",
                    "--ignore-not-found", check=False)


def _ready(cluster, name: str) -> bool:
    status = (get(cluster, "instancesource", name) or {}).get("status") or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


@pytest.fixture
def full_pool(cluster, guarded, tmp_path):
    """A tenant namespace whose instance pool is full (4 of 4) and the tenant's identity."""
    tenant, ns, lic = unique("acme"), unique("team"), unique("lic")
    apply(cluster, namespace(ns, tenant), license(lic, tenant, instances={"max": 4}))
    me = tenant_identity(cluster, ns, tmp_path)
    me.apply(workload("base", ns, replicas=4))
    wait_for(lambda: _used(cluster, lic) == 4, message="the pool to be full")
    return {"tenant": tenant, "ns": ns, "lic": lic, "me": me, "op": guarded}


def _used(cluster, lic: str) -> int | None:
    return (((get(cluster, "license", lic) or {}).get("status") or {}).get("instances") or {}).get("used")


def _denied(proc, reason: str = "InstanceCapExceeded") -> bool:
    return proc.returncode != 0 and reason in proc.stderr


def _records(op, uid: str) -> list[dict]:
    return [r for r in op.records() if (r.get("data") or {}).get("uid") == uid]


# -- counting that cannot be escaped --------------------------------------------------------
def test_a_pod_owned_by_the_tenants_own_configmap_counts(cluster, full_pool):
    me, ns, lic = full_pool["me"], full_pool["ns"], full_pool["lic"]
    me.kubectl("create", "configmap", "owner", "-n", ns)
    cm = json.loads(me.kubectl("get", "configmap", "owner", "-n", ns, "-o", "json").stdout)
    fake = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": cm["metadata"]["uid"], "controller": True}
    assert _denied(me.apply(pod("sneaky", ns, owner=fake), check=False))
    # With room it is admitted -- and counted: the ConfigMap controls nothing.
    me.kubectl("scale", "workload", "base", "-n", ns, "--replicas=3")
    me.apply(pod("sneaky", ns, owner=fake))
    wait_for(lambda: _used(cluster, lic) == 4, message="the pod to count")


def test_a_deployment_controlled_by_the_tenants_idle_deployment_counts(cluster, full_pool):
    me, ns = full_pool["me"], full_pool["ns"]
    me.apply(deployment("idle", ns, 0))
    idle = json.loads(me.kubectl("get", "deployment", "idle", "-n", ns, "-o", "json").stdout)
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "idle", "uid": idle["metadata"]["uid"],
             "controller": True}
    assert _denied(me.apply(deployment("busy", ns, 3, owner=owner), check=False))
    # ... and so does a ReplicaSet it "controls" (a Deployment controls ReplicaSets, but this
    # one's chain reaches nothing counted: idle counts 0 and covers nobody it did not make).
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs", "namespace": ns,
                                                                   "labels": {"app": "rs"}, "ownerReferences": [owner]},
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "rs"}},
                   "template": {"metadata": {"labels": {"app": "rs"}},
                                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    # A Deployment that counts covers its ReplicaSets: idle counts (0 units), so rs is covered --
    # at idle's desired replicas. That is the owner rule working: what runs is idle's 0.
    assert me.apply(rs, check=False).returncode == 0


def test_pods_of_a_replication_controller_or_a_daemonset_count_as_pods(cluster, full_pool):
    me, ns, lic = full_pool["me"], full_pool["ns"], full_pool["lic"]
    rc = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc", "namespace": ns},
          "spec": {"replicas": 0, "selector": {"app": "rc"},
                   "template": {"metadata": {"labels": {"app": "rc"}},
                                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    me.apply(rc)
    made = json.loads(me.kubectl("get", "rc", "rc", "-n", ns, "-o", "json").stdout)
    owner = {"apiVersion": "v1", "kind": "ReplicationController", "name": "rc", "uid": made["metadata"]["uid"],
             "controller": True}
    assert _denied(me.apply(pod("rc-1", ns, owner=owner), check=False))
    ds_owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "0a8c3f2e-1111-2222-3333-444455556666",
                "controller": True}
    assert _denied(me.apply(pod("agent-1", ns, owner=ds_owner), check=False))
    me.kubectl("scale", "workload", "base", "-n", ns, "--replicas=3")
    me.apply(pod("rc-1", ns, owner=owner))
    wait_for(lambda: _used(cluster, lic) == 4, message="the RC's pod to count")


def test_an_instance_kind_annotation_never_lowers_the_weight(cluster, full_pool):
    me, ns, lic = full_pool["me"], full_pool["ns"], full_pool["lic"]
    me.kubectl("scale", "workload", "base", "-n", ns, "--replicas=0")
    wait_for(lambda: _used(cluster, lic) == 0, message="room")
    vm = {"apiVersion": "kubevirt.test/v1", "kind": "VirtualMachine",
          "metadata": {"name": "db", "namespace": ns, "annotations": {"entitle.dev/instance-kind": "container"}},
          "spec": {}}
    me.apply(vm)
    wait_for(lambda: _used(cluster, lic) == 4, message="the VM to count as a vm (4 units)")
    assert _denied(me.apply(workload("one-more", ns, replicas=1), check=False))
    # A typo is no way down either: denied at admission.
    typo = {**vm, "metadata": {**vm["metadata"], "name": "db2", "annotations": {"entitle.dev/instance-kind": "cntainer"}}}
    assert _denied(me.apply(typo, check=False), "UnknownInstanceKind")


def test_a_terminating_workload_held_by_a_foreign_finalizer_is_still_checked_and_counted(cluster, full_pool):
    me, ns, lic = full_pool["me"], full_pool["ns"], full_pool["lic"]
    me.kubectl("scale", "workload", "base", "-n", ns, "--replicas=3")
    me.apply({**workload("zombie", ns, replicas=1), "metadata": {"name": "zombie", "namespace": ns,
                                                                "finalizers": ["example.com/keep"]}})
    wait_for(lambda: _used(cluster, lic) == 4, message="the pool full again")
    me.kubectl("delete", "workload", "zombie", "-n", ns, "--wait=false")
    wait_for(lambda: (get(cluster, "workload", "zombie", ns) or {}).get("metadata", {}).get("deletionTimestamp"),
             message="zombie to be Terminating")
    assert _denied(me.kubectl("scale", "workload", "zombie", "-n", ns, "--replicas=100", check=False))
    assert _denied(me.kubectl("patch", "workload", "zombie", "-n", ns, "--type=merge",
                              "-p", '{"metadata":{"labels":{"x":"y"}},"spec":{"replicas":2}}', check=False))
    # Still there, still counted; a decrease passes; once let go, it stops counting.
    assert _used(cluster, lic) == 4
    me.kubectl("scale", "workload", "zombie", "-n", ns, "--replicas=0")
    wait_for(lambda: _used(cluster, lic) == 3, message="the scale-down to count")
    me.kubectl("patch", "workload", "zombie", "-n", ns, "--type=json",
               "-p", '[{"op":"remove","path":"/metadata/finalizers/0"}]')
    wait_for(lambda: get(cluster, "workload", "zombie", ns) is None, message="zombie to go")


def test_a_counted_deployment_cannot_leave_the_count_by_naming_a_controller(cluster, full_pool):
    me, ns, lic = full_pool["me"], full_pool["ns"], full_pool["lic"]
    me.kubectl("scale", "workload", "base", "-n", ns, "--replicas=0")
    me.apply(deployment("web", ns, 2), deployment("parent", ns, 0))
    wait_for(lambda: _used(cluster, lic) == 2, message="web to count")
    parent = json.loads(me.kubectl("get", "deployment", "parent", "-n", ns, "-o", "json").stdout)
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "parent", "uid": parent["metadata"]["uid"],
             "controller": True}
    me.apply(deployment("web", ns, 2, owner=owner))
    me.apply(workload("probe", ns, replicas=2))          # 2 + 2 = 4: still fits...
    assert _denied(me.apply(workload("probe2", ns, replicas=1), check=False))   # ... web still counts
    wait_for(lambda: _used(cluster, lic) == 4, message="web and probe to count")


# -- billed times the operator can prove -------------------------------------------------------
def test_a_scale_down_under_the_operators_field_manager_is_not_backdated(cluster, full_pool):
    me, ns, op = full_pool["me"], full_pool["ns"], full_pool["op"]
    me.kubectl("scale", "workload", "base", "-n", ns, "--replicas=0")
    me.apply(deployment("bill", ns, 3))
    uid = json.loads(me.kubectl("get", "deployment", "bill", "-n", ns, "-o", "json").stdout)["metadata"]["uid"]
    wait_for(lambda: any(r["data"]["operation"] == "created" for r in _records(op, uid)), message="bill's record")
    # The operator observes the scale-down at a known moment (its injected clock), well after the
    # creation; the managedFields entry a client writes with the manager "entitle" says nothing.
    observed = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=3)
    op.set_clock(format_time(observed))
    try:
        me.kubectl("patch", "deploy", "bill", "-n", ns, "--field-manager=entitle", "-p", '{"spec":{"replicas":1}}')
        update = wait_for(lambda: next((r for r in _records(op, uid) if r["data"]["operation"] == "updated"), None),
                          message="the scale-down's record")
    finally:
        op.set_clock(None)
    assert parse_time(update["time"]) == observed


def test_losing_the_tenant_label_moves_out_after_the_workloads_creation(cluster, full_pool):
    ns, op, lic = full_pool["ns"], full_pool["op"], full_pool["lic"]
    uid = get(cluster, "workload", "base", ns)["metadata"]["uid"]
    created = wait_for(lambda: next((r for r in _records(op, uid) if r["data"]["operation"] == "created"), None),
                       message="base's record")
    observed = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=5)
    op.set_clock(format_time(observed))
    try:
        cluster.kubectl("label", "namespace", ns, "entitle.dev/tenant-")       # the admin, carelessly
        out = wait_for(lambda: next((r for r in _records(op, uid) if r["data"]["operation"] == "movedOut"), None),
                       message="the move out")
    finally:
        op.set_clock(None)
    assert parse_time(out["time"]) == observed >= parse_time(created["time"])
    wait_for(lambda: _used(cluster, lic) == 0, message="the old tenant to stop counting it")


# -- only the apiserver reviews -------------------------------------------------------------
def _post(port: int, path: str, review: dict, cert: tuple[str, str] | None = None) -> int | None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if cert:
        context.load_cert_chain(*cert)
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=json.dumps(review).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ssl.SSLError, ConnectionError):
        return None          # no TLS session: refused at the handshake


def test_a_forged_review_holds_nothing_reads_nothing_and_blocks_nobody(cluster, full_pool, tmp_path):
    me, ns, tenant, op, lic = full_pool["me"], full_pool["ns"], full_pool["tenant"], full_pool["op"], full_pool["lic"]
    me.kubectl("scale", "workload", "base", "-n", ns, "--replicas=2")
    wait_for(lambda: _used(cluster, lic) == 2, message="headroom of 2")
    holds_before = get(cluster, "configmap", object_name(tenant), OPERATOR_NAMESPACE)

    def review(operation, obj, dry_run=False, resource="workloads"):
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": unique("forged"), "kind": {"group": "entitle.dev", "version": "v1alpha1", "kind": "Workload"},
            "resource": {"group": "entitle.dev", "version": "v1alpha1", "resource": resource},
            "operation": operation, "namespace": ns, "name": obj["metadata"]["name"], "dryRun": dry_run,
            "userInfo": {"username": f"system:serviceaccount:{ns}:team"}, "object": obj}}

    grab = {**workload("grab", ns, replicas=2), "metadata": {"name": "grab", "namespace": ns, "uid": "f-1"}}
    stranger = CertificateAuthority("stranger").issue("kube-apiserver-webhook-client", client=True)
    (tmp_path / "s.crt").write_bytes(stranger.cert_pem)
    (tmp_path / "s.key").write_bytes(stranger.key_pem)
    for cert in (None, (str(tmp_path / "s.crt"), str(tmp_path / "s.key"))):
        for path, body in (("/workloads", review("CREATE", grab)),                    # would hold the headroom
                           ("/workloads", review("CREATE", grab, dry_run=True)),      # would read usage and cap
                           ("/licenses", review("UPDATE", {"metadata": {"name": lic}}, resource="licenses"))):
            assert _post(op.port, path, body, cert) in (401, 403, None)
    assert get(cluster, "configmap", object_name(tenant), OPERATOR_NAMESPACE) == holds_before
    # The victim's real create goes through the apiserver (which presents its certificate).
    me.apply(workload("real", ns, replicas=2))
    assert "ProcessingFailed" not in cluster.kubectl("get", "events", "-n", ns).stdout


# -- guards around the edges ----------------------------------------------------------------
def test_only_the_label_managers_may_set_a_namespaces_tenant(cluster, full_pool, tmp_path):
    ns = full_pool["ns"]
    # A namespace provisioner (may create and label namespaces) is not a tenancy label manager.
    cluster.kubectl("create", "serviceaccount", "provisioner", "-n", OPERATOR_NAMESPACE, check=False)
    apply(cluster, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "test-namespace-provisioner"},
                    "rules": [{"apiGroups": [""], "resources": ["namespaces"],
                               "verbs": ["get", "list", "create", "update", "patch"]}]},
          {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": {"name": "test-namespace-provisioner"},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                       "name": "test-namespace-provisioner"},
           "subjects": [{"kind": "ServiceAccount", "name": "provisioner", "namespace": OPERATOR_NAMESPACE}]})
    token = cluster.kubectl("create", "token", "provisioner", "-n", OPERATOR_NAMESPACE).stdout.strip()
    provisioner = Identity(cluster, tmp_path / "provisioner.kubeconfig", token)
    victim = unique("victim")

    def refused_a_labelled_namespace() -> bool:
        made = provisioner.apply(namespace(unique("grab"), victim), check=False)
        return made.returncode != 0 and "tenancy label managers" in made.stderr

    wait_for(refused_a_labelled_namespace, timeout=30, message="the tenant-label policy to refuse")
    grabbed = provisioner.kubectl("label", "namespace", ns, f"entitle.dev/tenant={victim}", "--overwrite", check=False)
    assert grabbed.returncode != 0 and "tenancy label managers" in grabbed.stderr
    fresh = unique("ns")
    provisioner.apply(namespace(fresh, None))                       # an unlabelled one is fine
    provisioner.kubectl("label", "namespace", fresh, "team=x")       # and other labels
    # The tenant itself cannot even touch its namespace (RBAC); the admin can.
    assert full_pool["me"].kubectl("label", "namespace", ns, "entitle.dev/tenant=x", "--overwrite",
                                   check=False).returncode != 0
    cluster.kubectl("label", "namespace", fresh, f"entitle.dev/tenant={victim}")


def test_metrics_are_not_for_tenants(cluster, full_pool):
    op, me = full_pool["op"], full_pool["me"]

    def scrape(token: str | None) -> int:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(f"https://127.0.0.1:{op.metrics_port}/metrics",
                                                               headers=headers), timeout=10, context=context) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert scrape(None) == 401
    assert scrape(me.token) == 403                 # a tenant's own, valid token
    assert scrape(cluster.metrics_token) == 200    # what the chart's metrics-reader role grants


def test_a_tenant_cannot_touch_what_entitle_keeps_about_it(cluster, full_pool):
    me, ns = full_pool["me"], full_pool["ns"]
    wait_for(lambda: get(cluster, "tenantentitlement", "entitlement", ns), message="the tenant view")
    assert me.kubectl("get", "tenantentitlement", "entitlement", "-n", ns, check=False).returncode == 0
    for args in (("delete", "tenantentitlement", "entitlement"), ("delete", "usageanchors", "--all"),
                 ("patch", "workload", "base", "--subresource=status", "--type=merge",
                  "-p", '{"status":{"units":0}}')):
        proc = me.kubectl(*args, "-n", ns, check=False)
        assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), args


def test_the_operators_own_identity_may_not_rewrite_its_webhooks(cluster, tmp_path):
    """The fence around the operator's writes to its webhook configurations, as the chart installs
    it in a cluster (Service mode), for a release of its own."""
    from tests.conftest import render_chart

    release = "entitle-fence"
    docs = render_chart(release=release)
    keep = [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                            "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
            or (d["kind"].startswith("ValidatingAdmissionPolicy") and "fence" in d["metadata"]["name"])]
    for doc in keep:
        if doc["kind"].endswith("WebhookConfiguration"):
            # Nothing to call in this test: no rules, so no request of anyone's reaches them.
            for hook in doc["webhooks"]:
                hook["rules"] = []
    apply(cluster, *keep)
    try:
        token = cluster.kubectl("create", "token", release, "-n", OPERATOR_NAMESPACE).stdout.strip()
        operator = Identity(cluster, tmp_path / "operator.kubeconfig", token)
        ca = base64.b64encode(CertificateAuthority("rotated").cert_pem).decode()

        def patch(kind: str, *ops: dict):
            return operator.kubectl("patch", kind, release, "--type=json", "-p", json.dumps(list(ops)), check=False)

        def fenced() -> bool:
            # A new policy takes effect once the apiserver's informer has it: flip the
            # timeout until a flip is refused (a flip that goes through changes nothing that matters).
            current = get(cluster, "validatingwebhookconfiguration", release)["webhooks"][3]["timeoutSeconds"]
            flip = patch("validatingwebhookconfiguration", {"op": "replace", "path": "/webhooks/3/timeoutSeconds",
                                                             "value": 7 if current != 7 else 6})
            return flip.returncode != 0 and "may change only" in flip.stderr

        wait_for(fenced, timeout=30, message="the fence policy to take effect")

        assert patch("validatingwebhookconfiguration",
                     {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": ca}).returncode == 0
        assert patch("validatingwebhookconfiguration", {"op": "replace", "path": "/webhooks/1/rules", "value": [
            {"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"], "operations": ["CREATE"],
             "scope": "Namespaced"}]}).returncode == 0
        for ops in ([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}],
                    [{"op": "replace", "path": "/webhooks/0/clientConfig/service/name", "value": "elsewhere"}],
                    [{"op": "replace", "path": "/webhooks/0/namespaceSelector", "value": {}}],
                    [{"op": "remove", "path": "/webhooks/2"}]):
            refused = patch("validatingwebhookconfiguration", *ops)
            assert refused.returncode != 0 and "may change only" in refused.stderr, ops
        refused = patch("mutatingwebhookconfiguration",
                        {"op": "replace", "path": "/webhooks/0/reinvocationPolicy", "value": "IfNeeded"})
        assert refused.returncode != 0 and "may change only" in refused.stderr
    finally:
        for doc in reversed(keep):
            cluster.kubectl("delete", doc["kind"], doc["metadata"]["name"], "-n", OPERATOR_NAMESPACE,
                            "--ignore-not-found", check=False)
