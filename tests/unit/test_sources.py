"""Instance sources in the engine: what a Deployment, a Job, a bare Pod or a custom kind claims,
the owner rule, and the same decisions as for a Workload (domain.sources, adapters.webhook.sources)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from entitle.adapters.kube.holds import MemoryHoldStore
from entitle.adapters.webhook.admission import SharedAdmission
from entitle.adapters.webhook.sources import source_request
from entitle.api import InstanceSource
from entitle.domain.sources import InvalidInstanceCount, claim, matches, object_key, read_source, selector_matches
from tests.unit.builders import NOW, lic, state_with


def source(kind="Deployment", group="apps", path="spec.replicas", **spec):
    return read_source(InstanceSource.model_validate({"metadata": {"name": kind.lower()}, "spec": {
        "resource": {"group": group, "version": "v1", "kind": kind}, "replicasPath": path, **spec}}))


def deployment(name="web", replicas=3, ns="team-a", annotations=None, labels=None, owner=None, uid=None):
    meta = {"name": name, "namespace": ns, "uid": uid or f"uid-{name}", "generation": 1,
            "labels": labels or {}, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": owner, "controller": True}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"replicas": replicas}}


def test_a_deployment_claims_its_desired_replicas_with_annotations():
    w = claim(source(), deployment(annotations={"entitle.dev/instance-kind": "vm", "entitle.dev/users": "ann, bob,ann",
                                                "entitle.dev/features": "sso"}))
    assert (w.kind, w.api_version, w.spec.replicas, w.spec.instance_kind) == ("Deployment", "apps/v1", 3, "vm")
    assert w.spec.users == ["ann", "bob"] and w.spec.features == ["sso"]


def test_the_count_comes_from_the_path_one_when_absent_and_invalid_when_not_an_integer():
    assert claim(source(), {**deployment(), "spec": {}}).spec.replicas == 1
    assert claim(source(path=None), deployment(replicas=7)).spec.replicas == 1
    job = source("Job", "batch", "spec.parallelism")
    assert claim(job, {**deployment(), "spec": {"parallelism": 4}}).spec.replicas == 4
    for bad in ("3", 1.5, -1, True, {"a": 1}):
        with pytest.raises(InvalidInstanceCount):
            claim(source(), {**deployment(), "spec": {"replicas": bad}})


def test_selectors_and_only_uncontrolled():
    sel = {"matchLabels": {"app": "db"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]},
                                                            {"key": "skip", "operator": "DoesNotExist"}]}
    s = source(selector=sel)
    assert matches(s, deployment(labels={"app": "db", "tier": "x"}))
    assert not matches(s, deployment(labels={"app": "db", "tier": "y"}))
    assert not matches(s, deployment(labels={"app": "db", "tier": "x", "skip": "1"}))
    assert selector_matches(None, {})
    bare = source("Pod", "", None, onlyUncontrolled=True)
    assert matches(bare, deployment()) and not matches(bare, deployment(owner="rs-uid"))


def test_keys_never_collide_with_workloads():
    assert object_key("Workload", "entitle.dev", "web") == "web"
    assert object_key("Deployment", "apps", "web") == "Deployment.apps/web"
    assert object_key("Pod", "", "web") == "Pod.core/web"


def _admission(**license_spec):
    state = state_with(lic("base", **license_spec))
    return state, SharedAdmission(state, MemoryHoldStore(), timedelta(seconds=30))


def _decide(state, admission, obj, old=None, operation="CREATE", subresource=None, covered=lambda uid: False,
            known=lambda ns, key: None, sources=None):
    request = source_request(state, sources or [source()], covered, known, operation=operation,
                             subresource=subresource, namespace="team-a", name=obj["metadata"]["name"], group="apps",
                             kind="Deployment", body=obj, old=old, dry_run=False)
    if request is None:
        return None
    return asyncio.run(admission.decide(request, NOW))


def test_a_deployment_is_decided_like_a_workload_with_the_same_message():
    state, admission = _admission(instances={"max": 5})
    assert _decide(state, admission, deployment("a", 4)).allowed
    state.observe_workload(claim(source(), deployment("a", 4)))
    denied = _decide(state, admission, deployment("b", 2))
    assert not denied.allowed and denied.reason == "InstanceCapExceeded"
    assert denied.message == "tenant acme: instances 4 + 2 would exceed 5"
    # A rollout (new image) changes no counted quantity: not a raise, never denied.
    rolled = deployment("a", 4)
    rolled["spec"]["template"] = {"spec": {"containers": [{"image": "v2"}]}}
    assert _decide(state, admission, rolled, old=deployment("a", 4), operation="UPDATE").allowed
    # kubectl scale over the cap: denied with the numbers; scaling down always passes.
    over = _decide(state, admission, {"metadata": {"name": "a"}, "spec": {"replicas": 9}}, subresource="scale",
                   operation="UPDATE")
    assert not over.allowed and over.message == "tenant acme: instances 4 + 5 would exceed 5"
    assert _decide(state, admission, {"metadata": {"name": "a"}, "spec": {"replicas": 1}}, subresource="scale",
                   operation="UPDATE").allowed


def test_the_owner_rule_and_unselected_objects_are_left_alone():
    state, admission = _admission(instances={"max": 0})
    assert _decide(state, admission, deployment("child", 9, owner="parent"), covered=lambda uid: uid == "parent") is None
    assert _decide(state, admission, deployment("other", 9), sources=[source(selector={"matchLabels": {"x": "y"}})]) is None
    # A scale of a watched, uncounted object: allowed untouched.
    assert _decide(state, admission, {"metadata": {"name": "rs"}, "spec": {"replicas": 50}}, subresource="scale",
                   operation="UPDATE", known=lambda ns, key: False) is None
    with pytest.raises(InvalidInstanceCount):
        _decide(state, admission, {**deployment("bad"), "spec": {"replicas": "many"}})
