"""Admission requests in, engine decisions out: the webhook's translation layer (no Kopf here).

A request on the ``scale`` subresource carries an ``autoscaling/v1`` Scale, not a Workload:
it is turned into an UPDATE of the stored Workload with ``spec.replicas`` replaced.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from entitle.domain import reasons

from entitle.api import Workload
from entitle.domain.admission import CREATE, DELETE, UPDATE, Decision
from entitle.domain.state import ClusterState, WorkloadRequest


class RequestNotUnderstood(Exception):
    """The admission request is malformed or refers to a workload entitle has not seen yet."""


def _workload(body: dict[str, Any] | None, namespace: str | None) -> Workload | None:
    if body is None:
        return None
    try:
        workload = Workload.model_validate(dict(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RequestNotUnderstood(f"invalid Workload: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if not workload.metadata.namespace:
        workload.metadata.namespace = namespace
    return workload


def to_request(state: ClusterState, *, operation: str, subresource: str | None,
               body: dict[str, Any] | None, old: dict[str, Any] | None, dry_run: bool) -> WorkloadRequest:
    raw = body if body is not None else old or {}
    meta = raw.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name") or ""
    if operation == DELETE:
        return WorkloadRequest(DELETE, namespace, name, None, _workload(old, namespace), dry_run)
    if subresource == "scale":
        stored = state.workload(namespace, name)
        if stored is None:
            raise RequestNotUnderstood(
                f"workload {namespace}/{name} is not yet known to entitle (starting up?); retry")
        replicas = ((body or {}).get("spec") or {}).get("replicas", 0)
        updated = stored.model_copy(deep=True)
        updated.spec.replicas = int(replicas)
        return WorkloadRequest(UPDATE, namespace, name, updated, stored, dry_run)
    if operation not in (CREATE, UPDATE):
        raise RequestNotUnderstood(f"operation {operation} is not handled")
    return WorkloadRequest(operation, namespace, name, _workload(body, namespace), _workload(old, namespace), dry_run)


def review(state: ClusterState, now: datetime, reserve_for: timedelta, **request: Any) -> tuple[WorkloadRequest, Decision]:
    """Decide one admission request and, when allowed, reserve what it raises."""
    parsed = to_request(state, **request)
    return parsed, state.admit(parsed, now, reserve_for=reserve_for)


class SharedAdmission:
    """Decide with capacity held in the apiserver, so any number of webhook replicas never
    over-admit (the ResourceQuota pattern; see ``entitle.adapters.holds``).

    Per tenant: read the hold object (cached), count its holds in the state, decide; when the
    request raises usage, write the new hold with the resourceVersion the decision was made
    against. On a conflict: re-read and decide again, up to ``retries`` times, then deny.
    """

    def __init__(self, state: ClusterState, store: Any, ttl: timedelta, retries: int = 10,
                 wall_clock: Any = None) -> None:
        import asyncio

        self.wall_clock = wall_clock
        self.state, self.store, self.ttl, self.retries = state, store, ttl, retries
        self._cache: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._asyncio = asyncio

    def _lock(self, tenant: str):
        lock = self._locks.get(tenant)
        if lock is None:
            lock = self._locks[tenant] = self._asyncio.Lock()
        return lock

    async def review(self, now: datetime, **request: Any) -> tuple[WorkloadRequest, Decision]:
        from entitle.adapters.holds import HoldConflict

        from datetime import timezone

        parsed = to_request(self.state, **request)
        tenant = self.state.tenant_of(parsed.namespace)
        if tenant is None or parsed.operation == DELETE:
            return parsed, self.state.decide(parsed, now)
        # Holds live in real time whatever clock decides entitlements (tests inject one):
        # their TTL covers webhook calls and watch lag, which happen in real time.
        wall = self.wall_clock() if self.wall_clock else datetime.now(timezone.utc)
        # One request per tenant at a time in this process: they would only conflict.
        async with self._lock(tenant):
            for _ in range(self.retries):
                holds = self._cache.get(tenant)
                if holds is None:
                    holds = self._cache[tenant] = await self._asyncio.to_thread(self.store.read, tenant)
                self.state.replace_reservations(tenant, holds.entries, wall)
                decision = self.state.decide(parsed, now)
                if not decision.needs_hold or parsed.dry_run:
                    return parsed, decision
                key = (parsed.namespace, parsed.name)
                entries = holds.with_hold(key, self.state.reservation_for(parsed, wall + self.ttl), wall)
                try:
                    written = await self._asyncio.to_thread(self.store.write, holds, entries)
                except HoldConflict:
                    self._cache.pop(tenant, None)
                    continue
                self._cache[tenant] = written
                self.state.replace_reservations(tenant, written.entries, wall)
                return parsed, decision
        return parsed, Decision(False, reasons.RESERVATION_CONFLICT,
                                f"tenant {tenant}: could not reserve capacity after {self.retries} concurrent "
                                "attempts; retry", tenant=tenant)
