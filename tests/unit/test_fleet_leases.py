"""Fleet capacity leases (domain.fleet) without a server: members with their own monotonic
clocks (offsets of minutes apart; wall clocks never enter), a hub that only compare-and-swaps,
partitions, restarts and shrinking -- and at every step, the sum of what every member may spend
stays within the fleet cap."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import pytest

from entitle.domain.fleet import (Book, Entry, FleetCapExceeded, HeldLease, Sightings, counted, cover, grow, join,
                                  renew, report_usage, shrink)

CAP, PERIOD, GRACE, CHUNK = 50, 30, 10, 4


class Hub:
    """The hub's object for one tenant: compare-and-swap on a version."""

    def __init__(self) -> None:
        self.book, self.writes = Book("acme", "1"), 0

    def read(self) -> Book:
        return self.book

    def write(self, book: Book) -> bool:
        if book.version != self.book.version:
            return False
        self.writes += 1
        self.book = replace(book, version=str(int(self.book.version) + 1))
        return True


@dataclass
class Member:
    name: str
    offset: float                               # its monotonic clock = world time + offset
    floor: int = 0
    lease: HeldLease = field(default_factory=HeldLease)
    sightings: Sightings = field(default_factory=Sightings)
    cut_off: bool = False
    used: int = 0                               # units admitted and running (never deleted)

    def now(self, world: float) -> float:
        return world + self.offset

    def spendable(self, world: float) -> int:
        return self.lease.spendable("instances", self.now(world))

    def write(self, hub: Hub, world: float, change) -> bool:
        if self.cut_off:
            return False
        book = hub.read()
        self.sightings.see(book, self.now(world))
        sent = self.now(world)
        try:
            new = report_usage(change(book), self.name, {"instances": self.used})
        except FleetCapExceeded:
            return False
        if not hub.write(new):
            return False
        self.lease.stored(new.entries[self.name], sent)
        return True

    def admit(self, hub: Hub, world: float, units: int) -> bool:
        """Admit from the lease; grow it first (one hub write) when it does not cover."""
        if self.used + units > self.spendable(world):
            self.write(hub, world, lambda b: grow(b, self.name, "instances", self.used + units, CHUNK, CAP,
                                                   self.sightings, self.now(world), GRACE))
        if self.used + units <= self.spendable(world):
            self.used += units
            return True
        return False


def _members(n: int, rng: random.Random) -> list[Member]:
    # Monotonic clocks start anywhere: offsets of up to ten minutes either way.
    return [Member(f"c{i}", rng.uniform(-600, 600), floor=3) for i in range(n)]


def test_a_lapsed_entry_keeps_its_floor_or_the_usage_it_reported_counted():
    sightings = Sightings()
    entry = Entry("a", {"instances": 20}, {"instances": 2}, renewals=3, period=PERIOD, usage={"instances": 8})
    sightings.see(Book("acme", "1", {"a": entry}), 0.0)
    assert counted(entry, "instances", sightings, PERIOD + GRACE - 0.1, GRACE) == 20
    assert counted(entry, "instances", sightings, PERIOD + GRACE, GRACE) == 8
    idle = Entry("b", {"instances": 20}, {"instances": 2}, renewals=1, period=PERIOD, usage={"instances": 0})
    sightings.see(Book("acme", "2", {"b": idle}), 0.0)
    assert counted(idle, "instances", sightings, PERIOD + GRACE, GRACE) == 2


def test_members_join_with_floors_that_never_exceed_the_cap():
    hub = Hub()
    members = [Member(f"c{i}", 0.0, floor=20) for i in range(4)]
    for m in members:
        assert m.write(hub, 0.0, lambda b, m=m: join(b, m.name, {"instances": m.floor}, {"instances": CAP}, PERIOD))
    floors = [hub.book.entries[m.name].floor["instances"] for m in members]
    assert floors == [20, 20, 10, 0] and sum(floors) == CAP


