"""Two webhook replicas (two states) sharing holds never over-admit, whatever the interleaving."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from entitle.adapters.webhook.shared_admission import SharedAdmission
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
        replica.state.replace_reservations("acme", store.peek("acme").entries, NOW)
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
    assert list(store.peek("acme").entries) == [("team-a", "real")]


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


def _stored(state, name, replicas=1, **spec):
    """The watch delivering an admitted object as stored."""
    w = wl(name, replicas=replicas, **spec)
    w.metadata.uid, w.metadata.generation = f"uid-{name}", 1
    state.observe_workload(w)


async def _create_uid(replica, name, **spec):
    body = wl(name, **spec).model_dump(by_alias=True, mode="json")
    body["metadata"]["uid"] = f"uid-{name}"   # the apiserver sets it before admission
    _, decision = await replica.review(NOW, operation="CREATE", subresource=None, body=body, old=None, dry_run=False)
    return decision


def test_escrow_pays_most_admissions_from_memory():
    store = MemoryHoldStore()
    replica = SharedAdmission(state_with(lic("base", instances={"max": 10_000})), store, timedelta(seconds=30),
                              wall_clock=Clock())

    async def run():
        for i in range(200):
            assert (await _create_uid(replica, f"w{i}", replicas=1)).allowed
            _stored(replica.state, f"w{i}")

    asyncio.run(run())
    assert store.writes <= 12, f"{store.writes} writes for 200 admissions (chunks double while used up)"
    assert replica.state.usage["acme"].units == 200
    grants = store.peek("acme").grants
    assert grants and all(g.replica == replica.replica for g in grants)


def test_an_uncapped_tenant_writes_nothing():
    store = MemoryHoldStore()
    replica = SharedAdmission(state_with(lic("base", features=[{"name": "sso"}])), store, timedelta(seconds=30))

    async def run():
        return [await _create_uid(replica, f"w{i}", replicas=3, users=[f"u{i}"], features=["sso"]) for i in range(50)]

    assert all(d.allowed for d in asyncio.run(run()))
    assert getattr(store, "writes", 0) == 0


def test_idle_grants_are_returned_so_the_last_units_are_not_stranded():
    """200 concurrent creates over two replicas against a cap of 50 admit exactly 50 -- grants
    near the cap are closed (shrunk to what was spent) and provisional denials decided again."""
    store = MemoryHoldStore()
    replicas = _replicas(store, instances={"max": 50})

    async def run():
        results = await asyncio.gather(*[_create(replicas[i % 2], f"w{i}", replicas=1) for i in range(200)])
        return results, [r.writes for r in replicas]

    decisions, writes = asyncio.run(run())
    assert sum(d.allowed for d in decisions) == 50
    assert sum(writes) < 50, "escrow: fewer writes than admissions even when racing to the cap"


def test_seats_and_feature_limits_under_escrow_with_two_replicas():
    store = MemoryHoldStore()
    replicas = _replicas(store, seats={"max": 20}, features=[{"name": "sso", "limit": {"workloads": 7}}])

    async def run():
        return await asyncio.gather(*[_create(replicas[i % 2], f"w{i}", users=[f"u{i}"], features=["sso"])
                                      for i in range(60)])

    decisions = asyncio.run(run())
    assert sum(d.allowed for d in decisions) == 7        # the feature limit binds first
    for replica in replicas:
        assert replica.state.usage["acme"].feature_count("sso") <= 7


def test_a_replica_killed_holding_escrow_never_lets_the_survivor_over_admit():
    """A takes a grant and dies with part of it unspent. B, which counts A's whole grant until
    it lapses, refuses what only A's grant is short of with a retryable ReservationConflict
    (never a cap denial, whose numbers would count units nobody holds); once the grant lapses --
    lease + webhook timeout + watch margin after B first saw it, well before it expires -- B
    admits exactly up to the cap, counting what A really admitted."""
    store, clock = MemoryHoldStore(), Clock()
    a, b = _replicas(store, clock, instances={"max": 100})
    b.peer_wait_seconds = 0.2

    async def run():
        for i in range(3):
            assert (await _create_uid(a, f"a{i}", replicas=1)).allowed
        grant = store.peek("acme").grants[0]
        assert grant.replica == a.replica and grant.units > 3 and grant.lapse == 2 + 5 + 2.5
        # A is SIGKILLed here (nothing of it runs any more, its idle-grant closer included).
        # Its three admissions reach B's watch; its grant stays counted.
        a.close()
        for i in range(3):
            _stored(b.state, f"a{i}")
        admitted, refusal = 0, None
        for i in range(200):
            decision = await _create_uid(b, f"b{i}", replicas=1)
            if not decision.allowed:
                refusal = decision
                break
            admitted += 1
            _stored(b.state, f"b{i}")
        assert 3 + admitted + grant.units <= 100 + 3, "B never takes what A's live grant covers"
        assert refusal.reason == "ReservationConflict" and refusal.retry_after >= 1, refusal
        assert f"instances {grant.units}" in refusal.message and "would exceed" not in refusal.message
        clock.now = NOW + timedelta(seconds=9)              # not lapsed yet: still refused
        assert not (await _create_uid(b, "early", replicas=1)).allowed
        clock.now = NOW + timedelta(seconds=9.6)            # lapsed; it expires only at +30 s
        for i in range(200, 400):
            decision = await _create_uid(b, f"b{i}", replicas=1)
            if not decision.allowed:
                refusal = decision
                break
            admitted += 1
            _stored(b.state, f"b{i}")
        return admitted, refusal

    admitted, refusal = asyncio.run(run())
    assert 3 + admitted == 100, "after the lapse the survivor admits exactly up to the cap"
    assert refusal.reason == "InstanceCapExceeded" and "instances 100 + 1 would exceed 100" in refusal.message


def test_a_lapse_is_measured_from_each_replica_s_own_first_sight():
    """C reads the hold object for the first time 5 s after A wrote its grant: C counts the
    grant for the full lapse from then (its own clock), while B, which saw it at once, has
    stopped -- no replica compares its clock with the writer's."""
    store, clock = MemoryHoldStore(), Clock()
    a, b = _replicas(store, clock, instances={"max": 40})
    c = SharedAdmission(state_with(lic("base", instances={"max": 40})), store, timedelta(seconds=30), wall_clock=clock)

    async def look(replica):
        body = wl("probe", replicas=1).model_dump(by_alias=True, mode="json")
        await replica.review(clock.now, operation="CREATE", subresource=None, body=body, old=None, dry_run=True)

    async def run():
        assert (await _create_uid(a, "a0", replicas=1)).allowed
        a.close()
        grant = store.peek("acme").grants[0]
        await look(b)                                   # B first sees A's grant at NOW
        clock.now = NOW + timedelta(seconds=5)
        await look(c)                                   # C first sees it at NOW + 5 s

        def counted(replica, seconds):
            clock.now = NOW + timedelta(seconds=seconds)
            return grant in replica._peer_grants(store.peek("acme"), clock.now)

        return grant, [counted(b, 9.4), counted(b, 9.5), counted(c, 14.4), counted(c, 14.5)]

    grant, seen = asyncio.run(run())
    assert grant.replica == a.replica and grant.units
    assert seen == [True, False, True, False]


def test_a_holder_pays_from_a_grant_only_within_its_lease():
    """Past its lease (2 s) a grant pays nothing: the next admission writes a new grant."""
    store, clock = MemoryHoldStore(), Clock()
    a, _ = _replicas(store, clock, instances={"max": 1000})

    async def run():
        assert (await _create_uid(a, "w0", replicas=1)).allowed
        writes = a.writes
        clock.now = NOW + timedelta(seconds=1.9)
        assert (await _create_uid(a, "w1", replicas=1)).allowed
        assert a.writes == writes, "within the lease: paid from memory"
        clock.now = NOW + timedelta(seconds=2.1)
        assert (await _create_uid(a, "w2", replicas=1)).allowed
        assert a.writes == writes + 1, "past the lease: a new grant is written"

    asyncio.run(run())


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
