"""Per-class guarantee (a): any object the CRD schema admits -- extreme dates, durations and
integers included -- can neither stop start-up nor any loop, and affects only its own tenant.

Licenses and Workloads are generated from the CRDs' own schemas (tests/strategies.py) and fed
through the operator's controller exactly as watch events would be: the state, the status
pass, the usage records, the metrics and the export's meters. The engine must handle every
one of them itself: the controller's error boundaries (which would hide a crash as a logged
error) must not even be reached.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitle.api.limits import saturating_add
from entitle.domain.meters import Metering, to_event
from entitle.domain.state import ClusterState, WorkloadRequest
from entitle.operator import metrics
from entitle.operator.config import OperatorConfig
from tests.strategies import crd_schema, from_schema
from tests.unit.builders import make_controller

pytestmark = pytest.mark.hostile  # the project's hostile-input suite: pytest -m hostile

TENANTS = ["acme", "beta", "x" * 63, "Ünïcode-tenant"]
SAFE = "safe-tenant"


def _meta(namespace: str | None = None) -> st.SearchStrategy:
    # A few names, so some objects are updates of others (same name, maybe another uid).
    meta = {"name": st.sampled_from([f"obj-{n}" for n in range(5)]), "uid": st.uuids().map(str),
            "generation": st.integers(1, 2**31),
            "creationTimestamp": st.sampled_from(["2026-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
                                                  "9999-12-31T23:59:59Z"])}
    if namespace is not None:
        meta["namespace"] = st.sampled_from([f"ns-{t}" for t in range(len(TENANTS))] + ["unlabeled"])
    return st.fixed_dictionaries(meta)


def licenses() -> st.SearchStrategy:
    return st.builds(lambda body, meta: {**body, "apiVersion": "entitle.dev/v1alpha1", "kind": "License",
                                         "metadata": meta},
                     from_schema(crd_schema("License"), {"spec.tenant": st.sampled_from(TENANTS),
                                                         "metadata": st.just({})}),
                     _meta())


def workloads() -> st.SearchStrategy:
    names = st.sampled_from(["sso", "audit", "x", "é"])
    return st.builds(lambda body, meta: {**body, "apiVersion": "entitle.dev/v1alpha1", "kind": "Workload",
                                         "metadata": meta},
                     from_schema(crd_schema("Workload"), {
                         "spec.features[]": names, "spec.users[]": st.sampled_from(["ann", "bob", "cy"]),
                         "spec.instanceKind": st.sampled_from(["container", "vm", "processCluster", "gpu"]),
                         "metadata": st.just({})}),
                     _meta(namespace="x"))


def _safe_license() -> dict:
    return {"apiVersion": "entitle.dev/v1alpha1", "kind": "License",
            "metadata": {"name": "safe", "uid": "safe-uid", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"tenant": SAFE, "instances": {"max": 10}, "seats": {"max": 3}, "features": [{"name": "sso"}],
                     "rules": [{"name": "small", "expression": "workload.spec.replicas <= 8"}]}}


def _safe_decisions(state: ClusterState, now: datetime) -> list[tuple]:
    from entitle.api import Workload

    out = []
    for replicas, users, features in ((4, ["a"], ["sso"]), (9, [], []), (11, [], []), (1, ["a", "b", "c", "d"], [])):
        workload = Workload.model_validate({"metadata": {"name": "probe", "namespace": "safe-ns", "uid": "p"},
                                            "spec": {"replicas": replicas, "users": users, "features": features}})
        decision = state.decide(WorkloadRequest("CREATE", "safe-ns", "probe", workload, None, True), now)
        out.append((decision.allowed, decision.reason, decision.message))
    return out


NOWS = st.sampled_from([datetime(2026, 11, 27, 12, tzinfo=timezone.utc), datetime(1, 1, 3, tzinfo=timezone.utc),
                        datetime(9999, 12, 29, tzinfo=timezone.utc), datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc)])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(licenses(), max_size=4), st.lists(workloads(), max_size=6), NOWS, st.booleans())
def test_any_schema_valid_license_or_workload_is_harmless(lics, wls, now, restart_order):
    cfg = OperatorConfig()
    state = ClusterState(cfg.instance_table())
    controller = make_controller(state=state, cfg=cfg, clock=lambda: now)     # the controller's clock, pinned
    errors_before = (metrics.OBJECT_ERRORS.labels(kind="License")._value.get(),
                     metrics.OBJECT_ERRORS.labels(kind="Workload")._value.get(),
                     metrics.STATUS_ERRORS._value.get())
    try:
        controller.on_namespace({"metadata": {"name": "safe-ns", "labels": {"entitle.dev/tenant": SAFE}}})
        for i, tenant in enumerate(TENANTS):
            controller.on_namespace({"metadata": {"name": f"ns-{i}", "labels": {"entitle.dev/tenant": tenant}}})
        controller.on_namespace({"metadata": {"name": "unlabeled"}})
        controller.on_license(_safe_license())
        baseline = _safe_decisions(state, now)
        # Start-up order (licenses first) or watch order (interleaved): both must hold.
        events = ([("l", b) for b in lics] + [("w", b) for b in wls]) if restart_order else \
            [e for pair in itertools.zip_longest([("l", b) for b in lics], [("w", b) for b in wls]) for e in pair if e]
        for kind, body in events:
            if kind == "l":
                controller.on_license(body)
            else:
                controller.on_workload(body)
        controller.leader = True
        writes = controller.status.refresh(set(state.tenants()), now)
        writes += controller.status.refresh(set(state.tenants()), saturating_add(now, timedelta(days=40)))
        for kind, body in events:   # an update of each, then a deletion
            (controller.on_license if kind == "l" else controller.on_workload)(body, deleted=True)
        assert _safe_decisions(state, now) == baseline, "another tenant's objects changed the safe tenant's decisions"
        # Every status written fits the status schema's integers (int64).
        for _, args in writes:
            for pool in ("instances", "seats"):
                for value in ((args[-1].get(pool) or {}).get(k) for k in ("used", "max", "burstExtra")):
                    assert value is None or -(2**63) <= value < 2**63
        # Every record the controller produced goes through the export's meters.
        controller.writer.barrier().result(timeout=30)
        records = [r for _, r in controller.ledger.read()]
        metering = Metering(0, 2**40)
        for event in sorted(filter(None, (to_event(r) for r in records)), key=lambda e: e.sort_key()):
            metering.feed(event)
        metering.finish()
        after = (metrics.OBJECT_ERRORS.labels(kind="License")._value.get(),
                 metrics.OBJECT_ERRORS.labels(kind="Workload")._value.get(),
                 metrics.STATUS_ERRORS._value.get())
        assert after == errors_before, "a schema-valid object reached an error boundary (see the log)"
    finally:
        controller.writer.close()


def sourced_objects() -> st.SearchStrategy:
    text = st.text(max_size=30)
    annotations = st.dictionaries(st.sampled_from(["entitle.dev/users", "entitle.dev/features", "entitle.dev/guests",
                                                   "entitle.dev/instance-kind", "other"]), text, max_size=4)
    count = st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=True), text, st.none(), st.booleans(),
                      st.lists(st.integers(), max_size=2))
    return st.fixed_dictionaries({
        "apiVersion": st.just("apps/v1"), "kind": st.just("Deployment"),
        "metadata": st.fixed_dictionaries({
            "name": st.sampled_from(["a", "b", "c"]), "namespace": st.sampled_from(["ns-0", "ns-1", "unlabeled"]),
            "uid": st.sampled_from(["u1", "u2", "u3", "u4"]), "generation": st.integers(1, 2**31),
            "creationTimestamp": st.sampled_from(["2026-01-01T00:00:00Z", "0001-01-01T00:00:00Z"]),
            "annotations": annotations, "labels": st.dictionaries(st.sampled_from(["app", "tier"]), text, max_size=2),
            "ownerReferences": st.lists(st.fixed_dictionaries({"uid": st.sampled_from(["u1", "u2", "x"]),
                                                               "controller": st.booleans()}), max_size=2)}),
        "spec": st.fixed_dictionaries({}, optional={"replicas": count, "parallelism": count}),
    })


@settings(max_examples=int(__import__("os").environ.get("ENTITLE_EXAMPLES", "80")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(from_schema(crd_schema("InstanceSource")["properties"]["spec"], {
           "resource": st.just({"group": "apps", "version": "v1", "kind": "Deployment"})}), min_size=1, max_size=3),
       st.lists(st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), sourced_objects()), max_size=10))
def test_any_instance_source_and_any_sourced_object_is_harmless(specs, events):
    now = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    controller = make_controller(clock=lambda: now)
    before = (metrics.OBJECT_ERRORS.labels(kind="Deployment")._value.get(),
              metrics.OBJECT_ERRORS.labels(kind="InstanceSource")._value.get())
    try:
        for i, tenant in enumerate(TENANTS[:2]):
            controller.on_namespace({"metadata": {"name": f"ns-{i}", "labels": {"entitle.dev/tenant": tenant}}})
        for i, spec in enumerate(specs):
            controller.on_source({"metadata": {"name": f"s{i}", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": spec})
        for event, body in events:
            controller.sourced.on_sourced(("apps", "v1", "Deployment"), event, body)
        controller.leader = True
        controller.status.refresh(set(controller.state.tenants()), now)
        controller.source_duties.statuses(now)
        after = (metrics.OBJECT_ERRORS.labels(kind="Deployment")._value.get(),
                 metrics.OBJECT_ERRORS.labels(kind="InstanceSource")._value.get())
        assert after == before, "a source or a sourced object reached an error boundary (see the log)"
        for (ns, key), entry in controller.state.workloads.items():
            assert entry.held.units >= 0
    finally:
        controller.writer.close()
