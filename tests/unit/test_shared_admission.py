"""Two webhook replicas (two states) sharing holds never over-admit, whatever the interleaving."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from entitle.adapters.webhook.admission import SharedAdmission
from entitle.adapters.kube.holds import MemoryHoldStore
from tests.unit.builders import NOW, lic, state_with, wl


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now


def _replicas(store, clock=None, **spec):
    clock = clock or Clock()
    return [SharedAdmission(state_with(lic("base", **spec)), store, timedelta(seconds=30), wall_clock=clock)
            for _ in range(2)]


async def _create(replica, name, **spec):
    body = wl(name, **spec).model_dump(by_alias=True, mode="json")
    await asyncio.sleep(0)   # let the other replica's requests interleave
    _, decision = await replica.review(NOW, operation="CREATE", subresource=None, body=body, old=None, dry_run=False)
    return decision


def test_200_concurrent_creates_against_a_cap_of_50_admit_exactly_50():
    store = MemoryHoldStore()
    replicas = _replicas(store, instances={"max": 50})

    async def run():
        return await asyncio.gather(*[_create(replicas[i % 2], f"w{i}", replicas=1) for i in range(200)])

    decisions = asyncio.run(run())
    assert sum(d.allowed for d in decisions) == 50
    denied = [d for d in decisions if not d.allowed]
    assert {d.reason for d in denied} <= {"InstanceCapExceeded", "ReservationConflict"}
    assert store.conflicts > 0, "the two replicas raced for the same headroom"


def test_seat_races_with_overlapping_users_never_exceed_the_seat_cap():
    store = MemoryHoldStore()
    replicas = _replicas(store, seats={"max": 5})
    rnd = random.Random(3)
    pool = [f"u{i}" for i in range(10)]

    async def run():
        return await asyncio.gather(*[_create(replicas[i % 2], f"w{i}", users=rnd.sample(pool, 2)) for i in range(60)])

    decisions = asyncio.run(run())
    # Every replica's view, with the shared holds, stays within 5 distinct users.
    for replica in replicas:
        replica.state.replace_reservations("acme", store.read("acme").entries, NOW)
        assert replica.state.usage["acme"].seats <= 5
    assert sum(d.allowed for d in decisions) >= 2


def test_dry_run_never_writes_a_hold():
    store = MemoryHoldStore()
    replicas = _replicas(store, instances={"max": 2})

    async def run():
        body = wl("w", replicas=2).model_dump(by_alias=True, mode="json")
        for replica in replicas:
            for _ in range(5):
                _, d = await replica.review(NOW, operation="CREATE", subresource=None, body=body, old=None, dry_run=True)
                assert d.allowed
        return await _create(replicas[1], "real", replicas=2)

    assert asyncio.run(run()).allowed
    assert list(store.read("acme").entries) == [("team-a", "real")]


def test_expired_holds_release_capacity():
    store = MemoryHoldStore()
    clock = Clock()
    a, b = _replicas(store, clock, instances={"max": 1})

    async def run():
        assert (await _create(a, "never-stored", replicas=1)).allowed
        assert not (await _create(b, "other", replicas=1)).allowed
        clock.now = NOW + timedelta(seconds=31)
        _, late = await b.review(NOW, operation="CREATE", subresource=None,
                                 body=wl("other", replicas=1).model_dump(by_alias=True, mode="json"),
                                 old=None, dry_run=False)
        return late

    assert asyncio.run(run()).allowed


def test_burst_races_admit_exactly_max_plus_extra():
    store = MemoryHoldStore()
    replicas = _replicas(store, instances={"max": 10, "burst": {"extra": 5, "window": "1h"}})

    async def run():
        return await asyncio.gather(*[_create(replicas[i % 2], f"w{i}", replicas=1) for i in range(40)])

    decisions = asyncio.run(run())
    assert sum(d.allowed for d in decisions) == 15
    assert sum(any("bursting" in w for w in d.warnings) for d in decisions if d.allowed) == 5


def test_settled_holds_leave_the_shared_object_after_the_settle_window_and_not_before():
    store = MemoryHoldStore()
    clock = Clock()
    replica = SharedAdmission(state_with(lic("base", instances={"max": 50})), store, timedelta(seconds=30),
                              wall_clock=clock, settle=timedelta(seconds=5))

    async def create(name):
        body = wl(name, replicas=1).model_dump(by_alias=True, mode="json")
        body["metadata"]["uid"] = f"uid-{name}"  # the apiserver sets it before admission
        return await replica.review(NOW, operation="CREATE", subresource=None, body=body, old=None, dry_run=False)

    (_, first) = asyncio.run(create("w1"))
    assert first.allowed and set(store.read("acme").entries) == {("team-a", "w1")}
    # The watch delivers w1 as stored (same uid and generation as the hold).
    held = store.read("acme").entries[("team-a", "w1")]
    stored = wl("w1", replicas=1)
    stored.metadata.uid, stored.metadata.generation = held.uid, held.generation
    replica.state.observe_workload(stored)

    asyncio.run(create("w2"))           # settled just now: still carried for peers
    assert ("team-a", "w1") in store.read("acme").entries
    clock.now += timedelta(seconds=4)
    asyncio.run(create("w3"))
    assert ("team-a", "w1") in store.read("acme").entries
    clock.now += timedelta(seconds=2)   # settled for 6 s > 5 s
    asyncio.run(create("w4"))
    entries = store.read("acme").entries
    assert ("team-a", "w1") not in entries
    assert {("team-a", "w2"), ("team-a", "w3"), ("team-a", "w4")} <= set(entries), "unsettled holds stay"
    assert replica.state.usage["acme"].units == 4


def test_a_scale_of_a_workload_the_watch_has_not_delivered_yet_waits_for_it():
    """Created through the other replica a moment ago: this replica's watch lags. The scale
    waits for the watch (no API read), then is decided normally."""
    state = state_with(lic("base", instances={"max": 10}))
    admission = SharedAdmission(state, MemoryHoldStore(), timedelta(seconds=30))
    stored = wl("late", replicas=1)
    stored.metadata.uid, stored.metadata.generation = "uid-late", 1

    async def run():
        async def watch_delivers():
            await asyncio.sleep(0.3)
            state.observe_workload(stored)

        asyncio.ensure_future(watch_delivers())
        return await admission.review(NOW, operation="UPDATE", subresource="scale", namespace="team-a", name="late",
                                      body={"spec": {"replicas": 3}}, old={"spec": {"replicas": 1}}, dry_run=False)

    _, decision = asyncio.run(run())
    assert decision.allowed

    admission.watch_wait_seconds = 0.1
    from entitle.adapters.webhook.admission import NotYetKnown

    async def never():
        return await admission.review(NOW, operation="UPDATE", subresource="scale", namespace="team-a", name="ghost",
                                      body={"spec": {"replicas": 3}}, old=None, dry_run=False)

    try:
        asyncio.run(never())
    except NotYetKnown as exc:
        assert "retry" in str(exc)
    else:
        raise AssertionError("a workload nobody ever stored must not be admitted")
