"""The usage-record finalizer without a webhook round trip: a MutatingAdmissionPolicy
(admissionregistration.k8s.io, beta in Kubernetes 1.34 behind the ``MutatingAdmissionPolicy``
feature gate with ``--runtime-config=admissionregistration.k8s.io/v1beta1=true``; v1 and on by
default from 1.36) that the apiserver evaluates in process (docs/admission-concurrency.md
"One round trip per create").

The Helm chart renders exactly these objects when the cluster serves the API
(``webhook.usageFinalizer: auto``); a test renders the chart and compares, so the two never drift.
"""

from __future__ import annotations

from typing import Any

USAGE_FINALIZER = "entitle.dev/usage-record"

# Adds the finalizer unless present. JSONPatch, not an apply configuration: a create that lists
# other finalizers keeps them in order, and the expression needs no schema for Workloads.
PATCH_EXPRESSION = (
    "!has(object.metadata.finalizers) ? "
    f"[JSONPatch{{op: 'add', path: '/metadata/finalizers', value: ['{USAGE_FINALIZER}']}}] : "
    f"('{USAGE_FINALIZER}' in object.metadata.finalizers ? [] : "
    f"[JSONPatch{{op: 'add', path: '/metadata/finalizers/-', value: '{USAGE_FINALIZER}'}}])"
)


def policy_name(configuration_name: str) -> str:
    return f"{configuration_name}-usage-finalizer"


def usage_finalizer_policy(configuration_name: str, api_version: str,
                           exclude_namespaces: list[str]) -> list[dict[str, Any]]:
    """The MutatingAdmissionPolicy and its binding (``api_version``: the served one, e.g.
    ``admissionregistration.k8s.io/v1beta1``)."""
    name = policy_name(configuration_name)
    selector = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                      "values": list(exclude_namespaces)}]}
    policy = {
        "apiVersion": api_version, "kind": "MutatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {
            "matchConstraints": {
                "namespaceSelector": selector,
                "resourceRules": [{"apiGroups": ["entitle.dev"], "apiVersions": ["v1alpha1"],
                                   "resources": ["workloads"], "operations": ["CREATE"], "scope": "Namespaced"}],
            },
            # As the webhook it replaces: Ignore (the controller adds the finalizer to any
            # Workload it sees without one).
            "failurePolicy": "Ignore",
            "reinvocationPolicy": "Never",
            "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": PATCH_EXPRESSION}}],
        },
    }
    binding = {"apiVersion": api_version, "kind": "MutatingAdmissionPolicyBinding", "metadata": {"name": name},
               "spec": {"policyName": name}}
    return [policy, binding]
