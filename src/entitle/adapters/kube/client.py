"""The few Kubernetes API calls the controllers make (never on the webhook's hot path)."""

from __future__ import annotations

import base64
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from entitle.api.common import format_time
from entitle.api import GROUP, VERSION

# Our writes are attributed to this manager, so a Workload's own change time can be told from
# the operator's bookkeeping (status, finalizer) in managedFields.
FIELD_MANAGER = "entitle"


class KubeApi:
    def __init__(self, kubeconfig: str | None = None) -> None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig)
        self.api_client = client.ApiClient()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.admission = client.AdmissionregistrationV1Api(self.api_client)

    # -- reads used once at start-up to prime the in-memory state ----------------------
    def list_namespaces(self) -> list[dict[str, Any]]:
        items = self.core.list_namespace().items
        # The uid (kube-system's is the cluster's id), creation time (no tenant label is older than
        # its namespace) and resourceVersion (what pins a move's record ids), beside the labels.
        return [{"metadata": {"name": ns.metadata.name, "labels": ns.metadata.labels or {}, "uid": ns.metadata.uid,
                              "resourceVersion": ns.metadata.resource_version,
                              "creationTimestamp": format_time(ns.metadata.creation_timestamp)
                              if ns.metadata.creation_timestamp else None}} for ns in items]

    def list_licenses(self) -> list[dict[str, Any]]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, "licenses")["items"]

    def list_workloads(self) -> list[dict[str, Any]]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, "workloads")["items"]

    def list_instance_sources(self) -> list[dict[str, Any]]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, "instancesources")["items"]

    def list_usage_anchors(self) -> list[dict[str, Any]]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, "usageanchors")["items"]

    def remove_anchor_finalizer(self, namespace: str, name: str, current: list[str]) -> None:
        finalizer = "entitle.dev/usage-record"
        if finalizer not in current:
            return
        index = current.index(finalizer)
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "usageanchors", name,
                [{"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
                 {"op": "remove", "path": f"/metadata/finalizers/{index}"}],
                field_manager=FIELD_MANAGER, _content_type="application/json-patch+json")
        except ApiException as exc:
            if exc.status not in (404, 409, 422):
                raise

    def ensure_namespace(self, name: str) -> None:
        """Create the operator's namespace in development; installed by the chart (403/409 fine)."""
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status not in (409, 403):
                raise

    # -- finalizers ------------------------------------------------------------------------
    def add_workload_finalizer(self, namespace: str, name: str, finalizer: str, current: list[str],
                               resource_version: str) -> None:
        """Add ``finalizer`` unless the object changed since we looked (then the next event retries)."""
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}]
        if current:
            ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer})
        else:
            ops.append({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]})
        self._json_patch(namespace, name, ops)

    def remove_workload_finalizer(self, namespace: str, name: str, finalizer: str, current: list[str]) -> None:
        if finalizer not in current:
            return
        index = current.index(finalizer)
        self._json_patch(namespace, name, [
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"}])

    def _json_patch(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
        try:
            self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "workloads", name, ops,
                                                       field_manager=FIELD_MANAGER,
                                                       _content_type="application/json-patch+json")
        except ApiException as exc:
            if exc.status not in (404, 409, 422):  # gone, or changed under us: the next event retries
                raise

    def whoami(self) -> str | None:
        """This client's username (SelfSubjectReview), or None when the apiserver cannot say."""
        try:
            review = client.AuthenticationV1Api(self.api_client).create_self_subject_review(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
            return review.status.user_info.username
        except Exception:  # noqa: BLE001 -- an old apiserver, or no grant: the caller decides
            return None

    # -- webhook registration (development / out-of-cluster mode) ------------------------
    def usage_finalizer_policy_present(self, name: str) -> bool:
        """Is the chart's usage-finalizer MutatingAdmissionPolicy installed (and its API served)?"""
        from entitle.adapters.kube.finalizer_policy import policy_name

        for api in (client.AdmissionregistrationV1Api, client.AdmissionregistrationV1beta1Api):
            try:
                api(self.api_client).read_mutating_admission_policy(policy_name(name))
                return True
            except ApiException as exc:
                # 404: not installed, or that version not served; 403: not ours to read.
                if exc.status not in (403, 404):
                    raise
        return False

    def ensure_webhooks(self, name: str, url: str, ca_pem: bytes, timeout_seconds: int = 5,
                        failure_policy: str = "Fail", license_failure_policy: str = "Ignore",
                        usage_finalizer: str = "auto") -> None:
        """Register the Workload, sources and License webhooks (the Helm chart renders the same
        objects in-cluster). The usage-record finalizer's webhook is left out when the chart's
        MutatingAdmissionPolicy puts it on instead (``usage_finalizer``: auto -- when that
        policy is installed --, policy, or webhook).

        Both see every namespace but kube-system, never selected by tenant label: a
        label-scoped webhook would let Workloads in unlabeled namespaces skip NoTenant.
        """
        common = {
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]},
            "failurePolicy": failure_policy, "timeoutSeconds": timeout_seconds,
            "admissionReviewVersions": ["v1"], "matchPolicy": "Equivalent",
        }

        def client_config(path: str) -> dict[str, Any]:
            return {"url": url.rstrip("/") + path, "caBundle": base64.b64encode(ca_pem).decode()}

        sources = {
            "name": "sources.entitle.dev", "clientConfig": client_config("/sources"),
            "rules": [],   # kept equal to the Ready InstanceSources' kinds by the leader
            "sideEffects": "NoneOnDryRun", **common,
            # Tenant namespaces only: the platform's own namespaces are never touched.
            "namespaceSelector": {"matchExpressions": [
                {"key": "entitle.dev/tenant", "operator": "Exists"},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}}
        self._ensure(name, "ValidatingWebhookConfiguration", {
            "name": "workloads.entitle.dev", "clientConfig": client_config("/workloads"),
            "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": ["workloads", "workloads/scale"],
                       "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}],
            "sideEffects": "NoneOnDryRun", **common}, sources, {
            "name": "licenses.entitle.dev", "clientConfig": client_config("/licenses"),
            "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": ["licenses"],
                       "operations": ["CREATE", "UPDATE", "DELETE"], "scope": "Cluster"}],
            "sideEffects": "None", **common, "failurePolicy": license_failure_policy}, {
            # TenantEntitlements are the operator's to write: everyone else is refused. Ignore:
            # the leader rewrites a view on the tenant's next change anyway.
            "name": "tenantentitlements.entitle.dev", "clientConfig": client_config("/tenantentitlements"),
            "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION],
                       "resources": ["tenantentitlements", "tenantentitlements/status"],
                       "operations": ["CREATE", "UPDATE", "DELETE"], "scope": "Namespaced"}],
            "sideEffects": "None", **common, "failurePolicy": "Ignore"})
        # CREATE only: puts the usage-record finalizer on every new Workload. Ignore: mutating
        # webhooks run before validation, so a Fail here would answer "failed calling webhook"
        # before the ValidatingAdmissionPolicies could deny with the reason; the controller adds
        # the finalizer to any Workload it sees without one, and with the validating webhook on
        # Fail nothing is created while no replica answers anyway.
        by_policy = usage_finalizer == "policy" or (usage_finalizer == "auto" and
                                                    self.usage_finalizer_policy_present(name))
        finalizer = [] if by_policy else [{
            "name": "finalizer.workloads.entitle.dev", "clientConfig": client_config("/workloads-finalizer"),
            "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": ["workloads"],
                       "operations": ["CREATE"], "scope": "Namespaced"}],
            "sideEffects": "None", "reinvocationPolicy": "Never", **common, "failurePolicy": "Ignore"}]
        self._ensure(name, "MutatingWebhookConfiguration", *finalizer, {
            # The audit trail of every License spec change (who, field manager, when).
            "name": "revision.licenses.entitle.dev", "clientConfig": client_config("/licenses-revision"),
            "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": ["licenses"],
                       "operations": ["CREATE", "UPDATE"], "scope": "Cluster"}],
            "sideEffects": "None", "reinvocationPolicy": "Never", **common, "failurePolicy": license_failure_policy})

    def _ensure(self, name: str, kind: str, *webhooks: dict[str, Any]) -> None:
        body = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                "metadata": {"name": name}, "webhooks": list(webhooks)}
        snake = "validating" if kind.startswith("Validating") else "mutating"
        read = getattr(self.admission, f"read_{snake}_webhook_configuration")
        replace = getattr(self.admission, f"replace_{snake}_webhook_configuration")
        create = getattr(self.admission, f"create_{snake}_webhook_configuration")
        try:
            current = read(name)
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            # Rules the leader keeps (the sourced kinds') survive a re-registration.
            for hook in body["webhooks"]:
                kept = next((h for h in current.webhooks or [] if h.name == hook["name"]), None)
                if kept is not None and hook["name"] == "sources.entitle.dev":
                    hook["rules"] = self.api_client.sanitize_for_serialization(kept.rules or [])
                    hook["matchConditions"] = self.api_client.sanitize_for_serialization(kept.match_conditions or [])
            replace(name, body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body["metadata"].pop("resourceVersion", None)
            create(body)


def event_body(*, kind: str, name: str, namespace: str | None, uid: str | None, event_type: str, reason: str,
               message: str, time: str, api_version: str | None = None) -> tuple[str, dict[str, Any]]:
    """(namespace, core/v1 Event); cluster-scoped objects' events go to the ``default`` namespace."""
    ns = namespace or "default"
    return ns, {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": ns},
        "involvedObject": {"apiVersion": api_version or f"{GROUP}/{VERSION}", "kind": kind, "name": name,
                           **({"namespace": namespace} if namespace else {}), **({"uid": uid} if uid else {})},
        "type": event_type, "reason": reason, "message": message[:1024],
        "firstTimestamp": time, "lastTimestamp": time, "count": 1,
        "source": {"component": "entitle"}, "reportingComponent": "entitle.dev/operator",
    }