@pytest.mark.parametrize("seed", range(12))
def test_the_sum_of_what_members_may_spend_never_exceeds_the_cap(seed):
    rng = random.Random(seed)
    hub, world = Hub(), 0.0
    members = _members(3, rng)
    for m in members:
        m.write(hub, world, lambda b, m=m: join(b, m.name, {"instances": m.floor}, {"instances": CAP}, PERIOD))
    worst = 0
    for _ in range(3000):
        world += rng.choice([0.1, 0.5, 1.0, 3.0, 7.0])
        m = rng.choice(members)
        roll = rng.random()
        if roll < 0.05:
            m.cut_off = not m.cut_off                        # a partition starts or heals
        elif roll < 0.5:
            m.admit(hub, world, rng.randint(1, 3))
        elif roll < 0.6:
            m.used = max(0, m.used - rng.randint(1, 5))      # workloads deleted
        elif roll < 0.7:
            usage = {"instances": m.used}
            m.lease.restrict({"instances": max(m.floor, m.used + CHUNK)})
            m.write(hub, world, lambda b: shrink(b, m.name, usage, CHUNK))
        elif roll < 0.85:
            m.write(hub, world, lambda b: renew(b, m.name))
        elif roll < 0.95:                                    # a renewal taking back what it runs
            m.write(hub, world, lambda b: cover(renew(b, m.name), m.name, {"instances": m.used}, {"instances": CAP},
                                                m.sightings, m.now(world), GRACE))
        else:
            m.lease = HeldLease()                            # a restart: it knows nothing until it writes
            m.sightings = Sightings()
        total = sum(x.spendable(world) for x in members)
        worst = max(worst, total)
        assert total <= CAP, [(x.name, x.spendable(world), x.cut_off) for x in members]
    assert worst >= CAP - 3 * CHUNK       # the cap is actually used, not merely respected


def test_a_cut_off_member_spends_its_lease_then_its_floor_and_its_share_moves_only_after_the_grace():
    hub = Hub()
    a, b = Member("a", 100.0, floor=5), Member("b", -250.0, floor=5)   # clocks minutes apart
    for m in (a, b):
        m.write(hub, 0.0, lambda bk, m=m: join(bk, m.name, {"instances": 5}, {"instances": CAP}, PERIOD))
    assert a.admit(hub, 1.0, 30) and a.spendable(1.0) == 34          # grew to 30 + chunk
    b.write(hub, 2.0, lambda bk: renew(bk, "b"))                      # b sees a's lease
    a.cut_off = True
    # a keeps admitting within its lease until it lapses on a's own clock ...
    assert a.admit(hub, 20.0, 4) and not a.admit(hub, 20.0, 1)
    assert a.spendable(1.0 + PERIOD + 0.01) == 5                      # then its floor only
    # ... while b cannot have a's share before period + grace after it first saw a's renewal.
    assert not b.admit(hub, 2.0 + PERIOD + GRACE - 0.5, 20)
    assert b.spendable(2.0 + PERIOD + GRACE - 0.5) <= CAP - 34
    assert b.admit(hub, 2.0 + PERIOD + GRACE + 0.5, 20)
    assert hub.book.entries["a"].amount["instances"] == 5             # reclaimed to its floor in the hub
    # Healed: a reads its lease cut to its floor; its 34 running units are over it (never deleted).
    a.cut_off = False
    assert not a.admit(hub, 60.0, 1) and a.used == 34 and a.spendable(60.0) < a.used
    # Rebalanced: a's renewal takes back what it runs as far as the cap has room (b holds 5 + 20
    # + a chunk), and all of it once b gives back what it no longer runs.
    covering = lambda bk: cover(renew(bk, "a"), "a", {"instances": a.used}, {"instances": CAP},  # noqa: E731
                                a.sightings, a.now(61.0), GRACE)
    assert a.write(hub, 61.0, covering) and a.spendable(61.0) == CAP - hub.book.entries["b"].of("instances") < a.used
    b.used = 0
    b.lease.restrict({"instances": 5})                                 # its floor: 0 + a chunk is less
    assert b.write(hub, 62.0, lambda bk: shrink(bk, "b", {"instances": 0}, CHUNK))
    assert a.write(hub, 63.0, covering) and a.spendable(63.0) == a.used == 34
    assert sum(e.of("instances") for e in hub.book.entries.values()) <= CAP
    assert hub.book.entries["b"].of("instances") == 5
    # ... and new demand grows as before, up to what the cap leaves.
    assert not a.admit(hub, 63.0, CAP - 5 - 34 + 1) and a.admit(hub, 63.0, CAP - 5 - 34)


