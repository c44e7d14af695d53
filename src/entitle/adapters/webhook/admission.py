"""Admission requests in, engine decisions out: the webhook's translation layer (no Kopf here).

A request on the ``scale`` subresource carries an ``autoscaling/v1`` Scale, not a Workload:
it is turned into an UPDATE of the stored Workload with ``spec.replicas`` replaced.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from entitle.domain import reasons

from entitle.api import Workload, limits
from entitle.domain.admission import CREATE, DELETE, UPDATE, Decision
from entitle.domain.rules import projections
from entitle.domain.state import ClusterState, WorkloadRequest
from entitle.domain.stored import StoredWorkload
from entitle.adapters.kube.holds import HoldStore


log = logging.getLogger("entitle.webhook")


class RequestNotUnderstood(Exception):
    """The admission request is malformed or refers to a workload entitle has not seen yet."""


class NotYetKnown(RequestNotUnderstood):
    """A scale of a Workload this replica's watch has not delivered yet (it was created through
    another replica a moment ago): worth waiting for, briefly."""


def _workload(body: Any, namespace: str | None) -> Workload | None:
    if body is None:
        return None
    if not isinstance(body, dict):
        raise RequestNotUnderstood(f"invalid Workload: expected an object, got {type(body).__name__}")
    try:
        workload = Workload.model_validate(dict(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RequestNotUnderstood(f"invalid Workload: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if not workload.metadata.namespace:
        workload.metadata.namespace = namespace
    return workload


class ViewBehind(NotYetKnown):
    """A scale of an object this replica's watch shows at another resourceVersion than the
    apiserver's: its generation (which settles the reservation) and count are not known here
    yet. Worth waiting for; past the wait, a retryable error, like :class:`NotYetKnown`."""


def _int_replicas(spec: Any) -> int | None:
    replicas = spec.get("replicas", 0) if isinstance(spec, dict) else None
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= limits.MAX_REPLICAS:
        return None
    return replicas


def scale_request(stored: StoredWorkload, body: Any, old: Any, namespace: str, key: str, dry_run: bool) -> WorkloadRequest:
    """An UPDATE of the stored object with ``spec.replicas`` from the Scale in ``body``.

    The change is measured from the Scale's *old* replica count too (what the apiserver
    stores now), not only from this replica's view: two scales of one object admitted at once
    by two replicas would otherwise each see the other's decrease as already done, and one
    "decrease" could land on top of a lower count another replica already gave away.
    """
    replicas = _int_replicas((body or {}).get("spec") if isinstance(body, dict) else None)
    if replicas is None:
        raise RequestNotUnderstood(f"scale: spec.replicas must be an integer from 0 to {limits.MAX_REPLICAS}")
    updated = stored.to_model()
    updated.spec.replicas = replicas
    actual = stored.to_model()
    old_scale = old if isinstance(old, dict) else {}
    old_replicas = _int_replicas(old_scale.get("spec")) if "spec" in old_scale else None
    if old_replicas is not None and old_replicas != stored.spec.replicas:
        actual.spec.replicas = old_replicas
    meta = old_scale.get("metadata") if isinstance(old_scale.get("metadata"), dict) else {}
    seen, current = stored.metadata.resource_version, meta.get("resourceVersion")
    if seen and current and seen != current:
        raise ViewBehind(f"{namespace}/{key} changed a moment ago and entitle's watch has not caught up; retry")
    return WorkloadRequest(UPDATE, namespace, key, updated, actual, dry_run)


def to_request(state: ClusterState, *, operation: str, subresource: str | None,
               body: Any, old: Any, dry_run: bool, namespace: str | None = None,
               name: str | None = None) -> WorkloadRequest:
    """The engine's request for an AdmissionRequest. ``namespace``/``name`` are the request's own
    (the apiserver's, from the URL); the object's metadata is only a fallback."""
    raw = body if body is not None else old
    if raw is not None and not isinstance(raw, dict):
        raise RequestNotUnderstood(f"the admission request's object is a {type(raw).__name__}, not an object")
    meta = (raw or {}).get("metadata") or {}
    if not isinstance(meta, dict):
        raise RequestNotUnderstood("the admission request's object has no usable metadata")
    namespace = namespace or meta.get("namespace") or "default"
    name = name or meta.get("name") or ""
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise RequestNotUnderstood("namespace and name must be strings")
    if operation == DELETE:
        return WorkloadRequest(DELETE, namespace, name, None, _workload(old, namespace), dry_run)
    if subresource == "scale":
        stored = state.workload(namespace, name)
        if stored is None:
            raise NotYetKnown(f"workload {namespace}/{name} is not yet known to entitle (starting up?); retry")
        return scale_request(stored, body, old, namespace, name, dry_run)
    if operation not in (CREATE, UPDATE):
        raise RequestNotUnderstood(f"operation {operation} is not handled")
    if body is None:
        raise RequestNotUnderstood(f"{operation} without an object")
    return WorkloadRequest(operation, namespace, name, _workload(body, namespace), _workload(old, namespace), dry_run)


_CAP_REASONS = frozenset({reasons.INSTANCE_CAP_EXCEEDED, reasons.SEAT_CAP_EXCEEDED, reasons.FEATURE_LIMIT_EXCEEDED})


def _first_expiry(wall: datetime, *groups: Any) -> datetime:
    """The next moment one of these holds/grants expires (the state's count changes then)."""
    moments = [item.expires for group in groups for item in group if item.expires is not None and item.expires > wall]
    return min(moments, default=datetime.max.replace(tzinfo=wall.tzinfo))


class SharedAdmission:
    """Decide with capacity held in the apiserver, so any number of webhook replicas never
    over-admit (the ResourceQuota pattern; see ``entitle.adapters.kube.holds`` and
    docs/admission-concurrency.md).

    Per tenant, one shared hold object carries per-admission **holds** and per-replica escrow
    **grants** (``entitle.domain.escrow``). A raising admission is paid from this replica's
    grant in memory -- no write -- while the grant has room and more than half its life left;
    otherwise it writes, with the resourceVersion the decision was made against, a new grant
    sized from the headroom (or, near the cap, a hold for this admission alone). On a conflict:
    re-read, decide again, up to ``retries`` times, then deny (``ReservationConflict``).

    Group commit: requests of a tenant that arrive while its write is in flight are decided
    together, one after the other against the state, and committed with a single write.
    """

    # Longest stretch one tenant's batch decides before yielding to the event loop.
    slice_seconds = 0.005

    def __init__(self, state: ClusterState, store: HoldStore, ttl: timedelta, retries: int = 10,
                 wall_clock: Any = None, replica: str | None = None, escrow: bool = True,
                 chunk: int = 8, max_chunk: int = 512) -> None:
        import asyncio
        import os
        import socket
        import uuid

        self.state, self.store, self.ttl, self.retries = state, store, ttl, retries
        # Unique per decider (a process may hold several, in tests): whose grants are whose.
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.escrow, self.initial_chunk, self.max_chunk = escrow, chunk, max_chunk
        # Per tenant: this replica's grants and what it spent of each; its admissions paid from
        # them, counted locally until its own watch shows them stored; the next chunk size.
        self._grants: dict[str, list[tuple[Any, Any]]] = {}
        self._spends: dict[str, dict[tuple[str, str], Any]] = {}
        self._chunk: dict[str, int] = {}
        self._grant_seq = 0
        self._grant_used: dict[tuple[str, str], datetime] = {}   # (tenant, grant id) -> last spend
        self._closer: Any = None
        self._spent_from: dict[tuple[str, tuple[str, str]], str] = {}   # (tenant, key) -> grant id
        # Per tenant: (resourceVersion of the hold object the state reflects, the first expiry
        # among what it counts -- re-apply from then on).
        self._applied: dict[str, tuple[str | None, datetime]] = {}
        self.wall_clock = wall_clock
        self._cache: dict[str, Any] = {}
        self._queues: dict[str, list] = {}
        # (tenant, resourceVersion) of an unreadable hold object -> when this replica first saw it.
        self._corrupt_since: dict[tuple[str, str | None], datetime] = {}
        self._asyncio = asyncio
        self.writes = 0

    def _wall(self) -> datetime:
        from datetime import timezone

        # Holds live in real time whatever clock decides entitlements (tests inject one):
        # their TTL covers webhook calls and watch lag, which happen in real time.
        return self.wall_clock() if self.wall_clock else datetime.now(timezone.utc)

    def _apply(self, tenant: str, holds: Any, wall: datetime) -> None:
        """Make the state count exactly: the object's live holds, this replica's own unwritten
        admissions, and every other replica's live grants."""
        spends = {k: r for k, r in self._spends.get(tenant, {}).items() if r.expires > wall}
        for gone in [k for k in self._spends.get(tenant, {}) if k not in spends]:
            self._spent_from.pop((tenant, gone), None)
        self._spends[tenant] = spends
        from entitle.adapters.kube.holds import merge_hold

        counted = dict(holds.entries)
        for key, spend in spends.items():
            counted[key] = merge_hold(counted.get(key), spend)
        self.state.replace_reservations(tenant, counted, wall)
        peers = [g for g in holds.live_grants(wall) if g.replica != self.replica]
        self.state.set_peer_grants(tenant, peers)
        self._grants[tenant] = [(g, spent) for g, spent in self._grants.get(tenant, []) if g.expires > wall]
        self._applied[tenant] = (holds.resource_version,
                                 _first_expiry(wall, holds.entries.values(), peers))

    def _expire_own(self, tenant: str, holds: Any, wall: datetime) -> None:
        """Drop this replica's own expired spends -- oldest first, in O(expired): the dict is in
        admission order -- and count for each name only what the hold object still holds."""
        spends = self._spends.get(tenant)
        if not spends:
            return
        expired = []
        for key, reservation in spends.items():
            if reservation.expires > wall:
                break
            expired.append(key)
        for key in expired:
            del spends[key]
            self._spent_from.pop((tenant, key), None)
            self.state.replace_key_reservation(tenant, key, holds.entries.get(key), wall)

    def _corrupt_hold(self, tenant: str, holds: Any, wall: datetime) -> str | None:
        """For an unreadable hold object: the denial message for raising requests until any hold
        it held has expired (one TTL after this replica first saw it); None when not blocked."""
        if not holds.corrupt:
            return None
        from entitle.adapters.kube.holds import object_name

        key = (tenant, holds.resource_version)
        since = self._corrupt_since.get(key)
        if since is None:
            since = self._corrupt_since[key] = wall
            log.error("hold object %s of tenant %s is unreadable (%s); it is replaced after %ss",
                      object_name(tenant), tenant, holds.corrupt, int(self.ttl.total_seconds()))
        if wall >= since + self.ttl:
            return None
        return (f"tenant {tenant}: its capacity hold object {object_name(tenant)} (in the operator's namespace) "
                f"is unreadable ({holds.corrupt}); entitle replaces it at {(since + self.ttl).isoformat()}, "
                "retry then")

    # How long a scale of a Workload this replica has not seen yet waits for its watch (the
    # Workload exists: another replica admitted its creation a moment ago).
    watch_wait_seconds = 2.0

    async def review(self, now: datetime, **request: Any) -> tuple[WorkloadRequest, Decision]:
        """Decide a Workload admission request (the AdmissionRequest's parts as keywords)."""
        parsed = await self.parse(lambda: to_request(self.state, **request))
        return parsed, await self.decide(parsed, now)

    async def parse(self, build: Any) -> Any:
        """``build()``, waiting briefly while it raises :class:`NotYetKnown` (watch lag)."""
        loop = self._asyncio.get_running_loop()
        deadline = loop.time() + self.watch_wait_seconds
        while True:
            try:
                return build()
            except NotYetKnown:
                if loop.time() >= deadline:
                    raise
                await self._asyncio.sleep(0.02)

    async def decide(self, parsed: WorkloadRequest, now: datetime) -> Decision:
        """Decide an engine request, with capacity held in the apiserver for raises."""
        tenant = self.state.tenant_of(parsed.namespace)
        if tenant is None or parsed.operation == DELETE:
            return self.state.decide(parsed, now)
        loop = self._asyncio.get_running_loop()
        future = loop.create_future()
        self._enqueue(tenant, (parsed, now, future, loop.time() + self.peer_wait_seconds))
        return await future

    def _enqueue(self, tenant: str, item: tuple | None) -> None:
        """Queue a request (or, ``None``, a bare pass that closes idle grants) for the tenant."""
        queue = self._queues.get(tenant)
        if queue is None:
            self._queues[tenant] = [item] if item is not None else []
            self._asyncio.get_running_loop().create_task(self._drain(tenant))
        elif item is not None:
            queue.append(item)

    async def _drain(self, tenant: str) -> None:
        try:
            first = True
            while first or self._queues.get(tenant):
                first = False
                batch, self._queues[tenant] = self._queues[tenant], []
                try:
                    await self._commit(tenant, batch)
                except Exception as exc:  # e.g. the apiserver is unreachable: fail these requests
                    for _, _, future, _ in batch:
                        if not future.done():
                            future.set_exception(exc)
        finally:
            self._queues.pop(tenant, None)

    # A grant nobody spent from for this long is closed (shrunk to what was spent), returning
    # its unspent headroom to every replica; how long a denial that peers' unspent grants may
    # have caused waits for them to close before it stands.
    idle_close_seconds = 0.25
    peer_wait_seconds = 2.0

    async def close_idle_grants(self) -> None:
        """Run forever: return idle grants' unspent headroom (a compare-and-swap per tenant)."""
        while True:
            await self._asyncio.sleep(self.idle_close_seconds / 2)
            wall = self._wall()
            for tenant, grants in list(self._grants.items()):
                if tenant not in self._queues and any(self._closable(tenant, g, spent, wall) for g, spent in grants):
                    self._enqueue(tenant, None)

    def _closable(self, tenant: str, grant: Any, spent: Any, wall: datetime) -> bool:
        """Live, and idle or past the half of its life after which nothing is paid from it:
        closing it turns what it paid for into plain holds (which peers drop as their watches
        see the objects) and returns the rest of its headroom."""
        if grant.expires <= wall:
            return False
        idle = wall - self._grant_used.get((tenant, grant.id), wall) >= timedelta(seconds=self.idle_close_seconds)
        return idle or grant.expires - wall <= self.ttl / 2

    def _provisional(self, tenant: str, decision: Decision, item: tuple, clock: float) -> bool:
        return (not decision.allowed and decision.reason in _CAP_REASONS and clock < item[3]
                and tenant in self.state._grant_totals)

    @staticmethod
    def _rules_read_usage(ent: Any) -> bool:
        """Rules that read the tenant's usage are caps too: those admissions take holds.
        (``projections`` is computed once per rule set.)"""
        return "tenant" in projections(ent.rules)

    def _escrow_slot(self, tenant: str, ask: Any, basis: str, wall: datetime) -> Any:
        """This replica's grant with room for ``ask`` and more than half its life left."""
        from entitle.domain.escrow import fits

        for grant, spent in self._grants.get(tenant, []):
            if grant.basis == basis and grant.expires - wall > self.ttl / 2 and fits(grant, spent, ask):
                return grant, spent
        return None

    def _new_grant(self, tenant: str, ent: Any, holds: Any, wall: datetime, basis: str) -> Any:
        from entitle.domain.escrow import Grant, size

        usage = self.state.usage[tenant]
        granted = self.state._grant_totals.get(tenant, (0, 0, {}))
        features = {f: usage.feature_count(f) + granted[2].get(f, 0) for f in ent.features}
        deciders = 1 + len({g.replica for g in holds.live_grants(wall) if g.replica != self.replica})
        # Grow the chunk while grants get used up, so a steady stream writes about once a second.
        chunk = self._chunk.get(tenant, self.initial_chunk)
        previous = self._grants.get(tenant, [])
        if previous and previous[-1][0].units and previous[-1][1].units >= previous[-1][0].units:
            chunk = min(self.max_chunk, chunk * 2)
        self._chunk[tenant] = chunk
        units, seats, feature_parts = size(ent, usage.units + granted[0], usage.seats + granted[1], features,
                                           deciders, chunk)
        self._grant_seq += 1
        return Grant(self.replica, f"{self._grant_seq}", units, seats, feature_parts, wall + self.ttl, basis)

    async def _commit(self, tenant: str, batch: list) -> None:
        from entitle.adapters.kube.holds import HoldConflict, merge_hold
        from entitle.domain.escrow import Spent, basis_of, fits, need, spend

        decisions: list[Decision] = []
        for attempt in range(self.retries):
            holds = self._cache.get(tenant)
            if holds is None:
                holds = self._cache[tenant] = await self.store.read(tenant)
            wall = self._wall()
            blocked = self._corrupt_hold(tenant, holds, wall)
            if holds.corrupt and blocked is None:
                # Anything it held has expired by now: replace it with this batch's.
                holds = type(holds)(tenant, holds.resource_version, {}, grants=[])
            applied = self._applied.get(tenant)
            if holds.corrupt:
                pass   # unreadable: keep counting what this replica knew
            elif attempt or holds.resource_version is None or applied is None or \
                    applied[0] != holds.resource_version or wall >= applied[1]:
                self._apply(tenant, holds, wall)
            # Undo point: a conflict re-decides the batch from the object's new content.
            if not holds.corrupt:
                self._expire_own(tenant, holds, wall)
            grants_before = [(g, Spent(s.units, s.seats, dict(s.features))) for g, s in self._grants.get(tenant, [])]
            # Undo log of this attempt's spends (a copy of every spend per batch would cost
            # O(admissions in the last reservationSeconds) on each commit).
            spends_undo: list[tuple[Any, Any]] = []
            entries: dict | None = None
            new_grant, new_spent = None, None
            decisions, changed = [], False
            slice_started = time.perf_counter()
            for parsed, now, _, _ in batch:
                if time.perf_counter() - slice_started > self.slice_seconds:
                    # Fairness: a tenant whose rules are expensive decides its batch in slices,
                    # letting other tenants' admissions run in between (rules hold the GIL).
                    await self._asyncio.sleep(0)
                    slice_started = time.perf_counter()
                decision = self.state.decide(parsed, now)
                slot = None
                if decision.needs_hold and not parsed.dry_run and blocked is not None:
                    decision = Decision(False, reasons.RESERVATION_CONFLICT, blocked, tenant=tenant)
                elif decision.needs_hold and not parsed.dry_run:
                    key = (parsed.namespace, parsed.name)
                    reservation = self.state.reservation_for(parsed, wall + self.ttl)
                    ent = self.state.entitlement(tenant, now)
                    ask = need(decision.change, ent)
                    basis = basis_of(ent)
                    slot = None
                    reads_usage = self._rules_read_usage(ent)
                    if not (ask.units or ask.seats or ask.features) and not reads_usage:
                        decisions.append(decision)   # raises only uncapped pools: nothing to reserve
                        continue
                    if self.escrow and not reads_usage:
                        slot = self._escrow_slot(tenant, ask, basis, wall)
                        if slot is None and new_grant is not None and fits(new_grant, new_spent, ask):
                            slot = (new_grant, new_spent)
                        if slot is None and new_grant is None:
                            candidate = self._new_grant(tenant, ent, holds, wall, basis)
                            if fits(candidate, Spent(), ask):
                                new_grant, new_spent = candidate, Spent()
                                slot = (new_grant, new_spent)
                                changed = True
                    if slot is not None:
                        # Paid from escrow: counted here until this replica's watch sees it stored;
                        # peers count the whole grant meanwhile.
                        spend(slot[1], ask)
                        self._grant_used[(tenant, slot[0].id)] = wall
                        own = self._spends.setdefault(tenant, {})
                        previous = own.pop(key, None)
                        spends_undo.append((key, previous))
                        # Re-inserted at the end: the dict stays in admission order (see _expire_own).
                        own[key] = merge_hold(previous, reservation)
                        self._spent_from[(tenant, key)] = slot[0].id
                        self.state.add_reservation(tenant, key, own[key])
                    else:
                        if entries is None:
                            entries = {k: v for k, v in holds.entries.items() if v.expires > wall}
                        entries[key] = merge_hold(entries.get(key), reservation)
                        self.state.add_reservation(tenant, key, entries[key])
                        changed = True
                decisions.append(decision)
            own_live = [(g, sp) for g, sp in self._grants.get(tenant, []) if g.expires > wall]
            closing = {g.id for g, sp in own_live if self._closable(tenant, g, sp, wall) or new_grant is not None}
            if blocked is not None:
                # Nothing is written over an unreadable hold object before it may be replaced:
                # it may hold peers' holds this replica cannot read (closing a grant into it once
                # overwrote it at once -- found by the corrupted-hold end-to-end test).
                closing = set()
            if changed or closing:
                if entries is None:
                    entries = {k: v for k, v in holds.entries.items() if v.expires > wall}
                # Own grants that sit idle (or that the new one supersedes) are closed in this write:
                # what was admitted from them becomes plain holds -- each dropped by a peer as soon as
                # its watch shows the object -- and their unspent headroom is returned.
                for key, reservation in self._spends.get(tenant, {}).items():
                    if self._spent_from.get((tenant, key)) in closing and reservation.expires > wall:
                        entries[key] = merge_hold(entries.get(key), reservation)
                grants = [g for g in holds.live_grants(wall) if not (g.replica == self.replica and g.id in closing)]
                grants += [new_grant] if new_grant is not None else []
                try:
                    written = self._cache[tenant] = await self.store.write(holds, entries, grants)
                    self.writes += 1
                except HoldConflict:
                    self._cache.pop(tenant, None)
                    self._grants[tenant] = grants_before
                    own = self._spends.setdefault(tenant, {})
                    for key, previous in reversed(spends_undo):
                        own.pop(key, None)
                        if previous is not None:
                            own[key] = previous
                    continue
                if closing:
                    self._grants[tenant] = [(g, sp) for g, sp in self._grants.get(tenant, []) if g.id not in closing]
                if new_grant is not None:
                    self._grants.setdefault(tenant, []).append((new_grant, new_spent))
                    self._grant_used[(tenant, new_grant.id)] = wall
                    if self._closer is None or self._closer.done():
                        self._closer = self._asyncio.get_running_loop().create_task(self.close_idle_grants())
                self._applied[tenant] = (written.resource_version,
                                         _first_expiry(wall, entries.values(),
                                                       [g for g in grants if g.replica != self.replica]))
            loop = self._asyncio.get_running_loop()
            for item, decision in zip(batch, decisions):
                if self._provisional(tenant, decision, item, loop.time()):
                    # Denied while peers hold grants: their unspent part may be what is missing.
                    # Wait for them to close (they do when idle) and decide again.
                    self._cache.pop(tenant, None)
                    loop.call_later(0.1, self._enqueue, tenant, item)
                else:
                    item[2].set_result(decision)
            return
        for (parsed, _, future, _), decision in zip(batch, decisions):
            if decision.needs_hold and not parsed.dry_run:
                decision = Decision(False, reasons.RESERVATION_CONFLICT,
                                    f"tenant {tenant}: could not reserve capacity after {self.retries} "
                                    "concurrent attempts; retry", tenant=tenant)
            future.set_result(decision)
