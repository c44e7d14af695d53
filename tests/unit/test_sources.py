"""Instance sources in the engine: what a Deployment, a Job, a bare Pod or a custom kind claims,
the owner rule, and the same decisions as for a Workload (domain.sources, adapters.webhook.sources)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from entitle.adapters.kube.holds import MemoryHoldStore
from entitle.adapters.webhook.shared_admission import SharedAdmission
from entitle.adapters.webhook.sources import source_request
from entitle.api import InstanceSource
from entitle.domain.normalization import InstanceTable
from entitle.domain.ownership import ControllerRef, Watched, awaited_owner, controller_ref, covered, plausible
from entitle.domain.sources import InvalidInstanceCount, claim, matches, object_key, read_source, selector_matches
from tests.unit.builders import NOW, lic, state_with


def source(kind="Deployment", group="apps", path="spec.replicas", **spec):
    return read_source(InstanceSource.model_validate({"metadata": {"name": kind.lower()}, "spec": {
        "resource": {"group": group, "version": "v1", "kind": kind}, "replicasPath": path, **spec}}))


def deployment(name="web", replicas=3, ns="team-a", annotations=None, labels=None, owner=None, uid=None,
               owner_kind="X", owner_api="v1", owner_name="o"):
    meta = {"name": name, "namespace": ns, "uid": uid or f"uid-{name}", "generation": 1,
            "labels": labels or {}, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": owner_api, "kind": owner_kind, "name": owner_name, "uid": owner,
                                    "controller": True}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"replicas": replicas}}


class FakeOwners:
    """The owner rule over a dict of watched objects (what the operator's informers would know)."""

    def __init__(self, watched=None, source_kinds=(("apps", "Deployment"),), watched_kinds=()):
        self.watched, self.source_kinds, self.watched_kinds = watched or {}, set(source_kinds), set(watched_kinds)

    def covered(self, child, namespace, ref):
        return covered(child, namespace, ref, self.watched.get, self.source_kinds)

    def awaited(self, child, ref):
        return awaited_owner(child, ref, self.watched.get, self.source_kinds, self.watched_kinds)

    def known(self, namespace, key):
        return None


def test_a_deployment_claims_its_desired_replicas_with_annotations():
    w = claim(source(), deployment(annotations={"entitle.dev/instance-kind": "vm", "entitle.dev/users": "ann, bob,ann",
                                                "entitle.dev/features": "sso"}))
    assert (w.kind, w.api_version, w.spec.replicas, w.spec.instance_kind) == ("Deployment", "apps/v1", 3, "vm")
    assert w.spec.users == ["ann", "bob"] and w.spec.features == ["sso"]


def test_the_instance_kind_annotation_may_only_raise_the_weight():
    vms = source("VirtualMachine", "kubevirt.io", None, instanceKind="vm")
    table = InstanceTable({"container": 1, "vm": 4, "processCluster": 8})

    def kind(annotation, counting=False):
        obj = deployment(annotations={"entitle.dev/instance-kind": annotation} if annotation else {})
        return claim(vms, obj, table, counting=counting).spec.instance_kind

    assert kind("container") == "vm"                 # lowering: ignored, a VM counts 4
    assert kind("processCluster") == "processCluster"  # raising: taken
    assert kind(None) == "vm"
    # A typo reaches admission as written (denied UnknownInstanceKind); what already runs counts
    # as the source's kind, never as zero units.
    assert kind("vmm") == "vmm" and kind("vmm", counting=True) == "vm"


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
    # onlyUncontrolled no longer exempts anything: whether a controller covers an object is the
    # owner rule's question, and a reference is not believed for being there.
    bare = source("Pod", "", None, onlyUncontrolled=True)
    assert matches(bare, deployment()) and matches(bare, deployment(owner="rs-uid"))


POD, RS, DEPLOY, DS, RC = ("", "Pod"), ("apps", "ReplicaSet"), ("apps", "Deployment"), ("apps", "DaemonSet"), \
    ("", "ReplicationController")


def _ref(group_kind, name, uid):
    return ControllerRef(group_kind[0], group_kind[1], name, uid)


def test_a_controller_reference_is_believed_only_for_a_plausible_existing_counted_chain():
    watched = {
        "d": Watched("team-a", "apps", "Deployment", "web", True, None),
        "rs": Watched("team-a", "apps", "ReplicaSet", "web-1", False, _ref(DEPLOY, "web", "d")),
        "d0": Watched("team-a", "apps", "Deployment", "idle", True, None),
        "ds": Watched("team-a", "apps", "DaemonSet", "agent", False, None),
        "rc": Watched("team-a", "", "ReplicationController", "old", False, None),
        "cm": Watched("team-a", "", "ConfigMap", "cfg", False, None),
        "vm": Watched("team-a", "kubevirt.io", "VirtualMachine", "db", True, None),
    }
    kinds = {POD, RS, DEPLOY, ("kubevirt.io", "VirtualMachine")}

    def cov(child, ref, ns="team-a"):
        return covered(child, ns, ref, watched.get, kinds)

    assert cov(POD, _ref(RS, "web-1", "rs"))                      # Pod -> ReplicaSet -> counted Deployment
    assert cov(RS, _ref(DEPLOY, "web", "d"))
    assert not cov(POD, _ref(("", "ConfigMap"), "cfg", "cm"))     # a ConfigMap controls no Pod
    assert not cov(DEPLOY, _ref(DEPLOY, "idle", "d0"))            # nor a Deployment a Deployment
    assert not cov(POD, _ref(DS, "agent", "ds"))                  # real, but no source counts it: a Pod
    assert not cov(POD, _ref(RC, "old", "rc"))
    assert not cov(POD, _ref(RS, "web-1", "gone"))                # names nothing entitle sees
    assert not cov(POD, _ref(RS, "web-1", "rs"), ns="team-b")     # another namespace's object
    assert not cov(POD, _ref(RS, "other", "rs"))                  # the uid of another name
    assert not cov(POD, _ref(RS, "web", "d"))                     # the uid of another kind
    # A custom kind counted by a source may control anything (a vendor's operator).
    assert cov(DEPLOY, _ref(("kubevirt.io", "VirtualMachine"), "db", "vm"))
    assert plausible(POD, RS, ()) and not plausible(DEPLOY, DEPLOY, kinds)
    # Cycles and self-references end, unbelieved.
    loop = {"a": Watched("team-a", "apps", "ReplicaSet", "a", False, _ref(RS, "b", "b")),
            "b": Watched("team-a", "apps", "ReplicaSet", "b", False, _ref(RS, "a", "a"))}
    assert not covered(RS, "team-a", _ref(RS, "a", "a"), loop.get, {("apps", "ReplicaSet")})


def test_a_reference_of_a_watched_kind_not_seen_yet_is_awaited_briefly():
    ref = _ref(RS, "web-1", "new")
    assert awaited_owner(POD, ref, {}.get, {RS}, {RS})
    assert not awaited_owner(POD, _ref(("", "ConfigMap"), "c", "x"), {}.get, {RS}, {RS, ("", "ConfigMap")})
    assert not awaited_owner(POD, _ref(DS, "agent", "x"), {}.get, {RS}, {RS})     # DaemonSets are not watched
    assert controller_ref({"metadata": {"ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "n", "uid": "u", "controller": False},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "s", "uid": "v", "controller": True}]}}) == \
        ControllerRef("apps", "StatefulSet", "s", "v")
    assert controller_ref({"metadata": {"ownerReferences": "junk"}}) is None


def test_keys_never_collide_with_workloads():
    assert object_key("Workload", "entitle.dev", "web") == "web"
    assert object_key("Deployment", "apps", "web") == "Deployment.apps/web"
    assert object_key("Pod", "", "web") == "Pod.core/web"


def _admission(**license_spec):
    state = state_with(lic("base", **license_spec))
    return state, SharedAdmission(state, MemoryHoldStore(), timedelta(seconds=30))


def _decide(state, admission, obj, old=None, operation="CREATE", subresource=None, owners=None,
            known=lambda ns, key: None, sources=None):
    owners = owners or FakeOwners()
    owners.known = known
    request = source_request(state, sources or [source()], owners, operation=operation,
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
    vendor = ("example.com", "App")
    owners = FakeOwners({"parent": Watched("team-a", "example.com", "App", "o", True, None)},
                        source_kinds={("apps", "Deployment"), vendor})
    child = deployment("child", 9, owner="parent", owner_kind="App", owner_api="example.com/v1")
    assert _decide(state, admission, child, owners=owners) is None
    # The same reference naming a Deployment is not believed: the child counts and is denied.
    fake = deployment("fake", 9, owner="parent", owner_kind="Deployment", owner_api="apps/v1")
    denied = _decide(state, admission, fake, owners=owners)
    assert not denied.allowed and denied.reason == "InstanceCapExceeded"
    assert _decide(state, admission, deployment("other", 9), sources=[source(selector={"matchLabels": {"x": "y"}})]) is None
    # A scale of a watched, uncounted object: allowed untouched.
    assert _decide(state, admission, {"metadata": {"name": "rs"}, "spec": {"replicas": 50}}, subresource="scale",
                   operation="UPDATE", known=lambda ns, key: False) is None
    with pytest.raises(InvalidInstanceCount):
        _decide(state, admission, {**deployment("bad"), "spec": {"replicas": "many"}})
