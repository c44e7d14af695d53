"""One replica's escrow book for one tenant: the grants it holds in the shared hold object, what
it spent of each, and the admissions it paid from them (``domain.escrow`` has the arithmetic
and the safety argument; ``adapters.webhook.admission`` reads and writes the hold object).

Pure: no clock (every method is handed ``wall``), no I/O. The policy lives here:

- **slot choice** -- an admission is paid from a grant of the same caps with room for it and
  within its lease (``lease`` from just before the write that made it; after that a grant
  only waits to lapse, expire or close);
- **chunk growth** -- a grant sized ``chunk``; the chunk doubles (up to ``max_chunk``) each time
  the previous grant was used up, so a steady stream writes about once a second;
- **idle grants** -- a grant nobody spent from for ``idle_close`` (or past its lease) is
  closed in the next write: what was paid from it becomes plain holds, the rest is returned;
- **own-spend expiry** -- spends are kept in admission order, so the expired ones are dropped
  oldest first in O(expired);
- **merge** -- two reservations for one name are merged, never replaced (``merge_reservations``).

A batch that loses its compare-and-swap is undone: :meth:`GrantBook.checkpoint` before it,
:meth:`GrantBook.rollback` after a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from entitle.domain.entitlement import Entitlement
from entitle.domain.escrow import Grant, Spent, fits, size, spend
from entitle.domain.state import Reservation

Key = tuple[str, str]


def merge_reservations(previous: Reservation | None, hold: Reservation) -> Reservation:
    """Two reservations for one name, as one that counts at least what each does.

    Never "the newer wins": the two may come from different replicas (a peer's hold in the
    shared object, this replica's own unwritten spend), and dropping either under-counts --
    the over-admission a race test found when a stale own spend for a create replaced a
    peer's hold for the scale that followed it. Same object: the union, settled at the later
    generation. Different objects (deleted and recreated): at most one exists at a time, so
    the union is safe; it is settled with the later admission's identity.
    """
    if previous is None:
        return hold
    later = hold if hold.expires >= previous.expires else previous
    generation = max(hold.generation or 0, previous.generation or 0) if previous.uid == hold.uid else later.generation
    return Reservation(previous.footprint.union(hold.footprint), max(hold.expires, previous.expires),
                       later.uid, generation)


@dataclass
class Checkpoint:
    """What a batch attempt may undo: the grants as they were, and each spend's predecessor."""

    grants: list[tuple[Grant, Spent]]
    spends: list[tuple[Key, Reservation | None]] = field(default_factory=list)


@dataclass
class GrantBook:
    replica: str
    ttl: timedelta
    initial_chunk: int = 8
    max_chunk: int = 512
    idle_close: timedelta = timedelta(seconds=0.25)
    # How long a grant is paid from, and after how long peers stop counting it (escrow.py).
    lease: timedelta = timedelta(seconds=2)
    lapse: timedelta | None = None
    # This replica's live grants for the tenant and what it spent of each.
    grants: list[tuple[Grant, Spent]] = field(default_factory=list)
    # Admissions paid from the grants, counted locally until this replica's watch sees them
    # stored -- in admission order (see expire_oldest).
    spends: dict[Key, Reservation] = field(default_factory=dict)
    spent_from: dict[Key, str] = field(default_factory=dict)       # key -> grant id
    last_used: dict[str, datetime] = field(default_factory=dict)   # grant id -> last spend
    chunk: int = 0
    sequence: int = 0
    _undo: Checkpoint | None = None

    # -- expiry -----------------------------------------------------------------------------
    def live_spends(self, wall: datetime) -> dict[Key, Reservation]:
        """Drop the expired spends (and expired grants); the live ones, in admission order."""
        live = {k: r for k, r in self.spends.items() if r.expires > wall}
        for gone in [k for k in self.spends if k not in live]:
            self.spent_from.pop(gone, None)
        self.spends = live
        self.grants = [(g, spent) for g, spent in self.grants if g.expires > wall]
        return live

    def expire_oldest(self, wall: datetime) -> list[Key]:
        """Drop the expired spends, oldest first, in O(expired): the names whose count changes."""
        expired = []
        for key, reservation in self.spends.items():
            if reservation.expires > wall:
                break
            expired.append(key)
        for key in expired:
            del self.spends[key]
            self.spent_from.pop(key, None)
        return expired

    # -- paying an admission ----------------------------------------------------------------
    def slot(self, ask: Spent, basis: str, wall: datetime) -> tuple[Grant, Spent] | None:
        """A grant with room for ``ask``, made under the same caps, within its lease."""
        for grant, spent in self.grants:
            if grant.basis == basis and self.spendable(grant, wall) and fits(grant, spent, ask):
                return grant, spent
        return None

    def spendable(self, grant: Grant, wall: datetime) -> bool:
        """Within the grant's lease (and, for a grant without one, its first half-life)."""
        until = grant.spend_until if grant.spend_until is not None else grant.expires - self.ttl / 2
        return wall < until

    def next_grant(self, ent: Entitlement, units_used: int, seats_used: int, features_used: dict[str, int],
                   deciders: int, wall: datetime, basis: str) -> Grant:
        """The grant to ask for now, sized from the headroom the counts leave (chunk growth:
        doubled when the previous grant was used up)."""
        chunk = self.chunk or self.initial_chunk
        if self.grants:
            last, spent = self.grants[-1]
            if last.units and spent.units >= last.units:
                chunk = min(self.max_chunk, chunk * 2)
        self.chunk = chunk
        units, seats, features = size(ent, units_used, seats_used, features_used, deciders, chunk)
        self.sequence += 1
        lease = min(self.lease, self.ttl / 2)
        lapse = None if self.lapse is None else self.lapse.total_seconds()
        return Grant(self.replica, f"{self.sequence}", units, seats, features, wall + self.ttl, basis,
                     lapse=lapse, spend_until=wall + lease)

    def pay(self, key: Key, grant: Grant, spent: Spent, ask: Spent, reservation: Reservation,
            wall: datetime) -> Reservation:
        """Pay an admission from a grant; returns what this replica now counts for the name."""
        spend(spent, ask)
        self.last_used[grant.id] = wall
        previous = self.spends.pop(key, None)
        if self._undo is not None:
            self._undo.spends.append((key, previous))
        # Re-inserted at the end: the dict stays in admission order (see expire_oldest).
        self.spends[key] = merge_reservations(previous, reservation)
        self.spent_from[key] = grant.id
        return self.spends[key]

    # -- closing ------------------------------------------------------------------------------
    def closable(self, grant: Grant, wall: datetime) -> bool:
        """Live, and idle or past its lease (after which nothing is paid from it)."""
        if grant.expires <= wall:
            return False
        idle = wall - self.last_used.get(grant.id, wall) >= self.idle_close
        return idle or not self.spendable(grant, wall)

    def any_closable(self, wall: datetime) -> bool:
        return any(self.closable(g, wall) for g, _ in self.grants)

    def closing(self, wall: datetime, superseded: bool) -> set[str]:
        """The grants to close in the next write: idle ones, or all when a new one supersedes them."""
        return {g.id for g, _ in self.grants if g.expires > wall and (superseded or self.closable(g, wall))}

    def paid_from(self, closing: set[str], wall: datetime) -> dict[Key, Reservation]:
        """What was admitted from the closing grants: written as plain holds when they close."""
        return {key: r for key, r in self.spends.items() if self.spent_from.get(key) in closing and r.expires > wall}

    def written(self, closing: set[str], new: tuple[Grant, Spent] | None, wall: datetime) -> None:
        """The write went through: closed grants are gone, a new one is held."""
        if closing:
            self.grants = [(g, spent) for g, spent in self.grants if g.id not in closing]
        if new is not None:
            self.grants.append(new)
            self.last_used[new[0].id] = wall

    # -- undo -------------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Begin a batch attempt (an undo log of its spends: a copy of every spend per batch would
        cost O(admissions in the last TTL) on each commit)."""
        self._undo = Checkpoint([(g, Spent(s.units, s.seats, dict(s.features))) for g, s in self.grants])

    def rollback(self) -> None:
        """Undo the attempt begun at the last checkpoint (its write lost the compare-and-swap)."""
        undo, self._undo = self._undo, None
        if undo is None:
            return
        self.grants = undo.grants
        for key, previous in reversed(undo.spends):
            self.spends.pop(key, None)
            if previous is not None:
                self.spends[key] = previous