def test_the_hub_store_round_trips_refuses_stale_writes_and_reads_a_hand_edited_book_as_corrupt():
    import asyncio

    from entitle.adapters.kube.fleet_leases import LeaseConflict, MemoryLeaseStore, decode, encode

    async def run():
        store = MemoryLeaseStore()
        empty = await store.read("acme")
        first = await store.write(join(empty, "eu", {"instances": 5}, {"instances": CAP}, PERIOD))
        with pytest.raises(LeaseConflict):            # a second member decided against the old version
            await store.write(join(empty, "us", {"instances": 5}, {"instances": CAP}, PERIOD))
        again = await store.read("acme")
        assert again.entries == first.entries and again.version == first.version
        return again

    book = asyncio.run(run())
    assert decode("acme", "9", encode(book)).entries == book.entries
    for bad in ('{"eu": {"amount": {"instances": -1}, "renewals": 1, "period": 30}}',
                '{"eu": {"amount": {"gpus": 1}, "renewals": 1, "period": 30}}',
                '{"eu": {"amount": {}, "renewals": 1, "period": 0}}', '[]', '{not json'):
        assert decode("acme", "9", {"leases": bad}).corrupt is not None, bad


class _Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def _member_pair():
    from datetime import datetime, timezone

    from entitle.adapters.kube.fleet_leases import MemoryLeaseStore
    from entitle.domain.state import ClusterState
    from entitle.operator.config import FleetConfig
    from entitle.operator.fleet import FleetMember

    store, members = MemoryLeaseStore(), []
    fleet_license = {"apiVersion": "entitle.dev/v1alpha1", "kind": "License", "metadata": {"name": "contract"},
                     "spec": {"tenant": "acme", "fleet": True, "instances": {"max": 50}, "features": [{"name": "sso"}]}}
    for name, offset in (("eu", 0.0), ("us", 5000.0)):      # monotonic clocks far apart
        state = ClusterState()
        cfg = FleetConfig.model_validate({"hubKubeconfig": "/x", "cluster": name, "leaseSeconds": 60,
                                          "graceSeconds": 10, "floor": {"instances": 5},
                                          "chunk": {"instances": 10, "seats": 5}})
        member = FleetMember(state, store, cfg, lambda: datetime(2026, 12, 5, tzinfo=timezone.utc),
                             monotonic=_Clock(1000.0 + offset))
        member.license_event("ADDED", fleet_license)
        members.append(member)
    return store, members


def _max(member) -> int | None:
    from datetime import datetime, timezone

    return member.state.entitlement("acme", datetime(2026, 12, 5, tzinfo=timezone.utc)).instances.max


def test_members_admit_from_their_leases_and_the_fleet_cap_holds_between_them():
    import asyncio

    store, (eu, us) = _member_pair()

    async def run():
        await eu.tick()
        await us.tick()
        assert _max(eu) == 5 and _max(us) == 5                 # joined: their floors
        assert eu.state.entitlement("acme", eu.clock()).features.keys() == {"sso"}
        assert await eu.grow_for("acme", "instances", 30)      # one hub write: 30 + a chunk
        assert _max(eu) == 40
        assert not await us.grow_for("acme", "instances", 20)  # 50 - 40 leaves 10
        assert await us.grow_for("acme", "instances", 10) and _max(us) == 10
        assert _max(eu) + _max(us) <= 50
        return eu.hub_writes + us.hub_writes

    assert asyncio.run(run()) == 4


