"""Fleet capacity leases (DESIGN "Fleet: one entitlement across clusters"): the escrow of the
replicas (domain.escrow), one level up -- between member clusters, through a per-tenant lease
book in the hub, changed only by compare-and-swap. Pure: no I/O, no clocks of its own; every
time is a duration the caller measured on its own monotonic clock. docs/fleet.md has the
protocol and the safety argument; in short:

- A member's **entry** holds, per pool, an ``amount`` of the fleet cap (its lease, including
  its ``floor``). Writing the entry -- creating, growing, shrinking or just renewing it -- bumps
  its ``renewals``.
- The **holder** may spend its ``amount`` for ``period`` seconds from just *before* it sent the
  write that renewed it (:class:`HeldLease`); after that, only its floor.
- A **peer** counts an entry at its full amount until ``period + grace`` seconds after it first
  saw that renewal (:func:`counted`); after that, at its floor. The renewal was written before
  the peer saw it, so the holder's spending ended before the peer stops counting it -- whatever
  the two clusters' wall clocks say (only durations each side measured are compared).
- A member takes capacity only from what is left of the cap after every other entry *as it
  counts them* (:func:`grow`), and floors are never given to anyone else: the sum of floors
  never exceeds the cap (a floor that would is cut to what is left, :func:`join`).

So at every moment, the sum over members of what each may spend is at most the cap: no unit
is ever spent twice. A member cut off from the hub admits within its lease until it lapses,
then within its floor; nothing running is ever deleted, so after healing its usage above its
lease shows as over the cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from entitle.domain.entitlement import Entitlement

POOLS = ("instances", "seats")


class FleetCapExceeded(Exception):
    """The fleet cap has no room left for the growth asked: ``numbers`` say what is held where."""

    def __init__(self, message: str, numbers: dict) -> None:
        super().__init__(message)
        self.numbers = numbers


@dataclass(frozen=True)
class Entry:
    """One member's lease on a tenant's fleet cap."""

    cluster: str
    amount: dict[str, int] = field(default_factory=dict)   # pool -> units held (floor included)
    floor: dict[str, int] = field(default_factory=dict)    # pool -> units reserved for ever
    renewals: int = 0
    period: int = 300                                       # seconds the holder may spend it
    usage: dict[str, int] = field(default_factory=dict)     # what the member runs (for views only)

    def of(self, pool: str) -> int:
        return self.amount.get(pool, 0)

    def floor_of(self, pool: str) -> int:
        return min(self.floor.get(pool, 0), self.of(pool))

    def kept(self, pool: str) -> int:
        """What stays counted of a lapsed entry: its floor, or the usage it last reported if
        more (within what it held) -- units it runs are not given to anyone else."""
        return max(self.floor_of(pool), min(self.usage.get(pool, 0), self.of(pool)))


@dataclass(frozen=True)
class Book:
    """A tenant's lease book in the hub, at one stored version."""

    tenant: str
    version: str | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    corrupt: str | None = None


@dataclass
class Sightings:
    """When this member first saw each peer's current renewal, on its own monotonic clock."""

    first_seen: dict[tuple[str, int], float] = field(default_factory=dict)

    def see(self, book: Book, now: float) -> None:
        current = {(c, e.renewals) for c, e in book.entries.items()}
        self.first_seen = {k: v for k, v in self.first_seen.items() if k in current}
        for key in current:
            self.first_seen.setdefault(key, now)

    def lapsed(self, entry: Entry, now: float, grace: float) -> bool:
        seen = self.first_seen.get((entry.cluster, entry.renewals))
        return seen is not None and now - seen >= entry.period + grace


def counted(entry: Entry, pool: str, sightings: Sightings, now: float, grace: float) -> int:
    """What a peer must count of ``entry``: all of it until it lapsed (period + grace after the
    renewal was first seen here), then what it keeps (its floor, or the usage it last reported
    if more). An entry never seen counts in full."""
    return entry.kept(pool) if sightings.lapsed(entry, now, grace) else entry.of(pool)


def others(book: Book, me: str, pool: str, sightings: Sightings, now: float, grace: float) -> int:
    return sum(counted(e, pool, sightings, now, grace) for c, e in book.entries.items() if c != me)


def room(book: Book, me: str, pool: str, cap: int | None, sightings: Sightings, now: float,
         grace: float) -> int | None:
    """How much of the cap ``me`` may hold in all (None: uncapped)."""
    if cap is None:
        return None
    return max(0, cap - others(book, me, pool, sightings, now, grace))


def join(book: Book, me: str, floor: dict[str, int], caps: dict[str, int | None], period: int) -> Book:
    """``me``'s entry with its floor reserved -- cut to what the other floors leave of the cap
    (floors are never reassigned, so their sum must stay within the cap) -- and held."""
    mine = book.entries.get(me, Entry(me, period=period))
    new_floor, amount = {}, dict(mine.amount)
    for pool, wanted in floor.items():
        cap = caps.get(pool)
        taken = sum(e.floor.get(pool, 0) for c, e in book.entries.items() if c != me)
        new_floor[pool] = max(0, wanted if cap is None else min(wanted, cap - taken))
        amount[pool] = max(amount.get(pool, 0), new_floor[pool])
    entry = replace(mine, floor=new_floor, amount=amount, renewals=mine.renewals + 1, period=period)
    return replace(book, entries={**book.entries, me: entry})


