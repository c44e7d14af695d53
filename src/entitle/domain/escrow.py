"""Escrow: a replica reserves a chunk of a tenant's headroom with one compare-and-swap write of the
shared hold object and spends it in memory across many admissions (docs/admission-concurrency.md).

Pure arithmetic: what a grant reserves, whether a change fits what is left of one, how large
the next one may be. The safety argument, in short:

- every replica counts every *other* replica's unexpired grant as fully used, and its own
  admissions from its own grants as local reservations until its own watch shows them stored;
- a replica admits from its grant only within the grant's *lease* (``lease`` seconds from just
  before the write that made it, on its own clock), and never more than the grant reserved (a
  grant is a one-shot budget: its spends are never "returned" to it, so a peer that has not
  seen them stored yet still counts them inside it);
- grants are never shrunk or renewed: a replica writes a new grant beside its old ones, which
  stay counted until they expire or *lapse*. A peer stops counting a grant ``lapse`` seconds
  (lease + the webhook's timeout + the watch margin) after it first saw it, on its own clock:
  the grant was written before that sight, so by then the holder -- alive or dead -- stopped
  paying from it, everything it paid is stored (within the webhook's timeout) and visible to
  every watch (within the margin). Only durations each replica measures itself are compared,
  never one replica's clock with another's.

So at any moment every replica's count is at least the truth, and no decision can take a pool
past its cap. Near the cap the chunks shrink to nothing and admissions fall back to a hold
written per admission, so the last units are never stranded in one replica's grant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from entitle.domain.entitlement import Entitlement
from entitle.domain.usage import Change


@dataclass(frozen=True)
class Grant:
    """Headroom one replica reserved. ``None`` for a pool means the pool was uncapped when the
    grant was made (nothing to reserve); ``basis`` pins the caps it was sized against."""

    replica: str
    id: str
    units: int | None
    seats: int | None
    features: dict[str, int] = field(default_factory=dict)
    expires: datetime | None = None
    basis: str = ""
    # Seconds after a peer first sees this grant when it stops counting it (None: at expiry).
    lapse: float | None = None
    # Until when the holder pays from it (the holder's own clock; not written to the object).
    spend_until: datetime | None = None


def basis_of(ent: Entitlement) -> str:
    """The caps a grant is sized against: a license change voids grants made under others."""
    limited = sorted((f.name, f.limit) for f in ent.features.values() if f.limit is not None)
    return f"{ent.instances.max}|{ent.seats.max}|{limited}"


@dataclass
class Spent:
    units: int = 0
    seats: int = 0
    features: dict[str, int] = field(default_factory=dict)


def need(change: Change, ent: Entitlement) -> Spent:
    """What a change asks of the capped pools (uncapped ones need no reservation)."""
    out = Spent()
    if ent.instances.max is not None:
        out.units = max(0, change.instances_after - change.instances_before)
    if ent.seats.max is not None:
        out.seats = max(0, change.seats_after - change.seats_before)
    for feature in change.raised_features():
        grant = ent.features.get(feature)
        if grant is not None and grant.limit is not None:
            out.features[feature] = out.features.get(feature, 0) + 1
    return out


def fits(grant: Grant, spent: Spent, ask: Spent) -> bool:
    """Does ``ask`` fit in what ``grant`` has left after ``spent``?"""
    if ask.units and (grant.units is None or spent.units + ask.units > grant.units):
        return False
    if ask.seats and (grant.seats is None or spent.seats + ask.seats > grant.seats):
        return False
    for feature, n in ask.features.items():
        if spent.features.get(feature, 0) + n > grant.features.get(feature, 0):
            return False
    return True


def spend(spent: Spent, ask: Spent) -> None:
    spent.units += ask.units
    spent.seats += ask.seats
    for feature, n in ask.features.items():
        spent.features[feature] = spent.features.get(feature, 0) + n


def size(ent: Entitlement, units_used: int, seats_used: int, feature_counts: dict[str, int], deciders: int,
         chunk: int) -> tuple[int | None, int | None, dict[str, int]]:
    """The next grant: a chunk of each capped pool's headroom, at most ``chunk`` and at most the
    headroom's share for ``deciders`` replicas (halved, so one replica never holds it all).
    Headroom is counted against ``max`` (not max + burst: bursting admissions take holds)."""
    share = 2 * max(1, deciders)

    def part(cap: int | None, used: int) -> int | None:
        if cap is None:
            return None
        return max(0, min(chunk, (cap - used) // share))

    features = {}
    for name, grant in ent.features.items():
        if grant.limit is not None:
            features[name] = max(0, min(chunk, (grant.limit - feature_counts.get(name, 0)) // share))
    return part(ent.instances.max, units_used), part(ent.seats.max, seats_used), features