def test_a_member_cut_off_falls_to_its_floor_and_its_share_moves_only_after_the_grace():
    import asyncio

    store, (eu, us) = _member_pair()

    async def run():
        await eu.tick()
        await us.tick()
        await eu.grow_for("acme", "instances", 40)             # eu holds 45 (all but us's floor)
        assert _max(eu) == 45
        # us sees eu's renewal (its watch), then eu is cut off from the hub.
        for tenant, version, data in await store.cas.list():
            us.lease_event("MODIFIED", {"metadata": {"annotations": {"entitle.dev/tenant": tenant},
                                                     "labels": {"entitle.dev/fleet-lease": "true"},
                                                     "resourceVersion": version}, "data": data})
        eu.monotonic.at += 60 - 2 - 0.5                        # just before its lease (minus the margin)
        eu.refresh("acme")
        assert _max(eu) == 45
        eu.monotonic.at += 1
        eu.refresh("acme")
        assert _max(eu) == 5                                   # lapsed here: its floor only
        us.monotonic.at += 60 + 10 - 1                         # not yet period + grace on us's clock
        assert not await us.grow_for("acme", "instances", 30)
        us.monotonic.at += 2
        assert await us.grow_for("acme", "instances", 30)      # eu's share reclaimed
        book = await store.read("acme")
        assert book.entries["eu"].amount["instances"] == 5 and _max(us) >= 30

    asyncio.run(run())


class _HubDown:
    """A lease store whose hub does not answer."""

    async def read(self, tenant):
        raise ConnectionError("hub unreachable")

    async def write(self, book):
        raise ConnectionError("hub unreachable")


def test_a_member_restarted_while_the_hub_is_down_keeps_its_fleet_licenses_and_its_floor_from_the_cache():
    import asyncio
    from datetime import datetime, timezone

    from entitle.adapters.kube.cas_configmap import MemoryCas
    from entitle.adapters.kube.fleet_cache import FleetCache, FleetCacheUnreadable
    from entitle.domain.state import ClusterState
    from entitle.operator.fleet import FleetMember

    store, (eu, _) = _member_pair()
    cas = MemoryCas()
    eu.cache = FleetCache(cas)
    day = lambda: datetime(2026, 12, 5, tzinfo=timezone.utc)  # noqa: E731

    def restarted(floor: int = 5) -> FleetMember:
        cfg = eu.cfg.model_copy(update={"floor": {"instances": floor}})
        return FleetMember(ClusterState(), _HubDown(), cfg, day, monotonic=_Clock(9000.0), cache=FleetCache(cas))

    def _restored(member, snapshot):
        member.restore(snapshot)
        return member

    async def run():
        await eu.tick()                                   # joined (floor 5), and the cache saved
        await eu.grow_for("acme", "instances", 30)
        await eu.tick()
        assert cas.writes == 1                            # the snapshot changed once: nothing new since
        # Restarted during a hub outage: without the cache, the fleet tenant would get nothing.
        bare = FleetMember(ClusterState(), _HubDown(), eu.cfg, day, monotonic=_Clock(9000.0))
        await bare.tick()
        assert not bare.state.entitlement("acme", day()).active
        back = restarted()
        assert back.restore(await back.cache.load()) == 1
        await back.tick()                                 # the renewal fails: the floor stays
        assert _max(back) == 5 and back.state.entitlement("acme", day()).features.keys() == {"sso"}
        assert back.view("acme")["lease"] == "lapsed"
        assert not await back.grow_for("acme", "instances", 6)
        # Never above the floor the operator is configured with now (a floor raised by hand in
        # the cache, or a smaller one configured since).
        assert _max(_restored(restarted(floor=3), await FleetCache(cas).load())) == 3
        # The hub, once listed, decides: a restored License it no longer has is gone.
        back.hub_listed(set())
        assert not back.state.fleet_licenses
        # A hand-edited cache is refused whole, never half-read.
        await cas.write("member", (await cas.read("member"))[0], {"snapshot.json": '{"licenses": 5}'})
        with pytest.raises(FleetCacheUnreadable):
            await FleetCache(cas).load()

    asyncio.run(run())
