"""The in-memory picture of the cluster that admission decides from.

The webhook keeps one up to date from watches; ``entitle check`` builds one from YAML files.
Both call :meth:`ClusterState.admit`, so both decide with the same code.

Usage is held per workload as a *footprint*. While an admitted change has not yet come back
through the watch, the workload holds a reservation: the union of what is stored and what was
admitted, so a concurrent request can never spend the same capacity twice. Reservations that
never show up expire (see :meth:`ClusterState.expire_reservations`).
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from entitle.api import License, Workload
from entitle.api.common import TENANT_LABEL
from entitle.domain.admission import CREATE, DELETE, UPDATE, Decision, decide
from entitle.domain.bursts import BurstClock
from entitle.domain.checks import CheckContext
from entitle.domain.entitlement import Entitlement, effective_entitlement
from entitle.domain.fleet import member_entitlement
from entitle.domain.licenses import ReadLicense, read_license
from entitle.domain.normalization import InstanceTable
from entitle.domain.sources import state_key
from entitle.domain.stored import AnyWorkload, StoredSpec, StoredWorkload, stored
from entitle.domain.usage import EMPTY, Change, Footprint, TenantUsage, footprint

POOLS = ("instances", "seats", "sessions")
Key = tuple[str, str]


@dataclass(frozen=True)
class WorkloadRequest:
    """A Workload CREATE / UPDATE / DELETE (a scale is an UPDATE of ``spec.replicas``)."""

    operation: str
    namespace: str
    name: str
    workload: Workload | None = None
    old: Workload | None = None
    dry_run: bool = False


@dataclass
class Reservation:
    """Capacity held for an admitted change until the watch shows it stored (or it expires).

    ``uid``/``generation`` identify the change: the object's uid (assigned before admission)
    and the generation the change will be stored with. A replica stops counting the
    reservation once its own watch has seen that uid at that generation or later (or gone).
    """

    footprint: Footprint
    expires: datetime
    uid: str | None = None
    generation: int | None = None


@dataclass(slots=True)
class WorkloadEntry:
    namespace: str
    name: str
    workload: StoredWorkload | None = None    # as last stored (or last admitted, offline)
    stored: Footprint | None = None
    reservations: list[Reservation] = field(default_factory=list)
    held: Footprint = EMPTY                   # what the tenant's usage counts for it
    tenant: str | None = None                 # the tenant ``held`` is counted in

    def satisfied(self, reservation: Reservation) -> bool:
        """The stored object already reflects the reserved change."""
        if reservation.uid is None or self.workload is None or self.stored is None:
            return False
        meta = self.workload.metadata
        if meta.uid != reservation.uid:
            return False
        return (meta.generation or 0) >= (reservation.generation or 0)

    def wanted(self) -> Footprint:
        held = self.stored or EMPTY
        for reservation in self.reservations:
            held = held.union(reservation.footprint)
        return held


def _lower_baseline(change: Change, via_actual: Change) -> Change:
    """``change`` measured from the lower of two baselines on every pool: what this state counts
    for the object, and what the apiserver says is stored now (``via_actual``: the usage as if
    the object were counted at that). A view that lags a peer's decrease must not let an
    increase pass as a decrease -- the capacity that decrease freed may already be given away.
    What the change ends at is the same either way."""
    return Change(min(change.instances_before, via_actual.instances_after), change.instances_after,
                  min(change.seats_before, via_actual.seats_after), change.seats_after,
                  {f: min(n, via_actual.features_after.get(f, n)) for f, n in change.features_before.items()},
                  change.features_after)


class ClusterState:
    # Trusted license signing keys (key id -> Ed25519 public key; empty: licenses need no
    # signature) and this cluster's id (kube-system's UID; None: not known, bindings unchecked).
    signing_keys: dict = {}
    cluster_id: str | None = None

    def __init__(self, table: InstanceTable | None = None) -> None:
        self.signing_keys = {}
        self.cluster_id = None
        self.table = table or InstanceTable()
        self.namespaces: dict[str, str | None] = {}
        self._tenant_namespaces: dict[str, set[str]] = defaultdict(set)   # tenant -> its namespaces
        self.licenses: dict[str, ReadLicense] = {}
        # Fleet Licenses read from the hub (member mode, docs/fleet.md) and, per tenant and pool,
        # what this member may spend of its lease now (operator/fleet.py keeps it current).
        self.fleet_licenses: dict[str, ReadLicense] = {}
        self.fleet_spendable: dict[str, dict[str, int]] = {}
        self.workloads: dict[Key, WorkloadEntry] = {}
        self._by_namespace: dict[str, set[Key]] = defaultdict(set)
        self._licenses_by_tenant: dict[str, set[str]] = defaultdict(set)
        self.usage: dict[str, TenantUsage] = defaultdict(TenantUsage)
        self.bursts: dict[tuple[str, str], BurstClock] = {}
        # tenant -> (entitlement, computed at, valid until): stacking is recomputed only when
        # a license of the tenant changes or the clock crosses one of their transitions.
        self._entitlements: dict[str, tuple[Entitlement, datetime, datetime | None]] = {}
        # tenant -> workload keys holding a reservation synced from the shared hold object.
        self._held_keys: dict[str, set[Key]] = defaultdict(set)
        # uids of workloads seen deleted (bounded: oldest dropped first).
        self._gone: dict[str, int] = {}
        # tenant -> (units, seats, {feature: n}) reserved by other replicas' escrow grants.
        self._grant_totals: dict[str, tuple[int, int, dict[str, int]]] = {}
        # The footprint of each (interned) stored spec, computed once and shared by every
        # workload with that spec.
        self._footprints: weakref.WeakKeyDictionary[StoredSpec, Footprint] = weakref.WeakKeyDictionary()

    # --- namespaces -------------------------------------------------------------------
    def set_namespace(self, name: str, labels: dict[str, str] | None) -> None:
        tenant = (labels or {}).get(TENANT_LABEL) or None
        before = self.namespaces.get(name)
        if before is not None and before != tenant:
            self._tenant_namespaces[before].discard(name)
        if tenant is not None:
            self._tenant_namespaces[tenant].add(name)
        self.namespaces[name] = tenant
        for key in self._by_namespace.get(name, ()):
            self._rehome(self.workloads[key])

    def delete_namespace(self, name: str) -> None:
        self.set_namespace(name, None)
        self.namespaces.pop(name, None)

    def tenant_of(self, namespace: str) -> str | None:
        return self.namespaces.get(namespace)

    # --- licenses ---------------------------------------------------------------------
    def namespace_workloads(self, namespace: str) -> set[Key]:
        return self._by_namespace.get(namespace, set())

    def tenant_workloads(self, tenant: str) -> list[Key]:
        """The keys counted in ``tenant`` (through its namespaces: O(its workloads), not a pass
        over the fleet)."""
        return [key for ns in self._tenant_namespaces.get(tenant, ()) for key in self._by_namespace.get(ns, ())]

    def set_license(self, license: License) -> ReadLicense:
        return self.set_read_license(read_license(license, self.signing_keys, self.cluster_id))

    # Bumped on every License change: caches of what all Licenses say (the feature names the
    # OFREP endpoint knows) are keyed by it.
    license_version = 0

    def known_features(self) -> frozenset[str]:
        """Every feature name some License in the cluster grants (any tenant, valid or not)."""
        cached = getattr(self, "_known_features", None)
        if cached is not None and cached[0] == self.license_version:
            return cached[1]
        names = frozenset(f.name for read in self.licenses.values() for f in read.spec.features)
        self._known_features = (self.license_version, names)
        return names

    def set_read_license(self, read: ReadLicense) -> ReadLicense:
        """Put a license (as the engine read it, valid or not) into the picture."""
        self.license_version += 1
        name = read.name
        previous = self.licenses.get(name)
        if previous is not None:
            self._licenses_by_tenant[previous.tenant].discard(name)
        self.licenses[name] = read
        self._licenses_by_tenant[read.tenant].add(name)
        self._entitlements.pop(read.tenant, None)
        if previous is not None:
            self._entitlements.pop(previous.tenant, None)
        return read

    def delete_license(self, name: str) -> ReadLicense | None:
        self.license_version += 1
        read = self.licenses.pop(name, None)
        if read is not None:
            self._licenses_by_tenant[read.tenant].discard(name)
            self._entitlements.pop(read.tenant, None)
        return read

    def licenses_of(self, tenant: str) -> list[ReadLicense]:
        return [self.licenses[n] for n in sorted(self._licenses_by_tenant.get(tenant, ()))]

    def set_fleet_license(self, read: ReadLicense) -> None:
        previous = self.fleet_licenses.get(read.name)
        self.fleet_licenses[read.name] = read
        self.license_version += 1
        self._entitlements.pop(read.tenant, None)
        if previous is not None:
            self._entitlements.pop(previous.tenant, None)

    def delete_fleet_license(self, name: str) -> ReadLicense | None:
        read = self.fleet_licenses.pop(name, None)
        if read is not None:
            self.license_version += 1
            self._entitlements.pop(read.tenant, None)
        return read

    def fleet_licenses_of(self, tenant: str) -> list[ReadLicense]:
        return sorted((r for r in self.fleet_licenses.values() if r.tenant == tenant), key=lambda r: r.name)

    def set_fleet_spendable(self, tenant: str, spendable: dict[str, int]) -> bool:
        """What this member may spend of its lease now; True when it changed."""
        if self.fleet_spendable.get(tenant) == spendable:
            return False
        self.fleet_spendable[tenant] = dict(spendable)
        self._entitlements.pop(tenant, None)
        return True

    def entitlement(self, tenant: str, now: datetime) -> Entitlement:
        cached = self._entitlements.get(tenant)
        if cached is not None and cached[1] <= now and (cached[2] is None or now < cached[2]):
            return cached[0]
        licenses = self.licenses_of(tenant)
        fleet = self.fleet_licenses_of(tenant) if self.fleet_licenses else []
        ent = effective_entitlement(tenant, licenses + fleet, now)
        if fleet:
            ent = member_entitlement(ent, effective_entitlement(tenant, licenses, now),
                                     effective_entitlement(tenant, fleet, now), self.fleet_spendable.get(tenant, {}))
            licenses = licenses + fleet
        until = min((t for t in (lic.next_transition(now) for lic in licenses) if t is not None), default=None)
        self._entitlements[tenant] = (ent, now, until)
        return ent

    def tenants(self) -> list[str]:
        names = {t for t in self.namespaces.values() if t}
        names |= {lic.tenant for lic in self.licenses.values()}
        names |= {lic.tenant for lic in self.fleet_licenses.values()}
        return sorted(names)

    # --- workloads (the stored truth, from watches) -------------------------------------
    def observe_workload(self, workload: AnyWorkload) -> None:
        """A Workload as stored in the apiserver: it replaces the matching reservation.
        Kept as a :class:`StoredWorkload` (the model is not held)."""
        slim = stored(workload)
        # A Workload by its name; a counted object of another kind by its qualified name.
        ns, name = slim.metadata.namespace or "default", state_key(slim)
        entry = self._entry(ns, name)
        entry.workload = slim
        entry.stored = self.footprint_of(slim)
        entry.reservations = [r for r in entry.reservations if not entry.satisfied(r)]
        self._rehome(entry)

    def forget_workload(self, namespace: str, name: str) -> None:
        entry = self.workloads.pop((namespace, name), None)
        if entry is None:
            return
        if entry.workload is not None and entry.workload.metadata.uid:
            # Holds for this object (any generation) are settled: it is gone.
            self._gone[entry.workload.metadata.uid] = entry.workload.metadata.generation or 0
        self._by_namespace[namespace].discard((namespace, name))
        if entry.tenant is not None:
            self.usage[entry.tenant].remove(entry.held)

    def expire_reservations(self, now: datetime) -> int:
        """Release reservations whose object never appeared (denied elsewhere, timed out).

        Runs every status tick: it visits only the keys that took a reservation (each is added
        to ``_held_keys`` when it does), not every Workload -- 5 ms per tick at 50,000 before."""
        released = 0
        for keys in list(self._held_keys.values()):
            for key in list(keys):
                entry = self.workloads.get(key)
                if entry is None or not entry.reservations:
                    keys.discard(key)        # settled or forgotten since
                    continue
                keep = [r for r in entry.reservations if r.expires > now]
                if len(keep) == len(entry.reservations):
                    continue                 # nothing expired: what it holds is unchanged
                released += len(entry.reservations) - len(keep)
                entry.reservations = keep
                if not keep:
                    keys.discard(key)
                    if entry.stored is None:
                        self.forget_workload(*key)   # admitted, never appeared
                        continue
                self._rehome(entry)
        return released

    def replace_reservations(self, tenant: str, holds: dict[Key, Reservation], now: datetime) -> None:
        """Make the tenant's reservations exactly ``holds`` (the shared hold object's content),
        dropping expired ones and ones this state's watch has already seen stored or deleted.
        Cost: proportional to the reservations, not to the tenant."""
        if len(self._gone) > 100_000:
            for uid in list(self._gone)[:50_000]:
                del self._gone[uid]
        live = {key: held for key, held in holds.items() if self._still_held(key, held, now)}
        for key in self._held_keys[tenant] - set(live):
            self._release(key)
        for key, held in live.items():
            entry = self._entry(*key)
            if entry.reservations == [held]:
                continue
            entry.reservations = [held]
            self._rehome(entry)
        self._held_keys[tenant] = set(live)

    def replace_key_reservation(self, tenant: str, key: Key, held: Reservation | None, now: datetime) -> None:
        """:meth:`replace_reservations` for one name: count ``held`` for it (None, expired or
        settled: nothing) -- what an expired own escrow spend leaves behind, in O(1)."""
        if held is None or not self._still_held(key, held, now):
            if key in self._held_keys[tenant]:
                self._held_keys[tenant].discard(key)
                self._release(key)
            return
        entry = self._entry(*key)
        entry.reservations = [held]
        self._rehome(entry)
        self._held_keys[tenant].add(key)

    def _still_held(self, key: Key, held: Reservation, now: datetime) -> bool:
        return held.expires > now and not self.hold_settled(key, held)

    def _release(self, key: Key) -> None:
        """Stop counting any reservation for ``key`` (an entry known only by one is forgotten)."""
        entry = self.workloads.get(key)
        if entry is not None:
            entry.reservations = []
            if entry.stored is None:
                self.forget_workload(*key)
            else:
                self._rehome(entry)

    def hold_settled(self, key: Key, held: Reservation) -> bool:
        """This state's watch has seen the held change stored (or the object deleted)."""
        if held.uid in self._gone:
            return True
        entry = self.workloads.get(key)
        return entry is not None and entry.satisfied(held)

    def set_peer_grants(self, tenant: str, grants: list) -> None:
        """Count other replicas' escrow grants (``domain.escrow.Grant``) as fully used in every
        decision for the tenant (not in its displayed usage: status shows what runs)."""
        units = sum(g.units or 0 for g in grants)
        seats = sum(g.seats or 0 for g in grants)
        features: dict[str, int] = {}
        for grant in grants:
            for feature, n in grant.features.items():
                features[feature] = features.get(feature, 0) + n
        if units or seats or features:
            self._grant_totals[tenant] = (units, seats, features)
        else:
            self._grant_totals.pop(tenant, None)

    def peer_grants(self, tenant: str) -> tuple[int, int, dict[str, int]] | None:
        """Other replicas' live escrow grants of the tenant, summed (units, seats, features);
        None when there are none."""
        return self._grant_totals.get(tenant)

    def add_reservation(self, tenant: str, key: Key, reservation: Reservation) -> None:
        """Count one more reservation at once (the rest of a batch is decided with it)."""
        entry = self._entry(*key)
        # Beside what is already counted for the name (a peer's hold may be there): the next
        # replace_reservations() folds them back into one.
        entry.reservations = [r for r in entry.reservations if not entry.satisfied(r)] + [reservation]
        self._rehome(entry)
        self._held_keys[tenant].add(key)

    def workload(self, namespace: str, name: str) -> StoredWorkload | None:
        entry = self.workloads.get((namespace, name))
        return entry.workload if entry else None

    def footprint_of(self, workload: StoredWorkload) -> Footprint:
        """The footprint of a stored workload (shared by every workload with an equal spec)."""
        found = self._footprints.get(workload.spec)
        if found is None:
            found = self._footprints[workload.spec] = footprint(workload.spec, self.table)
        return found

    # --- admission ----------------------------------------------------------------------
    def context(self, request: WorkloadRequest, now: datetime, peer_grants: bool = True) -> CheckContext:
        ns, name = request.namespace, request.name
        tenant = self.tenant_of(ns)
        entry = self.workloads.get((ns, name))
        if entry is not None and entry.stored is not None:
            old = entry.stored
        elif request.old is not None:
            old = footprint(request.old.spec, self.table)
        else:
            old = None
        # The change is measured from what the tenant's usage counts for this workload now,
        # so an in-flight reservation is never counted twice; a workload the state has not
        # seen counts as wholly new (safe: never under-counts).
        held = entry.held if entry is not None and entry.tenant == tenant else None
        new = footprint(request.workload.spec, self.table) if request.workload else EMPTY
        ctx = CheckContext(tenant=tenant, namespace=ns, name=name, now=now, new=new, old=old)
        if request.operation == UPDATE and request.workload is not None:
            # Only a spec that asks for nothing new is metadata: a Terminating object (held by a
            # foreign finalizer, it can still be scaled) is checked like any other.
            ctx.metadata_only = request.old is not None and footprint(request.old.spec, self.table) == new
        if tenant is None:
            return ctx
        usage = self.usage[tenant]
        ctx.usage = usage
        ctx.entitlement = self.entitlement(tenant, now)
        ctx.change = usage.change(held, new)
        if request.operation == UPDATE and held is not None and request.old is not None:
            actual = footprint(request.old.spec, self.table)
            if actual != held:
                ctx.change = _lower_baseline(ctx.change, usage.change(held, actual))
        granted = self._grant_totals.get(tenant) if peer_grants else None
        if granted is not None:
            # Other replicas' escrow grants count as used in every decision.
            units, seats, features = granted
            change = ctx.change
            ctx.change = Change(change.instances_before + units, change.instances_after + units,
                                change.seats_before + seats, change.seats_after + seats,
                                {f: n + features.get(f, 0) for f, n in change.features_before.items()},
                                {f: n + features.get(f, 0) for f, n in change.features_after.items()})
        ctx.bursts = {pool: self.bursts.get((tenant, pool), BurstClock()) for pool in POOLS}
        ctx.licenses = {lic.name: lic for lic in self.licenses_of(tenant)}
        ctx.workload_model = request.workload
        return ctx

    def decide(self, request: WorkloadRequest, now: datetime, peer_grants: bool = True) -> Decision:
        """The engine's decision; ``peer_grants=False``: as if other replicas' escrow grants held
        nothing (what a denial says, so it never counts units nobody may hold)."""
        return decide(self.context(request, now, peer_grants), request.operation)

    def admit(self, request: WorkloadRequest, now: datetime) -> Decision:
        """Decide, and when allowed (and not a dry run) apply the change as stored at once
        (``entitle check``; the webhook reserves through holds instead, see
        ``entitle.adapters.webhook.shared_admission.SharedAdmission``)."""
        decision = self.decide(request, now)
        if not decision.allowed or request.dry_run:
            return decision
        if request.operation == DELETE:
            self.forget_workload(request.namespace, request.name)
        else:
            self.observe_workload(request.workload)
        if decision.tenant:
            self.observe_bursts(decision.tenant, now)
        return decision

    def reservation_for(self, request: WorkloadRequest, expires: datetime) -> Reservation:
        """The reservation an admitted raising request needs, tagged with the change it is for."""
        meta = request.workload.metadata
        stored = self.workload(request.namespace, request.name)
        if request.operation == CREATE:
            generation = 1
        else:
            # The newer of the two generations: a lagging view's would let an older write of
            # the object settle this change's reservation while the change is still in flight.
            base = max((stored.metadata.generation if stored is not None else None) or 0,
                       (request.old.metadata.generation if request.old is not None else None) or 0)
            generation = base + 1
        return Reservation(footprint(request.workload.spec, self.table), expires, meta.uid, generation)

    # --- bursts -------------------------------------------------------------------------
    def observe_bursts(self, tenant: str, now: datetime) -> None:
        """Fold elapsed over-max time into the tenant's burst clocks."""
        ent = self.entitlement(tenant, now)
        usage = self.usage[tenant]
        for pool, used, cap in (("instances", usage.units, ent.instances), ("seats", usage.seats, ent.seats),
                                ("sessions", usage.sessions, ent.sessions)):
            over = cap.max is not None and used > cap.max
            clock = self.bursts.get((tenant, pool))
            if clock is None and not over:
                continue
            self.bursts[(tenant, pool)] = (clock or BurstClock()).observe(now, over)

    def seed_burst(self, tenant: str, pool: str, clock: BurstClock) -> None:
        """Restore a burst clock persisted in License status (after a restart)."""
        current = self.bursts.get((tenant, pool))
        if current is None or (clock.month, clock.used_seconds) > (current.month, current.used_seconds):
            self.bursts[(tenant, pool)] = clock

    # --- internals ----------------------------------------------------------------------
    def _entry(self, namespace: str, name: str) -> WorkloadEntry:
        key = (namespace, name)
        entry = self.workloads.get(key)
        if entry is None:
            entry = self.workloads[key] = WorkloadEntry(namespace, name)
            self._by_namespace[namespace].add(key)
        return entry

    def _rehome(self, entry: WorkloadEntry) -> None:
        """Recount the entry's footprint in the tenant its namespace belongs to now."""
        if entry.tenant is not None:
            self.usage[entry.tenant].remove(entry.held)
        entry.tenant = self.tenant_of(entry.namespace)
        entry.held = entry.wanted()
        if entry.tenant is not None:
            self.usage[entry.tenant].add(entry.held)


__all__ = ["ClusterState", "WorkloadRequest", "CREATE", "UPDATE", "DELETE"]
