"""Decide with capacity held in the apiserver, so any number of webhook replicas never over-admit
(the ResourceQuota pattern; see ``entitle.adapters.kube.holds`` and docs/admission-concurrency.md).

Per tenant, one shared hold object carries per-admission **holds** and per-replica escrow
**grants**. A raising admission is paid from this replica's grant in memory -- no write -- while
the grant has room and is within its lease; otherwise it writes, with the
resourceVersion the decision was made against, a new grant sized from the headroom (or, near
the cap, a hold for this admission alone). On a conflict: re-read, decide again, up to
``retries`` times, then deny (``ReservationConflict``).

The escrow policy (slot choice, chunk growth, idle grants, own-spend expiry, merges) is the
domain's ``GrantBook``; this module reads, writes and retries.

Group commit: requests of a tenant that arrive while its write is in flight are decided
together, one after the other against the state, and committed with a single write.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from entitle.adapters.kube.holds import HoldConflict, Holds, HoldStore, object_name
from entitle.adapters.webhook.admission import NotYetKnown, to_request
from entitle.domain import reasons
from entitle.domain.admission import DELETE, Decision
from entitle.domain.escrow import Grant, Spent, basis_of, fits, need
from entitle.domain.grant_book import GrantBook, merge_reservations
from entitle.domain.rules import projections
from entitle.domain.state import ClusterState, Reservation, WorkloadRequest

log = logging.getLogger("entitle.webhook")

_CAP_REASONS = frozenset({reasons.INSTANCE_CAP_EXCEEDED, reasons.SEAT_CAP_EXCEEDED, reasons.FEATURE_LIMIT_EXCEEDED})


def _first_moment(wall: datetime, moments: Any) -> datetime:
    """The next of these moments (the state's count changes then)."""
    return min((m for m in moments if m is not None and m > wall), default=datetime.max.replace(tzinfo=wall.tzinfo))


@dataclass
class PendingReview:
    """A request waiting for its tenant's next commit."""

    request: WorkloadRequest
    now: datetime
    answer: asyncio.Future
    # (loop time) until when a cap denial that peers' unspent grants may cause is re-decided.
    peer_wait_until: float


@dataclass
class Attempt:
    """One try at committing a batch: what it decided and what its write would carry."""

    holds: Holds
    wall: datetime
    blocked: str | None                               # the unreadable-hold denial, if any
    decisions: list[Decision] = field(default_factory=list)
    entries: dict | None = None                       # the hold object's holds, once changed
    new_grant: tuple[Grant, Spent] | None = None
    changed: bool = False

    def held_entries(self) -> dict:
        if self.entries is None:
            self.entries = {k: v for k, v in self.holds.entries.items() if v.expires > self.wall}
        return self.entries


class SharedAdmission:
    """The webhook's decider for raising requests: the engine's decision, paid for with capacity
    held in the shared hold object (module docstring)."""

    # Longest stretch one tenant's batch decides before yielding to the event loop.
    slice_seconds = 0.005
    # How long a scale of a Workload this replica has not seen yet waits for its watch (the
    # Workload exists: another replica admitted its creation a moment ago).
    watch_wait_seconds = 2.0
    # How long after an object's admission its watch event may still be on its way to a replica
    # (after the apiserver stored it): part of a grant's lapse (domain/escrow.py).
    watch_margin_seconds = 2.5

    def __init__(self, state: ClusterState, store: HoldStore, ttl: timedelta, retries: int = 10,
                 wall_clock: Callable[[], datetime] | None = None, replica: str | None = None, escrow: bool = True,
                 chunk: int = 8, max_chunk: int = 512, lease_seconds: float = 2.0,
                 webhook_timeout_seconds: float = 5.0) -> None:
        self.state, self.store, self.ttl, self.retries = state, store, ttl, retries
        # A grant is paid from for lease_seconds; peers stop counting it lapse seconds after they
        # first saw it: by then its holder, alive or dead, paid nothing more from it for the
        # webhook's timeout (so what it paid is stored) plus the watch margin (and seen).
        self.lease = timedelta(seconds=lease_seconds)
        self.lapse = timedelta(seconds=lease_seconds + webhook_timeout_seconds + self.watch_margin_seconds)
        # How long a request denied only for want of what peers hold in grants waits for them to
        # close or lapse (they close when idle) -- within the webhook's time budget -- before
        # it is answered "retry" (never a cap denial: the units may be nobody's).
        self.peer_wait_seconds = max(0.5, webhook_timeout_seconds - 2.0)
        # Unique per decider (a process may hold several, in tests): whose grants are whose.
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.escrow, self.initial_chunk, self.max_chunk = escrow, chunk, max_chunk
        self.wall_clock = wall_clock
        self._books: dict[str, GrantBook] = {}
        self._idle_close = 0.25
        # Per tenant: (resourceVersion of the hold object the state reflects, the first expiry
        # among what it counts -- re-apply from then on).
        self._applied: dict[str, tuple[str | None, datetime]] = {}
        self._cache: dict[str, Holds] = {}
        self._queues: dict[str, list[PendingReview]] = {}
        # (tenant, resourceVersion) of an unreadable hold object -> when this replica first saw it.
        self._corrupt_since: dict[tuple[str, str | None], datetime] = {}
        self._closer: asyncio.Task | None = None
        # (replica, grant id) of every peer grant seen -> when this replica first saw it.
        self._first_seen: dict[tuple[str, str], datetime] = {}
        self.writes = 0

    @property
    def idle_close_seconds(self) -> float:
        return self._idle_close

    @idle_close_seconds.setter
    def idle_close_seconds(self, seconds: float) -> None:
        self._idle_close = seconds
        for book in self._books.values():
            book.idle_close = timedelta(seconds=seconds)

    def book(self, tenant: str) -> GrantBook:
        book = self._books.get(tenant)
        if book is None:
            book = self._books[tenant] = GrantBook(self.replica, self.ttl, self.initial_chunk, self.max_chunk,
                                                   timedelta(seconds=self._idle_close), self.lease, self.lapse)
        return book

    def close(self) -> None:
        """Stop closing idle grants (tests; the operator's loop ends with the process)."""
        if self._closer is not None:
            self._closer.cancel()

    def _wall(self) -> datetime:
        # Holds live in real time whatever clock decides entitlements (tests inject one):
        # their TTL covers webhook calls and watch lag, which happen in real time.
        return self.wall_clock() if self.wall_clock else datetime.now(timezone.utc)

    # -- requests in ---------------------------------------------------------------------------
    async def review(self, now: datetime, **request: Any) -> tuple[WorkloadRequest, Decision]:
        """Decide a Workload admission request (the AdmissionRequest's parts as keywords)."""
        parsed = await self.parse(lambda: to_request(self.state, **request))
        return parsed, await self.decide(parsed, now)

    async def parse(self, build: Callable[[], Any]) -> Any:
        """``build()``, waiting briefly while it raises :class:`NotYetKnown` (watch lag)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.watch_wait_seconds
        while True:
            try:
                return build()
            except NotYetKnown:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.02)

    async def decide(self, parsed: WorkloadRequest, now: datetime) -> Decision:
        """Decide an engine request, with capacity held in the apiserver for raises."""
        tenant = self.state.tenant_of(parsed.namespace)
        if tenant is None or parsed.operation == DELETE:
            return self.state.decide(parsed, now)
        loop = asyncio.get_running_loop()
        pending = PendingReview(parsed, now, loop.create_future(), loop.time() + self.peer_wait_seconds)
        self._enqueue(tenant, pending)
        return await pending.answer

    def _enqueue(self, tenant: str, item: PendingReview | None) -> None:
        """Queue a request (or, ``None``, a bare pass that closes idle grants) for the tenant."""
        queue = self._queues.get(tenant)
        if queue is None:
            self._queues[tenant] = [item] if item is not None else []
            asyncio.get_running_loop().create_task(self._drain(tenant))
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
                    for pending in batch:
                        if not pending.answer.done():
                            pending.answer.set_exception(exc)
        finally:
            self._queues.pop(tenant, None)

    async def close_idle_grants(self) -> None:
        """Run forever: return idle grants' unspent headroom (a compare-and-swap per tenant)."""
        while True:
            await asyncio.sleep(self.idle_close_seconds / 2)
            wall = self._wall()
            for tenant, book in list(self._books.items()):
                if tenant not in self._queues and book.any_closable(wall):
                    self._enqueue(tenant, None)

    # -- the hold object in the state ----------------------------------------------------------
    def _apply(self, tenant: str, holds: Holds, wall: datetime) -> None:
        """Make the state count exactly: the object's live holds, this replica's own unwritten
        admissions, and every other replica's live grants."""
        counted = dict(holds.entries)
        for key, spend in self.book(tenant).live_spends(wall).items():
            counted[key] = merge_reservations(counted.get(key), spend)
        self.state.replace_reservations(tenant, counted, wall)
        peers = self._peer_grants(holds, wall)
        self.state.set_peer_grants(tenant, peers)
        self._applied[tenant] = (holds.resource_version, self._next_change(wall, holds.entries.values(), peers))

    # -- peers' grants ---------------------------------------------------------------------------
    def _peer_grants(self, holds: Holds, wall: datetime) -> list[Grant]:
        """Other replicas' grants this replica still counts: unexpired and not lapsed."""
        out = []
        for grant in holds.live_grants(wall):
            if grant.replica == self.replica:
                continue
            if grant.lapse is not None:
                seen = self._first_seen.setdefault((grant.replica, grant.id), wall)
                if wall >= seen + timedelta(seconds=grant.lapse):
                    continue
            out.append(grant)
        return out

    def _stops_counting(self, grant: Grant) -> datetime | None:
        """When this replica stops counting a peer's grant: its expiry or its lapse."""
        seen = self._first_seen.get((grant.replica, grant.id))
        if grant.lapse is None or seen is None:
            return grant.expires
        return min(grant.expires, seen + timedelta(seconds=grant.lapse))

    def _next_change(self, wall: datetime, entries: Any, peers: list[Grant]) -> datetime:
        return _first_moment(wall, [e.expires for e in entries] + [self._stops_counting(g) for g in peers])

    def _forget_seen(self, wall: datetime) -> None:
        """Drop first sightings of grants that expired (bounded memory)."""
        if len(self._first_seen) > 4096:
            horizon = wall - self.ttl - self.lapse
            self._first_seen = {k: v for k, v in self._first_seen.items() if v > horizon}

    def _expire_own(self, tenant: str, holds: Holds, wall: datetime) -> None:
        """Drop this replica's own expired spends; count for each name only what the hold object
        still holds."""
        for key in self.book(tenant).expire_oldest(wall):
            self.state.replace_key_reservation(tenant, key, holds.entries.get(key), wall)

    def _corrupt_hold(self, tenant: str, holds: Holds, wall: datetime) -> str | None:
        """For an unreadable hold object: the denial message for raising requests until any hold
        it held has expired (one TTL after this replica first saw it); None when not blocked."""
        if not holds.corrupt:
            return None
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

    async def _begin(self, tenant: str, attempt: int) -> Attempt:
        """Read (or reuse) the hold object and bring the state in line with it."""
        holds = self._cache.get(tenant)
        if holds is None:
            holds = self._cache[tenant] = await self.store.read(tenant)
        wall = self._wall()
        blocked = self._corrupt_hold(tenant, holds, wall)
        if holds.corrupt and blocked is None:
            # Anything it held has expired by now: replace it with this batch's.
            holds = Holds(tenant, holds.resource_version, {}, grants=[])
        applied = self._applied.get(tenant)
        if not holds.corrupt:   # (unreadable: keep counting what this replica knew)
            if attempt or holds.resource_version is None or applied is None or \
                    applied[0] != holds.resource_version or wall >= applied[1]:
                self._apply(tenant, holds, wall)
            self._expire_own(tenant, holds, wall)
        self.book(tenant).checkpoint()   # undo point: a conflict re-decides from the new content
        return Attempt(holds, wall, blocked)

    # -- one batch -------------------------------------------------------------------------------
    @staticmethod
    def _rules_read_usage(ent: Any) -> bool:
        """Rules that read the tenant's usage are caps too: those admissions take holds.
        (``projections`` is computed once per rule set.)"""
        return "tenant" in projections(ent.rules)

    def _next_grant(self, tenant: str, ent: Any, attempt: Attempt, basis: str) -> Grant:
        usage = self.state.usage[tenant]
        granted = self.state.peer_grants(tenant) or (0, 0, {})
        features = {f: usage.feature_count(f) + granted[2].get(f, 0) for f in ent.features}
        deciders = 1 + len({g.replica for g in self._peer_grants(attempt.holds, attempt.wall)})
        return self.book(tenant).next_grant(ent, usage.units + granted[0], usage.seats + granted[1], features,
                                            deciders, attempt.wall, basis)

    def _escrow_slot(self, tenant: str, ent: Any, ask: Spent, attempt: Attempt) -> tuple[Grant, Spent] | None:
        """Where to pay ``ask`` from: an own grant, the grant this batch asks for, or a new one."""
        basis = basis_of(ent)
        slot = self.book(tenant).slot(ask, basis, attempt.wall)
        if slot is None and attempt.new_grant is not None and fits(*attempt.new_grant, ask):
            slot = attempt.new_grant
        if slot is None and attempt.new_grant is None:
            candidate = self._next_grant(tenant, ent, attempt, basis)
            if fits(candidate, Spent(), ask):
                slot = attempt.new_grant = (candidate, Spent())
                attempt.changed = True
        return slot

    def _reserve(self, tenant: str, parsed: WorkloadRequest, now: datetime, decision: Decision,
                 attempt: Attempt) -> None:
        """Hold what an allowed raising request needs: from escrow, or as a hold in the write."""
        key = (parsed.namespace, parsed.name)
        reservation: Reservation = self.state.reservation_for(parsed, attempt.wall + self.ttl)
        ent = self.state.entitlement(tenant, now)
        ask = need(decision.change, ent)
        reads_usage = self._rules_read_usage(ent)
        if not (ask.units or ask.seats or ask.features) and not reads_usage:
            return   # raises only uncapped pools: nothing to reserve
        slot = self._escrow_slot(tenant, ent, ask, attempt) if self.escrow and not reads_usage else None
        if slot is not None:
            # Paid from escrow: counted here until this replica's watch sees it stored; peers
            # count the whole grant meanwhile.
            counted = self.book(tenant).pay(key, slot[0], slot[1], ask, reservation, attempt.wall)
            self.state.add_reservation(tenant, key, counted)
            return
        entries = attempt.held_entries()
        entries[key] = merge_reservations(entries.get(key), reservation)
        self.state.add_reservation(tenant, key, entries[key])
        attempt.changed = True

    async def _decide_batch(self, tenant: str, batch: list[PendingReview], attempt: Attempt) -> None:
        started = time.perf_counter()
        for pending in batch:
            if time.perf_counter() - started > self.slice_seconds:
                # Fairness: a tenant whose rules are expensive decides its batch in slices,
                # letting other tenants' admissions run in between (rules hold the GIL).
                await asyncio.sleep(0)
                started = time.perf_counter()
            decision = self.state.decide(pending.request, pending.now)
            if decision.needs_hold and not pending.request.dry_run:
                if attempt.blocked is not None:
                    # A final refusal (403), not a 429 clients retry silently: an unreadable hold
                    # object is for an admin to see; its message says when it is replaced.
                    decision = Decision(False, reasons.RESERVATION_CONFLICT, attempt.blocked, tenant=tenant)
                else:
                    self._reserve(tenant, pending.request, pending.now, decision, attempt)
            attempt.decisions.append(decision)

    async def _write(self, tenant: str, attempt: Attempt) -> bool:
        """Write the attempt's holds and grants (closing idle own grants); False on a conflict."""
        book, wall = self.book(tenant), attempt.wall
        # Nothing is written over an unreadable hold object before it may be replaced: it may
        # hold peers' holds this replica cannot read (closing a grant into it once overwrote it
        # at once -- found by the corrupted-hold end-to-end test).
        closing = set() if attempt.blocked is not None else book.closing(wall, attempt.new_grant is not None)
        if not (attempt.changed or closing):
            return True
        entries = attempt.held_entries()
        # Own grants that sit idle (or that the new one supersedes) are closed in this write: what
        # was admitted from them becomes plain holds -- each dropped by a peer as soon as its
        # watch shows the object -- and their unspent headroom is returned.
        for key, reservation in book.paid_from(closing, wall).items():
            entries[key] = merge_reservations(entries.get(key), reservation)
        # Peers' lapsed grants are dropped: a lapse is measured from a sight after the grant was
        # written, so every replica may stop counting it by now.
        peers = self._peer_grants(attempt.holds, wall)
        grants = [g for g in attempt.holds.live_grants(wall) if g.replica == self.replica and g.id not in closing]
        grants += peers + ([attempt.new_grant[0]] if attempt.new_grant is not None else [])
        try:
            written = self._cache[tenant] = await self.store.write(attempt.holds, entries, grants)
            self.writes += 1
        except HoldConflict:
            self._cache.pop(tenant, None)
            book.rollback()
            return False
        book.written(closing, attempt.new_grant, wall)
        if attempt.new_grant is not None and (self._closer is None or self._closer.done()):
            self._closer = asyncio.get_running_loop().create_task(self.close_idle_grants())
        self._applied[tenant] = (written.resource_version, self._next_change(wall, entries.values(), peers))
        self._forget_seen(wall)
        return True

    def _answer(self, tenant: str, batch: list[PendingReview], decisions: list[Decision]) -> None:
        loop = asyncio.get_running_loop()
        for pending, decision in zip(batch, decisions):
            if not decision.allowed and decision.reason in _CAP_REASONS and self.state.peer_grants(tenant) is not None:
                decision = self._without_peers(tenant, pending, decision, loop.time())
                if decision is None:
                    # Short only of what peers hold in grants: wait for them to close (they do
                    # when idle) or lapse (a stopped replica's), and decide again.
                    self._cache.pop(tenant, None)
                    loop.call_later(0.1, self._enqueue, tenant, pending)
                    continue
            pending.answer.set_result(decision)

    def _without_peers(self, tenant: str, pending: PendingReview, decision: Decision, now: float) -> Decision | None:
        """A cap denial made while peers hold grants, as it is answered: the denial counting only
        units that are somebody's (stored, held, this replica's own) when it stands without the
        peers' grants; None (wait) when the grants alone are short and the budget allows; else
        a retryable refusal saying when they stop counting."""
        alone = self.state.decide(pending.request, pending.now, peer_grants=False)
        if not alone.allowed:
            return alone
        if now < pending.peer_wait_until:
            return None
        wall = self._wall()
        moments = [self._stops_counting(g) for g in self._peer_grants(self._cache.get(tenant) or Holds(tenant, None, {}),
                                                                        wall)]
        until = _first_moment(wall, moments)
        seconds = 1 if until.year == datetime.max.year else max(1, math.ceil((until - wall).total_seconds()))
        units, seats, features = self.state.peer_grants(tenant) or (0, 0, {})
        held = ", ".join([f"instances {units}"] * bool(units) + [f"seats {seats}"] * bool(seats) +
                         [f"feature {f} {n}" for f, n in sorted(features.items()) if n])
        return Decision(False, reasons.RESERVATION_CONFLICT,
                        f"tenant {tenant}: within its caps, but the capacity is held in other webhook replicas' "
                        f"escrow grants ({held}), returned when they close or lapse (within {seconds} s); retry",
                        tenant=tenant, retry_after=seconds)

    async def _commit(self, tenant: str, batch: list[PendingReview]) -> None:
        decisions: list[Decision] = []
        for number in range(self.retries):
            attempt = await self._begin(tenant, number)
            await self._decide_batch(tenant, batch, attempt)
            decisions = attempt.decisions
            if await self._write(tenant, attempt):
                self._answer(tenant, batch, decisions)
                return
        for pending, decision in zip(batch, decisions):
            if decision.needs_hold and not pending.request.dry_run:
                decision = Decision(False, reasons.RESERVATION_CONFLICT,
                                    f"tenant {tenant}: could not reserve capacity after {self.retries} "
                                    "concurrent attempts; retry", tenant=tenant, retry_after=1)
            pending.answer.set_result(decision)
