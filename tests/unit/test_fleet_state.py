"""Fleet scale, at the unit level: the slim stored workload, the informer's memory of what it
listed, status that a restart does not rewrite, and the status pass's round robin."""

from __future__ import annotations

import asyncio

from entitle.adapters.kube.informer import Informer
from entitle.adapters.metering.ledger import Ledger
from entitle.adapters.webhook.admission import scale_request
from entitle.domain.sources import Source, claim
from entitle.domain.stored import StoredWorkload
from entitle.operator.finalizers import AddFinalizer, FinalizerQueue, ReleaseFinalizer
from tests.kube_double import KubeDouble
from tests.unit.builders import NOW, lic, make_controller, state_with, wl


def body(name: str, ns: str = "team-a", uid: str | None = None, **spec) -> dict:
    out = wl(name, ns, **spec).model_dump(by_alias=True, mode="json", exclude_none=True)
    out["metadata"].update(uid=uid or f"uid-{ns}-{name}", generation=1, resourceVersion="7",
                           creationTimestamp="2026-11-01T00:00:00Z")
    return out


def test_the_state_keeps_a_slim_workload_that_reads_and_rebuilds_like_the_model():
    state = state_with(lic("base", instances={"max": 100}, seats={"max": 10}))
    one = wl("a", replicas=2, users=["ann", "bob"], features=["sso"])
    one.metadata.uid, one.metadata.generation, one.metadata.labels = "u1", 3, {"team": "x"}
    two = wl("b", replicas=2, users=["ann", "bob"], features=["sso"])
    state.observe_workload(one)
    state.observe_workload(two)
    a, b = state.workload("team-a", "a"), state.workload("team-a", "b")
    assert isinstance(a, StoredWorkload)
    assert a.spec is b.spec, "equal specs are one object"
    assert state.footprint_of(a) is state.footprint_of(b)
    assert state.usage["acme"].units == 4 and state.usage["acme"].seats == 2
    assert a.to_model().model_dump() == one.model_dump(), "the full model comes back as it was"
    assert a.to_model() is not a.to_model()
    # A scale is built from the stored object: labels (CEL rules read them) and all.
    request = scale_request(a, {"spec": {"replicas": 5}}, None, "team-a", "a", False)
    assert request.workload.spec.replicas == 5 and request.workload.metadata.labels == {"team": "x"}
    assert request.old.spec.replicas == 2 and a.spec.replicas == 2, "the stored object is not touched"


def test_a_sourced_claim_keeps_its_own_kind_through_the_slim_record():
    source = Source(name="deploys", group="apps", version="v1", kind="Deployment", instance_kind="container",
                    selector=None, replicas_path=("spec", "replicas"), only_uncontrolled=False)
    made = claim(source, {"metadata": {"name": "web", "namespace": "team-a", "uid": "d1"}, "spec": {"replicas": 3}})
    kept = StoredWorkload.of(made)
    assert (kept.kind, kept.api_version) == ("Deployment", "apps/v1")
    again = kept.to_model()
    assert (again.kind, again.api_version, again.spec.replicas) == ("Deployment", "apps/v1", 3)


class Relisting:
    """A collection listed twice (the second list after a 410): ``u2`` is gone in between."""

    def __init__(self):
        self.lists = [[body("w1", uid="u1"), body("w2", uid="u2")], [body("w1", uid="u1")]]

    async def request(self, method, path, body=None, params=None, ok=(200,)):
        return 200, {"kind": "WorkloadList", "apiVersion": "entitle.dev/v1alpha1",
                     "metadata": {"resourceVersion": "9"}, "items": self.lists.pop(0)}


def test_the_informer_remembers_only_what_it_is_told_and_reports_what_vanished():
    events, vanished = [], []
    informer = Informer(Relisting(), "apis/entitle.dev/v1alpha1/workloads", lambda kind, b: events.append(kind),
                        remember=lambda b: b["metadata"]["name"], on_vanished=lambda uid, kept: vanished.append((uid, kept)))
    asyncio.run(informer._list())
    assert informer.known == {"u1": "w1", "u2": "w2"} and informer.listed_version == "9"
    asyncio.run(informer._list())
    assert vanished == [("u2", "w2")] and events == ["ADDED"] * 3 and informer.known == {"u1": "w1"}


