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
from entitle.domain.state import ClusterState, WorkloadRequest


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
        spec = (body or {}).get("spec") or {}
        replicas = spec.get("replicas", 0) if isinstance(spec, dict) else None
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= limits.MAX_REPLICAS:
            raise RequestNotUnderstood(f"scale: spec.replicas must be an integer from 0 to {limits.MAX_REPLICAS}")
        updated = stored.model_copy(deep=True)
        updated.spec.replicas = replicas
        return WorkloadRequest(UPDATE, namespace, name, updated, stored, dry_run)
    if operation not in (CREATE, UPDATE):
        raise RequestNotUnderstood(f"operation {operation} is not handled")
    if body is None:
        raise RequestNotUnderstood(f"{operation} without an object")
    return WorkloadRequest(operation, namespace, name, _workload(body, namespace), _workload(old, namespace), dry_run)


def _first_expiry(entries: dict, wall: datetime) -> datetime:
    return min((h.expires for h in entries.values() if h.expires > wall), default=datetime.max.replace(tzinfo=wall.tzinfo))


class SharedAdmission:
    """Decide with capacity held in the apiserver, so any number of webhook replicas never
    over-admit (the ResourceQuota pattern; see ``entitle.adapters.kube.holds``).

    Per tenant: read the hold object (cached), count its holds in the state, decide; when a
    request raises usage, write the new hold with the resourceVersion the decision was made
    against. On a conflict: re-read and decide again, up to ``retries`` times, then deny.

    Group commit: requests of a tenant that arrive while its hold write is in flight are
    decided together, one after the other against the state (each counting the holds of those
    before it), and committed with a single compare-and-swap write.
    """

    # Longest stretch one tenant's batch decides before yielding to the event loop.
    slice_seconds = 0.005

    def __init__(self, state: ClusterState, store: Any, ttl: timedelta, retries: int = 10,
                 wall_clock: Any = None, settle: timedelta = timedelta(seconds=5)) -> None:
        import asyncio

        self.state, self.store, self.ttl, self.retries = state, store, ttl, retries
        # A hold this replica has seen settled (stored per its watch) for ``settle`` is dropped
        # from the shared object on the next write, instead of riding along until its TTL: the
        # object's size -- and so every write's cost -- follows the admissions in flight, not
        # the admission rate x TTL. Peers whose watch lags this one's by more than ``settle``
        # would stop counting it early; see docs/admission-concurrency.md.
        self.settle = settle
        self._settled_since: dict[tuple, datetime] = {}
        # Per tenant: (resourceVersion of the hold object the state's reservations reflect,
        # the first expiry among its holds -- re-apply from then on).
        self._applied: dict[str, tuple[str | None, datetime]] = {}
        self.wall_clock = wall_clock
        self._cache: dict[str, Any] = {}
        self._queues: dict[str, list] = {}
        # (tenant, resourceVersion) of an unreadable hold object -> when this replica first saw it.
        self._corrupt_since: dict[tuple[str, str | None], datetime] = {}
        self._asyncio = asyncio
        # A store with coroutine read/write (AsyncHoldStore) runs on this loop; a blocking one
        # (HoldStore, MemoryHoldStore) in a worker thread.
        self._native = asyncio.iscoroutinefunction(getattr(store, "write", None))

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await fn(*args) if self._native else await self._asyncio.to_thread(fn, *args)

    def _wall(self) -> datetime:
        from datetime import timezone

        # Holds live in real time whatever clock decides entitlements (tests inject one):
        # their TTL covers webhook calls and watch lag, which happen in real time.
        return self.wall_clock() if self.wall_clock else datetime.now(timezone.utc)

    def _settled(self, key: tuple[str, str], hold: Any, wall: datetime) -> bool:
        """Settled on this replica for at least ``settle`` (then the hold can leave the object)."""
        marker = (key, hold.uid, hold.generation)
        if not self.state.hold_settled(key, hold):
            return False
        since = self._settled_since.setdefault(marker, wall)
        if len(self._settled_since) > 50_000:  # markers of holds long gone
            for old in list(self._settled_since)[:25_000]:
                del self._settled_since[old]
        return wall - since >= self.settle

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
        future = self._asyncio.get_running_loop().create_future()
        queue = self._queues.get(tenant)
        if queue is None:
            self._queues[tenant] = [(parsed, now, future)]
            self._asyncio.get_running_loop().create_task(self._drain(tenant))
        else:
            queue.append((parsed, now, future))
        return await future

    async def _drain(self, tenant: str) -> None:
        try:
            while self._queues.get(tenant):
                batch, self._queues[tenant] = self._queues[tenant], []
                try:
                    await self._commit(tenant, batch)
                except Exception as exc:  # e.g. the apiserver is unreachable: fail these requests
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
        finally:
            self._queues.pop(tenant, None)

    async def _commit(self, tenant: str, batch: list) -> None:
        from entitle.adapters.kube.holds import HoldConflict, merge_hold

        decisions: list[Decision] = []
        for _ in range(self.retries):
            holds = self._cache.get(tenant)
            if holds is None:
                holds = self._cache[tenant] = await self._call(self.store.read, tenant)
            wall = self._wall()
            blocked = self._corrupt_hold(tenant, holds, wall)
            if holds.corrupt and blocked is None:
                # Any hold it held has expired by now: replace it with the holds of this batch.
                holds = type(holds)(tenant, holds.resource_version, {})
            # The state already counts this version of the holds (we applied or wrote it) and
            # none has expired since: requests that write nothing -- dry runs, decreases,
            # denials -- cost O(1) here, not O(holds).
            applied = self._applied.get(tenant)
            if holds.corrupt:
                pass   # unreadable: keep counting what this replica knew
            elif holds.resource_version is None or applied is None or applied[0] != holds.resource_version \
                    or wall >= applied[1]:
                self.state.replace_reservations(tenant, holds.entries, wall)
                self._applied[tenant] = (holds.resource_version, _first_expiry(holds.entries, wall))
            entries: dict | None = None
            decisions, changed = [], False
            slice_started = time.perf_counter()
            for parsed, now, _ in batch:
                if time.perf_counter() - slice_started > self.slice_seconds:
                    # Fairness: a tenant whose rules are expensive decides its batch in slices,
                    # letting other tenants' admissions run in between (rules hold the GIL).
                    await self._asyncio.sleep(0)
                    slice_started = time.perf_counter()
                decision = self.state.decide(parsed, now)
                if decision.needs_hold and not parsed.dry_run and blocked is not None:
                    decision = Decision(False, reasons.RESERVATION_CONFLICT, blocked, tenant=tenant)
                elif decision.needs_hold and not parsed.dry_run:
                    if entries is None:
                        entries = {k: v for k, v in holds.entries.items()
                                   if v.expires > wall and not self._settled(k, v, wall)}
                    key = (parsed.namespace, parsed.name)
                    hold = merge_hold(entries.get(key), self.state.reservation_for(parsed, wall + self.ttl))
                    entries[key] = hold
                    self.state.add_reservation(tenant, key, hold)
                    changed = True
                decisions.append(decision)
            if changed:
                try:
                    written = self._cache[tenant] = await self._call(self.store.write, holds, entries)
                except HoldConflict:
                    self._cache.pop(tenant, None)
                    continue
                self._applied[tenant] = (written.resource_version, _first_expiry(entries, wall))
            for (_, _, future), decision in zip(batch, decisions):
                future.set_result(decision)
            return
        for (parsed, _, future), decision in zip(batch, decisions):
            if decision.needs_hold and not parsed.dry_run:
                decision = Decision(False, reasons.RESERVATION_CONFLICT,
                                    f"tenant {tenant}: could not reserve capacity after {self.retries} "
                                    "concurrent attempts; retry", tenant=tenant)
            future.set_result(decision)