def grow(book: Book, me: str, pool: str, need: int, chunk: int, cap: int | None, sightings: Sightings,
         now: float, grace: float) -> Book:
    """``me``'s amount raised to at least ``need`` (and up to ``need + chunk`` where there is
    room), or :class:`FleetCapExceeded`. A lapsed peer's amount above its floor is reclaimed in
    the same write, so the hub shows what the peers count.

    ``book`` must be the version the write will be based on (compare-and-swap): it is seen here
    first, so a peer's renewal in it is never mistaken for an older, lapsed one."""
    sightings.see(book, now)
    mine = book.entries.get(me, Entry(me))
    limit = room(book, me, pool, cap, sightings, now, grace)
    if limit is not None and need > limit:
        raise FleetCapExceeded(
            f"tenant {book.tenant}: fleet {pool} cap {cap}: this cluster needs {need}, "
            f"the other clusters hold {cap - limit}", {"cap": cap, "need": need, "others": cap - limit})
    target = need + chunk if limit is None else min(limit, need + chunk)
    entry = replace(mine, amount={**mine.amount, pool: max(mine.of(pool), target)}, renewals=mine.renewals + 1)
    return reclaim(replace(book, entries={**book.entries, me: entry}), me, sightings, now, grace)


def cover(book: Book, me: str, usage: dict[str, int], caps: dict[str, int | None], sightings: Sightings,
          now: float, grace: float) -> Book:
    """``me``'s amount raised toward what it runs, as far as the cap has room (as :func:`grow`
    takes it: after every other entry as counted here). After a partition healed, a member that
    runs more than it kept gets its lease back as peers give theirs back -- rebalanced, and over
    the cap no longer than the fleet is. Never more than it runs: growth for new demand is
    :func:`grow`'s, on an admission.

    ``book`` must be the version the write will be based on (compare-and-swap)."""
    sightings.see(book, now)
    mine = book.entries.get(me)
    if mine is None:
        return book
    amount = dict(mine.amount)
    for pool, used in usage.items():
        if caps.get(pool) is None or used <= mine.of(pool):
            continue
        limit = room(book, me, pool, caps[pool], sightings, now, grace) or 0
        amount[pool] = max(mine.of(pool), min(limit, used))
    if amount == mine.amount:
        return book
    return reclaim(replace(book, entries={**book.entries, me: replace(mine, amount=amount)}), me, sightings, now, grace)


def shrink(book: Book, me: str, usage: dict[str, int], chunk: int) -> Book:
    """Give back what ``me`` holds beyond its usage plus one chunk (never below its floor).
    Peers count the smaller amount as soon as they see it: the holder must spend within it from
    before it sends the write (:meth:`HeldLease.restrict`)."""
    mine = book.entries.get(me)
    if mine is None:
        return book
    amount = {pool: max(mine.floor.get(pool, 0), min(held, usage.get(pool, 0) + chunk))
              for pool, held in mine.amount.items()}
    return replace(book, entries={**book.entries, me: replace(mine, amount=amount, renewals=mine.renewals + 1)})


def report_usage(book: Book, me: str, usage: dict[str, int]) -> Book:
    """``me``'s usage of its lease, written with its entry: `entitle fleet status` shows it, and
    a peer keeps it counted once the entry lapsed (:meth:`Entry.kept`)."""
    mine = book.entries.get(me)
    if mine is None:
        return book
    return replace(book, entries={**book.entries, me: replace(mine, usage=dict(usage))})


def renew(book: Book, me: str) -> Book:
    mine = book.entries.get(me)
    if mine is None:
        return book
    return replace(book, entries={**book.entries, me: replace(mine, renewals=mine.renewals + 1)})


def reclaim(book: Book, me: str, sightings: Sightings, now: float, grace: float) -> Book:
    """Lapsed peers' amounts cut to what they keep (what every member counts of them anyway).
    The peer, back, reads its entry as cut and grows again from what is left."""
    sightings.see(book, now)
    entries = dict(book.entries)
    for cluster, entry in book.entries.items():
        if cluster != me and sightings.lapsed(entry, now, grace):
            cut = {pool: entry.kept(pool) for pool in entry.amount}
            if cut != entry.amount:
                entries[cluster] = replace(entry, amount=cut)
    return replace(book, entries=entries)


@dataclass
class HeldLease:
    """The holder's side: what it may spend, from the monotonic time just before it sent the
    write that stored its entry (so never later than any peer's first sight of it)."""

    entry: Entry | None = None
    sent_at: float | None = None

    ceiling: dict[str, int] = field(default_factory=dict)     # a shrink in flight

    def stored(self, entry: Entry, sent_at: float) -> None:
        self.entry, self.sent_at, self.ceiling = entry, sent_at, {}

    def restrict(self, amount: dict[str, int]) -> None:
        """Before sending a shrink: spend no more than the smaller amount, whatever the answer."""
        self.ceiling = dict(amount)

    def valid(self, now: float) -> bool:
        return self.entry is not None and self.sent_at is not None and now < self.sent_at + self.entry.period

    def spendable(self, pool: str, now: float) -> int:
        if self.entry is None:
            return 0
        held = self.entry.of(pool) if self.valid(now) else self.entry.floor_of(pool)
        return min(held, self.ceiling[pool]) if pool in self.ceiling else held


def member_entitlement(combined: Entitlement, local: Entitlement, fleet: Entitlement,
                       spendable: dict[str, int]) -> Entitlement:
    """A member's entitlement for a tenant with fleet Licenses: everything stacked as usual
    (``combined``: local and fleet Licenses together: features, rules, enforcement...), except
    each pool the fleet caps, which is the local Licenses' own max plus what this member may
    spend of its lease now. Bursts come from the local Licenses only (a lease has none)."""
    if not fleet.active:
        return combined
    pools = {}
    for pool in POOLS:
        fleet_pool, local_pool = getattr(fleet, pool), getattr(local, pool)
        if fleet_pool.max is None:
            continue
        pools[pool] = replace(local_pool, max=(local_pool.max or 0) + spendable.get(pool, 0))
    return replace(combined, **pools)
