"""Fleet capacity leases (domain.fleet) without a server: members with their own monotonic
clocks (offsets of minutes apart; wall clocks never enter), a hub that only compare-and-swaps,
partitions, restarts and shrinking -- and at every step, the sum of what every member may spend
stays within the fleet cap."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import pytest

from entitle.domain.fleet import Book, FleetCapExceeded, HeldLease, Sightings, grow, join, renew, shrink

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
            new = change(book)
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
        elif roll < 0.95:
            m.write(hub, world, lambda b: renew(b, m.name))
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
