"""A member cluster's side of the fleet (docs/fleet.md): fleet Licenses read from the hub, this
member's capacity leases kept in the hub's lease books (domain.fleet rules, written by
compare-and-swap through adapters/kube/fleet_leases), and what it may spend of them put into
the state, where admission reads it like any cap -- no hub call on the admission path while the
lease covers the request.

Every replica of a member runs one of these on its own: each renews the member's entry from its
own writes (so each measures its lease from a write it sent), and sees peers' renewals from the
hub's watch. A replica that never wrote spends nothing above the floor; one whose writes fail
keeps to its lease until it lapses, then its floor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from entitle.adapters.kube.fleet_leases import LABEL, LeaseConflict, decode
from entitle.api import License
from entitle.domain import fleet as rules
from entitle.domain.entitlement import effective_entitlement
from entitle.domain.fleet import Book, Entry, FleetCapExceeded, HeldLease, Sightings
from entitle.domain.licenses import read_license
from entitle.domain.state import ClusterState
from entitle.operator import metrics

log = logging.getLogger("entitle.fleet")

# A lease is spent only until this long before it lapses on this replica's clock: the tick that
# lowers the caps runs every second, and an admission decided just before it must still be in.
MARGIN = 2.0
WRITE_ATTEMPTS = 4
# A growth on the admission path waits for the hub this long at most (the apiserver's webhook
# timeout is 5 s by default); after the hub failed, growth is not tried again for HUB_BACKOFF s,
# so a member cut off answers at its own speed, within what it holds.
GROW_TIMEOUT = 2.0
HUB_BACKOFF = 5.0


class FleetMember:
    def __init__(self, state: ClusterState, store: Any, cfg: Any, clock: Callable[[], datetime],
                 monotonic: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str], None] = lambda tenant: None, cache: Any = None) -> None:
        self.state, self.store, self.cfg, self.clock, self.monotonic = state, store, cfg, clock, monotonic
        # adapters/kube/fleet_cache.FleetCache (None: nothing kept across restarts).
        self.cache = cache
        self._bodies: dict[str, dict] = {}          # fleet License name -> the body kept in the cache
        self._from_cache: set[str] = set()          # restored, not yet confirmed by the hub
        self._cache_failed = False
        # The snapshot is built and saved only after what it holds changed (not on every tick).
        self._cache_dirty = False
        # Called with a tenant whose entitlement changed here (its status and views are redone).
        self.on_change = on_change
        self.me: str = cfg.cluster
        self.held: dict[str, HeldLease] = {}
        self.sightings: dict[str, Sightings] = {}
        self.books: dict[str, Book] = {}
        self.last_sent: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.hub_writes = 0
        self._hub_down_until = 0.0
        self._ahead: dict[str, asyncio.Task] = {}
        self._stacks: dict[str, tuple[tuple, tuple]] = {}

    # --- fleet Licenses from the hub -----------------------------------------------------------
    def license_event(self, event_type: str, body: dict) -> None:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        self._from_cache.discard(name)
        if event_type == "DELETED" or not spec.get("fleet"):
            self._forget_license(name)
            return
        try:
            lic = License.model_validate(body)
        except Exception as exc:  # noqa: BLE001 -- an unreadable fleet License grants nothing here
            log.error("fleet license %s is not readable: %s", name, str(exc)[:300])
            self._forget_license(name)
            return
        meta = body.get("metadata") or {}
        self._cache_dirty = True
        self._bodies[name] = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "spec": spec,
                              "metadata": {k: meta[k] for k in ("name", "uid", "generation", "labels", "annotations")
                                           if k in meta}}
        # Bound to no cluster: a fleet License is about every member.
        if name not in self.state.fleet_licenses:
            log.info("fleet license %s of tenant %s read from the hub", name, lic.spec.tenant)
        self.state.set_fleet_license(read_license(lic, self.state.signing_keys, None))
        self.on_change(lic.spec.tenant)

    def _forget_license(self, name: str) -> None:
        if self._bodies.pop(name, None) is not None:
            self._cache_dirty = True
        gone = self.state.delete_fleet_license(name)
        if gone is not None:
            self.on_change(gone.tenant)

    def hub_listed(self, names: set[str]) -> None:
        """The hub's Licenses were listed: restored ones it no longer has are gone."""
        for name in sorted(self._from_cache - names):
            log.info("fleet license %s (restored from the cache) is no longer in the hub", name)
            self._forget_license(name)
        self._from_cache.clear()

    # --- what is kept across restarts (adapters/kube/fleet_cache) ------------------------------
    def snapshot(self) -> dict:
        return {"licenses": [self._bodies[n] for n in sorted(self._bodies)],
                "floors": {t: dict(h.entry.floor) for t, h in sorted(self.held.items()) if h.entry is not None}}

    def restore(self, snapshot: dict | None) -> int:
        """Before the hub answers: the fleet Licenses and floors last saved. Each floor is held
        as a lease already lapsed (spendable: the floor only, never above this member's
        configured floor) until a write to the hub replaces it. The number of Licenses restored."""
        if not snapshot:
            return 0
        for body in snapshot.get("licenses") or ():
            name = ((body.get("metadata") or {}) if isinstance(body, dict) else {}).get("name")
            if name and name not in self.state.fleet_licenses:
                self.license_event("ADDED", body)
                if name in self._bodies:
                    self._from_cache.add(name)
        for tenant, floor in (snapshot.get("floors") or {}).items():
            if tenant in self.held or not isinstance(floor, dict):
                continue
            kept = {p: min(n, self.cfg.floor.get(p, 0)) for p, n in floor.items()
                    if p in rules.POOLS and isinstance(n, int) and not isinstance(n, bool) and n > 0}
            self.held[tenant] = HeldLease(entry=Entry(self.me, amount=dict(kept), floor=kept, renewals=0,
                                                      period=self.cfg.lease_seconds))
            self.refresh(tenant)
        log.info("fleet: restored %d fleet licenses and %d floors from the cache", len(self._from_cache),
                 len(snapshot.get("floors") or {}))
        return len(self._from_cache)

    async def save_cache(self) -> None:
        if self.cache is None or not self._cache_dirty:
            return
        try:
            await self.cache.save(self.snapshot())
            self._cache_failed = self._cache_dirty = False
        except Exception as exc:  # noqa: BLE001 -- the cache is a convenience: say so once, go on
            if not self._cache_failed:
                log.warning("fleet: saving the fleet cache failed: %s", exc)
            self._cache_failed = True

    # --- the lease books -----------------------------------------------------------------------
    def caps(self, tenant: str, now: datetime) -> dict[str, int | None]:
        return self._stacked(tenant, now)[0]

    def _local_max(self, tenant: str, pool: str, now: datetime) -> int:
        return self._stacked(tenant, now)[1].get(pool, 0)

    def _stacked(self, tenant: str, now: datetime) -> tuple[dict[str, int | None], dict[str, int]]:
        """(fleet caps, local Licenses' own maxes) of the tenant: stacked once per License change
        and minute (validity edges), not on every admission."""
        key = (tenant, self.state.license_version, now.replace(second=0, microsecond=0))
        cached = self._stacks.get(tenant)
        if cached is not None and cached[0] == key:
            return cached[1]
        fleet = effective_entitlement(tenant, self.state.fleet_licenses_of(tenant), now)
        local = effective_entitlement(tenant, self.state.licenses_of(tenant), now)
        value = ({pool: getattr(fleet, pool).max for pool in rules.POOLS} if fleet.active else {},
                 {pool: getattr(local, pool).max or 0 for pool in rules.POOLS})
        self._stacks[tenant] = (key, value)
        return value

    def lease_event(self, event_type: str, body: dict) -> None:
        """A lease book from the hub's watch: peers' renewals seen (their lapse clocks start),
        and any cut of this member's own entry (reclaimed while it was away) adopted."""
        meta = body.get("metadata") or {}
        tenant = (meta.get("annotations") or {}).get("entitle.dev/tenant")
        if not tenant or (meta.get("labels") or {}).get(LABEL) != "true" or event_type == "DELETED":
            return
        book = decode(tenant, meta.get("resourceVersion"), body.get("data"))
        if book.corrupt is not None:
            log.error("the hub's lease book of tenant %s is unreadable: %s", tenant, book.corrupt)
            return
        self.sightings.setdefault(tenant, Sightings()).see(book, self.monotonic())
        self.books[tenant] = book
        self.on_change(tenant)          # the fleet totals its views show
        held, stored = self.held.get(tenant), book.entries.get(self.me)
        # A peer's cut keeps this member's renewal count (domain.fleet.reclaim); an event older
        # than this member's last write has a lower one -- a watch event that arrived after the
        # answer to a later write, not a cut.
        if held is not None and held.entry is not None and stored is not None \
                and stored.renewals >= held.entry.renewals:
            lower = {p: min(n, stored.of(p)) for p, n in held.entry.amount.items()}
            if lower != held.entry.amount:
                held.entry = replace(held.entry, amount=lower)
        self.refresh(tenant)

    def refresh(self, tenant: str) -> bool:
        held = self.held.get(tenant)
        now = self.monotonic() + MARGIN
        spendable = {p: held.spendable(p, now) for p in rules.POOLS} if held is not None else {}
        changed = self.state.set_fleet_spendable(tenant, spendable)
        if changed:
            self.on_change(tenant)
        return changed

    def view(self, tenant: str) -> dict | None:
        """The fleet totals a member's TenantEntitlement shows (None: not a fleet tenant here)."""
        caps = self.caps(tenant, self.clock())
        if not caps:
            return None
        book, held, now = self.books.get(tenant), self.held.get(tenant), self.monotonic() + MARGIN
        entries = book.entries if book is not None else {}
        used = {p: sum(e.usage.get(p, 0) for e in entries.values()) for p in rules.POOLS}
        return {"cluster": self.me, "instancesMax": caps.get("instances"), "seatsMax": caps.get("seats"),
                "instancesUsed": used["instances"], "seatsUsed": used["seats"],
                "instancesLease": held.spendable("instances", now) if held else 0,
                "seatsLease": held.spendable("seats", now) if held else 0,
                "clusters": len(entries), "leaseValid": bool(held and held.valid(now)),
                "lease": "joining" if held is None or held.entry is None else "valid" if held.valid(now) else "lapsed"}

    async def _write(self, tenant: str, change: Callable[[Book, float], Book],
                     done: Callable[[], bool] | None = None) -> bool:
        """One compare-and-swap write of this member's entry (re-read and re-decided on conflict).
        ``done``: checked once the tenant's writes are this caller's turn -- a growth another
        caller's write already covered writes nothing."""
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            if done is not None and done():
                return True
            for _ in range(WRITE_ATTEMPTS):
                book = await self.store.read(tenant)
                if book.corrupt is not None:
                    log.error("the hub's lease book of tenant %s is unreadable: %s", tenant, book.corrupt)
                    return False
                sightings = self.sightings.setdefault(tenant, Sightings())
                sent = self.monotonic()
                sightings.see(book, sent)
                new = rules.report_usage(change(book, sent), self.me, self._lease_use(tenant, self.clock()))
                try:
                    stored = await self.store.write(new)
                except LeaseConflict:
                    metrics.FLEET_HUB_WRITES.labels(outcome="conflict").inc()
                    continue
                self.hub_writes += 1
                metrics.FLEET_HUB_WRITES.labels(outcome="ok").inc()
                if tenant not in self.held:
                    log.info("joined the fleet lease book of tenant %s", tenant,
                             extra={"lease": stored.entries[self.me].amount, "floor": stored.entries[self.me].floor})
                held = self.held.setdefault(tenant, HeldLease())
                if held.entry is None or held.entry.floor != stored.entries[self.me].floor:
                    self._cache_dirty = True
                held.stored(stored.entries[self.me], sent)
                self.last_sent[tenant] = sent
                self.books[tenant] = stored
                self.refresh(tenant)
                return True
        return False

    async def grow_for(self, tenant: str, pool: str, after: int) -> bool:
        """Admission found ``pool`` short: grow this member's lease to cover ``after`` (one hub
        write). False when the fleet has no room (or the hub cannot be reached)."""
        now = self.clock()
        cap = self.caps(tenant, now).get(pool)
        if cap is None:
            return False
        if self.monotonic() < self._hub_down_until:
            return False
        need = max(0, after - self._local_max(tenant, pool, now))
        chunk = self.cfg.chunk.get(pool, 0)
        grace = self.cfg.grace_seconds

        def covered() -> bool:
            held = self.held.get(tenant)
            return held is not None and held.spendable(pool, self.monotonic() + MARGIN) >= need

        try:
            # A write cut short has an unknown outcome: nothing is adopted (peers may count the
            # larger amount; this member never spends it).
            return await asyncio.wait_for(self._write(tenant, lambda book, mono: rules.grow(
                book, self.me, pool, need, chunk, cap, self.sightings[tenant], mono, grace), covered), GROW_TIMEOUT)
        except FleetCapExceeded as full:
            log.info("fleet cap reached: %s", full)
            return False
        except Exception as exc:  # noqa: BLE001 -- the hub unreachable: decide within what is held
            self._hub_down_until = self.monotonic() + HUB_BACKOFF
            log.warning("growing the lease of tenant %s failed: %s", tenant, exc or type(exc).__name__)
            return False

    def ahead(self, tenant: str) -> None:
        """After an admission: when less than half a chunk is left of the lease, grow it in the
        background, so the next admissions find it covered (no hub call on their path)."""
        if tenant not in self.held or self._ahead.get(tenant) is not None and not self._ahead[tenant].done():
            return
        now, usage = self.clock(), self.state.usage[tenant]
        spendable = self.state.fleet_spendable.get(tenant, {})
        for pool, used in (("instances", usage.units), ("seats", usage.seats)):
            chunk = self.cfg.chunk.get(pool, 0)
            if pool not in spendable or not chunk:
                continue
            in_lease = max(0, used - self._local_max(tenant, pool, now))
            if spendable[pool] - in_lease < max(1, chunk // 2) and self.caps(tenant, now).get(pool) is not None:
                target = used + chunk
                self._ahead[tenant] = asyncio.get_running_loop().create_task(self.grow_for(tenant, pool, target))
                return

    async def tick(self) -> None:
        """Join, renew every third of the lease period, give back what idles, and keep the
        state's spendable figures current (a lapse lowers them within a second)."""
        now, mono = self.clock(), self.monotonic()
        period = self.cfg.lease_seconds
        tenants = {t for t in {r.tenant for r in self.state.fleet_licenses.values()}}
        for tenant in sorted(tenants):
            caps = self.caps(tenant, now)
            if not caps:
                self.refresh(tenant)
                continue
            held = self.held.get(tenant)
            due = held is None or held.entry is None or mono - self.last_sent.get(tenant, -1e18) >= period / 3
            if due:
                try:
                    await self._write(tenant, self._renewal(tenant, caps, now))
                except Exception as exc:  # noqa: BLE001 -- cut off: keep to the lease, then the floor
                    log.warning("renewing the lease of tenant %s in the hub failed: %s", tenant, exc)
            self.refresh(tenant)
        for tenant in [t for t in self.state.fleet_spendable if t not in tenants]:
            if self.state.set_fleet_spendable(tenant, {}):
                self.on_change(tenant)
        await self.save_cache()

    def _lease_use(self, tenant: str, now: datetime) -> dict[str, int]:
        """What this member runs on its lease: its usage above what its local Licenses grant."""
        usage = self.state.usage[tenant]
        return {"instances": max(0, usage.units - self._local_max(tenant, "instances", now)),
                "seats": max(0, usage.seats - self._local_max(tenant, "seats", now))}

    def _renewal(self, tenant: str, caps: dict[str, int | None], now: datetime) -> Callable[[Book, float], Book]:
        lease_use = self._lease_use(tenant, now)
        held = self.held.get(tenant)

        def change(book: Book, mono: float) -> Book:
            book = rules.join(book, self.me, self.cfg.floor, caps, self.cfg.lease_seconds)
            mine = book.entries[self.me]
            idle = {p: n for p, n in mine.amount.items()
                    if n > lease_use.get(p, 0) + 2 * self.cfg.chunk.get(p, 0)}
            if idle:
                shrunk = rules.shrink(book, self.me, lease_use, max(self.cfg.chunk.values(), default=0))
                if held is not None:
                    held.restrict(shrunk.entries[self.me].amount)
                self.refresh(tenant)
                return shrunk
            # Running more than it holds (back from a partition): take back what the cap has room for.
            return rules.cover(book, self.me, lease_use, caps, self.sightings.setdefault(tenant, Sightings()), mono,
                               self.cfg.grace_seconds)
        return change

    async def run(self, period: float = 1.0) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 -- never let the lease loop end
                log.exception("the fleet lease loop failed")
            await asyncio.sleep(period)
