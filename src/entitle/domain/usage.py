"""Per-tenant usage, kept incrementally: a request costs O(size of the workload), never a recount."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from entitle.api import WorkloadSpec
from entitle.domain.normalization import InstanceTable


@dataclass(frozen=True)
class Footprint:
    """What one workload holds of its tenant's pools."""

    instance_kind: str = "container"
    replicas: int = 0
    units: int = 0
    users: frozenset[str] = frozenset()
    features: frozenset[str] = frozenset()
    known_kind: bool = True

    def union(self, other: Footprint) -> Footprint:
        """The larger of two footprints on every pool (used while a change is in flight)."""
        return Footprint(other.instance_kind, max(self.replicas, other.replicas),
                         max(self.units, other.units), self.users | other.users,
                         self.features | other.features, self.known_kind and other.known_kind)


EMPTY = Footprint()


def raises(old: Footprint, new: Footprint) -> bool:
    """Does replacing ``old`` by ``new`` ask for more of anything, whatever the tenant's state?
    (More units, a user or feature not there before, or a kind whose units are unknown.)"""
    if new.instance_kind != old.instance_kind and not new.known_kind:
        return True
    return new.units > old.units or bool(new.users - old.users) or bool(new.features - old.features)


def footprint(spec: WorkloadSpec, table: InstanceTable) -> Footprint:
    users = frozenset(spec.users)
    return Footprint(
        instance_kind=spec.instance_kind,
        replicas=spec.replicas,
        units=table.units(spec.instance_kind, spec.replicas),
        users=users,
        features=frozenset(spec.features),
        known_kind=table.knows(spec.instance_kind),
    )


@dataclass(frozen=True)
class Change:
    """How one request moves a tenant's pools: before and after, for the pools it touches."""

    instances_before: int
    instances_after: int
    seats_before: int
    seats_after: int
    features_before: dict[str, int]
    features_after: dict[str, int]

    @property
    def raises_instances(self) -> bool:
        return self.instances_after > self.instances_before

    @property
    def raises_seats(self) -> bool:
        return self.seats_after > self.seats_before

    def raised_features(self) -> list[str]:
        return sorted(f for f, n in self.features_after.items() if n > self.features_before[f])

    @property
    def raises_any(self) -> bool:
        return self.raises_instances or self.raises_seats or bool(self.raised_features())


class TenantUsage:
    """Instance units, distinct named users and per-feature workload counts of one tenant."""

    def __init__(self) -> None:
        self.units = 0
        # Concurrent sessions (seats in use) from the session store: set by its owner
        # (operator.sessions), not derived from workloads.
        self.sessions = 0
        self._users: Counter[str] = Counter()
        self._features: Counter[str] = Counter()

    @property
    def seats(self) -> int:
        return len(self._users)

    def feature_count(self, feature: str) -> int:
        return self._features.get(feature, 0)

    def features(self) -> dict[str, int]:
        return {f: n for f, n in sorted(self._features.items()) if n > 0}

    def users(self) -> list[str]:
        return sorted(self._users)

    def add(self, fp: Footprint) -> None:
        self.units += fp.units
        self._users.update(fp.users)
        self._features.update(fp.features)

    def remove(self, fp: Footprint) -> None:
        self.units -= fp.units
        self._users.subtract(fp.users)
        self._features.subtract(fp.features)
        for u in fp.users:
            if self._users[u] <= 0:
                del self._users[u]
        for f in fp.features:
            if self._features[f] <= 0:
                del self._features[f]

    def change(self, old: Footprint | None, new: Footprint | None) -> Change:
        """Replace ``old`` by ``new`` hypothetically; cost is proportional to the two footprints."""
        old = old or EMPTY
        new = new or EMPTY
        seats_after = self.seats
        for u in old.users - new.users:
            if self._users.get(u, 0) <= 1:
                seats_after -= 1
        for u in new.users - old.users:
            if self._users.get(u, 0) == 0:
                seats_after += 1
        touched = old.features | new.features
        before = {f: self.feature_count(f) for f in touched}
        after = {f: before[f] - (f in old.features) + (f in new.features) for f in touched}
        return Change(self.units, self.units - old.units + new.units, self.seats, seats_after, before, after)