def _controller(tmp_path, name):
    controller = make_controller(tmp_path / f"{name}.db", state=state_with(lic("base", instances={"max": 10})),
                                 clock=lambda: NOW)
    controller.set_leader(True)
    return controller


def test_a_vanished_workload_is_forgotten_and_metered_from_the_last_state_kept(tmp_path):
    controller = _controller(tmp_path, "v")
    controller.on_workload(body("w", uid="u9", replicas=3))
    assert controller.state.usage["acme"].units == 3
    controller.workloads.vanished("u9", ("team-a", "w"))
    assert controller.state.workload("team-a", "w") is None and controller.state.usage["acme"].units == 0
    controller.writer.barrier().result()
    deleted = [r for _, r in controller.ledger.read() if r["data"].get("operation") == "deleted"]
    assert [r["data"]["replicas"] for r in deleted] == [3], "the deletion carries the state kept, not defaults"
    controller.writer.close()


def test_a_restart_does_not_rewrite_status_that_is_already_stored(tmp_path):
    first = _controller(tmp_path, "first")
    first.on_workload(body("w", replicas=2))
    written = {args[1]: args[2] for kind, args in first.status.refresh(set(first.marks.tenants), NOW)
               if kind == "workload"}
    assert written["w"]["conditions"][0]["status"] == "True"
    first.writer.close()
    # The apiserver now stores that status; a new process lists the object with it.
    second = _controller(tmp_path, "second")
    stored = body("w", replicas=2)
    stored["status"] = written["w"]
    second.on_workload(stored)
    again = [args for kind, args in second.status.refresh(set(second.marks.tenants), NOW) if kind == "workload"]
    assert again == [] and second.events.queued == [], "nothing to write, nothing to announce"
    # ...and a status that differs is written.
    stored["status"] = {**written["w"], "units": 99}
    second.status.recompute_all()
    second.on_workload(stored)
    assert [args[1] for kind, args in second.status.refresh(set(second.marks.tenants), NOW)
            if kind == "workload"] == ["w"]
    second.writer.close()


def test_the_status_pass_takes_tenants_in_turn_when_one_has_a_backlog(tmp_path):
    state = state_with(lic("base", instances={"max": 100}), lic("small", tenant="beta", instances={"max": 5}),
                       namespaces={"team-a": "acme", "team-b": "beta"})
    controller = make_controller(tmp_path / "l.db", state=state, leader=True)
    for i in range(25):
        state.observe_workload(wl(f"w{i}", replicas=1))
    state.observe_workload(wl("b0", "team-b", replicas=1))
    order = []
    dirty = {"acme", "beta"}
    for _ in range(5):
        controller.marks.tenants = set()
        order.append(sorted(args[0] for kind, args in controller.status.refresh(dirty, NOW, budget=10)
                            if kind == "workload"))
        dirty = controller.marks.tenants
        if not dirty:
            break
    assert order[0] == ["team-a"] * 10, "the backlog uses the first slice"
    assert "team-b" in order[1], "the next slice starts with the tenant after it"
    assert sum(len(o) for o in order) == 26 and not dirty
    controller.writer.close()


class Pages:
    """Three pages; records when each was asked for, relative to the handling of the others."""

    def __init__(self, log):
        self.log = log

    async def request(self, method, path, body=None, params=None, ok=(200,)):
        page = int((params or {}).get("continue") or 0)
        self.log.append(f"get {page}")
        await asyncio.sleep(0)
        items = [body_of(f"w{page}{i}") for i in range(2)]
        meta = {"resourceVersion": "42"} if page == 2 else {"continue": str(page + 1)}
        return 200, {"kind": "WorkloadList", "apiVersion": "entitle.dev/v1alpha1", "metadata": meta, "items": items}


