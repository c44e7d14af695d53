"""Capacity holds shared by every webhook replica: one ConfigMap per tenant, updated with a
resourceVersion precondition — the ResourceQuota pattern (see docs/admission-concurrency.md).

An admission that raises a tenant's usage is allowed only once its hold is written with the
resourceVersion it was decided against. Two replicas deciding on the same headroom cannot both
write: the second gets 409 Conflict, re-reads, decides again with the first one's hold counted,
and is denied if nothing is left. Holds expire after a TTL longer than any webhook call plus
the watch lag, by which time the admitted object is stored and counted from the watch.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from entitle.domain.state import Reservation
from entitle.domain.usage import Footprint

LABEL = "entitle.dev/holds"
Key = tuple[str, str]


class HoldConflict(Exception):
    """The tenant's hold object changed since it was read (or appeared meanwhile)."""


def object_name(tenant: str) -> str:
    """A valid ConfigMap name for any tenant label value (which may hold '_' or capitals)."""
    slug = re.sub(r"[^a-z0-9-]", "-", tenant.lower()).strip("-")[:40] or "tenant"
    return f"entitle-holds-{slug}-{hashlib.sha256(tenant.encode()).hexdigest()[:8]}"


@dataclass
class Holds:
    tenant: str
    resource_version: str | None                 # None: the object does not exist yet
    entries: dict[Key, Reservation]


def merge_hold(previous: Reservation | None, hold: Reservation) -> Reservation:
    if previous is None or previous.uid != hold.uid:
        return hold
    return Reservation(previous.footprint.union(hold.footprint), max(hold.expires, previous.expires),
                       hold.uid, max(hold.generation or 0, previous.generation or 0))


def _encode(entries: dict[Key, Reservation]) -> str:
    # Every hold write carries the whole map, so its size is each admission's cost: defaults
    # are left out (container kind, known kind, no users, no features) and orjson encodes.
    out = {}
    for (ns, name), h in entries.items():
        fp = h.footprint
        item: dict = {"r": fp.replicas, "u": fp.units, "e": round(h.expires.timestamp(), 3), "id": h.uid,
                      "g": h.generation}
        if fp.instance_kind != "container":
            item["k"] = fp.instance_kind
        if not fp.known_kind:
            item["x"] = False
        if fp.users:
            item["s"] = sorted(fp.users)
        if fp.features:
            item["f"] = sorted(fp.features)
        out[f"{ns}/{name}"] = item
    return orjson.dumps(out).decode()


def _decode(text: str | None) -> dict[Key, Reservation]:
    out = {}
    for key, v in (orjson.loads(text) if text else {}).items():
        ns, name = key.split("/", 1)
        fp = Footprint(v.get("k", "container"), v["r"], v["u"], frozenset(v.get("s", ())), frozenset(v.get("f", ())),
                       v.get("x", True))
        out[(ns, name)] = Reservation(fp, datetime.fromtimestamp(v["e"], timezone.utc), v.get("id"), v.get("g"))
    return out


class MemoryHoldStore:
    """The same compare-and-swap contract in memory, for tests (what two replicas share)."""

    def __init__(self) -> None:
        import threading

        self._objects: dict[str, tuple[int, dict]] = {}
        self._lock = threading.Lock()
        self.conflicts = 0

    def read(self, tenant: str) -> Holds:
        with self._lock:
            if tenant not in self._objects:
                return Holds(tenant, None, {})
            version, entries = self._objects[tenant]
            return Holds(tenant, str(version), dict(entries))

    def write(self, holds: Holds, entries: dict) -> Holds:
        with self._lock:
            current = self._objects.get(holds.tenant)
            current_version = None if current is None else str(current[0])
            if current_version != holds.resource_version:
                self.conflicts += 1
                raise HoldConflict(holds.tenant)
            version = 1 if current is None else current[0] + 1
            self._objects[holds.tenant] = (version, dict(entries))
            return Holds(holds.tenant, str(version), dict(entries))


class AsyncHoldStore:
    """Reads and compare-and-swaps the hold ConfigMaps in the operator's namespace, on the
    webhook's own event loop (``AsyncApi``): no thread hop and none of the generated client's
    per-call model (de)serialization."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    def _path(self, tenant: str | None = None) -> str:
        base = f"api/v1/namespaces/{self.namespace}/configmaps"
        return f"{base}/{object_name(tenant)}" if tenant else base

    async def read(self, tenant: str) -> Holds:
        status, cm = await self.api.request("GET", self._path(tenant), ok=(200, 404))
        if status == 404:
            return Holds(tenant, None, {})
        return Holds(tenant, cm["metadata"]["resourceVersion"], _decode((cm.get("data") or {}).get("holds")))

    async def write(self, holds: Holds, entries: dict[Key, Reservation]) -> Holds:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": object_name(holds.tenant), "namespace": self.namespace,
                             "labels": {LABEL: "true"}, "annotations": {"entitle.dev/tenant": holds.tenant}},
                "data": {"holds": _encode(entries)}}
        if holds.resource_version is None:
            method, path = "POST", self._path()
        else:
            body["metadata"]["resourceVersion"] = holds.resource_version
            method, path = "PUT", self._path(holds.tenant)
        status, cm = await self.api.request(method, path, body, ok=(200, 201, 409) + ((404,) if method == "PUT" else ()))
        if status in (404, 409):  # changed, appeared, or vanished since it was read
            raise HoldConflict(holds.tenant)
        return Holds(holds.tenant, cm["metadata"]["resourceVersion"], entries)
