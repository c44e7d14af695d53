"""``entitle check`` and the webhook decide the same on the same sequence (one engine, two doors)."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

import asyncio

from entitle.adapters.webhook.shared_admission import SharedAdmission
from entitle.adapters.kube.holds import MemoryHoldStore
from entitle.adapters.check import DELETE_ANNOTATION, Document, run_check
from entitle.api import License, Workload
from entitle.domain.state import ClusterState
from tests.unit.builders import NOW

LICENSE = {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": "base"},
           "spec": {"tenant": "acme", "instances": {"max": 10, "burst": {"extra": 2, "window": "1h"}},
                    "seats": {"max": 3}, "features": [{"name": "sso"}, {"name": "audit", "requires": ["sso"],
                                                                        "limit": {"workloads": 1}}],
                    "rules": [{"name": "r", "expression": "workload.spec.replicas <= 5"}]}}
NAMESPACES = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"entitle.dev/tenant": "acme"}}},
              {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "loose"}}]

workload_docs = st.builds(
    lambda ns, name, replicas, kind, users, features, delete: {
        "apiVersion": "entitle.dev/v1alpha1", "kind": "Workload",
        "metadata": {"name": name, "namespace": ns, **({"annotations": {DELETE_ANNOTATION: "delete"}} if delete else {})},
        "spec": {"replicas": replicas, "instanceKind": kind, "users": users, "features": features}},
    st.sampled_from(["a", "a", "a", "loose"]), st.sampled_from(["w1", "w2", "w3"]), st.integers(0, 7),
    st.sampled_from(["container", "vm", "gpu"]),
    st.lists(st.sampled_from(["ann", "bob", "cy", "dee"]), max_size=3, unique=True),
    st.lists(st.sampled_from(["sso", "audit", "x"]), max_size=2, unique=True),
    st.sampled_from([False, False, False, True]))  # deletes are a quarter of the documents


@settings(max_examples=150, deadline=None)
@given(st.lists(workload_docs, min_size=1, max_size=15))
def test_check_and_webhook_agree(docs):
    stream = [*NAMESPACES, LICENSE, *docs]
    offline = run_check([Document("s.yaml", i + 1, d) for i, d in enumerate(stream)], NOW)

    # The webhook path: admission requests through the adapter, stored objects fed back
    # the way the watch does after the apiserver persists an admitted change.
    state = ClusterState()
    for ns in NAMESPACES:
        state.set_namespace(ns["metadata"]["name"], ns["metadata"].get("labels"))
    state.set_license(License.model_validate(LICENSE))
    # The operator's own admission path: holds in a (here in-memory) compare-and-swap store.
    admission = SharedAdmission(state, MemoryHoldStore(), timedelta(seconds=30), wall_clock=lambda: NOW)

    def review(**request):
        return asyncio.run(admission.review(NOW, **request))

    online = []
    incarnation = 0
    for doc in docs:
        ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
        kept = state.workload(ns, name)
        stored = kept.to_model() if kept is not None else None
        # What the apiserver adds: a uid per object, a generation bumped by spec changes.
        doc = json.loads(json.dumps(doc))
        if stored is not None:
            doc["metadata"]["uid"] = stored.metadata.uid
            changed = stored.spec.model_dump(by_alias=True) != Workload.model_validate(doc).spec.model_dump(by_alias=True)
            doc["metadata"]["generation"] = stored.metadata.generation + (1 if changed else 0)
        else:
            incarnation += 1
            doc["metadata"]["uid"], doc["metadata"]["generation"] = f"uid-{incarnation}", 1
        if doc["metadata"].get("annotations"):
            request, decision = review(operation="DELETE", subresource=None,
                                       body=None, old=stored.model_dump(by_alias=True, mode="json") if stored else doc,
                                       dry_run=False)
            if decision.allowed and stored is not None:
                state.forget_workload(ns, name)
        else:
            request, decision = review(operation="UPDATE" if stored else "CREATE", subresource=None, body=doc,
                                       old=stored.model_dump(by_alias=True, mode="json") if stored else None,
                                       dry_run=False)
            if decision.allowed:
                state.observe_workload(Workload.model_validate(doc))
        online.append(decision)
    assert [(d.allowed, d.reason, d.message, d.warnings) for _, d in offline.decisions] == \
        [(d.allowed, d.reason, d.message, d.warnings) for d in online]
