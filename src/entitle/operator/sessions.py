"""Concurrent sessions: check-outs, heartbeats and check-ins decided with ``domain.sessions`` and
written to the tenant's session object by compare-and-swap (adapters/kube/sessions), the
tenant's usage kept current from a watch of those objects, and ``dev.entitle.session.v1``
records from what is stored -- by every replica, with deterministic ids, as for Workloads.

**Group commit.** Operations on one tenant queue up; one writer per tenant applies every queued
operation to the newest book and writes once. A conflict (another replica wrote) re-reads and
re-applies the same operations -- a check-out keeps its id, so a write that succeeded but was
reported lost (a retried PUT answered 409) is found in the re-read book, never taken twice.

**Lapse.** Each replica measures a session's ttl from the moment it first saw its current
renewal, on its own monotonic clock (domain/sessions: never early, whatever the wall clocks);
check-outs end lapsed sessions in the same write, and a sweep does it every second so their
records are not late.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from entitle.adapters.kube.sessions import LABEL, SessionConflict, decode
from entitle.api import limits
from entitle.api.common import parse_time
from entitle.domain import sessions as rules
from entitle.domain.bursts import BurstClock
from entitle.domain.records import session_record
from entitle.domain.sessions import Book, Session, SessionRefused
from entitle.domain.state import ClusterState
from entitle.operator import metrics

log = logging.getLogger("entitle.sessions")

# Clock skew allowed between the replica that checked a session out and the one reconciling.
VANISH_MARGIN = timedelta(minutes=5)
# Operations one tenant may have queued on this replica (a flood is answered 429, not queued).
MAX_QUEUED = 2_000
WRITE_ATTEMPTS = 8

# An operation: (book, wall now) -> (book, result); raises SessionRefused for itself only.
Op = Callable[[Book, datetime], tuple[Book, Any]]


@dataclass
class _Pending:
    op: Op
    future: asyncio.Future


@dataclass
class _Tenant:
    book: Book | None = None
    queue: list[_Pending] = field(default_factory=list)
    writer: asyncio.Task | None = None
    # (session id, renewals) -> monotonic time this replica first saw that renewal
    first_seen: dict[tuple[str, int], float] = field(default_factory=dict)
    corrupt_since: float | None = None
    recorded: set[tuple[str, str]] = field(default_factory=set)   # (session id, "checkout"|"end")


class SessionService:
    def __init__(self, state: ClusterState, store: Any, append: Callable[[dict], None], source: str,
                 clock: Callable[[], datetime], monotonic: Callable[[], float] = time.monotonic,
                 records: bool = True) -> None:
        self.state, self.store, self.append, self.source = state, store, append, source
        self.clock, self.monotonic = clock, monotonic
        self.records = records
        self.tenants: dict[str, _Tenant] = {}
        self.writes = 0

    # --- the API -----------------------------------------------------------------------
    async def checkout(self, tenant: str, user: object, key: object = None, ttl: object = None,
                       warnings: list[str] | None = None) -> Session:
        """Check a session out; a burst warning (a seat above ``max``) is appended to ``warnings``."""
        user, key = rules.valid_user(user), rules.valid_key(key)
        ent = self._entitlement(tenant)
        ttl_seconds = rules.session_ttl(ent, ttl)
        new_id = secrets.token_urlsafe(18)

        def op(book: Book, now: datetime) -> tuple[Book, tuple[Session, str | None]]:
            if new_id in book.live:          # this very check-out was written already
                return book, (book.live[new_id], None)
            burst = self.state.bursts.get((tenant, "sessions")) or BurstClock()
            book, session, warning = rules.checkout(book, self._entitlement(tenant), user, key, ttl_seconds,
                                                    new_id, burst, now)
            return book, (session, warning)

        session, warning = await self._submit(tenant, op)
        if warning is not None and warnings is not None:
            warnings.append(warning)
        return session

    async def heartbeat(self, tenant: str, sid: str) -> Session:
        return await self._submit(tenant, lambda book, now: rules.heartbeat(book, sid, now))

    async def checkin(self, tenant: str, sid: str) -> None:
        await self._submit(tenant, lambda book, now: (rules.checkin(book, sid, now), None))

    def used(self, tenant: str) -> int:
        return self.state.usage[tenant].sessions

    def _entitlement(self, tenant: str) -> Any:
        ent = self.state.entitlement(tenant, self.clock())
        if not ent.active:
            raise SessionRefused(403, "NoActiveLicense", f"tenant {tenant} has no active license")
        return ent.sessions

    # --- group commit --------------------------------------------------------------------
    async def _submit(self, tenant: str, op: Op) -> Any:
        t = self.tenants.setdefault(tenant, _Tenant())
        if len(t.queue) >= MAX_QUEUED:
            raise SessionRefused(429, "TooManyRequests", f"{MAX_QUEUED} session operations of tenant {tenant} are "
                                                         f"queued on this replica; retry")
        future = asyncio.get_running_loop().create_future()
        t.queue.append(_Pending(op, future))
        if t.writer is None or t.writer.done():
            t.writer = asyncio.get_running_loop().create_task(self._drain(tenant, t))
        return await future

    async def _drain(self, tenant: str, t: _Tenant) -> None:
        while t.queue:
            batch, t.queue = t.queue, []
            try:
                await self._commit(tenant, t, batch)
            except Exception as exc:   # the store unreachable: every caller of the batch hears it
                log.warning("session write for tenant %s failed: %s", tenant, exc)
                metrics.SESSION_STORE_WRITES.labels(outcome="error").inc()
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(SessionRefused(503, "StoreUnavailable",
                                                              "the session store could not be written; retry"))

    async def _commit(self, tenant: str, t: _Tenant, batch: list[_Pending]) -> None:
        book = t.book if t.book is not None else await self.store.read(tenant)
        for _ in range(WRITE_ATTEMPTS):
            seen_at, now = self.monotonic(), self.clock()
            book = self._usable(tenant, t, book, seen_at)
            self._see(t, book, seen_at)
            # Trim first: a lapse found late (dated at its expiry, maybe long ago) is still
            # written once, so every recorder sees it.
            book = rules.end_lapsed(rules.trim_ended(book, now), rules.lapsed(book, t.first_seen, seen_at))
            results: list[tuple[_Pending, Any, BaseException | None]] = []
            for p in batch:
                try:
                    book, result = p.op(book, now)
                    results.append((p, result, None))
                except SessionRefused as refused:
                    results.append((p, None, refused))
            try:
                written = await self.store.write(book)
            except SessionConflict:
                metrics.SESSION_STORE_WRITES.labels(outcome="conflict").inc()
                book = await self.store.read(tenant)
                continue
            self.writes += 1
            metrics.SESSION_STORE_WRITES.labels(outcome="ok").inc()
            # A renewal written here was promised from ``seen_at``: measured from there.
            self.observe(tenant, written, seen_at=seen_at)
            for p, result, refused in results:
                if p.future.done():
                    continue
                if refused is not None:
                    p.future.set_exception(refused)
                else:
                    p.future.set_result(result)
            return
        for p in batch:
            if not p.future.done():
                p.future.set_exception(SessionRefused(429, "SessionConflict", "the session store kept changing; retry"))

    def _usable(self, tenant: str, t: _Tenant, book: Book, now: float) -> Book:
        """A corrupt book (hand-edited) is replaced once every session it might have held has
        lapsed: no heartbeat can be written to it, so after the longest ttl nobody holds one."""
        if book.corrupt is None:
            t.corrupt_since = None
            return book
        if t.corrupt_since is None:
            t.corrupt_since = now
            log.error("the session object of tenant %s is unreadable (%s): check-outs wait until it is replaced",
                      tenant, book.corrupt)
        limit = self.state.entitlement(tenant, self.clock()).sessions.ttl_seconds
        if now - t.corrupt_since < max(limit, limits.MIN_SESSION_TTL):
            raise SessionRefused(503, "StoreUnreadable", f"the session object of tenant {tenant} is unreadable; "
                                                         f"it is replaced after one session ttl")
        return Book(tenant, book.version)

    # --- what is stored ------------------------------------------------------------------
    def _see(self, t: _Tenant, book: Book, at: float) -> None:
        for sid, s in book.live.items():
            t.first_seen.setdefault((sid, s.renewals), at)

    def observe(self, tenant: str, book: Book, seen_at: float | None = None) -> None:
        """A stored version of the tenant's book (own write or watch): usage, lapse clocks, records."""
        t = self.tenants.setdefault(tenant, _Tenant())
        if t.book is not None and t.book.version is not None and book.version is not None \
                and _newer(t.book.version, book.version):
            return                          # an older version than the one known (a late watch event)
        t.book = book
        if book.corrupt is not None:
            return
        at = self.monotonic() if seen_at is None else seen_at
        current = {(sid, s.renewals) for sid, s in book.live.items()}
        t.first_seen = {k: v for k, v in t.first_seen.items() if k in current}
        self._see(t, book, at)
        ent = self.state.entitlement(tenant, self.clock()).sessions
        self.state.usage[tenant].sessions = rules.seats_in_use(book.live, ent.per_user)
        if self.records:
            self._record(tenant, t, book, ent.per_user)

    def _record(self, tenant: str, t: _Tenant, book: Book, per_user: bool) -> None:
        out = []
        for sid, s in book.live.items():
            if (sid, "checkout") not in t.recorded:
                t.recorded.add((sid, "checkout"))
                out.append(session_record(tenant, sid, s.user, rules.seat_of(s, per_user), "checkout", s.since,
                                          s.since, self.source, ttl=s.ttl))
        for sid, e in book.ended.items():
            if (sid, "end") not in t.recorded:
                t.recorded.add((sid, "end"))
                if (sid, "checkout") not in t.recorded:
                    t.recorded.add((sid, "checkout"))
                    out.append(session_record(tenant, sid, e.user, rules.seat_of(e, per_user), "checkout", e.since,
                                              e.since, self.source))
                out.append(session_record(tenant, sid, e.user, rules.seat_of(e, per_user), e.operation, e.at,
                                          e.since, self.source))
        known = set(book.live) | set(book.ended)
        t.recorded = {k for k in t.recorded if k[0] in known}
        for record in out:
            self.append(record)     # (the meter pseudonymizes user names when configured)

    def watch_event(self, event_type: str, body: dict) -> None:
        """A session ConfigMap from the informer."""
        meta = body.get("metadata") or {}
        tenant = (meta.get("annotations") or {}).get("entitle.dev/tenant")
        if not tenant or (meta.get("labels") or {}).get(LABEL) != "true":
            return
        if event_type == "DELETED":       # removed by hand: nothing is held any more
            self.tenants.setdefault(tenant, _Tenant()).book = None
            self.state.usage[tenant].sessions = 0
            return
        self.observe(tenant, decode(tenant, meta.get("resourceVersion"), body.get("data")))

    def reconcile_vanished(self, live: Iterable[tuple[str, str]]) -> int:
        """At start-up, once the session objects are listed: sessions this replica's ledger holds
        as checked out but no book has any more ended (and were trimmed) while it was down.
        Each gets a ``lapse`` record dated now (``noticed``: see records.session_record).

        Only check-outs older than the ended-session retention (plus a skew margin) qualify:
        a younger one absent from the list may have been checked out by a peer after it."""
        now = self.clock()
        horizon = now - rules.ENDED_RETENTION - VANISH_MARGIN
        count = 0
        for key, body in live:
            tenant, _, sid = key.partition("/")
            t = self.tenants.get(tenant)
            if t is not None and t.book is not None and (t.book.corrupt is not None or sid in t.book.live
                                                         or sid in t.book.ended):
                continue
            try:
                last = json.loads(body)
                data = last["data"]
                since = parse_time(data["since"])
                if parse_time(last["time"]) > horizon:
                    continue
                self.append(session_record(tenant, sid, data["user"], data["seat"], "lapse", now, since,
                                           self.source, noticed=True))
                count += 1
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("ledger row of session %s is unreadable, left as is: %s", key[:120], exc)
        return count

    # --- the sweep -----------------------------------------------------------------------
    async def sweep(self) -> int:
        """End the sessions this replica sees lapsed (one write per tenant that has any)."""
        now = self.monotonic()
        due = [tenant for tenant, t in self.tenants.items()
               if t.book is not None and t.book.corrupt is None and rules.lapsed(t.book, t.first_seen, now)]
        for tenant in due:
            try:
                await self._submit(tenant, lambda book, _now: (book, None))
            except SessionRefused:
                pass
        return len(due)

    async def run_sweeper(self, period: float = 1.0) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await self.sweep()
            except Exception:   # never let the sweep end: lapses would stop
                log.exception("the session sweep failed")


def _newer(known: str, candidate: str) -> bool:
    """resourceVersions are opaque, but etcd's are integers: compare them when they are."""
    try:
        return int(known) > int(candidate)
    except ValueError:
        return False