def body_of(name):
    return body(name, uid=f"uid-{name}")


def test_a_list_is_read_a_page_ahead_in_order_with_backpressure_between_pages():
    log = []

    async def after_page():
        log.append("after page")

    informer = Informer(Pages(log), "apis/entitle.dev/v1alpha1/workloads",
                        lambda kind, b: log.append(b["metadata"]["name"]), after_page=after_page)
    assert asyncio.run(informer._list()) == "42"
    names = [x for x in log if x.startswith("w")]
    assert names == ["w00", "w01", "w10", "w11", "w20", "w21"], "events in list order"
    # The next page is asked for before the current one is handled.
    assert log.index("get 1") < log.index("w00") and log.index("get 2") < log.index("w10")
    assert log.count("after page") == 3 and log[-1] == "after page"


def test_a_failed_finalizer_release_is_tried_again_until_it_goes(tmp_path, monkeypatch):
    """No later watch event may come for a Terminating Workload: a release that failed once
    must be retried, or the object stays Terminating until the operator restarts."""
    import entitle.operator.finalizers as finalizers
    from entitle.adapters.metering.ledger import LedgerWriter

    monkeypatch.setattr(finalizers, "FINALIZER_RETRY_SECONDS", (0.01, 0.05))
    api = KubeDouble()
    api.fail_next(3)      # a 500 from a webhook whose replica was killed, say
    writer = LedgerWriter(Ledger(tmp_path / "l.db"))
    queue = FinalizerQueue(api, writer)

    async def scenario():
        queue.start()
        queue.queue([ReleaseFinalizer("team-a", "w", ["entitle.dev/usage-record"]), AddFinalizer("team-a", "v", [], "7")])
        for _ in range(500):
            if len(api.calls) >= 5 and not queue.failures:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)       # longer than the longest retry delay: any stray retry shows
        await queue.stop()
        return api.calls

    calls = asyncio.run(scenario())
    assert len(calls) == 5, calls     # 3 failures, then each once more and never again
    # Both went through in the end, and nothing is retried after success.
    assert calls[-2:] in ([("remove", "team-a", "w"), ("add", "team-a", "v")],
                          [("add", "team-a", "v"), ("remove", "team-a", "w")])
    assert queue.failures == 0
    writer.close()


def test_expiring_reservations_visits_only_held_names_and_releases_exactly_the_expired():
    from datetime import timedelta

    from entitle.domain.state import Reservation, footprint

    state = state_with(lic("base", instances={"max": 1000}))
    for i in range(50):                               # a fleet that holds nothing
        state.observe_workload(wl(f"w{i}", replicas=1))
    stored = wl("grown", replicas=2)
    stored.metadata.uid, stored.metadata.generation = "u-grown", 1
    state.observe_workload(stored)

    def held(replicas, seconds, uid=None, generation=None):
        return Reservation(footprint(wl("x", replicas=replicas).spec, state.table), NOW + timedelta(seconds=seconds),
                           uid, generation)

    state.add_reservation("acme", ("team-a", "never-stored"), held(5, 10))       # admitted, never appeared
    state.add_reservation("acme", ("team-a", "grown"), held(7, 10, "u-grown", 2))  # a scale not seen yet
    state.add_reservation("acme", ("team-a", "later"), held(3, 60))              # still live
    assert state.usage["acme"].units == 50 + 7 + 5 + 3
    assert state.expire_reservations(NOW + timedelta(seconds=5)) == 0
    assert state.usage["acme"].units == 65
    assert state.expire_reservations(NOW + timedelta(seconds=30)) == 2
    assert state.usage["acme"].units == 50 + 2 + 3, "the stored count comes back; the live hold stays"
    assert state.workload("team-a", "never-stored") is None and ("team-a", "never-stored") not in state.workloads
    assert state.expire_reservations(NOW + timedelta(seconds=90)) == 1 and state.usage["acme"].units == 52
    assert not any(state._held_keys.values()), "settled names leave the index"
